/**
 * A user-space UDP impairment relay for relay-only calls (this kernel has no
 * `netem` qdisc, DESIGN.md "Facts learned on this machine").
 *
 * The relay listens on a loopback UDP port and stands in front of coturn:
 * clients are given `turn:<relay>` as their TURN URL, the relay forwards each
 * client's datagrams to coturn and coturn's answers back to that client. Every
 * client source address gets its own *flow* with its own upstream socket, so
 * coturn sees one distinct client (one 5-tuple, one allocation) per client.
 * Each flow impairs its two directions independently (`toServer`: client →
 * coturn, `toClient`: coturn → client) with an {@link ImpairmentModel}.
 *
 * Everything that decides is pure and seeded ({@link ImpairmentModel},
 * {@link GilbertElliott}, {@link xoshiro128ss}); the relay only adds sockets and
 * one scheduler (a min-heap of due datagrams and a single timer). See
 * docs/impairment.md for the models, their sources and the measured timer
 * resolution.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { LOOPBACK } from './ports';

// ---------------------------------------------------------------------------
// Seeded pseudo-random numbers
// ---------------------------------------------------------------------------

/** A source of uniform numbers in [0, 1). */
export type Random = () => number;

/** MurmurHash3's 32-bit finaliser `fmix32` (Appleby): a bijective bit mixer. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Combines integers into one 32-bit seed (each part is folded in through
 * {@link fmix32}); used to give every flow, direction and decision its own
 * independent stream from the one user seed.
 */
export function mixSeed(...parts: readonly number[]): number {
  let h = 0x9e3779b9;
  for (const part of parts) h = fmix32((h ^ fmix32(part >>> 0)) + 0x9e3779b9);
  return h;
}

/**
 * xoshiro128** 1.1 (Blackman & Vigna, "Scrambled linear pseudorandom number
 * generators", ACM TOMS 2021; https://prng.di.unimi.it/xoshiro128starstar.c):
 * 128-bit state, period 2^128 − 1, passes BigCrush. The state is filled from
 * `seed` by a SplitMix32-style sequence (Weyl increment 0x9e3779b9, finalised
 * with {@link fmix32}), so every 32-bit seed gives a usable, distinct stream.
 * @returns uniform numbers in [0, 1) with 32 bits of resolution.
 */
