/**
 * Signal analysis for measuring calls: does the far end hear what was said
 * (`speechSimilarity`), how late (`estimateDelayMs`, `detectOnsets`), how loud
 * (`rms`, `dbfs`).
 *
 * All signals are mono PCM at 48 kHz (the Opus/RTP clock, RFC 7587 §4.1),
 * either `Int16Array` (full scale ±32768) or `Float32Array` (full scale ±1).
 * Levels are in dBFS relative to a full-scale amplitude of 1 (so a full-scale
 * square wave is 0 dBFS and a full-scale sine −3.01 dBFS). Pure TypeScript, no
 * native code; the design and the observed scores are in docs/similarity.md.
 */

/** Sample rate of every signal this module takes, Hz. */
export const SAMPLE_RATE_HZ = 48_000;

/** Mono PCM at 48 kHz: Int16 (±32768 full scale) or Float32 (±1 full scale). */
export type Pcm = Int16Array | Float32Array;

/**
 * `speechSimilarity` scores above this mean "the received audio is the sent
 * speech". Observed with espeak-ng speech through Opus 32 kb/s VOIP
 * (docs/similarity.md): the same sentence 0.99, with three 40 ms holes 0.92,
 * with 10 % of packets lost as silence 0.87, with white noise at 10 dB SNR
 * 0.83; a different sentence by the same voice 0.08–0.24, white noise 0.11,
 * silence 0. 0.5 leaves ≥ 0.25 of margin on each side.
 */
export const SIMILARITY_THRESHOLD = 0.5;

/** Received audio quieter than this over the aligned region scores 0, dBFS. */
export const SILENCE_FLOOR_DBFS = -60;

const samplesPerMs = SAMPLE_RATE_HZ / 1000;

// ---------------------------------------------------------------- levels

/** The signal as float samples in [−1, 1] (Int16 divided by 32768; Float32 copied). */
export function toFloat(signal: Pcm): Float32Array {
  if (signal instanceof Float32Array) return Float32Array.from(signal);
  const out = new Float32Array(signal.length);
  for (let i = 0; i < signal.length; i++) out[i] = signal[i]! / 32768;
  return out;
}

function scaleOf(signal: Pcm): number {
  return signal instanceof Int16Array ? 1 / 32768 : 1;
}

/**
 * Root-mean-square of `signal[start, end)` relative to full scale (0 … 1).
 * Samples outside the signal are not counted; an empty range gives 0.
 */
export function rms(signal: Pcm, start = 0, end = signal.length): number {
  const s = Math.max(0, Math.floor(start));
  const e = Math.min(signal.length, Math.floor(end));
  if (e <= s) return 0;
  let sum = 0;
  for (let i = s; i < e; i++) sum += signal[i]! * signal[i]!;
  return Math.sqrt(sum / (e - s)) * scaleOf(signal);
}

/** RMS level of `signal[start, end)` in dBFS (20·log10 rms); −Infinity for digital silence. */
export function dbfs(signal: Pcm, start = 0, end = signal.length): number {
  return 20 * Math.log10(rms(signal, start, end));
}

// ---------------------------------------------------------------- FFT

const twiddleCache = new Map<number, { cos: Float64Array; sin: Float64Array }>();

function twiddles(n: number): { cos: Float64Array; sin: Float64Array } {
  let t = twiddleCache.get(n);
  if (!t) {
    const cos = new Float64Array(n / 2);
    const sin = new Float64Array(n / 2);
    for (let k = 0; k < n / 2; k++) {
      cos[k] = Math.cos((2 * Math.PI * k) / n);
      sin[k] = Math.sin((2 * Math.PI * k) / n);
    }
    t = { cos, sin };
    twiddleCache.set(n, t);
  }
  return t;
}

/** Smallest power of two ≥ n (n ≥ 1). */
export function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * In-place complex FFT of `re + i·im`, both of the same power-of-two length N.
 * Forward: X[k] = Σₙ x[n]·e^(−2πi·kn/N). Inverse (`inverse = true`): the
 * conjugate transform divided by N, so `fft(fft(x), inverse)` returns x.
 *
 * Iterative radix-2 decimation-in-time Cooley–Tukey (Cooley & Tukey 1965):
 * bit-reversal permutation, then log2(N) butterfly passes with twiddles
 * from a per-size cache. O(N log N). Throws RangeError if N is not a power of two.
 */
