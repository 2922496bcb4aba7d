import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plainEnvelope } from '../../common/protocol/envelope';
import { startServer, type RunningServer } from '../harness/server';
import { openServerStore } from '../harness/store';
import {
  httpJson,
  signIn,
  SignalClient,
  type SignedInDevice,
  connectCall as connectCallWith,
  makeContacts,
} from '../harness/signal-client';

const offer = plainEnvelope({ type: 'offer', sdp: 'v=0 offer-sdp-ops' });
const answer = plainEnvelope({ type: 'answer', sdp: 'v=0 answer-sdp-ops' });
/** Low limits so that a test trips them with few messages: 20 msg/s, burst 40, close after 200 over. */
const LIMITS_TOML = `
[turn]
urls = ["turn:127.0.0.1:3478?transport=udp"]
secret = "ops-test-secret"
[limits]
messages_per_second = 20
message_burst = 40
`;

let server: RunningServer;
let n = 0;

async function pair(): Promise<[SignedInDevice, SignedInDevice]> {
  n++;
  const a = await signIn(server, `ocaller${n}`);
  const b = await signIn(server, `ocallee${n}`);
  await makeContacts(a, b);
  return [a, b];
}
const connectCall = (caller: SignedInDevice, callee: SignedInDevice) =>
  connectCallWith(caller, callee, { offer, answer });
/** Scrapes /metrics and returns the value of one sample line (`name{labels}`), 0 when absent. */
async function metric(sample: string): Promise<number> {
  const res = await fetch(new URL('/metrics', server.url));
  const text = await res.text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line ? Number(line.slice(sample.length + 1)) : 0;
}
/** The JSON-RPC replies among a client's frames whose error reason is `reason`. */
function errorFrames(client: SignalClient, reason: string) {
  return client
    .frames()
    .filter(
      (f) => (f as { error?: { data?: { reason?: string } } }).error?.data?.reason === reason,
    ) as { id: unknown; error: { data: { reason: string; retryAfter?: number } } }[];
}

beforeAll(async () => {
  server = await startServer({ configToml: LIMITS_TOML });
});
afterAll(async () => {
  await server?.stop();
});

