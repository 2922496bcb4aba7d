/**
 * Opus (RFC 6716) for voice: 48 kHz mono signed 16-bit PCM in frames of 10 ms
 * (480 samples) or 20 ms (960 samples), loaded on first use.
 *
 * - Encoder: `@discordjs/opus` (libopus 1.3, statically linked). Settings go
 *   through libopus encoder CTLs (values from libopus `include/opus_defines.h`).
 * - Decoder: Parley's own N-API addon over the system libopus
 *   (`native/opus/addon`, built by `scripts/setup.sh` / `npm run build:native`),
 *   because `@discordjs/opus`'s decode cannot conceal a single lost frame (an
 *   empty packet makes libopus conceal a whole 120 ms and advances its state)
 *   and cannot decode in-band FEC (`decode_fec` is always 0). See
 *   docs/opus-decoder.md for the API, the build and measurements.
 */
import { loadNativeModule, loadOwnAddon, ownAddonPaths, type NativeModuleSpec, type OwnAddonSpec } from '../load';

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
/** Longest frame libopus decodes: 120 ms at 48 kHz, samples per channel. */
export const MAX_FRAME_SAMPLES = 5760;
/** Frame sizes for PLC and FEC are multiples of 2.5 ms: 120 samples per channel at 48 kHz. */
export const FRAME_STEP_SAMPLES = 120;

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

/** The addon's exports (native/opus/addon/opus_decoder.c). */
interface DecoderAddon {
  Decoder: new (sampleRate: number, channels: number) => NativeDecoder;
  /** `opus_get_version_string()`, e.g. "libopus 1.3.1". */
  version: string;
  /** Whether `packetHasFec` calls libopus's `opus_packet_has_lbrr` (libopus ≥ 1.5) or the addon's own parser. */
  libopusHasLbrr: boolean;
}
interface NativeDecoder {
  decode(packet: Uint8Array): Int16Array;
  conceal(samples: number): Int16Array;
  decodeFec(nextPacket: Uint8Array, samples: number): Int16Array;
  packetSamples(packet: Uint8Array): number;
  packetHasFec(packet: Uint8Array): boolean;
  reset(): void;
}

const DECODER_ADDON: OwnAddonSpec = {
  packageName: 'parley_opus (native/opus/addon)',
  purpose: 'Opus voice decoding with loss concealment and FEC',
  systemLibraries: { 'libopus.so.0': 'libopus0' },
  dir: 'opus',
  target: 'parley_opus',
  envVar: 'PARLEY_OPUS_ADDON',
  title: "Parley's Opus decoder addon",
  buildPackage: 'libopus-dev',
};

/** Where the decoder addon may be, most specific first (native/load.ts {@link ownAddonPaths}; `PARLEY_OPUS_ADDON` first). */
export function opusDecoderAddonPaths(): string[] {
  return ownAddonPaths(DECODER_ADDON, import.meta.url);
}

/**
 * Loads the decoder addon from the first of `candidates` that exists.
 * @throws NativeModuleLoadError "… not built: run scripts/setup.sh …" when none
 *   exists, or "libopus.so.0 missing: install libopus0 …" when the dynamic
 *   loader cannot find libopus.
 */
export function loadOpusDecoderAddon(candidates: readonly string[] = opusDecoderAddonPaths()): DecoderAddon {
  return loadOwnAddon<DecoderAddon>(DECODER_ADDON, candidates);
}

let decoderAddon: DecoderAddon | undefined;
function loadDecoder(): DecoderAddon {
  decoderAddon ??= loadOpusDecoderAddon();
  return decoderAddon;
}

/**
 * The libopus the decoder runs on (`opus_get_version_string()`, e.g.
 * "libopus 1.3.1") and whether `packetHasFec` uses libopus's own
 * `opus_packet_has_lbrr` (libopus ≥ 1.5) or Parley's parser of the same flag.
 * @throws NativeModuleLoadError when the addon cannot be loaded.
 */
export function opusDecoderInfo(): { libopus: string; libopusHasLbrr: boolean } {
  const addon = loadDecoder();
  return { libopus: addon.version, libopusHasLbrr: addon.libopusHasLbrr };
}

/** Decoder settings. */
export interface OpusDecoderOptions {
  /** Hz; only 48000 (the pipeline's rate). Default 48000. */
  sampleRate?: 48000;
  /** Output channels: 1 (mono, default) or 2 (interleaved stereo). Any packet decodes to either. */
  channels?: 1 | 2;
}

/**
 * An Opus decoder for one stream (it keeps state between packets). Sample
 * counts are per channel; PCM is 48 kHz signed 16-bit, interleaved when stereo
 * (a 20 ms frame = 960 samples = 960 Int16 mono, 1920 stereo). Every method
 * returns a fresh array the caller owns. Errors from libopus are `Error`s whose
 * message ends with libopus's own text (`opus_strerror`) and whose `code` is
 * the `OPUS_*` name; after one the decoder is still usable.
 */