export function fft(re: Float64Array, im: Float64Array, inverse = false): void {
  const n = re.length;
  if (im.length !== n || n === 0 || (n & (n - 1)) !== 0) {
    throw new RangeError(`fft: length must be a power of two (re ${n}, im ${im.length})`);
  }
  // Bit-reversal permutation.
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      const tr = re[i]!;
      re[i] = re[j]!;
      re[j] = tr;
      const ti = im[i]!;
      im[i] = im[j]!;
      im[j] = ti;
    }
  }
  const { cos, sin } = twiddles(n);
  const sign = inverse ? 1 : -1;
  for (let size = 2; size <= n; size *= 2) {
    const half = size / 2;
    const step = n / size;
    for (let start = 0; start < n; start += size) {
      for (let k = 0; k < half; k++) {
        const wr = cos[k * step]!;
        const wi = sign * sin[k * step]!;
        const a = start + k;
        const b = a + half;
        const xr = re[b]! * wr - im[b]! * wi;
        const xi = re[b]! * wi + im[b]! * wr;
        re[b] = re[a]! - xr;
        im[b] = im[a]! - xi;
        re[a] = re[a]! + xr;
        im[a] = im[a]! + xi;
      }
    }
  }
  if (inverse) {
    for (let i = 0; i < n; i++) {
      re[i] = re[i]! / n;
      im[i] = im[i]! / n;
    }
  }
}

// ---------------------------------------------------------------- cross-correlation

/**
 * Raw cross-correlation c[L] = Σₙ ref[n]·del[n+L] for L in [minLag, maxLag]
 * (samples), computed as IFFT(conj(FFT(ref))·FFT(del)) with enough zero
 * padding that the circular correlation equals the linear one.
 */
function crossCorrelate(
  ref: Float32Array,
  del: Float32Array,
  minLag: number,
  maxLag: number,
): Float64Array {
  const n = nextPow2(Math.max(ref.length + Math.max(maxLag, 0), del.length + Math.max(-minLag, 0)));
  const ar = new Float64Array(n);
  const ai = new Float64Array(n);
  const br = new Float64Array(n);
  const bi = new Float64Array(n);
  ar.set(ref);
  br.set(del);
  fft(ar, ai);
  fft(br, bi);
  for (let k = 0; k < n; k++) {
    // conj(A)·B
    const r = ar[k]! * br[k]! + ai[k]! * bi[k]!;
    const i = ar[k]! * bi[k]! - ai[k]! * br[k]!;
    ar[k] = r;
    ai[k] = i;
  }
  fft(ar, ai, true);
  const out = new Float64Array(maxLag - minLag + 1);
  for (let lag = minLag; lag <= maxLag; lag++) out[lag - minLag] = ar[(lag + n) % n]!;
  return out;
}

function prefixSquares(x: Float32Array): Float64Array {
  const p = new Float64Array(x.length + 1);
  for (let i = 0; i < x.length; i++) p[i + 1] = p[i]! + x[i]! * x[i]!;
  return p;
}

/** Result of `estimateDelayMs`. */
export interface DelayEstimate {
  /** Delay of `delayed` behind `reference`, ms (= lagSamples / 48). */
  lagMs: number;
  /** The same delay in samples at 48 kHz (integer). */
  lagSamples: number;
  /**
   * Normalized cross-correlation at that lag, −1 … 1: c[L] divided by the
   * root of the energies of the two overlapping parts. ≈1 for a clean
   * delayed copy, lower through a codec or noise, negative if inverted.
   */
  correlation: number;
}

