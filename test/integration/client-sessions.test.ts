/**
 * The client side of devices and contacts (main/core/devices.ts, contacts.ts)
 * against the real server: automatic token renewal keeps a device signed in
 * past its first token's lifetime; a revoked device stops reconnecting; the
 * contact book follows the server's notifications.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContactBook } from '../../main/core/contacts';
import { DeviceSessions } from '../../main/core/devices';
import { SignalingClient } from '../../main/core/signaling-client';
import { startServer, type RunningServer } from '../harness/server';
import { login, register, signIn } from '../harness/signal-client';

let server: RunningServer;
beforeAll(async () => {
  server = await startServer({ env: { PARLEY_TOKEN_TTL: '4' } });
});
afterAll(async () => {
  await server?.stop();
});

async function client(username: string, on = server): Promise<SignalingClient> {
  await register(on.url, username);
  const device = await login(on.url, username);
  const signaling = new SignalingClient({
    serverUrl: on.url,
    deviceId: device.deviceId,
    token: device.token,
    minBackoffMs: 50,
  });
  await signaling.connect();
  return signaling;
}

describe('DeviceSessions', () => {
  it('renews the token before half its lifetime is left, so the device outlives its first token', async () => {
    const signaling = await client('renata');
    const sessions = new DeviceSessions(signaling);
    const tokens: number[] = [];
    sessions.on('token', ({ expiresAt }) => tokens.push(expiresAt));
    const firstExpiry = signaling.tokenExpiresAt!;
    sessions.startAutoRefresh(200);
    await new Promise((r) => setTimeout(r, firstExpiry - Date.now() + 1500));
    expect(tokens.length).toBeGreaterThanOrEqual(1);
    expect(signaling.state).toBe('online');
    await expect(sessions.list()).resolves.toHaveLength(1);
    sessions.stopAutoRefresh();
    signaling.close();
  });

  it('a revoked device reports ended and stops reconnecting', async () => {
    const signaling = await client('rolf');
    const sessions = new DeviceSessions(signaling);
    const ended: string[] = [];
    sessions.on('ended', (why) => ended.push(why));
    const other = await signIn(server, 'rolf', { register: false });
    const [me] = (await sessions.list()).filter((d) => d.current);
    await other.client.request('devices.revoke', { deviceId: me!.deviceId });
    await expect.poll(() => ended, { timeout: 5_000 }).toEqual(['revoked']);
    await new Promise((r) => setTimeout(r, 500));
    expect(signaling.state).toBe('offline');
    await other.client.close();
    signaling.close();
  });
});

describe('ContactBook', () => {
  // Tokens that live the default 30 days: nothing here may expire mid-test.
  let plain: RunningServer;
  beforeAll(async () => {
    plain = await startServer();
  });
  afterAll(async () => {
    await plain?.stop();
  });

  it('follows requests, accepts and presence pushed by the server', async () => {
    const signaling = await client('cora', plain);
    const book = new ContactBook(signaling);
    const requests: string[] = [];
    book.on('request', (r) => requests.push(r.username));
    await book.refresh();
    const dan = await signIn(plain, 'dan');
    await dan.client.request('contacts.request', { username: 'cora' });
    await expect.poll(() => requests, { timeout: 5_000 }).toEqual(['dan']);
    await expect
      .poll(() => book.snapshot?.incoming.map((r) => r.username), { timeout: 5_000 })
      .toEqual(['dan']);
    await book.accept('dan');
    await expect
      .poll(() => book.snapshot?.contacts.map((c) => [c.username, c.presence]), { timeout: 5_000 })
      .toEqual([['dan', 'online']]);
    await dan.client.request('presence.set', { status: 'away' });
    await expect.poll(() => book.snapshot?.contacts[0]?.presence, { timeout: 5_000 }).toBe('away');
    await expect(book.setPresence('dnd')).resolves.toBe('dnd');
    expect((await dan.client.nextNotification('presence.changed')).presence).toBe('dnd');
    await expect(book.request('nobody-here')).rejects.toMatchObject({ reason: 'unknown_user' });
    await dan.client.close();
    signaling.close();
  });
});
