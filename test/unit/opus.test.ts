import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOpusDecoder, createOpusEncoder, type OpusEncoderOptions } from '../../native/opus';
import { makeTempDir, removeTempDir } from '../harness/process';
import { readWav, renderSpeech, sineWave, whiteNoise } from '../harness/speech';

let dir: string;
let speech: Int16Array;

beforeAll(async () => {
  dir = makeTempDir('opus-test');
  const wav = join(dir, 'speech.wav');
  await renderSpeech('The quick brown fox jumps over the lazy dog, then calls Bob back.', wav);
  speech = readWav(wav).samples;
});
afterAll(() => removeTempDir(dir));

/** Splits PCM into whole frames of `size` samples (the tail is dropped). */
function frames(pcm: Int16Array, size: number): Int16Array[] {
  const out: Int16Array[] = [];
  for (let i = 0; i + size <= pcm.length; i += size) out.push(pcm.slice(i, i + size));
  return out;
}

/** Encodes then decodes `pcm` frame by frame; returns the packets and the decoded PCM. */
function roundTrip(pcm: Int16Array, options: OpusEncoderOptions & { frameMs: 10 | 20 }) {
  const encoder = createOpusEncoder(options);
  const decoder = createOpusDecoder();
  const packets = frames(pcm, options.frameMs * 48).map((f) => encoder.encode(f));
  const decodedFrames = packets.map((p) => decoder.decode(p));
  const decoded = new Int16Array(decodedFrames.reduce((n, f) => n + f.length, 0));
  let offset = 0;
  for (const f of decodedFrames) {
    decoded.set(f, offset);
    offset += f.length;
  }
  return { packets, decoded, decodedFrames };
}

/**
 * Best normalised cross-correlation of `decoded` against `original` over lags
 * 0–`maxLag` samples (Opus delays the signal by its look-ahead, 6.5 ms = 312
 * samples, RFC 6716 §4.5), and the SNR (dB) at that lag.
 */
