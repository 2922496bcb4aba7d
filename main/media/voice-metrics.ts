/**
 * Measurements of the voice processing chain (docs/audio.md), shared by the
 * tests and `npm run bench:audio`. Signals are 48 kHz mono PCM (analysis.ts's
 * `Pcm`); levels in dBFS as in analysis.ts (full-scale square wave = 0 dBFS).
 */
import { rms, type Pcm } from './analysis';

/** Samples per analysis frame: 10 ms at 48 kHz. */
const FRAME = 480;

/**
 * Echo return loss enhancement (ITU-T G.168 §3.4): how much weaker the echo
 * is after the canceller than before it, over the same span,
 * 10·log10(E[before²] / E[after²]), in dB. Both signals must be aligned
 * (the same span of the echo before and after processing) and hold no
 * near-end speech.
 * @throws RangeError when the spans differ in length or `before` is silent.
 */
export function erleDb(before: Pcm, after: Pcm): number {
  if (before.length !== after.length) throw new RangeError('erleDb: signals must have the same length');
  const b = rms(before);
  if (b === 0) throw new RangeError('erleDb: no echo to measure (the input is silent)');
  const a = Math.max(rms(after), 1e-7); // −140 dBFS: the floor of a cancelled-to-zero output
  return 20 * Math.log10(b / a);
}

/** Which 10 ms frames of a clean reference are speech and which are pauses. */
export interface SpeechMask {
  /** Frame indexes (10 ms each) where the clean speech is within `activeRangeDb` of its loudest frame. */
  speech: number[];
  /** Frame indexes where the clean speech is at least 50 dB below its loudest frame (pauses). */
  pause: number[];
}

/**
 * Classifies the 10 ms frames of a clean (noise-free) speech signal.
 * @param activeRangeDb a frame is speech within this many dB of the loudest frame (default 30).
 */
export function speechMask(clean: Pcm, activeRangeDb = 30): SpeechMask {
  const frames = Math.floor(clean.length / FRAME);
  const levels: number[] = [];
  for (let f = 0; f < frames; f++) levels.push(20 * Math.log10(Math.max(rms(clean, f * FRAME, (f + 1) * FRAME), 1e-9)));
  const peak = Math.max(...levels);
  const mask: SpeechMask = { speech: [], pause: [] };
  levels.forEach((l, f) => {
    if (l >= peak - activeRangeDb) mask.speech.push(f);
    else if (l < peak - 50) mask.pause.push(f);
  });
  return mask;
}

function meanPower(signal: Pcm, frames: number[], offset: number): number {
  let sum = 0;
  let n = 0;
  for (const f of frames) {
    const s = f * FRAME + offset;
    if (s < 0 || s + FRAME > signal.length) continue;
    sum += rms(signal, s, s + FRAME) ** 2;
    n++;
  }
  return n ? sum / n : 0;
}

/**
 * Segmental signal-to-noise ratio of a noisy (or processed) signal, in dB,
 * with speech and pauses taken from the clean reference's {@link speechMask}:
 * noise power N = mean power over the pause frames; speech power
 * S = mean power over the speech frames − N; SNR = 10·log10(S / N).
 * `offset` is how many samples `signal` lags the reference (the chain's delay).
 * Processing that removes noise and keeps speech raises it; a gain that is the
 * same for speech and pauses does not change it.
 * @throws RangeError when the mask has no speech or no pause frames.
 */
export function maskedSnrDb(signal: Pcm, mask: SpeechMask, offset = 0): number {
  if (mask.speech.length === 0 || mask.pause.length === 0) throw new RangeError('maskedSnrDb: the reference needs both speech and pauses');
  const n = Math.max(meanPower(signal, mask.pause, offset), 1e-14);
  const s = Math.max(meanPower(signal, mask.speech, offset) - n, 1e-14);
  return 10 * Math.log10(s / n);
}

/** RMS level over the mask's speech frames (active speech level, cf. ITU-T P.56), dBFS. */
export function activeLevelDbfs(signal: Pcm, mask: SpeechMask, offset = 0): number {
  return 10 * Math.log10(Math.max(meanPower(signal, mask.speech, offset), 1e-14));
}

/**
 * The longest silence (ms) between the first and the last sound of a signal
 * that should be continuous (a tone heard through a device switch): the
 * longest run of 5 ms windows whose RMS is below `floorDbfs` (default −45).
 * 0 when nothing is ever loud. Resolution 5 ms.
 */
export function longestSilenceMs(signal: Pcm, floorDbfs = -45): number {
  const win = 240;
  const floor = 10 ** (floorDbfs / 20);
  const loud: boolean[] = [];
  for (let i = 0; i + win <= signal.length; i += win) loud.push(rms(signal, i, i + win) > floor);
  const first = loud.indexOf(true);
  if (first < 0) return 0;
  const last = loud.lastIndexOf(true);
  let best = 0;
  let run = 0;
  for (let i = first; i <= last; i++) {
    run = loud[i] ? 0 : run + 1;
    best = Math.max(best, run);
  }
  return best * 5;
}
