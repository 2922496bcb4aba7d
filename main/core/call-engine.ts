import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { EndReason, RejectReason, TransportKind } from '../../common/call';
import { ParleyError } from '../../common/errors';
import type { CallStatsNotification, CallStatus } from '../../common/protocol/control';
import { MAX_SEALED_DEVICES, type Envelope, type EnvelopeContent, type SecurityReason } from '../../common/protocol/envelope';
import type { IceServer, SignalNotificationParams, SignalParams } from '../../common/protocol/signaling';
import {
  MediaSession,
  type AudioLevels,
  type AudioSink,
  type AudioSource,
  type CaptureProcessor,
  type FrameDecoder,
  type FrameEncoder,
} from '../media/media-session';
import { warmUpMediaPath } from '../media/warmup';
import { Peer, type CandidateInit, type PeerOptions, type SessionDescription } from '../media/peer';
import type { CallMedia, CallPeer, MediaBackend, MediaSessionSettings } from '../media/media-backend';
import { estimateMos } from '../media/quality';
import { nextCallState, type CallEvent } from './call-states';
import { SealError, checkFingerprint, type EndToEnd, type SealedCall } from './e2ee';
import { NetworkWatcher } from './network-watcher';
import type { SignalingClient } from './signaling-client';

/** Media settings of the engine. */
export interface MediaConfig {
  /** Frame / RTP packet duration, ms. */
  frameMs: 10 | 20;
  /** Fixed jitter buffer target, ms; undefined: adaptive (the default). */
  jitterTargetMs?: number;
  /** Force media through TURN (ICE transport policy `relay`). */
  forceRelay: boolean;
  /** Gather 127.0.0.1 only (one-machine tests and the demo). */
  loopbackOnly: boolean;
  /** How long ICE + DTLS may take before the call fails, ms. */
  connectTimeoutMs: number;
  /** A connected call whose peer sends nothing for this long ends as `failed`, ms. */
  mediaTimeoutMs: number;
  dtx: boolean;
}

/** What the engine needs from the platform: audio devices and the codec. */
export interface MediaPlatform {
  /**
   * Opens (does not start) the microphone and speaker for a call.
   * @throws an error naming the device that cannot be opened.
   */
  openAudio(frameMs: 10 | 20): Promise<{
    source: AudioSource;
    sink: AudioSink;
    /** Voice processing for this call's microphone (echo cancellation etc.), when available. */
    processor?: CaptureProcessor;
    /** The devices' speaker-to-microphone delay, ms, for the echo canceller. */
    deviceDelayMs?: () => Promise<number | undefined>;
  }>;
  createCodec(frameMs: 10 | 20): { encoder: FrameEncoder; decoder: FrameDecoder };
  /**
   * Where 1:1 calls' media runs when not in this thread: the media worker
   * (main/media/worker/host.ts), which opens devices and codecs itself.
   * Without it, calls run in this thread on `openAudio` and `createCodec`.
   */
  backend?: MediaBackend;
}

/** Resources and data each call state owns (STYLE.md: states own their resources). */
type CallData =
  | { name: 'outgoing' | 'ringing'; peer: CallPeer }
  | { name: 'incoming'; offer: string; candidates: CandidateInit[] }
  | { name: 'connecting'; peer: CallPeer; media: CallMedia }
  | { name: 'active' | 'held'; peer: CallPeer; media: CallMedia; statsTimer: NodeJS.Timeout }
  | { name: 'ended'; reason: EndReason };

interface Call {
  id: string;
  direction: 'outgoing' | 'incoming';
  peerName: string;
  data: CallData;
  status: CallStatus;
  /** Local candidates gathered before the server knew the call (before the invite result); null: end of candidates. */
  localCandidates: (CandidateInit | null)[] | undefined;
  /** End-to-end sealing state: every SDP and candidate of the call goes through it (none for a call refused on arrival). */
  sealed: SealedCall | undefined;
  /** An ICE restart under way (a second transport, connecting while the first one is kept). */
  restart?: IceRestart;
  /** ICE restarts begun on this side so far (picks the relay to try next). */
  restarts: number;
  /**
   * The offer of a standard WebRTC peer brought over the control socket
   * ({@link CallEngine.answerOffer}); such a call has no signaling and no sealing.
   */
  standardOffer?: string;
  /** Sealed messages (candidates, restart offers and answers) on their way to the server, in sequence order. */
  outbox: Outbox;
  /** The latest restart generation begun (caller) or answered (callee); 0 before any. */
  restartGen: number;
  /** `call.candidate` notifications of this call received so far (reported in `hello`: the server re-sends the rest). */
  received: number;
  /** Callee side: repeats our `restart-request` while our inbound audio is lost. */
  restartAsk?: NodeJS.Timeout;
  /** Caller side: when the callee last asked for a restart, Unix ms. */
  peerAskedAt?: number;
  /** When the audio last moved onto a restart's transport on this side, Unix ms. */
  switchedAt?: number;
  /** The transport the last restart replaced, kept until the peer says it switched too (or RETIRE_AFTER_MS). */
  previous?: { peer: CallPeer; gen: number; timer: NodeJS.Timeout };
  /** The server's words about a policy limit near (`call.warning`), shown until the call ends. */
  policyWarning?: string;
}

/**
 * The sealed messages of one call not yet accepted by the server, in order.
 * They are numbered (docs/SECURITY.md): one lost would end the call
 * `replayed` at the peer, so while signaling is offline they wait, and go
 * out in order when it is back.
 */
interface Outbox {
  queue: SignalParams<'call.candidate'>[];
  /** A drain is running (one at a time keeps the order). */
  draining: boolean;
}

/** How long the answer to a standard WebRTC offer waits for ICE gathering to complete, ms. */
const STANDARD_GATHER_MS = 3000;

/**
 * One ICE restart (RFC 8445 §2.4; JSEP RFC 8829 §3.5.1, done as a new
 * transport): a new peer connection that gathers on the next relay and runs
 * ICE and DTLS while the old one stays in place, make before break.
 */
interface IceRestart {
  /** Its generation (1, 2, …; the caller counts), sealed in its offer and answer. */
  gen: number;
  /** The peer said it moved its audio onto this transport (`switched`). */
  peerSwitched: boolean;
  /** Undefined for the moment between a remote offer and our new peer. */
  peer: CallPeer | undefined;
  /** The remote SDP of the new transport (sealed offer or answer), once known. */
  remoteSdp: string | undefined;
  /** Remote candidates that came before the remote SDP was applied; undefined once applied. */
  pending: CandidateInit[] | undefined;
  timer: NodeJS.Timeout | undefined;
}

/** An ICE restart that has not connected in this long is given up (and, by the caller, tried on the next relay), ms. */
const RESTART_TIMEOUT_MS = 5000;
/** A transport replaced by a restart is closed when the peer says it switched too, or after this long, ms. */
const RETIRE_AFTER_MS = 3000;

/**
 * The ICE servers with the TURN URLs rotated by `attempt`: werift uses the
 * first TURN URL it is given, so restart n tries the n-th relay the server
 * listed (another path when the one in use disappeared).
 */
export function rotateRelays(servers: IceServer[], attempt: number): IceServer[] {
  return servers.map((s) => {
    const urls = Array.isArray(s.urls) ? s.urls : [s.urls];
    const turn = urls.filter((u) => /^turns?:/.test(u));
    if (turn.length < 2) return s;
    const k = attempt % turn.length;
    const rotated = [...turn.slice(k), ...turn.slice(0, k)];
    return { ...s, urls: [...rotated, ...urls.filter((u) => !/^turns?:/.test(u))] };
  });
}

