/**
 * Parley's libopus decoder addon (native/opus/addon) on real Opus streams:
 * espeak-ng speech, encoded by the app's own encoder (@discordjs/opus, VOIP,
 * in-band FEC on, 10–20 % expected loss), decoded with known losses.
 * The FEC-vs-PLC numbers printed here are the ones in docs/opus-decoder.md.
 */
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeModuleLoadError } from '../../native/load';
import {
  createOpusDecoder,
  createOpusEncoder,
  loadOpusDecoderAddon,
  opusDecoderAddonPaths,
  opusDecoderInfo,
  type OpusEncoderOptions,
} from '../../native/opus';
import { makeTempDir, removeTempDir } from '../harness/process';
import { readWav, renderSpeech } from '../harness/speech';

/** @discordjs/opus's own decoder, the reference for lossless decoding. */
interface DiscordOpus {
  decode(packet: Buffer): Buffer;
}
const DiscordOpusEncoder = (
  createRequire(import.meta.url)('@discordjs/opus') as {
    OpusEncoder: new (rate: number, channels: number) => DiscordOpus;
  }
).OpusEncoder;

let dir: string;
let speech: Int16Array;

beforeAll(async () => {
  dir = makeTempDir('opus-decoder-test');
  const wav = join(dir, 'speech.wav');
  // ≈ 9 s of speech with pauses (renderSpeech: espeak-ng -w, then sox -r 48000 -c 1 -b 16).
  await renderSpeech(
    'Hello Alice, this is Bob calling about the quarterly budget. Can you hear me clearly? ' +
      'The weather is lovely today, and the meeting moved to Thursday afternoon at three.',
    wav,
  );
  speech = readWav(wav).samples;
});
afterAll(() => removeTempDir(dir));

type Stream = OpusEncoderOptions & { frameMs: 10 | 20 };
/** What the call path uses with FEC: VOIP, 32 kb/s, FEC on, 15 % (20 ms) or 20 % (10 ms) expected loss. */
const FEC_20MS: Stream = { frameMs: 20, bitrate: 32_000, fec: true, expectedLossPercent: 15 };
const FEC_10MS: Stream = { frameMs: 10, bitrate: 32_000, fec: true, expectedLossPercent: 20 };

/** Encodes whole frames of `pcm` (the tail is dropped) with a fresh encoder. */
function encode(pcm: Int16Array, options: Stream): Buffer[] {
  const size = options.frameMs * 48;
  const encoder = createOpusEncoder({ application: 'voip', ...options });
  const packets: Buffer[] = [];
  for (let i = 0; i + size <= pcm.length; i += size)
    packets.push(encoder.encode(pcm.slice(i, i + size)));
  return packets;
}

function concat(frames: readonly Int16Array[]): Int16Array {
  const out = new Int16Array(frames.reduce((n, f) => n + f.length, 0));
  let offset = 0;
  for (const f of frames) {
    out.set(f, offset);
    offset += f.length;
  }
  return out;
}

/** SNR of `x` against the reference `ref`, dB (identical → +Infinity is clamped at 150). */
function snrDb(ref: Int16Array, x: Int16Array): number {
  let signal = 0;
  let noise = 0;
  for (let i = 0; i < ref.length; i++) {
    signal += ref[i]! ** 2;
    noise += (ref[i]! - x[i]!) ** 2;
  }
  return Math.min(150, 10 * Math.log10((signal || 1) / (noise || 1e-15)));
}

/** Normalised correlation of two equal-length signals, −1…1. */
function correlation(a: Int16Array, b: Int16Array): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! ** 2;
    bb += b[i]! ** 2;
  }
  return ab / Math.sqrt(aa * bb || 1);
}

function rms(x: Int16Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s / x.length);
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Deterministic pick of `n` items (a small LCG, so every run tests the same losses). */
function pick<T>(items: readonly T[], n: number, seed = 12345): T[] {
  const pool = [...items];
  const out: T[] = [];
  let state = seed;
  while (out.length < n && pool.length > 0) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    out.push(pool.splice(state % pool.length, 1)[0]!);
  }
  return out;
}

/**
 * Loses packet `k` (and nothing else) and returns the lost frame as a fresh
 * decoder recovers it: from the FEC of packet k + 1, or by PLC.
 */
