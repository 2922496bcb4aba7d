import { ALIGN_STEP_SAMPLES, AdaptiveJitterBuffer, type AdaptivePlayout } from './adaptive-jitter-buffer';
import { FixedJitterBuffer, type JitterPacket, type PlayoutItem } from './jitter-buffer';
import type { ReceivedRtp } from './rtp-transport';

/** Opus decoder: one packet → 48 kHz mono PCM of the packet's duration. */
export interface FrameDecoder {
  decode(packet: Buffer): Int16Array;
  /** Packet loss concealment for exactly `samples` samples (RFC 6716 §4.4). */
  conceal?(samples: number): Int16Array;
  /** Rebuilds the lost frame of `samples` samples before `next` from `next`'s in-band FEC (falls back to PLC). */
  decodeFec?(next: Buffer, samples: number): Int16Array;
}

export interface PlayoutChainOptions {
  /** Samples per frame the speaker pulls (480 or 960: 10 or 20 ms at 48 kHz). */
  frameSamples: number;
  decoder: FrameDecoder;
  /** Fixed jitter buffer delay, ms; without it the buffer adapts (AdaptiveJitterBuffer, NetEQ-like). */
  jitterTargetMs?: number;
  /** Monotonic clock, ms. */
  now: () => number;
  /** Called once, when the first received packet is decoded for the speaker. */
  onFirstAudio?: () => void;
  /**
   * Align the pulls to the packets' arrivals (adaptive buffer only): in pauses
   * a pulled frame may come {@link ALIGN_STEP_SAMPLES} or more short (quiet
   * audio dropped) or one step long (quiet audio inserted), so that each
   * packet waits about its jitter's quantile plus 5 ms whatever the phase
   * between the far end's clock and the speaker's
   * ({@link AdaptiveJitterBuffer.alignStep}). For a reader that takes any
   * length (the 1:1 speaker); a mixer of several chains needs equal frames.
   */
  alignPhase?: boolean;
}

/** Counters of one received stream (MediaStats' receive side). */
export interface PlayoutStats {
  packetsReceived: number;
  packetsLost: number;
  packetsLate: number;
  packetsDuplicate: number;
  packetsDiscarded: number;
  jitterMs: number;
  targetMs: number;
  bufferedMs: number;
  expandFrames: number;
  accelerateFrames: number;
  decelerateFrames: number;
  /** Net audio inserted (> 0) or dropped (< 0) by phase alignment, ms. */
  alignedMs: number;
  framesConcealed: number;
  framesRecoveredByFec: number;
}

/**
 * The receive side of one remote audio stream, as one stage:
 *
 *   RTP → jitter buffer → Opus decode / FEC / PLC → PCM FIFO → frames of `frameSamples`
 *
 * A 1:1 call has one; a group call has one per remote participant, each
 * feeding the {@link Mixer}. A lost packet is rebuilt from the next packet's
 * in-band FEC (RFC 6716 §2.1.7) when that packet is already buffered, else
 * concealed by the decoder (PLC, RFC 6716 §4.4). One stream per chain: a new
 * SSRC restarts the buffer (RFC 3550 §8.2). Until the first packet is due,
 * and while re-buffering, {@link pull} returns silence.
 */
export class PlayoutChain {
  private readonly jitter: JitterBuffer;
  private pcm: Int16Array = new Int16Array(0);
  private pcmOffset = 0;
  private lastQuiet = false;
  private lastOutQuiet = false;
  private heardFirst = false;
  private remoteSsrc: number | undefined;
  private received = 0;
  private concealed = 0;
  private fecRecovered = 0;

  constructor(private readonly options: PlayoutChainOptions) {
    this.jitter =
      options.jitterTargetMs !== undefined
        ? fixedBuffer(new FixedJitterBuffer(options.jitterTargetMs, options.frameSamples))
        : new AdaptiveJitterBuffer({ packetSamples: options.frameSamples, alignPhase: options.alignPhase ?? false });
  }

  /** Whether a received packet has been decoded for the speaker yet. */
  get playing(): boolean {
    return this.heardFirst;
  }

  /** Takes one received packet; `arrivalMs` on the chain's clock (default: now). */
  push(rtp: ReceivedRtp, arrivalMs = this.options.now()): void {
    const { header } = rtp;
    if (this.remoteSsrc !== header.ssrc) {
      if (this.remoteSsrc !== undefined) this.jitter.reset();
      this.remoteSsrc = header.ssrc;
    }
    this.received++;
    this.jitter.push({ sequenceNumber: header.sequenceNumber, timestamp: header.timestamp, payload: rtp.payload }, arrivalMs);
  }

  /**
   * One frame for the speaker (a new array, the caller's to change): decoded
   * audio, recovered or concealed audio for a gap, or silence while
   * buffering. `frameSamples` samples; with `alignPhase`, in pauses, a
   * multiple of {@link ALIGN_STEP_SAMPLES} between half that and that plus one step.
   */
  pull(): Int16Array {
    const n = this.options.frameSamples;
    const out = new Int16Array(n);
    let filled = 0;
    const now = this.options.now();
    while (filled < n) {
      // A packet taken mid-frame plays `filled` samples after the pull: its delay is measured from then.
      if (this.pcmOffset >= this.pcm.length && !this.refill(now + (filled * 1000) / SAMPLE_RATE)) {
        // Aligned: until the first packet is due, silence a step at a time, so it is taken within a step of its time.
        if (this.options.alignPhase && filled === 0) return new Int16Array(ALIGN_STEP_SAMPLES);
        break;
      }
      const k = Math.min(n - filled, this.pcm.length - this.pcmOffset);
      out.set(this.pcm.subarray(this.pcmOffset, this.pcmOffset + k), filled);
      this.pcmOffset += k;
      filled += k;
    }
    if (!this.options.alignPhase || !this.jitter.alignStep) return out;
    const quiet = isQuiet(out);
    const step = this.jitter.alignStep(quiet && this.lastOutQuiet);
    this.lastOutQuiet = quiet;
    if (step > 0) return out.subarray(0, n - step);
    if (step < 0) return lengthened(out, -step);
    return out;
  }

