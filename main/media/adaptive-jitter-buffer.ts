import { insertInOrder, tsDiff, type JitterPacket } from './jitter-buffer';

/**
 * An adaptive jitter buffer for one RTP audio stream, after WebRTC NetEQ's
 * design (`modules/audio_coding/neteq`: DelayManager, DecisionLogic).
 *
 * **Target delay.** For every packet the *relative arrival delay* is how much
 * later it arrived than the fastest packet of the last `windowMs` would
 * predict: `r = transit − min(transit over the window)`, with
 * `transit = arrival − timestamp / 48 kHz` (the same transit as RFC 3550
 * §6.4.1). The wanted *playout delay* (in the same transit terms: when a
 * sample plays minus its timestamp) is `min transit + quantile(r)` plus one
 * packet (the speaker pulls whole frames, in bursts after a stall), with the
 * `quantile` (default 0.99) of r over the window (default 2 s): a packet as
 * late as that quantile still arrives before its turn — NetEQ's
 * relative-arrival-delay quantile (DelayManager), with a sliding window
 * instead of its forget factor. Chosen with bench/jitter-sim.ts (9 seeds, two
 * impaired legs, RFC 2198 redundancy on; mean similarity and playout delay
 * p50 for `wifi` / `mobile` / `bad`):
 *
 *   buffer level held at p95 + 1 packet (before)  0.955 / 0.801 / 0.746   107 / 247 / 347 ms
 *   playout delay, 2 s window, 0.97               0.951 / 0.779 / 0.793    87 / 187 / 287 ms
 *   playout delay, 2 s window, 0.99               0.948 / 0.795 / 0.830    87 / 207 / 287 ms
 *   same, + one packet of margin (default)        0.948 / 0.801 / 0.837    87 / 207 / 287 ms
 *   playout delay, 4 s window, 0.995              0.949 / 0.810 / 0.845    87 / 207 / 287 ms
 *
 * A shorter memory drops frames more often (each drop is a small time jump
 * the listener hears); a longer one keeps a single delay spike in the target
 * for its whole length. In real calls on this shared machine a receiver's
 * event-loop stalls (and the relay's) make such spikes: with 4 s at 0.995 one
 * 200 ms spike kept clicks 250 ms late for 3 s (bench/quality.ts, `clean`), so
 * the default keeps the 2 s memory of the first version. The buffer target
 * reported in stats is `quantile(r)` plus one packet.
 *
 * **Recurring delay peaks** (NetEQ's DelayPeakDetector). A 2 s memory
 * forgets a stall 2 s after it: when stalls recur every few seconds (a busy
 * relay or sender, Wi-Fi scans), each one after a calm 2 s runs the buffer
 * dry mid-word. Measured in `npm run bench:quality` `clean` (through the
 * impairment relay and coturn, no impairment): 14 peaks of 20–76 ms in 41 s,
 * 51–53 underruns a call, trial similarity down to 0.79. A packet whose
 * relative delay is at least twice the window's quantile and
 * {@link PEAK_MIN_EXCESS_MS} above it is a peak (late packets within
 * {@link PEAK_MERGE_MS} of one are the same peak); while two or more peaks
 * fall within {@link PEAK_MEMORY_MS}, the quantile is raised to the highest of
 * them. A single stall (a call's start, one GC) does not engage it. A packet
 * later than the largest target (`maxTargetMs`) is an outage, not a peak: no
 * target could have covered it, and counted as one it held the target at the
 * largest for 20 s beside any small peak (measured: a 1 s stall of both
 * daemons 2 s after a 28 ms peak pinned a call at 400 ms until it ended).
 *
 * Why the playout delay, and not the buffer level, is steered: the buffer
 * holds `playout delay − transit of the newest packet`, so holding the *level*
 * at `quantile(r)` makes the delay `mean transit + quantile(r)`, the mean
 * jitter counted twice (the first row of the table above).
 *
 * **Playout decisions** (one per pulled packet duration, at time `nowMs`):
 * - *normal*: the packet due now is here → play it;
 * - *missing*: it is not, but later ones are → conceal it (PLC, or FEC from the
 *   next packet) and move on;
 * - *expand*: nothing is buffered → conceal without moving the playout point,
 *   so a packet that is merely late still plays when it comes (NetEQ's expand);
 *   when the next packet that comes is a later one (the ones between were
 *   lost, or not sent in DTX), the audio expanded meanwhile stands for them:
 *   the playout point jumps by up to that much instead of concealing the same
 *   gap twice and keeping the extra delay (NetEQ's merge after expand). In
 *   bench/jitter-sim.ts `mobile` (bursts of 3 per leg) an empty buffer at a
 *   burst used to cost the burst twice, and its length in added delay;
 * - *accelerate*: the (smoothed) playout delay is ¾ packet (aligned: a
 *   packet) or more above the wanted delay after a quiet frame (so it stays within a packet of it under
 *   clock drift), or more than `maxExcessMs` above it
 *   whatever the audio → drop the due packet (time-compression by dropping a
 *   frame in silence);
 * - *decelerate*: a packet or more below the wanted delay after a quiet frame
 *   → insert one concealed frame without moving the playout point.
 *
 * **Phase alignment** (`alignPhase`, the 1:1 call's speaker): whole-packet
 * steps leave each packet waiting wherever the call's first pull fell in the
 * packet period, a different 0–20 ms each call at 20 ms packets (measured:
 * `npm run bench` 77 ms, `npm run demo` 80–96 ms the same hour; 66–72 ms in
 * every demo call once aligned). The reader's frames may instead be shortened or lengthened in
 * pauses by 5 ms steps ({@link AdaptiveJitterBuffer.alignStep}), so the pull
 * that takes a packet comes about `quantile + 5 ms` after its arrival in every
 * call; the margin is then one device period instead of a packet, and the
 * playout starts once the first packet has waited {@link ALIGNED_START_WAIT_MS}
 * (the reader pulls 5 ms at a time until then) instead of two packets deep.
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
  /** Net samples inserted (> 0) or dropped (< 0) by {@link AdaptiveJitterBuffer.alignStep}. */
  alignedSamples: number;
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
  /** Lower bound of the target, ms (default 20; with `alignPhase` the margin). */
  minTargetMs?: number;
  /** Upper bound of the target, ms (default 400). */
  maxTargetMs?: number;
  /** Target before any jitter was measured, ms (default 20: one 20 ms packet; with `alignPhase` the start waits {@link ALIGNED_START_WAIT_MS} instead). */
  initialTargetMs?: number;
  /** Delay-statistics window, ms (default 2000). */
  windowMs?: number;
  /** Excess above target that is cut even in speech, ms (default 80). */
  maxExcessMs?: number;
  /** Quantile of the relative arrival delay the playout delay covers, 0.5–1 (default 0.99). */
  quantile?: number;
  /**
   * Margin above the quantile, ms (default: one packet). A reader that aligns
   * its pulls to the arrivals ({@link AdaptiveJitterBuffer.alignStep}) needs
   * less: its pulls come at most a device period after a packet's turn.
   */
  marginMs?: number;
  /**
   * The reader calls {@link AdaptiveJitterBuffer.alignStep} every frame: the
   * margin defaults to {@link ALIGNED_MARGIN_MS}, and whole packets are dropped
   * in pauses only from one packet above the wanted delay (below that, the
   * alignment steps take it).
   */
  alignPhase?: boolean;
}

