/**
 * The echo path detector and the gate in front of WebRTC's AEC
 * (main/media/echo-path.ts), offline on real speech (espeak-ng) through the
 * real APM (native/apm): with no echo path the default chain leaves double
 * talk as it is with the AEC off; with one it cancels exactly as before.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { speechSimilarity } from '../../main/media/analysis';
import { EchoGatedProcessor, EchoPathDetector } from '../../main/media/echo-path';
import type { CaptureProcessor } from '../../main/media/media-session';
import { erleDb } from '../../main/media/voice-metrics';
import { APM_FRAME_SAMPLES, createVoiceProcessor, type VoiceProcessingSettings } from '../../native/apm';
import { makeTempDir, removeTempDir } from '../harness/process';
import { readWav, renderSpeech } from '../harness/speech';

const SECOND = 48_000;
let dir: string;
let far: Int16Array;
let farLater: Int16Array;
let near: Int16Array;
let more: Int16Array[];

beforeAll(async () => {
  dir = makeTempDir('echo-path-test');
  await Promise.all([
    renderSpeech('She sells sea shells by the sea shore every sunny morning.', 'en-gb', join(dir, 'far.wav')),
    renderSpeech('Hello, can you hear me? I am calling about the meeting.', 'en-gb', join(dir, 'far2.wav')),
    renderSpeech('The quick brown fox jumps over the lazy dog near the river bank.', 'en-us', join(dir, 'near.wav')),
    renderSpeech('Please send the report before Friday afternoon.', 'en-us', join(dir, 'more1.wav')),
    renderSpeech('We should meet at the station at nine tomorrow.', 'en-us', join(dir, 'more2.wav')),
  ]);
  more = [readWav(join(dir, 'more1.wav')).samples, readWav(join(dir, 'more2.wav')).samples];
  far = readWav(join(dir, 'far.wav')).samples;
  farLater = readWav(join(dir, 'far2.wav')).samples;
  near = readWav(join(dir, 'near.wav')).samples;
}, 60_000);

afterAll(() => {
  if (dir) removeTempDir(dir);
});

/** `parts` placed at sample offsets, summed (with clipping) into one signal of `length` samples. */
function scene(length: number, parts: [Int16Array, number][]): Int16Array {
  const out = new Int16Array(length);
  for (const [pcm, at] of parts)
    for (let i = 0; i < pcm.length && at + i < length; i++) out[at + i] = Math.max(-32768, Math.min(32767, out[at + i]! + pcm[i]!));
  return out;
}

/** `render` delayed by `delayMs` and scaled by `gainDb`: an acoustic echo path. */
function echoOf(render: Int16Array, delayMs: number, gainDb: number): Int16Array {
  const out = new Int16Array(render.length);
  const d = delayMs * 48;
  const g = 10 ** (gainDb / 20);
  for (let i = d; i < render.length; i++) out[i] = Math.round(render[i - d]! * g);
  return out;
}

/** Runs the scene 10 ms at a time: the far end to the speaker, then the microphone. */
function run(processor: CaptureProcessor, mic: Int16Array, render: Int16Array): Int16Array {
  const out = new Int16Array(mic.length);
  for (let i = 0; i + APM_FRAME_SAMPLES <= mic.length; i += APM_FRAME_SAMPLES) {
    processor.processRender(render.subarray(i, i + APM_FRAME_SAMPLES));
    out.set(processor.processCapture(mic.subarray(i, i + APM_FRAME_SAMPLES)).frame, i);
  }
  return out;
}

function apm(settings: Partial<VoiceProcessingSettings> = {}): CaptureProcessor {
  const p = createVoiceProcessor(settings);
  p.setStreamDelayMs(60);
  return p;
}