/**
 * Delay of `delayed` relative to `reference`, sample-accurate: the lag L
 * (samples) maximizing |c[L]|, c[L] = Σₙ reference[n]·delayed[n+L], over
 * L ∈ [minLagMs, maxLagMs]. A positive lag means `delayed` plays the
 * reference L samples later. Both signals must be on one clock (e.g. the two
 * channels of one recording) — this is the mouth-to-ear measurement.
 *
 * Algorithm: plain (unweighted) cross-correlation, the maximum-likelihood
 * delay estimator for a delayed copy in white noise (Knapp & Carter 1976,
 * "The generalized correlation method for estimation of time delay"),
 * computed through the radix-2 FFT above in O(N log N), N the next power of
 * two ≥ length + lag range. The largest |c| is taken so an inverted copy
 * (a loudspeaker/microphone path can flip polarity) is found too; the sign
 * shows in `correlation`.
 *
 * @param reference what was sent (48 kHz mono)
 * @param delayed what came out (48 kHz mono, same clock)
 * @param maxLagMs largest delay searched, ms
 * @param opts.minLagMs smallest delay searched, ms (default 0; negative allowed)
 * @throws RangeError if a signal is empty or minLagMs > maxLagMs
 */
export function estimateDelayMs(
  reference: Pcm,
  delayed: Pcm,
  maxLagMs: number,
  opts: { minLagMs?: number } = {},
): DelayEstimate {
  const minLag = Math.round((opts.minLagMs ?? 0) * samplesPerMs);
  const maxLag = Math.round(maxLagMs * samplesPerMs);
  if (reference.length === 0 || delayed.length === 0) {
    throw new RangeError('estimateDelayMs: empty signal');
  }
  if (minLag > maxLag) throw new RangeError('estimateDelayMs: minLagMs > maxLagMs');
  const ref = toFloat(reference);
  const del = toFloat(delayed);
  return delayFromFloat(ref, del, minLag, maxLag, 0);
}

/** estimateDelayMs on float signals; lags in samples; `offset` is added to the reported lag. */
function delayFromFloat(
  ref: Float32Array,
  del: Float32Array,
  minLag: number,
  maxLag: number,
  offset: number,
): DelayEstimate {
  const c = crossCorrelate(ref, del, minLag, maxLag);
  let best = 0;
  for (let i = 1; i < c.length; i++) if (Math.abs(c[i]!) > Math.abs(c[best]!)) best = i;
  const lag = best + minLag;
  // Energies of the overlapping parts: ref[n], del[n+lag] for n in [n0, n1).
  const pr = prefixSquares(ref);
  const pd = prefixSquares(del);
  const n0 = Math.max(0, -lag);
  const n1 = Math.min(ref.length, del.length - lag);
  const er = n1 > n0 ? pr[n1]! - pr[n0]! : 0;
  const ed = n1 > n0 ? pd[n1 + lag]! - pd[n0 + lag]! : 0;
  const denom = Math.sqrt(er * ed);
  const lagSamples = lag + offset;
  return {
    lagSamples,
    lagMs: lagSamples / samplesPerMs,
    correlation: denom > 0 ? c[best]! / denom : 0,
  };
}

// ---------------------------------------------------------------- log-mel spectrogram

/** Parameters of the log-mel analysis. Defaults are the usual speech front end. */
export interface LogMelOptions {
  /** Analysis window (Hann), ms. Default 25. */
  windowMs?: number;
  /** Hop between frames, ms. Default 10. */
  hopMs?: number;
  /** Number of mel bands. Default 40. */
  bands?: number;
  /** Lower edge of the lowest band, Hz. Default 100. */
  minHz?: number;
  /** Upper edge of the highest band, Hz. Default 8000 (wideband speech; Opus at 32 kb/s keeps it). */
  maxHz?: number;
}

/** A log-mel spectrogram: `frames` rows of `bands` values. */
export interface LogMelSpectrogram {
  frames: number;
  bands: number;
  hopSamples: number;
  /** Row-major frames × bands, band power in dB re full scale (floor −120 dB). */
  data: Float32Array;
  /** Per frame: Hann-weighted mean square of the frame, dBFS (floor −120). */
  energyDb: Float32Array;
}

/** Mel of a frequency, HTK formula 2595·log10(1 + f/700) (O'Shaughnessy 1987; HTK Book §5.4). */
export function hzToMel(hz: number): number {
  return 2595 * Math.log10(1 + hz / 700);
}

/** Inverse of `hzToMel`. */
export function melToHz(mel: number): number {
  return 700 * (10 ** (mel / 2595) - 1);
}

