import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Kysely } from 'kysely';
import { AuditLog, DAY_MS, MAX_OPEN_SUMMARIES, MAX_SOURCES_PER_GROUP, sanitizeDetail } from '../../server/audit';
import { diffConfig, parseConfig } from '../../server/config';
import type { DB } from '../../server/db';
import { openTestStore } from '../harness/store';
import { TokenBucket, WindowCounter } from '../../server/rate-limit';

// The audit log against a real store: in-memory SQLite, or a fresh PostgreSQL
// database in the server-pg project; over sockets in
// test/integration/server-admin.test.ts.

let db: Kysely<DB>;
let now = 1_700_000_000_000;
let audit: AuditLog;

beforeEach(async () => {
  db = await openTestStore();
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
    db = await openTestStore();
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

describe('sampled audit records (recordSampled)', () => {
  it('writes the first record of a key, counts the rest and writes one summary when the window ends', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const sampled = new AuditLog(db, undefined, () => now, { windowMs: () => 60_000 });
      const failure = { event: 'login.failed' as const, detail: { username: 'alice', remote: '192.0.2.1' } };
      for (let i = 0; i < 50; i++) await sampled.recordSampled('login.failed:192.0.2.1:alice', failure);
      await sampled.recordSampled('login.failed:192.0.2.2:alice', failure);
      await sampled.flush();
      expect((await sampled.query({})).events).toHaveLength(2);
      vi.advanceTimersByTime(60_000);
      await sampled.flush();
      const rows = (await sampled.query({})).events;
      expect(rows).toHaveLength(3);
      expect(rows[0]?.detail).toEqual({
        username: 'alice',
        remote: '192.0.2.1',
        summary: true,
        count: 49,
        windowSeconds: 60,
        since: now,
      });
      // The other key had nothing more to say: no summary. The next failure opens a new window.
      await sampled.recordSampled('login.failed:192.0.2.1:alice', failure);
      await sampled.flush();
      expect((await sampled.query({})).events).toHaveLength(4);
    } finally {
      vi.useRealTimers();
    }
  });

  it('shares one overflow summary per event beyond its open windows (ever-new sources), and closeSummaries writes what is pending', async () => {
    expect(MAX_OPEN_SUMMARIES).toBe(10_000);
    const sampled = new AuditLog(db, undefined, () => now, { windowMs: () => 3_600_000, maxOpen: 10 });
    for (let i = 0; i < 35; i++)
      void sampled.recordSampled(`device.auth_failed:10.0.0.${i}`, {
        event: 'device.auth_failed',
        detail: { remote: `10.0.0.${i}` },
      });
    await sampled.flush();
    // Ten sources with a window each, plus the first overflow record.
    expect((await sampled.query({})).events).toHaveLength(11);
    sampled.closeSummaries();
    await sampled.flush();
    const rows = (await sampled.query({})).events;
    expect(rows).toHaveLength(12);
    expect(rows[0]?.detail).toMatchObject({ overflow: true, summary: true, count: 24 });
  });

  it('gives at most MAX_SOURCES_PER_GROUP sources of one group a row of their own; the rest share one grouped window', async () => {
    const sampled = new AuditLog(db, undefined, () => now, { windowMs: () => 3_600_000 });
    const group = { key: 'login.failed:192.0.2.1', detail: { remote: '192.0.2.1' } };
    for (let i = 0; i < MAX_SOURCES_PER_GROUP + 30; i++)
      void sampled.recordSampled(`login.failed:192.0.2.1:user${i}`, { event: 'login.failed', detail: { username: `user${i}`, remote: '192.0.2.1' } }, group);
    // Another address is another group.
    void sampled.recordSampled('login.failed:192.0.2.2:user0', { event: 'login.failed', detail: { username: 'user0' } }, { key: 'login.failed:192.0.2.2', detail: {} });
    await sampled.flush();
    expect((await sampled.query({ limit: 1000 })).events).toHaveLength(MAX_SOURCES_PER_GROUP + 2);
    sampled.closeSummaries();
    await sampled.flush();
    const newest = (await sampled.query({ limit: 1 })).events[0];
    expect(newest?.detail).toEqual(expect.objectContaining({ remote: '192.0.2.1', grouped: true, summary: true, count: 29 }));
    expect(newest?.detail).not.toHaveProperty('username');
  });
});
