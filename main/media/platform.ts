import { lastBackend, listAudioDevices, PERIOD_SAMPLES, SAMPLE_RATE, type AudioDeviceInfo } from '../../native/audio-device';
import { ownStreamLatencyMs } from '../../native/audio-device/pulse';
import {
  createVoiceProcessor,
  DEFAULT_VOICE_PROCESSING,
  type VoiceProcessingSettings,
  type VoiceProcessor,
} from '../../native/apm';
import { createOpusDecoder, createOpusEncoder } from '../../native/opus';
import type { MediaPlatform } from '../core/call-engine';
import { AudioRouter } from './audio-router';
import { EchoGatedProcessor } from './echo-path';
import type { MediaWorkerHost } from './worker/host';

/** Encoder settings for voice (RFC 6716 VOIP application). */
export interface OpusSettings {
  /** bits per second; 32 kb/s is transparent for wideband speech. */
  bitrate: number;
  /** In-band FEC (RFC 6716 §2.1.7), on so a peer that can decode it benefits. */
  fec: boolean;
  dtx: boolean;
  /**
   * Expected packet loss, %, steering how much FEC the encoder spends. At
   * 32 kb/s libopus 1.3 codes no FEC at all in 10 ms frames below ~10 %
   * (docs/opus-decoder.md), so the default is 10.
   */
  expectedLossPercent: number;
  /** Encoder complexity 0–10; 9 is what WebRTC uses on desktop (10, libopus's default, costs more for little). */
  complexity: number;
}

export const DEFAULT_OPUS: OpusSettings = { bitrate: 32_000, fec: true, dtx: false, expectedLossPercent: 10, complexity: 9 };

/** Audio queued ahead of PortAudio by native/audio-device's playback (its default), ms. */
const PLAYBACK_QUEUE_MS = 10;

/**
 * The local audio of the daemon or app: the device router and the voice
 * processing settings, both changeable while a call runs.
 */
export class LocalAudio {
  private processing: VoiceProcessingSettings;
  private current: VoiceProcessor | undefined;
  private readonly processingListeners: ((settings: VoiceProcessingSettings) => void)[] = [];
  /** Why voice processing is unavailable (the addon could not load), once known. */
  processingUnavailable: string | undefined;

  constructor(
    readonly router: AudioRouter,
    processing: Partial<VoiceProcessingSettings> = {},
  ) {
    this.processing = { ...DEFAULT_VOICE_PROCESSING, ...processing };
  }

  /** Called with the new settings whenever they change (the media worker applies them to its live call). */
  onProcessingChange(listener: (settings: VoiceProcessingSettings) => void): void {
    this.processingListeners.push(listener);
  }

  /** The voice processing settings for new calls (and the live one). */
  getProcessing(): VoiceProcessingSettings {
    return { ...this.processing };
  }

  /** Changes the settings for later calls and for the live one. */
  setProcessing(next: Partial<VoiceProcessingSettings>): VoiceProcessingSettings {
    this.processing = { ...this.processing, ...next };
    this.current?.configure(this.processing);
    for (const l of this.processingListeners) l(this.getProcessing());
    return this.getProcessing();
  }

  /** A processor for a new call, or undefined (with `processingUnavailable` set) when the addon cannot load. */
  newProcessor(): VoiceProcessor | undefined {
    try {
      this.current = createVoiceProcessor(this.processing);
      return this.current;
    } catch (e) {
      this.processingUnavailable = e instanceof Error ? e.message : String(e);
      return undefined;
    }
  }
}

/**
 * The real platform: PortAudio devices (native/audio-device) routed by
 * `audio.router` (PulseAudio names, follow-default, fallback), voice
 * processing (native/apm) and libopus (native/opus). Devices are opened per
 * call and closed when it ends. With `worker`, 1:1 calls run on that media
 * thread (its `backend`), which opens its own devices and codec.
 */
export function mediaPlatform(audio: LocalAudio, opus: OpusSettings = DEFAULT_OPUS, worker?: MediaWorkerHost): MediaPlatform {
  return {
    // 1:1 calls' media on the media thread when there is one (main/media/worker/); group calls use openAudio below.
    ...(worker ? { backend: worker.backend() } : {}),
    async openAudio(frameMs) {
      const { source, sink } = await audio.router.open(frameMs);
      const processor = audio.newProcessor();
      return {
        source,
        sink,
        // The echo canceller hears the far end only while an echo path may exist.
        ...(processor ? { processor: new EchoGatedProcessor(processor, () => performance.now()) } : {}),
        // Speaker-to-microphone delay: our playback queue and period, plus
        // what PulseAudio measures for our two streams (buffer + device).
        deviceDelayMs: () => deviceDelayMs(audio.router.pulse, { source, sink }),
      };
    },
    createCodec(frameMs) {
      return {
        encoder: createOpusEncoder({ frameMs, ...opus }),
        decoder: createOpusDecoder(),
      };
    },
  };
}

/** A stream that may know its own measured latency (the libpulse path's RoutedCapture / RoutedPlayback). */
interface MeasuredStream {
  latencyMs?(): number | undefined;
}

/**
 * The devices' speaker-to-microphone delay, ms: our playback queue and period,
 * plus what PulseAudio measures for this process's two streams (buffer +
 * device); undefined without PulseAudio or before both streams exist.
 *
 * `streams` that measure their own latency (libpulse: pa_stream_get_latency)
 * answer in-process, or not yet (undefined: no timing update so far, or the
 * streams are closed). Only on the PortAudio path is `pactl` asked, a process started from this
 * thread: that forks the daemon first, which here stalled the calling thread
 * for 100–140 ms — on the media thread, 300 ms into every call, the start-up
 * delay spike the jitter buffer then held for 2 s (docs/audio.md).
 */
export async function deviceDelayMs(pulse: boolean, streams?: { source: MeasuredStream; sink: MeasuredStream }): Promise<number | undefined> {
  if (!pulse) return undefined;
  const ownInput = streams?.source.latencyMs?.();
  const ownOutput = streams?.sink.latencyMs?.();
  if (ownInput !== undefined && ownOutput !== undefined) return ownOutput + ownInput;
  // Straight through libpulse the streams answer for themselves once the server's first timing update is
  // in (the caller asks again), or are closed: never start a process for it from here.
  if (lastBackend === 'pulse') return undefined;
  const { outputMs, inputMs } = await ownStreamLatencyMs();
  if (outputMs === undefined || inputMs === undefined) return undefined;
  // Straight through libpulse the server's figures cover our whole buffer; through PortAudio its queue comes first.
  const ours = lastBackend === 'portaudio' ? PLAYBACK_QUEUE_MS + (PERIOD_SAMPLES * 1000) / SAMPLE_RATE : 0;
  return ours + outputMs + inputMs;
}

/** Where a crash in native code (the audio, codec and voice-processing addons) leaves its backtrace: native/crash-log.ts. */
export { installCrashLog } from '../../native/crash-log';

/** Audio devices PortAudio sees. */
export function listDevices(): AudioDeviceInfo[] {
  return listAudioDevices();
}
