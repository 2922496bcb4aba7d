import {
  CipherContext,
  MediaStreamTrack,
  RTCIceCandidate,
  RTCPeerConnection,
  RTCRtpCodecParameters,
  type RTCRtpTransceiver,
  type RtpPacket,
} from 'werift';
import type { IceServer } from '../../common/protocol/signaling';
import type { TransportKind } from '../../common/call';
import { installSrtpAead } from './aes-gcm';
import type { ReportBlock } from './rate-control';
import type { ReceivedRtp, RtpTransport } from './rtp-transport';
import { mixSrtpKeys, type SrtpKeyBinding, type SrtpKeys } from './srtp-binding';
import { checkFingerprint } from './fingerprint';
import { OPUS_CLOCK_RATE, OPUS_FMTP, OPUS_PAYLOAD_TYPE, RED_FMTP, RED_PAYLOAD_TYPE, withPtime } from './rtp-opus';

/**
 * The WebRTC transport of one call: a werift RTCPeerConnection (ICE RFC 8445
 * with trickle, DTLS-SRTP RFC 5764) with one audio transceiver offering Opus
 * (RFC 7587) wrapped in RFC 2198 redundancy (`red`, preferred) or plain. When
 * `red` is negotiated werift wraps every packet we write with the previous
 * {@link Peer.setRedundancy} frames and unwraps (and de-duplicates) what it
 * receives, so the media session sees plain Opus packets either way.
 */
/**
 * werift 0.25 does not verify the DTLS handshake signatures (ServerKeyExchange,
 * CertificateVerify) nor the peer's Finished, so a relay could show each side
 * the other's certificate (RFC 8827 §6.5). patches/werift+0.25.2.patch adds the
 * checks and `npm ci` applies it; a werift without them must never carry a call.
 * @throws Error when the installed werift lacks the patch.
 */
export function assertDtlsAuthenticated(): void {
  const proto = CipherContext.prototype as unknown as Record<string, unknown>;
  if (typeof proto['verifyServerKeyExchange'] !== 'function' || typeof proto['verifyCertificateVerify'] !== 'function') {
    throw new Error(
      "werift is missing Parley's DTLS handshake-authentication patch (patches/werift+0.25.2.patch): reinstall with `npm ci`; refusing to run a call over unauthenticated DTLS",
    );
  }
}

/** Why a transport's DTLS handshake failed, when it was not authenticated (see {@link Peer.dtlsAuthFailure}). */
export interface DtlsAuthFailure {
  /** `ERR_DTLS_HANDSHAKE_AUTH`: a signature or Finished did not verify; `ERR_DTLS_ALERT`: the peer ended the handshake with a fatal alert. */
  code: 'ERR_DTLS_HANDSHAKE_AUTH' | 'ERR_DTLS_ALERT';
  message: string;
}

export interface PeerOptions {
  iceServers: IceServer[];
  /** `relay` forces media through TURN (W3C webrtc-pc §4.2.1 RTCIceTransportPolicy). */
  iceTransportPolicy: 'all' | 'relay';
  /**
   * Gather only 127.0.0.1 host candidates (tests and the demo on one machine;
   * werift skips loopback otherwise).
   */
  loopbackOnly: boolean;
  /** Packet duration we send and ask for with `a=ptime`, ms. */
  ptimeMs: 10 | 20;
}

/** W3C webrtc-pc RTCPeerConnectionState. */
export type PeerConnectionState = 'new' | 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed';

export type SessionDescription = { type: 'offer' | 'answer'; sdp: string };
export type CandidateInit = { candidate: string; sdpMid?: string | null; sdpMLineIndex?: number | null };

/** What {@link countRedundancyRecoveries} needs of werift's RFC 2198 unwrapper. */
type RedUnwrapper = { push(red: unknown, base: RtpPacket): RtpPacket[] };

/**
 * Counts the packets a receiver got only from RFC 2198 redundancy (RFC 2198
 * §2: each packet repeats earlier frames): werift's RED handler (private
 * field `audioRedHandler` of werift 0.25's RTCRtpReceiver) unwraps each `red`
 * packet into its blocks and drops the copies it has already seen, so a
 * block it passes on that is not the packet's own primary (its sequence
 * number is older) is a packet whose own had not arrived. `onRecovered` is
 * called once per such packet. A receiver without the field is left as it is
 * (nothing is counted).
 */
