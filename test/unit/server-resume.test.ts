import { afterEach, describe, expect, it, vi } from 'vitest';
import type { RecoveredCall } from '../../server/open-calls';
import { CallResumption } from '../../server/resume';

const A = { accountId: 'acc-a', username: 'alice', deviceId: 'dev-a' };
const B = { accountId: 'acc-b', username: 'bob', deviceId: 'dev-b' };
const answered: RecoveredCall = { callId: 'c1', callerAccountId: 'acc-a', devices: ['dev-a', 'dev-b'], answeredAt: 1000 };

function setup(calls: RecoveredCall[] = [answered], graceMs = 10_000) {
  const events: string[] = [];
  const r = new CallResumption(calls, graceMs, {
    resume: (c, caller, callee) => events.push(`resume ${c.callId} ${caller.username}→${callee.username}`),
    end: (c, tellNow, untold) => events.push(`end ${c.callId} now=[${tellNow.join(',')}] later=[${untold.join(',')}]`),
  });
  return { r, events };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('CallResumption (calls a server crash left open)', () => {
  it('resumes an answered call once both devices list it in hello', () => {
    const { r, events } = setup();
    expect(r.onHello(B, ['c1'], () => false)).toEqual([]);
    expect(events).toEqual([]);
    expect(r.onHello(A, ['c1'], () => false)).toEqual([]);
    expect(events).toEqual(['resume c1 alice→bob']);
    expect(r.size).toBe(0);
  });

  it('ends the call at once for both when a device comes back without it', () => {
    const { r, events } = setup();
    r.onHello(A, ['c1'], () => false);
    expect(r.onHello(B, [], () => false)).toEqual(['c1']);
    expect(events).toEqual(['end c1 now=[dev-a] later=[]']);
  });

  it('ends it after the grace period: the device that came back now, the other at its next hello', () => {
    vi.useFakeTimers();
    const { r, events } = setup();
    r.onHello(A, ['c1'], () => false);
    vi.advanceTimersByTime(10_000);
    expect(events).toEqual(['end c1 now=[dev-a] later=[dev-b]']);
    expect(r.onHello(B, ['c1'], () => false)).toEqual(['c1']); // unknown by now: told it ended
  });

  it('tells a device about a listed call nobody knows, and leaves known ones alone', () => {
    const { r } = setup([]);
    expect(r.onHello(A, ['x', 'y'], (id) => id === 'y')).toEqual(['x']);
  });

  it('never resumes a call that was still ringing', () => {
    const { r, events } = setup([{ ...answered, answeredAt: null }]);
    expect(r.size).toBe(0);
    expect(r.onHello(A, ['c1'], () => false)).toEqual(['c1']);
    expect(events).toEqual([]);
  });
});