function alignment(original: Int16Array, decoded: Int16Array, maxLag = 1000) {
  let best = { lag: 0, correlation: -1, snrDb: -Infinity };
  for (let lag = 0; lag <= maxLag; lag++) {
    const n = Math.min(original.length, decoded.length - lag);
    let xy = 0;
    let xx = 0;
    let yy = 0;
    for (let i = 0; i < n; i++) {
      const x = original[i]!;
      const y = decoded[i + lag]!;
      xy += x * y;
      xx += x * x;
      yy += y * y;
    }
    const correlation = xy / Math.sqrt(xx * yy || 1);
    if (correlation > best.correlation) {
      let noise = 0;
      for (let i = 0; i < n; i++) noise += (original[i]! - decoded[i + lag]!) ** 2;
      best = { lag, correlation, snrDb: 10 * Math.log10(xx / (noise || 1)) };
    }
  }
  return best;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('native/opus on real audio', () => {
  it('round-trips a 440 Hz tone in 20 ms frames with high fidelity after the codec delay', () => {
    const tone = sineWave(1, 440, 0.5);
    const { decoded, decodedFrames } = roundTrip(tone, { frameMs: 20, bitrate: 32_000 });
    expect(decodedFrames.every((f) => f.length === 960)).toBe(true);
    const best = alignment(tone, decoded);
    expect(best.lag).toBeGreaterThan(100);
    expect(best.lag).toBeLessThan(700);
    expect(best.correlation).toBeGreaterThan(0.98);
    expect(best.snrDb).toBeGreaterThan(12);
  });

  it('round-trips espeak speech in 10 ms frames (correlation > 0.9 at 32 kb/s)', () => {
    const { decoded, decodedFrames } = roundTrip(speech, { frameMs: 10, bitrate: 32_000 });
    expect(decodedFrames.every((f) => f.length === 480)).toBe(true);
    const best = alignment(speech, decoded);
    expect(best.correlation).toBeGreaterThan(0.9);
  });

  it('refuses frames that are not 10 or 20 ms of 48 kHz mono Int16', () => {
    const encoder = createOpusEncoder({ bitrate: 24_000 });
    expect(() => encoder.encode(new Int16Array(479))).toThrow(RangeError);
    expect(() => encoder.encode(new Int16Array(441))).toThrow(/480 or 960 samples/);
    expect(() => encoder.encode(new Float32Array(960) as unknown as Int16Array)).toThrow(TypeError);
    expect(encoder.encode(new Int16Array(480)).length).toBeGreaterThan(0);
    expect(encoder.encode(new Int16Array(960)).length).toBeGreaterThan(0);
    const only20 = createOpusEncoder({ frameMs: 20 });
    expect(() => only20.encode(new Int16Array(480))).toThrow(/960 samples \(20 ms/);
  });

  it('refuses settings out of range', () => {
    expect(() => createOpusEncoder({ bitrate: 1000 })).toThrow(RangeError);
    expect(() => createOpusEncoder({ expectedLossPercent: 150 })).toThrow(RangeError);
    expect(() => createOpusEncoder({ sampleRate: 44100 as 48000 })).toThrow(/48000/);
    expect(() => createOpusEncoder({ channels: 2 as 1 })).toThrow(/mono/);
    expect(() => createOpusEncoder().setBitrate(600_000)).toThrow(RangeError);
  });

  it('makes bigger packets at a higher bitrate, and follows setBitrate mid-stream', () => {
    const size = (bitrate: number) =>
      mean(roundTrip(speech, { frameMs: 20, bitrate }).packets.map((p) => p.length));
    const low = size(12_000);
    const high = size(64_000);
    // 12 kb/s ≈ 30 bytes per 20 ms, 64 kb/s ≈ 160 bytes (VBR: speech pauses are smaller).
    expect(low).toBeLessThan(40);
    expect(high).toBeGreaterThan(3 * low);

    const encoder = createOpusEncoder({ frameMs: 20, bitrate: 12_000 });
    const noise = frames(whiteNoise(1.2, 0.3), 960);
    const before = mean(noise.slice(5, 25).map((f) => encoder.encode(f).length));
    encoder.setBitrate(96_000);
    expect(encoder.settings.bitrate).toBe(96_000);
    const after = mean(noise.slice(30, 60).map((f) => encoder.encode(f).length));
    expect(after).toBeGreaterThan(4 * before);
  });

  it('codes silence as ≤ 2-byte packets with DTX, and never without it', () => {
    const silence = frames(new Int16Array(48000 * 2), 960);
    const sizes = (dtx: boolean) => {
      const encoder = createOpusEncoder({ frameMs: 20, bitrate: 32_000, dtx });
      return silence.map((f) => encoder.encode(f).length).slice(20); // after DTX has settled (≥ 200 ms)
    };
    const withDtx = sizes(true);
    const withoutDtx = sizes(false);
    expect(withDtx.filter((n) => n <= 2).length / withDtx.length).toBeGreaterThan(0.8);
    expect(withoutDtx.every((n) => n > 2)).toBe(true);
    // A DTX packet still decodes (to silence / comfort noise of one frame).
    const decoder = createOpusDecoder();
    const encoder = createOpusEncoder({ frameMs: 20, dtx: true });
    const packets = silence.map((f) => encoder.encode(f));
    const pcm = decoder.decode(packets.find((p) => p.length <= 2)!);
    expect(pcm.length % 480).toBe(0);
  });

  it('adds in-band FEC (LBRR) to the bitstream only when loss is expected', () => {
    // libopus codes LBRR frames only when FEC is on AND the expected loss is
    // > 0 (silk/control_codec.c); it spends them inside the same bitrate. So the
    // packets must change with FEC at 30 % loss and be identical at 0 %.
    const stream = (fec: boolean, expectedLossPercent: number) =>
      Buffer.concat(
        roundTrip(speech, { frameMs: 20, bitrate: 32_000, fec, expectedLossPercent }).packets,
      );
    expect(stream(true, 0).equals(stream(false, 0))).toBe(true);
    const withFec = stream(true, 30);
    const without = stream(false, 30);
    expect(withFec.equals(without)).toBe(false);
    // Both stay within the 32 kb/s budget (± VBR slack).
    const budget = (32_000 / 8) * (speech.length / 48_000);
    expect(withFec.length).toBeLessThan(budget * 1.2);
    expect(without.length).toBeLessThan(budget * 1.2);
  });

  it('decoder refuses empty and corrupt packets without breaking the stream', () => {
    const decoder = createOpusDecoder();
    expect(() => decoder.decode(Buffer.alloc(0))).toThrow(RangeError);
    // TOC byte 0xFF: code 3 (arbitrary frame count) with no frame-count byte → invalid packet.
    expect(() => decoder.decode(Buffer.from([0xff]))).toThrow(/could not be decoded/);
    const encoder = createOpusEncoder({ frameMs: 20 });
    expect(decoder.decode(encoder.encode(sineWave(0.02, 440))).length).toBe(960);
  });
});