  stats(): PlayoutStats {
    const j = this.jitter.stats();
    return {
      packetsReceived: this.received,
      packetsLost: j.packetsLost,
      packetsLate: j.packetsLate,
      packetsDuplicate: j.packetsDuplicate,
      packetsDiscarded: j.packetsDiscarded,
      jitterMs: j.jitterMs,
      targetMs: j.targetMs,
      bufferedMs: j.bufferedMs,
      expandFrames: j.expandFrames,
      accelerateFrames: j.accelerateFrames,
      decelerateFrames: j.decelerateFrames,
      alignedMs: ((j.alignedSamples ?? 0) * 1000) / SAMPLE_RATE,
      framesConcealed: this.concealed,
      framesRecoveredByFec: this.fecRecovered,
    };
  }

  /**
   * Audio for a lost packet: rebuilt from the next packet's in-band FEC when
   * that packet is already here, else concealed by the decoder (PLC), else
   * (a decoder without either, or one that fails) silence. Counted in stats.
   */
  private recoverLost(samples: number, next: Buffer | undefined): Int16Array {
    const d = this.options.decoder;
    try {
      if (next && d.decodeFec) {
        this.fecRecovered++;
        return d.decodeFec(next, samples);
      }
      if (d.conceal) {
        this.concealed++;
        return d.conceal(samples);
      }
    } catch {
      // fall through to silence
    }
    return new Int16Array(samples);
  }

  /** Takes the next playout item into the PCM FIFO; false while buffering. */
  private refill(nowMs: number): boolean {
    const item = this.jitter.pop(this.lastQuiet, nowMs);
    if (item.kind === 'buffering') return false;
    if (item.kind === 'missing') {
      this.pcm = this.recoverLost(item.samples, item.next?.payload);
    } else if (item.kind === 'expand') {
      this.pcm = this.recoverLost(item.samples, undefined);
    } else {
      try {
        this.pcm = this.options.decoder.decode(item.packet.payload);
        this.jitter.setPacketDuration(this.pcm.length);
      } catch {
        // A corrupt packet is treated as lost.
        this.pcm = new Int16Array(this.options.frameSamples);
      }
      if (!this.heardFirst) {
        this.heardFirst = true;
        const first = this.options.onFirstAudio;
        if (first) queueMicrotask(first);
      }
    }
    // A concealed frame fades towards silence by itself: it counts as a pause
    // (where the buffer may drop or insert frames) only after a quiet frame.
    this.lastQuiet = isQuiet(this.pcm) && (item.kind === 'packet' || this.lastQuiet);
    this.pcmOffset = 0;
    return true;
  }
}

/** What the chain needs of a jitter buffer (both kinds fit). */
interface JitterBuffer {
  push(packet: JitterPacket, arrivalMs: number): void;
  pop(lastWasQuiet: boolean, nowMs: number): AdaptivePlayout;
  setPacketDuration(samples: number): void;
  /** See {@link AdaptiveJitterBuffer.alignStep} (the adaptive buffer only). */
  alignStep?(quiet: boolean): number;
  reset(): void;
  /** The buffer's share of the stream's counters (the chain counts received packets, PLC and FEC itself). */
  stats(): Omit<PlayoutStats, 'packetsReceived' | 'framesConcealed' | 'framesRecoveredByFec' | 'alignedMs'> & { alignedSamples?: number };
}

/** The fixed buffer seen through the JitterBuffer interface (its underruns re-buffer in silence). */
function fixedBuffer(b: FixedJitterBuffer): JitterBuffer {
  return {
    push: (p, at) => b.push(p, at),
    pop: (): PlayoutItem => b.pop(),
    setPacketDuration: (n) => b.setPacketDuration(n),
    reset: () => b.reset(),
    stats: () => ({ ...b.stats(), targetMs: b.targetMs, expandFrames: 0, accelerateFrames: 0, decelerateFrames: 0 }),
  };
}

const SAMPLE_RATE = 48_000;

/**
 * `frame` and then `extra` more samples: its last `extra` samples mirrored
 * (played backwards), so the inserted audio joins the frame without a step.
 * Used on quiet frames only.
 */
function lengthened(frame: Int16Array, extra: number): Int16Array {
  const out = new Int16Array(frame.length + extra);
  out.set(frame);
  for (let i = 0; i < extra; i++) out[frame.length + i] = frame[Math.max(0, frame.length - 1 - i)]!;
  return out;
}

/** Below −46 dBFS RMS a frame counts as a pause, where the buffer may drop or insert a frame unheard. */
const QUIET_RMS = 164;

function isQuiet(pcm: Int16Array): boolean {
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += pcm[i]! * pcm[i]!;
  return pcm.length > 0 && Math.sqrt(sum / pcm.length) < QUIET_RMS;
}
