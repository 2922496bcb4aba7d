/**
 * The headless client's control socket (JSON-RPC 2.0, one message per line)
 * with a real CallEngine and SignalingClient connected to the real server.
 * No call is answered here, so no audio device is opened.
 */
import { spawn } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../common/errors';
import { CallEngine } from '../../main/core/call-engine';
import { ContactBook } from '../../main/core/contacts';
import { DeviceSessions } from '../../main/core/devices';
import { SignalingClient } from '../../main/core/signaling-client';
import { DeviceIdentity, EndToEnd, TrustStore } from '../../main/core/e2ee';
import { ControlClient, ControlServer } from '../../main/cli/control-server';
import { makeTempDir, removeTempDir } from '../harness/process';
import { startServer, type RunningServer } from '../harness/server';
import { login, register, signIn } from '../harness/signal-client';

let server: RunningServer;
let dir: string;
let signaling: SignalingClient;
let control: ControlServer;
let engine: CallEngine;
const refusals: string[] = [];
let socketPath: string;
let loggedOut = 0;

beforeAll(async () => {
  server = await startServer();
  dir = makeTempDir('control');
  socketPath = join(dir, 'control.sock');
  await register(server.url, 'frank');
  const device = await login(server.url, 'frank');
  signaling = new SignalingClient({ serverUrl: server.url, deviceId: device.deviceId, token: device.token });
  const noAudio = {
    openAudio: () => {
      throw new Error('no audio in this test');
    },
    createCodec: () => {
      throw new Error('no codec in this test');
    },
  };
  // The device identity in memory (this test has no keychain); the trust store in the temp folder.
  const e2ee = new EndToEnd(DeviceIdentity.ephemeral('frank', device.deviceId), await TrustStore.open(dir), signaling);
  engine = new CallEngine(signaling, noAudio, {
    frameMs: 20,
    jitterTargetMs: 40,
    forceRelay: false,
    loopbackOnly: true,
    connectTimeoutMs: 5000,
    mediaTimeoutMs: 30_000,
    dtx: false,
  }, e2ee);
  control = new ControlServer(
    engine,
    signaling,
    { username: 'frank', deviceId: device.deviceId },
    undefined, // no local audio: audio methods answer `unavailable`
    {
      contacts: new ContactBook(signaling),
      sessions: new DeviceSessions(signaling),
      onLogout: async () => {
        loggedOut++;
      },
    },
  );
  await control.listen(socketPath, { log: (line) => refusals.push(line) });
  await signaling.connect();
});

afterAll(async () => {
  signaling?.close();
  await control?.close();
  await server?.stop();
  if (dir) removeTempDir(dir);
});

/** Sends raw lines and collects the replies (one per line). */
async function raw(lines: string[], expected: number): Promise<Record<string, unknown>[]> {
  const socket = connect(socketPath);
  socket.setEncoding('utf8');
  const replies: Record<string, unknown>[] = [];
  let buf = '';
  const done = new Promise<void>((resolve) => {
    socket.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        replies.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
      if (replies.length >= expected) resolve();
    });
    socket.on('close', () => resolve());
  });
  await new Promise<void>((r) => socket.once('connect', r));
  for (const l of lines) socket.write(l + '\n');
  await done;
  socket.end();
  return replies;
}

