/**
 * Recorded-style noise made with sox and espeak-ng, 48 kHz mono 16-bit WAV,
 * for measuring noise suppression (docs/audio.md):
 * - `fan`: brown noise (a fan or air conditioning: stationary, low-frequency heavy);
 * - `keyboard`: 6 ms white-noise clicks with a fast decay, every 126 ms (typing);
 * - `babble`: four espeak-ng voices in different languages talking at once (a café).
 * And {@link mixAtSnr}, which adds noise to speech at a chosen SNR.
 */
import { join } from 'node:path';
import { activeLevelDbfs, speechMask } from '../../main/media/voice-metrics';
import { run } from './process';
import { readWav, renderSpeech } from './speech';

export type NoiseKind = 'fan' | 'keyboard' | 'babble';
export const NOISE_KINDS: readonly NoiseKind[] = ['fan', 'keyboard', 'babble'];

const FORMAT = ['-r', '48000', '-c', '1', '-b', '16', '-e', 'signed-integer'];

const BABBLE = [
  ['en-gb', 'I think we should go to the market later today and buy some fruit.'],
  ['en-us+f3', 'The meeting was moved to Thursday afternoon because of the holiday.'],
  ['de', 'Wir treffen uns morgen früh am Bahnhof vor dem großen Uhrturm.'],
  ['fr', 'Le petit chat dort sur le canapé pendant que la pluie tombe dehors.'],
] as const;

/**
 * Writes `seconds` of noise of `kind` to `<dir>/<kind>.wav` and returns its path.
 * @throws Error when sox or espeak-ng fail.
 */
export async function makeNoise(kind: NoiseKind, seconds: number, dir: string): Promise<string> {
  const out = join(dir, `${kind}.wav`);
  const secs = seconds.toFixed(2);
  if (kind === 'fan') {
    await run('sox', ['-n', ...FORMAT, out, 'synth', secs, 'brownnoise', 'vol', '0.3']);
  } else if (kind === 'keyboard') {
    const click = join(dir, 'click.wav');
    await run('sox', ['-n', ...FORMAT, click, 'synth', '0.006', 'whitenoise', 'fade', 'q', '0', '0.006', '0.005', 'vol', '0.6', 'pad', '0', '0.12']);
    await run('sox', [click, out, 'repeat', String(Math.ceil(seconds / 0.126)), 'trim', '0', secs]);
  } else {
    const parts: string[] = [];
    for (const [i, [voice, text]] of BABBLE.entries()) {
      const p = join(dir, `babble-${i}.wav`);
      await renderSpeech(text, voice, p);
      parts.push(p);
    }
    const once = join(dir, 'babble-once.wav');
    await run('sox', ['-m', ...parts, ...FORMAT, once]);
    const onceSeconds = readWav(once).samples.length / 48000;
    await run('sox', [once, out, 'repeat', String(Math.ceil(seconds / onceSeconds)), 'trim', '0', secs]);
  }
  return out;
}

/**
 * `speech + g·noise`, with g chosen so that the active speech level
 * (voice-metrics.ts) is `snrDb` above the noise's mean level; clipped to 16 bits.
 * The noise repeats from its start if it is shorter than the speech.
 */
export function mixAtSnr(speech: Int16Array, noise: Int16Array, snrDb: number): Int16Array {
  const speechDb = activeLevelDbfs(speech, speechMask(speech));
  let sum = 0;
  for (let i = 0; i < noise.length; i++) sum += (noise[i]! / 32768) ** 2;
  const noiseDb = 10 * Math.log10(sum / noise.length);
  const g = 10 ** ((speechDb - noiseDb - snrDb) / 20);
  const out = new Int16Array(speech.length);
  for (let i = 0; i < speech.length; i++) {
    out[i] = Math.max(-32768, Math.min(32767, Math.round(speech[i]! + g * noise[i % noise.length]!)));
  }
  return out;
}