describe('echo path detector', () => {
  it('decides from far-end speech: a talker who answers is no echo, an echo is one at its delay', () => {
    const cases: { name: string; mic: (render: Int16Array) => Int16Array; want: 'absent' | 'present'; delayMs?: number }[] = [
      { name: 'turn taking, no echo path', mic: () => scene(6 * SECOND, [[near, 3 * SECOND]]), want: 'absent' },
      { name: 'double talk, no echo path', mic: () => scene(6 * SECOND, [[near, 0]]), want: 'absent' },
      { name: 'echo 60 ms, −10 dB', mic: (r) => echoOf(r, 60, -10), want: 'present', delayMs: 60 },
      { name: 'echo 200 ms, −20 dB', mic: (r) => echoOf(r, 200, -20), want: 'present', delayMs: 200 },
      { name: 'echo 30 ms, −30 dB', mic: (r) => echoOf(r, 30, -30), want: 'present', delayMs: 30 },
      { name: 'echo 30 ms, −20 dB, under near-end speech', mic: (r) => scene(6 * SECOND, [[echoOf(r, 30, -20), 0], [near, SECOND]]), want: 'present' },
    ];
    for (const c of cases) {
      const render = scene(6 * SECOND, [[far, 0]]);
      const mic = c.mic(render);
      const d = new EchoPathDetector();
      for (let i = 0; i + 480 <= mic.length; i += 480) {
        d.render(render.subarray(i, i + 480));
        d.capture(mic.subarray(i, i + 480));
      }
      expect(d.state, c.name).toBe(c.want);
      if (c.delayMs !== undefined) expect(Math.abs(d.delayMs - c.delayMs), c.name).toBeLessThanOrEqual(10);
    }
  });

  it('finds an echo whatever bursts the devices deliver in, when the speaker runs dry, and on two clocks', () => {
    // A real call's devices and event loop deliver frames in bursts (up to 6 microphone frames at once),
    // and a busy machine makes the speaker run dry now and then: the device plays silence that was never
    // a far-end frame, and the frames after it are taken late, in a burst. Lined up by arrival order the
    // bursts smeared a clear echo's correlation to 0.35; lined up by counts, the silences shifted it.
    const far12 = scene(12 * SECOND, [[far, 0], [farLater, 6 * SECOND]]);
    const frames = Math.floor(far12.length / 480) - 40;
    for (const { ppm, dryEvery, lossEvery = 0 } of [
      { ppm: 0, dryEvery: 0 },
      { ppm: 1000, dryEvery: 0 },
      { ppm: -1000, dryEvery: 0 },
      { ppm: 0, dryEvery: 40 },
      { ppm: 1000, dryEvery: 25 },
      // The microphone loses 1–4 frames every second (its callback blocked on a full queue).
      { ppm: 0, dryEvery: 0, lossEvery: 100 },
      { ppm: 1000, dryEvery: 40, lossEvery: 100 },
    ]) {
      let seed = 5;
      const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
      // What the loudspeaker plays, slot by slot (10 ms of its clock each): far-end frames, and every
      // `dryEvery` frames 1–5 slots of silence while the speaker waits for a late pull.
      const played = new Int16Array(far12.length * 2);
      const events: { at: number; render: boolean; i: number }[] = [];
      let slot = 0;
      for (let k = 0; k < frames; k++) {
        if (dryEvery && k > 0 && k % dryEvery === 0) {
          const dry = 1 + Math.floor(random() * 5);
          slot += dry;
          // The frames due in the dry spell are taken together, late.
          for (let b = 0; b < 3 && k + b < frames; b++) events.push({ at: (slot * 10) / (1 + ppm / 1e6) + b * 0.01, render: true, i: k + b });
          for (let b = 0; b < 3 && k < frames; b++, k++, slot++) played.set(far12.subarray(k * 480, k * 480 + 480), slot * 480);
          k--;
          continue;
        }
        events.push({ at: (slot * 10) / (1 + ppm / 1e6) + random() * 3, render: true, i: k });
        played.set(far12.subarray(k * 480, k * 480 + 480), slot * 480);
        slot++;
      }
      const mic = echoOf(played.subarray(0, slot * 480), 120, -10);
      const micFrames = Math.floor(mic.length / 480) - 20;
      for (let j = 0; j < micFrames; ) {
        const burst = 1 + Math.floor(random() * 6);
        const at = (j + burst) * 10 + random() * 3;
        for (let b = 0; b < burst && j < micFrames; b++, j++) {
          if (lossEvery && j > 0 && j % lossEvery === 0) j += 1 + Math.floor(random() * 4);
          if (j < micFrames) events.push({ at: at + b * 1e-3, render: false, i: j });
        }
      }
      events.sort((a, b) => a.at - b.at);
      const d = new EchoPathDetector();
      for (const e of events) {
        if (e.render) d.render(far12.subarray(e.i * 480, e.i * 480 + 480), e.at);
        else d.capture(mic.subarray(e.i * 480, e.i * 480 + 480), e.at);
      }
      const name = `${ppm} ppm, dry every ${dryEvery || '—'} frames, mic loses frames every ${lossEvery || '—'}`;
      expect(d.state, name).toBe('present');
      console.log(`[echo-path] ${name}: likelihood ${d.likelihood.toFixed(2)}, delay ${d.delayMs} ms`);
      expect(Math.abs(d.delayMs - 120), name).toBeLessThanOrEqual(30);
    }
  });

  it('stays unknown while the far end is silent, and says so in the metrics', () => {
    const gated = new EchoGatedProcessor(apm());
    run(gated, scene(3 * SECOND, [[near, 0]]), new Int16Array(3 * SECOND));
    expect(gated.detector.state).toBe('unknown');
    expect(gated.echoMetrics().echoPath).toBe('unknown');
  });
});

