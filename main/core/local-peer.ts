/**
 * Who may talk to a local socket of ours: the same user only. The kernel's
 * record of the connecting process (native/peercred: Linux SO_PEERCRED,
 * macOS/BSD getpeereid) is compared with our own effective uid, before a
 * single byte of the connection is read. Used by the headless client's control
 * socket (main/cli/control-server.ts; docs/SECURITY.md "Front doors").
 */
import type { Socket } from 'node:net';
import { ParleyError } from '../../common/errors';
import {
  peerCredentialMechanism,
  peerCredentials,
  type PeerCredentials,
} from '../../native/peercred';

/** The verdict on one connection. */
export type PeerVerdict =
  | { ok: true; peer: PeerCredentials }
  | {
      ok: false;
      /** The peer, when the kernel could say who it is. */
      peer?: PeerCredentials;
      /** One line for the log: who was refused and why (no secrets: uids and pids only). */
      reason: string;
    };

/**
 * Judges a peer: accepted only when the kernel reported credentials and its
 * uid is `ownUid`. Pure; `peer` is an Error when the credentials could not
 * be read (then the connection is refused: fail closed).
 */
export function judgePeer(peer: PeerCredentials | Error, ownUid: number): PeerVerdict {
  if (peer instanceof Error) {
    return { ok: false, reason: `could not read the peer's credentials (${peer.message}); refused` };
  }
  if (peer.uid === ownUid) return { ok: true, peer };
  const pid = peer.pid !== undefined ? ` pid ${peer.pid}` : '';
  return { ok: false, peer, reason: `uid ${peer.uid}${pid} is not uid ${ownUid}, the user this daemon runs as; refused` };
}

/** Checks each accepted connection of a local socket server. */
export interface PeerGuard {
  /** The kernel interface behind the check ("SO_PEERCRED", "getpeereid"). */
  readonly mechanism: string;
  /** The verdict on a freshly accepted Unix socket connection. Never throws. */
  check(socket: Socket): PeerVerdict;
}

/**
 * A guard that admits only processes of the user this process runs as
 * (`process.geteuid()`; root is not special: root's own tools run as root).
 * @throws ParleyError `unavailable` when the platform has no peer credential
 *   check (Windows) or Parley's addon is not built — the caller must not open
 *   the socket then: an unchecked control socket would let any local user place calls.
 */
export function sameUserGuard(): PeerGuard {
  let mechanism: string;
  try {
    mechanism = peerCredentialMechanism();
  } catch (err) {
    throw new ParleyError('unavailable', `the control socket needs a peer credential check: ${(err as Error).message}`);
  }
  if (typeof process.geteuid !== 'function') {
    throw new ParleyError('unavailable', `the control socket needs a peer credential check: no user ids on ${process.platform}`);
  }
  const ownUid = process.geteuid();
  return {
    mechanism,
    check(socket) {
      let peer: PeerCredentials | Error;
      try {
        peer = peerCredentials(socket);
      } catch (err) {
        peer = err instanceof Error ? err : new Error(String(err));
      }
      return judgePeer(peer, ownUid);
    },
  };
}
