import type { EventEmitter } from 'node:events';
import type { TransportKind } from '../../common/call';
import type { MediaStats } from '../../common/protocol/control';
import type { MediaSessionEvents } from './media-session';
import type { CandidateInit, DtlsAuthFailure, PeerConnectionState, PeerOptions, SessionDescription } from './peer';
import type { SrtpKeyBinding } from './srtp-binding';

/**
 * What the call engine (main/core/call-engine.ts) needs of one call's WebRTC
 * transport (ICE RFC 8445 with trickle, DTLS-SRTP RFC 5764): main/media/peer.ts's
 * {@link import('./peer').Peer} in this thread, or a handle on one that lives in
 * the media worker (main/media/worker/host.ts). Methods that only read state
 * (`transportKind`, `remoteCertificate`, `dtlsAuthFailure`, `srtpKeysBound`)
 * answer at once; in the worker's case from the state the worker last
 * reported, which it reports before every answer to {@link connected}.
 */
export interface CallPeer {
  /** See Peer.bindSrtpKeys: before DTLS completes; `undefined` = no sealed secret. */
  bindSrtpKeys(binding: SrtpKeyBinding | undefined): void;
  /** Whether the SRTP keys in use were mixed with the sealed secret. */
  readonly srtpKeysBound: boolean;
  /** Trickled local candidates; `undefined` marks the end of gathering. */
  onCandidate(listener: (candidate: CandidateInit | undefined) => void): void;
  /** Every change of the transport's connection state (W3C RTCPeerConnectionState). */
  onConnectionState(listener: (state: PeerConnectionState) => void): void;
  createOffer(): Promise<SessionDescription>;
  acceptOffer(offer: string): Promise<SessionDescription>;
  acceptAnswer(answer: string): Promise<void>;
  addCandidate(candidate: CandidateInit): Promise<void>;
  /** Resolves when ICE and DTLS are connected; rejects (with words for a user) on failure or after `timeoutMs`, ms. */
  connected(timeoutMs: number): Promise<void>;
  /** The local SDP once ICE gathering completed (or after `timeoutMs`, ms), with our ptime. */
  gatheredSdp(timeoutMs: number): Promise<string>;
  transportKind(): TransportKind | undefined;
  /** The DER certificate the remote side presented in DTLS, once it did. */
  remoteCertificate(): Uint8Array | undefined;
  dtlsAuthFailure(): DtlsAuthFailure | undefined;
  /** Closes the transport. Never throws. */
  close(): Promise<void>;
}

/** The call's media settings that a session is opened with (main/core/call-engine.ts MediaConfig). */
export interface MediaSessionSettings {
  frameMs: 10 | 20;
  /** Fixed jitter buffer delay, ms; undefined: adaptive. */
  jitterTargetMs?: number | undefined;
  dtx: boolean;
  /** No RTP for this long ends the call, ms. */
  mediaTimeoutMs: number;
  /** Mute / push-to-talk state at open. */
  micOpen: boolean;
  /** Output gain 0–1 at open. */
  outputGain: number;
}

/**
 * What the call engine needs of one call's media: main/media/media-session.ts's
 * MediaSession in this thread, or its handle when the session runs in the media
 * worker. Same events, same methods; `stats`, `isStalled` and `silentMs` of a
 * worker session answer from its last report (at most {@link STATE_REPORT_MS} old).
 */
export interface CallMedia extends EventEmitter<MediaSessionEvents> {
  start(): void;
  startSending(): void;
  setHeld(held: boolean): void;
  setMicOpen(open: boolean): void;
  setOutputGain(gain: number): void;
  /** Moves the audio onto `peer` (an ICE restart's connected transport); the old peer is the caller's to close. */
  replacePeer(peer: CallPeer): void;
  isStalled(): boolean;
  silentMs(): number | undefined;
  stats(): MediaStats;
  /** Stops the devices. Never throws. */
  close(): Promise<void>;
}

/** How often a worker session reports its stats and liveness to the main thread, ms. */
export const STATE_REPORT_MS = 100;

/**
 * Where a call's media runs: builds its transports and sessions. The call
 * engine owns what it gets and closes it. Group calls (main/media/group-media.ts)
 * still run in the main thread; a backend for them would open rooms the same way.
 */
export interface MediaBackend {
  /** Which thread carries the media: `main` (this one) or `worker` (main/media/worker/). */
  readonly thread: 'main' | 'worker';
  createPeer(options: PeerOptions): CallPeer;
  /**
   * Opens the devices, the codec and the voice processing for a call on `peer`
   * (a CallPeer of this backend), not yet started.
   * @throws an error naming the device that cannot be opened.
   */
  openMedia(peer: CallPeer, settings: MediaSessionSettings): Promise<CallMedia>;
  /** Runs the media path once on loopback (main/media/warmup.ts). @throws when it does not come up. */
  warmUp(ptimeMs: 10 | 20): Promise<{ ms: number }>;
}