describe('control socket', () => {
  it('answers malformed, invalid and unknown requests with JSON-RPC errors and keeps serving', async () => {
    const replies = await raw(
      [
        '{not json',
        JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'create_call', params: { to: 42 } }),
        JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'dance', params: {} }),
        JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'list_calls', params: {} }),
        JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'get_status', params: {} }),
        // Over the bound: answered payload_too_large, then the daemon closes the connection.
        JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'create_call', params: { to: 'x'.repeat(70_000) } }),
        JSON.stringify({ jsonrpc: '2.0', id: 6, method: 'get_status', params: {} }),
      ],
      6,
    );
    const byId = (id: unknown) => replies.find((r) => r.id === id) as { error?: { code: number; data: { reason: string } }; result?: unknown };
    expect(replies.find((r) => r.id === null && (r.error as { code: number }).code === ErrorCode.PARSE_ERROR)).toBeTruthy();
    expect(byId(1).error).toMatchObject({ code: ErrorCode.INVALID_PARAMS, data: { reason: 'invalid_params' } });
    expect(byId(2).error).toMatchObject({ code: ErrorCode.METHOD_NOT_FOUND });
    expect(byId(3).result).toEqual({ calls: [] });
    expect(replies.some((r) => (r.error as { data?: { reason: string } } | undefined)?.data?.reason === 'payload_too_large')).toBe(true);
    expect(byId(5).result).toMatchObject({ username: 'frank', signaling: 'online' });
    expect(byId(6)).toBeUndefined();
  });

  it('reports an unknown callee as a clear error and a rejected call as ended', async () => {
    const c = await ControlClient.connect(socketPath);
    try {
      await expect(c.request('create_call', { to: 'no-such-user' })).rejects.toMatchObject({
        reason: 'unknown_user',
        message: expect.stringContaining('no-such-user'),
      });
      await expect(c.request('answer_call', {})).rejects.toMatchObject({ reason: 'call_not_found' });

      // A real callee on the server that declines: the engine ends the call with "declined".
      const gina = await signIn(server, 'gina');
      // Calls are sealed for the callee's devices: gina's device publishes its keys.
      await gina.client.request('keys.publish', { bundle: DeviceIdentity.ephemeral('gina', gina.deviceId).bundle });
      await gina.client.request('contacts.request', { username: 'frank' });
      await c.request('accept_contact', { username: 'gina' });
      const { callId } = await c.request<{ callId: string }>('create_call', { to: 'gina' });
      await gina.client.nextNotification('call.incoming', { callId });
      await gina.client.request('call.reject', { callId, reason: 'declined' });
      await expect
        .poll(async () => (await c.request<{ state: string; endReason?: string }>('get_call_status', { callId })).endReason)
        .toBe('declined');
      gina.client.close();
    } finally {
      c.close();
    }
  });

  it('lets several controllers connect, and all of them see call events', async () => {
    const events: string[] = [];
    const a = await ControlClient.connect(socketPath, (m) => events.push(`a:${m}`));
    const b = await ControlClient.connect(socketPath, (m) => events.push(`b:${m}`));
    try {
      await expect(a.request('create_call', { to: 'frank' })).rejects.toBeTruthy(); // calling yourself
      await expect.poll(() => events.filter((e) => e.endsWith('call.state')).length).toBeGreaterThanOrEqual(2);
      expect(events.some((e) => e.startsWith('a:'))).toBe(true);
      // b has sent nothing: it is taken for a listener after a short grace and gets the held events then.
      await expect.poll(() => events.some((e) => e.startsWith('b:'))).toBe(true);
    } finally {
      a.close();
      b.close();
    }
  });

  it('rejects malformed audio requests, and says so when the client has no local audio', async () => {
    const c = await ControlClient.connect(socketPath);
    try {
      await expect(c.request('devices.set', { output: 42 })).rejects.toMatchObject({ reason: 'invalid_params' });
      await expect(c.request('audio.set_processing', { echoCancellation: 'yes' })).rejects.toMatchObject({ reason: 'invalid_params' });
      await expect(c.request('devices.list')).rejects.toMatchObject({ reason: 'unavailable', message: expect.stringContaining('no local audio') });
      expect(await c.request('list_calls')).toEqual({ calls: expect.any(Array) });
    } finally {
      c.close();
    }
  });
});

/**
 * Connects to `path` as another user (`setpriv` to nobody:nogroup; needs
 * root), sends one get_status request and reports what came back before the
 * daemon closed the connection.
 */
async function asNobody(path: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = `
    const s = require('node:net').connect(process.argv[1]);
    let got = '';
    s.on('connect', () => { console.log('connected'); s.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'get_status', params: {} }) + '\\n'); });
    s.on('data', (d) => { got += d; });
    s.on('error', (e) => console.log('error ' + e.code));
    s.on('close', () => { console.log('closed; received ' + JSON.stringify(got)); process.exit(0); });
    setTimeout(() => { console.log('still open'); process.exit(3); }, 5000);
  `;
  const child = spawn('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', script, path], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  return { code, stdout, stderr };
}

const isRoot = process.geteuid?.() === 0;
if (!isRoot) console.log('skipped: running a client as another user needs root (setpriv)');

