/**
 * Real test audio: speech rendered by espeak-ng, white noise, tones and
 * silence, as 48 kHz mono signed 16-bit WAV files (the pipeline's format), and
 * a minimal WAV reader/writer for canonical PCM files (the ones sox, paplay
 * and parecord produce).
 */
import { dbfs } from '../../main/media/analysis';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, removeTempDir, run } from './process';

/** Sample rate of every file this module writes (Hz). */
export const SPEECH_RATE = 48000;

/** PCM samples of a WAV file. */
export interface WavData {
  /** Hz */
  sampleRate: number;
  /** 1 = mono; samples are interleaved when > 1 */
  channels: number;
  /** signed 16-bit samples, interleaved, `frames × channels` long */
  samples: Int16Array;
}

/**
 * Renders `text` with espeak-ng and converts it with sox to a 48 kHz mono
 * 16-bit WAV at `outPath` (espeak-ng itself writes 22.05 kHz).
 * `voice` is an espeak-ng voice name (default `en-us`; `espeak-ng --voices` lists them).
 * Typical length: ≈ 70 ms per character at the default speed.
 * @throws Error when espeak-ng or sox fail (unknown voice, unwritable path).
 */
export async function renderSpeech(text: string, outPath: string): Promise<void>;
export async function renderSpeech(text: string, voice: string, outPath: string): Promise<void>;
export async function renderSpeech(
  text: string,
  voiceOrPath: string,
  maybePath?: string,
): Promise<void> {
  const voice = maybePath === undefined ? 'en-us' : voiceOrPath;
  const outPath = maybePath ?? voiceOrPath;
  const tmp = makeTempDir('speech');
  try {
    const raw = join(tmp, 'espeak.wav');
    await run('espeak-ng', ['-v', voice, '-w', raw, '--', text]);
    // -R: repeatable dither (sox otherwise seeds its dither randomly, and the same
    // sentence came out different by an LSB here and there from run to run).
    await run('sox', [
      '-R',
      raw,
      '-r',
      String(SPEECH_RATE),
      '-c',
      '1',
      '-b',
      '16',
      '-e',
      'signed-integer',
      outPath,
    ]);
  } finally {
    removeTempDir(tmp);
  }
}

/**
 * Reads a canonical PCM WAV (format 1 or WAVE_FORMAT_EXTENSIBLE with PCM,
 * 16 bits per sample). A data chunk whose declared size runs past the end of
 * the file (a recording that was killed) is read up to the end of the file.
 * @throws Error for anything else (not RIFF/WAVE, not 16-bit PCM, no data chunk).
 */
export function readWav(path: string): WavData {
  const buf = readFileSync(path);
  if (buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') {
    throw new Error(`${path}: not a RIFF/WAVE file`);
  }
  let offset = 12;
  let sampleRate = 0;
  let channels = 0;
  while (offset + 8 <= buf.length) {
    const id = buf.toString('ascii', offset, offset + 4);
    const size = buf.readUInt32LE(offset + 4);
    const body = offset + 8;
    if (id === 'fmt ') {
      const format = buf.readUInt16LE(body);
      channels = buf.readUInt16LE(body + 2);
      sampleRate = buf.readUInt32LE(body + 4);
      const bits = buf.readUInt16LE(body + 14);
      const pcm = format === 1 || (format === 0xfffe && buf.readUInt16LE(body + 24) === 1);
      if (!pcm || bits !== 16)
        throw new Error(`${path}: only 16-bit PCM is supported (format ${format}, ${bits} bits)`);
    } else if (id === 'data') {
      if (!channels) throw new Error(`${path}: data chunk before fmt chunk`);
      const end = Math.min(buf.length, body + size);
      const frames = Math.floor((end - body) / (2 * channels));
      const samples = new Int16Array(frames * channels);
      for (let i = 0; i < samples.length; i++) samples[i] = buf.readInt16LE(body + 2 * i);
      return { sampleRate, channels, samples };
    }
    offset = body + size + (size & 1);
  }
  throw new Error(`${path}: no data chunk`);
}

