/**
 * `npm run bench:apm-delay`: the algorithmic delay of the voice processing
 * (native/apm, WebRTC APM) on its own, offline, per component.
 *
 * A click train (10 ms bursts of 2 kHz at −6 dBFS, one every 500 ms, over a
 * ±30 LSB noise floor; 48 kHz mono) goes through `createVoiceProcessor` 10 ms
 * at a time with a silent far end, once per setting; each click's onset
 * (first sample above 3000) in the output is compared with the input's.
 * Prints the delay in ms per setting. This is the part of `npm run bench`'s
 * defaults-minus-no_processing difference that processing itself adds.
 */
import { createVoiceProcessor } from '../native/apm';

const FRAME = 480; // 10 ms at 48 kHz, the processor's frame

function clickDelayMs(settings: { echoCancellation: boolean; noiseSuppression: boolean; gainControl: boolean }): number[] {
  const apm = createVoiceProcessor(settings);
  const frames = 400; // 4 s
  const input = new Int16Array(frames * FRAME);
  for (let c = 0; c < 7; c++) {
    const at = 24_000 + c * 24_000;
    for (let i = 0; i < FRAME; i++) input[at + i] = Math.round(16_000 * Math.sin((2 * Math.PI * 2000 * i) / 48_000));
  }
  let seed = 1;
  for (let i = 0; i < input.length; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    input[i]! += ((seed >>> 16) % 60) - 30;
  }
  const out = new Int16Array(input.length);
  const silence = new Int16Array(FRAME);
  for (let f = 0; f < frames; f++) {
    apm.processRender(silence);
    out.set(apm.processCapture(input.subarray(f * FRAME, (f + 1) * FRAME)).frame, f * FRAME);
  }
  const onsets = (x: Int16Array) => {
    const found: number[] = [];
    for (let i = 0; i < x.length; i++) {
      if (Math.abs(x[i]!) > 3000) {
        found.push(i);
        i += 12_000;
      }
    }
    return found;
  };
  const a = onsets(input);
  return onsets(out).map((v, k) => (v - (a[k] ?? v)) / 48);
}

const rows = [
  ['all off', { echoCancellation: false, noiseSuppression: false, gainControl: false }],
  ['echo cancellation', { echoCancellation: true, noiseSuppression: false, gainControl: false }],
  ['noise suppression', { echoCancellation: false, noiseSuppression: true, gainControl: false }],
  ['gain control', { echoCancellation: false, noiseSuppression: false, gainControl: true }],
  ['all on (the defaults)', { echoCancellation: true, noiseSuppression: true, gainControl: true }],
] as const;
console.log('| processing | click delay (ms, median of 7) |\n|---|---|');
for (const [name, settings] of rows) {
  const d = clickDelayMs(settings).sort((x, y) => x - y);
  console.log(`| ${name} | ${d.length ? d[d.length >> 1]!.toFixed(2) : 'no click came out'} |`);
}