const DB_FLOOR = -120;
const POWER_FLOOR = 10 ** (DB_FLOOR / 10);

interface MelFrontEnd {
  win: number;
  hop: number;
  nfft: number;
  window: Float64Array;
  windowPower: number;
  /** Per band: first FFT bin and weights from there. */
  filters: { first: number; weights: Float64Array }[];
}

const frontEndCache = new Map<string, MelFrontEnd>();

function melFrontEnd(o: Required<LogMelOptions>): MelFrontEnd {
  const key = `${o.windowMs}/${o.hopMs}/${o.bands}/${o.minHz}/${o.maxHz}`;
  const cached = frontEndCache.get(key);
  if (cached) return cached;
  const win = Math.round(o.windowMs * samplesPerMs);
  const hop = Math.round(o.hopMs * samplesPerMs);
  const nfft = nextPow2(win);
  // Periodic Hann window.
  const window = new Float64Array(win);
  let windowPower = 0;
  for (let n = 0; n < win; n++) {
    window[n] = 0.5 - 0.5 * Math.cos((2 * Math.PI * n) / win);
    windowPower += window[n]! * window[n]!;
  }
  // Triangular filters on bands+2 mel-equidistant edges (HTK / Davis & Mermelstein 1980),
  // evaluated at the exact bin frequencies, unnormalized (peak weight 1).
  const lo = hzToMel(o.minHz);
  const hi = hzToMel(o.maxHz);
  const edges: number[] = [];
  for (let i = 0; i < o.bands + 2; i++) edges.push(melToHz(lo + ((hi - lo) * i) / (o.bands + 1)));
  const binHz = SAMPLE_RATE_HZ / nfft;
  const filters: MelFrontEnd['filters'] = [];
  for (let b = 0; b < o.bands; b++) {
    const [f0, f1, f2] = [edges[b]!, edges[b + 1]!, edges[b + 2]!];
    const first = Math.ceil(f0 / binHz);
    const last = Math.floor(f2 / binHz);
    const weights = new Float64Array(Math.max(0, last - first + 1));
    for (let k = first; k <= last; k++) {
      const f = k * binHz;
      weights[k - first] = Math.max(0, f <= f1 ? (f - f0) / (f1 - f0) : (f2 - f) / (f2 - f1));
    }
    filters.push({ first, weights });
  }
  const fe = { win, hop, nfft, window, windowPower, filters };
  frontEndCache.set(key, fe);
  return fe;
}

function withDefaults(opts: LogMelOptions): Required<LogMelOptions> {
  return {
    windowMs: opts.windowMs ?? 25,
    hopMs: opts.hopMs ?? 10,
    bands: opts.bands ?? 40,
    minHz: opts.minHz ?? 100,
    maxHz: opts.maxHz ?? 8000,
  };
}

/**
 * Log-mel spectrogram of a 48 kHz mono signal. Frame i covers samples
 * [startSample + i·hop, startSample + i·hop + window); samples outside the
 * signal count as zeros, so `startSample` may be negative or past the end.
 * Each frame: Hann window, zero-padded FFT (2048 points for 25 ms), power
 * spectrum scaled by Parseval so that a band's value is the part of the
 * frame's mean square it holds, summed through triangular mel filters
 * (HTK mel scale, `hzToMel`), then 10·log10 with a −120 dB floor.
 *
 * @param frames number of frames (default: every whole window from startSample)
 */
