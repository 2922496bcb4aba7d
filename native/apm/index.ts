/**
 * Voice processing for the microphone path: WebRTC's audio processing module
 * (APM) from `libwebrtc-audio-processing` 0.3 (Debian), through Parley's own
 * N-API addon (`native/apm/addon`, built by `scripts/setup.sh` /
 * `npm run build:native`), loaded on first use.
 *
 * One {@link VoiceProcessor} serves one call. Audio is 48 kHz mono signed
 * 16-bit PCM in frames of 10 ms (480 samples), the APM's own frame size:
 *
 * - {@link VoiceProcessor.processRender}: every far-end frame exactly as it is
 *   written to the speaker (the echo canceller's reference);
 * - {@link VoiceProcessor.processCapture}: every microphone frame, in capture
 *   order; returns the processed frame (echo cancelled, high-pass filtered,
 *   noise suppressed, level controlled) and the APM's voice activity decision.
 *
 * Components (all from the APM): acoustic echo cancellation (AEC with the
 * "extended filter", high suppression, fed with the measured device delay), noise suppression (NS, level high), adaptive digital gain
 * control (AGC, target −3 dBFS, 9 dB compression gain, limiter), voice
 * activity detection (VAD, moderate likelihood) and a high-pass filter.
 * See docs/audio.md.
 */
import { loadOwnAddon, ownAddonPaths, type OwnAddonSpec } from '../load';

/** Samples in one APM frame: 10 ms at 48 kHz mono. */
export const APM_FRAME_SAMPLES = 480;
/** The APM's sample rate here, Hz. */
export const APM_SAMPLE_RATE = 48_000;

/** Which components run; each can be changed while processing. */
export interface VoiceProcessingSettings {
  /** Acoustic echo cancellation. Default true. */
  echoCancellation: boolean;
  /**
   * Noise suppression (WebRTC NS, a spectral suppressor). Default true. Its level follows the echo canceller:
   * high while the canceller runs (it also takes residual echo), moderate while it is off or disengaged (high
   * cost speech similarity 0.02 with no echo at all, moderate about 0.013; docs/audio.md, "Noise suppression's
   * level").
   */
  noiseSuppression: boolean;
  /** Automatic (adaptive digital) gain control. Default true. */
  gainControl: boolean;
}

export const DEFAULT_VOICE_PROCESSING: Readonly<VoiceProcessingSettings> = {
  echoCancellation: true,
  noiseSuppression: true,
  gainControl: true,
};

/** The APM's own estimates of the echo path (ITU-T G.168 terms), once it has converged. */
export interface EchoMetrics {
  /** Echo return loss: far-end level minus echo level at the mic, dB. −100 until known. */
  erlDb?: number;
  /** Echo return loss enhancement: echo attenuation by the canceller, dB (G.168 §3.4). −100 until known. */
  erleDb?: number;
  /** The render→capture delay the AEC has found, median and spread, ms. */
  delayMedianMs?: number;
  delayStdMs?: number;
}

/** One processed capture frame. */
export interface ProcessedCapture {
  /** 480 samples, 48 kHz mono s16: the frame to encode. */
  frame: Int16Array;
  /** The APM's VAD decision for this frame (WebRTC's GMM-based VAD). */
  voice: boolean;
}

/** A voice processing chain for one call (it keeps adaptive state between frames). */
export interface VoiceProcessor {
  readonly settings: Readonly<VoiceProcessingSettings>;
  /**
   * True while echo cancellation, noise suppression and gain control are all
   * off (follows {@link configure}). The processor would then only high-pass
   * the microphone and run its VAD, so a caller that needs neither skips it
   * for those frames (main/media/capture-chain.ts), as Chromium skips its
   * processing when getUserMedia's three constraints are false.
   */
  readonly bypassed: boolean;
  /**
   * Feeds one far-end frame as played (the AEC's reference).
   * @param frame Int16Array of 480 samples (10 ms, 48 kHz mono).
   * @throws TypeError when it is not an Int16Array; RangeError when not 480 samples.
   */
  processRender(frame: Int16Array): void;
  /**
   * Processes one microphone frame.
   * @param frame Int16Array of 480 samples (10 ms, 48 kHz mono); not modified.
   * @returns a new processed frame and the VAD decision.
   * @throws TypeError / RangeError as {@link processRender}.
   */
  processCapture(frame: Int16Array): ProcessedCapture;
  /**
   * Processes one microphone frame in place: `frame` becomes the processed
   * frame (no allocation; the capture chain's form).
   * @param frame Int16Array of 480 samples (10 ms, 48 kHz mono); overwritten.
   * @returns the VAD decision.
   * @throws TypeError / RangeError as {@link processRender}.
   */
  processCaptureInPlace(frame: Int16Array): boolean;
  /**
   * The delay between a frame given to {@link processRender} and the capture
   * frame that holds its echo, ms (the devices' output + input latency). The
   * extended filter tolerates errors of tens of ms.
   * @throws RangeError outside 0–500 ms.
   */
  setStreamDelayMs(ms: number): void;
  /** Turns components on or off from the next frame on. */
  configure(settings: Partial<VoiceProcessingSettings>): void;
  /**
   * Whether the echo canceller runs now; it runs only while this is true and
   * `settings.echoCancellation` is on. Default true. A caller that knows no
   * echo path exists (main/media/echo-path.ts) disengages it: that removes
   * its algorithmic delay (≈ 7 ms on the microphone path, `npm run
   * bench:apm-delay`) and its CPU. Engaging it again starts it afresh from the
   * next frame (it converges in about a second), and from then on the
   * microphone path is ≈ 7 ms later. The noise suppressor's level follows
   * (high while the canceller runs, moderate while not). Does not change
   * `settings`.
   */
  setEchoCancellerEngaged(engaged: boolean): void;
  /** The AEC's metrics; empty while the AEC is off or disengaged. */
  echoMetrics(): EchoMetrics;
}

