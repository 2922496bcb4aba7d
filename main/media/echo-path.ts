/**
 * Echo path detection in front of the echo canceller.
 *
 * WebRTC's AEC (the APM of libwebrtc-audio-processing 0.3, "AEC1") suppresses
 * the microphone non-linearly whenever the far end is active. With an echo
 * path that is the price of cancelling it; with none (a headset, separate
 * devices) it only damages the near end during double talk: offline, speech
 * over unrelated far-end speech kept a similarity of 0.86 with the AEC on and
 * 0.98 with it off (`test/unit/echo-path.test.ts`; docs/audio.md).
 *
 * {@link EchoPathDetector} decides from the signals themselves whether the far
 * end reaches the microphone: for every candidate delay from 0 to
 * {@link MAX_ECHO_DELAY_MS} it keeps the normalised covariance (Pearson
 * correlation) of the far end's frame energy, delayed, with the microphone's
 * frame energy, with exponential forgetting — the method of WebRTC's residual
 * echo detector ("echo likelihood", `modules/audio_processing/
 * residual_echo_detector.cc`), here on log energies of 10 ms frames, before
 * the canceller. An echo makes the microphone's energy follow the far end's at
 * the echo's delay; two people talking (at once or taking turns) do not.
 *
 * {@link EchoGatedProcessor} wraps the voice processor: it gives the AEC the
 * real far end as its reference only while an echo path may exist
 * ({@link EchoPathDetector.possible}: `present`, or a significant likelihood
 * while still `unknown`), and digital silence otherwise, which (measured)
 * leaves the near end exactly as with the AEC off; the AEC keeps what it
 * learnt, so an echo path that returns is cancelled as soon as it is
 * detected. And it runs the AEC at all only while there may be an echo to
 * cancel: from the far end's first audible frame until the detector is sure
 * there is no echo path (`absent`). A call without one (a headset, separate
 * devices) then stops paying the canceller's algorithmic delay (≈ 7 ms on the
 * microphone path, `npm run bench:apm-delay`) and its CPU, and so does any
 * call while the far end has not spoken.
 *
 * A call starts `unknown`, and the near end is not sacrificed for it: fed the
 * far end while unknown, AEC1 garbled both people talking at once in a call's
 * first second (`npm run demo`: similarity 0.73–0.89 against 0.975 with the
 * AEC off, offline on the demo's sentences). The price is paid by a real echo
 * path instead, once per call: the far end's first 0.5–0.7 s of speech pass
 * before it is `present` and cancelled (ERLE ≥ 25 dB from 1 s on;
 * `test/unit/echo-path.test.ts`).
 */
import type { CaptureProcessor } from './media-session';

/** Frames the detector works on: 10 ms at 48 kHz mono, samples. */
export const ECHO_FRAME_SAMPLES = 480;
/** The longest speaker-to-microphone delay looked for, ms (the APM's own limit is 500 ms). */
export const MAX_ECHO_DELAY_MS = 500;
const LAGS = MAX_ECHO_DELAY_MS / 10 + 1;
/**
 * How far, in 10 ms frames, the far end's frames may run ahead of or behind
 * the microphone's in their arrival (bursts from the devices or the event
 * loop) and still be lined up; the far-end history holds this many frames
 * beyond {@link LAGS}.
 */
const MAX_SKEW_FRAMES = 64;
const RING = LAGS + MAX_SKEW_FRAMES;
/**
 * Forgetting factor per microphone frame of the smoothed skew (far-end frames
 * fed minus microphone frames fed), used when frames come without times: a
 * time constant of 2 s, which averages delivery bursts of several frames down
 * to a fraction of a frame and follows two sound cards' clocks drifting apart
 * (0.1 % is one frame in 10 s).
 */
const SKEW_FORGET = 1 / 200;
/**
 * Frames over which the envelopes of the frame times are taken (0.5 s): much
 * longer than a delivery burst (a busy event loop holds frames back for tens
 * of ms, and the burst that follows ends on time), short enough to follow
 * frames the microphone lost to an overrun (naudiodon's callback blocks on a
 * full queue while Node is busy, and the device drops what it captures
 * meanwhile) within half a second.
 */
