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
  execFileSync('sox', [wav, '-r', '48000', '-c', '1', '-b', '16', '-e', 'signed-integer', '-L', '-t', 'raw', raw]);
  const bytes = readFileSync(raw);
  return new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

/** Encodes and decodes through Opus in 20 ms frames; output aligned to input (lookahead removed). */
function throughOpus(pcm: Int16Array): Int16Array {
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
    out.set(new Int16Array(decoded.buffer.slice(decoded.byteOffset, decoded.byteOffset + decoded.length)), f * FRAME);
  }
  return out.slice(OPUS_LOOKAHEAD, OPUS_LOOKAHEAD + pcm.length);
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