/**
 * Removes from the call's queue the local candidates that the description
 * about to be sealed already holds. werift writes the candidates gathered so
 * far into its local description (`a=candidate`, and `a=end-of-candidates`
 * once gathering completed: RFC 8839 §5.1, §5.2), and werift on the other side
 * takes them from there when it applies the description. werift gathers
 * host, server-reflexive and relay candidates before it returns a description,
 * so normally that is all of them and nothing trickles: sending each one again
 * would cost an ML-KEM-768 encapsulation per candidate here and a
 * decapsulation on the peer, on the answer's critical path. A candidate
 * gathered later (past werift's gathering timeout) still trickles, sealed, in order.
 */
export function dropCandidatesInSdp(call: { localCandidates: (CandidateInit | null)[] | undefined }, sdp: string): void {
  const queued = call.localCandidates;
  if (!queued?.length) return;
  const lines = new Set(sdp.split(/\r?\n/));
  call.localCandidates = queued.filter((c) => !lines.has(c === null ? 'a=end-of-candidates' : `a=${c.candidate}`));
}

/** A call's sealing state. @throws SealError when the call has none (it was refused on arrival). */
function sealedOf(call: Call): SealedCall {
  if (!call.sealed) throw new SealError('envelope_invalid', 'this call has no end-to-end session');
  return call.sealed;
}

/**
 * The softphone's call engine: one state machine per call (the table in
 * `call-states.ts`), driven by the user (create/answer/reject/end/hold) and by
 * signaling notifications, owning each call's peer connection and media
 * session through its state. One call is live at a time; a second invite gets
 * `busy`. Emits `call` with a fresh CallStatus on every change.
 *
 * End-to-end security (docs/SECURITY.md): offers, answers and candidates are
 * sealed for the peer device and signed (`EndToEnd`); anything that does not
 * open, verify or come in sequence ends the call `failed` with a `security`
 * reason, reported to the server (`call.security`) so both sides end. Media is
 * accepted only when the DTLS certificate matches the fingerprint of the SDP
 * that arrived sealed.
 */