/**
 * Writes interleaved signed 16-bit samples as a canonical PCM WAV.
 * @param sampleRate Hz (default 48000)
 * @param channels interleaved channel count (default 1)
 */
export function writeWav(
  path: string,
  samples: Int16Array,
  sampleRate = SPEECH_RATE,
  channels = 1,
): void {
  const dataBytes = samples.length * 2;
  const buf = Buffer.alloc(44 + dataBytes);
  buf.write('RIFF', 0, 'ascii');
  buf.writeUInt32LE(36 + dataBytes, 4);
  buf.write('WAVE', 8, 'ascii');
  buf.write('fmt ', 12, 'ascii');
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20);
  buf.writeUInt16LE(channels, 22);
  buf.writeUInt32LE(sampleRate, 24);
  buf.writeUInt32LE(sampleRate * channels * 2, 28);
  buf.writeUInt16LE(channels * 2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write('data', 36, 'ascii');
  buf.writeUInt32LE(dataBytes, 40);
  for (let i = 0; i < samples.length; i++) buf.writeInt16LE(samples[i]!, 44 + 2 * i);
  writeFileSync(path, buf);
}

/**
 * Uniform white noise, 48 kHz mono.
 * @param seconds length (s)
 * @param amplitude peak, as a fraction of full scale (default 0.3)
 * @param seed deterministic PRNG seed (default 1)
 */
export function whiteNoise(seconds: number, amplitude = 0.3, seed = 1): Int16Array {
  const out = new Int16Array(Math.round(seconds * SPEECH_RATE));
  let state = seed >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    // xorshift32
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    out[i] = Math.round((state / 0xffffffff - 0.5) * 2 * amplitude * 32767);
  }
  return out;
}

/**
 * A sine tone, 48 kHz mono.
 * @param seconds length (s)
 * @param frequency Hz
 * @param amplitude peak, as a fraction of full scale (default 0.5)
 */
export function sineWave(seconds: number, frequency: number, amplitude = 0.5): Int16Array {
  const out = new Int16Array(Math.round(seconds * SPEECH_RATE));
  for (let i = 0; i < out.length; i++) {
    out[i] = Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * frequency * i) / SPEECH_RATE));
  }
  return out;
}

/** Writes `seconds` of white noise (see {@link whiteNoise}) to a 48 kHz mono WAV. */
export function writeNoiseWav(path: string, seconds: number, amplitude = 0.3, seed = 1): void {
  writeWav(path, whiteNoise(seconds, amplitude, seed));
}

/** Writes `seconds` of digital silence to a 48 kHz mono WAV. */
export function writeSilenceWav(path: string, seconds: number): void {
  writeWav(path, new Int16Array(Math.round(seconds * SPEECH_RATE)));
}

/**
 * One channel of interleaved samples.
 * @param index 0-based channel index (note: `PROBE_CHANNEL` in pulse.ts counts from 1, like sox)
 */
export function channel(data: WavData, index: number): Int16Array {
  if (index < 0 || index >= data.channels)
    throw new Error(`channel ${index} out of range 0..${data.channels - 1}`);
  const out = new Int16Array(data.samples.length / data.channels);
  for (let i = 0; i < out.length; i++) out[i] = data.samples[i * data.channels + index]!;
  return out;
}

/** Root mean square of samples, as a fraction of full scale (0–1). 0 for an empty array. */
export function rms(samples: Int16Array): number {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (const s of samples) sum += s * s;
  return Math.sqrt(sum / samples.length) / 32768;
}

/**
 * Longest run of 10 ms windows quieter than `floorDbfs` in a 48 kHz recording
 * between `fromMs` and `toMs`: the audible gap in a steady tone, ms.
 */
export function longestSilenceMs(x: Int16Array, fromMs: number, toMs: number, floorDbfs = -45): number {
  const w = 480;
  let run = 0;
  let longest = 0;
  for (let i = Math.floor((fromMs * 48) / w) * w; i + w <= Math.min(x.length, toMs * 48); i += w) {
    run = dbfs(x, i, i + w) < floorDbfs ? run + 10 : 0;
    longest = Math.max(longest, run);
  }
  return longest;
}