export function xoshiro128ss(seed: number): Random {
  let weyl = seed >>> 0;
  const splitmix = () => {
    weyl = (weyl + 0x9e3779b9) >>> 0;
    return fmix32(weyl);
  };
  let s0 = splitmix();
  let s1 = splitmix();
  let s2 = splitmix();
  let s3 = splitmix();
  if ((s0 | s1 | s2 | s3) === 0) s0 = 1; // the one forbidden state
  return () => {
    const product = Math.imul(s1, 5);
    const result = Math.imul((product << 7) | (product >>> 25), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    return result / 4294967296;
  };
}

/** A standard normal deviate by the Box–Muller transform (Box & Muller 1958). */
export function normal(random: Random): number {
  const u = 1 - random(); // (0, 1], so log() is finite
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

// ---------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------

/**
 * Packet loss, decided once per datagram.
 * - `bernoulli`: every datagram is lost independently with probability `rate`.
 * - `gilbert-elliott`: a two-state Markov chain (Gilbert 1960, Elliott 1963),
 *   see {@link GilbertElliott}. All four numbers are probabilities per datagram.
 */
export type LossModel =
  | { readonly model: 'bernoulli'; readonly rate: number }
  | {
      readonly model: 'gilbert-elliott';
      /** P(good → bad) per datagram. */
      readonly p: number;
      /** P(bad → good) per datagram. */
      readonly r: number;
      /** Loss probability in the good state. */
      readonly k: number;
      /** Loss probability in the bad state. */
      readonly h: number;
    };

/**
 * Token-bucket rate cap (RFC 2697 §1's single bucket, as Linux `tbf`): tokens
 * (bytes) accrue at `bytesPerSecond` up to `burstBytes`; a datagram leaves when
 * the bucket holds its size; datagrams wait in a FIFO of at most `queueBytes`
 * and one that does not fit is dropped (tail drop).
 */
export interface RateCap {
  /** Bytes per second (UDP payload bytes). */
  readonly bytesPerSecond: number;
  /** Bucket depth in bytes (default 1500: one MTU). */
  readonly burstBytes?: number;
  /** Queue limit in bytes (default 64 KiB). */
  readonly queueBytes?: number;
}

/** What the relay does to each datagram of one direction. Absent fields mean "nothing". */
export interface ImpairmentProfile {
  readonly name?: string;
  readonly loss?: LossModel;
  /** Base added one-way delay, ms. */
  readonly delayMs?: number;
  /**
   * Delay variation, ms, as netem's `delay TIME JITTER`: the half-width of a
   * uniform distribution (added delay ∈ [delay − jitter, delay + jitter]) or,
   * for `normal`, its standard deviation. Added delay is clamped at 0.
   */
  readonly jitterMs?: number;
  /** Default `uniform`. */
  readonly jitterDistribution?: 'uniform' | 'normal';
  /**
   * Whether jitter may reorder datagrams. `false` (default): delivery time is
   * max(previous delivery, scheduled), so datagrams never overtake each other
   * (a FIFO link); `true`: each datagram keeps its own scheduled time.
   */
  readonly reorder?: boolean;
  /**
   * Explicit reordering: with this probability a datagram skips the delay and
   * the FIFO and leaves as soon as the rate cap lets it (netem's `reorder`), so
   * it overtakes datagrams still delayed. Needs a delay larger than the
   * datagram spacing to have an effect.
   */
  readonly reorderProbability?: number;
  /** With this probability a datagram is delivered twice (back to back). */
  readonly duplicateProbability?: number;
  readonly rateCap?: RateCap;
}

/**
 * Parameters of the simple Gilbert model (k = 0, h = 1: every datagram in the
 * bad state is lost) for a mean loss rate and a mean loss-burst length:
 * r = 1 / meanBurst, p = r · meanLoss / (1 − meanLoss).
 * @param meanLoss long-run loss rate in (0, 1).
 * @param meanBurst mean number of consecutive losses, ≥ 1.
 */
export function gilbertFor(meanLoss: number, meanBurst: number): LossModel {
  const r = 1 / meanBurst;
  return { model: 'gilbert-elliott', p: (r * meanLoss) / (1 - meanLoss), r, k: 0, h: 1 };
}

/**
 * Long-run loss rate of a loss model. For Gilbert–Elliott: with stationary
 * probabilities π_G = r / (p + r) and π_B = p / (p + r), the loss rate is
 * π_G · k + π_B · h.
 */
export function meanLossRate(loss: LossModel | undefined): number {
  if (!loss) return 0;
  if (loss.model === 'bernoulli') return loss.rate;
  const { p, r, k, h } = loss;
  return (r * k + p * h) / (p + r);
}

/**
 * Mean length of a run of consecutive losses. Bernoulli: 1 / (1 − rate).
 * Gilbert–Elliott with k = 0 (losses only in the bad state): a loss is followed
 * by another when the chain stays bad and the next datagram is lost there, with
 * probability (1 − r) · h, so runs are geometric with mean 1 / (1 − (1 − r) · h)
 * (= 1 / r for h = 1). For k > 0 runs are not geometric; `undefined`.
 */
export function meanLossBurst(loss: LossModel | undefined): number | undefined {
  if (!loss) return undefined;
  if (loss.model === 'bernoulli') return 1 / (1 - loss.rate);
  if (loss.k !== 0) return undefined;
  return 1 / (1 - (1 - loss.r) * loss.h);
}

/**
 * The named profiles, as data. Each applies to *each* direction of *each* leg
 * it is set on: a call whose two clients both sit behind the relay crosses it
 * twice (caller → coturn, coturn → callee), so its end-to-end loss is about
 * 1 − (1 − loss)² and its delay twice the profile's.
 */
export const PROFILES = {
  /** Nothing: the relay forwards at once. */
  clean: { name: 'clean' },
  /** 1 % random loss, 20 ± 20 ms (uniform, in order). */
  wifi: {
    name: 'wifi',
    loss: { model: 'bernoulli', rate: 0.01 },
    delayMs: 20,
    jitterMs: 20,
    jitterDistribution: 'uniform',
    reorder: false,
  },
  /** 5 % loss in bursts of 3 datagrams on average (Gilbert), 50 ± 40 ms. */
  mobile: {
    name: 'mobile',
    loss: gilbertFor(0.05, 3),
    delayMs: 50,
    jitterMs: 40,
    jitterDistribution: 'uniform',
    reorder: false,
  },
  /** 15 % random loss, 80 ± 60 ms. */
  bad: {
    name: 'bad',
    loss: { model: 'bernoulli', rate: 0.15 },
    delayMs: 80,
    jitterMs: 60,
    jitterDistribution: 'uniform',
    reorder: false,
  },
} as const satisfies Record<string, ImpairmentProfile>;

/** The name of a profile in {@link PROFILES}. */
export type ProfileName = keyof typeof PROFILES;

function resolveProfile(profile: ImpairmentProfile | ProfileName): ImpairmentProfile {
  return typeof profile === 'string' ? PROFILES[profile] : profile;
}

function checkProbability(name: string, value: number | undefined): void {
  if (value !== undefined && !(value >= 0 && value <= 1))
    throw new RangeError(`${name} must be a probability in [0, 1], got ${value}`);
}

/**
 * Checks a profile's numbers.
 * @throws RangeError naming the first field out of range.
 */
export function validateProfile(profile: ImpairmentProfile): void {
  const { loss } = profile;
  if (loss?.model === 'bernoulli') checkProbability('loss.rate', loss.rate);
  if (loss?.model === 'gilbert-elliott') {
    for (const key of ['p', 'r', 'k', 'h'] as const) checkProbability(`loss.${key}`, loss[key]);
    if (loss.p + loss.r === 0) throw new RangeError('loss.p + loss.r must be > 0');
  }
  checkProbability('reorderProbability', profile.reorderProbability);
  checkProbability('duplicateProbability', profile.duplicateProbability);
  for (const key of ['delayMs', 'jitterMs'] as const) {
    const value = profile[key];
    if (value !== undefined && !(value >= 0 && Number.isFinite(value)))
      throw new RangeError(`${key} must be ≥ 0 ms, got ${value}`);
  }
  const cap = profile.rateCap;
  if (cap && !(cap.bytesPerSecond > 0)) throw new RangeError('rateCap.bytesPerSecond must be > 0');
}

// ---------------------------------------------------------------------------
// Models (pure)
// ---------------------------------------------------------------------------

/**
 * The Gilbert–Elliott channel (E. N. Gilbert, "Capacity of a burst-noise
 * channel", Bell Syst. Tech. J. 39(5), 1960; E. O. Elliott, "Estimates of error
 * rates for codes on burst-noise channels", BSTJ 42(5), 1963): a good state G
 * and a bad state B; per datagram the datagram is lost with probability k (in
 * G) or h (in B), then the chain moves G → B with probability p and B → G with
 * probability r. Mean sojourns: 1/p datagrams in G, 1/r in B. Loss rate and
 * burst length: {@link meanLossRate}, {@link meanLossBurst}. (Some texts, e.g.
 * Hasslinger & Hohlfeld 2008, write k and h as the probabilities of *correct*
 * reception; here they are loss probabilities.)
 */
export class GilbertElliott {
  /** Whether the chain is in the bad state (it starts good). */
  bad = false;

  constructor(
    private readonly params: Extract<LossModel, { model: 'gilbert-elliott' }>,
    private readonly random: Random,
  ) {}

  /** Decides one datagram: `true` if it is lost; then steps the chain. */
  lose(): boolean {
    const { p, r, k, h } = this.params;
    const lost = this.random() < (this.bad ? h : k);
    this.bad = this.bad ? this.random() >= r : this.random() < p;
    return lost;
  }
}

/** Counters of one direction's decisions. */
export interface ModelStats {
  /** Datagrams offered to the model. */
  admitted: number;
  droppedLoss: number;
  droppedRate: number;
  /** Extra copies scheduled. */
  duplicated: number;
  /** Datagrams scheduled to arrive before a datagram admitted earlier. */
  reordered: number;
}

/** The fate of one datagram: dropped, or delivered at the given times (ms, the caller's clock). */
export type Verdict =
  | { readonly dropped: 'loss' | 'rate' }
  | { readonly dropped?: undefined; readonly deliverAt: readonly number[] };

/**
 * One direction's impairments, decided per datagram in this order: loss →
 * rate cap (token bucket + bounded FIFO) → delay and jitter (FIFO unless
 * `reorder`) or explicit reordering → duplication. Pure and deterministic: the
 * same seed, profile and sequence of (time, size) give the same verdicts. Loss,
 * delay and the other decisions draw from separate streams derived from the
 * seed, so a profile's loss pattern does not change when its delay does.
 */
export class ImpairmentModel {
  readonly stats: ModelStats = emptyModelStats();
  private profile!: ImpairmentProfile;
  private readonly lossRandom: Random;
  private readonly delayRandom: Random;
  private readonly otherRandom: Random;
  private gilbert: GilbertElliott | undefined;
  /** Latest delivery time handed out (ms), for FIFO and the reorder count. */
  private lastDeliverAt = -Infinity;
  // token bucket
  private tokens = 0;
  private tokensAt = -Infinity;
  private lastReleaseAt = -Infinity;
  /** Datagrams waiting for tokens: release time (ms) and size (bytes), oldest first. */
  private queue: { releaseAt: number; bytes: number }[] = [];
  private queueHead = 0;
  private queuedBytes = 0;

  /**
   * @param profile what to do; a name from {@link PROFILES} or a profile.
   * @param seed any 32-bit integer.
   * @throws RangeError for an invalid profile ({@link validateProfile}).
   */
  constructor(profile: ImpairmentProfile | ProfileName, seed: number) {
    this.lossRandom = xoshiro128ss(mixSeed(seed, 1));
    this.delayRandom = xoshiro128ss(mixSeed(seed, 2));
    this.otherRandom = xoshiro128ss(mixSeed(seed, 3));
    this.setProfile(profile);
  }

  /** The profile in force. */
  get current(): ImpairmentProfile {
    return this.profile;
  }

  /**
   * Replaces the profile from now on (decisions already made stand). The
   * Gilbert–Elliott chain restarts in the good state; the random streams and
   * the FIFO order carry on.
   * @throws RangeError for an invalid profile.
   */
  setProfile(profile: ImpairmentProfile | ProfileName): void {
    const resolved = resolveProfile(profile);
    validateProfile(resolved);
    this.profile = resolved;
    this.gilbert =
      resolved.loss?.model === 'gilbert-elliott'
        ? new GilbertElliott(resolved.loss, this.lossRandom)
        : undefined;
    if (!resolved.rateCap) {
      this.queue = [];
      this.queueHead = 0;
      this.queuedBytes = 0;
      this.tokensAt = -Infinity;
    }
  }

  /** Zeroes {@link stats}. */
  resetStats(): void {
    Object.assign(this.stats, emptyModelStats());
  }

  /**
   * Decides one datagram.
   * @param nowMs its arrival time, ms (any monotonic clock; non-decreasing across calls).
   * @param bytes its size, bytes (only the rate cap looks at it).
   */
  admit(nowMs: number, bytes: number): Verdict {
    const p = this.profile;
    this.stats.admitted++;
    if (this.lose()) {
      this.stats.droppedLoss++;
      return { dropped: 'loss' };
    }
    const releaseAt = p.rateCap ? this.shape(nowMs, bytes, p.rateCap) : nowMs;
    if (releaseAt === undefined) {
      this.stats.droppedRate++;
      return { dropped: 'rate' };
    }
    let deliverAt: number;
    if (p.reorderProbability && this.otherRandom() < p.reorderProbability) {
      deliverAt = releaseAt; // netem's reorder: sent at once, overtaking delayed datagrams
    } else {
      deliverAt = releaseAt + this.delay();
      if (!p.reorder) deliverAt = Math.max(deliverAt, this.lastDeliverAt);
    }
    if (deliverAt < this.lastDeliverAt) this.stats.reordered++;
    this.lastDeliverAt = Math.max(this.lastDeliverAt, deliverAt);
    if (p.duplicateProbability && this.otherRandom() < p.duplicateProbability) {
      this.stats.duplicated++;
      return { deliverAt: [deliverAt, deliverAt] };
    }
    return { deliverAt: [deliverAt] };
  }

  private lose(): boolean {
    const loss = this.profile.loss;
    if (!loss) return false;
    if (this.gilbert) return this.gilbert.lose();
    return loss.model === 'bernoulli' && loss.rate > 0 && this.lossRandom() < loss.rate;
  }

  /** Added delay for one datagram, ms (≥ 0). */
  private delay(): number {
    const { delayMs = 0, jitterMs = 0, jitterDistribution = 'uniform' } = this.profile;
    if (!jitterMs) return delayMs;
    const jitter =
      jitterDistribution === 'normal'
        ? normal(this.delayRandom) * jitterMs
        : (2 * this.delayRandom() - 1) * jitterMs;
    return Math.max(0, delayMs + jitter);
  }

  /**
   * Token bucket with a FIFO: when the datagram leaves (ms), or `undefined`
   * when the queue is full.
   */
  private shape(nowMs: number, bytes: number, cap: RateCap): number | undefined {
    const rate = cap.bytesPerSecond / 1000; // bytes per ms
    const burst = Math.max(cap.burstBytes ?? 1500, bytes);
    const limit = cap.queueBytes ?? 65_536;
    while (this.queueHead < this.queue.length && this.queue[this.queueHead]!.releaseAt <= nowMs) {
      this.queuedBytes -= this.queue[this.queueHead]!.bytes;
      this.queueHead++;
    }
    if (this.queueHead > 1024) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    if (this.tokensAt === -Infinity) {
      this.tokens = burst;
      this.tokensAt = nowMs;
    }
    const start = Math.max(nowMs, this.lastReleaseAt);
    const available = Math.min(burst, this.tokens + (start - this.tokensAt) * rate);
    const releaseAt = available >= bytes ? start : start + (bytes - available) / rate;
    if (releaseAt > nowMs) {
      if (this.queuedBytes + bytes > limit) return undefined;
      this.queue.push({ releaseAt, bytes });
      this.queuedBytes += bytes;
    }
    this.tokens = Math.max(available, bytes) - bytes;
    this.tokensAt = releaseAt;
    this.lastReleaseAt = releaseAt;
    return releaseAt;
  }
}

function emptyModelStats(): ModelStats {
  return { admitted: 0, droppedLoss: 0, droppedRate: 0, duplicated: 0, reordered: 0 };
}

// ---------------------------------------------------------------------------
// Scheduler
// ---------------------------------------------------------------------------

/** A binary min-heap ordered by `due`, then by insertion order (stable for ties). */
export class DueQueue<T> {
  private readonly heap: { due: number; seq: number; item: T }[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  /** The earliest due time, or `undefined` when empty. */
  peekDue(): number | undefined {
    return this.heap[0]?.due;
  }

  push(due: number, item: T): void {
    const heap = this.heap;
    heap.push({ due, seq: this.seq++, item });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  /** Removes and returns the earliest entry. */
  pop(): { due: number; item: T } | undefined {
    const heap = this.heap;
    const top = heap[0];
    if (!top) return undefined;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < heap.length && this.less(left, smallest)) smallest = left;
        if (right < heap.length && this.less(right, smallest)) smallest = right;
        if (smallest === i) break;
        [heap[i], heap[smallest]] = [heap[smallest]!, heap[i]!];
        i = smallest;
      }
    }
    return { due: top.due, item: top.item };
  }

  /** Removes every entry and returns them (in no particular order). */
  clear(): T[] {
    return this.heap.splice(0).map((entry) => entry.item);
  }

  private less(a: number, b: number): boolean {
    const x = this.heap[a]!;
    const y = this.heap[b]!;
    return x.due < y.due || (x.due === y.due && x.seq < y.seq);
  }
}

/**
 * Hands items to `onDue` at their due time (ms on `performance.now()`), with
 * one `setTimeout` armed for the earliest item rather than one per datagram.
 * Node's timers have 1 ms granularity and fire at or after the requested time,
 * so an item comes out up to ~1–2 ms late on an idle machine
 * (docs/impairment.md has the measurement); items already due are handed out
 * synchronously, in due order (ties in insertion order).
 */
export class Scheduler<T> {
  private readonly queue = new DueQueue<T>();
  private timer: NodeJS.Timeout | undefined;
  private timerDue = Infinity;

  /** @param onDue called with the item and its due time (ms). */
  constructor(private readonly onDue: (item: T, dueMs: number) => void) {}

  /** Schedules `item` for `dueMs` (handed out at once if that has passed and nothing earlier waits). */
  at(dueMs: number, item: T): void {
    this.queue.push(dueMs, item);
    if (dueMs <= performance.now()) this.run();
    else this.arm();
  }

  /** Removes every pending item. @returns them, in no particular order. */
  clear(): T[] {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Infinity;
    return this.queue.clear();
  }

  /** How many items wait. */
  get pending(): number {
    return this.queue.size;
  }

  private run(): void {
    for (;;) {
      const due = this.queue.peekDue();
      if (due === undefined || due > performance.now()) break;
      const entry = this.queue.pop()!;
      this.onDue(entry.item, entry.due);
    }
    this.arm();
  }

  private arm(): void {
    const due = this.queue.peekDue();
    if (due === undefined) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.timerDue = Infinity;
      return;
    }
    if (this.timer && this.timerDue <= due) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerDue = Infinity;
        this.run();
      },
      Math.max(0, due - performance.now()),
    );
  }
}

