import { describe, expect, it } from 'vitest';
import { Red, RedEncoder, RedHandler, RtpHeader, RtpPacket } from 'werift';
import { countRedundancyRecoveries } from '../../main/media/peer';

/**
 * The RFC 2198 recovery counter of a 1:1 call's transport, on werift's own
 * RED encoder (the sender's) and RED handler (the receiver's, which it wraps):
 * a stream of 20 ms Opus-sized payloads, one redundant frame per packet (or
 * two), through a path that loses, reorders or duplicates packets.
 */
const PT = 111;

/** The RED packets a werift sender with `distance` redundant frames sends for `frames` frames. */
function redStream(frames: number, distance: number): RtpPacket[] {
  const encoder = new RedEncoder(distance);
  const out: RtpPacket[] = [];
  for (let i = 0; i < frames; i++) {
    const timestamp = 1000 + i * 960;
    encoder.push({ block: Buffer.alloc(60, i), blockPT: PT, timestamp });
    const red = encoder.build();
    out.push(new RtpPacket(new RtpHeader({ payloadType: 63, sequenceNumber: 500 + i, timestamp, ssrc: 42 }), red.serialize()));
  }
  return out;
}

/** Feeds packets to a RedHandler as werift's receiver does; returns the sequence numbers passed on and the count. */
function receive(packets: RtpPacket[]): { delivered: number[]; recovered: number } {
  const receiver = { audioRedHandler: new RedHandler() };
  let recovered = 0;
  countRedundancyRecoveries(receiver, () => recovered++);
  const delivered: number[] = [];
  for (const p of packets) {
    for (const out of receiver.audioRedHandler.push(Red.deSerialize(p.payload), p)) delivered.push(out.header.sequenceNumber);
  }
  return { delivered, recovered };
}

describe('RFC 2198 recoveries (countRedundancyRecoveries on werift RedHandler)', () => {
  const table: { name: string; distance: number; path: (p: RtpPacket[]) => RtpPacket[]; recovered: number; missing: number[] }[] = [
    { name: 'no loss', distance: 1, path: (p) => p, recovered: 0, missing: [] },
    { name: 'single losses, one redundant frame', distance: 1, path: (p) => p.filter((_, i) => i !== 3 && i !== 7), recovered: 2, missing: [] },
    // A burst of two with one redundant frame: the first of the two is gone for good.
    { name: 'a burst of two, one redundant frame', distance: 1, path: (p) => p.filter((_, i) => i !== 4 && i !== 5), recovered: 1, missing: [504] },
    { name: 'a burst of two, two redundant frames', distance: 2, path: (p) => p.filter((_, i) => i !== 4 && i !== 5), recovered: 2, missing: [] },
    // Packet 5 overtaken by 6: its copy in 6 plays, the late original is a duplicate.
    { name: 'reordering', distance: 1, path: (p) => [...p.slice(0, 5), p[6]!, p[5]!, ...p.slice(7)], recovered: 1, missing: [] },
    { name: 'network duplicates', distance: 1, path: (p) => p.flatMap((x, i) => (i % 3 === 0 ? [x, x] : [x])), recovered: 0, missing: [] },
    { name: 'the last packet lost (nothing after it)', distance: 1, path: (p) => p.slice(0, -1), recovered: 0, missing: [511] },
  ];
  for (const row of table) {
    it(row.name, () => {
      const { delivered, recovered } = receive(row.path(redStream(12, row.distance)));
      expect(recovered).toBe(row.recovered);
      const expected = Array.from({ length: 12 }, (_, i) => 500 + i).filter((s) => !row.missing.includes(s));
      expect([...new Set(delivered)].sort((a, b) => a - b)).toEqual(expected);
      expect(delivered.length).toBe(new Set(delivered).size); // each packet passed on once
    });
  }

  it('leaves a receiver without werift RED handler as it is', () => {
    const receiver = {};
    countRedundancyRecoveries(receiver, () => {
      throw new Error('never');
    });
    expect(receiver).toEqual({});
  });
});
