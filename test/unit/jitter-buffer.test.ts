import { describe, expect, it } from 'vitest';
import { FixedJitterBuffer, type PlayoutItem } from '../../main/media/jitter-buffer';

const F = 960; // 20 ms at 48 kHz
const pkt = (i: number, base = 1000) => ({
  sequenceNumber: (500 + i) & 0xffff,
  timestamp: (base + i * F) >>> 0,
  payload: Buffer.from([i & 0xff]),
});
const label = (it: PlayoutItem) =>
  it.kind === 'packet' ? `p${it.packet.payload[0]}` : it.kind === 'missing' ? 'miss' : 'buf';

describe('FixedJitterBuffer', () => {
  it('buffers until the target delay is reached, then plays in order', () => {
    const jb = new FixedJitterBuffer(60, F); // 3 packets
    jb.push(pkt(0), 0);
    expect(label(jb.pop())).toBe('buf');
    jb.push(pkt(1), 20);
    expect(label(jb.pop())).toBe('buf');
    jb.push(pkt(2), 40);
    expect([jb.pop(), jb.pop(), jb.pop()].map(label)).toEqual(['p0', 'p1', 'p2']);
  });

  it('reorders packets that arrive out of order', () => {
    const jb = new FixedJitterBuffer(60, F);
    for (const i of [1, 0, 3, 2]) jb.push(pkt(i), i * 20);
    expect([1, 2, 3, 4].map(() => label(jb.pop()))).toEqual(['p0', 'p1', 'p2', 'p3']);
  });

  it('reports a missing slot for a lost packet and plays the next on time', () => {
    const jb = new FixedJitterBuffer(40, F);
    for (const i of [0, 1, 3, 4]) jb.push(pkt(i), i * 20);
    expect([1, 2, 3, 4, 5].map(() => label(jb.pop()))).toEqual(['p0', 'p1', 'miss', 'p3', 'p4']);
    expect(jb.stats().packetsLost).toBe(1);
  });

  it('hands over the packet after a single gap so its FEC can rebuild the lost one', () => {
    const jb = new FixedJitterBuffer(40, F);
    for (const i of [0, 1, 3]) jb.push(pkt(i), i * 20);
    jb.pop();
    jb.pop();
    const gap = jb.pop();
    expect(gap).toMatchObject({ kind: 'missing', samples: F, next: { payload: Buffer.from([3]) } });
    // A longer gap: the first missing slot has no direct successor yet.
    const jb2 = new FixedJitterBuffer(20, F);
    for (const i of [0, 3]) jb2.push(pkt(i), i * 20);
    jb2.pop();
    const first = jb2.pop();
    expect(first.kind).toBe('missing');
    expect(first.kind === 'missing' && first.next).toBeUndefined();
    const second = jb2.pop();
    expect(second.kind === 'missing' && second.next?.payload[0]).toBe(3);
  });

  it('drops a packet that arrives after its playout time', () => {
    const jb = new FixedJitterBuffer(40, F);
    for (const i of [0, 1, 3]) jb.push(pkt(i), i * 20);
    expect([1, 2, 3].map(() => label(jb.pop()))).toEqual(['p0', 'p1', 'miss']);
    jb.push(pkt(2), 100);
    expect(jb.stats().packetsLate).toBe(1);
    expect(label(jb.pop())).toBe('p3');
  });

  it('discards duplicates', () => {
    const jb = new FixedJitterBuffer(40, F);
    jb.push(pkt(0), 0);
    jb.push(pkt(0), 1);
    expect(jb.stats().packetsDuplicate).toBe(1);
  });

  it('re-buffers to the target after running dry', () => {
    const jb = new FixedJitterBuffer(40, F);
    jb.push(pkt(0), 0);
    jb.push(pkt(1), 20);
    expect([jb.pop(), jb.pop(), jb.pop()].map(label)).toEqual(['p0', 'p1', 'buf']);
    jb.push(pkt(2), 100);
    expect(label(jb.pop())).toBe('buf');
    jb.push(pkt(3), 120);
    expect([jb.pop(), jb.pop()].map(label)).toEqual(['p2', 'p3']);
  });

  it('bounds the delay by dropping the oldest packets', () => {
    const jb = new FixedJitterBuffer(40, F, 40); // at most 80 ms
    for (let i = 0; i < 10; i++) jb.push(pkt(i), i * 20);
    expect(jb.stats().bufferedMs).toBeLessThanOrEqual(80);
    expect(jb.stats().packetsDiscarded).toBe(6);
    expect(label(jb.pop())).toBe('p6');
  });

  it('handles RTP timestamp wrap-around', () => {
    const jb = new FixedJitterBuffer(40, F);
    const base = 0xffffffff - F; // the second packet wraps past 2^32
    for (let i = 0; i < 4; i++) jb.push(pkt(i, base), i * 20);
    expect([1, 2, 3, 4].map(() => label(jb.pop()))).toEqual(['p0', 'p1', 'p2', 'p3']);
  });

  it('estimates interarrival jitter (RFC 3550 A.8)', () => {
    const steady = new FixedJitterBuffer(40, F);
    for (let i = 0; i < 50; i++) steady.push(pkt(i), i * 20);
    expect(steady.stats().jitterMs).toBeCloseTo(0, 3);
    const jittery = new FixedJitterBuffer(40, F);
    for (let i = 0; i < 200; i++) jittery.push(pkt(i), i * 20 + (i % 2 ? 10 : 0));
    // |D| = 10 ms every packet: J converges to 10 ms.
    expect(jittery.stats().jitterMs).toBeGreaterThan(9);
    expect(jittery.stats().jitterMs).toBeLessThan(10.5);
  });
});
