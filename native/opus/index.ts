/**
 * Opus (RFC 6716) for voice: 48 kHz mono signed 16-bit PCM in frames of 10 ms
 * (480 samples) or 20 ms (960 samples), through `@discordjs/opus` (libopus
 * 1.3, statically linked), loaded on first use.
 *
 * Encoder settings go through libopus encoder CTLs (values from libopus
 * `include/opus_defines.h`). Limits of this binding, measured here:
 * `decode` has no single-frame packet loss concealment (an empty packet makes
 * libopus conceal a whole 120 ms and advances its state) and no FEC decoding
 * (`decode_fec` is always 0), so {@link OpusDecoder.decode} refuses empty
 * packets and a lost packet is the jitter buffer's business.
 */
import { loadNativeModule, type NativeModuleSpec } from '../load';

/** The binding's class (encoder and decoder share one native object). */
interface NativeOpus {
  encode(pcm: Buffer): Buffer;
  decode(packet: Buffer): Buffer;
  applyEncoderCTL(ctl: number, value: number): void;
  applyDecoderCTL(ctl: number, value: number): void;
  setBitrate(bitrate: number): void;
  getBitrate(): number;
}
interface OpusModule {
  OpusEncoder: new (rate: number, channels: number) => NativeOpus;
}

const OPUS: NativeModuleSpec = {
  packageName: '@discordjs/opus',
  purpose: 'Opus voice encoding',
  systemLibraries: { 'libstdc++.so.6': 'libstdc++6' },
};

/** libopus CTL request numbers and values (opus_defines.h). */
export const OPUS_CTL = {
  SET_APPLICATION: 4000,
  SET_BITRATE: 4002,
  SET_VBR: 4006,
  SET_COMPLEXITY: 4010,
  SET_INBAND_FEC: 4012,
  SET_PACKET_LOSS_PERC: 4014,
  SET_DTX: 4016,
  SET_SIGNAL: 4024,
  APPLICATION_VOIP: 2048,
  APPLICATION_AUDIO: 2049,
  APPLICATION_RESTRICTED_LOWDELAY: 2051,
  SIGNAL_VOICE: 3001,
} as const;

/** Sample rate of every frame (Hz). */
export const OPUS_SAMPLE_RATE = 48000;
/** Samples per 10 ms frame at 48 kHz mono. */
export const SAMPLES_10MS = 480;
/** Samples per 20 ms frame at 48 kHz mono. */
export const SAMPLES_20MS = 960;
/** Longest frame libopus decodes (120 ms at 48 kHz). */
const MAX_DECODED_SAMPLES = 5760;

let opusModule: OpusModule | undefined;
function load(): OpusModule {
  opusModule ??= loadNativeModule<OpusModule>(OPUS);
  return opusModule;
}

/** Encoder settings. Units in the names' docs. */
export interface OpusEncoderOptions {
  /** Hz; only 48000 (the pipeline's rate). Default 48000. */
  sampleRate?: 48000;
  /** Only mono. Default 1. */
  channels?: 1;
  /**
   * When given, {@link OpusEncoder.encode} accepts only frames of this
   * duration (10 ms = 480 samples, 20 ms = 960); otherwise either.
   */
  frameMs?: 10 | 20;
  /** Target bitrate, bits per second, 6000–510000. Default 32000. */
  bitrate?: number;
  /** In-band FEC (LBRR, RFC 6716 §2.1.7): the next packet carries a coarse copy of this one. Default false. */
  fec?: boolean;
  /** Discontinuous transmission: silence is coded as ≤ 2-byte packets (RFC 7587 §3.1.3). Default false. */
  dtx?: boolean;
  /** Expected packet loss, percent 0–100; steers how many bits FEC gets. Default 0. */
  expectedLossPercent?: number;
  /** libopus application: `voip` (speech, the default), `audio`, `lowdelay` (CELT only, no FEC/DTX). */
  application?: 'voip' | 'audio' | 'lowdelay';
  /** Encoder complexity 0–10 (CPU vs quality). Default: libopus's (10 on x86). */
  complexity?: number;
}

/** An Opus encoder for one stream (it keeps state between frames). */
export interface OpusEncoder {
  /** The settings in effect (bitrate and loss follow the setters). */
  readonly settings: Readonly<Required<Omit<OpusEncoderOptions, 'frameMs' | 'complexity'>>> & {
    frameMs?: 10 | 20;
    complexity?: number;
  };
  /**
   * Encodes one frame.
   * @param frame 48 kHz mono PCM: 480 or 960 samples (exactly `frameMs` × 48 when set).
   * @returns one Opus packet (RFC 6716 §3), 1–1275 bytes; ≤ 2 bytes means DTX silence.
   * @throws TypeError when `frame` is not an Int16Array.
   * @throws RangeError when its length is not an accepted frame size.
   */
  encode(frame: Int16Array): Buffer;
  /** Changes the target bitrate (bits/s, 6000–510000) from the next frame on. @throws RangeError */
  setBitrate(bitsPerSecond: number): void;
  /** Changes the expected loss (percent 0–100) from the next frame on. @throws RangeError */
  setExpectedLossPercent(percent: number): void;
}

function checkInt(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`Opus ${name} must be an integer in ${min}–${max}, got ${value}`);
  }
}

const APPLICATIONS = {
  voip: OPUS_CTL.APPLICATION_VOIP,
  audio: OPUS_CTL.APPLICATION_AUDIO,
  lowdelay: OPUS_CTL.APPLICATION_RESTRICTED_LOWDELAY,
} as const;

