/**
 * TokenBuckets (server/rate-limit.ts): one bucket per key, in Redis when
 * clustered (the Lua script runs in a real Redis in test/integration/cluster.test.ts),
 * in this process otherwise — and in this process when Redis does not answer.
 */
import { describe, expect, it } from 'vitest';
import { TokenBuckets, type BucketStore } from '../../server/rate-limit';

describe('TokenBuckets', () => {
  it('without a store: burst tokens per key, then a wait', async () => {
    const b = new TokenBuckets('t:');
    for (let i = 0; i < 3; i++) expect(await b.take('a', 1, 3)).toEqual({ ok: true });
    const refused = await b.take('a', 1, 3);
    expect(refused.ok).toBe(false);
    expect(await b.take('b', 1, 3)).toEqual({ ok: true }); // another key, another bucket
  });

  it('with a store: the store decides, with its retryAfter', async () => {
    const calls: unknown[][] = [];
    const store: BucketStore = {
      eval: (...args) => {
        calls.push(args);
        return Promise.resolve(calls.length <= 2 ? [1] : [0, '0.5']);
      },
    };
    const b = new TokenBuckets('parley:bucket:calls:', store);
    expect(await b.take('acct', 2, 2)).toEqual({ ok: true });
    expect(await b.take('acct', 2, 2)).toEqual({ ok: true });
    expect(await b.take('acct', 2, 2)).toEqual({ ok: false, retryAfter: 0.5 });
    expect(calls[0]!.slice(1)).toEqual([1, 'parley:bucket:calls:acct', 2, 2]);
  });

  it('when the store fails or hangs, this process decides alone', async () => {
    const failing: BucketStore = { eval: () => Promise.reject(new Error('connection is closed')) };
    const hanging: BucketStore = { eval: () => new Promise(() => {}) };
    for (const store of [failing, hanging]) {
      const b = new TokenBuckets('t:', store);
      expect(await b.take('a', 1, 1)).toEqual({ ok: true });
      expect((await b.take('a', 1, 1)).ok).toBe(false);
    }
  });
});