export function logMelSpectrogram(
  signal: Pcm,
  opts: LogMelOptions = {},
  startSample = 0,
  frames?: number,
): LogMelSpectrogram {
  const o = withDefaults(opts);
  const fe = melFrontEnd(o);
  const nFrames =
    frames ?? Math.max(0, Math.floor((signal.length - startSample - fe.win) / fe.hop) + 1);
  const scale = scaleOf(signal);
  const data = new Float32Array(nFrames * o.bands);
  const energyDb = new Float32Array(nFrames);
  const re = new Float64Array(fe.nfft);
  const im = new Float64Array(fe.nfft);
  const norm = 1 / (fe.nfft * fe.windowPower);
  for (let f = 0; f < nFrames; f++) {
    re.fill(0);
    im.fill(0);
    const s0 = startSample + f * fe.hop;
    let energy = 0;
    for (let n = 0; n < fe.win; n++) {
      const idx = s0 + n;
      if (idx < 0 || idx >= signal.length) continue;
      const v = signal[idx]! * scale * fe.window[n]!;
      re[n] = v;
      energy += v * v;
    }
    energyDb[f] = 10 * Math.log10(Math.max(energy / fe.windowPower, POWER_FLOOR));
    if (energy === 0) {
      data.fill(DB_FLOOR, f * o.bands, (f + 1) * o.bands);
      continue;
    }
    fft(re, im);
    for (let b = 0; b < o.bands; b++) {
      const { first, weights } = fe.filters[b]!;
      let p = 0;
      for (let k = 0; k < weights.length; k++) {
        const bin = first + k;
        p += weights[k]! * (re[bin]! * re[bin]! + im[bin]! * im[bin]!);
      }
      // ×2: one-sided spectrum (bins above N/2 mirror these).
      data[f * o.bands + b] = 10 * Math.log10(Math.max(2 * p * norm, POWER_FLOOR));
    }
  }
  return { frames: nFrames, bands: o.bands, hopSamples: fe.hop, data, energyDb };
}

// ---------------------------------------------------------------- speech similarity

/** Options of `speechSimilarity`. */
export interface SimilarityOptions {
  /** Largest delay of `received` behind `sent` searched, ms. Default 2000. */
  maxLagMs?: number;
  /** Smallest delay searched, ms. Default 0 (negative: received started late). */
  minLagMs?: number;
  /** Received audio below this level over the aligned span scores 0, dBFS. Default −60. */
  silenceFloorDbfs?: number;
  /** A sent frame is active speech when within this many dB of the loudest frame. Default 35. */
  activeRangeDb?: number;
  /** Spectrogram values are clamped to (their maximum − this), dB. Default 60. */
  dynamicRangeDb?: number;
  /** Log-mel parameters (default 25 ms / 10 ms / 40 bands / 100–8000 Hz). */
  mel?: LogMelOptions;
  /**
   * Follow a delay that changes during the speech by up to this much either
   * side of the whole-speech delay, ms (default 0: one delay for the whole).
   * The active frames are judged in blocks of {@link trackBlockMs}, each at
   * its own best delay within ±trackDelayMs of the whole's, and the score is
   * the one pooled correlation over all of them (never lower than the single
   * delay's). A jitter buffer that drops or inserts a 20 ms frame in a pause
   * moves the rest of the sentence by 20 ms, which a listener does not hear
   * but a single-delay comparison counts as a mismatch for every frame after
   * it; ITU-T P.862 §10.2.4 splits utterances at such delay changes for the
   * same reason. Nothing is excused that a listener would hear: a block
   * missing, garbled or concealed still correlates badly at every delay.
   */
  trackDelayMs?: number;
  /** Block length for {@link trackDelayMs}, ms of active speech (default 500). */
  trackBlockMs?: number;
}

/** How much better a block's correlation must be at another delay to move it there (delay tracking). */
const TRACK_MARGIN = 0.01;
/** Delay tracking's resolution: this many phases per hop (2.5 ms at the 10 ms hop). */
const TRACK_PHASES = 4;

/** Result of `speechSimilarity`. */
export interface SimilarityResult {
  /** 0 … 1: the correlation clamped at 0, or 0 when the received span is silent. */
  score: number;
  /** Delay of the received speech behind the sent speech, ms (sample-accurate when refinable). */
  lagMs: number;
  /** The spectro-temporal correlation at that lag, −1 … 1 (before clamping and the silence rule). */
  correlation: number;
  /** RMS level of `received` over the aligned span [lag, lag + sent length), dBFS. */
  receivedDbfs: number;
  /** Sent frames counted as active speech (10 ms each by default). */
  activeFrames: number;
  /** True when the score was forced to 0 because `receivedDbfs` < the silence floor. */
  silent: boolean;
  /**
   * With `trackDelayMs`: each block's delay relative to `lagMs` at frame
   * resolution, ms (e.g. [0, 0, 20, 20]: 20 ms more delay from the third
   * block on), and the pooled correlation with them.
   */
  tracked?: { offsetsMs: number[]; correlation: number };
}

