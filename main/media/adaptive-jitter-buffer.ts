import { insertInOrder, tsDiff, type JitterPacket } from './jitter-buffer';

/**
 * An adaptive jitter buffer for one RTP audio stream, after WebRTC NetEQ's
 * design (`modules/audio_coding/neteq`: DelayManager, DecisionLogic).
 *
 * **Target delay.** For every packet the *relative arrival delay* is how much
 * later it arrived than the fastest packet of the last `windowMs` would
 * predict: `r = transit − min(transit over the window)`, with
 * `transit = arrival − timestamp / 48 kHz` (the same transit as RFC 3550
 * §6.4.1). The target is the 95th percentile of r over the window plus one
 * packet duration (the playout pull's granularity), clamped to
 * [`minTargetMs`, `maxTargetMs`] — NetEQ's relative-arrival-delay histogram
 * with a quantile, without its forget factor (a sliding window instead).
 *
 * **Playout decisions** (one per pulled packet duration):
 * - *normal*: the packet due now is here → play it;
 * - *missing*: it is not, but later ones are → conceal it (PLC, or FEC from the
 *   next packet) and move on;
 * - *expand*: nothing is buffered → conceal without moving the playout point,
 *   so a packet that is merely late still plays when it comes (NetEQ's expand);
 * - *accelerate*: more than one packet above target after a quiet frame, or
 *   more than `maxExcessMs` above target whatever the audio → drop the due
 *   packet (time-compression by dropping a frame in silence);
 * - *decelerate*: more than one packet below target after a quiet frame →
 *   insert one concealed frame without moving the playout point.
 *
 * Timestamps are RTP units (48 kHz for Opus, RFC 7587 §4.1); durations in
 * samples of that clock; times in ms on any monotonic clock.
 */
export type AdaptivePlayout =
  | { kind: 'packet'; packet: JitterPacket }
  | { kind: 'missing'; samples: number; next?: JitterPacket }
  /** Conceal `samples` without consuming anything (expand, or decelerate). */
  | { kind: 'expand'; samples: number }
  /** Before the first packet reached the target: play silence. */
  | { kind: 'buffering' };

export interface AdaptiveJitterStats {
  packetsReceived: number;
  packetsLate: number;
  packetsLost: number;
  packetsDuplicate: number;
  packetsDiscarded: number;
  /** Frames concealed because nothing was buffered (underrun). */
  expandFrames: number;
  /** Frames dropped to shorten the delay. */
  accelerateFrames: number;
  /** Frames inserted to lengthen the delay. */
  decelerateFrames: number;
  /** Current target delay, ms. */
  targetMs: number;
  /** Audio buffered ahead of the playout point, ms. */
  bufferedMs: number;
  /** RFC 3550 interarrival jitter, ms. */
  jitterMs: number;
}

export interface AdaptiveJitterOptions {
  /** Expected packet duration in samples (480 = 10 ms, 960 = 20 ms). */
  packetSamples: number;
  /** Lower bound of the target, ms (default 20). */
  minTargetMs?: number;
  /** Upper bound of the target, ms (default 400). */
  maxTargetMs?: number;
  /** Target before any jitter was measured, ms (default 40). */
  initialTargetMs?: number;
  /** Delay-statistics window, ms (default 2000). */
  windowMs?: number;
  /** Excess above target that is cut even in speech, ms (default 80). */
  maxExcessMs?: number;
}

const CLOCK = 48_000;
const MAX_PACKET = 5760; // 120 ms, the longest Opus packet (RFC 6716 §3.2.5)
/** Buffer-level smoothing: each pop moves the filtered level 1/LEVEL_FILTER of the way (~8 packets). */
const LEVEL_FILTER = 8;
/** The target is recomputed every this many packets (50–100 ms). */
const TARGET_EVERY = 5;


export class AdaptiveJitterBuffer {
  private readonly packets: JitterPacket[] = [];
  private playoutTs: number | undefined;
  private current: JitterPacket | undefined;
  private started = false;
  private duration: number;
  private readonly minTarget: number;
  private readonly maxTarget: number;
  private readonly windowMs: number;
  private readonly maxExcess: number;
  private target: number; // samples
  private filtered: number | undefined; // smoothed buffer level, samples
  /** (arrival ms, transit ms) of recent packets, oldest first. */
  private readonly arrivals: { at: number; transit: number }[] = [];
  private lastTransit: number | undefined;
  private jitter = 0; // ms, RFC 3550 A.8
  private sinceTarget = 0;
  private readonly s = {
    packetsReceived: 0,
    packetsLate: 0,
    packetsLost: 0,
    packetsDuplicate: 0,
    packetsDiscarded: 0,
    expandFrames: 0,
    accelerateFrames: 0,
    decelerateFrames: 0,
  };

  constructor(options: AdaptiveJitterOptions) {
    this.duration = options.packetSamples;
    this.minTarget = ms2s(options.minTargetMs ?? 20);
    this.maxTarget = ms2s(options.maxTargetMs ?? 400);
    this.target = clamp(ms2s(options.initialTargetMs ?? 40), this.minTarget, this.maxTarget);
    this.windowMs = options.windowMs ?? 2000;
    this.maxExcess = ms2s(options.maxExcessMs ?? 80);
  }

