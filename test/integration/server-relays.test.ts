import { createHmac } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { signIn } from '../harness/signal-client';

const SECRET = 'relay-secret-never-logged-5f1a';
const BASE = `[turn]
urls = ["turn:localhost:3478?transport=udp", "turn:[::1]:3478?transport=tcp"]
secret = "${SECRET}"
ttl_seconds = 300
`;

let server: RunningServer;
let provider: Server;
let providerUrl: string;
/** What the fake external credential API answers next: a status and a body. */
let providerReply: { status: number; body: unknown } = { status: 200, body: {} };
let n = 0;

async function useConfig(toml: string): Promise<void> {
  writeFileSync(server.configFile!, toml);
  await adminRequest(server.adminSocket, 'config.reload');
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- HTTP bodies are checked field by field below
type Json = any;
async function relays(token?: string): Promise<{ status: number; headers: Headers; body: Json }> {
  const res = await fetch(new URL('/v1/calling/relays', server.url), {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}
async function metric(name: string): Promise<number> {
  const text = await (await fetch(new URL('/metrics', server.url))).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}
const audit = async (params: object) =>
  (
    await adminRequest<{ events: { event: string; detail: Record<string, unknown> | null }[] }>(
      server.adminSocket,
      'audit.query',
      params,
    )
  ).events;

beforeAll(async () => {
  server = await startServer({ configToml: BASE });
  provider = createServer((req, res) => {
    res.writeHead(providerReply.status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ...(providerReply.body as object), askedFor: req.url }));
  });
  await new Promise<void>((r) => provider.listen(0, '127.0.0.1', r));
  const addr = provider.address();
  providerUrl = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/creds`;
});
afterAll(async () => {
  provider?.close();
  await server?.stop();
});

describe('GET /v1/calling/relays', () => {
  it('refuses requests without a valid device token: 401 CALL_RELAY_UNAUTHORIZED', async () => {
    const who = await signIn(server, `relay${++n}`);
    for (const token of [undefined, 'not-a-token', `${who.token}x`]) {
      const r = await relays(token);
      expect(r.status).toBe(401);
      expect(r.body.error).toMatchObject({
        code: -32001,
        data: { reason: 'unauthenticated', name: 'CALL_RELAY_UNAUTHORIZED' },
      });
    }
    // A revoked device's token stops working here too.
    await who.client.request('session.logout', {});
    expect((await relays(who.token)).status).toBe(401);
  });

  it('answers username, password, ttl, urls, urlsWithIps (IPv6 in brackets) and hostname; audited without the secret', async () => {
    const who = await signIn(server, `relay${++n}`);
    const r = await relays(who.token);
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    const { username, password, ttl, urls, urlsWithIps, hostname } = r.body;
    expect(ttl).toBe(300);
    expect(urls).toEqual(['turn:localhost:3478?transport=udp', 'turn:[::1]:3478?transport=tcp']);
    expect(hostname).toBe('localhost');
    expect(username).toMatch(new RegExp(`^\\d+:${who.accountId}$`));
    expect(password).toBe(createHmac('sha1', SECRET).update(username).digest('base64'));
    const local = (await lookup('localhost', { all: true })).map((a) =>
      a.family === 6 ? `[${a.address}]` : a.address,
    );
    expect(urlsWithIps).toEqual(
      expect.arrayContaining([
        ...local.map((ip) => `turn:${ip}:3478?transport=udp`),
        'turn:[::1]:3478?transport=tcp',
      ]),
    );
    const issued = await audit({ event: 'relay.credentials_issued', accountId: who.accountId });
    expect(issued[0]?.detail).toMatchObject({ ttlSeconds: 300, provider: 'coturn' });
    expect(JSON.stringify(issued)).not.toContain(password);
    expect(server.stdout()).not.toContain(password);
    expect(server.stdout()).not.toContain(SECRET);
    expect(server.stdout()).not.toContain(who.token);
    await who.client.close();
  });

  it('rate-limits per account (HTTP and socket together): 429 CALL_RELAY_RATE_LIMITED with Retry-After, then recovers', async () => {
    await useConfig(`${BASE}requests_per_minute = 60\nrequest_burst = 2\n`);
    const who = await signIn(server, `relay${++n}`);
    const other = await signIn(server, `relay${++n}`);
    expect((await relays(who.token)).status).toBe(200);
    await who.client.request('relay.credentials', {});
    const limited = await relays(who.token);
    expect(limited.status).toBe(429);
    expect(limited.body.error.data).toMatchObject({
      reason: 'rate_limited',
      name: 'CALL_RELAY_RATE_LIMITED',
    });
    const retryAfter = Number(limited.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(limited.body.error.data.retryAfter).toBe(retryAfter);
    await expect(who.client.request('relay.credentials', {})).rejects.toMatchObject({
      reason: 'rate_limited',
    });
    // Other accounts are not affected; the limited one recovers after Retry-After.
    expect((await relays(other.token)).status).toBe(200);
    await new Promise((r) => setTimeout(r, retryAfter * 1000 + 100));
    expect((await relays(who.token)).status).toBe(200);
    const events = await audit({ event: 'rate_limited', accountId: who.accountId });
    expect(events).toHaveLength(1);
    expect(events[0]?.detail).toMatchObject({ scope: 'relay' });
    await Promise.all([who.client.close(), other.client.close()]);
  });

  it('an experiment routes listed accounts to the alternative relay set', async () => {
    const who = await signIn(server, `relay${++n}`);
    await useConfig(
      `${BASE}experiment_accounts = ["${who.username}"]\nexperiment_urls = ["turn:127.0.0.2:3478"]\n`,
    );
    const r = await relays(who.token);
    expect(r.body.urls).toEqual(['turn:127.0.0.2:3478']);
    expect(r.body.urlsWithIps).toEqual(['turn:127.0.0.2:3478']);
    expect(r.body.hostname).toBe('127.0.0.2');
    await who.client.close();
  });

  it('an external HTTP provider: its credentials on success; 500 CALL_RELAY_PROVIDER_ERROR and a metric on failure', async () => {
    await useConfig(
      `[turn]\nprovider = "http"\nprovider_url = "${providerUrl}"\nprovider_timeout_ms = 2000\n`,
    );
    const who = await signIn(server, `relay${++n}`);
    providerReply = {
      status: 200,
      body: {
        username: 'ext-user',
        password: 'ext-pass-77',
        ttl: 120,
        urls: ['turn:127.0.0.1:3478'],
      },
    };
    const ok = await relays(who.token);
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({
      username: 'ext-user',
      password: 'ext-pass-77',
      ttl: 120,
      urls: ['turn:127.0.0.1:3478'],
      urlsWithIps: ['turn:127.0.0.1:3478'],
      hostname: '127.0.0.1',
    });
    const viaSocket = await who.client.request('relay.credentials', {});
    expect(viaSocket.iceServers).toContainEqual({
      urls: ['turn:127.0.0.1:3478'],
      username: 'ext-user',
      credential: 'ext-pass-77',
    });

    const before = await metric('parley_relay_provider_errors_total');
    providerReply = { status: 502, body: { secret: 'provider-internal-detail' } };
    const failed = await relays(who.token);
    expect(failed.status).toBe(500);
    expect(failed.body.error.data).toEqual({
      reason: 'internal_error',
      name: 'CALL_RELAY_PROVIDER_ERROR',
    });
    expect(JSON.stringify(failed.body)).not.toContain('provider-internal-detail');
    providerReply = { status: 200, body: { username: 'x' } }; // not a valid answer
    expect((await relays(who.token)).status).toBe(500);
    expect(await metric('parley_relay_provider_errors_total')).toBe(before + 2);
    const errors = await audit({ event: 'relay.provider_error', accountId: who.accountId });
    expect(errors.map((e) => e.detail?.failure)).toEqual(['invalid answer', 'status 502']);
    expect(server.stdout()).not.toContain('ext-pass-77');
    await who.client.close();
  });
});