function recoverLost(packets: readonly Buffer[], k: number, size: number) {
  const fecDecoder = createOpusDecoder();
  const plcDecoder = createOpusDecoder();
  for (let i = 0; i < k; i++) {
    fecDecoder.decode(packets[i]!);
    plcDecoder.decode(packets[i]!);
  }
  return { fec: fecDecoder.decodeFec(packets[k + 1]!, size), plc: plcDecoder.conceal(size) };
}

/** Best lag (0–`maxLag` samples) of `decoded` against `original` over `[from, from + n)`. */
function bestLag(original: Int16Array, decoded: Int16Array, from: number, n: number, maxLag = 800) {
  let best = { lag: 0, correlation: -1 };
  for (let lag = 0; lag <= maxLag; lag++) {
    const c = correlation(
      original.subarray(from, from + n),
      decoded.subarray(from + lag, from + lag + n),
    );
    if (c > best.correlation) best = { lag, correlation: c };
  }
  return best;
}

describe('native/opus decoder (libopus addon) on real speech', () => {
  it('reports the libopus it runs on', () => {
    const info = opusDecoderInfo();
    console.log(
      `opus decoder: ${info.libopus}, packetHasFec via ${info.libopusHasLbrr ? 'opus_packet_has_lbrr' : 'own LBRR parser'}`,
    );
    expect(info.libopus).toMatch(/^libopus \d+\.\d+/);
  });

  it.each([FEC_20MS, FEC_10MS])(
    'decodes a lossless $frameMs ms stream like @discordjs/opus does (rounding differences ≤ 2 LSB)',
    (options) => {
      const packets = encode(speech, options);
      const decoder = createOpusDecoder();
      const reference = new DiscordOpusEncoder(48000, 1);
      let maxDiff = 0;
      for (const packet of packets) {
        const ours = decoder.decode(packet);
        const pcm = reference.decode(packet);
        const theirs = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
        expect(ours.length).toBe(options.frameMs * 48);
        expect(decoder.packetSamples(packet)).toBe(ours.length);
        for (let i = 0; i < ours.length; i++)
          maxDiff = Math.max(maxDiff, Math.abs(ours[i]! - theirs[i]!));
      }
      // Same libopus release (1.3.1) built two ways: rounding may differ by one step.
      expect(maxDiff).toBeLessThanOrEqual(2);
    },
  );

  it('conceals one lost 20 ms frame with exactly 960 samples and stays in step', () => {
    const packets = encode(speech, FEC_20MS);
    const lossless = createOpusDecoder();
    const reference = packets.map((p) => lossless.decode(p));
    const k = 150; // in the middle of speech
    expect(rms(reference[k]!)).toBeGreaterThan(300);

    const decoder = createOpusDecoder();
    const out = packets.map((p, i) => (i === k ? decoder.conceal(960) : decoder.decode(p)));
    expect(out[k]!.length).toBe(960);
    expect(out.every((f) => f.length === 960)).toBe(true);
    const decoded = concat(out);
    expect(decoded.length).toBe(packets.length * 960);
    // Identical before the loss; after it the decoder converges back onto the lossless decode.
    expect(snrDb(concat(reference.slice(0, k)), concat(out.slice(0, k)))).toBeGreaterThan(100);
    const settled = snrDb(concat(reference.slice(k + 25)), concat(out.slice(k + 25)));
    expect(settled).toBeGreaterThan(30);
    // Against the original speech, the loss does not shift the timeline: the
    // best lag after the loss is the codec's delay, as before it (RFC 6716 §4.5: 6.5 ms = 312).
    const before = bestLag(speech, decoded, (k - 40) * 960, 24_000);
    const after = bestLag(speech, decoded, (k + 5) * 960, 24_000);
    console.log(
      `PLC of frame ${k}: SNR vs lossless after 500 ms ${settled.toFixed(1)} dB; lag before ${before.lag}, after ${after.lag} (corr ${after.correlation.toFixed(3)})`,
    );
    expect(Math.abs(after.lag - before.lag)).toBeLessThanOrEqual(2);
    expect(Math.abs(after.lag - 312)).toBeLessThan(20);
    expect(after.correlation).toBeGreaterThan(0.8);
  });

  it.each([FEC_20MS, FEC_10MS])(
    'recovers a lost $frameMs ms frame from the next packet’s FEC better than PLC (40 random single losses)',
    (options) => {
      const size = options.frameMs * 48;
      const packets = encode(speech, options);
      const lossless = createOpusDecoder();
      const reference = packets.map((p) => lossless.decode(p));
      const withFec = packets.map((p) => lossless.packetHasFec(p));
      // FEC is there for speech, not for every packet (libopus codes LBRR for active frames).
      expect(withFec.filter(Boolean).length / packets.length).toBeGreaterThan(0.5);

      const speechFrames = [...packets.keys()].filter(
        (k) => k >= 5 && k + 1 < packets.length && rms(reference[k]!) > 300 && withFec[k + 1],
      );
      const trials = pick(speechFrames, 40).map((k) => {
        const { fec, plc } = recoverLost(packets, k, size);
        expect(fec.length).toBe(size);
        expect(plc.length).toBe(size);
        const ref = reference[k]!;
        return {
          fecSnr: snrDb(ref, fec),
          plcSnr: snrDb(ref, plc),
          fecCorr: correlation(ref, fec),
          plcCorr: correlation(ref, plc),
        };
      });
      const fecSnr = mean(trials.map((t) => t.fecSnr));
      const plcSnr = mean(trials.map((t) => t.plcSnr));
      const fecCorr = mean(trials.map((t) => t.fecCorr));
      const plcCorr = mean(trials.map((t) => t.plcCorr));
      const fecWins = trials.filter((t) => t.fecSnr > t.plcSnr).length;
      console.log(
        `${options.frameMs} ms, ${options.bitrate! / 1000} kb/s, loss ${options.expectedLossPercent} %: ` +
          `${trials.length} single losses in speech — lost frame vs lossless decode: ` +
          `FEC SNR ${fecSnr.toFixed(1)} dB, corr ${fecCorr.toFixed(2)}; PLC SNR ${plcSnr.toFixed(1)} dB, corr ${plcCorr.toFixed(2)}; FEC better in ${fecWins}/${trials.length}`,
      );
      expect(trials.length).toBe(40);
      expect(fecSnr).toBeGreaterThan(plcSnr + 4);
      expect(fecCorr).toBeGreaterThan(plcCorr + 0.15);
      expect(fecWins / trials.length).toBeGreaterThan(0.75);

      // packetHasFec agrees with the decoder: where the next packet has no LBRR,
      // decodeFec is PLC — identical to conceal() when the next packet has the
      // same mode and bandwidth as the last one decoded (on a bandwidth switch,
      // libopus conceals the CELT band with the next packet's bandwidth instead).
      const config = (k: number) => packets[k]![0]! >> 3;
      const noFec = [...packets.keys()].filter(
        (k) =>
          k >= 5 && k + 1 < packets.length && !withFec[k + 1] && config(k - 1) === config(k + 1),
      );
      for (const k of pick(noFec, 5)) {
        const { fec, plc } = recoverLost(packets, k, size);
        expect(snrDb(plc, fec)).toBeGreaterThan(60);
      }
    },
  );

  it('without FEC in the encoder, packetHasFec is false and decodeFec falls back to PLC', () => {
    const packets = encode(speech, { ...FEC_20MS, fec: false });
    const decoder = createOpusDecoder();
    const reference = packets.map((p) => decoder.decode(p));
    expect(packets.some((p) => decoder.packetHasFec(p))).toBe(false);
    const speechFrames = [...packets.keys()].filter(
      (k) => k >= 5 && k + 1 < packets.length && rms(reference[k]!) > 300,
    );
    const agreement = pick(speechFrames, 10).map((k) => {
      const { fec, plc } = recoverLost(packets, k, 960);
      return snrDb(plc, fec);
    });
    console.log(
      `FEC off: decodeFec vs conceal, SNR ${Math.min(...agreement).toFixed(0)}–${Math.max(...agreement).toFixed(0)} dB (150 = identical)`,
    );
    expect(Math.min(...agreement)).toBeGreaterThan(40);
  });

  it('rejects empty, garbage and badly sized input with clear errors and keeps decoding', () => {
    const packets = encode(speech.subarray(0, 48_000), FEC_20MS);
    const decoder = createOpusDecoder();
    decoder.decode(packets[0]!);

    expect(() => decoder.decode(Buffer.alloc(0))).toThrow(RangeError);
    expect(() => decoder.decode(new Uint8Array(0))).toThrow(/empty.*conceal/);
    expect(() => decoder.decodeFec(Buffer.alloc(0), 960)).toThrow(RangeError);
    expect(() => decoder.packetSamples(Buffer.alloc(0))).toThrow(RangeError);
    // TOC code 3 (RFC 6716 §3.2.5) with no frame-count byte: libopus's "corrupted stream".
    const corrupt = Buffer.from([0x0b]);
    for (const call of [
      () => decoder.decode(corrupt),
      () => decoder.decodeFec(corrupt, 960),
      () => decoder.packetSamples(corrupt),
      () => decoder.packetHasFec(corrupt),
    ]) {
      expect(call).toThrow(/corrupted stream/);
      try {
        call();
      } catch (err) {
        expect((err as { code?: string }).code).toBe('OPUS_INVALID_PACKET');
      }
    }
    expect(() => decoder.decode(Buffer.from([0x03, 0x00]))).toThrow(
      /could not be decoded: corrupted stream/,
    );
    for (const bad of [0, -960, 100, 959, 960.5, 6000, Number.NaN, Infinity]) {
      expect(() => decoder.conceal(bad)).toThrow(/multiple of 120 samples \(2\.5 ms/);
      expect(() => decoder.decodeFec(packets[1]!, bad)).toThrow(RangeError);
    }
    expect(() => decoder.conceal('960' as unknown as number)).toThrow(TypeError);
    expect(() => decoder.decode('packet' as unknown as Buffer)).toThrow(TypeError);
    expect(() => decoder.decode(new Int16Array(10) as unknown as Buffer)).toThrow(
      /Buffer or Uint8Array/,
    );

    // Random bytes either decode to a whole packet's worth of samples or fail with libopus's text.
    let state = 7;
    for (let n = 0; n < 200; n++) {
      const garbage = Buffer.alloc(1 + (n % 60));
      for (let i = 0; i < garbage.length; i++) {
        state = (Math.imul(state, 1103515245) + 12345) >>> 0;
        garbage[i] = state >>> 24;
      }
      try {
        expect(decoder.decode(garbage).length).toBe(decoder.packetSamples(garbage));
      } catch (err) {
        expect((err as Error).message).toMatch(
          /^Opus packet could not be decoded: (corrupted stream|invalid argument)/,
        );
      }
    }

    // Still a working decoder: after a reset it decodes the stream exactly like a fresh one.
    decoder.reset();
    const fresh = createOpusDecoder();
    for (const p of packets) expect(decoder.decode(p)).toEqual(fresh.decode(p));
    expect(decoder.conceal(480).length).toBe(480);
  });

  it('decodes to interleaved stereo when asked for two channels', () => {
    const packets = encode(speech.subarray(0, 48_000), FEC_20MS);
    const mono = createOpusDecoder();
    const stereo = createOpusDecoder({ channels: 2 });
    expect(stereo.channels).toBe(2);
    const m = mono.decode(packets[10]!);
    const s = stereo.decode(packets[10]!);
    expect(s.length).toBe(2 * m.length);
    expect(stereo.conceal(960).length).toBe(1920);
    expect(() => createOpusDecoder({ channels: 3 as 1 })).toThrow(RangeError);
    expect(() => createOpusDecoder({ sampleRate: 44100 as 48000 })).toThrow(/48000/);
  });

  it('says how to build the addon when it is missing, and names a missing shared library', () => {
    expect(opusDecoderAddonPaths().length).toBeGreaterThan(0);
    expect(() => loadOpusDecoderAddon([join(dir, 'nope.node')])).toThrow(NativeModuleLoadError);
    expect(() => loadOpusDecoderAddon([join(dir, 'nope.node')])).toThrow(
      /not built.*run scripts\/setup\.sh/,
    );
    // The same addon with its libopus dependency renamed (same length) to a soname that does not exist.
    const built = opusDecoderAddonPaths().find((p) => {
      try {
        readFileSync(p);
        return true;
      } catch {
        return false;
      }
    })!;
    const patched = join(dir, 'patched.node');
    copyFileSync(built, patched);
    const bytes = readFileSync(patched);
    const at = bytes.indexOf('libopus.so.0\0');
    expect(at).toBeGreaterThan(0);
    bytes.write('libopuz.so.0', at, 'latin1');
    writeFileSync(patched, bytes);
    let error: unknown;
    try {
      loadOpusDecoderAddon([patched]);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(NativeModuleLoadError);
    expect((error as NativeModuleLoadError).missingLibrary).toBe('libopuz.so.0');
    expect((error as Error).message).toMatch(
      /^libopuz\.so\.0 missing: install .*Opus voice decoding/,
    );
  });
});
