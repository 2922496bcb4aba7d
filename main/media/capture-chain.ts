import type { RtpPacket } from 'werift';
import type { CaptureProcessor, FrameEncoder } from './media-session';
import { OpusPacketizer } from './rtp-opus';

/** Sums of squares and sample counts per metered point, reset by whoever reports levels. */
export interface LevelMeter {
  input: number;
  inputN: number;
  sent: number;
  sentN: number;
  output: number;
  outputN: number;
}

/** A new, zeroed {@link LevelMeter}. */
export function newLevelMeter(): LevelMeter {
  return { input: 0, inputN: 0, sent: 0, sentN: 0, output: 0, outputN: 0 };
}

/** Adds one frame's energy to the meter's `key` point. */
export function accumulate(m: LevelMeter, key: 'input' | 'sent' | 'output', frame: Int16Array): void {
  let sum = 0;
  for (let i = 0; i < frame.length; i++) sum += frame[i]! * frame[i]!;
  m[key] += sum;
  m[`${key}N`] += frame.length;
}

/**
 * The levels of the interval since the last call, and zeroes the meter: RMS
 * per point, dBFS (−100 for digital silence or no samples).
 */
export function takeLevels(m: LevelMeter, talking: boolean): { inputDbfs: number; sentDbfs: number; outputDbfs: number; talking: boolean } {
  const level = (sum: number, n: number) => (n === 0 || sum === 0 ? -100 : Math.max(-100, Math.round(10 * Math.log10(sum / n / 32768 ** 2) * 10) / 10));
  const out = { inputDbfs: level(m.input, m.inputN), sentDbfs: level(m.sent, m.sentN), outputDbfs: level(m.output, m.outputN), talking };
  m.input = m.inputN = m.sent = m.sentN = m.output = m.outputN = 0;
  return out;
}

/** What the chain hands on with each packet besides the packet itself. */
export interface SentFrameInfo {
  /**
   * The frame's level as RFC 6464 puts it in the `ssrc-audio-level` header
   * extension: 0–127, −dBov of the frame sent (127 = silence or quieter).
   */
  levelDbov: number;
  /** Whether the VAD heard voice (false without a processor). */
  voice: boolean;
}

export interface CaptureChainOptions {
  /** Samples per frame (480 or 960: 10 or 20 ms at 48 kHz). */
  frameSamples: number;
  encoder: FrameEncoder;
  /** Echo cancellation, noise suppression, gain control and VAD (native/apm's VoiceProcessor fits). */
  processor?: CaptureProcessor;
  /** Opus DTX and VAD-driven DTX: silent frames are not sent (one every {@link DTX_KEEPALIVE_MS}). */
  dtx?: boolean;
  /** Monotonic clock, ms. */
  now: () => number;
  /** Sends one RTP packet of our stream (the transport adds SRTP). */
  send: (packet: RtpPacket, info: SentFrameInfo) => void;
  /** A processor or encoder failure (the frame is sent unprocessed, or dropped). */
  onError: (error: Error) => void;
  /** Where input and sent levels are summed (the owner reports them). */
  meter: LevelMeter;
}

/**
 * The send side of a call, as one stage, shared by 1:1 calls
 * ({@link MediaSession}) and group calls (main/media/group-media.ts):
 *
 *   microphone frame → voice processing (APM, 10 ms at a time) → mute / hold → Opus encode → DTX → RTP packetize → send
 *
 * The processor runs from the start (unless bypassed: {@link processing}), sending or not, so that its echo
 * canceller and noise estimate are converged when sending starts; it hears
 * every played frame as its echo reference through {@link render}. With
 * `dtx`, frames the VAD calls silence (after a 200 ms hang-over) are not
 * sent, except one every {@link DTX_KEEPALIVE_MS} so the far end knows we are
 * there (RFC 7587 §3.1.3); every frame is still encoded so the encoder's
 * state stays continuous.
 */