export interface OpusDecoder {
  /** 48000 (Hz). */
  readonly sampleRate: number;
  /** 1 or 2. */
  readonly channels: 1 | 2;
  /**
   * Decodes one packet (`opus_decode`, `decode_fec = 0`).
   * @param packet one Opus packet (RFC 6716 §3), non-empty.
   * @returns exactly the packet's duration: 480 samples for 10 ms, 960 for 20 ms, up to 5760 (120 ms).
   * @throws TypeError when `packet` is not a Buffer / Uint8Array.
   * @throws RangeError for an empty packet (a lost packet is {@link conceal}ed).
   * @throws Error "Opus packet could not be decoded: corrupted stream" (code `OPUS_INVALID_PACKET`) for a packet libopus rejects.
   */
  decode(packet: Uint8Array): Int16Array;
  /**
   * Packet loss concealment (PLC) of one lost frame: `opus_decode(dec, NULL, 0, pcm, samples, 0)`.
   * Keeps the decoder in step: the next packet decodes right after it.
   * @param samples the lost frame's duration, samples per channel: a multiple of
   *   120 (2.5 ms) from 120 to 5760 — normally the stream's frame size, 480 or 960.
   * @returns exactly `samples` samples per channel.
   * @throws RangeError for any other `samples`.
   */
  conceal(samples: number): Int16Array;
  /**
   * Recovers the lost frame just before `nextPacket` from the in-band FEC
   * (LBRR, RFC 6716 §2.1.7) that `nextPacket` carries (`opus_decode` with
   * `decode_fec = 1`). Call it instead of {@link conceal} for the lost frame,
   * then {@link decode} `nextPacket` itself as usual.
   * When `nextPacket` has no FEC (see {@link packetHasFec}), is CELT-only, or
   * `samples` is shorter than its frame, libopus silently falls back to PLC
   * (the same as `conceal(samples)`); when `samples` is longer than
   * `nextPacket`'s frame, the extra leading part is concealed and only the end
   * comes from the FEC. So pass the lost frame's own size.
   * @param samples the lost frame's duration, samples per channel (multiple of 120, ≤ 5760).
   * @returns exactly `samples` samples per channel.
   * @throws TypeError / RangeError for a bad packet or size; Error for a packet libopus rejects.
   */
  decodeFec(nextPacket: Uint8Array, samples: number): Int16Array;
  /**
   * The packet's duration in samples per channel at 48 kHz (`opus_packet_get_nb_samples`), without decoding it.
   * @throws RangeError for an empty packet; Error (`OPUS_INVALID_PACKET`) for a malformed one.
   */
  packetSamples(packet: Uint8Array): number;
  /**
   * Whether the packet's first frame carries LBRR (FEC) data for the frame
   * before it: the LBRR flag of a SILK or hybrid frame (RFC 6716 §4.2.3–4.2.4);
   * CELT-only packets never do. Uses libopus's `opus_packet_has_lbrr` when the
   * installed libopus has it (≥ 1.5), else the same algorithm in the addon.
   * @throws RangeError for an empty packet; Error (`OPUS_INVALID_PACKET`) for a malformed one.
   */
  packetHasFec(packet: Uint8Array): boolean;
  /** Back to a fresh decoder's state (`OPUS_RESET_STATE`), e.g. when the stream (SSRC) changes. */
  reset(): void;
}

/**
 * Creates a decoder for 48 kHz (mono by default) on Parley's libopus addon.
 * Its memory (the libopus state, ≈ 18 KB mono, and an 11.5 KB scratch buffer per channel) is freed
 * when the object is garbage-collected.
 * @throws RangeError for settings out of range (rate ≠ 48000, channels ∉ {1, 2}).
 * @throws NativeModuleLoadError when the addon is not built or libopus is missing.
 */
export function createOpusDecoder(options: OpusDecoderOptions = {}): OpusDecoder {
  const sampleRate = options.sampleRate ?? OPUS_SAMPLE_RATE;
  const channels = options.channels ?? 1;
  if (sampleRate !== OPUS_SAMPLE_RATE)
    throw new RangeError(`Opus sampleRate must be 48000, got ${sampleRate}`);
  if (channels !== 1 && channels !== 2)
    throw new RangeError(`Opus decoder channels must be 1 or 2, got ${String(channels)}`);
  const native = new (loadDecoder().Decoder)(sampleRate, channels);
  return {
    sampleRate,
    channels,
    decode: (packet) => native.decode(packet),
    conceal: (samples) => native.conceal(samples),
    decodeFec: (nextPacket, samples) => native.decodeFec(nextPacket, samples),
    packetSamples: (packet) => native.packetSamples(packet),
    packetHasFec: (packet) => native.packetHasFec(packet),
    reset: () => native.reset(),
  };
}
