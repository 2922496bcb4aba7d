/**
 * main/media/analysis on real speech: sentences rendered by espeak-ng,
 * resampled to 48 kHz by sox, and passed through a real Opus encoder and
 * decoder (@discordjs/opus, 32 kb/s, VOIP, 20 ms frames) as a call would.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  SIMILARITY_THRESHOLD,
  detectOnsets,
  estimateDelayMs,
  fft,
  rms,
  speechSimilarity,
} from '../../main/media/analysis';

interface OpusCodec {
  encode(pcm: Buffer): Buffer;
  decode(packet: Buffer): Buffer;
  applyEncoderCTL(ctl: number, value: number): void;
  setBitrate(bitrate: number): void;
}
const { OpusEncoder } = createRequire(import.meta.url)('@discordjs/opus') as {
  OpusEncoder: new (rate: number, channels: number) => OpusCodec;
};

const MS = 48; // samples per ms at 48 kHz
const FRAME = 960; // 20 ms
const OPUS_SET_APPLICATION_REQUEST = 4000;
const OPUS_APPLICATION_VOIP = 2048;
/** libopus encoder lookahead at 48 kHz outside restricted-lowdelay: Fs/400 + Fs/250 (2.5 + 4 ms). */
const OPUS_LOOKAHEAD = 312;

const SENTENCE_A = 'The quick brown fox jumps over the lazy dog near the river bank.';
const SENTENCE_B = 'Please call me back when you get home tonight, thank you.';

let dir: string;
let speechA: Int16Array;
let speechB: Int16Array;

/** espeak-ng → WAV → sox → raw 16-bit 48 kHz mono. */
function say(text: string, name: string): Int16Array {
  const wav = join(dir, `${name}.wav`);
  const raw = join(dir, `${name}.raw`);
  execFileSync('espeak-ng', ['-w', wav, text]);
  execFileSync('sox', [
    wav,
    '-r',
    '48000',
    '-c',
    '1',
    '-b',
    '16',
    '-e',
    'signed-integer',
    '-L',
    '-t',
    'raw',
    raw,
  ]);
  const bytes = readFileSync(raw);
  return new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

/** Encodes and decodes through Opus in 20 ms frames; the output includes the codec's 6.5 ms lookahead. */
function throughOpusRaw(pcm: Int16Array): Int16Array {
  const codec = new OpusEncoder(48_000, 1);
  codec.applyEncoderCTL(OPUS_SET_APPLICATION_REQUEST, OPUS_APPLICATION_VOIP);
  codec.setBitrate(32_000);
  const frames = Math.ceil((pcm.length + OPUS_LOOKAHEAD) / FRAME);
  const input = new Int16Array(frames * FRAME);
  input.set(pcm);
  const out = new Int16Array(frames * FRAME);
  for (let f = 0; f < frames; f++) {
    const frame = input.slice(f * FRAME, (f + 1) * FRAME);
    const decoded = codec.decode(codec.encode(Buffer.from(frame.buffer)));
    out.set(
      new Int16Array(decoded.buffer.slice(decoded.byteOffset, decoded.byteOffset + decoded.length)),
      f * FRAME,
    );
  }
  return out;
}

/** Through Opus, output aligned to the input (lookahead removed), same length. */
function throughOpus(pcm: Int16Array): Int16Array {
  return throughOpusRaw(pcm).slice(OPUS_LOOKAHEAD, OPUS_LOOKAHEAD + pcm.length);
}

/** `delayMs` of silence, then `pcm`, then `padMs` of silence. */
function delayed(pcm: Int16Array, delayMs: number, padMs = 600): Int16Array {
  const out = new Int16Array(pcm.length + (delayMs + padMs) * MS);
  out.set(pcm, delayMs * MS);
  return out;
}

/** Deterministic white noise (xorshift32, uniform) with the given RMS re full scale. */
function whiteNoise(samples: number, rmsFs: number): Int16Array {
  let s = 0x9e3779b9;
  const out = new Int16Array(samples);
  const amp = rmsFs * Math.sqrt(3) * 32768; // uniform on [−a, a] has RMS a/√3
  for (let i = 0; i < samples; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = Math.round(((s >>> 0) / 2 ** 32 - 0.5) * 2 * amp);
  }
  return out;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'parley-analysis-'));
  speechA = say(SENTENCE_A, 'a');
  speechB = say(SENTENCE_B, 'b');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('speechSimilarity', () => {
  it('separates the same sentence through Opus from silence, noise and a different sentence', () => {
    const delay = 137;
    const cases = {
      same: delayed(throughOpus(speechA), delay),
      gap40ms: (() => {
        const r = delayed(throughOpus(speechA), delay);
        r.fill(0, (delay + 1000) * MS, (delay + 1040) * MS);
        return r;
      })(),
      silence: new Int16Array(speechA.length + (delay + 600) * MS),
      whiteNoise: delayed(throughOpus(whiteNoise(speechA.length, rms(speechA))), delay),
      otherSentence: delayed(throughOpus(speechB), delay),
    };
    const results = Object.fromEntries(
      Object.entries(cases).map(([name, received]) => [name, speechSimilarity(speechA, received)]),
    );
    console.log(
      `speechSimilarity (threshold ${SIMILARITY_THRESHOLD}):\n` +
        Object.entries(results)
          .map(
            ([name, r]) =>
              `  ${name.padEnd(14)} score ${r.score.toFixed(3)}  r ${r.correlation.toFixed(3)}  lag ${r.lagMs.toFixed(2)} ms  ${r.receivedDbfs.toFixed(1)} dBFS`,
          )
          .join('\n'),
    );
    expect(results.same!.score).toBeGreaterThan(SIMILARITY_THRESHOLD);
    expect(Math.abs(results.same!.lagMs - delay)).toBeLessThanOrEqual(5);
    expect(results.gap40ms!.score).toBeGreaterThan(SIMILARITY_THRESHOLD);
    expect(results.silence!.score).toBeLessThan(SIMILARITY_THRESHOLD);
    expect(results.whiteNoise!.score).toBeLessThan(SIMILARITY_THRESHOLD);
    expect(results.otherSentence!.score).toBeLessThan(SIMILARITY_THRESHOLD);
  });
});