/** The margin above the quantile when the reader aligns its pulls, ms: one device period. */
export const ALIGNED_MARGIN_MS = 5;
/** An underrun's added margin comes off a step per this long without another, ms. */
const MARGIN_DECAY_MS = 20_000;
/** An aligned reader's playout starts once the first packet has waited this long, ms: the margin and 5 ms of jitter. */
export const ALIGNED_START_WAIT_MS = 10;

/** The unit of a phase alignment step: 5 ms at 48 kHz (a device period; Opus PLC takes multiples of 2.5 ms). */
export const ALIGN_STEP_SAMPLES = 240;

const CLOCK = 48_000;
const MAX_PACKET = 5760; // 120 ms, the longest Opus packet (RFC 6716 §3.2.5)
/** Buffer-level smoothing: each pop moves the filtered level 1/LEVEL_FILTER of the way (~8 packets). */
const LEVEL_FILTER = 8;
/** The target is recomputed every this many packets (50–100 ms). */
const TARGET_EVERY = 5;
/** Arrivals the window can hold: 2 s of 10 ms packets with room for duplicates and bursts. */
const ARRIVAL_RING = 1024;
/** Histogram buckets of relative delay, 1 ms each: up to the largest target (400 ms) and beyond. */
const HISTOGRAM_BUCKETS = 1024;
/**
 * Delay peaks (see {@link AdaptiveJitterBuffer} "Recurring delay peaks"): a
 * packet is a peak when its relative delay is at least twice the window's
 * quantile and this much above it, ms.
 */