describe('control socket: only its own user', () => {
  it('is created mode 0600 (bound under umask 0177, not chmod-ed afterwards)', () => {
    const st = statSync(socketPath);
    expect(st.isSocket()).toBe(true);
    expect((st.mode & 0o777).toString(8)).toBe('600');
    expect(st.uid).toBe(process.geteuid!());
    // The process umask is back to what it was (listen restores it at once).
    const now = process.umask(0o022);
    process.umask(now);
    expect(now).not.toBe(0o177);
  });

  it('serves a process of the same uid', async () => {
    const [status] = await raw([JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'get_status', params: {} })], 1);
    expect(status).toMatchObject({ id: 1, result: { username: 'frank' } });
  });

  it.skipIf(!isRoot)('refuses another uid by SO_PEERCRED, with a log line, before reading its request — even when the file mode lets it connect', async () => {
    // A second server on the same engine, in a folder everyone may enter, its
    // socket made world-writable by the test: only the peer check stands between.
    const openDir = makeTempDir('control-open');
    const openPath = join(openDir, 'open.sock');
    const lines: string[] = [];
    const open = new ControlServer(engine, signaling, { username: 'frank', deviceId: 'd' });
    try {
      await open.listen(openPath, { log: (l) => lines.push(l) });
      chmodSync(openDir, 0o755);
      chmodSync(openPath, 0o666);
      const r = await asNobody(openPath);
      expect(r.stdout, r.stderr).toContain('connected'); // the file mode let it in …
      expect(r.stdout).toContain('closed; received ""'); // … the uid check threw it out, unanswered
      expect(lines).toEqual([expect.stringMatching(/^\[control\] refused a connection to the control socket: uid 65534 pid \d+ is not uid 0, the user this daemon runs as; refused$/)]);
      // The same socket still serves its own user.
      const c = await ControlClient.connect(openPath);
      try {
        await expect(c.request('get_status')).resolves.toMatchObject({ username: 'frank' });
      } finally {
        c.close();
      }
    } finally {
      await open.close();
      removeTempDir(openDir);
    }
  });

  it.skipIf(!isRoot)('the real socket (mode 0600) does not even let another uid connect', async () => {
    chmodSync(dir, 0o755);
    const r = await asNobody(socketPath);
    expect(r.stdout, r.stderr).toContain('error EACCES');
    expect(refusals).toEqual([]);
  });
});

describe('control socket: contacts, presence, settings, devices', () => {
  it('mirrors the server: requests arrive as notifications, accept, presence, settings, devices', async () => {
    const notes: { method: string; params: unknown }[] = [];
    const c = await ControlClient.connect(socketPath, (method, params) => notes.push({ method, params }));
    try {
      const hugo = await signIn(server, 'hugo');
      await hugo.client.request('contacts.request', { username: 'frank' });
      await expect.poll(() => notes.find((x) => x.method === 'contact.request')?.params, { timeout: 5_000 }).toMatchObject({
        username: 'hugo',
        accountId: hugo.accountId,
      });
      const before = await c.request<{ incoming: { username: string }[] }>('list_contacts');
      expect(before.incoming.map((r) => r.username)).toEqual(['hugo']);
      await expect(c.request('accept_contact', { username: 'hugo' })).resolves.toEqual({ ok: true });
      const book = await c.request<{ contacts: { username: string; presence: string }[] }>('list_contacts');
      expect(book.contacts).toContainEqual(expect.objectContaining({ username: 'hugo', presence: 'online' }));

      await hugo.client.request('presence.set', { status: 'away' });
      await expect
        .poll(() => notes.find((x) => x.method === 'presence.changed')?.params, { timeout: 5_000 })
        .toMatchObject({ username: 'hugo', presence: 'away' });
      await expect(c.request('set_presence', { status: 'dnd' })).resolves.toEqual({ presence: 'dnd' });
      expect((await hugo.client.nextNotification('presence.changed')).presence).toBe('dnd');

      await expect(c.request('get_settings')).resolves.toEqual({ contactsOnly: true });
      await expect(c.request('set_settings', { contactsOnly: false })).resolves.toEqual({ contactsOnly: false });
      await c.request('set_settings', { contactsOnly: true });

      // Errors keep their stable codes and words through the daemon.
      await expect(c.request('remove_contact', { username: 'nobody-there' })).rejects.toMatchObject({
        reason: 'unknown_user',
      });
      await expect(c.request('request_contact', { username: 'NOT valid!' })).rejects.toMatchObject({
        reason: 'invalid_params',
      });

      const { devices } = await c.request<{ devices: { current: boolean; online: boolean }[] }>('list_devices');
      expect(devices).toEqual([expect.objectContaining({ current: true, online: true })]);
      const { expiresAt } = await c.request<{ expiresAt: number }>('refresh_session');
      expect(expiresAt).toBeGreaterThan(Date.now());
      expect(signaling.tokenExpiresAt).toBe(expiresAt);
      await hugo.client.close();
    } finally {
      c.close();
    }
  });

  it('logout: the server forgets the token, the daemon drops its keychain entry and stops reconnecting', async () => {
    const c = await ControlClient.connect(socketPath);
    try {
      await expect(c.request('logout')).resolves.toEqual({ ok: true });
      expect(loggedOut).toBe(1);
      await expect.poll(() => signaling.state, { timeout: 5_000 }).toBe('offline');
      await new Promise((r) => setTimeout(r, 800));
      expect(signaling.state).toBe('offline'); // no reconnect after session.ended
    } finally {
      c.close();
    }
  });
});
