/**
 * Bad input for every method added with devices, contacts, presence and
 * settings: missing, malformed, oversized, wrongly typed and unknown fields;
 * no hello; a revoked or refreshed-away token; floods. The server answers
 * each with a stable error, keeps the connection, keeps serving everyone
 * else, and loses no audit record.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { signIn, SignalClient, type SignedInDevice } from '../harness/signal-client';

let server: RunningServer;
let n = 0;
const user = () => signIn(server, `hard${++n}`);

beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server?.stop();
});

const UUID = '00000000-0000-4000-8000-000000000000';
const BIG = 'x'.repeat(10_000);

/** Each new method with bad params and the field the server must name. */
const BAD: [method: string, params: unknown, path: string][] = [
  ['devices.list', { extra: 1 }, ''],
  ['devices.revoke', {}, 'deviceId'],
  ['devices.revoke', { deviceId: 'not-a-uuid' }, 'deviceId'],
  ['devices.revoke', { deviceId: 42 }, 'deviceId'],
  ['devices.revoke', { deviceId: BIG }, 'deviceId'],
  ['devices.revoke', { deviceId: UUID, extra: true }, ''],
  ['session.refresh', { token: 'x' }, ''],
  ['session.logout', { all: true }, ''],
  ['contacts.list', { page: 2 }, ''],
  ...[
    'contacts.request',
    'contacts.accept',
    'contacts.decline',
    'contacts.remove',
    'contacts.block',
    'contacts.unblock',
    'callers.approve',
    'callers.refuse',
  ].flatMap((m): [string, unknown, string][] => [
    [m, {}, 'username'],
    [m, { username: 42 }, 'username'],
    [m, { username: null }, 'username'],
    [m, { username: 'Bad Name!' }, 'username'],
    [m, { username: BIG }, 'username'],
    [m, { username: ['alice'] }, 'username'],
    [m, { username: 'alice', note: 'hi' }, ''],
  ]),
  ['presence.set', {}, 'status'],
  ['presence.set', { status: 'in_call' }, 'status'],
  ['presence.set', { status: 'offline' }, 'status'],
  ['presence.set', { status: 7 }, 'status'],
  ['presence.set', { status: BIG }, 'status'],
  ['settings.get', { x: 1 }, ''],
  ['settings.set', { contactsOnly: 'yes' }, 'contactsOnly'],
  ['settings.set', { contactsOnly: 1 }, 'contactsOnly'],
  ['settings.set', { ringtone: 'loud' }, ''],
];
const GOOD: [string, object][] = [
  ['devices.list', {}],
  ['devices.revoke', { deviceId: UUID }],
  ['session.refresh', {}],
  ['session.logout', {}],
  ['contacts.list', {}],
  ['contacts.request', { username: 'someone' }],
  ['contacts.accept', { username: 'someone' }],
  ['contacts.decline', { username: 'someone' }],
  ['contacts.remove', { username: 'someone' }],
  ['contacts.block', { username: 'someone' }],
  ['contacts.unblock', { username: 'someone' }],
  ['callers.approve', { username: 'someone' }],
  ['callers.refuse', { username: 'someone' }],
  ['presence.set', { status: 'away' }],
  ['settings.get', {}],
  ['settings.set', { contactsOnly: false }],
];