describe('health, readiness and metrics', () => {
  it('/healthz and /readyz answer 200 while the server listens and its store answers', async () => {
    expect((await httpJson(server.url, 'GET', '/healthz')).status).toBe(200);
    expect(await httpJson(server.url, 'GET', '/readyz')).toEqual({
      status: 200,
      body: { ready: true },
    });
  });

  it('/metrics moves after a call: set-up latency, calls by state, ends by reason, errors, relay credentials', async () => {
    const res = await fetch(new URL('/metrics', server.url));
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    for (const name of [
      'parley_connected_devices',
      'parley_active_calls',
      'parley_call_setup_seconds',
      'parley_errors_total',
      'parley_calls_ended_total',
      'parley_relay_credentials_issued_total',
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }

    const before = {
      ended: await metric('parley_calls_ended_total{reason="hangup"}'),
      ringing: await metric('parley_call_setup_seconds_count{stage="ringing"}'),
      answered: await metric('parley_call_setup_seconds_count{stage="answered"}'),
      notFound: await metric('parley_errors_total{code="call_not_found"}'),
      relay: await metric('parley_relay_credentials_issued_total'),
    };
    const [alice, bob] = await pair();
    const callId = await connectCall(alice, bob);
    expect(await metric('parley_active_calls{state="active"}')).toBeGreaterThanOrEqual(1);
    expect(await metric('parley_connected_devices')).toBeGreaterThanOrEqual(2);
    await alice.client.request('relay.credentials', {});
    await alice.client.request('call.hangup', { callId });
    await bob.client.nextNotification('call.ended', { callId });
    await expect(alice.client.request('call.hangup', { callId })).rejects.toMatchObject({
      reason: 'call_not_found',
    });

    expect(await metric('parley_calls_ended_total{reason="hangup"}')).toBe(before.ended + 1);
    expect(await metric('parley_call_setup_seconds_count{stage="ringing"}')).toBe(
      before.ringing + 1,
    );
    expect(await metric('parley_call_setup_seconds_count{stage="answered"}')).toBe(
      before.answered + 1,
    );
    expect(await metric('parley_errors_total{code="call_not_found"}')).toBe(before.notFound + 1);
    expect(await metric('parley_relay_credentials_issued_total')).toBe(before.relay + 1);
    expect(await metric('parley_active_calls{state="active"}')).toBe(0);

    const badLogins = await metric('parley_errors_total{code="bad_credentials"}');
    const reply = await httpJson(server.url, 'POST', '/v1/sessions', {
      username: alice.username,
      password: 'not the password',
    });
    expect(reply.status).toBe(401);
    expect(await metric('parley_errors_total{code="bad_credentials"}')).toBe(badLogins + 1);
    await Promise.all([alice.client.close(), bob.client.close()]);
  });
});

describe('message rate limit per connection', () => {
  it('answers messages over the limit with rate_limited and retryAfter, and keeps the connection', async () => {
    const alice = await signIn(server, `rate${++n}`);
    const count = 60; // burst 40 + a few refilled; the rest is over the limit
    for (let i = 0; i < count; i++) {
      alice.client.sendRaw(
        JSON.stringify({
          jsonrpc: '2.0',
          id: `flood-${i}`,
          method: 'call.hangup',
          params: { callId: randomUUID() },
        }),
      );
    }
    await alice.client.nextFrame((f) => (f as { id?: unknown }).id === `flood-${count - 1}`);
    for (
      let i = 0;
      i < 100 &&
      errorFrames(alice.client, 'call_not_found').length +
        errorFrames(alice.client, 'rate_limited').length <
        count;
      i++
    ) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const limited = errorFrames(alice.client, 'rate_limited');
    expect(limited.length).toBeGreaterThanOrEqual(10);
    // The bucket (40) also paid for the hello; everything else was answered normally.
    expect(limited.length).toBeLessThanOrEqual(count - 39);
    expect(limited.length + errorFrames(alice.client, 'call_not_found').length).toBe(count);
    expect(limited[0]!.error.data.retryAfter).toBeGreaterThan(0);
    expect(limited[0]!.error.data.retryAfter).toBeLessThanOrEqual(1);

    await new Promise((r) => setTimeout(r, 1000));
    await expect(alice.client.request('relay.credentials', {})).resolves.toHaveProperty(
      'iceServers',
    );
    expect(alice.client.socket.readyState).toBe(alice.client.socket.OPEN);
    expect(await metric('parley_errors_total{code="rate_limited"}')).toBeGreaterThanOrEqual(
      limited.length,
    );
    await alice.client.close();
  });

  it('closes a connection that keeps flooding with 1008', async () => {
    const client = await SignalClient.connect(server.wsUrl);
    for (let i = 0; i < 400; i++) client.sendRaw('{"jsonrpc":"2.0","id":1,"method":"nope"}');
    const closed = await Promise.race([
      client.closed,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000)),
    ]);
    expect(closed?.code).toBe(1008);
  });
});

describe('graceful shutdown', () => {
  it('SIGTERM during calls: every party gets call.ended (failed) before the socket closes; exit 0; audited', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-shutdown-'));
    const own = await startServer({ dataDir });
    try {
      const alice = await signIn(own, 'alice');
      const bob = await signIn(own, 'bob');
      const carol = await signIn(own, 'carol');
      const dave = await signIn(own, 'dave');
      await makeContacts(alice, bob);
      await makeContacts(carol, dave);
      const active = await (async () => {
        const callId = randomUUID();
        await alice.client.request('call.invite', { callId, callee: 'bob', envelope: offer });
        await bob.client.nextNotification('call.incoming', { callId });
        await bob.client.request('call.answer', { callId, envelope: answer });
        await alice.client.nextNotification('call.answered', { callId });
        return callId;
      })();
      const ringing = randomUUID();
      await carol.client.request('call.invite', {
        callId: ringing,
        callee: 'dave',
        envelope: offer,
      });
      await dave.client.nextNotification('call.incoming', { callId: ringing });

      const exit = own.stop(8000);
      const expectations: [SignedInDevice, string][] = [
        [alice, active],
        [bob, active],
        [carol, ringing],
        [dave, ringing],
      ];
      for (const [device, callId] of expectations) {
        const closed = await device.client.closed;
        expect(closed.code).toBe(1001);
        // Already received before the close: no waiting after the socket is gone.
        expect(device.client.notifications()).toContainEqual({
          method: 'call.ended',
          params: { callId, reason: 'failed' },
        });
      }
      expect((await exit).code).toBe(0);

      const db = await openServerStore(dataDir);
      try {
        const rows = await db
          .selectFrom('audit')
          .select(['call_id', 'detail'])
          .where('event', '=', 'call.ended')
          .execute();
        for (const callId of [active, ringing]) {
          const row = rows.find((r) => r.call_id === callId);
          expect(JSON.parse(row!.detail!)).toMatchObject({
            reason: 'failed',
            cause: 'server_shutdown',
          });
        }
      } finally {
        await db.destroy();
      }
    } finally {
      await own.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