describe('the AEC behind the gate (real APM, default settings)', () => {
  it('leaves double talk with no echo path as the AEC off does (within 0.02), after the far end has spoken once', () => {
    // The far end says hello, the near end answers over the far end's next sentence.
    const farAt = 5 * SECOND;
    const length = farAt + far.length + SECOND;
    const render = scene(length, [[farLater, 0], [far, farAt]]);
    const mic = scene(length, [[near, farAt + 4800]]);
    const said = (out: Int16Array) => speechSimilarity(near, out.subarray(farAt)).score;
    const gated = new EchoGatedProcessor(apm());
    const withGate = said(run(gated, mic, render));
    const aecOff = said(run(apm({ echoCancellation: false }), mic, render));
    const ungated = said(run(apm(), mic, render));
    console.log(`[echo-path] double talk, no echo path: gated ${withGate.toFixed(3)}, AEC off ${aecOff.toFixed(3)}, AEC always fed ${ungated.toFixed(3)}`);
    expect(gated.detector.state).toBe('absent');
    expect(withGate).toBeGreaterThanOrEqual(aecOff - 0.02);
    // The defect the gate removes: the AEC fed with unrelated far-end speech suppresses the near end.
    expect(ungated).toBeLessThan(aecOff - 0.02);
  });

  it('never calls two people talking at once from the first frame of a call an echo, and is sure of it within 1.5 s', () => {
    // npm run demo: both start talking as the call connects. Chance correlations over 51 delays from the
    // first 30 frames used to reach 0.5, and the path was held `present` for 5 s of far-end speech; at
    // 4 standard errors above chance instead of 6, some of these 40 runs were still called an echo.
    const sentences = [far, farLater, near, ...more];
    const runs: [string, Int16Array, Int16Array][] = [];
    for (let i = 0; i < sentences.length; i++)
      for (let j = 0; j < sentences.length; j++)
        for (const startMs of [0, 100])
          if (i !== j) {
            const mic = new Int16Array(sentences[j]!.length + startMs * 48);
            mic.set(sentences[j]!, startMs * 48);
            runs.push([`far ${i}, near ${j} from ${startMs} ms`, sentences[i]!, mic]);
          }
    for (const [name, render, mic] of runs) {
      const d = new EchoPathDetector();
      const states: string[] = [];
      for (let i = 0; i + 480 <= Math.min(render.length, mic.length); i += 480) {
        d.render(render.subarray(i, i + 480));
        states.push(d.capture(mic.subarray(i, i + 480)));
      }
      expect(states, name).not.toContain('present');
      expect(states.indexOf('absent'), name).toBeGreaterThan(0);
      expect(states.indexOf('absent'), name).toBeLessThanOrEqual(150);
    }
  });

  it('cancels an echo path there from the first frame of a call once the far end has spoken 1 s', () => {
    // The price of not garbling double talk while unknown: the far end's first words pass, once per call.
    for (const [delayMs, gainDb] of [
      [60, -10],
      [150, -20],
      [30, -30],
    ] as const) {
      const mic = echoOf(far, delayMs, gainDb);
      const gated = new EchoGatedProcessor(apm());
      const out = new Int16Array(mic.length);
      let presentAtMs = -1;
      for (let i = 0; i + APM_FRAME_SAMPLES <= mic.length; i += APM_FRAME_SAMPLES) {
        gated.processRender(far.subarray(i, i + APM_FRAME_SAMPLES));
        out.set(gated.processCapture(mic.subarray(i, i + APM_FRAME_SAMPLES)).frame, i);
        if (presentAtMs < 0 && gated.detector.state === 'present') presentAtMs = i / 48;
      }
      const name = `echo ${delayMs} ms, ${gainDb} dB`;
      expect(presentAtMs, name).toBeGreaterThan(0);
      expect(presentAtMs, name).toBeLessThanOrEqual(700);
      expect(erleDb(mic.subarray(SECOND), out.subarray(SECOND)), name).toBeGreaterThanOrEqual(25);
    }
  });

  it('cancels an echo path as the AEC alone does (ERLE of the second pass ≥ 25 dB, within 0.5 dB of it)', () => {
    const render = scene(2 * far.length, [[far, 0], [far, far.length]]);
    const mic = echoOf(render, 60, -10);
    const gated = new EchoGatedProcessor(apm({ noiseSuppression: false, gainControl: false }));
    const out = run(gated, mic, render);
    const plain = run(apm({ noiseSuppression: false, gainControl: false }), mic, render);
    const erle = erleDb(mic.subarray(far.length), out.subarray(far.length));
    expect(gated.detector.state).toBe('present');
    expect(erle).toBeGreaterThanOrEqual(25);
    // The gate starts the canceller with the far end's first audible frame, 10 ms after the plain one started.
    expect(erle).toBeCloseTo(erleDb(mic.subarray(far.length), plain.subarray(far.length)), 0);
  });

  it('lets an echo path go (headset plugged in) only after it has stayed away for 5 s of far-end speech', () => {
    const length = 36 * SECOND;
    const render = scene(length, Array.from({ length: 9 }, (_, i): [Int16Array, number] => [i % 2 ? farLater : far, i * 4 * SECOND]));
    // An echo for the first 8 s, none after; a microphone's noise floor (≈ −60 dBFS) throughout.
    const echo = echoOf(render, 80, -10).fill(0, 8 * SECOND);
    let seed = 9;
    for (let i = 0; i < echo.length; i++) echo[i] = echo[i]! + Math.round(((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5) * 70);
    const d = new EchoPathDetector();
    const states: string[] = [];
    for (let i = 0; i + 480 <= length; i += 480) {
      d.render(render.subarray(i, i + 480));
      d.capture(echo.subarray(i, i + 480));
      if (i === 8 * SECOND - 480 || i === 11 * SECOND - 480) states.push(d.state);
    }
    states.push(d.state);
    // Still present 3 s after the echo went (a dip is not a headset), absent by the end.
    expect(states).toEqual(['present', 'present', 'absent']);
  });

  it('runs the canceller only while there may be an echo: not before the far end speaks, not once none is certain (the microphone path is then ≈ 7 ms shorter)', () => {
    // 2 s of silent far end, then far-end speech with no echo path (a headset) until `absent`.
    const length = 16 * SECOND;
    const render = scene(length, [[far, 2 * SECOND], [farLater, 6 * SECOND], [far, 10 * SECOND]]);
    // The microphone: a click (10 ms of 2 kHz at −6 dBFS) every 500 ms over a noise floor, as bench:apm-delay.
    const mic = new Int16Array(length);
    for (let at = SECOND / 4; at + 480 <= length; at += SECOND / 2)
      for (let i = 0; i < 480; i++) mic[at + i] = Math.round(16_000 * Math.sin((2 * Math.PI * 2000 * i) / 48_000));
    let seed = 3;
    for (let i = 0; i < length; i++) mic[i] = mic[i]! + (((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) % 60) - 30;
    const gated = new EchoGatedProcessor(apm());
    const out = new Int16Array(length);
    const engaged: boolean[] = [];
    for (let i = 0; i + 480 <= length; i += 480) {
      gated.processRender(render.subarray(i, i + 480));
      out.set(gated.processCapture(mic.subarray(i, i + 480)).frame, i);
      engaged.push(gated.engaged);
    }
    const onsets = (x: Int16Array, from: number, to: number) => {
      const found: number[] = [];
      for (let i = from; i < to; i++) {
        if (Math.abs(x[i]!) > 3000) {
          found.push(i);
          i += SECOND / 4;
        }
      }
      return found;
    };
    const delayMs = (fromS: number, toS: number) => {
      const a = onsets(mic, fromS * SECOND, toS * SECOND);
      const b = onsets(out, fromS * SECOND, toS * SECOND + 2400);
      return b.map((v, k) => (v - a[k]!) / 48).sort((x, y) => x - y)[b.length >> 1]!;
    };
    const firstOn = engaged.indexOf(true);
    const offAgain = engaged.indexOf(false, firstOn);
    // Off while the far end is silent; on with its first word; off again once no echo path is certain.
    expect(firstOn * 10).toBeGreaterThanOrEqual(2000);
    expect(firstOn * 10).toBeLessThan(2500);
    expect(gated.detector.state).toBe('absent');
    expect(offAgain).toBeGreaterThan(firstOn);
    expect(engaged.slice(offAgain).every((e) => !e)).toBe(true);
    // Without the canceller the microphone path carries noise suppression's delay only (bench:apm-delay:
    // ≈ 6.8 ms, and ≈ 13.9 ms with the canceller).
    expect(delayMs(0, 2)).toBeLessThan(9);
    expect(delayMs(firstOn / 100 + 0.1, offAgain / 100 - 0.1)).toBeGreaterThan(12);
    expect(delayMs(offAgain / 100 + 0.5, 16)).toBeLessThan(9);
  });

  it('finds an echo path that appears mid-call (headset unplugged) within a second of far-end speech', () => {
    const length = 12 * SECOND;
    const render = scene(length, [[farLater, 0], [far, 4 * SECOND], [far, 8 * SECOND]]);
    // No echo for the first 6 s, then the far end is heard at −10 dB, 80 ms late.
    const echo = echoOf(render, 80, -10).fill(0, 0, 6 * SECOND);
    const gated = new EchoGatedProcessor(apm({ noiseSuppression: false, gainControl: false }));
    const states: string[] = [];
    for (let i = 0; i + 480 <= length; i += 480) {
      gated.processRender(render.subarray(i, i + 480));
      gated.processCapture(echo.subarray(i, i + 480));
      if (i === 6 * SECOND - 480) states.push(gated.detector.state, gated.engaged ? 'running' : 'stopped');
    }
    states.push(gated.detector.state, gated.engaged ? 'running' : 'stopped');
    expect(states).toEqual(['absent', 'stopped', 'present', 'running']);
  });
});