describe('speechSimilarity with delay tracking', () => {
  /** The same sentence through Opus, with `stepMs` more delay from `atMs` on (a jitter buffer inserting frames there). */
  function stepped(atMs: number, stepMs: number): Int16Array {
    const coded = throughOpus(speechA);
    const out = new Int16Array(coded.length + stepMs * MS);
    out.set(coded.subarray(0, atMs * MS));
    out.set(coded.subarray(atMs * MS), (atMs + stepMs) * MS);
    return delayed(out, 120);
  }

  it('follows a 20 ms step in mid-sentence, where one delay for the whole counts every frame after it as a mismatch', () => {
    const received = stepped(1200, 20);
    const single = speechSimilarity(speechA, received);
    const tracked = speechSimilarity(speechA, received, { trackDelayMs: 40 });
    const clean = speechSimilarity(speechA, delayed(throughOpus(speechA), 120));
    console.log(`[similarity] 20 ms step: single delay ${single.score.toFixed(3)}, tracked ${tracked.score.toFixed(3)} (offsets ${tracked.tracked!.offsetsMs.join(', ')} ms); no step ${clean.score.toFixed(3)}`);
    expect(single.score).toBeLessThan(clean.score - 0.02);
    expect(tracked.score).toBeGreaterThan(clean.score - 0.01);
    expect(tracked.tracked!.offsetsMs.some((o) => o !== 0)).toBe(true);
    // Without a step nothing moves.
    const still = speechSimilarity(speechA, delayed(throughOpus(speechA), 120), { trackDelayMs: 40 });
    expect(still.tracked!.offsetsMs.every((o) => o === 0)).toBe(true);
    expect(still.score).toBeCloseTo(clean.score, 3);
  });

  it('follows a step shorter than its 10 ms hop: 7 ms cut in a pause (an echo canceller stopping), 5 ms (a playout alignment step)', () => {
    // The step lands in a pause: find one (≥ 30 ms quiet) after 1.2 s of the coded sentence.
    const coded = throughOpus(speechA);
    let at = 1200 * MS;
    for (let quiet = 0; at < coded.length && quiet < 30 * MS; at++) quiet = Math.abs(coded[at]!) < 300 ? quiet + 1 : 0;
    at -= 15 * MS;
    const clean = speechSimilarity(speechA, delayed(coded, 120), { trackDelayMs: 40 }).score;
    for (const cutMs of [7, 5]) {
      const out = new Int16Array(coded.length);
      out.set(coded.subarray(0, at));
      out.set(coded.subarray(at + cutMs * MS), at);
      const tracked = speechSimilarity(speechA, delayed(out, 120), { trackDelayMs: 40 });
      console.log(`[similarity] ${cutMs} ms cut in a pause: tracked ${tracked.score.toFixed(3)} (offsets ${tracked.tracked!.offsetsMs.join(', ')} ms); no cut ${clean.toFixed(3)}`);
      // In whole hops the blocks after the cut sat 3–5 ms off and scored 0.012 lower (0.988 for 7 ms).
      expect(tracked.score).toBeGreaterThan(clean - 0.005);
      expect(tracked.tracked!.offsetsMs.some((o) => o % 10 !== 0)).toBe(true);
    }
  });

  it('excuses no missing speech and no different sentence', () => {
    const holed = delayed(throughOpus(speechA), 120);
    holed.fill(0, (120 + 800) * MS, (120 + 1100) * MS); // 300 ms of the sentence missing
    const holedSingle = speechSimilarity(speechA, holed).score;
    const holedTracked = speechSimilarity(speechA, holed, { trackDelayMs: 40 }).score;
    const other = speechSimilarity(speechA, delayed(throughOpus(speechB), 120), { trackDelayMs: 40 }).score;
    const otherSingle = speechSimilarity(speechA, delayed(throughOpus(speechB), 120)).score;
    console.log(`[similarity] 300 ms hole: single ${holedSingle.toFixed(3)}, tracked ${holedTracked.toFixed(3)}; other sentence: single ${otherSingle.toFixed(3)}, tracked ${other.toFixed(3)}`);
    expect(holedTracked).toBeLessThan(holedSingle + 0.01);
    expect(holedTracked).toBeLessThan(0.9);
    expect(other).toBeLessThan(otherSingle + 0.05);
    expect(other).toBeLessThan(0.3);
  });
});