describe('hardening: new methods', () => {
  it('every one refuses a connection that has not said hello (unauthenticated), and the connection stays', async () => {
    const client = await SignalClient.connect(server.wsUrl);
    for (const [method, params] of GOOD) {
      await expect(client.requestUnchecked(method, params), method).rejects.toMatchObject({
        reason: 'unauthenticated',
        code: -32001,
      });
    }
    const who = await user();
    await who.client.close();
    await expect(client.hello(who)).resolves.toMatchObject({ deviceId: who.deviceId });
    await client.close();
  });

  it('missing, malformed, oversized, wrongly typed and unknown fields get invalid_params naming the field', async () => {
    const who = await user();
    for (const [method, params, path] of BAD) {
      const err = await who.client.requestUnchecked(method, params).catch((e: unknown) => e);
      expect(err, `${method} ${JSON.stringify(params).slice(0, 60)}`).toMatchObject({
        reason: 'invalid_params',
        code: -32602,
      });
      const issues = (err as { data: { issues: { path: string }[] } }).data.issues;
      expect(
        issues.map((i) => i.path),
        method,
      ).toContain(path);
    }
    // Params that are not an object at all.
    for (const params of [null, 'text', 42, [1, 2]]) {
      await expect(who.client.requestUnchecked('contacts.request', params)).rejects.toMatchObject({
        reason: 'invalid_params',
      });
    }
    // A frame over the size limit: payload_too_large, the connection stays.
    who.client.sendRaw(
      JSON.stringify({
        jsonrpc: '2.0',
        id: 9,
        method: 'contacts.request',
        params: { username: 'x'.repeat(70_000) },
      }),
    );
    expect(await who.client.nextFrameError()).toMatchObject({
      data: { reason: 'payload_too_large' },
    });
    // Nothing of that changed anything, and the connection still works.
    await expect(who.client.request('contacts.list', {})).resolves.toEqual({
      contacts: [],
      incoming: [],
      outgoing: [],
      blocked: [],
    });
    await expect(who.client.request('settings.get', {})).resolves.toEqual({ contactsOnly: true });
    await who.client.close();
  });

  it('a revoked device and a refreshed-away token are refused at hello; their old connections are gone', async () => {
    const a = await user();
    const b = await signIn(server, a.username, { register: false });
    const refreshed = await a.client.request('session.refresh', {});
    const old = await SignalClient.connect(server.wsUrl);
    await expect(old.hello(a)).rejects.toMatchObject({ reason: 'unauthenticated' });
    // The refused connection is still usable for a correct hello …
    await expect(old.hello({ deviceId: a.deviceId, token: refreshed.token })).resolves.toBeTruthy();
    expect((await a.client.closed).code).toBe(4001); // … which replaced the older connection

    await old.request('devices.revoke', { deviceId: b.deviceId });
    expect((await b.client.closed).code).toBe(4003);
    const again = await SignalClient.connect(server.wsUrl);
    await expect(again.hello(b)).rejects.toMatchObject({ reason: 'unauthenticated' });
    for (const [method, params] of GOOD.slice(0, 3)) {
      await expect(again.requestUnchecked(method, params)).rejects.toMatchObject({
        reason: 'unauthenticated',
      });
    }
    const failed = await adminRequest<{ events: unknown[] }>(server.adminSocket, 'audit.query', {
      event: 'device.auth_failed',
      deviceId: b.deviceId,
    });
    expect(failed.events).toHaveLength(1);
    await Promise.all([old.close(), again.close()]);
  });

  it('a flood of contact requests is rate-limited on that connection only; every handled one is audited', async () => {
    const flooder = await user();
    const bystanders: SignedInDevice[] = [];
    for (let i = 0; i < 30; i++) bystanders.push(await user());
    const calm = await user();

    const results = await Promise.allSettled(
      Array.from({ length: 400 }, (_, i) =>
        flooder.client.request('contacts.request', { username: bystanders[i % 30]!.username }),
      ),
    );
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    const limited = results.filter(
      (r) => r.status === 'rejected' && (r.reason as { reason?: string }).reason === 'rate_limited',
    ).length;
    expect(ok).toBeGreaterThan(0);
    expect(limited).toBeGreaterThan(0);
    expect(ok + limited).toBe(400);
    // Everyone else is served meanwhile.
    await expect(calm.client.request('contacts.list', {})).resolves.toBeTruthy();
    // Each bystander got the request once (asking again is harmless) and the log has one record per handled request.
    await expect
      .poll(
        async () => {
          const r = await adminRequest<{ events: unknown[] }>(server.adminSocket, 'audit.query', {
            event: 'contact.requested',
            accountId: flooder.accountId,
            limit: 1000,
          });
          return r.events.length;
        },
        { timeout: 5_000 },
      )
      .toBe(ok);
    // The flooder itself is served again once its bucket refills (it may still owe a few ms).
    let list: Awaited<ReturnType<typeof flooder.client.request<'contacts.list'>>> | undefined;
    for (let i = 0; i < 50 && !list; i++) {
      list = await flooder.client.request('contacts.list', {}).catch((e: { reason?: string }) => {
        if (e.reason !== 'rate_limited') throw e;
        return new Promise<undefined>((r) => setTimeout(() => r(undefined), 100));
      });
    }
    expect(list?.outgoing.length).toBe(Math.min(30, ok));
    await Promise.all([flooder, calm, ...bystanders].map((d) => d.client.close()));
  });
});

describe('hardening: GET /v1/calling/relays', () => {
  it('malformed Authorization headers and other methods get 401 / 404, never a crash', async () => {
    const headers = [
      'Basic abc',
      'Bearer',
      'Bearer ',
      `Bearer ${'y'.repeat(5000)}`,
      'Bearer a b',
      'bearer x',
    ];
    for (const authorization of headers) {
      const res = await fetch(new URL('/v1/calling/relays', server.url), {
        headers: { authorization },
      });
      expect(res.status, authorization.slice(0, 20)).toBe(401);
      expect(((await res.json()) as { error: { data: { name: string } } }).error.data.name).toBe(
        'CALL_RELAY_UNAUTHORIZED',
      );
    }
    const post = await fetch(new URL('/v1/calling/relays', server.url), { method: 'POST' });
    expect(post.status).toBe(404);
    expect((await fetch(new URL('/healthz', server.url))).status).toBe(200);
  });
});