export function countRedundancyRecoveries(receiver: object, onRecovered: () => void): void {
  const handler = (receiver as { audioRedHandler?: RedUnwrapper }).audioRedHandler;
  if (!handler || typeof handler.push !== 'function') return;
  const push = handler.push.bind(handler);
  handler.push = (red, base) => {
    const out = push(red, base);
    for (const p of out) if (p.header.sequenceNumber !== base.header.sequenceNumber) onRecovered();
    return out;
  };
}

export class Peer implements RtpTransport {
  readonly pc: RTCPeerConnection;
  readonly transceiver: RTCRtpTransceiver;
  /** Our outgoing audio track: write RTP packets to it. */
  readonly track = new MediaStreamTrack({ kind: 'audio' });
  private readonly pendingCandidates: CandidateInit[] = [];
  private remoteTrack: MediaStreamTrack | undefined;
  private readonly rtpListeners: ((rtp: RtpPacket) => void)[] = [];
  private remoteSet = false;
  /** The remote description as it was given (the sealed SDP of a Parley peer), once applied. */
  private remoteSdp: string | undefined;
  /** The sealed secret the SRTP keys are bound to; `none` for a peer that sent none; undefined until decided. */
  private srtpBinding: SrtpKeyBinding | 'none' | undefined;
  private srtpBound = false;
  private redRecovered = 0;

  constructor(private readonly options: PeerOptions) {
    assertDtlsAuthenticated();
    installSrtpAead();
    this.pc = new RTCPeerConnection({
      codecs: {
        audio: [
          new RTCRtpCodecParameters({
            mimeType: 'audio/red',
            clockRate: OPUS_CLOCK_RATE,
            channels: 2,
            payloadType: RED_PAYLOAD_TYPE,
            parameters: RED_FMTP,
          }),
          new RTCRtpCodecParameters({
            mimeType: 'audio/opus',
            clockRate: OPUS_CLOCK_RATE,
            channels: 2,
            payloadType: OPUS_PAYLOAD_TYPE,
            parameters: OPUS_FMTP,
          }),
        ],
        video: [],
      },
      headerExtensions: { audio: [], video: [] },
      iceServers: options.iceServers.map((s) => ({
        urls: s.urls,
        ...(s.username !== undefined ? { username: s.username } : {}),
        ...(s.credential !== undefined ? { credential: s.credential } : {}),
      })),
      iceTransportPolicy: options.iceTransportPolicy,
      iceUseIpv6: !options.loopbackOnly,
      ...(options.loopbackOnly
        ? { iceAdditionalHostAddresses: ['127.0.0.1'], iceInterfaceAddresses: { udp4: '127.0.0.1' } }
        : {}),
    });
    this.transceiver = this.pc.addTransceiver(this.track, { direction: 'sendrecv' });
    countRedundancyRecoveries(this.transceiver.receiver, () => this.redRecovered++);
    this.installKeyMixer();
    // The remote track appears while the remote description is applied, which
    // may be before anyone listens: keep it and attach listeners whenever they come.
    this.pc.onTrack.subscribe((track) => {
      this.remoteTrack = track;
      for (const l of this.rtpListeners) track.onReceiveRtp.subscribe((rtp) => l(rtp));
    });
  }

  /**
   * How many earlier frames each packet repeats when `red` was negotiated
   * (0–2; werift's RED encoder). Without `red` it has no effect.
   */
  setRedundancy(distance: number): void {
    this.transceiver.sender.redDistance = Math.max(0, Math.min(2, Math.round(distance)));
  }

  /**
   * RtpTransport: received packets that came from a later packet's RFC 2198
   * redundancy because their own had not arrived (lost, or overtaken).
   */
  get packetsRecoveredByRedundancy(): number {
    return this.redRecovered;
  }

  /** Whether the packets we send are RFC 2198 redundant audio (both sides offered `red`). */
  get sendsRedundancy(): boolean {
    return this.transceiver.sender.codec?.name.toLowerCase() === 'red';
  }

  /**
   * Binds this transport's SRTP master keys to the call's sealed secret
   * (main/media/srtp-binding.ts), or says there is none (`undefined`: a peer
   * whose sealed offer or answer carried no share, e.g. a browser). Must be
   * called before DTLS completes: keys asked for while undecided fail the
   * transport (fail closed). Calling it again has no effect.
   */
  bindSrtpKeys(binding: SrtpKeyBinding | undefined): void {
    this.srtpBinding ??= binding ?? 'none';
  }

  /** Whether the SRTP keys in use were mixed with the sealed secret. */
  get srtpKeysBound(): boolean {
    return this.srtpBound;
  }