const PEAK_MIN_EXCESS_MS = 15;
/** Peaks closer than this are one event (a stall's burst of late packets), ms. */
const PEAK_MERGE_MS = 1000;
/** Peaks are remembered this long; two or more within it keep the target at the highest, ms. */
const PEAK_MEMORY_MS = 20_000;
/** At most this many peaks are remembered (the newest). */
const MAX_PEAKS = 8;


export class AdaptiveJitterBuffer {
  private readonly packets: JitterPacket[] = [];
  private playoutTs: number | undefined;
  private current: JitterPacket | undefined;
  private started = false;
  /** Arrival of the first packet buffered before the start, ms. */
  private firstArrivalMs: number | undefined;
  private duration: number;
  private readonly minTarget: number;
  private readonly maxTarget: number;
  private readonly windowMs: number;
  private readonly maxExcess: number;
  private target: number; // samples
  private readonly quantile: number;
  /** Margin above the quantile, samples; undefined: one packet. */
  private readonly margin: number | undefined;
  private readonly aligned: boolean;
  /** Wanted playout delay in transit terms (min transit + quantile), ms; undefined until measured. */
  private wantedOffsetMs: number | undefined;
  /** Smoothed (playout delay − wanted), ms. */
  private filtered: number | undefined;
  /** The newest arrival: its time (ms), unwrapped transit (ms) and timestamp. */
  private newest: { at: number; transit: number; timestamp: number } | undefined;
  /**
   * Arrival times and transits (ms) of the packets in the window: a ring of
   * {@link ARRIVAL_RING} entries, oldest at `arrivalHead`, `arrivalCount` in it
   * (no allocation per packet).
   */
  private readonly arrivalAt = new Float64Array(ARRIVAL_RING);
  private readonly arrivalTransit = new Float64Array(ARRIVAL_RING);
  private arrivalHead = 0;
  private arrivalCount = 0;
  /** Counts of relative arrival delay per 1 ms bucket, reused for every target update. */
  private readonly histogram = new Uint32Array(HISTOGRAM_BUCKETS);
  private lastTransit: number | undefined;
  private jitter = 0; // ms, RFC 3550 A.8
  private sinceTarget = 0;
  /** Samples expanded since the last packet or concealed gap, not yet set against a gap. */
  private expanded = 0;
  private readonly s = {
    packetsReceived: 0,
    packetsLate: 0,
    packetsLost: 0,
    packetsDuplicate: 0,
    packetsDiscarded: 0,
    expandFrames: 0,
    accelerateFrames: 0,
    decelerateFrames: 0,
    alignedSamples: 0,
  };

