/**
 * A fixed-delay jitter buffer for one RTP audio stream.
 *
 * Packets are ordered by RTP timestamp (RFC 3550 §5.1) and held until the
 * buffer spans `targetMs` of audio; playout then takes one packet per
 * packet-duration, in timestamp order, whatever order packets arrived in. A
 * packet whose timestamp is already past the playout point is *late* and
 * dropped; a timestamp with no packet at its turn is *missing* (lost, or a
 * DTX gap) and the caller conceals it. When the buffer runs dry playout stops
 * and re-buffers to the target before it resumes. When it holds more than
 * `targetMs + maxExtraMs` (the sender's clock runs fast, or a burst arrived
 * after a stall) the oldest packets are dropped so delay stays bounded.
 *
 * Timestamps are in RTP clock units (48 kHz for Opus, RFC 7587 §4.1); durations
 * are given in samples of that clock. Sequence numbers are used only to count
 * loss. The interarrival jitter follows RFC 3550 §6.4.1 / Appendix A.8.
 *
 * Adaptive delay, loss concealment and FEC come with the call-quality work;
 * this buffer's target is fixed.
 */
export interface JitterPacket {
  sequenceNumber: number;
  /** RTP timestamp (48 kHz units). */
  timestamp: number;
  payload: Buffer;
}

export type PlayoutItem =
  | { kind: 'packet'; packet: JitterPacket }
  /**
   * Nothing arrived for this slot; conceal `samples` samples. `next` is the
   * packet that directly follows the gap when it is already here: its in-band
   * FEC (RFC 6716 §2.1.7) can rebuild the lost one.
   */
  | { kind: 'missing'; samples: number; next?: JitterPacket }
  /** Buffering (start or after an underrun): play silence. */
  | { kind: 'buffering' };

export interface JitterBufferStats {
  packetsReceived: number;
  /** Dropped because their playout time had passed. */
  packetsLate: number;
  /** Slots played without a packet. */
  packetsLost: number;
  /** Duplicates discarded. */
  packetsDuplicate: number;
  /** Packets dropped to bound delay. */
  packetsDiscarded: number;
  /** RFC 3550 interarrival jitter, ms. */
  jitterMs: number;
  /** Audio currently buffered, ms. */
  bufferedMs: number;
}

const CLOCK = 48_000;

/** Signed difference a − b of two 32-bit RTP timestamps (RFC 3550 wrap-around). */
export function tsDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/**
 * Inserts a packet into a list kept in RTP timestamp order (scanning from the
 * end: packets nearly always arrive in order).
 * @returns false, without inserting, when a packet with that timestamp is there already (a duplicate).
 */
export function insertInOrder(packets: JitterPacket[], packet: JitterPacket): boolean {
  let i = packets.length;
  while (i > 0 && tsDiff(packets[i - 1]!.timestamp, packet.timestamp) > 0) i--;
  if (i > 0 && packets[i - 1]!.timestamp === packet.timestamp) return false;
  packets.splice(i, 0, packet);
  return true;
}

export class FixedJitterBuffer {
  private readonly packets: JitterPacket[] = []; // sorted by timestamp
  private playoutTs: number | undefined; // timestamp of the next slot to play
  private playing = false;
  private lastDuration: number;
  private current: JitterPacket | undefined;
  private readonly targetSamples: number;
  private readonly maxSamples: number;
  private transit: number | undefined;
  private jitter = 0; // in clock units, RFC 3550 A.8
  private readonly s: Omit<JitterBufferStats, 'jitterMs' | 'bufferedMs'> = {
    packetsReceived: 0,
    packetsLate: 0,
    packetsLost: 0,
    packetsDuplicate: 0,
    packetsDiscarded: 0,
  };

  /**
   * @param targetMs delay the buffer builds before playing (≥ one packet).
   * @param packetSamples expected packet duration in samples (480 = 10 ms, 960 = 20 ms).
   * @param maxExtraMs how far above the target the buffer may grow before old packets are dropped.
   */
  constructor(
    readonly targetMs: number,
    packetSamples: number,
    maxExtraMs = 120,
  ) {
    this.lastDuration = packetSamples;
    this.targetSamples = Math.max(packetSamples, Math.round((targetMs * CLOCK) / 1000));
    this.maxSamples = this.targetSamples + Math.round((maxExtraMs * CLOCK) / 1000);
  }

  /**
   * Adds a received packet.
   * @param arrivalMs arrival time in ms on any monotonic clock (for the jitter estimate).
   */
  push(packet: JitterPacket, arrivalMs: number): void {
    this.s.packetsReceived++;
    const arrival = Math.round((arrivalMs * CLOCK) / 1000);
    const transit = (arrival - packet.timestamp) | 0;
    if (this.transit !== undefined) {
      const d = Math.abs((transit - this.transit) | 0);
      this.jitter += (d - this.jitter) / 16;
    }
    this.transit = transit;

    if (this.playoutTs !== undefined && this.playing && tsDiff(packet.timestamp, this.playoutTs) < 0) {
      this.s.packetsLate++;
      return;
    }
    if (!insertInOrder(this.packets, packet)) {
      this.s.packetsDuplicate++;
      return;
    }

    // Bound the delay.
    while (this.packets.length > 1 && this.spanSamples() > this.maxSamples) {
      this.packets.shift();
      this.s.packetsDiscarded++;
      this.playoutTs = this.packets[0]!.timestamp;
    }
  }

  /** Takes what plays next; call once per played packet duration. */
  pop(): PlayoutItem {
    if (!this.playing) {
      if (this.packets.length === 0 || this.spanSamples() < this.targetSamples) return { kind: 'buffering' };
      this.playing = true;
      this.playoutTs = this.packets[0]!.timestamp;
    }
    const head = this.packets[0];
    if (!head) {
      // Underrun: stop and re-buffer to the target.
      this.playing = false;
      return { kind: 'buffering' };
    }
    const ahead = tsDiff(head.timestamp, this.playoutTs!);
    if (ahead <= 0) {
      this.packets.shift();
      this.current = head;
      this.playoutTs = (head.timestamp + this.lastDuration) >>> 0;
      return { kind: 'packet', packet: head };
    }
    const samples = Math.min(ahead, this.lastDuration);
    this.playoutTs = (this.playoutTs! + samples) >>> 0;
    this.s.packetsLost++;
    return ahead === samples ? { kind: 'missing', samples, next: head } : { kind: 'missing', samples };
  }

  /** Tells the buffer how long the packet it just returned really was (from the decoder). */
  setPacketDuration(samples: number): void {
    // ≤ 120 ms, the longest Opus packet (RFC 6716 §3.2.5).
    if (samples <= 0 || samples > 5760) return;
    this.lastDuration = samples;
    if (this.current) this.playoutTs = (this.current.timestamp + samples) >>> 0;
  }

  /** Drops everything and re-buffers (a new stream, e.g. the peer changed SSRC). */
  reset(): void {
    this.packets.length = 0;
    this.playing = false;
    this.playoutTs = undefined;
    this.current = undefined;
    this.transit = undefined;
  }

  stats(): JitterBufferStats {
    return {
      ...this.s,
      jitterMs: (this.jitter * 1000) / CLOCK,
      bufferedMs: this.packets.length ? (this.spanSamples() * 1000) / CLOCK : 0,
    };
  }

  private spanSamples(): number {
    const first = this.packets[0];
    const last = this.packets[this.packets.length - 1];
    if (!first || !last) return 0;
    const from = this.playing && this.playoutTs !== undefined ? this.playoutTs : first.timestamp;
    return tsDiff(last.timestamp, from) + this.lastDuration;
  }
}
