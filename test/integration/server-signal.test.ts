import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHmac } from 'node:crypto';
import { plainEnvelope } from '../../common/protocol/envelope';
import { startServer, type RunningServer } from '../harness/server';
import { login, register, signIn, SignalClient } from '../harness/signal-client';

const TURN_SECRET = 'turn-secret-for-this-test-9f3a';
const TURN_URLS = ['turn:127.0.0.1:3478?transport=udp', 'turn:127.0.0.1:3478?transport=tcp'];
const STUN_URLS = ['stun:127.0.0.1:3478'];

let server: RunningServer;
beforeAll(async () => {
  server = await startServer({
    turn: { urls: TURN_URLS, secret: TURN_SECRET, ttlSeconds: 300 },
    stunUrls: STUN_URLS,
  });
});
afterAll(async () => {
  await server?.stop();
});

const offer = plainEnvelope({ type: 'offer', sdp: 'v=0 test offer' });

describe('signaling: hello and authentication', () => {
  it('refuses every method before hello with unauthenticated and keeps the connection open', async () => {
    const session = await (async () => {
      await register(server.url, 'gina');
      return login(server.url, 'gina');
    })();
    const client = await SignalClient.connect(server.wsUrl);
    await expect(client.request('relay.credentials', {})).rejects.toMatchObject({
      reason: 'unauthenticated',
    });
    await expect(
      client.request('call.invite', { callId: randomUUID(), callee: 'gina', envelope: offer }),
    ).rejects.toMatchObject({ reason: 'unauthenticated', code: -32001 });
    const hello = await client.hello(session);
    expect(hello).toMatchObject({
      accountId: session.accountId,
      username: 'gina',
      deviceId: session.deviceId,
    });
    expect(Math.abs(hello.serverTime - Date.now())).toBeLessThan(60_000);
    await client.close();
  });

  it('refuses a wrong token, an unknown device and a wrong protocol version', async () => {
    await register(server.url, 'hank');
    const session = await login(server.url, 'hank');
    const client = await SignalClient.connect(server.wsUrl);
    await expect(
      client.hello({ deviceId: session.deviceId, token: 'x'.repeat(43) }),
    ).rejects.toMatchObject({
      reason: 'unauthenticated',
    });
    await expect(
      client.hello({ deviceId: randomUUID(), token: session.token }),
    ).rejects.toMatchObject({
      reason: 'unauthenticated',
    });
    const err = await client.hello(session, 999).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: 'protocol_version', code: -32002 });
    expect((err as Error).message).toContain('1');
    // The same connection still accepts a correct hello.
    await expect(client.hello(session)).resolves.toMatchObject({ username: 'hank' });
    await expect(client.hello(session)).rejects.toMatchObject({ reason: 'invalid_state' });
    await client.close();
  });

  it('closes the older connection when the same device connects again', async () => {
    const first = await signIn(server, 'ivan');
    const second = await SignalClient.connect(server.wsUrl);
    await second.hello(first);
    const closed = await first.client.closed;
    expect(closed.code).toBe(4001);
    await expect(second.request('relay.credentials', {})).resolves.toBeTruthy();
    await second.close();
  });
});

describe('signaling: bad input keeps the connection and the server working', () => {
  it('answers malformed JSON, wrong types, oversized frames and unknown methods, then still serves', async () => {
    const judy = await signIn(server, 'judy');
    const { client } = judy;

    client.sendRaw('{"jsonrpc":"2.0","id":1,"method":');
    expect(await client.nextFrameError()).toMatchObject({
      code: -32700,
      data: { reason: 'parse_error' },
    });

    await expect(
      client.requestUnchecked('call.invite', { callId: 42, callee: ['x'], envelope: 'no' }),
    ).rejects.toMatchObject({
      reason: 'invalid_params',
      code: -32602,
      data: { issues: expect.arrayContaining([expect.objectContaining({ path: 'callId' })]) },
    });

    const big = JSON.stringify({
      jsonrpc: '2.0',
      id: 77,
      method: 'relay.credentials',
      params: { pad: 'x'.repeat(100 * 1024) },
    });
    client.sendRaw(big);
    expect(await client.nextFrameError()).toMatchObject({
      code: -32007,
      data: { reason: 'payload_too_large' },
    });

    await expect(client.requestUnchecked('call.teleport', {})).rejects.toMatchObject({
      reason: 'method_not_found',
      code: -32601,
    });

    client.sendRaw('{"hello": "not json-rpc"}');
    expect(await client.nextFrameError()).toMatchObject({ data: { reason: 'invalid_request' } });

    // The same connection still works …
    const creds = await client.request('relay.credentials', {});
    expect(creds.ttlSeconds).toBe(300);
    // … and a new client can still register, log in and say hello.
    const other = await signIn(server, 'judy2');
    await expect(other.client.request('relay.credentials', {})).resolves.toBeTruthy();
    await other.client.close();
    await client.close();
  });
});

describe('signaling: relay credentials', () => {
  it('issues coturn REST credentials with the configured TTL, plus STUN', async () => {
    const kim = await signIn(server, 'kim');
    const before = Math.floor(Date.now() / 1000);
    const r = await kim.client.request('relay.credentials', {});
    const after = Math.floor(Date.now() / 1000);
    expect(r.ttlSeconds).toBe(300);
    expect(r.expiresAt).toBeGreaterThanOrEqual(before + 300);
    expect(r.expiresAt).toBeLessThanOrEqual(after + 300);
    expect(r.iceServers).toContainEqual({ urls: STUN_URLS });
    const turn = r.iceServers.find((s) => s.urls.some((u) => u.startsWith('turn:')));
    expect(turn?.urls).toEqual(TURN_URLS);
    expect(turn?.username).toBe(`${r.expiresAt}:${kim.accountId}`);
    const expected = createHmac('sha1', TURN_SECRET).update(turn!.username!).digest('base64');
    expect(turn?.credential).toBe(expected);
    await kim.client.close();
  });
});

describe('server log', () => {
  it('never contains a password, a device token or the TURN secret', async () => {
    const secretPassword = 'pw-that-must-not-leak-7731';
    const leo = await signIn(server, 'leo', { password: secretPassword });
    const relay = await leo.client.request('relay.credentials', {});
    const credential = relay.iceServers.find((x) => x.credential)?.credential;
    expect(credential).toBeTruthy();
    await leo.client.close();
    await server.waitForLog((l) => l.msg === 'device offline' && l.deviceId === leo.deviceId);
    const log = server.stdout();
    expect(log).toContain('"listening"');
    expect(log).toContain(leo.deviceId);
    expect(log).not.toContain(secretPassword);
    expect(log).not.toContain(leo.token);
    expect(log).not.toContain(TURN_SECRET);
    expect(log).not.toContain(credential!);
    expect(server.stderr()).not.toContain(TURN_SECRET);
  });
});