/**
 * How well `received` reproduces the speech in `sent`, with the delay found
 * on the way. `received` is what the far end played (after network, jitter
 * buffer and Opus): it starts some unknown delay later (searched over
 * [minLagMs, maxLagMs], default 0–2000 ms), may contain short gaps, and may
 * be longer than `sent`.
 *
 * Metric (justified in docs/similarity.md):
 * 1. Log-mel spectrograms of both (`logMelSpectrogram`: 25 ms Hann, 10 ms
 *    hop, 40 HTK-mel bands 100–8000 Hz), each clamped to 60 dB below its own
 *    maximum so digital silence (a gap, zero padding) is not a −120 dB outlier.
 * 2. Active speech: sent frames whose energy is within 35 dB of the loudest
 *    sent frame and above the sent noise floor (10th-percentile frame energy
 *    + 6 dB). Only these frames are compared, so pauses and padding neither
 *    help nor hurt.
 * 3. Per lag ℓ (whole frames): the Pearson correlation of the sent active
 *    frames with the received frames ℓ later, after removing each mel band's
 *    mean over those frames (pooled within-band correlation). Removing band
 *    means drops the long-term spectrum (the voice's timbre, the loudspeaker's
 *    colour) that every sentence of one speaker shares, so what is left is
 *    which sound is where in time. Every lag is tried (≈ 200 lags × active
 *    frames × bands multiply-adds).
 * 4. Refinement: waveform cross-correlation (`estimateDelayMs`' method)
 *    within ±1 hop of the best frame lag gives a sample lag; the spectrogram
 *    is recomputed at it, and the better of the two alignments is kept.
 * 5. score = max(0, correlation); 0 if the received RMS over the aligned span
 *    is below `silenceFloorDbfs`.
 *
 * Compare `score` with `SIMILARITY_THRESHOLD`.
 *
 * @throws RangeError if `sent` holds no active speech (all below −100 dBFS or too short for a frame)
 */
