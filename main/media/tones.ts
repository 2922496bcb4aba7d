/**
 * Tones Parley plays itself through main's audio path (the renderer never
 * touches audio): the ringtone, the ringback the caller hears while the
 * callee's device rings, and the settings screen's test tone; plus the level
 * meter of the settings screen's microphone test.
 *
 * All audio is 48 kHz mono s16 in 10 ms frames (480 samples).
 */
import { devicesSettled, openCapture, SAMPLE_RATE, type CaptureStream } from '../../native/audio-device';

const FRAME_MS = 10;

/** One step of a cadence: frequencies (Hz, summed) for a duration (ms); no frequencies = silence. */
export interface ToneStep {
  freqs: number[];
  ms: number;
}

/** Ringback: 425 Hz, 1 s on, 4 s off (ITU-T E.180 / ETSI ES 201 970 recommended ringing tone). */
export const RINGBACK: ToneStep[] = [
  { freqs: [425], ms: 1000 },
  { freqs: [], ms: 4000 },
];

/** Parley's ringtone: a rising three-note chime (E5, G#5, B5), repeated every 2.5 s. */
export const RINGTONE: ToneStep[] = [
  { freqs: [659.25], ms: 180 },
  { freqs: [830.61], ms: 180 },
  { freqs: [987.77], ms: 360 },
  { freqs: [], ms: 300 },
  { freqs: [659.25], ms: 180 },
  { freqs: [830.61], ms: 180 },
  { freqs: [987.77], ms: 360 },
  { freqs: [], ms: 760 },
];

/** The settings screen's output test: 1 s of 440 Hz. */
export const TEST_TONE: ToneStep[] = [{ freqs: [440], ms: 1000 }];

/**
 * Renders a cadence to PCM with 5 ms raised-cosine ramps at every step edge
 * (no clicks). `gain` is the peak amplitude, 0–1 of full scale.
 */
export function renderCadence(steps: ToneStep[], gain: number): Int16Array {
  const total = steps.reduce((n, s) => n + Math.round((s.ms * SAMPLE_RATE) / 1000), 0);
  const out = new Int16Array(total);
  const ramp = (5 * SAMPLE_RATE) / 1000;
  let at = 0;
  for (const step of steps) {
    const n = Math.round((step.ms * SAMPLE_RATE) / 1000);
    if (step.freqs.length > 0) {
      const amp = (Math.max(0, Math.min(1, gain)) * 32767) / step.freqs.length;
      for (let i = 0; i < n; i++) {
        const edge = Math.min(i, n - 1 - i);
        const env = edge < ramp ? 0.5 - 0.5 * Math.cos((Math.PI * edge) / ramp) : 1;
        let v = 0;
        for (const f of step.freqs) v += Math.sin((2 * Math.PI * f * i) / SAMPLE_RATE);
        out[at + i] = Math.round(v * amp * env);
      }
    }
    at += n;
  }
  return out;
}

/** RMS level of a frame in dBFS (full-scale sine = −3 dBFS); −100 for digital silence. */
export function levelDbfs(frame: Int16Array): number {
  let sum = 0;
  for (let i = 0; i < frame.length; i++) sum += frame[i]! * frame[i]!;
  const rms = Math.sqrt(sum / Math.max(1, frame.length)) / 32768;
  return rms > 0 ? Math.max(-100, 20 * Math.log10(rms)) : -100;
}

export { playPcm, type PlayingSound } from '../../native/audio-device';

/**
 * Opens a microphone and reports its level every 50 ms (20 Hz), in dBFS.
 * @throws AudioDeviceError when the device cannot be opened.
 */
export async function meterMicrophone(device: string | undefined, onLevel: (dbfs: number) => void): Promise<() => Promise<void>> {
  await devicesSettled();
  const capture: CaptureStream = openCapture({ device, frameMs: FRAME_MS });
  let peakDb = -100;
  let frames = 0;
  capture.on('frame', (f) => {
    peakDb = Math.max(peakDb, levelDbfs(f));
    if (++frames % 5 === 0) {
      onLevel(Math.round(peakDb * 10) / 10);
      peakDb = -100;
    }
  });
  capture.start();
  return () => capture.close();
}
