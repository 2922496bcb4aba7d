/**
 * Peer credentials of Unix sockets (native/peercred: Linux SO_PEERCRED) on
 * real sockets, and the same-user verdict built on them (main/core/local-peer).
 * The refusal of another user's process is proved end to end, with a client
 * running as `nobody`, in test/integration/control-socket.test.ts.
 */
import { closeSync, openSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { judgePeer, sameUserGuard } from '../../main/core/local-peer';
import { NativeModuleLoadError } from '../../native/load';
import { loadPeerCredAddon, peerCredentialMechanism, peerCredentials, peerCredentialSupport } from '../../native/peercred';
import { makeTempDir, removeTempDir } from '../harness/process';

let dir: string;
let server: Server;
const accepted: Socket[] = [];
let nextAccepted: ((s: Socket) => void) | undefined;

beforeAll(async () => {
  dir = makeTempDir('peercred');
  server = createServer((s) => {
    accepted.push(s);
    nextAccepted?.(s);
  });
  await new Promise<void>((r) => server.listen(join(dir, 'p.sock'), r));
});
afterAll(async () => {
  for (const s of accepted) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
  removeTempDir(dir);
});

/** Connects to the test socket; resolves with the server's side of the connection. */
async function connectPair(): Promise<{ client: Socket; serverSide: Socket }> {
  const serverSide = new Promise<Socket>((r) => (nextAccepted = r));
  const client = createConnection(join(dir, 'p.sock'));
  await new Promise<void>((r) => client.once('connect', r));
  return { client, serverSide: await serverSide };
}

describe('peer credentials (native/peercred)', () => {
  it('reports the connecting process: our own uid, gid and pid on both ends', async () => {
    expect(peerCredentialMechanism()).toBe('SO_PEERCRED');
    const { client, serverSide } = await connectPair();
    try {
      const own = { uid: process.geteuid!(), gid: process.getegid!(), pid: process.pid };
      expect(peerCredentials(serverSide)).toEqual(own);
      expect(peerCredentials(client)).toEqual(own);
    } finally {
      client.destroy();
    }
  });

  it('throws a coded error for a destroyed socket or a descriptor that is not a socket', async () => {
    const { client, serverSide } = await connectPair();
    client.destroy();
    serverSide.destroy();
    expect(() => peerCredentials(serverSide)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    // A regular file's descriptor is not a socket.
    const addon = loadPeerCredAddon();
    const fd = openSync(join(dir, 'plain-file'), 'w');
    try {
      expect(() => addon.peerCredentials(fd)).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
    } finally {
      closeSync(fd);
    }
    expect(() => addon.peerCredentials(-1 as number)).toThrow(TypeError);
  });

  it('says clearly when the addon is not built, and which platforms have no check', () => {
    expect(() => loadPeerCredAddon([join(dir, 'missing.node')])).toThrow(NativeModuleLoadError);
    expect(() => loadPeerCredAddon([join(dir, 'missing.node')])).toThrow(/not built .*run scripts\/setup\.sh/);
    expect(peerCredentialSupport('linux')).toEqual({ ok: true });
    expect(peerCredentialSupport('darwin')).toEqual({ ok: true });
    expect(peerCredentialSupport('win32')).toMatchObject({ ok: false, reason: expect.stringContaining('win32') });
  });
});

describe('same-user verdict (main/core/local-peer)', () => {
  it('accepts only the own uid and fails closed when the kernel cannot say', () => {
    expect(judgePeer({ uid: 1000, gid: 1000, pid: 42 }, 1000)).toEqual({ ok: true, peer: { uid: 1000, gid: 1000, pid: 42 } });
    expect(judgePeer({ uid: 65534, gid: 65534, pid: 42 }, 1000)).toMatchObject({
      ok: false,
      reason: 'uid 65534 pid 42 is not uid 1000, the user this daemon runs as; refused',
    });
    // root is not special: a root daemon refuses a user's process, a user's daemon refuses root.
    expect(judgePeer({ uid: 0, gid: 0 }, 1000).ok).toBe(false);
    expect(judgePeer({ uid: 1000, gid: 1000 }, 0).ok).toBe(false);
    expect(judgePeer(new Error('ENOTCONN'), 1000)).toMatchObject({ ok: false, reason: expect.stringContaining('could not read') });
  });

  it('the guard accepts a connection of this process (same uid)', async () => {
    const guard = sameUserGuard();
    const { client, serverSide } = await connectPair();
    try {
      expect(guard.check(serverSide)).toMatchObject({ ok: true, peer: { uid: process.geteuid!() } });
    } finally {
      client.destroy();
    }
  });
});