export class CaptureChain {
  readonly packetizer = new OpusPacketizer();
  /** Frames the capture hands on once the transport is up. */
  sending = false;
  /** On hold: encoded silence goes out. */
  held = false;
  /** Mute / push-to-talk: closed, encoded silence goes out. */
  micOpen = true;
  /** Frames not sent because the VAD heard no voice. */
  vadSilentFrames = 0;
  /** Speaker-to-microphone delay last given to the echo canceller, ms. */
  reportedDelayMs: number | undefined;
  private lastVoiceAt = -Infinity;
  private lastSentAt = -Infinity;
  /** A zeroed frame, sent (encoded) while muted or held. */
  private silence: Int16Array | undefined;
  /** Where the processed frame is put together, 10 ms at a time: read only within {@link push}. */
  private processed: Tens | undefined;
  private closed = false;
  /** Played audio short of a whole processor frame, kept for the next {@link render}. */
  private readonly renderCarry = new Int16Array(APM_FRAME);
  private renderHeld = 0;

  constructor(private readonly options: CaptureChainOptions) {}

  /** One microphone frame (`frameSamples` samples, 48 kHz mono s16). */
  push(raw: Int16Array): void {
    if (this.closed) return;
    const { options } = this;
    accumulate(options.meter, 'input', raw);
    let frame = raw;
    let voice = false;
    const processor = this.processing();
    if (processor) {
      try {
        this.processed ??= tens(new Int16Array(options.frameSamples));
        voice = processInTens(raw, processor, this.processed);
        frame = this.processed.frame;
      } catch (e) {
        options.onError(e as Error);
        frame = raw;
      }
      if (voice) this.lastVoiceAt = options.now();
    }
    if (!this.sending) return;
    // Muted or held: encoded silence, from one zeroed frame kept for it (nothing writes to it).
    const sent = this.held || !this.micOpen ? (this.silence ??= new Int16Array(options.frameSamples)) : frame;
    accumulate(options.meter, 'sent', sent);
    let opus: Buffer;
    try {
      opus = options.encoder.encode(sent);
    } catch (e) {
      options.onError(e as Error);
      return;
    }
    if (options.dtx && processor && !this.held && !this.talking() && options.now() - this.lastSentAt < DTX_KEEPALIVE_MS) {
      this.vadSilentFrames++;
      this.packetizer.skip(options.frameSamples);
      return;
    }
    if (options.dtx && opus.length <= 2) {
      this.packetizer.skip(options.frameSamples);
      return;
    }
    this.lastSentAt = options.now();
    options.send(this.packetizer.packetize(opus, options.frameSamples), { levelDbov: levelDbov(sent), voice: voice && this.micOpen && !this.held });
  }

  /**
   * The processor, while it has work to do: not while it is bypassed (echo
   * cancellation, noise suppression and gain control all off) unless DTX needs
   * its VAD. Bypassed, the microphone goes to the encoder as it came and the
   * played audio is not fed as a reference: in a call with processing off
   * that work (the APM's band split, high-pass filter and VAD, and the
   * echo-path detector) was ≈ 0.9 % of one core on the media thread and
   * ≈ 1.3 % for the whole daemon (docs/BENCHMARKS.md, "Voice processing off
   * does no processing").
   */
  private processing(): CaptureProcessor | undefined {
    const processor = this.options.processor;
    return processor && (!processor.bypassed || this.options.dtx) ? processor : undefined;
  }

  /** Voice activity within the last {@link VAD_HANGOVER_MS}. */
  talking(): boolean {
    return this.options.now() - this.lastVoiceAt < VAD_HANGOVER_MS;
  }

  /** The echo canceller's reference: exactly the frame that goes to the speaker. Never throws. */
  render(out: Int16Array): void {
    const processor = this.processing();
    if (!processor) {
      this.renderHeld = 0; // a bypass ends with whole frames of what plays from then on
      return;
    }
    try {
      let i = 0;
      // Played frames need not be whole 10 ms (an aligned playout's are 5 ms shorter or longer now and then):
      // what does not fill a processor frame waits for the next.
      if (this.renderHeld > 0) {
        const k = Math.min(APM_FRAME - this.renderHeld, out.length);
        this.renderCarry.set(out.subarray(0, k), this.renderHeld);
        this.renderHeld += k;
        i = k;
        if (this.renderHeld < APM_FRAME) return;
        processor.processRender(this.renderCarry);
        this.renderHeld = 0;
      }
      for (; i + APM_FRAME <= out.length; i += APM_FRAME) processor.processRender(out.subarray(i, i + APM_FRAME));
      if (i < out.length) {
        this.renderCarry.set(out.subarray(i));
        this.renderHeld = out.length - i;
      }
    } catch {
      // a failing reference only weakens echo cancellation
    }
  }