export function speechSimilarity(
  sent: Pcm,
  received: Pcm,
  opts: SimilarityOptions = {},
): SimilarityResult {
  const mel = withDefaults(opts.mel ?? {});
  const activeRange = opts.activeRangeDb ?? 35;
  const dynamicRange = opts.dynamicRangeDb ?? 60;
  const floorDbfs = opts.silenceFloorDbfs ?? SILENCE_FLOOR_DBFS;
  const S = logMelSpectrogram(sent, mel);
  const B = S.bands;
  const hop = S.hopSamples;

  // Active frames of the sent speech.
  const sortedEnergy = Array.from(S.energyDb).sort((a, b) => a - b);
  const peak = sortedEnergy[sortedEnergy.length - 1] ?? DB_FLOOR;
  const p10 = sortedEnergy[Math.floor(sortedEnergy.length * 0.1)] ?? DB_FLOOR;
  const activeThreshold = Math.max(peak - activeRange, p10 + 6, -100);
  const active: number[] = [];
  for (let f = 0; f < S.frames; f++) if (S.energyDb[f]! >= activeThreshold) active.push(f);
  if (active.length === 0)
    throw new RangeError('speechSimilarity: sent signal has no active speech');

  // Sent spectrogram, clamped and centred per band over the active frames.
  clampBelowMax(S.data, dynamicRange);
  const x = new Float64Array(active.length * B);
  let sxx = 0;
  for (let b = 0; b < B; b++) {
    let mean = 0;
    for (const f of active) mean += S.data[f * B + b]!;
    mean /= active.length;
    for (let i = 0; i < active.length; i++) {
      const v = S.data[active[i]! * B + b]! - mean;
      x[i * B + b] = v;
      sxx += v * v;
    }
  }

  /**
   * Pooled within-band Pearson correlation of x's active frames [from, to)
   * with the frames at `active[i] + offsetOf(i)` of spectrogram `R(i)` (x centred over all active
   * frames; y centred over the frames compared).
   */
  const correlateSpan = (R: (i: number) => LogMelSpectrogram, offsetOf: (i: number) => number, from: number, to: number): number => {
    let sxy = 0;
    let syy = 0;
    let sxxSpan = 0;
    const n = to - from;
    for (let b = 0; b < B; b++) {
      let sx = 0;
      let sy = 0;
      let sy2 = 0;
      for (let i = from; i < to; i++) {
        const xv = x[i * B + b]!;
        const y = R(i).data[(active[i]! + offsetOf(i)) * B + b]!;
        sx += xv;
        sy += y;
        sy2 += y * y;
        sxy += xv * y;
        sxxSpan += xv * xv;
      }
      sxy -= (sx * sy) / n;
      sxxSpan -= (sx * sx) / n;
      syy += sy2 - (sy * sy) / n;
    }
    return syy > 1e-9 && sxxSpan > 1e-9 ? sxy / Math.sqrt(sxxSpan * syy) : 0;
  };
  /** Pooled within-band Pearson correlation of x with R's frames at `offset + active[i]`. */
  const correlate = (R: LogMelSpectrogram, offset: number): number => {
    if (sxx === 0) return 0;
    let sxy = 0;
    let syy = 0;
    for (let b = 0; b < B; b++) {
      let sy = 0;
      let sy2 = 0;
      for (let i = 0; i < active.length; i++) {
        const y = R.data[(active[i]! + offset) * B + b]!;
        sy += y;
        sy2 += y * y;
        sxy += x[i * B + b]! * y; // x is centred, so Σx(y−ȳ) = Σxy
      }
      syy += sy2 - (sy * sy) / active.length;
    }
    return syy > 1e-9 ? sxy / Math.sqrt(sxx * syy) : 0;
  };

  // Frame-lag search over every lag.
  const minLagFrames = Math.ceil(((opts.minLagMs ?? 0) * samplesPerMs) / hop);
  const maxLagFrames = Math.floor(((opts.maxLagMs ?? 2000) * samplesPerMs) / hop);
  const lags = Math.max(0, maxLagFrames - minLagFrames) + 1;
  const R = logMelSpectrogram(received, mel, minLagFrames * hop, lags - 1 + S.frames);
  const rMax = clampBelowMax(R.data, dynamicRange);
  let bestLag = 0;
  let bestR = -Infinity;
  for (let l = 0; l < lags; l++) {
    const r = correlate(R, l);
    if (r > bestR) {
      bestR = r;
      bestLag = l;
    }
  }
  let lagSamples = (minLagFrames + bestLag) * hop;

  // Sample-accurate refinement by waveform cross-correlation within ±1 hop.
  if (rMax > DB_FLOOR) {
    const ref = toFloat(sent);
    const segStart = lagSamples - hop;
    const seg = new Float32Array(sent.length + 2 * hop);
    const scale = scaleOf(received);
    for (let i = 0; i < seg.length; i++) {
      const idx = segStart + i;
      if (idx >= 0 && idx < received.length) seg[i] = received[idx]! * scale;
    }
    const refined = delayFromFloat(ref, seg, 0, 2 * hop, segStart);
    if (refined.lagSamples !== lagSamples) {
      const Rf = logMelSpectrogram(received, mel, refined.lagSamples, S.frames);
      clampAt(Rf.data, rMax - dynamicRange);
      const r = correlate(Rf, 0);
      if (r >= bestR) {
        bestR = r;
        lagSamples = refined.lagSamples;
      }
    }
  }

  // Delay tracking: each block of active frames at its own delay near the
  // whole's (sample-accurate) delay, in quarter hops (2.5 ms): jitter buffers
  // move the delay by whole frames (10 or 20 ms), a phase-aligning playout by
  // 5 ms steps, NetEQ's time-stretching by a pitch period, and an echo
  // canceller that starts or stops by its own algorithmic delay (≈ 7 ms) —
  // all in pauses, none of them heard.
  let tracked: SimilarityResult['tracked'];
  const trackFrames = Math.floor(((opts.trackDelayMs ?? 0) * samplesPerMs) / hop);
  if (trackFrames > 0 && sxx > 0) {
    const phase = hop / TRACK_PHASES;
    const Rts: LogMelSpectrogram[] = [];
    for (let p = 0; p < TRACK_PHASES; p++) {
      const Rt = logMelSpectrogram(received, mel, lagSamples - trackFrames * hop + Math.round(p * phase), S.frames + 2 * trackFrames);
      clampAt(Rt.data, rMax - dynamicRange);
      Rts.push(Rt);
    }
    const block = Math.max(1, Math.round(((opts.trackBlockMs ?? 500) * samplesPerMs) / hop));
    const blocks = Math.ceil(active.length / block);
    // Each block's delay as (whole hops, phase): the received frame of sent active frame i is
    // Rts[phase] at active[i] + trackFrames + hops.
    const hops = new Int32Array(blocks);
    const phases = new Int32Array(blocks);
    for (let k = 0; k < blocks; k++) {
      const from = k * block;
      const to = Math.min(active.length, from + block);
      // A block moves off the whole's delay only for a clearly better match (near-ties stay).
      let best = correlateSpan(() => Rts[0]!, () => trackFrames, from, to) + TRACK_MARGIN;
      for (let p = 0; p < TRACK_PHASES; p++) {
        // Hop d at phase p is a delay of (d + p / TRACK_PHASES) hops off the whole's.
        for (let d = -trackFrames; d <= trackFrames; d++) {
          if (d === 0 && p === 0) continue;
          const r = correlateSpan(() => Rts[p]!, () => trackFrames + d, from, to);
          if (r > best) {
            best = r;
            hops[k] = d;
            phases[k] = p;
          }
        }
      }
    }
    const r = correlateSpan(
      (i) => Rts[phases[Math.floor(i / block)]!]!,
      (i) => trackFrames + hops[Math.floor(i / block)]!,
      0,
      active.length,
    );
    tracked = { offsetsMs: Array.from(hops, (d, k) => (d * hop + Math.round(phases[k]! * phase)) / samplesPerMs), correlation: r };
  }

  const receivedDbfs = dbfs(received, lagSamples, lagSamples + sent.length);
  const silent = !(receivedDbfs >= floorDbfs);
  const judged = Math.max(bestR, tracked?.correlation ?? -Infinity);
  return {
    score: silent ? 0 : Math.min(1, Math.max(0, judged)),
    lagMs: lagSamples / samplesPerMs,
    correlation: bestR,
    receivedDbfs,
    activeFrames: active.length,
    silent,
    ...(tracked ? { tracked } : {}),
  };
}