  constructor(options: AdaptiveJitterOptions) {
    this.duration = options.packetSamples;
    // An aligned reader's target may be as low as its margin: the jitter's quantile plus one device period.
    this.minTarget = ms2s(options.minTargetMs ?? (options.alignPhase ? (options.marginMs ?? ALIGNED_MARGIN_MS) : 20));
    this.maxTarget = ms2s(options.maxTargetMs ?? 400);
    this.target = clamp(ms2s(options.initialTargetMs ?? 20), this.minTarget, this.maxTarget);
    this.windowMs = options.windowMs ?? 2000;
    this.maxExcess = ms2s(options.maxExcessMs ?? 80);
    this.quantile = clamp(options.quantile ?? 0.99, 0.5, 1);
    const marginMs = options.marginMs ?? (options.alignPhase ? ALIGNED_MARGIN_MS : undefined);
    this.margin = marginMs === undefined ? undefined : ms2s(marginMs);
    this.aligned = options.alignPhase ?? false;
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
    if (!this.started && this.firstArrivalMs === undefined) this.firstArrivalMs = arrivalMs;
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
   * @param nowMs the time of the pull on the clock of {@link push}'s arrival
   *   times, ms; without it the newest arrival time stands in (up to a packet
   *   early).
   */
  pop(lastWasQuiet = false, nowMs?: number, accelerated = false): AdaptivePlayout {
    if (!this.started) {
      if (this.packets.length === 0) return { kind: 'buffering' };
      if (this.aligned) {
        // The reader pulls a step at a time while buffering: start once the first packet has waited the
        // margin and a first guess of the jitter, so the first words play at about the delay the call keeps.
        if ((nowMs ?? this.newest!.at) - this.firstArrivalMs! < ALIGNED_START_WAIT_MS) return { kind: 'buffering' };
      } else if (this.bufferedSamples() < this.target) return { kind: 'buffering' };
      this.started = true;
      this.playoutTs = this.packets[0]!.timestamp;
    }
    const head = this.packets[0];
    if (!head) {
      this.s.expandFrames++;
      this.expanded += this.duration;
      return { kind: 'expand', samples: this.duration };
    }
    let ahead = tsDiff(head.timestamp, this.playoutTs!);
    // The buffer ran dry and the packet that comes is the one that was due: it was late (an underrun), not
    // lost nor left out by DTX (those come back as a later packet, below).
    if (ahead <= 0 && this.expanded > 0 && this.aligned) this.raiseMargin(nowMs ?? this.newest?.at ?? 0);
    if (ahead > 0 && this.expanded > 0) {
      // Merge: the expanded audio covered (part of) the gap before this packet.
      const covered = Math.min(ahead, this.expanded);
      this.playoutTs = (this.playoutTs! + covered) >>> 0;
      this.s.packetsLost += Math.round(covered / this.duration);
      ahead -= covered;
    }
    this.expanded = 0;
    if (ahead <= 0) {
      // Decisions use a smoothed error (NetEQ's BufferLevelFilter): the pull
      // times jitter with the device, and deciding on the raw value would drop
      // and insert frames back and forth.
      const error = this.delayErrorSamples(nowMs);
      this.filtered = this.filtered === undefined ? error : this.filtered + (error - this.filtered) / LEVEL_FILTER;
      if (!accelerated && this.packets.length > 1 && (error > this.maxExcess || (lastWasQuiet && this.filtered >= (this.aligned ? this.duration : (3 * this.duration) / 4)))) {
        // Accelerate: drop the due packet (one per pull: a run of dropped frames would be heard).
        this.packets.shift();
        this.s.accelerateFrames++;
        this.filtered -= this.duration;
        this.playoutTs = this.packets[0]!.timestamp;
        return this.pop(lastWasQuiet, nowMs, true);
      }
      if (lastWasQuiet && this.filtered <= -this.duration && this.s.packetsReceived > 50) {
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

  /**
   * How much longer than wanted the sample at the playout point waits, in
   * samples: (now − its timestamp) − (min transit + quantile), all in transit
   * terms (unwrapped through the newest arrival's transit).
   */
  private delayErrorSamples(nowMs: number | undefined): number {
    const n = this.newest;
    if (!n || this.wantedOffsetMs === undefined || this.playoutTs === undefined) {
      return this.bufferedSamples() - this.duration - this.target;
    }
    const offsetMs = ((nowMs ?? n.at) - n.at) + n.transit + tsDiff(n.timestamp, this.playoutTs) / (CLOCK / 1000);
    return ms2s(offsetMs - this.wantedOffsetMs);
  }

  /**
   * Sub-packet phase alignment, for a reader whose frames may be shortened or
   * lengthened (PlayoutChain with `alignPhase`): with whole-packet steps alone
   * the wait between a packet's arrival and its pull is wherever the call's
   * first pull fell in the packet period (0–20 ms at 20 ms packets, a
   * different figure each call). Called once per pulled frame with whether
   * that frame and the one before were quiet; returns how many samples to
   * drop from the frame's end (> 0) or insert after it (< 0), in
   * {@link ALIGN_STEP_SAMPLES} steps, at most half a packet (dropping) or one
   * step (inserting) per frame, only in quiet and only once the delay has been
   * measured; 0 otherwise. NetEQ reaches the same with its accelerate and
   * preemptive-expand operations (time-stretching inside a packet).
   */
  alignStep(quiet: boolean): number {
    const f = this.filtered;
    if (!quiet || f === undefined || this.wantedOffsetMs === undefined) return 0;
    if (f >= ALIGN_STEP_SAMPLES) {
      const steps = Math.min(Math.floor(f / ALIGN_STEP_SAMPLES), Math.max(1, Math.floor(this.duration / 2 / ALIGN_STEP_SAMPLES)));
      this.filtered = f - steps * ALIGN_STEP_SAMPLES;
      this.s.alignedSamples -= steps * ALIGN_STEP_SAMPLES;
      return steps * ALIGN_STEP_SAMPLES;
    }
    // Inserting waits for two steps short: the pulls' own 5 ms quantization moves the error by a step either
    // way, and a symmetric band would drop and insert by turns.
    if (f <= -2 * ALIGN_STEP_SAMPLES && this.s.packetsReceived > 50) {
      this.filtered = f + ALIGN_STEP_SAMPLES;
      this.s.alignedSamples += ALIGN_STEP_SAMPLES;
      return -ALIGN_STEP_SAMPLES;
    }
    return 0;
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
    this.arrivalHead = 0;
    this.arrivalCount = 0;
    this.started = false;
    this.firstArrivalMs = undefined;
    this.playoutTs = undefined;
    this.current = undefined;
    this.expanded = 0;
    this.lastTransit = undefined;
    this.filtered = undefined;
    this.newest = undefined;
    this.wantedOffsetMs = undefined;
    this.marginBoost = 0;
    this.quantileMs = undefined;
    this.peakAt.length = 0;
    this.peakHeight.length = 0;
    this.outageAt = undefined;
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
    this.newest = { at: arrivalMs, transit, timestamp };
    if (this.arrivalCount === ARRIVAL_RING) this.dropOldestArrival();
    const tail = (this.arrivalHead + this.arrivalCount) % ARRIVAL_RING;
    this.arrivalAt[tail] = arrivalMs;
    this.arrivalTransit[tail] = transit;
    this.arrivalCount++;
    while (this.arrivalCount > 1 && arrivalMs - this.arrivalAt[this.arrivalHead]! > this.windowMs) this.dropOldestArrival();
    this.notePeak(transit - this.windowMinTransit, arrivalMs);
    if (this.arrivalCount < 10 || ++this.sinceTarget < TARGET_EVERY) return;
    this.sinceTarget = 0;
    const q = Math.max(this.relativeDelayQuantile(), this.peakFloorMs(arrivalMs));
    if (this.marginBoost > 0 && arrivalMs - this.lastUnderrunMs > MARGIN_DECAY_MS) {
      this.marginBoost -= ALIGN_STEP_SAMPLES;
      this.lastUnderrunMs = arrivalMs;
    }
    this.target = clamp(ms2s(q) + (this.margin ?? this.duration) + this.marginBoost, this.minTarget, this.maxTarget);
    // Plus one packet: the speaker takes a whole frame per pull, and after an
    // event-loop stall it takes several in a row (bench:quality `clean`: without
    // this margin such bursts ran the buffer dry mid-word, similarity 0.87–0.89).
    // The first measured wanted delay replaces the buffer-level estimate the smoothed error held until now.
    if (this.wantedOffsetMs === undefined) this.filtered = undefined;
    this.wantedOffsetMs = this.windowMinTransit + s2msExact(this.target);
  }

  private windowMinTransit = 0;
  /** The window's quantile of the relative arrival delay at the last target update, ms; undefined before. */
  private quantileMs: number | undefined;
  /** Remembered delay peaks: arrival times and heights (relative delay), ms, oldest first. */
  private readonly peakAt: number[] = [];
  private readonly peakHeight: number[] = [];
  /** Arrival time of the last packet later than the largest target (an outage, not a peak), ms. */
  private outageAt: number | undefined;
  /** Aligned: margin added after underruns, samples (a step per run of expands, up to a packet). */
  private marginBoost = 0;
  private lastUnderrunMs = 0;

  /**
   * An underrun while aligned: the margin was too thin for this path's
   * hiccups (a stall shorter than the jitter window's quantile notices). One
   * step more, up to a packet; it comes off again a step per
   * {@link MARGIN_DECAY_MS} without another (NetEQ raises its target on
   * delay peaks the same way).
   */
  private raiseMargin(nowMs: number): void {
    this.marginBoost = Math.min(this.marginBoost + ALIGN_STEP_SAMPLES, this.duration);
    this.lastUnderrunMs = nowMs;
  }

  private dropOldestArrival(): void {
    this.arrivalHead = (this.arrivalHead + 1) % ARRIVAL_RING;
    this.arrivalCount--;
  }

  /**
   * The `quantile` of the relative arrival delay `r = transit − min transit`
   * over the window, ms, from a histogram of 1 ms buckets (NetEQ's
   * DelayManager keeps its delays in a histogram too): one pass for the
   * minimum, one to count, one over the buckets — no sort, no allocation. A
   * bucket stands for its upper edge (the first for 0), so the result is
   * within 1 ms of the exact quantile; delays beyond the last bucket count in it.
   */
  private relativeDelayQuantile(): number {
    let min = Infinity;
    for (let k = 0, i = this.arrivalHead; k < this.arrivalCount; k++, i = (i + 1) % ARRIVAL_RING)
      min = Math.min(min, this.arrivalTransit[i]!);
    this.windowMinTransit = min;
    const h = this.histogram;
    h.fill(0);
    for (let k = 0, i = this.arrivalHead; k < this.arrivalCount; k++, i = (i + 1) % ARRIVAL_RING)
      h[Math.min(HISTOGRAM_BUCKETS - 1, Math.floor(this.arrivalTransit[i]! - min))]!++;
    // The same rank as the sorted-window estimate: the value at index ⌊quantile × n⌋.
    const rank = Math.min(this.arrivalCount - 1, Math.floor(this.quantile * this.arrivalCount)) + 1;
    let seen = 0;
    let q = HISTOGRAM_BUCKETS;
    for (let b = 0; b < HISTOGRAM_BUCKETS; b++) {
      seen += h[b]!;
      if (seen >= rank) {
        q = b === 0 ? 0 : b + 1;
        break;
      }
    }
    this.quantileMs = q;
    return q;
  }

  /**
   * Records a delay peak: a packet `relativeMs` later than the window's
   * fastest, at least twice the window's quantile and
   * {@link PEAK_MIN_EXCESS_MS} above it, and no later than the largest target
   * (later is an outage). One within {@link PEAK_MERGE_MS} of the last peak
   * raises that peak instead of adding one.
   */
  private notePeak(relativeMs: number, arrivalMs: number): void {
    const q = this.quantileMs;
    if (q === undefined || relativeMs < Math.max(2 * q, q + PEAK_MIN_EXCESS_MS)) return;
    // An outage (later than any target could cover) is no recurring jitter: raising for it only adds delay.
    // The packets of its burst that come after the first are less late, and belong to it too.
    if (ms2s(relativeMs) > this.maxTarget) {
      this.outageAt = arrivalMs;
      return;
    }
    if (this.outageAt !== undefined && arrivalMs - this.outageAt < PEAK_MERGE_MS) return;
    const last = this.peakAt.length - 1;
    if (last >= 0 && arrivalMs - this.peakAt[last]! < PEAK_MERGE_MS) {
      this.peakHeight[last] = Math.max(this.peakHeight[last]!, relativeMs);
      return;
    }
    this.peakAt.push(arrivalMs);
    this.peakHeight.push(relativeMs);
    if (this.peakAt.length > MAX_PEAKS) {
      this.peakAt.shift();
      this.peakHeight.shift();
    }
  }

  /** The highest remembered peak while two or more fall within {@link PEAK_MEMORY_MS}, ms; 0 otherwise. */
  private peakFloorMs(nowMs: number): number {
    while (this.peakAt.length > 0 && nowMs - this.peakAt[0]! > PEAK_MEMORY_MS) {
      this.peakAt.shift();
      this.peakHeight.shift();
    }
    if (this.peakAt.length < 2) return 0;
    let floor = 0;
    for (const h of this.peakHeight) floor = Math.max(floor, h);
    return floor;
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
function s2msExact(samples: number): number {
  return (samples * 1000) / CLOCK;
}
function s2ms(samples: number): number {
  return Math.round((samples * 1000) / CLOCK);
}
function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}
