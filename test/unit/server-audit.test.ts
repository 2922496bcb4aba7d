import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Kysely } from 'kysely';
import { AuditLog, DAY_MS, sanitizeDetail } from '../../server/audit';
import { diffConfig, parseConfig } from '../../server/config';
import { openDatabase, type DB } from '../../server/db';
import { TokenBucket, WindowCounter } from '../../server/rate-limit';

// The audit log against a real (in-memory) SQLite store; over sockets in
// test/integration/server-admin.test.ts.

let db: Kysely<DB>;
let now = 1_700_000_000_000;
let audit: AuditLog;

beforeEach(async () => {
  db = await openDatabase(':memory:');
  audit = new AuditLog(db, undefined, () => now);
});
afterEach(async () => {
  await db.destroy();
});

describe('audit log', () => {
  it('drops secret-looking keys at any depth and cuts long strings', () => {
    expect(
      sanitizeDetail({
        reason: 'hangup',
        password: 'p',
        nested: { token: 't', turnSecret: 's', ok: 1, envelope: {} },
        credential: 'c',
        long: 'x'.repeat(500),
      }),
    ).toEqual({ reason: 'hangup', nested: { ok: 1 }, long: 'x'.repeat(200) });
  });

  it('filters by event, account and call, newest first, in pages with a next cursor', async () => {
    for (let i = 0; i < 7; i++) {
      now += 1000;
      await audit.record({
        event: i % 2 ? 'call.created' : 'login',
        accountId: i < 5 ? 'a1' : 'a2',
        callId: `c${i}`,
      });
    }
    const a1 = await audit.query({ accountId: 'a1' });
    expect(a1.events.map((e) => e.callId)).toEqual(['c4', 'c3', 'c2', 'c1', 'c0']);
    expect(a1.next).toBeNull();
    const created = await audit.query({ events: ['call.created'] });
    expect(created.events.map((e) => e.callId)).toEqual(['c5', 'c3', 'c1']);
    expect((await audit.query({ callId: 'c2' })).events).toHaveLength(1);

    const first = await audit.query({ limit: 3 });
    const second = await audit.query({ limit: 3, cursor: first.next! });
    const third = await audit.query({ limit: 3, cursor: second.next! });
    expect([...first.events, ...second.events, ...third.events].map((e) => e.callId)).toEqual([
      'c6',
      'c5',
      'c4',
      'c3',
      'c2',
      'c1',
      'c0',
    ]);
    expect(third.next).toBeNull();
    const t0 = first.events[6 - 6]!.at;
    expect(
      (await audit.query({ since: t0 - 2000, until: t0 })).events.map((e) => e.callId),
    ).toEqual(['c5', 'c4']);
    await expect(audit.query({ cursor: 'bogus' })).rejects.toMatchObject({
      reason: 'invalid_params',
    });
  });

  it('prunes records older than the retention', async () => {
    await audit.record({ event: 'login' });
    now += 91 * DAY_MS;
    await audit.record({ event: 'login.failed' });
    expect(await audit.prune(90)).toBe(1);
    expect((await audit.query({})).events.map((e) => e.event)).toEqual(['login.failed']);
  });

  it('never rejects a write: a failure goes to onError', async () => {
    const failures: string[] = [];
    const broken = new AuditLog(db, (_e, event) => failures.push(event));
    await db.destroy();
    await expect(broken.record({ event: 'login' })).resolves.toBeUndefined();
    expect(failures).toEqual(['login']);
    db = await openDatabase(':memory:');
  });
});

describe('config diff for config.reload', () => {
  it('names changed keys and which of them need a restart, never values', () => {
    const a = parseConfig(undefined, {}, 'a', '/srv');
    const b = parseConfig(
      'listen = "127.0.0.1:9999"\nring_timeout_seconds = 5\n[turn]\nurls = ["turn:x"]\nsecret = "s3"',
      {},
      'b',
      '/srv',
    );
    expect(diffConfig(a, b)).toEqual({
      changed: ['listen', 'ring_timeout_seconds', 'turn.urls', 'turn.secret'],
      applicable: ['ring_timeout_seconds', 'turn.urls', 'turn.secret'],
      restartRequired: ['listen'],
    });
    expect(diffConfig(a, a).changed).toEqual([]);
  });
});

describe('token bucket', () => {
  it('allows a burst, then the sustained rate, and says how long to wait', () => {
    let t = 0;
    const bucket = new TokenBucket(10, 3, () => t);
    expect([bucket.take(), bucket.take(), bucket.take()].every((v) => v.ok)).toBe(true);
    expect(bucket.take()).toEqual({ ok: false, retryAfter: 0.1 });
    t += 100;
    expect(bucket.take().ok).toBe(true);
    expect(bucket.take().ok).toBe(false);
    t += 10_000;
    bucket.configure(10, 1);
    expect(bucket.take().ok).toBe(true);
    expect(bucket.take().ok).toBe(false);
  });

  it('a window counter trips after more than max events in one window', () => {
    let t = 0;
    const w = new WindowCounter(1000, () => t);
    expect([w.add(2), w.add(2), w.add(2)]).toEqual([false, false, true]);
    t += 1000;
    expect(w.add(2)).toBe(false);
  });
});