export class CallEngine extends EventEmitter<{
  call: [CallStatus];
  stats: [CallStatsNotification];
  /** 20 Hz during a call (CallMedia `levels`). */
  levels: [AudioLevels & { callId: string }];
  /** The mic-open flag (mute, push-to-talk) or the output gain changed: a group call follows them too. */
  controls: [{ micOpen: boolean; outputGain: number }];
}> {
  private readonly calls = new Map<string, Call>();
  /** The host's interfaces and addresses, watched while the engine runs. */
  private readonly network = new NetworkWatcher();
  /** Transports replaced by an ICE restart or given up. */
  private readonly retired = new WeakSet<CallPeer>();
  /** Where the calls' transports and media sessions are built (this thread, or the media worker). */
  private readonly backend: MediaBackend;
  private relay: { iceServers: IceServer[]; expiresAt: number } | undefined;
  autoAnswer = false;
  /**
   * What else holds the audio devices (a group call: main/core/room-client.ts),
   * as a sentence, or undefined: while it says something, calls are refused
   * (`invalid_state`) and incoming ones are turned away as `busy`.
   */
  busyWith: () => string | undefined = () => undefined;
  private micOpen = true;
  private outputGain = 1;

  constructor(
    private readonly signaling: SignalingClient,
    private readonly platform: MediaPlatform,
    private readonly config: MediaConfig,
    private readonly e2ee: EndToEnd,
  ) {
    super();
    this.backend = platform.backend ?? inThreadBackend(platform);
    signaling.on('call.incoming', (p) => void this.onIncoming(p));
    signaling.on('call.ringing', (p) => this.onRemoteRinging(p.callId));
    signaling.on('call.answered', (p) => void this.onAnswered(p));
    signaling.on('call.candidate', (p) => {
      const call = this.calls.get(p.callId);
      if (call) call.received++;
      void this.onRemoteCandidate(p.callId, p.envelope);
    });
    signaling.on('call.ended', (p) => {
      const call = this.calls.get(p.callId);
      if (p.security && call && call.data.name !== 'ended') call.status.security = p.security;
      this.finish(p.callId, p.reason, p.security ? `the call failed an end-to-end security check on the other side (${p.security})` : undefined);
    });
    signaling.reportCallsWith?.(() => this.answeredCalls());
    // A new or lost address: answered calls gather anew and restart ICE at once.
    this.network.on('change', () => this.onNetworkChange());
    this.network.start();
    // The peer's signaling dropped (the server holds the call for it) or is back.
    signaling.on('call.link', (p) => {
      const call = this.calls.get(p.callId);
      if (!call || call.data.name === 'ended' || call.status.signaling === 'offline') return;
      call.status.signaling = p.peer === 'online' ? 'online' : 'peer_offline';
      call.status.signalingSince = p.peer === 'online' ? Date.now() : (p.since ?? Date.now());
      if (p.peer !== 'online' && p.until !== undefined) call.status.signalingUntil = p.until;
      else delete call.status.signalingUntil;
      this.publish(call);
    });
    // Our own signaling: answered calls go on peer to peer; queued sealed messages go out when it is back.
    signaling.on('state', (state) => {
      if (state === 'connecting') return;
      for (const call of this.calls.values()) {
        if (call.data.name === 'ended') continue;
        const next = state === 'online' ? 'online' : 'offline';
        if (call.status.signaling !== next && !(next === 'online' && call.status.signaling === undefined)) {
          call.status.signaling = next;
          call.status.signalingSince = Date.now();
          delete call.status.signalingUntil;
          this.publish(call);
        }
        if (state === 'online') void this.drain(call);
      }
    });
    // A policy limit is near (lifetime or duration budget): show the server's words on the call.
    signaling.on('call.warning', (p) => {
      const call = this.calls.get(p.callId);
      if (!call || call.data.name === 'ended') return;
      call.policyWarning = p.message;
      this.composeWarning(call);
      this.publish(call);
    });
  }

  /**
   * Calls `to`. Resolves with the call id once the server routed the invite.
   * @throws ParleyError `invalid_state` while another call is live; `key_changed` when
   *   the callee's keys changed and the change is not accepted yet; `security` for a
   *   bad key bundle; the server's `unknown_user`, `callee_offline`, …; `unavailable` when offline.
   */
  async createCall(to: string): Promise<string> {
    this.assertNoLiveCall();
    // The callee's online devices, newest last; an invite is sealed for at most MAX_SEALED_DEVICES of them.
    // Devices the server lists without a valid certificate by the callee's account key are refused (never rung).
    const checked = await this.e2ee.contactDevices(to, true);
    const devices = checked.usable.slice(-MAX_SEALED_DEVICES);
    this.assertNoLiveCall();
    const iceServers = await this.iceServers();
    const id = randomUUID();
    const peer = this.newPeer(iceServers);
    const call: Call = {
      id,
      direction: 'outgoing',
      peerName: to,
      data: { name: 'outgoing', peer },
      status: {
        callId: id,
        direction: 'outgoing',
        peer: to,
        state: 'outgoing',
        createdAt: Date.now(),
        e2ee: {
          sealed: false,
          fingerprintBound: false,
          ...(checked.newDevices.some((d) => devices.some((b) => b.deviceId === d)) ? { newDevice: true } : {}),
          ...(checked.refused.length > 0 ? { refusedDevices: checked.refused } : {}),
        },
      },
      localCandidates: [],
      sealed: this.e2ee.outgoingCall(id, to, devices),
      restarts: 0,
      outbox: { queue: [], draining: false },
      restartGen: 0,
      received: 0,
    };
    this.calls.set(id, call);
    this.trickle(call, peer);
    this.publish(call);
    try {
      const offer = await peer.createOffer();
      dropCandidatesInSdp(call, offer.sdp);
      // One sealed offer per callee device (with this device's key bundle inside).
      await this.signaling.request('call.invite', {
        callId: id,
        callee: to,
        envelopes: sealedOf(call).sealForAll({ type: 'offer', sdp: offer.sdp, mediaShare: sealedOf(call).mediaShare, sentAt: Date.now() }, true),
      });
    } catch (e) {
      this.finish(id, 'failed', e instanceof Error ? e.message : String(e));
      throw e;
    }
    this.flushCandidates(call);
    return id;
  }

  /**
   * Answers an incoming call (the only ringing one when `callId` is omitted).
   * @throws ParleyError `call_not_found`, `invalid_state`.
   */
  async answer(callId?: string): Promise<string> {
    const call = this.find(callId, (c) => c.data.name === 'incoming' && !c.standardOffer);
    if (call.data.name !== 'incoming' || call.standardOffer) throw new ParleyError('invalid_state', 'that call is not ringing');
    const { offer, candidates } = call.data;
    const iceServers = await this.iceServers();
    const peer = this.newPeer(iceServers);
    call.localCandidates = [];
    this.trickle(call, peer);
    let media: CallMedia;
    try {
      // The SRTP keys will be bound to the X25519 of the two sealed shares (docs/SECURITY.md).
      peer.bindSrtpKeys(sealedOf(call).srtpBinding());
      const answer = await peer.acceptOffer(offer);
      dropCandidatesInSdp(call, answer.sdp);
      for (const c of candidates) await peer.addCandidate(c);
      // Send the answer first: ICE and DTLS (~200 ms) then run while the
      // devices open, instead of after.
      const sent = this.signaling.request('call.answer', {
        callId: call.id,
        envelope: sealedOf(call).sealFor(sealedOf(call).boundDevice!, { type: 'answer', sdp: answer.sdp, mediaShare: sealedOf(call).mediaShare }),
      });
      sent.catch(() => {});
      call.status.answeredAt = Date.now();
      media = await this.newMedia(peer);
      if ((call.data as CallData).name !== 'incoming') {
        // The caller gave up while the devices opened.
        await media.close();
        throw new ParleyError('invalid_state', 'the call ended before it could be answered');
      }
      this.move(call, 'answer', { name: 'connecting', peer, media });
      this.publish(call);
      media.start();
      await sent;
    } catch (e) {
      if ((call.data as CallData).name !== 'connecting') await peer.close();
      this.hangupRemote(call, 'failed');
      this.finish(call.id, 'failed', e instanceof Error ? e.message : String(e));
      throw e;
    }
    this.flushCandidates(call);
    void this.awaitMedia(call, peer, media);
    return call.id;
  }

  /**
   * Answers a standard WebRTC offer that a local controller brought (the
   * ArmorClaw guide's `webrtc.create_call` with `offer_sdp`): a browser page, a
   * bot or a gateway then talks to this device's microphone and speaker. No
   * signaling server and no sealing are involved: the call is not end-to-end
   * verified (`e2ee.sealed` false). DTLS-SRTP protects the media and the DTLS
   * certificate must match the offer's fingerprint. The answer carries this
   * side's candidates (ICE gathering is waited for, at most 3 s); the peer's
   * trickled ones come through {@link addRemoteCandidates}. It resolves before
   * the audio devices are open (ICE and DTLS run meanwhile); a device that
   * cannot be opened ends the call `failed`.
   * @param label what the call shows as its peer.
   * @throws ParleyError `invalid_state` while another call is live; `invalid_params` for an offer that cannot be answered.
   */
  async answerOffer(offerSdp: string, label: string): Promise<{ callId: string; answerSdp: string }> {
    this.assertNoLiveCall();
    if (!/^v=0\r?\n/.test(offerSdp) || !/\nm=audio /.test(offerSdp)) {
      throw new ParleyError('invalid_params', 'offer_sdp is not an SDP offer with an audio section (v=0 … m=audio …)', {
        issues: [{ path: 'offer_sdp', message: 'not an SDP offer with m=audio' }],
      });
    }
    const id = randomUUID();
    const call: Call = {
      id,
      direction: 'incoming',
      peerName: label,
      data: { name: 'incoming', offer: offerSdp, candidates: [] },
      status: { callId: id, direction: 'incoming', peer: label, state: 'incoming', createdAt: Date.now(), e2ee: { sealed: false, fingerprintBound: false } },
      localCandidates: undefined,
      sealed: undefined,
      restarts: 0,
      outbox: { queue: [], draining: false },
      restartGen: 0,
      received: 0,
      standardOffer: offerSdp,
    };
    this.calls.set(id, call);
    this.publish(call);
    const peer = this.newPeer(await this.iceServers().catch(() => []));
    peer.bindSrtpKeys(undefined); // no sealed secret: DTLS-SRTP keys alone
    let answerSdp: string;
    try {
      await peer.acceptOffer(offerSdp);
      answerSdp = await peer.gatheredSdp(STANDARD_GATHER_MS);
    } catch (e) {
      await peer.close();
      this.finish(id, 'failed', e instanceof Error ? e.message : String(e));
      throw new ParleyError('invalid_params', `offer_sdp could not be answered: ${e instanceof Error ? e.message.slice(0, 200) : 'invalid offer'}`, {
        issues: [{ path: 'offer_sdp', message: 'not answerable' }],
      });
    }
    call.status.answeredAt = Date.now();
    void this.openStandardMedia(call, peer);
    return { callId: id, answerSdp };
  }

  /** The devices of a standard peer's call, opened after its answer went out. */
  private async openStandardMedia(call: Call, peer: CallPeer): Promise<void> {
    let media: CallMedia;
    try {
      media = await this.newMedia(peer);
    } catch (e) {
      await peer.close();
      this.finish(call.id, 'failed', e instanceof Error ? e.message : String(e));
      return;
    }
    if (call.data.name !== 'incoming') {
      await media.close();
      await peer.close();
      return;
    }
    const { candidates } = call.data;
    this.move(call, 'answer', { name: 'connecting', peer, media });
    this.publish(call);
    for (const c of candidates) await peer.addCandidate(c).catch(() => {});
    media.start();
    void this.awaitMedia(call, peer, media);
  }

  /**
   * The trickled ICE candidates of a standard WebRTC peer's call (an empty
   * `candidate` is the end of candidates and is skipped).
   * @throws ParleyError `call_not_found`; `invalid_state` for a call with a Parley user (its candidates travel sealed) or an ended call.
   */
  async addRemoteCandidates(callId: string, candidates: CandidateInit[]): Promise<void> {
    const call = this.calls.get(callId);
    if (!call) throw new ParleyError('call_not_found', 'no such call');
    if (!call.standardOffer) {
      throw new ParleyError('invalid_state', 'this is a call with a Parley user: its candidates travel sealed through signaling, the daemon sends them itself');
    }
    for (const c of candidates) {
      if (!c.candidate) continue;
      const d = call.data;
      if (d.name === 'ended') throw new ParleyError('invalid_state', 'that call has already ended');
      if (d.name === 'incoming') d.candidates.push(c);
      else if ('peer' in d) await d.peer.addCandidate(c);
    }
  }

  /** Declines (or refuses as busy) an incoming call. */
  async reject(callId: string | undefined, reason: RejectReason = 'declined'): Promise<string> {
    const call = this.find(callId, (c) => c.data.name === 'incoming');
    if (call.data.name !== 'incoming') throw new ParleyError('invalid_state', 'only a ringing incoming call can be declined');
    this.finish(call.id, reason);
    await this.signaling.request('call.reject', { callId: call.id, reason }).catch(() => {});
    return call.id;
  }

  /**
   * Ends a call in any live state: cancels, declines or hangs up as fits.
   * @param reason of a connected call's end here (`ttl_expired`: the daemon's own lifetime); the peer sees a hangup.
   */
  async end(callId?: string, reason: 'hangup' | 'ttl_expired' = 'hangup'): Promise<string> {
    const call = this.find(callId, (c) => c.data.name !== 'ended');
    switch (call.data.name) {
      case 'ended':
        throw new ParleyError('invalid_state', 'that call has already ended');
      case 'incoming':
        return this.reject(call.id, 'declined');
      case 'outgoing':
      case 'ringing':
        this.finish(call.id, 'hangup');
        await this.signaling.request('call.cancel', { callId: call.id }).catch(() => {});
        return call.id;
      default:
        this.finish(call.id, reason);
        if (!call.standardOffer) await this.signaling.request('call.hangup', { callId: call.id }).catch(() => {});
        return call.id;
    }
  }

  /**
   * Opens or closes the microphone (mute, push-to-talk) for the live call and
   * every call after it: closed, the peer hears encoded silence.
   */
  setMicOpen(open: boolean): void {
    this.micOpen = open;
    for (const c of this.calls.values()) if ('media' in c.data) c.data.media.setMicOpen(open);
    this.emit('controls', { micOpen: open, outputGain: this.outputGain });
  }

  /** Call output volume (linear gain 0–1) for the live call and the calls after it. */
  setOutputGain(gain: number): void {
    this.outputGain = gain;
    for (const c of this.calls.values()) if ('media' in c.data) c.data.media.setOutputGain(gain);
    this.emit('controls', { micOpen: this.micOpen, outputGain: gain });
  }

  /** Puts an active call on hold (stops sending, mutes the speaker) or resumes it. */
  setHold(callId: string | undefined, held: boolean): string {
    const call = this.find(callId, (c) => c.data.name === (held ? 'active' : 'held'));
    const d = call.data;
    if (d.name !== (held ? 'active' : 'held') || (d.name !== 'active' && d.name !== 'held')) {
      throw new ParleyError('invalid_state', held ? 'only an active call can be put on hold' : 'that call is not on hold');
    }
    this.move(call, held ? 'hold' : 'resume', {
      name: held ? 'held' : 'active',
      peer: d.peer,
      media: d.media,
      statsTimer: d.statsTimer,
    });
    d.media.setHeld(held);
    this.publish(call);
    return call.id;
  }

  /** @throws ParleyError `call_not_found`. */
  status(callId: string): CallStatus {
    const call = this.calls.get(callId);
    if (!call) throw new ParleyError('call_not_found', 'no such call');
    return this.snapshot(call);
  }

  list(): CallStatus[] {
    return [...this.calls.values()].map((c) => this.snapshot(c));
  }

  /** Ends every live call (hangup) and releases devices. */
  async shutdown(): Promise<void> {
    this.network.stop();
    await Promise.allSettled(
      [...this.calls.values()].filter((c) => c.data.name !== 'ended').map((c) => this.end(c.id)),
    );
  }

  // ---- signaling events ----------------------------------------------------

  private async onIncoming(p: SignalNotificationParams<'call.incoming'>): Promise<void> {
    if (this.calls.has(p.callId)) return;
    if (this.liveCall() || this.busyWith()) {
      await this.signaling.request('call.reject', { callId: p.callId, reason: 'busy' }).catch(() => {});
      return;
    }
    const status: CallStatus = {
      callId: p.callId,
      direction: 'incoming',
      peer: p.caller.username,
      state: 'incoming',
      createdAt: Date.now(),
      e2ee: { sealed: false, fingerprintBound: false },
    };
    // Opened synchronously, so the caller's candidates that follow find the call.
    let opened: { call: SealedCall; offer: string; newDevice: boolean };
    try {
      opened = this.e2ee.incomingCall(p.callId, p.caller, p.envelope);
    } catch (e) {
      // A call that does not pass the checks never rings: it is shown ended, `failed`, with the reason.
      const placeholder: Call = {
        id: p.callId,
        direction: 'incoming',
        peerName: p.caller.username,
        data: { name: 'incoming', offer: '', candidates: [] },
        status,
        localCandidates: undefined,
        sealed: undefined,
        restarts: 0,
      outbox: { queue: [], draining: false },
      restartGen: 0,
      received: 0,
      };
      this.calls.set(placeholder.id, placeholder);
      this.securityFailure(placeholder, e);
      return;
    }
    status.e2ee = { sealed: true, fingerprintBound: false, peerDeviceId: p.caller.deviceId, ...(opened.newDevice ? { newDevice: true } : {}) };
    const call: Call = {
      id: p.callId,
      direction: 'incoming',
      peerName: p.caller.username,
      data: { name: 'incoming', offer: opened.offer, candidates: [] },
      status,
      localCandidates: undefined,
      sealed: opened.call,
      restarts: 0,
      outbox: { queue: [], draining: false },
      restartGen: 0,
      received: 0,
    };
    opened.call.remoteSdp = opened.offer;
    this.calls.set(call.id, call);
    this.publish(call);
    await this.signaling.request('call.ringing', { callId: call.id }).catch(() => {});
    call.status.ringingAt = Date.now();
    if (this.autoAnswer) await this.answer(call.id).catch(() => {});
  }

  private onRemoteRinging(callId: string): void {
    const call = this.calls.get(callId);
    if (!call || call.data.name !== 'outgoing') return;
    this.move(call, 'remote_ringing', { name: 'ringing', peer: call.data.peer });
    call.status.ringingAt = Date.now();
    this.publish(call);
  }

  private async onAnswered(p: SignalNotificationParams<'call.answered'>): Promise<void> {
    const call = this.calls.get(p.callId);
    if (!call || (call.data.name !== 'outgoing' && call.data.name !== 'ringing')) return;
    const peer = call.data.peer;
    let answer: string;
    try {
      const sealed = sealedOf(call);
      sealed.bind(p.callee.deviceId);
      const content = sealed.open(p.envelope, p.callee.deviceId);
      if (content.type !== 'answer') throw new SealError('envelope_invalid', 'the sealed answer holds no answer');
      answer = content.sdp;
      sealed.acceptMediaShare(content.mediaShare);
      peer.bindSrtpKeys(sealed.srtpBinding());
    } catch (e) {
      this.securityFailure(call, e);
      return;
    }
    sealedOf(call).remoteSdp = answer;
    call.status.e2ee = {
      ...call.status.e2ee,
      sealed: true,
      fingerprintBound: false,
      peerDeviceId: p.callee.deviceId,
      newDevice: this.e2ee.isNewDevice(call.peerName, p.callee.deviceId),
    };
    let media: CallMedia;
    try {
      await peer.acceptAnswer(answer);
      media = await this.newMedia(peer);
      if (call.data.name !== 'outgoing' && call.data.name !== 'ringing') {
        await media.close(); // ended (hung up, or failed) while the devices opened
        return;
      }
      this.move(call, 'answer', { name: 'connecting', peer, media });
    } catch (e) {
      this.hangupRemote(call, 'failed');
      this.finish(call.id, 'failed', `could not accept the answer: ${e instanceof Error ? e.message : e}`);
      return;
    }
    call.status.answeredAt = Date.now();
    this.publish(call);
    media.start();
    await this.awaitMedia(call, peer, media);
  }

  private async onRemoteCandidate(callId: string, envelope: Envelope): Promise<void> {
    const call = this.calls.get(callId);
    if (!call || call.data.name === 'ended') return;
    let content;
    try {
      content = sealedOf(call).open(envelope);
    } catch (e) {
      // A candidate that does not open, or comes out of sequence, is tampering: the call ends.
      this.securityFailure(call, e);
      return;
    }
    // After the answer the same sealed channel carries ICE restarts: the caller's new offer, the callee's answer.
    if (content.type === 'offer') return this.onRestartOffer(call, content.sdp, content.restart);
    if (content.type === 'answer') return this.onRestartAnswer(call, content.sdp, content.restart);
    if (content.type === 'restart-request') return this.onRestartRequest(call, content.restart);
    if (content.type === 'switched') return this.onPeerSwitched(call, content.restart);
    if (content.type !== 'candidate') return;
    const init: CandidateInit = {
      candidate: content.candidate,
      sdpMid: content.sdpMid ?? null,
      sdpMLineIndex: content.sdpMLineIndex ?? null,
    };
    const d = call.data;
    const restart = call.restart;
    if (d.name === 'incoming') d.candidates.push(init);
    else if (restart) {
      // Once a restart began, the peer's candidates are for its new transport.
      if (restart.pending || !restart.peer) (restart.pending ??= []).push(init);
      else await restart.peer.addCandidate(init).catch(() => {});
    } else await d.peer.addCandidate(init).catch(() => {});
  }

  // ---- media path repair (ICE restart) ---------------------------------------

  /**
   * The media path of an answered call broke: no RTP for a second, or ICE
   * reports the transport failed (the relay in use disappeared, a network
   * changed). The call says `reconnecting`. The caller — only the caller
   * offers, so the two sides never offer at once — restarts ICE on a new
   * transport through the next relay; the callee asks it to (`restart-request`,
   * repeated while its audio stays lost), so a path that failed only towards
   * the callee is repaired too. The call is not ended here: audio coming back
   * says `connected`, and only `mediaTimeoutMs` without any ends it `failed`.
   */
  private onMediaLost(call: Call): void {
    if (call.data.name !== 'active' && call.data.name !== 'held') return;
    if (call.status.media !== 'reconnecting') {
      this.setMedia(call, 'reconnecting');
      this.publish(call);
    }
    if (call.direction === 'outgoing') {
      if (!call.restart) void this.restartIce(call);
    } else this.askRestart(call);
  }

  /**
   * This process was stopped or the machine slept for `ms` mid-call (the media
   * watchdog's clock jumped): what was under way is stale. Signaling is
   * checked at once (a dead socket reconnects now, not at the next
   * keep-alive), a restart begun before the sleep is dropped, and the media
   * stall the watchdog reports next starts a fresh one (the callee asks).
   * The media timeout counts from the wake-up: the silence was ours.
   */
  private onSuspended(call: Call, ms: number): void {
    if (call.data.name !== 'active' && call.data.name !== 'held') return;
    this.signaling.checkAlive?.();
    if (call.restart && call.direction === 'outgoing') this.dropRestart(call, call.restart);
    clearInterval(call.restartAsk);
    call.restartAsk = undefined;
    call.status.suspendedMs = Math.round(ms);
    this.publish(call);
  }

  /**
   * The host's addresses changed (a network change): the path of an answered
   * call may be gone, or a better one may have appeared. Signaling reconnects
   * at once (its socket may be bound to a lost address), and the call restarts ICE on a new transport that gathers anew —
   * the caller offers, the callee asks it to — without waiting for the media
   * to stall. Make before break: the old transport carries audio until the
   * new one connects.
   */
  private onNetworkChange(): void {
    const live = [...this.calls.values()].filter((c) => (c.data.name === 'active' || c.data.name === 'held') && c.sealed?.boundDevice);
    if (live.length === 0) return;
    this.signaling.reconnectNow?.();
    for (const call of live) {
      call.status.networkChangedAt = Date.now();
      this.publish(call);
      if (call.direction === 'outgoing') {
        if (call.restart) this.dropRestart(call, call.restart);
        void this.restartIce(call);
      } else this.sendSealed(call, { type: 'restart-request', restart: call.restartGen });
    }
  }

  /** Callee side: asks the caller to restart, now and every RESTART_TIMEOUT_MS while our audio stays lost. */
  private askRestart(call: Call): void {
    if (call.restartAsk || !call.sealed?.boundDevice) return;
    const ask = () => {
      const d = call.data;
      if ((d.name !== 'active' && d.name !== 'held') || call.status.media !== 'reconnecting') {
        clearInterval(call.restartAsk);
        call.restartAsk = undefined;
        return;
      }
      this.sendSealed(call, { type: 'restart-request', restart: call.restartGen });
    };
    call.restartAsk = setInterval(ask, RESTART_TIMEOUT_MS);
    call.restartAsk.unref();
    ask();
  }

  /**
   * Caller side: the callee lost our audio and asks for a restart. A request
   * that names an older generation than our latest restart crossed it on the
   * way (the callee asked before it saw our offer): while that restart is
   * under way or switched less than RESTART_TIMEOUT_MS ago it is not a new
   * failure, and starting another restart then would move a working call
   * onto a transport nobody has tried. A stale request later than that (our
   * offer never reached the callee) is honoured.
   */
  private onRestartRequest(call: Call, seenGen: number | undefined): void {
    if (call.direction !== 'outgoing') return;
    const stale = seenGen !== undefined && seenGen < call.restartGen &&
      (call.restart !== undefined || (call.switchedAt !== undefined && Date.now() - call.switchedAt < RESTART_TIMEOUT_MS));
    if (stale) return;
    call.peerAskedAt = Date.now();
    if (!call.restart) void this.restartIce(call);
  }

  /** Caller side: a new transport, offered sealed (with its generation) over the call's candidate channel. */
  private async restartIce(call: Call): Promise<void> {
    if ((call.data.name !== 'active' && call.data.name !== 'held') || call.restart || !call.sealed?.boundDevice) return;
    const restart: IceRestart = { gen: ++call.restartGen, peer: undefined, remoteSdp: undefined, pending: [], timer: undefined, peerSwitched: false };
    call.restart = restart;
    this.armRestart(call, restart);
    try {
      await this.buildRestart(call, restart, (peer) => peer.createOffer());
    } catch {
      // No relay credentials (signaling down) or werift refused: the timer tries again.
    }
  }

  /**
   * Callee side: the caller offers a new transport (generation `gen`); answer
   * it on our next relay. An offer of a generation already seen is stale and
   * ignored; a newer one replaces the restart under way. The callee keeps its
   * restart until the caller supersedes it (the caller alone gives up, so the
   * two never disagree about which transport is current).
   */
  private async onRestartOffer(call: Call, sdp: string, gen: number | undefined): Promise<void> {
    if (call.data.name !== 'active' && call.data.name !== 'held') return;
    if (gen !== undefined && gen <= call.restartGen) return;
    call.restartGen = gen ?? call.restartGen + 1;
    if (call.restart) this.dropRestart(call, call.restart);
    // Registered at once: the candidates that follow the offer wait for the new peer.
    const restart: IceRestart = { gen: call.restartGen, peer: undefined, remoteSdp: sdp, pending: [], timer: undefined, peerSwitched: false };
    call.restart = restart;
    // Make before break: while our audio still arrives, a restart (the caller's network changed,
    // or its inbound path failed) is not an interruption on this side; the stall watchdog says so if it is.
    if (call.status.media !== 'reconnecting' && call.data.media.isStalled()) {
      this.setMedia(call, 'reconnecting');
      this.publish(call);
    }
    try {
      await this.buildRestart(call, restart, async (peer) => {
        const answer = await peer.acceptOffer(sdp);
        for (const c of restart.pending ?? []) await peer.addCandidate(c).catch(() => {});
        restart.pending = undefined;
        return answer;
      });
    } catch {
      // The caller's timer offers again.
    }
  }

  /**
   * Builds a restart's transport on the next relay and sends our side of it
   * sealed (`describe` makes the offer, or the answer to the remote offer),
   * tagged with the restart's generation, with our new candidates after it in
   * the sealed sequence.
   * @throws when relay credentials cannot be had or werift refuses the description.
   */
  private async buildRestart(call: Call, restart: IceRestart, describe: (peer: CallPeer) => Promise<SessionDescription>): Promise<void> {
    const iceServers = rotateRelays(await this.iceServers(), ++call.restarts);
    if (call.restart !== restart) return;
    const peer = this.newPeer(iceServers);
    // A new DTLS handshake, the same sealed secret: the call's binding carries over.
    peer.bindSrtpKeys(sealedOf(call).srtpBinding());
    restart.peer = peer;
    call.localCandidates = []; // queued until the description is sent
    this.trickle(call, peer);
    const description = await describe(peer);
    if (call.restart !== restart) return;
    dropCandidatesInSdp(call, description.sdp);
    this.sendSealed(
      call,
      description.type === 'offer'
        ? { type: 'offer', sdp: description.sdp, restart: restart.gen }
        : { type: 'answer', sdp: description.sdp, restart: restart.gen },
    );
    this.flushCandidates(call);
    this.awaitRestart(call, restart, peer);
  }

  /** Caller side: the callee's answer to our restart offer (one for another generation is stale). */
  private async onRestartAnswer(call: Call, sdp: string, gen: number | undefined): Promise<void> {
    const restart = call.restart;
    if (!restart?.peer || restart.remoteSdp !== undefined || call.direction !== 'outgoing') return;
    if (gen !== undefined && gen !== restart.gen) return;
    restart.remoteSdp = sdp;
    try {
      await restart.peer.acceptAnswer(sdp);
      for (const c of restart.pending ?? []) await restart.peer.addCandidate(c).catch(() => {});
      restart.pending = undefined;
    } catch {
      this.dropRestart(call, restart);
    }
  }

  /**
   * Caller side: a restart that has not connected in RESTART_TIMEOUT_MS is
   * dropped and, while the audio is lost on either side, tried again on the
   * next relay — unless the callee already switched onto it, which earns it
   * one more period (its side works; ours is a moment behind).
   */
  private armRestart(call: Call, restart: IceRestart, extended = false): void {
    restart.timer = setTimeout(() => {
      if (call.restart !== restart) return;
      if (restart.peerSwitched && !extended) return this.armRestart(call, restart, true);
      this.dropRestart(call, restart);
      const asked = call.peerAskedAt !== undefined && Date.now() - call.peerAskedAt < 2 * RESTART_TIMEOUT_MS;
      if (call.status.media === 'reconnecting' || asked) void this.restartIce(call);
    }, RESTART_TIMEOUT_MS);
    restart.timer.unref();
  }

  /** Closes a restart's transport and forgets it (superseded, timed out, or the call ended). */
  private dropRestart(call: Call, restart: IceRestart): void {
    clearTimeout(restart.timer);
    if (call.restart === restart) call.restart = undefined;
    if (call.localCandidates?.length === 0) call.localCandidates = undefined; // nothing of the old transport queued
    if (restart.peer) {
      this.retired.add(restart.peer);
      void restart.peer.close();
    }
  }

  /**
   * When the new transport connects: the same end-to-end check as the first
   * one (RFC 8827 §6.5: its DTLS certificate must match the fingerprint in the
   * sealed SDP), then the audio moves onto it and we tell the peer
   * (`switched`). The old transport is kept — its audio plays until the new
   * one carries some — until the peer says it switched too, or RETIRE_AFTER_MS.
   */
  private awaitRestart(call: Call, restart: IceRestart, peer: CallPeer): void {
    peer.connected(call.direction === 'outgoing' ? RESTART_TIMEOUT_MS : 2 * RESTART_TIMEOUT_MS).then(
      () => {
        const d = call.data;
        if (call.restart !== restart || (d.name !== 'active' && d.name !== 'held')) return;
        if (checkFingerprint(peer.remoteCertificate(), restart.remoteSdp ?? '') !== 'match') {
          this.securityFailure(call, new SealError('fingerprint_mismatch', 'the DTLS certificate of the peer is not the one its sealed SDP announced'));
          return;
        }
        clearTimeout(restart.timer);
        call.restart = undefined;
        call.switchedAt = Date.now();
        const old = d.peer;
        d.media.replacePeer(peer);
        d.peer = peer;
        sealedOf(call).remoteSdp = restart.remoteSdp;
        call.status.transport = peer.transportKind();
        this.watchTransport(call, peer);
        this.retirePrevious(call);
        if (restart.peerSwitched) this.retire(old);
        else {
          const timer = setTimeout(() => this.retirePrevious(call), RETIRE_AFTER_MS);
          timer.unref();
          call.previous = { peer: old, gen: restart.gen, timer };
        }
        this.sendSealed(call, { type: 'switched', restart: restart.gen });
        // ICE said the old path failed while audio still came: nothing to wait for.
        if (!d.media.isStalled()) this.setMedia(call, 'connected');
        this.publish(call);
      },
      () => {
        // A restart's handshake that is not authenticated is an attack on the path, not a bad path.
        if (call.restart === restart && this.dtlsUnauthenticated(call, peer)) return;
        // Timed out or failed: the restart timer (or the next offer) takes it from here.
      },
    );
  }

  /** The peer moved its audio onto restart `gen`'s transport: the old one may go once we have switched too. */
  private onPeerSwitched(call: Call, gen: number): void {
    if (call.restart?.gen === gen) call.restart.peerSwitched = true;
    if (call.previous?.gen === gen) this.retirePrevious(call);
  }

  /** Closes the transport the last restart replaced, if still kept. */
  private retirePrevious(call: Call): void {
    const previous = call.previous;
    if (!previous) return;
    call.previous = undefined;
    clearTimeout(previous.timer);
    this.retire(previous.peer);
  }

  private retire(peer: CallPeer): void {
    this.retired.add(peer);
    void peer.close();
  }

  /**
   * ICE on the call's transport failed: repair the path (the media timeout
   * ends the call if it cannot be). Not on `disconnected`: werift reports it
   * when consent checks go unanswered, which a lossy path does while audio
   * still flows; a path that is really gone shows as a media stall within 1 s.
   */
  private watchTransport(call: Call, peer: CallPeer): void {
    peer.onConnectionState((state) => {
      const d = call.data;
      if ((d.name !== 'active' && d.name !== 'held') || d.peer !== peer) return;
      if (state === 'failed') this.onMediaLost(call);
    });
  }

  /** Sends sealed content to the bound peer device over the call's candidate channel. */
  private sendSealed(call: Call, content: EnvelopeContent): void {
    const sealed = sealedOf(call);
    this.post(call, { callId: call.id, envelope: sealed.sealFor(sealed.boundDevice!, content) });
  }

  /** Sets whether the peer's audio flows, noting since when it changed (`mediaSince`). */
  private setMedia(call: Call, media: 'connected' | 'reconnecting'): void {
    if (call.status.media === media) return;
    call.status.media = media;
    call.status.mediaSince = Date.now();
  }

  /** `warning`: the policy warning and each direction's device warning, in one line for a user. */
  private composeWarning(call: Call): void {
    const parts = [call.status.audioWarnings?.input, call.status.audioWarnings?.output, call.policyWarning].filter((w): w is string => !!w);
    if (parts.length > 0) call.status.warning = parts.join('; ');
    else delete call.status.warning;
  }

  /** Queues a sealed message of the call for the server and starts sending. */
  private post(call: Call, params: SignalParams<'call.candidate'>): void {
    call.outbox.queue.push(params);
    void this.drain(call);
  }

  /**
   * Sends a call's queued sealed messages one at a time, in order. A message
   * that could not be sent because signaling went offline stays at the head
   * and goes out when it is back (the `state` listener drains again); one the
   * server refused (the call is gone there) is dropped.
   */
  private async drain(call: Call): Promise<void> {
    const box = call.outbox;
    if (box.draining) return;
    box.draining = true;
    try {
      while (box.queue.length > 0 && call.data.name !== 'ended' && this.signaling.state === 'online') {
        try {
          await this.signaling.request('call.candidate', box.queue[0]!);
        } catch (e) {
          if (e instanceof ParleyError && e.reason === 'unavailable' && this.signaling.state !== 'online') break;
        }
        box.queue.shift();
      }
    } finally {
      box.draining = false;
    }
  }

  // ---- internals -----------------------------------------------------------

  /**
   * The answered calls this engine carries (connecting after the answer,
   * active or held), for `hello` after a reconnect: media runs peer to peer,
   * so a call outlives its signaling connection, and a restarted server
   * resumes it when both devices list it (server/resume.ts).
   */
  answeredCalls(): Array<{ callId: string; received: number }> {
    return [...this.calls.values()]
      .filter((c) => !c.standardOffer && (c.data.name === 'active' || c.data.name === 'held' || c.data.name === 'connecting'))
      .map((c) => ({ callId: c.id, received: c.received }));
  }

  private async awaitMedia(call: Call, peer: CallPeer, media: CallMedia): Promise<void> {
    // A device problem shows on the call until that direction works again (the device returned, or another was chosen).
    media.on('deviceError', (e, direction) => {
      call.status.audioWarnings = { ...call.status.audioWarnings, [direction]: e.message };
      this.composeWarning(call);
      this.publish(call);
    });
    media.on('deviceRestored', (direction) => {
      if (call.data.name === 'ended' || !call.status.audioWarnings?.[direction]) return;
      const rest = { ...call.status.audioWarnings };
      delete rest[direction];
      if (rest.input || rest.output) call.status.audioWarnings = rest;
      else delete call.status.audioWarnings;
      this.composeWarning(call);
      this.publish(call);
    });
    media.on('levels', (levels) => this.emit('levels', { callId: call.id, ...levels }));
    media.once('firstAudio', () => {
      call.status.firstAudioAt = Date.now();
      this.publish(call);
    });
    try {
      await peer.connected(this.config.connectTimeoutMs);
    } catch (e) {
      if (call.data.name === 'ended') return;
      if (this.dtlsUnauthenticated(call, peer)) return;
      // werift refuses a certificate that does not match the SDP it was given; say so plainly.
      if (checkFingerprint(peer.remoteCertificate(), call.sealed?.remoteSdp ?? call.standardOffer ?? '') === 'mismatch') {
        this.securityFailure(call, new SealError('fingerprint_mismatch', 'the DTLS certificate of the peer is not the one its sealed SDP announced'));
        return;
      }
      this.hangupRemote(call, 'failed');
      this.finish(call.id, 'failed', e instanceof Error ? e.message : String(e));
      return;
    }
    if (call.data.name !== 'connecting') return;
    // RFC 8827 §6.5 / RFC 5763 §5: media only from the certificate whose fingerprint arrived sealed and signed.
    if (checkFingerprint(peer.remoteCertificate(), call.sealed?.remoteSdp ?? call.standardOffer ?? '') !== 'match') {
      this.securityFailure(call, new SealError('fingerprint_mismatch', 'the DTLS certificate of the peer is not the one its sealed SDP announced'));
      return;
    }
    // A standard peer's offer came unsealed: its fingerprint matched, but nothing binds it to a Parley identity.
    if (!call.standardOffer) call.status.e2ee = { ...(call.status.e2ee ?? { sealed: true }), fingerprintBound: true, mediaKeysBound: peer.srtpKeysBound };
    this.move(call, 'media_up', { name: 'active', peer, media, statsTimer: this.statsEverySecond(call, media) });
    call.status.connectedAt = Date.now();
    this.setMedia(call, 'connected');
    call.status.transport = peer.transportKind();
    media.startSending();
    media.on('suspended', (ms) => this.onSuspended(call, ms));
    media.on('mediaStalled', () => this.onMediaLost(call));
    media.on('mediaResumed', () => {
      this.setMedia(call, 'connected');
      this.publish(call);
    });
    media.once('mediaTimeout', () => {
      if (call.data.name === 'ended') return;
      this.hangupRemote(call, 'failed');
      this.finish(call.id, 'failed', `the connection to ${call.peerName} was lost (no audio for ${Math.round(this.config.mediaTimeoutMs / 1000)} s)`);
    });
    this.watchTransport(call, peer);
    this.publish(call);
  }

  /**
   * Emits `stats` for a connected call once a second: its media stats, the
   * share of frames concealed or rebuilt in that second, the receive loss and
   * an E-model MOS (main/media/quality.ts). One-way delay for the MOS is half
   * the RTT plus the jitter buffer plus ~2 frames of device buffering.
   */
  private statsEverySecond(call: Call, media: CallMedia): NodeJS.Timeout {
    let prev = media.stats();
    const timer = setInterval(() => {
      const now = media.stats();
      const repaired = (s: typeof now) => s.framesConcealed + s.framesRecoveredByFec + (s.expandFrames ?? 0);
      const frames = 1000 / now.ptimeMs;
      const lost = now.packetsLost - prev.packetsLost;
      const got = now.packetsReceived - prev.packetsReceived;
      const lossPercent = lost + got > 0 ? (100 * lost) / (lost + got) : 0;
      const oneWay = (now.rttMs ?? 0) / 2 + (now.jitterBufferMs ?? now.jitterTargetMs) + 2 * now.ptimeMs;
      const silentMs = media.silentMs();
      this.emit('stats', {
        callId: call.id,
        ...(call.status.media ? { media: call.status.media, mediaSince: call.status.mediaSince } : {}),
        ...(silentMs !== undefined ? { silentMs: Math.round(silentMs) } : {}),
        ...(call.status.signaling ? { signaling: call.status.signaling } : {}),
        stats: now,
        concealmentRate: Math.min(1, Math.max(0, (repaired(now) - repaired(prev)) / frames)),
        lossPercent: Math.round(lossPercent * 10) / 10,
        mos: Math.round(estimateMos(oneWay, lossPercent) * 100) / 100,
      });
      prev = now;
    }, 1000);
    timer.unref();
    return timer;
  }

  /**
   * Moves a call along the table and releases what the old state owned and the
   * new one does not.
   * @throws IllegalTransitionError for a move the table refuses.
   */
  private move(call: Call, event: CallEvent, next: CallData): void {
    const to = nextCallState(call.data.name, event);
    if (to !== next.name) throw new Error(`internal: ${event} leads to ${to}, not ${next.name}`);
    const old = call.data;
    call.data = next;
    call.status.state = to;
    if ('statsTimer' in old && !('statsTimer' in next && next.statsTimer === old.statsTimer)) clearInterval(old.statsTimer);
    if ('media' in old && !('media' in next && next.media === old.media)) void old.media.close();
    if ('peer' in old && !('peer' in next && next.peer === old.peer)) void old.peer.close();
  }

  /** Ends a call locally with `reason` (idempotent). */
  private finish(callId: string, reason: EndReason, error?: string): void {
    const call = this.calls.get(callId);
    if (!call || call.data.name === 'ended') return;
    if (call.restart) this.dropRestart(call, call.restart);
    this.retirePrevious(call);
    clearInterval(call.restartAsk);
    call.restartAsk = undefined;
    if ('media' in call.data) call.status.stats = call.data.media.stats();
    call.status.transport ??= 'peer' in call.data ? call.data.peer.transportKind() : undefined;
    this.move(call, 'end', { name: 'ended', reason });
    call.status.endReason = reason;
    call.status.endedAt = Date.now();
    if (error) call.status.error = error;
    this.publish(call);
    this.forgetOldCalls();
  }

  /** Keeps the history of ended calls bounded (a daemon runs for months). */
  private forgetOldCalls(keep = 50): void {
    const ended = [...this.calls.values()].filter((c) => c.data.name === 'ended');
    for (const c of ended.slice(0, Math.max(0, ended.length - keep))) this.calls.delete(c.id);
  }

  /**
   * Ends a call that failed an end-to-end check: `failed` with the security
   * reason here, and `call.security` to the server, which audits it and ends
   * the call for the other side with the same reason.
   */
  /**
   * Ends the call with `dtls_unauthenticated` when `peer`'s DTLS handshake
   * failed because the other end did not prove possession of the key behind
   * its certificate (the patched werift's check; RFC 8827 §6.5).
   * @returns whether it did.
   */
  private dtlsUnauthenticated(call: Call, peer: CallPeer): boolean {
    const failure = peer.dtlsAuthFailure();
    if (failure?.code !== 'ERR_DTLS_HANDSHAKE_AUTH') return false;
    this.securityFailure(
      call,
      new SealError('dtls_unauthenticated', `someone on the media path showed a DTLS certificate that is not theirs (${failure.message})`),
    );
    return true;
  }

  private securityFailure(call: Call, e: unknown): void {
    if (call.data.name === 'ended') return;
    const reason: SecurityReason =
      e instanceof SealError ? e.reason : e instanceof ParleyError && e.reason === 'key_changed' ? 'key_mismatch' : 'envelope_invalid';
    const message = e instanceof SealError || e instanceof ParleyError ? e.message : 'an end-to-end security check failed';
    call.status.security = reason;
    if (!call.standardOffer) void this.signaling.request('call.security', { callId: call.id, reason }).catch(() => {});
    this.finish(call.id, 'failed', `end-to-end security: ${message}`);
  }

  /** Tells the server we gave up on the call: the other side sees `failed`, not a hang-up. */
  private hangupRemote(call: Call, why: 'failed'): void {
    if (call.standardOffer) return;
    void this.signaling.request('call.hangup', { callId: call.id, reason: why }).catch(() => {});
  }

  /**
   * Runs the media path once on loopback before the first call (main/media/warmup.ts):
   * a fresh process's first call then connects as fast as its tenth. Safe to call
   * at start; never throws (a failure is returned as the error's message and the
   * first call simply pays the compilation itself).
   * @returns how long it took (ms) or why it failed.
   */
  async warmUp(): Promise<{ ms: number } | { error: string }> {
    try {
      return await this.backend.warmUp(this.config.frameMs);
    } catch (e) {
      return { error: e instanceof Error ? e.message : String(e) };
    }
  }

  /** Which thread carries the calls' media: `main` or `worker` (main/media/worker/). */
  get mediaThread(): 'main' | 'worker' {
    return this.backend.thread;
  }

  private newPeer(iceServers: IceServer[]): CallPeer {
    return this.backend.createPeer({
      iceServers,
      iceTransportPolicy: this.config.forceRelay ? 'relay' : 'all',
      loopbackOnly: this.config.loopbackOnly,
      ptimeMs: this.config.frameMs,
    });
  }

  private newMedia(peer: CallPeer): Promise<CallMedia> {
    return this.backend.openMedia(peer, {
      frameMs: this.config.frameMs,
      jitterTargetMs: this.config.jitterTargetMs,
      dtx: this.config.dtx,
      mediaTimeoutMs: this.config.mediaTimeoutMs,
      micOpen: this.micOpen,
      outputGain: this.outputGain,
    });
  }

  private trickle(call: Call, peer: CallPeer): void {
    // The end of gathering is sent too (sealed, in sequence): then a dropped candidate is always noticed.
    peer.onCandidate((c) => {
      if (this.retired.has(peer)) return; // a transport replaced or given up: its late candidates go nowhere
      if (call.localCandidates) call.localCandidates.push(c ?? null);
      else this.sendCandidate(call, c ?? null);
    });
  }

  private flushCandidates(call: Call): void {
    const queued = call.localCandidates ?? [];
    call.localCandidates = undefined;
    for (const c of queued) this.sendCandidate(call, c);
  }

  /** Sends a candidate (null: end of candidates) sealed for the bound peer device, or for each callee device while ringing. */
  private sendCandidate(call: Call, c: CandidateInit | null): void {
    if (call.data.name === 'ended' || !call.sealed) return;
    const content: EnvelopeContent = c ? { type: 'candidate', ...c } : { type: 'end-of-candidates' };
    const bound = call.sealed.boundDevice;
    const params = bound
      ? { callId: call.id, envelope: call.sealed.sealFor(bound, content) }
      : { callId: call.id, envelopes: call.sealed.sealForAll(content) };
    this.post(call, params);
  }

  /** TURN/STUN servers, with relay credentials refreshed a minute before they expire. */
  private async iceServers(): Promise<IceServer[]> {
    const nowS = Date.now() / 1000;
    if (!this.relay || this.relay.expiresAt - nowS < 60) {
      const r = await this.signaling.request('relay.credentials', {});
      this.relay = { iceServers: r.iceServers, expiresAt: r.expiresAt };
    }
    return this.relay.iceServers;
  }

  private liveCall(): Call | undefined {
    return [...this.calls.values()].find((c) => c.data.name !== 'ended');
  }

  private assertNoLiveCall(): void {
    const live = this.liveCall();
    if (live) throw new ParleyError('invalid_state', `already in a call with ${live.peerName}; end it first`);
    const other = this.busyWith();
    if (other) throw new ParleyError('invalid_state', `${other}; leave it first (one call at a time)`);
  }

  /** The live (not ended) 1:1 call's peer, if there is one. */
  liveCallPeer(): string | undefined {
    return this.liveCall()?.peerName;
  }

  private find(callId: string | undefined, pick: (c: Call) => boolean): Call {
    if (callId) {
      const call = this.calls.get(callId);
      if (!call) throw new ParleyError('call_not_found', 'no such call');
      return call;
    }
    const call = [...this.calls.values()].reverse().find(pick);
    if (!call) throw new ParleyError('call_not_found', 'there is no call to act on');
    return call;
  }

  private snapshot(call: Call): CallStatus {
    const s: CallStatus = { ...call.status };
    if ('media' in call.data) {
      s.stats = call.data.media.stats();
      const silent = call.data.media.silentMs();
      if (silent !== undefined) s.lastAudioAt = Math.round(Date.now() - silent);
    }
    return s;
  }

  private publish(call: Call): void {
    this.emit('call', this.snapshot(call));
  }
}

