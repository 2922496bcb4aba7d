/**
 * The echo canceller with the speaker and the microphone on two clocks
 * (issue 18 item 5), offline through the real APM (native/apm) and the echo
 * path gate (main/media/echo-path.ts), as a call feeds them: every far-end
 * frame when the speaker pulls it, every microphone frame when the device
 * delivers it, interleaved in time. The speaker's sample clock runs ε fast or
 * slow against the microphone's for 10 simulated minutes of far-end speech
 * (espeak-ng, 1 s pauses), with an 80 ms echo path at −10 dB and a −60 dBFS
 * noise floor. The echo is resampled exactly (windowed sinc) from the
 * speaker's clock onto the microphone's, as the air between two cards does.
 *
 * Uncompensated, the reference would slide 1 ms a second against the echo,
 * 600 ms in 10 minutes — beyond any filter. The AEC of
 * libwebrtc-audio-processing 0.3 (AEC1) keeps them aligned by itself: it
 * counts far-end samples fed and not yet consumed as part of the delay
 * (`system_delay`) and moves its far-end read pointer when that count wanders
 * (docs/audio.md, "Two clocks"). This test holds it to that.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EchoGatedProcessor } from '../../main/media/echo-path';
import { APM_FRAME_SAMPLES, createVoiceProcessor } from '../../native/apm';
import { makeTempDir, removeTempDir } from '../harness/process';
import { readWav, renderSpeech } from '../harness/speech';

const RATE = 48_000;
const F = APM_FRAME_SAMPLES;
let far: Int16Array;
let dir: string;

beforeAll(async () => {
  dir = makeTempDir('two-clocks-aec');
  await renderSpeech(
    'The quick brown fox jumps over the lazy dog near the river bank. She sells sea shells by the sea shore every sunny morning.',
    'en-us',
    join(dir, 'far.wav'),
  );
  far = readWav(join(dir, 'far.wav')).samples;
}, 30_000);

afterAll(() => {
  if (dir) removeTempDir(dir);
});

/** Per minute: ERLE (echo at the mic over the output, dB), the AEC's found delay (ms) and the gate's state. */
interface Minute {
  erleDb: number;
  aecDelayMs: number | undefined;
  echoPath: string;
}

/**
 * Runs `seconds` of the scene with the speaker's clock `speakerPpm` against
 * the microphone's (+ = the speaker plays more samples per real second).
 */
function twoClockEcho(speakerPpm: number, seconds: number): Minute[] {
  const sp = 1 + speakerPpm / 1e6;
  const cycle = far.length + RATE;
  const renderLength = Math.ceil(seconds * RATE * sp) + RATE;
  const render = new Int16Array(renderLength);
  for (let i = 0; i < renderLength; i++) {
    const at = i % cycle;
    render[i] = at < far.length ? far[at]! : 0;
  }
  // Pull-to-loudspeaker 30 ms, air 30 ms, microphone-to-delivery 20 ms: 80 ms, as the platform would report.
  const toSpeakerS = 0.03;
  const airS = 0.03;
  const captureS = 0.02;
  const gain = 10 ** (-10 / 20);
  const apm = new EchoGatedProcessor(createVoiceProcessor({ noiseSuppression: false, gainControl: false }));
  apm.setStreamDelayMs((toSpeakerS + airS + captureS) * 1000);
  // The speaker's output at fractional sample `x` of its clock: windowed sinc (32 taps, Hann).
  const played = (x: number): number => {
    const i0 = Math.floor(x);
    let sum = 0;
    for (let k = i0 - 15; k <= i0 + 16; k++) {
      if (k < 0 || k >= renderLength) continue;
      const d = x - k;
      const sinc = d === 0 ? 1 : Math.sin(Math.PI * d) / (Math.PI * d);
      sum += render[k]! * sinc * (0.5 + 0.5 * Math.cos((Math.PI * d) / 16));
    }
    return sum;
  };
  let seed = 1;
  const noise = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5) * 70; // ≈ −60 dBFS
  const minutes: Minute[] = [];
  const mic = new Int16Array(F);
  let pulled = 0;
  let energyIn = 0;
  let energyOut = 0;
  const frames = seconds * 100;
  for (let j = 0; j < frames; j++) {
    // The microphone's clock is the reference: frame j is delivered at (j + 1) · 10 ms + captureS.
    const deliveredS = ((j + 1) * F) / RATE + captureS;
    // Every frame the speaker pulled by then (it pulls frame k at k · 10 ms of its own clock).
    while ((pulled * F) / (RATE * sp) <= deliveredS) {
      apm.processRender(render.subarray(pulled * F, pulled * F + F));
      pulled++;
    }
    for (let i = 0; i < F; i++) {
      const t = (j * F + i) / RATE;
      const x = (t - toSpeakerS - airS) * RATE * sp;
      mic[i] = Math.max(-32768, Math.min(32767, Math.round((x < 0 ? 0 : gain * played(x)) + noise())));
    }
    const out = apm.processCapture(mic).frame;
    for (let i = 0; i < F; i++) {
      energyIn += mic[i]! ** 2;
      energyOut += out[i]! ** 2;
    }
    if ((j + 1) % 6000 === 0) {
      const m = apm.echoMetrics();
      minutes.push({ erleDb: 10 * Math.log10(energyIn / Math.max(energyOut, 1)), aecDelayMs: m.delayMedianMs, echoPath: m.echoPath });
      energyIn = energyOut = 0;
    }
  }
  return minutes;
}

describe('echo cancellation with the speaker and the microphone on two clocks', () => {
  for (const ppm of [1000, -1000]) {
    it(`keeps at least 25 dB of ERLE for 10 minutes with the speaker ${ppm > 0 ? 'fast' : 'slow'} by 0.1 %`, () => {
      const minutes = twoClockEcho(ppm, 600);
      console.log(
        `[two-clocks-aec] speaker ${ppm > 0 ? '+' : ''}${ppm} ppm: ERLE per minute ${minutes.map((m) => m.erleDb.toFixed(0)).join(' ')} dB; ` +
          `AEC delay ${minutes.map((m) => m.aecDelayMs).join(' ')} ms; gate ${[...new Set(minutes.map((m) => m.echoPath))].join(',')}`,
      );
      expect(minutes).toHaveLength(10);
      // From the second minute on (the first holds the convergence).
      for (const m of minutes.slice(1)) {
        expect(m.erleDb).toBeGreaterThanOrEqual(25);
        expect(m.echoPath).toBe('present');
        // The residual delay the filter sees stays inside it (AEC1's extended filter: ≈ 128 ms).
        expect(m.aecDelayMs).toBeGreaterThanOrEqual(0);
        expect(m.aecDelayMs).toBeLessThan(128);
      }
    }, 240_000);
  }
});