  /**
   * Asks the platform for the devices' delay (after start and after a device
   * switch) once the streams have run {@link DEVICE_DELAY_WAITS_MS}[0] ms, and
   * gives it to the echo canceller (clamped to 0–500 ms); while the platform
   * cannot tell yet (no timing update from the server), asks again after each
   * further wait. Asks nothing once the chain is closed: a call that ended
   * before its first 300 ms used to set off the query during the next call's
   * set-up. Never throws.
   */
  async updateDeviceDelay(deviceDelayMs: (() => Promise<number | undefined>) | undefined): Promise<void> {
    const processor = this.options.processor;
    if (!processor || !deviceDelayMs) return;
    for (const waitMs of DEVICE_DELAY_WAITS_MS) {
      await new Promise((r) => setTimeout(r, waitMs).unref());
      if (this.closed) return;
      let ms: number | undefined;
      try {
        ms = await deviceDelayMs();
      } catch {
        return; // the extended filter still covers a moderate delay error
      }
      if (this.closed) return;
      if (ms !== undefined) {
        this.reportedDelayMs = Math.max(0, Math.min(500, Math.round(ms)));
        processor.setStreamDelayMs(this.reportedDelayMs);
        return;
      }
    }
  }

  /** Stops handing frames on. */
  close(): void {
    this.closed = true;
    this.sending = false;
  }
}

/**
 * Waits before each ask for the devices' delay, ms: the first lets the streams
 * fill, the others give the server's timing updates (every ~100 ms) time to come.
 */
export const DEVICE_DELAY_WAITS_MS = [300, 700, 1000] as const;

/** The processor's frame: 10 ms at 48 kHz. */
export const APM_FRAME = 480;

/** Voice activity holds this long after the last voiced frame, ms (no clipped word ends). */
export const VAD_HANGOVER_MS = 200;

/** With VAD-driven DTX, one frame is still sent this often during silence, ms. */
export const DTX_KEEPALIVE_MS = 400;

/** RFC 6464 §3: the frame's RMS level in −dBov, 0 (full scale) … 127 (silence). */
export function levelDbov(frame: Int16Array): number {
  let sum = 0;
  for (let i = 0; i < frame.length; i++) sum += frame[i]! * frame[i]!;
  if (sum === 0 || frame.length === 0) return 127;
  const dbov = -10 * Math.log10(sum / frame.length / 32768 ** 2);
  return Math.max(0, Math.min(127, Math.round(dbov)));
}

/** A reused output frame and its 10 ms views (the APM's frame), made once per chain. */
interface Tens {
  frame: Int16Array;
  views: Int16Array[];
}
function tens(frame: Int16Array): Tens {
  const views: Int16Array[] = [];
  for (let i = 0; i < frame.length; i += APM_FRAME) views.push(frame.subarray(i, i + APM_FRAME));
  return { frame, views };
}

/**
 * Runs a 10 or 20 ms frame through the processor 10 ms at a time into
 * `out.frame` (reused from frame to frame: the result is encoded and dropped
 * before the next frame; `frame` itself is left as it was, for the level
 * meter and any other listener of the microphone). In place when the
 * processor can (native/apm: no allocation per frame), else through its
 * returned frames. Returns whether any 10 ms held voice.
 */
function processInTens(frame: Int16Array, processor: CaptureProcessor, out: Tens): boolean {
  let voice = false;
  if (processor.processCaptureInPlace) {
    out.frame.set(frame);
    for (const view of out.views) voice = processor.processCaptureInPlace(view) || voice;
    return voice;
  }
  for (let k = 0; k < out.views.length; k++) {
    const r = processor.processCapture(frame.subarray(k * APM_FRAME, (k + 1) * APM_FRAME));
    out.views[k]!.set(r.frame);
    voice ||= r.voice;
  }
  return voice;
}