/** Clamps values to ≥ (max − rangeDb) in place; returns the max. */
function clampBelowMax(data: Float32Array, rangeDb: number): number {
  let max = DB_FLOOR;
  for (const v of data) if (v > max) max = v;
  clampAt(data, max - rangeDb);
  return max;
}

function clampAt(data: Float32Array, floor: number): void {
  for (let i = 0; i < data.length; i++) if (data[i]! < floor) data[i] = floor;
}

// ---------------------------------------------------------------- onsets

/** Options of `detectOnsets`. */
export interface OnsetOptions {
  /** A sample whose |amplitude| reaches this level (dBFS, peak, e.g. −20) is loud. */
  thresholdDbfs: number;
  /** Quiet (no loud sample) needed before a loud sample starts a new onset, ms. */
  minGapMs: number;
}

/**
 * Onset times of clicks, ms from the first sample: each onset is the first
 * sample whose |amplitude| ≥ 10^(thresholdDbfs/20) of full scale after at
 * least `minGapMs` without such a sample (the first loud sample of the signal
 * is always an onset). A click's ringing or a burst shorter than `minGapMs`
 * after it counts once. Sample-accurate (1/48 ms) — for click-based latency:
 * play clicks into the microphone, find them at the far speaker, subtract.
 */
export function detectOnsets(signal: Pcm, opts: OnsetOptions): number[] {
  const threshold = 10 ** (opts.thresholdDbfs / 20) / scaleOf(signal);
  const minGap = Math.round(opts.minGapMs * samplesPerMs);
  const onsets: number[] = [];
  let lastLoud = -Infinity;
  for (let i = 0; i < signal.length; i++) {
    if (Math.abs(signal[i]!) >= threshold) {
      if (i - lastLoud > minGap) onsets.push(i / samplesPerMs);
      lastLoud = i;
    }
  }
  return onsets;
}
