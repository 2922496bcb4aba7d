/**
 * Renders Parley's ringtone and ringback into resources/sounds/ (48 kHz mono
 * 16-bit WAV, full level; the Softphone scales them by the volume settings):
 *
 *   npx tsx scripts/make-sounds.ts
 *
 * The cadences are defined in main/media/tones.ts (ringback per ITU-T E.180).
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { renderCadence, RINGBACK, RINGTONE } from '../main/media/tones';
import { writeWav } from '../test/harness/speech';

const dir = resolve(import.meta.dirname, '../resources/sounds');
mkdirSync(dir, { recursive: true });
for (const [name, cadence] of [
  ['ringtone', RINGTONE],
  ['ringback', RINGBACK],
] as const) {
  const pcm = renderCadence(cadence, 0.9);
  writeWav(join(dir, `${name}.wav`), pcm);
  console.log(`resources/sounds/${name}.wav: ${(pcm.length / 48_000).toFixed(2)} s`);
}
