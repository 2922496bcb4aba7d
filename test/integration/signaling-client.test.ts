/**
 * The core's SignalingClient against the real server process: hello, a
 * refused token, and reconnecting with backoff when the server restarts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SignalingClient, type SignalingState } from '../../main/core/signaling-client';
import { freeTcpPort } from '../harness/ports';
import { makeTempDir, removeTempDir } from '../harness/process';
import { startServer, type RunningServer } from '../harness/server';
import { login, register } from '../harness/signal-client';

const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function serverOn(port: number, dataDir: string): Promise<RunningServer> {
  const s = await startServer({ dataDir, env: { PARLEY_SERVER_LISTEN: `127.0.0.1:${port}` } });
  cleanup.push(() => s.stop());
  return s;
}

describe('SignalingClient', () => {
  it('says hello and comes back online by itself after the server restarts', async () => {
    const port = await freeTcpPort();
    const dataDir = makeTempDir('signaling-restart');
    cleanup.push(() => removeTempDir(dataDir));
    const first = await serverOn(port, dataDir);
    await register(first.url, 'dora');
    const device = await login(first.url, 'dora');

    const client = new SignalingClient({
      serverUrl: first.url,
      deviceId: device.deviceId,
      token: device.token,
      minBackoffMs: 100,
      maxBackoffMs: 400,
    });
    cleanup.push(() => client.close());
    const states: SignalingState[] = [];
    client.on('state', (s) => states.push(s));
    await client.connect();
    expect(client.state).toBe('online');
    expect((await client.request('relay.credentials', {})).iceServers).toEqual([]);

    await first.stop();
    await expect.poll(() => client.state, { timeout: 5000 }).not.toBe('online');
    await expect(client.request('relay.credentials', {})).rejects.toMatchObject({ reason: 'unavailable' });

    // Same port, same data folder: the device and its token are still valid.
    await serverOn(port, dataDir);
    await client.waitOnline();
    expect(client.state).toBe('online');
    await expect(client.request('relay.credentials', {})).resolves.toBeTruthy();
    expect(states.filter((s) => s === 'online').length).toBe(2);
  });

  it('stops retrying and says why when the server refuses the token', async () => {
    const server = await startServer();
    cleanup.push(() => server.stop());
    await register(server.url, 'eve');
    const device = await login(server.url, 'eve');
    const client = new SignalingClient({
      serverUrl: server.url,
      deviceId: device.deviceId,
      token: 'not-the-token',
      minBackoffMs: 50,
    });
    cleanup.push(() => client.close());
    const details: (string | undefined)[] = [];
    client.on('state', (_s, d) => details.push(d));
    await expect(client.connect()).rejects.toMatchObject({ reason: 'unauthenticated' });
    expect(client.state).toBe('offline');
    expect(details.at(-1)).toBeTruthy();
    await new Promise((r) => setTimeout(r, 300));
    expect(client.state).toBe('offline'); // no reconnect loop
  });
});