  /**
   * RtpTransport: sends one RTP packet of our audio stream, handed straight
   * to the transceiver's sender (which sets SSRC, payload type and sequence
   * numbers, adds RED, seals it with SRTP and sends it on the ICE pair).
   * Not through `track.writeRtp`: werift's track copies the packet again for
   * each track of its broadcast source and runs two event lists before the
   * same sender gets it (≈ 2 % of the media thread at 10 ms packets).
   * Never throws: a packet the transport cannot send is dropped and counted
   * nowhere, as on any lossy path.
   */
  sendRtp(packet: RtpPacket): void {
    this.transceiver.sender.sendRtp(packet).catch(() => {});
  }

  /** RtpTransport: received RTP of the remote audio track. */
  onRtp(listener: (rtp: ReceivedRtp) => void): void {
    this.onRemoteRtp(listener);
  }

  /** RtpTransport: receiver report blocks about our stream, with werift's RTT (from our SR's send time). */
  onReceiverReport(listener: (block: ReportBlock, rttMs: number | undefined) => void): void {
    const sender = this.transceiver.sender;
    sender.onRtcp.subscribe((packet) => {
      if (!('reports' in packet)) return;
      // werift computes the RTT from the report and its own SR send time (a private field, seconds).
      const rtt = (sender as unknown as { rtt?: number }).rtt;
      for (const report of packet.reports) {
        if (report.ssrc === sender.ssrc) listener(report, rtt !== undefined ? rtt * 1000 : undefined);
      }
    });
  }

  /** Received RTP of the remote audio track (SRTP already removed). */
  onRemoteRtp(listener: (rtp: RtpPacket) => void): void {
    this.rtpListeners.push(listener);
    this.remoteTrack?.onReceiveRtp.subscribe((rtp) => listener(rtp));
  }

  /** Trickled local candidates; `undefined` marks the end of gathering. */
  onCandidate(listener: (candidate: CandidateInit | undefined) => void): void {
    this.pc.onIceCandidate.subscribe((c) => {
      if (!c) return listener(undefined);
      const json = c.toJSON();
      listener({ candidate: json.candidate, sdpMid: json.sdpMid ?? null, sdpMLineIndex: json.sdpMLineIndex ?? null });
    });
  }

  /** Creates the offer and applies it locally. */
  async createOffer(): Promise<SessionDescription> {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this.installKeyMixer();
    return { type: 'offer', sdp: withPtime(this.pc.localDescription!.sdp, this.options.ptimeMs) };
  }

  /** Applies the remote offer, creates the answer and applies it locally. */
  async acceptOffer(offer: string): Promise<SessionDescription> {
    await this.setRemote({ type: 'offer', sdp: offer });
    // The answering side must send too (DESIGN.md facts: werift otherwise answers recvonly).
    this.transceiver.setDirection('sendrecv');
    await this.transceiver.sender.replaceTrack(this.track);
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    return { type: 'answer', sdp: withPtime(this.pc.localDescription!.sdp, this.options.ptimeMs) };
  }

  /** Applies the remote answer. */
  async acceptAnswer(answer: string): Promise<void> {
    await this.setRemote({ type: 'answer', sdp: answer });
  }

  /** Adds a trickled remote candidate; held until the remote description is set. */
  async addCandidate(candidate: CandidateInit): Promise<void> {
    if (!this.remoteSet) {
      this.pendingCandidates.push(candidate);
      return;
    }
    await this.pc.addIceCandidate(
      new RTCIceCandidate({
        candidate: candidate.candidate,
        ...(candidate.sdpMid != null ? { sdpMid: candidate.sdpMid } : {}),
        ...(candidate.sdpMLineIndex != null ? { sdpMLineIndex: candidate.sdpMLineIndex } : {}),
      }),
    );
  }