/**
 * Creates an encoder for 48 kHz mono voice.
 * @throws RangeError for settings out of range (rate ≠ 48000, channels ≠ 1, bitrate, loss, complexity).
 * @throws NativeModuleLoadError when `@discordjs/opus` cannot be loaded.
 */
export function createOpusEncoder(options: OpusEncoderOptions = {}): OpusEncoder {
  const sampleRate = options.sampleRate ?? OPUS_SAMPLE_RATE;
  const channels = options.channels ?? 1;
  if (sampleRate !== OPUS_SAMPLE_RATE)
    throw new RangeError(`Opus sampleRate must be 48000, got ${sampleRate}`);
  if (channels !== 1) throw new RangeError(`Opus channels must be 1 (mono), got ${channels}`);
  if (options.frameMs !== undefined && options.frameMs !== 10 && options.frameMs !== 20) {
    throw new RangeError(`Opus frameMs must be 10 or 20, got ${String(options.frameMs)}`);
  }
  const settings = {
    sampleRate: OPUS_SAMPLE_RATE as 48000,
    channels: 1 as const,
    bitrate: options.bitrate ?? 32_000,
    fec: options.fec ?? false,
    dtx: options.dtx ?? false,
    expectedLossPercent: options.expectedLossPercent ?? 0,
    application: options.application ?? 'voip',
    ...(options.frameMs !== undefined ? { frameMs: options.frameMs } : {}),
    ...(options.complexity !== undefined ? { complexity: options.complexity } : {}),
  };
  checkInt('bitrate (bits/s)', settings.bitrate, 6000, 510_000);
  checkInt('expectedLossPercent', settings.expectedLossPercent, 0, 100);
  if (options.complexity !== undefined) checkInt('complexity', options.complexity, 0, 10);
  if (!(settings.application in APPLICATIONS))
    throw new RangeError(`Opus application unknown: ${settings.application}`);

  const { OpusEncoder: Native } = load();
  const native = new Native(OPUS_SAMPLE_RATE, 1);
  // The application can only change before the first frame is encoded.
  native.applyEncoderCTL(OPUS_CTL.SET_APPLICATION, APPLICATIONS[settings.application]);
  native.applyEncoderCTL(OPUS_CTL.SET_SIGNAL, OPUS_CTL.SIGNAL_VOICE);
  native.applyEncoderCTL(OPUS_CTL.SET_BITRATE, settings.bitrate);
  native.applyEncoderCTL(OPUS_CTL.SET_INBAND_FEC, settings.fec ? 1 : 0);
  native.applyEncoderCTL(OPUS_CTL.SET_PACKET_LOSS_PERC, settings.expectedLossPercent);
  native.applyEncoderCTL(OPUS_CTL.SET_DTX, settings.dtx ? 1 : 0);
  if (options.complexity !== undefined)
    native.applyEncoderCTL(OPUS_CTL.SET_COMPLEXITY, options.complexity);

  const accepted = options.frameMs ? [options.frameMs * 48] : [SAMPLES_10MS, SAMPLES_20MS];
  return {
    settings,
    encode(frame) {
      if (!(frame instanceof Int16Array))
        throw new TypeError('Opus frame must be an Int16Array of 48 kHz mono samples');
      if (!accepted.includes(frame.length)) {
        throw new RangeError(
          `Opus frame must be ${accepted.join(' or ')} samples (${accepted.map((n) => n / 48).join(' or ')} ms at 48 kHz mono), got ${frame.length}`,
        );
      }
      return native.encode(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength));
    },
    setBitrate(bitsPerSecond) {
      checkInt('bitrate (bits/s)', bitsPerSecond, 6000, 510_000);
      native.applyEncoderCTL(OPUS_CTL.SET_BITRATE, bitsPerSecond);
      settings.bitrate = bitsPerSecond;
    },
    setExpectedLossPercent(percent) {
      checkInt('expectedLossPercent', percent, 0, 100);
      native.applyEncoderCTL(OPUS_CTL.SET_PACKET_LOSS_PERC, percent);
      settings.expectedLossPercent = percent;
    },
  };
}

/** An Opus decoder for one stream (it keeps state between packets). */
export interface OpusDecoder {
  /**
   * Decodes one packet.
   * @param packet one Opus packet (RFC 6716 §3), non-empty.
   * @returns 48 kHz mono PCM of the packet's duration (480 samples for 10 ms, 960 for 20 ms, up to 5760).
   * @throws RangeError for an empty packet (this binding cannot conceal a single frame, see the module doc).
   * @throws Error for a packet libopus rejects ("corrupted stream", "invalid packet").
   */
  decode(packet: Buffer): Int16Array;
}

/**
 * Creates a decoder for 48 kHz mono.
 * @throws NativeModuleLoadError when `@discordjs/opus` cannot be loaded.
 */
export function createOpusDecoder(): OpusDecoder {
  const { OpusEncoder: Native } = load();
  const native = new Native(OPUS_SAMPLE_RATE, 1);
  return {
    decode(packet) {
      if (!Buffer.isBuffer(packet)) throw new TypeError('Opus packet must be a Buffer');
      if (packet.length === 0)
        throw new RangeError('Opus packet is empty (a lost packet is concealed by the caller)');
      let pcm: Buffer;
      try {
        pcm = native.decode(packet);
      } catch (err) {
        throw new Error(`Opus packet could not be decoded: ${(err as Error).message}`, {
          cause: err,
        });
      }
      const samples = pcm.length / 2;
      if (samples > MAX_DECODED_SAMPLES)
        throw new Error(`Opus decoder returned ${samples} samples`);
      // A copy of our own: aligned, and not shared with a Buffer pool.
      return new Int16Array(pcm.buffer.slice(pcm.byteOffset, pcm.byteOffset + pcm.length));
    },
  };
}