const ENVELOPE_FRAMES = 50;
/** A frame's duration, ms. */
const FRAME_MS = 10;

/**
 * The largest (or smallest) of the last `size` values pushed, in O(1) per
 * value (a monotonic deque).
 */
class SlidingExtreme {
  readonly #index = new Float64Array(ENVELOPE_FRAMES + 1);
  readonly #value = new Float64Array(ENVELOPE_FRAMES + 1);
  #head = 0;
  #length = 0;
  #pushed = 0;

  constructor(private readonly sign: 1 | -1) {}

  push(value: number): void {
    const cap = this.#index.length;
    // Drop the values the new one dominates, then the one that left the window.
    while (this.#length > 0) {
      const last = (this.#head + this.#length - 1) % cap;
      if (this.sign * this.#value[last]! > this.sign * value) break;
      this.#length--;
    }
    const at = (this.#head + this.#length) % cap;
    this.#index[at] = this.#pushed;
    this.#value[at] = value;
    this.#length++;
    if (this.#pushed - this.#index[this.#head]! >= ENVELOPE_FRAMES) {
      this.#head = (this.#head + 1) % cap;
      this.#length--;
    }
    this.#pushed++;
  }

  get value(): number | undefined {
    return this.#length > 0 ? this.#value[this.#head] : undefined;
  }
}

/**
 * Forgetting factor per 10 ms frame of the covariance estimates: a time
 * constant of 4 s, long enough to hold several words and pauses of both
 * talkers, short enough to follow a headset being unplugged.
 */
const FORGET = 1 / 400;
/** Frame energies below this count as silence, dBFS (the floor of the log energy). */
const FLOOR_DBFS = -70;
/** A far-end frame at or above this level counts as far-end activity, dBFS. */
const ACTIVE_DBFS = -45;
/** A microphone frame below this level is a pause between words, dBFS (where the echo canceller may stop unheard). */
const QUIET_DBFS = -50;
/** Far-end activity needed before anything is decided, 10 ms frames (0.3 s of far-end speech). */
const EVIDENCE_FRAMES = 20;
/** Echo likelihood at or above which an echo path is `present`. */
export const PRESENT_LIKELIHOOD = 0.5;
/** Echo likelihood below which, with enough evidence, the echo path is `absent`. */
export const ABSENT_LIKELIHOOD = 0.3;

/** What the detector believes about the speaker-to-microphone path. */
export type EchoPathState = 'unknown' | 'present' | 'absent';

/**
 * Once an echo path has been `present`, the likelihood must stay below
 * {@link ABSENT_LIKELIHOOD} for this many microphone frames heard while the far
 * end speaks (5 s of its speech) before the path counts as `absent`. Calling a
 * real echo absent turns its cancellation off and the far end hears itself;
 * calling a gone one present only keeps the AEC's mild double-talk damage a
 * few seconds longer. Measured live on a loaded machine, a real echo's
 * likelihood dipped below 0.3 for moments (frames lost and played late).
 */
const PRESENT_HOLD_FRAMES = 500;

/** Frames a delay's estimate needs before it counts, 10 ms frames. */
const MIN_FRAMES = 20;
/**
 * How far above chance an echo's correlation must stand before the path is
 * `present`, as `likelihood × √n` over the n frames behind it. With no echo,
 * a correlation from n independent frames scatters around 0 with a standard
 * error of 1/√n; speech's frame energies are correlated from frame to frame,
 * so the scatter is wider: two different sentences starting together (8
 * espeak-ng sentences, every ordered pair, starts 0/100/300 ms apart, 168
 * runs) reached at most 4.9 with a likelihood ≥ 0.5, and at 4 a tenth of them
 * were called an echo within the first second — the canceller then garbled
 * both talkers for the {@link PRESENT_HOLD_FRAMES} that follow. A clear echo
 * reaches 6 after 36 frames of far-end speech (0.5–0.6 s), a likelihood of
 * 0.75 after 64 frames, {@link PRESENT_LIKELIHOOD} after 144.
 */
const PRESENT_SIGNIFICANCE = 6;
/** The most frames the forgetting estimates hold in effect (the exponential window's equivalent length). */
const MAX_EFFECTIVE_FRAMES = 2 / FORGET;
/**
 * The features are frame-to-frame changes of log energy, dB, limited to this
 * size: an echo makes the microphone's level rise and fall with the far end's
 * syllables at the echo's delay, while two talkers who start or stop together
 * share only a few large steps, which the limit keeps from dominating.
 */
const MAX_STEP_DB = 10;
function clampStep(db: number): number {
  return Math.max(-MAX_STEP_DB, Math.min(MAX_STEP_DB, db));
}

function frameDbfs(frame: Int16Array): number {
  let sum = 0;
  for (let i = 0; i < frame.length; i++) sum += frame[i]! * frame[i]!;
  const power = sum / (frame.length * 32768 * 32768);
  return power > 0 ? Math.max(FLOOR_DBFS, 10 * Math.log10(power)) : FLOOR_DBFS;
}

/**
 * Decides whether the far end is heard in the microphone. Feed every far-end
 * frame as played with {@link render} and every raw microphone frame (before
 * any processing) with {@link capture}, both 480 samples (10 ms, 48 kHz mono),
 * in the order they happen. No allocation per frame.
 *
 * Frames are lined up by when they were played and captured, not by their
 * order of arrival: both devices deliver in bursts (PortAudio periods, the
 * sound server's blocks, a busy event loop), so the far-end frame that
 * happens to be the newest when a microphone frame arrives jumps back and
 * forth by several frames, and that jitter smears every delay's correlation
 * (measured on a real call's signals: bursts of up to 3 frames lowered the
 * likelihood of a clear echo from 0.98 to 0.55, bursts of up to 6 to 0.35,
 * and the path was called `absent`). With times (`atMs`, in a call), each
 * side's frame time minus 10 ms × its frame number is taken over 0.5 s — the
 * latest for the speaker (a pull is late only when the device ran dry), the
 * earliest for the microphone (delivery only adds delay) — and microphone
 * frame n goes with the far-end frame the speaker took when frame n would have
 * arrived; a pull a frame or more behind the speaker's schedule counts the
 * silence the device played meanwhile. Without times (offline), microphone
 * frame n goes with far-end frame n plus the smoothed difference of the two
 * counts (WebRTC's AEC counts the far end it holds the same way). Either
 * follows a speaker and a microphone on two clocks (issue 18 item 5).
 */
export class EchoPathDetector {
  /** The far-end features (level steps, dB), by far-end frame number modulo {@link RING}. */
  readonly #render = new Float64Array(RING);
  /** The far-end frame levels, dBFS, likewise. */
  readonly #renderDb = new Float64Array(RING).fill(FLOOR_DBFS);
  /** Per lag: frames that went into its estimates (those with the far end active at that lag). */
  readonly #count = new Float64Array(LAGS);
  #renderFrames = 0;
  #captureFrames = 0;
  /** Smoothed far-end frames fed minus microphone frames fed, and how many microphone frames it has seen. */
  #skew = 0;
  #skewFrames = 0;
  /** The whole-frame offset in use: it follows the skew with a hysteresis of ¾ frame, so that a skew near a half frame does not flip it back and forth. */
  #offset = 0;
  #offsetSet = false;
  /** Upper envelope (last {@link ENVELOPE_FRAMES}) of (pull time − 10 ms × far-end frame number), ms: when the speaker takes frame 0, were it never early. */
  readonly #renderTimes = new SlidingExtreme(1);
  /** Lower envelope (likewise) of (arrival time − 10 ms × microphone frame number), ms: when frame 0 arrives, were it never late. */
  readonly #captureTimes = new SlidingExtreme(-1);
  #lastRenderDb = FLOOR_DBFS;
  #lastCaptureDb = FLOOR_DBFS;
  // Per lag: exponentially weighted means, variances and covariance.
  readonly #meanR = new Float64Array(LAGS);
  readonly #meanC = new Float64Array(LAGS);
  readonly #varR = new Float64Array(LAGS);
  readonly #varC = new Float64Array(LAGS);
  readonly #cov = new Float64Array(LAGS);
  #evidence = 0;
  /** Far-end evidence at the previous microphone frame, and microphone frames with far-end speech in a row below ABSENT_LIKELIHOOD. */
  #evidenceSeen = 0;
  #lowFrames = 0;
  #likelihood = 0;
  #significant = false;
  #delayMs = 0;
  #state: EchoPathState = 'unknown';

  constructor() {
  }

  /** The current decision. */
  get state(): EchoPathState {
    return this.#state;
  }

  /** Echo likelihood: the highest correlation over all delays, −1…1 (0 before any capture). */
  get likelihood(): number {
    return this.#likelihood;
  }

  /**
   * Whether an echo path may exist: `present`, or, while `unknown`, a
   * likelihood of at least {@link ABSENT_LIKELIHOOD} that stands
   * {@link PRESENT_SIGNIFICANCE} standard errors above chance (a real but
   * messy echo — frames lost, played late — that never reaches
   * {@link PRESENT_LIKELIHOOD}; two people talking at once stay below it).
   */
  get possible(): boolean {
    return this.#state === 'present' || (this.#state === 'unknown' && this.#likelihood >= ABSENT_LIKELIHOOD && this.#significant);
  }

  /** The delay at which the likelihood was found, ms. */
  get delayMs(): number {
    return this.#delayMs;
  }

  /**
   * One far-end frame as written to the speaker.
   * @param frame 480 samples (10 ms, 48 kHz mono s16); any length is measured as one frame.
   * @param atMs when the speaker took it, on a monotonic clock shared with {@link capture}'s; without
   *   times (both sides), frames are lined up by their counts alone.
   * @returns how many frames of silence the speaker played before this one (it ran dry), as counted
   *   into the history; 0 without times.
   */
  render(frame: Int16Array, atMs?: number): number {
    let late = 0;
    if (atMs !== undefined) {
      const t0 = this.#renderTimes.value;
      // Taken a frame or more later than the speaker's recent schedule: it ran dry and played
      // silence meanwhile. That silence is what the microphone hears, so it goes into the history too.
      late = t0 === undefined ? 0 : Math.min(MAX_SKEW_FRAMES, Math.floor((atMs - t0) / FRAME_MS - this.#renderFrames));
      for (let i = 0; i < late; i++) this.#push(FLOOR_DBFS);
      this.#renderTimes.push(atMs - FRAME_MS * this.#renderFrames);
    }
    this.#push(frameDbfs(frame));
    return Math.max(0, late);
  }

  #push(db: number): void {
    const at = this.#renderFrames % RING;
    this.#render[at] = clampStep(db - this.#lastRenderDb);
    this.#renderDb[at] = db;
    this.#lastRenderDb = db;
    this.#renderFrames++;
    if (db >= ACTIVE_DBFS) this.#evidence++;
  }

  /**
   * One raw microphone frame; updates the estimates and the decision.
   * @param frame 480 samples (10 ms, 48 kHz mono s16), before voice processing.
   * @param atMs when it arrived, on {@link render}'s clock.
   * @returns the decision after this frame.
   */
  capture(frame: Int16Array, atMs?: number): EchoPathState {
    const db = frameDbfs(frame);
    const c = clampStep(db - this.#lastCaptureDb);
    this.#lastCaptureDb = db;
    if (atMs !== undefined) this.#captureTimes.push(atMs - FRAME_MS * this.#captureFrames);
    this.#captureFrames++;
    const renderT0 = this.#renderTimes.value;
    const captureT0 = this.#captureTimes.value;
    let skew: number;
    if (renderT0 !== undefined && captureT0 !== undefined) {
      // With times: the far-end frame the speaker took when this microphone frame would have arrived
      // without delivery delays (each side's envelope), which counts the silence the speaker played
      // when it ran dry (its frames came late) and ignores bursts on either side.
      skew = (captureT0 - renderT0) / FRAME_MS;
      this.#skew = skew;
    } else {
      skew = this.#renderFrames - this.#captureFrames;
      if (Math.abs(skew - this.#skew) > MAX_SKEW_FRAMES) this.#skewFrames = 0; // a jump (the speaker stopped for a while): start over
      this.#skew += (skew - this.#skew) * Math.max(SKEW_FORGET, 1 / ++this.#skewFrames);
    }
    if (!this.#offsetSet || Math.abs(this.#skew - this.#offset) > 0.75) {
      this.#offset = Math.round(this.#skew);
      this.#offsetSet = true;
    }
    // The far-end frame that goes with this microphone frame at lag 0, and the newest one there is.
    const base = this.#captureFrames - 1 + this.#offset;
    const newest = this.#renderFrames - 1;
    let best = -1;
    let bestLag = 0;
    let looked = 0;
    for (let lag = 0; lag < LAGS; lag++) {
      const frame = base - lag;
      const at = frame % RING;
      // Only frames where the far end speaks (at this delay) say anything about its echo; the others,
      // and frames not yet fed or already overwritten, leave the estimates as they are.
      if (frame >= 0 && frame <= newest && newest - frame < RING && this.#renderDb[at]! >= ACTIVE_DBFS) {
        const dr = this.#render[at]! - this.#meanR[lag]!;
        const dc = c - this.#meanC[lag]!;
        // Plain averages while few frames are in (unbiased early estimates), then forgetting.
        const forget = Math.max(FORGET, 1 / ++this.#count[lag]!);
        this.#meanR[lag]! += forget * dr;
        this.#meanC[lag]! += forget * dc;
        // West's exponentially weighted (co)variance update.
        this.#varR[lag] = (1 - forget) * (this.#varR[lag]! + forget * dr * dr);
        this.#varC[lag] = (1 - forget) * (this.#varC[lag]! + forget * dc * dc);
        this.#cov[lag] = (1 - forget) * (this.#cov[lag]! + forget * dr * dc);
      }
      if (this.#count[lag]! < MIN_FRAMES) continue;
      looked++;
      const denom = Math.sqrt(this.#varR[lag]! * this.#varC[lag]!);
      const rho = denom > 1e-9 ? this.#cov[lag]! / denom : 0;
      if (rho > best) {
        best = rho;
        bestLag = lag;
      }
    }
    if (looked === 0) return this.#state;
    this.#likelihood = Math.max(best, 0);
    this.#delayMs = bestLag * 10;
    if (this.#evidence < EVIDENCE_FRAMES) return this.#state;
    const farSpoke = this.#evidence > this.#evidenceSeen;
    this.#evidenceSeen = this.#evidence;
    if (this.#likelihood >= ABSENT_LIKELIHOOD) this.#lowFrames = 0;
    else if (farSpoke) this.#lowFrames++;
    const frames = Math.min(this.#count[bestLag]!, MAX_EFFECTIVE_FRAMES);
    this.#significant = this.#likelihood * Math.sqrt(frames) >= PRESENT_SIGNIFICANCE;
    if (this.#likelihood >= PRESENT_LIKELIHOOD && this.#likelihood * Math.sqrt(frames) >= PRESENT_SIGNIFICANCE)
      this.#state = 'present';
    // Absent only once every delay has been looked at, and, after an echo was present, only once it has
    // stayed away for a while (PRESENT_HOLD_FRAMES).
    else if (
      this.#likelihood < ABSENT_LIKELIHOOD &&
      looked === LAGS &&
      (this.#state !== 'present' || this.#lowFrames >= PRESENT_HOLD_FRAMES)
    )
      this.#state = 'absent';
    return this.#state;
  }
}

/**
 * A {@link CaptureProcessor} whose echo canceller hears the far end only while
 * an echo path may exist (see the module comment). Frames must be 480 samples.
 */
export class EchoGatedProcessor implements CaptureProcessor {
  readonly detector = new EchoPathDetector();
  readonly #silence = new Int16Array(ECHO_FRAME_SAMPLES);
  /** Whether the inner echo canceller runs (always, when it cannot be disengaged). */
  #engaged: boolean;
  readonly #controllable: boolean;

  /**
   * @param inner the voice processor (the APM). When it can disengage its
   *   echo canceller (`setEchoCancellerEngaged`), the canceller runs only
   *   while it may have an echo to cancel ({@link EchoGatedProcessor.engaged}).
   * @param now the clock frames are stamped with as they pass, ms (`performance.now` in a call); without
   *   it frames are lined up by their counts (offline processing, which runs faster than real time).
   */
  constructor(
    readonly inner: CaptureProcessor,
    private readonly now?: () => number,
  ) {
    this.#controllable = inner.setEchoCancellerEngaged !== undefined;
    this.#engaged = !this.#controllable;
    inner.setEchoCancellerEngaged?.(false);
  }

  /** The inner processor's {@link CaptureProcessor.bypassed}: with nothing to cancel, the detector need not run either. */
  get bypassed(): boolean {
    return this.inner.bypassed ?? false;
  }

  /**
   * Whether the echo canceller runs. It starts with the far end's first
   * audible frame (an echo needs a far end; started then, it converges as if
   * it had run from the call's start, while started later, in the middle of
   * an echo, it took up to 0.5 s longer) and stops once the detector is sure
   * there is no echo path (`absent`: within about a second of far-end speech
   * in a call without one, or 5 s after an echo path went), at a quiet
   * microphone frame. It starts again when an echo path appears. While it is stopped the microphone path is ≈ 7 ms shorter
   * and the canceller costs no CPU; each start or stop moves the microphone
   * path by those ≈ 7 ms once.
   */
  get engaged(): boolean {
    return this.#engaged;
  }

  #engage(on: boolean): void {
    this.#engaged = on;
    this.inner.setEchoCancellerEngaged?.(on);
  }

  processRender(frame: Int16Array): void {
    // The silence a dry speaker played is counted by the detector only. Fed to the AEC as well, it cost the
    // echo test ERLE (27 dB after convergence against 60-65) and double talk (similarity 0.18 and 0.41
    // against 0.73): a pull can be late without the device running dry (the queue below covers it), and
    // every such frame shifts AEC1's alignment, which corrects itself from its own buffer count anyway.
    this.detector.render(frame, this.now?.());
    // Started with a far-end frame, so that its reference leads the microphone as it will from then on.
    if (!this.#engaged && (this.detector.possible || (this.detector.state === 'unknown' && frameDbfs(frame) >= ACTIVE_DBFS))) this.#engage(true);
    if (this.#engaged) this.inner.processRender(this.detector.possible ? frame : this.#silence);
  }

  /** Stops the canceller once no echo path is certain, between words (a quiet microphone frame), where the jump is not heard. */
  #disengageIfNoEcho(frame: Int16Array): void {
    if (this.#engaged && this.#controllable && this.detector.state === 'absent' && frameDbfs(frame) < QUIET_DBFS) this.#engage(false);
  }

  processCapture(frame: Int16Array): { frame: Int16Array; voice: boolean } {
    this.detector.capture(frame, this.now?.());
    this.#disengageIfNoEcho(frame);
    return this.inner.processCapture(frame);
  }

  processCaptureInPlace(frame: Int16Array): boolean {
    this.detector.capture(frame, this.now?.());
    this.#disengageIfNoEcho(frame);
    if (this.inner.processCaptureInPlace) return this.inner.processCaptureInPlace(frame);
    const r = this.inner.processCapture(frame);
    frame.set(r.frame);
    return r.voice;
  }

  setStreamDelayMs(ms: number): void {
    this.inner.setStreamDelayMs(ms);
  }

  echoMetrics(): { erleDb?: number; delayMedianMs?: number; echoPath: EchoPathState; echoLikelihood: number } {
    return {
      ...(this.inner.echoMetrics?.() ?? {}),
      echoPath: this.detector.state,
      echoLikelihood: Math.round(this.detector.likelihood * 100) / 100,
    };
  }
}