// ---------------------------------------------------------------------------
// The relay
// ---------------------------------------------------------------------------

/** `toServer`: client → upstream (coturn); `toClient`: upstream → client. */
export type Direction = 'toServer' | 'toClient';

/** Counters of one direction, summed over all flows. */
export interface DirectionStats {
  /** Datagrams that reached the relay. */
  received: number;
  /** Datagrams sent on (duplicates included). */
  forwarded: number;
  droppedLoss: number;
  droppedRate: number;
  /** Dropped while the relay was cut, including datagrams in flight at the cut. */
  droppedCut: number;
  duplicated: number;
  reordered: number;
  /** Mean of (sent − received) over forwarded datagrams, ms, as actually sent. */
  meanAddedDelayMs: number;
  maxAddedDelayMs: number;
  /** Mean of (sent − due) over forwarded datagrams, ms: the scheduler's lateness. */
  meanLatenessMs: number;
  maxLatenessMs: number;
}

/** {@link DirectionStats} for both directions, and the number of flows (client addresses) seen. */
export interface RelayStats {
  readonly toServer: DirectionStats;
  readonly toClient: DirectionStats;
  readonly flows: number;
}

/** A running relay, see {@link startImpairRelay}. */
export interface ImpairRelay {
  /** Listening address (clients send here). */
  readonly host: string;
  readonly port: number;
  /** The upstream (coturn) address. */
  readonly upstream: { readonly host: string; readonly port: number };
  /**
   * The TURN URL clients should be given, e.g. `turn:127.0.0.1:40000?transport=udp`.
   * @throws Error for `tcp`: the relay carries UDP only.
   */
  url(transport?: 'udp' | 'tcp'): string;
  /**
   * Changes the profile for every flow (present and future) in one or both
   * directions, effective for the next datagram; datagrams already scheduled
   * keep their times.
   * @throws RangeError for an invalid profile.
   */
  setProfile(profile: ImpairmentProfile | ProfileName, direction?: Direction | 'both'): void;
  /** The profiles in force. */
  profiles(): { toServer: ImpairmentProfile; toClient: ImpairmentProfile };
  /**
   * Restarts every random decision from `seed`: each existing flow n (in order
   * of first datagram) gets fresh models seeded mixSeed(seed, n, d), and new
   * flows use `seed` too. Two runs that reseed with the same seed before the
   * same traffic see the same loss and delay draws (benchmarks give both
   * engines the same seeds this way). The per-flow counters restart with the
   * models; datagrams already scheduled keep their times.
   */
  reseed(seed: number): void;
  /**
   * Closes every flow (its upstream socket; coturn's allocation on it is
   * abandoned), so the next client seen is flow 0 again. Call between calls,
   * never during one.
   */
  forgetFlows(): void;
  /**
   * `cut(true)` drops every datagram in both directions, including those
   * already scheduled (a path failure); `cut(false)` restores forwarding.
   */
  cut(on: boolean): void;
  readonly isCut: boolean;
  /** A snapshot of the counters. */
  stats(): RelayStats;
  /** Zeroes the counters (flows stay). */
  resetStats(): void;
  /** Closes all sockets and drops whatever is scheduled. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@link startImpairRelay}. */
export interface ImpairRelayOptions {
  /** Where to forward to: coturn's UDP listening address. */
  upstream: { host: string; port: number };
  /** Default `clean`; a single profile applies to both directions. */
  profile?:
    | ImpairmentProfile
    | ProfileName
    | { toServer: ImpairmentProfile | ProfileName; toClient: ImpairmentProfile | ProfileName };
  /**
   * Seed of all random decisions (default 1). Flow n (in order of first
   * datagram), direction d uses the seed mixSeed(seed, n, d); so a run with the
   * same seed and the same datagram arrival order makes the same decisions.
   */
  seed?: number;
  /** Default 127.0.0.1; upstream sockets bind here too. */
  listenHost?: string;
  /** Default 0 (a free port). */
  listenPort?: number;
}

interface Flow {
  readonly socket: Socket;
  readonly models: Record<Direction, ImpairmentModel>;
}

/** A datagram waiting in the scheduler. */
interface InFlight {
  readonly direction: Direction;
  readonly data: Buffer;
  /** When it reached the relay, ms (performance.now()). */
  readonly arrivedAt: number;
  readonly send: (data: Buffer) => void;
}

interface Tally {
  forwarded: number;
  /** Arrived while cut (never admitted to a model). */
  cutOnArrival: number;
  /** Scheduled, then dropped by a cut. */
  cutInFlight: number;
  delaySum: number;
  delayMax: number;
  latenessSum: number;
  latenessMax: number;
}

const emptyTally = (): Tally => ({
  forwarded: 0,
  cutOnArrival: 0,
  cutInFlight: 0,
  delaySum: 0,
  delayMax: 0,
  latenessSum: 0,
  latenessMax: 0,
});

/**
 * Starts an impairment relay in front of a UDP server (coturn).
 * Datagrams from a client address go out of that flow's own upstream socket;
 * datagrams arriving on that socket from the upstream address go back to the
 * client. Flows live until {@link ImpairRelay.stop}.
 * @throws Error when the listening socket cannot be bound, RangeError for an invalid profile.
 */
export async function startImpairRelay(options: ImpairRelayOptions): Promise<ImpairRelay> {
  const { upstream, listenHost = LOOPBACK, listenPort = 0 } = options;
  let seed = options.seed ?? 1;
  const initial = options.profile ?? 'clean';
  const profiles: Record<Direction, ImpairmentProfile> =
    typeof initial === 'object' && 'toServer' in initial
      ? { toServer: resolveProfile(initial.toServer), toClient: resolveProfile(initial.toClient) }
      : { toServer: resolveProfile(initial), toClient: resolveProfile(initial) };
  validateProfile(profiles.toServer);
  validateProfile(profiles.toClient);

  const flows = new Map<string, Flow>();
  let tallies: Record<Direction, Tally> = { toServer: emptyTally(), toClient: emptyTally() };
  let isCut = false;
  let stopped = false;

  const scheduler = new Scheduler<InFlight>((packet, due) => {
    const sentAt = performance.now();
    const tally = tallies[packet.direction];
    const delay = sentAt - packet.arrivedAt;
    const late = Math.max(0, sentAt - due);
    tally.forwarded++;
    tally.delaySum += delay;
    tally.delayMax = Math.max(tally.delayMax, delay);
    tally.latenessSum += late;
    tally.latenessMax = Math.max(tally.latenessMax, late);
    packet.send(packet.data);
  });

  const listener = createSocket('udp4');
  const ignoreSendErrors = () => {
    // e.g. ECONNREFUSED on loopback: the datagram is gone, as it would be on a real path
  };
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.bind(listenPort, listenHost, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  listener.on('error', ignoreSendErrors);
  const port = listener.address().port;

  const pass = (
    direction: Direction,
    model: ImpairmentModel,
    data: Buffer,
    send: (data: Buffer) => void,
  ) => {
    if (isCut) {
      tallies[direction].cutOnArrival++;
      return;
    }
    const arrivedAt = performance.now();
    const verdict = model.admit(arrivedAt, data.length);
    if (verdict.dropped) return;
    for (const due of verdict.deliverAt) scheduler.at(due, { direction, data, arrivedAt, send });
  };

  const openFlow = (client: RemoteInfo): Flow => {
    const index = flows.size;
    const socket = createSocket('udp4');
    socket.on('error', ignoreSendErrors);
    const flow: Flow = {
      socket,
      models: {
        toServer: new ImpairmentModel(profiles.toServer, mixSeed(seed, index, 0)),
        toClient: new ImpairmentModel(profiles.toClient, mixSeed(seed, index, 1)),
      },
    };
    // Node queues sends issued while bind() is still in progress.
    socket.bind(0, listenHost);
    socket.on('message', (data, from) => {
      if (stopped || from.port !== upstream.port || from.address !== upstream.host) return;
      pass('toClient', flow.models.toClient, data, (d) =>
        listener.send(d, client.port, client.address),
      );
    });
    flows.set(`${client.address}:${client.port}`, flow);
    return flow;
  };

  listener.on('message', (data, client) => {
    if (stopped) return;
    const flow = flows.get(`${client.address}:${client.port}`) ?? openFlow(client);
    pass('toServer', flow.models.toServer, data, (d) =>
      flow.socket.send(d, upstream.port, upstream.host),
    );
  });

  const directionStats = (direction: Direction): DirectionStats => {
    const tally = tallies[direction];
    const sum: DirectionStats = {
      received: tally.cutOnArrival,
      forwarded: tally.forwarded,
      droppedLoss: 0,
      droppedRate: 0,
      droppedCut: tally.cutOnArrival + tally.cutInFlight,
      duplicated: 0,
      reordered: 0,
      meanAddedDelayMs: tally.forwarded ? tally.delaySum / tally.forwarded : 0,
      maxAddedDelayMs: tally.delayMax,
      meanLatenessMs: tally.forwarded ? tally.latenessSum / tally.forwarded : 0,
      maxLatenessMs: tally.latenessMax,
    };
    for (const flow of flows.values()) {
      const s = flow.models[direction].stats;
      sum.received += s.admitted;
      sum.droppedLoss += s.droppedLoss;
      sum.droppedRate += s.droppedRate;
      sum.duplicated += s.duplicated;
      sum.reordered += s.reordered;
    }
    return sum;
  };

  return {
    host: listenHost,
    port,
    upstream: { host: upstream.host, port: upstream.port },
    url(transport: 'udp' | 'tcp' = 'udp') {
      if (transport !== 'udp') throw new Error('the impairment relay carries TURN over UDP only');
      return `turn:${listenHost}:${port}?transport=udp`;
    },
    setProfile(profile, direction = 'both') {
      const resolved = resolveProfile(profile);
      validateProfile(resolved);
      for (const d of ['toServer', 'toClient'] as const) {
        if (direction !== 'both' && direction !== d) continue;
        profiles[d] = resolved;
        for (const flow of flows.values()) flow.models[d].setProfile(resolved);
      }
    },
    profiles: () => ({ ...profiles }),
    reseed(next) {
      seed = next;
      let index = 0;
      for (const flow of flows.values()) {
        flow.models.toServer = new ImpairmentModel(profiles.toServer, mixSeed(seed, index, 0));
        flow.models.toClient = new ImpairmentModel(profiles.toClient, mixSeed(seed, index, 1));
        index++;
      }
    },
    forgetFlows() {
      scheduler.clear();
      for (const flow of flows.values()) flow.socket.close();
      flows.clear();
    },
    cut(on) {
      isCut = on;
      if (on) for (const packet of scheduler.clear()) tallies[packet.direction].cutInFlight++;
    },
    get isCut() {
      return isCut;
    },
    stats: () => ({
      toServer: directionStats('toServer'),
      toClient: directionStats('toClient'),
      flows: flows.size,
    }),
    resetStats() {
      tallies = { toServer: emptyTally(), toClient: emptyTally() };
      for (const flow of flows.values()) {
        flow.models.toServer.resetStats();
        flow.models.toClient.resetStats();
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      scheduler.clear();
      const sockets = [listener, ...[...flows.values()].map((flow) => flow.socket)];
      await Promise.all(
        sockets.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))),
      );
    },
  };
}