  /**
   * Adds a received packet and updates the delay statistics.
   * @param arrivalMs arrival time on a monotonic clock, ms.
   */
  push(packet: JitterPacket, arrivalMs: number): void {
    this.s.packetsReceived++;
    this.observe(packet.timestamp, arrivalMs);
    if (this.started && this.playoutTs !== undefined && tsDiff(packet.timestamp, this.playoutTs) < 0) {
      this.s.packetsLate++; // its turn has passed (it was concealed)
      return;
    }
    if (!insertInOrder(this.packets, packet)) {
      this.s.packetsDuplicate++;
      return;
    }
    // A hard ceiling: never hold more than the largest target plus the excess.
    while (this.packets.length > 1 && this.bufferedSamples() > this.maxTarget + this.maxExcess) {
      this.packets.shift();
      this.s.packetsDiscarded++;
      if (this.started) this.playoutTs = this.packets[0]!.timestamp;
    }
  }

  /**
   * The next playout decision; call once per played packet duration.
   * @param lastWasQuiet whether the frame just played was quiet (speech pause):
   *   the buffer then prefers to shrink or grow there, where it is inaudible.
   */
  pop(lastWasQuiet = false): AdaptivePlayout {
    if (!this.started) {
      if (this.packets.length === 0 || this.bufferedSamples() < this.target) return { kind: 'buffering' };
      this.started = true;
      this.playoutTs = this.packets[0]!.timestamp;
    }
    const head = this.packets[0];
    if (!head) {
      this.s.expandFrames++;
      return { kind: 'expand', samples: this.duration };
    }
    const level = this.bufferedSamples();
    // Decisions use a smoothed level (NetEQ's BufferLevelFilter): the raw level
    // swings by the jitter itself, and deciding on it would drop and insert
    // frames back and forth.
    this.filtered = this.filtered === undefined ? level : this.filtered + (level - this.filtered) / LEVEL_FILTER;
    const ahead = tsDiff(head.timestamp, this.playoutTs!);
    if (ahead <= 0) {
      const excess = this.filtered - this.duration - this.target;
      if (this.packets.length > 1 && (level - this.duration - this.target > this.maxExcess || (lastWasQuiet && excess >= this.duration))) {
        // Accelerate: drop the due packet.
        this.packets.shift();
        this.s.accelerateFrames++;
        this.filtered -= this.duration;
        this.playoutTs = this.packets[0]!.timestamp;
        return this.pop(lastWasQuiet);
      }
      if (lastWasQuiet && this.filtered + this.duration <= this.target && this.s.packetsReceived > 50) {
        // Decelerate: insert a concealed frame in a pause.
        this.s.decelerateFrames++;
        this.filtered += this.duration;
        return { kind: 'expand', samples: this.duration };
      }
      this.packets.shift();
      this.current = head;
      this.playoutTs = (head.timestamp + this.duration) >>> 0;
      return { kind: 'packet', packet: head };
    }
    const samples = Math.min(ahead, this.duration);
    this.playoutTs = (this.playoutTs! + samples) >>> 0;
    this.current = undefined;
    this.s.packetsLost++;
    return ahead === samples ? { kind: 'missing', samples, next: head } : { kind: 'missing', samples };
  }

  /** The real duration of the packet just returned (from the decoder), samples. */
  setPacketDuration(samples: number): void {
    if (samples <= 0 || samples > MAX_PACKET) return;
    this.duration = samples;
    if (this.current) this.playoutTs = (this.current.timestamp + samples) >>> 0;
  }

  /** Drops everything and starts over (a new stream, e.g. the peer changed SSRC). */
  reset(): void {
    this.packets.length = 0;
    this.arrivals.length = 0;
    this.started = false;
    this.playoutTs = undefined;
    this.current = undefined;
    this.lastTransit = undefined;
    this.filtered = undefined;
  }

  stats(): AdaptiveJitterStats {
    return {
      ...this.s,
      targetMs: s2ms(this.target),
      bufferedMs: s2ms(this.bufferedSamples()),
      jitterMs: this.jitter,
    };
  }

  private observe(timestamp: number, arrivalMs: number): void {
    // Transit in ms, unwrapped relative to the previous packet's (timestamps wrap at 2^32).
    const tsMs = timestamp / (CLOCK / 1000);
    let transit = arrivalMs - tsMs;
    if (this.lastTransit !== undefined) {
      const wrap = 2 ** 32 / (CLOCK / 1000);
      while (transit - this.lastTransit > wrap / 2) transit -= wrap;
      while (this.lastTransit - transit > wrap / 2) transit += wrap;
      this.jitter += (Math.abs(transit - this.lastTransit) - this.jitter) / 16;
    }
    this.lastTransit = transit;
    this.arrivals.push({ at: arrivalMs, transit });
    while (this.arrivals.length > 1 && arrivalMs - this.arrivals[0]!.at > this.windowMs) this.arrivals.shift();
    // The quantile needs a sort of the window: refresh it every few packets, not every one.
    if (this.arrivals.length < 10 || ++this.sinceTarget < TARGET_EVERY) return;
    this.sinceTarget = 0;
    let min = Infinity;
    for (const a of this.arrivals) min = Math.min(min, a.transit);
    const relative = this.arrivals.map((a) => a.transit - min).sort((x, y) => x - y);
    const p95 = relative[Math.min(relative.length - 1, Math.floor(0.95 * relative.length))]!;
    this.target = clamp(ms2s(p95) + this.duration, this.minTarget, this.maxTarget);
  }

  /** Audio from the playout point (or the first packet, before start) to the end of the last packet. */
  private bufferedSamples(): number {
    const first = this.packets[0];
    const last = this.packets[this.packets.length - 1];
    if (!first || !last) return 0;
    const from = this.started && this.playoutTs !== undefined ? this.playoutTs : first.timestamp;
    return Math.max(0, tsDiff(last.timestamp, from) + this.duration);
  }
}

function ms2s(ms: number): number {
  return Math.round((ms * CLOCK) / 1000);
}
function s2ms(samples: number): number {
  return Math.round((samples * 1000) / CLOCK);
}
function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}
