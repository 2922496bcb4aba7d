/**
 * Peer credentials of a connected Unix domain socket: the uid and gid (and on
 * Linux the pid) of the process at the other end, as the kernel recorded them
 * when it connected — the client cannot forge them. Used by the headless
 * client's control socket to serve its own user only (docs/SECURITY.md,
 * "Front doors").
 *
 * Backed by Parley's N-API addon (`native/peercred/addon`, built by
 * `scripts/setup.sh` / `npm run build:native`, no library beyond libc):
 * Linux `getsockopt(SO_PEERCRED)` (unix(7)); macOS and the BSDs
 * `getpeereid(3)`. Windows has neither (a named pipe's client is found with
 * `GetNamedPipeClientProcessId` and a token query, not done here):
 * {@link peerCredentialSupport} says so. Loaded on first use, never at import.
 */
import type { Socket } from 'node:net';
import { loadOwnAddon, NativeModuleLoadError, ownAddonPaths, type OwnAddonSpec } from '../load';

/** Who is at the other end of a Unix socket. */
export interface PeerCredentials {
  /** Effective user id of the peer at connect(2). */
  uid: number;
  /** Effective group id of the peer at connect(2). */
  gid: number;
  /** Process id (Linux only; may name a process that has since exited). */
  pid?: number;
}

/** The addon's exports (native/peercred/addon/peercred.c). */
interface PeerCredAddon {
  /** @throws Error with `code` = errno name (EBADF, ENOTSOCK, ENOTCONN, …). */
  peerCredentials(fd: number): PeerCredentials;
  /** The kernel interface the addon was built for. */
  mechanism: 'SO_PEERCRED' | 'getpeereid';
}

const ADDON: OwnAddonSpec = {
  packageName: 'parley_peercred (native/peercred/addon)',
  purpose: 'checking who connects to the control socket',
  dir: 'peercred',
  target: 'parley_peercred',
  envVar: 'PARLEY_PEERCRED_ADDON',
  title: "Parley's peer credential addon",
};

/** Where the addon may be, most specific first (native/load.ts {@link ownAddonPaths}; `PARLEY_PEERCRED_ADDON` first). */
export function peerCredAddonPaths(): string[] {
  return ownAddonPaths(ADDON, import.meta.url);
}

/**
 * Whether this platform has a peer credential check at all (Linux, macOS, the
 * BSDs), and if not, why. Says nothing about whether the addon is built: that
 * is {@link loadPeerCredAddon}'s error.
 */
export function peerCredentialSupport(platform: NodeJS.Platform = process.platform): { ok: true } | { ok: false; reason: string } {
  if (['linux', 'darwin', 'freebsd', 'openbsd', 'netbsd'].includes(platform)) return { ok: true };
  return {
    ok: false,
    reason: `no peer credential check on ${platform} (Parley knows Linux SO_PEERCRED and BSD/macOS getpeereid)`,
  };
}

/**
 * Loads the addon from the first of `candidates` that exists.
 * @throws NativeModuleLoadError "… is not built: run scripts/setup.sh …" when
 *   none exists (or the platform has no peer credential check), or the
 *   loader's own reason when it exists but does not load.
 */
export function loadPeerCredAddon(candidates: readonly string[] = peerCredAddonPaths()): PeerCredAddon {
  const support = peerCredentialSupport();
  if (!support.ok) throw new NativeModuleLoadError(support.reason, ADDON.packageName, undefined);
  return loadOwnAddon<PeerCredAddon>(ADDON, candidates);
}

let addon: PeerCredAddon | undefined;
function load(): PeerCredAddon {
  addon ??= loadPeerCredAddon();
  return addon;
}

/**
 * The kernel interface in use ("SO_PEERCRED" on Linux, "getpeereid" on
 * macOS/BSD). Call it once at start-up to fail early.
 * @throws NativeModuleLoadError when the addon cannot be loaded or the platform has no check.
 */
export function peerCredentialMechanism(): 'SO_PEERCRED' | 'getpeereid' {
  return load().mechanism;
}

/**
 * The credentials of the process at the other end of `socket`, a connected
 * Unix domain socket (e.g. one a `net.Server` listening on a path accepted).
 * Reads the descriptor from Node's internal handle (`socket._handle.fd`),
 * which Node exposes for pipes on every Unix.
 * @throws NativeModuleLoadError when the addon cannot be loaded.
 * @throws Error code `ENOTSOCK` / `EBADF` when the socket has no usable
 *   descriptor (closed already, or not a Unix socket), `ENOTCONN` when not connected.
 */
export function peerCredentials(socket: Socket): PeerCredentials {
  const native = load();
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw Object.assign(new Error('peer credentials unavailable: the socket has no file descriptor (closed, or not a Unix socket)'), {
      code: 'EBADF',
    });
  }
  return native.peerCredentials(fd);
}
