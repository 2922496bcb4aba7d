import {
  devicesSettled,
  listAudioDevices,
  openCapture,
  openPlayback,
  type AudioDeviceInfo,
} from '../../native/audio-device';
import { createOpusDecoder, createOpusEncoder } from '../../native/opus';
import type { MediaPlatform } from '../core/call-engine';

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

/**
 * The real platform: PortAudio devices (native/audio-device) and libopus
 * (native/opus). Devices are opened per call and closed when it ends.
 */
export function mediaPlatform(devices: { input?: string; output?: string }, opus: OpusSettings = DEFAULT_OPUS): MediaPlatform {
  return {
    async openAudio(frameMs) {
      await devicesSettled();
      const source = openCapture({ device: devices.input, frameMs });
      try {
        return { source, sink: openPlayback({ device: devices.output, frameMs }) };
      } catch (e) {
        void source.close();
        throw e;
      }
    },
    createCodec(frameMs) {
      return {
        encoder: createOpusEncoder({ frameMs, ...opus }),
        decoder: createOpusDecoder(),
      };
    },
  };
}

/** Audio devices PortAudio sees. */
export function listDevices(): AudioDeviceInfo[] {
  return listAudioDevices();
}