/**
 * The media of 1:1 calls in this thread: werift peers and MediaSessions on the
 * platform's devices and codec (every CallPeer it is given is one of its Peers).
 */
export function inThreadBackend(platform: MediaPlatform): MediaBackend {
  return {
    thread: 'main',
    createPeer: (options: PeerOptions) => new Peer(options),
    async openMedia(peer: CallPeer, settings: MediaSessionSettings): Promise<CallMedia> {
      const { source, sink, processor, deviceDelayMs } = await platform.openAudio(settings.frameMs);
      const { encoder, decoder } = platform.createCodec(settings.frameMs);
      const media = new MediaSession(peer as Peer, {
        frameMs: settings.frameMs,
        jitterTargetMs: settings.jitterTargetMs,
        source,
        sink,
        encoder,
        decoder,
        dtx: settings.dtx,
        mediaTimeoutMs: settings.mediaTimeoutMs,
        ...(processor ? { processor } : {}),
        ...(deviceDelayMs ? { deviceDelayMs } : {}),
      });
      media.setMicOpen(settings.micOpen);
      media.setOutputGain(settings.outputGain);
      // As in the media thread: sending starts once the transport is authenticated.
      (peer as Peer).onceAuthenticated(() => media.startSending());
      // Its replacePeer takes an RtpTransport: every CallPeer of this backend is a Peer, which is one.
      return media as unknown as CallMedia;
    },
    warmUp: (ptimeMs) =>
      warmUpMediaPath({
        ptimeMs,
        encode: () => {
          const { encoder } = platform.createCodec(ptimeMs);
          encoder.encode(new Int16Array(48 * ptimeMs));
        },
      }),
  };
}

export type { TransportKind };