describe('estimateDelayMs', () => {
  it('finds the delay of a speech signal to the sample', () => {
    const delaySamples = 137 * MS + 17;
    const received = new Int16Array(speechA.length + 48_000);
    received.set(speechA, delaySamples);
    const d = estimateDelayMs(speechA, received, 1000);
    expect(d.lagSamples).toBe(delaySamples);
    expect(d.lagMs).toBeCloseTo(delaySamples / MS, 6);
    expect(d.correlation).toBeGreaterThan(0.999);
  });

  it('finds the delay of Opus-coded speech within 1 ms', () => {
    // Without removing the codec lookahead: the decoder's output is 6.5 ms late by itself.
    const codec = throughOpusRaw(speechA);
    const received = delayed(codec, 250);
    const d = estimateDelayMs(speechA, received, 1000);
    expect(Math.abs(d.lagMs - (250 + OPUS_LOOKAHEAD / MS))).toBeLessThanOrEqual(1);
    expect(d.correlation).toBeGreaterThan(0.5);
  });

  it('finds a negative delay and an inverted copy when asked', () => {
    const inverted = speechA.map((v) => -v).subarray(10 * MS);
    const d = estimateDelayMs(speechA, inverted, 50, { minLagMs: -50 });
    expect(d.lagSamples).toBe(-10 * MS);
    expect(d.correlation).toBeLessThan(-0.999);
  });
});

describe('detectOnsets', () => {
  it('finds each click once, at its first loud sample', () => {
    const signal = whiteNoise(2 * 48_000, 0.001); // −60 dBFS background
    const clicks = [100 * MS, 600 * MS + 7, 1100 * MS + 31, 1900 * MS];
    for (const at of clicks) {
      // 3 ms decaying 1 kHz burst, first sample at full amplitude: it rings above threshold.
      for (let n = 0; n < 3 * MS; n++) {
        signal[at + n] = Math.round(
          16000 * Math.exp(-n / 48) * Math.cos((2 * Math.PI * 1000 * n) / 48_000),
        );
      }
    }
    const onsets = detectOnsets(signal, { thresholdDbfs: -20, minGapMs: 200 });
    expect(onsets).toEqual(clicks.map((s) => s / MS));
  });

  it('finds nothing in quiet and merges bursts closer than minGapMs', () => {
    expect(detectOnsets(new Int16Array(48_000), { thresholdDbfs: -40, minGapMs: 100 })).toEqual([]);
    const f = new Float32Array(48_000);
    f[1000] = 0.5;
    f[1000 + 50 * MS] = 0.5; // 50 ms later: same click
    f[1000 + 200 * MS] = -0.5; // 200 ms later: a new one
    expect(detectOnsets(f, { thresholdDbfs: -10, minGapMs: 100 })).toEqual([
      1000 / MS,
      (1000 + 200 * MS) / MS,
    ]);
  });
});

describe('fft', () => {
  it('matches a direct DFT and inverts', () => {
    const n = 64;
    const x = Array.from({ length: n }, (_, i) => Math.sin(i * 0.7) + (i % 5) * 0.1);
    const re = Float64Array.from(x);
    const im = new Float64Array(n);
    fft(re, im);
    for (const k of [0, 1, 7, 31, 32, 63]) {
      let dr = 0;
      let di = 0;
      for (let t = 0; t < n; t++) {
        dr += x[t]! * Math.cos((2 * Math.PI * k * t) / n);
        di -= x[t]! * Math.sin((2 * Math.PI * k * t) / n);
      }
      expect(re[k]).toBeCloseTo(dr, 9);
      expect(im[k]).toBeCloseTo(di, 9);
    }
    fft(re, im, true);
    x.forEach((v, i) => expect(re[i]).toBeCloseTo(v, 12));
    expect(() => fft(new Float64Array(12), new Float64Array(12))).toThrow(RangeError);
  });
});