interface NativeApm {
  processRender(frame: Int16Array): void;
  processCapture(frame: Int16Array): ProcessedCapture;
  processCaptureInPlace(frame: Int16Array): boolean;
  setStreamDelayMs(ms: number): void;
  setEchoCancellation(on: boolean): void;
  setNoiseSuppression(on: boolean): void;
  setGainControl(on: boolean): void;
  setNoiseSuppressionHigh(high: boolean): void;
  echoMetrics(): EchoMetrics;
}
interface ApmAddon {
  Apm: new (
    options: Partial<VoiceProcessingSettings> & { delayAgnostic?: boolean; extendedFilter?: boolean; noiseSuppressionHigh?: boolean },
  ) => NativeApm;
}

const APM_ADDON: OwnAddonSpec = {
  packageName: 'parley_apm (native/apm/addon)',
  purpose: 'echo cancellation, noise suppression and gain control',
  systemLibraries: {
    'libwebrtc_audio_processing.so.1': 'libwebrtc-audio-processing1',
    'libstdc++.so.6': 'libstdc++6',
  },
  dir: 'apm',
  target: 'parley_apm',
  envVar: 'PARLEY_APM_ADDON',
  title: "Parley's voice processing addon",
  buildPackage: 'libwebrtc-audio-processing-dev',
};

/** Where the addon may be, most specific first (native/load.ts {@link ownAddonPaths}; `PARLEY_APM_ADDON` first). */
export function apmAddonPaths(): string[] {
  return ownAddonPaths(APM_ADDON, import.meta.url);
}

/**
 * Loads the addon from the first of `candidates` that exists.
 * @throws NativeModuleLoadError "… not built: run scripts/setup.sh …" when none
 *   exists, or "libwebrtc_audio_processing.so.1 missing: install
 *   libwebrtc-audio-processing1 …" when the dynamic loader cannot find the library.
 */
export function loadApmAddon(candidates: readonly string[] = apmAddonPaths()): ApmAddon {
  return loadOwnAddon<ApmAddon>(APM_ADDON, candidates);
}

let addon: ApmAddon | undefined;

/** The AEC's modes, fixed for the processor's life. */
export interface AecModes {
  /**
   * The AEC estimates the render→capture delay itself and treats the reported
   * one as a hint. Default false: in live calls through PulseAudio here it
   * sometimes locked onto a wrong delay (docs/audio.md), while the measured
   * device delay plus the extended filter converged every time.
   */
  delayAgnostic?: boolean;
  /** A longer adaptive filter (≈ 128 ms instead of ≈ 48 ms) that tolerates delay errors. Default true. */
  extendedFilter?: boolean;
}

/**
 * Creates a voice processor (48 kHz mono, 10 ms frames).
 * @param settings components to run; missing ones default to on.
 * @throws NativeModuleLoadError when the addon is not built or the library is missing.
 * @throws Error (code `APM_INIT` / `APM_CONFIG`) when the APM refuses the configuration.
 */
export function createVoiceProcessor(
  settings: Partial<VoiceProcessingSettings> = {},
  aec: AecModes = {},
): VoiceProcessor {
  addon ??= loadApmAddon();
  const current: VoiceProcessingSettings = { ...DEFAULT_VOICE_PROCESSING, ...settings };
  let engaged = true;
  let aecRunning = current.echoCancellation;
  const native = new addon.Apm({ ...current, ...aec, noiseSuppressionHigh: aecRunning });
  const applyAec = () => {
    const run = current.echoCancellation && engaged;
    if (run !== aecRunning) {
      native.setEchoCancellation(run);
      native.setNoiseSuppressionHigh(run);
    }
    aecRunning = run;
  };
  return {
    get settings() {
      return { ...current };
    },
    get bypassed() {
      return !current.echoCancellation && !current.noiseSuppression && !current.gainControl;
    },
    processRender: (frame) => native.processRender(frame),
    processCapture: (frame) => native.processCapture(frame),
    processCaptureInPlace: (frame) => native.processCaptureInPlace(frame),
    setStreamDelayMs: (ms) => native.setStreamDelayMs(ms),
    configure(next) {
      if (next.echoCancellation !== undefined && next.echoCancellation !== current.echoCancellation) {
        current.echoCancellation = next.echoCancellation;
        applyAec();
      }
      if (next.noiseSuppression !== undefined && next.noiseSuppression !== current.noiseSuppression) {
        native.setNoiseSuppression(next.noiseSuppression);
        current.noiseSuppression = next.noiseSuppression;
      }
      if (next.gainControl !== undefined && next.gainControl !== current.gainControl) {
        native.setGainControl(next.gainControl);
        current.gainControl = next.gainControl;
      }
    },
    setEchoCancellerEngaged(on) {
      engaged = on;
      applyAec();
    },
    echoMetrics: () => native.echoMetrics(),
  };
}
