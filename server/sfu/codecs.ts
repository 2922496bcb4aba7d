import type { types } from 'mediasoup';

/**
 * The one codec a room's router offers: Opus (RFC 7587), 48 kHz. mediasoup
 * and WebRTC's SDP name Opus with 2 channels whatever is sent (RFC 7587 §7:
 * "opus/48000/2"); Parley sends mono. `useinbandfec=1` lets senders add
 * in-band FEC (LBRR, RFC 6716 §2.1.7) and `usedtx=1` discontinuous
 * transmission (RFC 7587 §3.1.3): silence costs ~1 packet per 400 ms, which
 * is most of the time in a group call.
 */
export const ROOM_MEDIA_CODECS: types.RouterRtpCodecCapability[] = [
  {
    kind: 'audio',
    mimeType: 'audio/opus',
    preferredPayloadType: 111,
    clockRate: 48000,
    channels: 2,
    parameters: { useinbandfec: 1, usedtx: 1, minptime: 10 },
    rtcpFeedback: [{ type: 'transport-cc' }],
  },
];

/** How often the AudioLevelObserver reports the loudest producers, ms. */
export const AUDIO_LEVEL_INTERVAL_MS = 300;
/** Producers quieter than this are not reported, dBov (−127 silence … 0 loudest). */
export const AUDIO_LEVEL_THRESHOLD_DBOV = -70;
/** How often the ActiveSpeakerObserver decides on the dominant speaker, ms (mediasoup's default). */
export const ACTIVE_SPEAKER_INTERVAL_MS = 300;
