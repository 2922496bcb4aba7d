/**
 * Helpers for group calls of up to four headless clients on the four-client
 * PulseAudio layout (`startPulse({ clients: 4 })`): where each client's
 * microphone input and speaker are in the two probe recordings, a recorded
 * speaking turn, and speech similarity judged in pieces. Used by
 * test/integration/group-call.test.ts and `npm run demo -- --group 4`.
 */
import { join } from 'node:path';
import { speechSimilarity } from '../../main/media/analysis';
import { DEVICES, PROBE2_CHANNEL, PROBE_CHANNEL, type ClientName, type Pulse } from './pulse';
import { channel, readWav } from './speech';

export const GROUP_NAMES: readonly ClientName[] = ['a', 'b', 'c', 'd'];

/** Which probe recording holds a client's signals, and their 0-based channels there. */
export const GROUP_CHANNELS: Record<ClientName, { probe: 'probe' | 'probe2'; mic: number; speaker: number }> = {
  a: { probe: 'probe', mic: PROBE_CHANNEL.aliceMicInput - 1, speaker: PROBE_CHANNEL.aliceSpeaker - 1 },
  b: { probe: 'probe', mic: PROBE_CHANNEL.bobMicInput - 1, speaker: PROBE_CHANNEL.bobSpeaker - 1 },
  c: { probe: 'probe2', mic: PROBE2_CHANNEL.carolMicInput - 1, speaker: PROBE2_CHANNEL.carolSpeaker - 1 },
  d: { probe: 'probe2', mic: PROBE2_CHANNEL.daveMicInput - 1, speaker: PROBE2_CHANNEL.daveSpeaker - 1 },
};

/** One recorded turn: every client's speaker and microphone input over it (48 kHz mono). */
export interface Turn {
  speaker: Record<ClientName, Int16Array>;
  mic: Record<ClientName, Int16Array>;
  /** Which recording each came from (signals of one recording share one clock). */
  probe: Record<ClientName, 'probe' | 'probe2'>;
}

/**
 * `who` says `wavPath` (played into its microphone) while both probes are
 * recorded, then `tailMs` more for the far speakers to finish.
 */
export async function recordTurn(pulse: Pulse, who: ClientName, wavPath: string, dir: string, tag: string, tailMs = 900): Promise<Turn> {
  const p1 = join(dir, `${tag}-probe.wav`);
  const p2 = join(dir, `${tag}-probe2.wav`);
  const [r1, r2] = await Promise.all([pulse.record('probe.monitor', p1, 4), pulse.record('probe2.monitor', p2, 4)]);
  try {
    await pulse.play(DEVICES[who].input, wavPath);
    await new Promise((r) => setTimeout(r, tailMs));
  } finally {
    await Promise.all([r1.stop(), r2.stop()]);
  }
  const rec = { probe: readWav(p1), probe2: readWav(p2) };
  const turn: Turn = { speaker: {} as Turn['speaker'], mic: {} as Turn['mic'], probe: {} as Turn['probe'] };
  for (const n of GROUP_NAMES) {
    const c = GROUP_CHANNELS[n];
    turn.speaker[n] = channel(rec[c.probe], c.speaker);
    turn.mic[n] = channel(rec[c.probe], c.mic);
    turn.probe[n] = c.probe;
  }
  return turn;
}

/** Whole-sentence similarity (docs/similarity.md), delay searched up to 3 s (the recording starts before the speech). */
export function sentenceSimilarity(sent: Int16Array, heard: Int16Array): ReturnType<typeof speechSimilarity> {
  return speechSimilarity(sent, heard, { maxLagMs: 3000 });
}

/**
 * Whole-sentence similarity following the delay as it changes by up to
 * ±40 ms in mid-sentence (speechSimilarity's `trackDelayMs`: 500 ms blocks,
 * one pooled score): what a listener judges when the jitter buffer drops or
 * inserts a 20 ms frame in a pause. The group demo's bar.
 */
export function trackedSimilarity(sent: Int16Array, heard: Int16Array): ReturnType<typeof speechSimilarity> {
  return speechSimilarity(sent, heard, { maxLagMs: 3000, trackDelayMs: 40 });
}

/**
 * The sentence judged in 500 ms pieces, each aligned on its own within
 * −300 … +1000 ms of the whole sentence's delay: the median piece's score.
 * What a listener hears word by word; the whole-sentence score also counts
 * the jitter buffer moving its delay in mid-sentence (after a stall of a
 * loaded machine) against the speech.
 */
export function piecewiseSimilarity(sent: Int16Array, heard: Int16Array): number {
  const lag = Math.round(Math.max(0, sentenceSimilarity(sent, heard).lagMs) * 48);
  const piece = 24_000;
  const scores: number[] = [];
  for (let t = 0; t + piece <= sent.length; t += piece) {
    const start = Math.max(0, t + lag - 300 * 48);
    try {
      scores.push(speechSimilarity(sent.subarray(t, t + piece), heard.subarray(start, t + lag + piece + 1000 * 48), { maxLagMs: 1300 }).score);
    } catch {
      // a piece without speech (a pause) is not judged
    }
  }
  scores.sort((x, y) => x - y);
  return scores.length === 0 ? 0 : scores[Math.floor(scores.length / 2)]!;
}