  /** Resolves when ICE and DTLS are connected; rejects on failure or after `timeoutMs`. */
  connected(timeoutMs: number): Promise<void> {
    if (this.pc.connectionState === 'connected') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        sub.unSubscribe();
        reject(new Error(`media did not connect within ${Math.round(timeoutMs / 1000)} s (ICE/DTLS)`));
      }, timeoutMs);
      const sub = this.pc.connectionStateChange.subscribe((state) => {
        if (state === 'connected') {
          clearTimeout(timer);
          sub.unSubscribe();
          resolve();
        } else if (state === 'failed' || state === 'closed') {
          clearTimeout(timer);
          sub.unSubscribe();
          reject(new Error(`media connection ${state} (ICE/DTLS)`));
        }
      });
    });
  }

  /**
   * The transport's connection state (W3C webrtc-pc RTCPeerConnectionState:
   * `new`, `connecting`, `connected`, `disconnected`, `failed`, `closed`) on every change.
   */
  onConnectionState(listener: (state: PeerConnectionState) => void): void {
    this.pc.connectionStateChange.subscribe((state) => listener(state));
  }

  /**
   * Waits until ICE gathering completes (or `timeoutMs`, ms) and returns the
   * local description's SDP then, with our `a=ptime`: the candidates gathered
   * so far are in it (for a peer that takes no trickled candidates).
   * @throws Error when no local description was set.
   */
  async gatheredSdp(timeoutMs: number): Promise<string> {
    if (this.pc.iceGatheringState !== 'complete') {
      await new Promise<void>((resolve) => {
        const sub = this.pc.iceGatheringStateChange.subscribe((state) => {
          if (state !== 'complete') return;
          clearTimeout(timer);
          sub.unSubscribe();
          resolve();
        });
        const timer = setTimeout(() => {
          sub.unSubscribe();
          resolve();
        }, timeoutMs);
      });
    }
    const local = this.pc.localDescription;
    if (!local) throw new Error('no local description to send');
    return withPtime(local.sdp, this.options.ptimeMs);
  }

  /** Kind of the local candidate of the selected pair, once connected. */
  transportKind(): TransportKind | undefined {
    for (const t of this.pc.iceTransports) {
      const pair = t.getSelectedCandidatePair();
      const type = pair ? / typ (host|srflx|prflx|relay)/.exec(pair.local.candidate)?.[1] : undefined;
      if (type) return type as TransportKind;
    }
    return undefined;
  }

  /**
   * Calls `listener` once, as soon as ICE and DTLS are connected and the DTLS
   * certificate the far end presented matches a fingerprint of the remote
   * description applied here (RFC 8827 §6.5, RFC 5763 §5: the same check the
   * call engine makes against the sealed SDP). The media thread starts sending
   * then, without waiting for the call engine's round trip. Called at once
   * when that already holds; never for a transport that fails, closes or
   * presents another certificate.
   */
  onceAuthenticated(listener: () => void): void {
    let done = false;
    const check = () => {
      if (done || this.pc.connectionState !== 'connected' || this.remoteSdp === undefined) return;
      if (checkFingerprint(this.remoteCertificate(), this.remoteSdp) !== 'match') return;
      done = true;
      sub?.unSubscribe();
      listener();
    };
    const sub = this.pc.connectionStateChange.subscribe(() => check());
    check();
  }

  /**
   * The DER certificate the remote side presented in the DTLS handshake
   * (RFC 5763 §5), once DTLS got that far; undefined before.
   */
  remoteCertificate(): Uint8Array | undefined {
    try {
      const der = this.transceiver.dtlsTransport?.dtls?.remoteCertificate;
      return der ? new Uint8Array(der) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Set when the DTLS handshake failed because the peer did not prove
   * possession of its certificate's key (or ended the handshake with a fatal
   * alert): the patched werift keeps the error on RTCDtlsTransport.handshakeFailure.
   */
  dtlsAuthFailure(): DtlsAuthFailure | undefined {
    const failure = (this.transceiver.dtlsTransport as unknown as { handshakeFailure?: { code?: string; message?: string } } | undefined)
      ?.handshakeFailure;
    if (failure?.code === 'ERR_DTLS_HANDSHAKE_AUTH' || failure?.code === 'ERR_DTLS_ALERT') {
      return { code: failure.code, message: failure.message ?? 'DTLS handshake not authenticated' };
    }
    return undefined;
  }

  async close(): Promise<void> {
    await this.pc.close().catch(() => {});
  }

  /**
   * Puts the key mixer on the transceiver's DTLS transport (the patched
   * werift calls RTCDtlsTransport.srtpKeyMixer when it derives the SRTP keys).
   */
  private installKeyMixer(): void {
    const transport = this.transceiver.dtlsTransport as unknown as
      | { srtpKeyMixer?: (keys: SrtpKeys, role: 'client' | 'server') => SrtpKeys }
      | undefined;
    if (!transport || transport.srtpKeyMixer) return;
    transport.srtpKeyMixer = (keys, role) => {
      const binding = this.srtpBinding;
      if (binding === undefined) throw new Error('the SRTP keys were needed before the sealed offer and answer bound them');
      if (binding === 'none') return keys;
      const mixed = mixSrtpKeys(keys, role, binding);
      this.srtpBound = true;
      return mixed;
    };
  }

  private async setRemote(description: SessionDescription): Promise<void> {
    await this.pc.setRemoteDescription(description);
    this.remoteSdp = description.sdp;
    this.installKeyMixer();
    this.remoteSet = true;
    for (const c of this.pendingCandidates.splice(0)) await this.addCandidate(c);
  }
}
