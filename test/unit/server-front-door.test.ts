import { describe, expect, it } from 'vitest';
import { ParleyError } from '../../common/errors';
import { clientKey, HashGate } from '../../server/front-door';

describe('the client address a limit counts', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['203.0.113.7', '203.0.113.7'],
    ['::ffff:203.0.113.7', '203.0.113.7'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::9', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002:ffff::1', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['unknown', 'unknown'],
  ])('%s counts as %s', (ip, key) => {
    expect(clientKey(ip)).toBe(key);
  });
});

/** A hash whose end the test decides. */
function deferred(): { promise: Promise<string>; finish: () => void } {
  let finish = () => {};
  const promise = new Promise<string>((r) => (finish = () => r('hashed')));
  return { promise, finish };
}

describe('the password-hash cap', () => {
  it('runs at most `max` hashes at once, queues up to `queue` in order, and refuses the rest with unavailable', async () => {
    let refused = 0;
    const gate = new HashGate(2, 1, () => refused++);
    const hashes = [deferred(), deferred(), deferred()];
    const started: number[] = [];
    const runs = hashes.map((h, i) =>
      gate.run(() => {
        started.push(i);
        return h.promise;
      }),
    );
    const overflow = gate.run(() => Promise.resolve('never'));
    await expect(overflow).rejects.toMatchObject({ reason: 'unavailable', data: { retryAfter: 1 } });
    await expect(overflow).rejects.toBeInstanceOf(ParleyError);
    expect(refused).toBe(1);
    await Promise.resolve();
    expect(started).toEqual([0, 1]);
    expect(gate.stats).toEqual({ running: 2, waiting: 1, max: 2 });
    hashes[0]?.finish();
    await runs[0];
    await new Promise((r) => setImmediate(r));
    expect(started).toEqual([0, 1, 2]);
    expect(gate.stats).toEqual({ running: 2, waiting: 0, max: 2 });
    hashes[1]?.finish();
    hashes[2]?.finish();
    await Promise.all(runs);
    expect(gate.stats).toEqual({ running: 0, waiting: 0, max: 2 });
  });

  it('frees its slot when a hash fails, and takes more waiters at once when the cap is raised', async () => {
    const gate = new HashGate(1, 5);
    await expect(gate.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    const slow = deferred();
    const first = gate.run(() => slow.promise);
    const queued = [gate.run(() => Promise.resolve('a')), gate.run(() => Promise.resolve('b'))];
    expect(gate.stats.waiting).toBe(2);
    gate.configure(3, 5);
    expect(await Promise.all(queued)).toEqual(['a', 'b']);
    slow.finish();
    await first;
    expect(gate.stats).toEqual({ running: 0, waiting: 0, max: 3 });
  });

  it('defaults to half the CPU cores, at least one', () => {
    expect(HashGate.slots(0)).toBeGreaterThanOrEqual(1);
    expect(HashGate.slots(4)).toBe(4);
  });
});
