import 'werift'; // werift before its polyfill: the polyfill's imports are undefined otherwise (DESIGN.md facts)
import { MediaStreamTrack, RTCRtpCodecParameters, useAudioLevelIndication, useSdesMid, type RtpPacket } from 'werift';
import { installPolyfill } from 'werift/polyfill';
import { installSrtpAead } from './aes-gcm';
import { OPUS_CLOCK_RATE, OPUS_PAYLOAD_TYPE } from './rtp-opus';

let installed: { loopbackOnly: boolean } | undefined;

/**
 * Puts werift's RTCPeerConnection (and MediaStream, …) on `globalThis`, once
 * per process, so that mediasoup-client's stock Chrome111 handler runs in
 * Node (group calls: main/core/room-client.ts). Opus with in-band FEC and DTX;
 * VP8 only because `Device.load` probes audio and video in one offer and
 * werift refuses a transceiver without codecs (docs/group-calls.md); the
 * `mid` and RFC 6464 audio-level header extensions (werift offers none by
 * default; the SFU's speaker detection reads the level). With
 * `loopbackOnly`, 127.0.0.1 only (one-machine tests and the demo).
 * A second call with other options keeps the first's (the polyfill is global).
 */
export function installWebrtcPolyfill(options: { loopbackOnly: boolean }): void {
  if (installed) return;
  installed = options;
  installSrtpAead();
  installPolyfill({
    mediaRegister: [],
    peerConnectionConfig: {
      codecs: {
        audio: [
          new RTCRtpCodecParameters({
            mimeType: 'audio/opus',
            clockRate: OPUS_CLOCK_RATE,
            channels: 2,
            payloadType: OPUS_PAYLOAD_TYPE,
            parameters: 'minptime=10;useinbandfec=1;usedtx=1',
          }),
        ],
        video: [new RTCRtpCodecParameters({ mimeType: 'video/VP8', clockRate: 90000, payloadType: 96 })],
      },
      headerExtensions: { audio: [useSdesMid(), useAudioLevelIndication()], video: [] },
      iceUseIpv6: false,
      iceAdditionalHostAddresses: ['127.0.0.1'],
      ...(options.loopbackOnly ? { iceInterfaceAddresses: { udp4: '127.0.0.1' } } : {}),
    },
  });
}

/** The URI of the RFC 6464 client-to-mixer audio level header extension. */
export const AUDIO_LEVEL_URI = 'urn:ietf:params:rtp-hdrext:ssrc-audio-level';

/**
 * A local audio track for mediasoup-client's `Transport.produce` whose RTP we
 * write ourselves (the CaptureChain's packets): werift's sender keeps our
 * sequence numbers, timestamps and marker bits and sets its SSRC, payload type
 * and its own header extensions beside ours.
 */
export function newRtpTrack(): { track: MediaStreamTrack; writeRtp(packet: RtpPacket): void; stop(): void } {
  const track = new MediaStreamTrack({ kind: 'audio' });
  return { track, writeRtp: (p) => track.writeRtp(p), stop: () => track.stop() };
}

/** Calls `listener` with every RTP packet a consumer's track (a werift MediaStreamTrack) receives; returns the unsubscribe. */
export function onTrackRtp(track: unknown, listener: (rtp: RtpPacket) => void): () => void {
  const t = track as MediaStreamTrack;
  return t.onReceiveRtp.subscribe((rtp) => listener(rtp)).unSubscribe;
}

/** What {@link completeIceRestart} reads of werift's RTCPeerConnection (private to mediasoup-client's handler). */
interface WeriftIcePeer {
  dtlsTransports: { iceTransport: { state: string; connection: { nominated?: unknown }; start(): Promise<void> } }[];
}

/**
 * Runs the ICE checks of an ICE restart that werift 0.25 leaves undone: after
 * `createOffer({ iceRestart: true })` and the answer, its `connect()` skips
 * `iceTransport.start()` because the DTLS transport is still connected, so the
 * restarted ICE agent never nominates a pair and the send side goes silent
 * (measured: 0 packets a second reach the SFU after mediasoup-client's
 * `Transport.restartIce`, 49 with this). Call it after `Transport.restartIce`;
 * it starts the checks on every ICE transport of the transport's peer
 * connection that has no nominated pair, and does nothing otherwise
 * (upstream-worthy: werift should start ICE again after a restart whatever
 * the DTLS state). Rejects when the checks fail (no candidate pair works).
 */
export async function completeIceRestart(transport: { handler: unknown }): Promise<void> {
  const pc = (transport.handler as { _pc?: WeriftIcePeer })._pc;
  if (!pc || !Array.isArray(pc.dtlsTransports)) return;
  await Promise.all(
    pc.dtlsTransports.map(async ({ iceTransport }) => {
      if (iceTransport.connection.nominated || iceTransport.state === 'closed') return;
      await iceTransport.start();
    }),
  );
}
