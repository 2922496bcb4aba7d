/**
 * The message contract between the main thread and the media worker
 * (main/media/worker/media-worker.ts, started by host.ts): the only way the
 * two talk. Plain discriminated unions over `postMessage` (structured clone:
 * no functions, no class instances — errors travel as {@link WireError}).
 *
 * - {@link Request}: main → worker, each with an `id` answered by exactly one
 *   {@link Reply} (`ok` with the method's {@link Results} entry, or an error).
 * - {@link Notice}: main → worker, no answer (setters on a running session).
 * - {@link WorkerEvent}: worker → main, unasked (candidates, state changes,
 *   session events, periodic stats).
 *
 * Peers and sessions are named by numbers the main thread picks. Audio never
 * crosses: capture → APM → Opus → RTP → SRTP → UDP and back run in the worker.
 */
import type { TransportKind } from '../../../common/call';
import type { MediaStats } from '../../../common/protocol/control';
import type { VoiceProcessingSettings } from '../../../native/apm';
import type { AudioLevels } from '../media-session';
import type { CandidateInit, DtlsAuthFailure, PeerConnectionState, PeerOptions, SessionDescription } from '../peer';
import type { OpusSettings } from '../platform';
import type { PriorityResult, RealtimeResult } from '../priority';
import type { SrtpKeyBinding } from '../srtp-binding';

/** The media thread's name for the kernel (at most 15 bytes: prctl PR_SET_NAME), as `ps -L` shows it. */
export const MEDIA_THREAD_NAME = 'parley-media';

/** An error as it crosses the thread boundary: its message in a user's words and, when it has one, its code. */
export interface WireError {
  message: string;
  code?: string;
}

/** What a worker session is opened with (the devices by the router's names, `default` for the system's). */
export interface SessionOpenParams {
  sessionId: number;
  peerId: number;
  frameMs: 10 | 20;
  jitterTargetMs?: number;
  dtx: boolean;
  mediaTimeoutMs: number;
  micOpen: boolean;
  outputGain: number;
  opus: OpusSettings;
  /** Voice processing for the microphone; undefined when it is off entirely. */
  processing: VoiceProcessingSettings;
  /** Whether PulseAudio answers (device names are PulseAudio's; the device delay can be asked). */
  pulse: boolean;
  input: string;
  output: string;
}

/** The main thread's requests, by method. */
export interface Params {
  'peer.create': { peerId: number; options: PeerOptions };
  'peer.bindSrtpKeys': { peerId: number; binding: SrtpKeyBinding | undefined };
  'peer.createOffer': { peerId: number };
  'peer.acceptOffer': { peerId: number; sdp: string };
  'peer.acceptAnswer': { peerId: number; sdp: string };
  'peer.addCandidate': { peerId: number; candidate: CandidateInit };
  'peer.connected': { peerId: number; timeoutMs: number };
  'peer.gatheredSdp': { peerId: number; timeoutMs: number };
  'peer.close': { peerId: number };
  'session.open': SessionOpenParams;
  'session.close': { sessionId: number };
  /** Moves a direction's stream to another device (the router's name); answers the gap and whether audio flows. */
  'device.switch': { sessionId: number; direction: 'input' | 'output'; device: string };
  warmUp: { ptimeMs: 10 | 20 };
  /** Raises the worker thread (and the process's other threads) as audio clients do, and asks real-time scheduling for the worker thread. */
  priority: Record<string, never>;
}

/** The answers, by method. */
export interface Results {
  'peer.create': null;
  'peer.bindSrtpKeys': null;
  'peer.createOffer': SessionDescription;
  'peer.acceptOffer': SessionDescription;
  'peer.acceptAnswer': null;
  'peer.addCandidate': null;
  'peer.connected': null;
  'peer.gatheredSdp': string;
  'peer.close': null;
  'session.open': { state: SessionState; processingUnavailable?: string };
  'session.close': { state: SessionState };
  'device.switch': { gapMs: number; flowing: boolean } | null;
  warmUp: { ms: number };
  priority: PriorityResult & { tid: number; realtime: RealtimeResult };
}

export type Method = keyof Params;

export type Request = { [M in Method]: { kind: 'request'; id: number; method: M; params: Params[M] } }[Method];

export type Reply =
  | { kind: 'reply'; id: number; ok: true; result: Results[Method] }
  | { kind: 'reply'; id: number; ok: false; error: WireError };

/** Setters and signals that need no answer. */
export type Notice =
  | { kind: 'notice'; type: 'session.start'; sessionId: number }
  | { kind: 'notice'; type: 'session.startSending'; sessionId: number }
  | { kind: 'notice'; type: 'session.setHeld'; sessionId: number; held: boolean }
  | { kind: 'notice'; type: 'session.setMicOpen'; sessionId: number; open: boolean }
  | { kind: 'notice'; type: 'session.setOutputGain'; sessionId: number; gain: number }
  | { kind: 'notice'; type: 'session.replacePeer'; sessionId: number; peerId: number }
  /** The router's word about a direction (a fallback, a failed switch): the session reports a device error. */
  | { kind: 'notice'; type: 'device.warn'; sessionId: number; direction: 'input' | 'output'; error: WireError }
  /** The router's word that a direction works again. */
  | { kind: 'notice'; type: 'device.restored'; sessionId: number; direction: 'input' | 'output' }
  /** New voice processing settings for the live sessions. */
  | { kind: 'notice'; type: 'processing.configure'; settings: VoiceProcessingSettings };

/** What the main thread mirrors of a peer, sent with every change and before every `peer.connected` answer. */
export interface PeerSnapshot {
  connectionState: PeerConnectionState;
  transportKind?: TransportKind;
  remoteCertificate?: Uint8Array;
  dtlsAuthFailure?: DtlsAuthFailure;
  srtpKeysBound: boolean;
}

/** What the main thread mirrors of a session, every {@link import('../media-backend').STATE_REPORT_MS} and on liveness changes. */
export interface SessionState {
  stats: MediaStats;
  /**
   * Since when (Unix ms, Date.now()'s clock, which both threads share) no RTP
   * came from the far end; undefined before sending began. The main thread
   * derives `silentMs` from it when asked, so it is never a report old.
   */
  silentSince?: number;
  stalled: boolean;
}

/** A session's events, as MediaSession emits them. */
export type SessionEvent =
  | { name: 'firstAudio' }
  | { name: 'deviceError'; direction: 'input' | 'output'; error: WireError }
  | { name: 'deviceRestored'; direction: 'input' | 'output' }
  | { name: 'mediaStalled' }
  | { name: 'mediaResumed' }
  | { name: 'mediaTimeout' }
  | { name: 'suspended'; ms: number }
  | { name: 'levels'; levels: AudioLevels };

export type WorkerEvent =
  | { kind: 'event'; type: 'ready' }
  | { kind: 'event'; type: 'peer.candidate'; peerId: number; candidate: CandidateInit | null }
  | { kind: 'event'; type: 'peer.state'; peerId: number; snapshot: PeerSnapshot }
  | { kind: 'event'; type: 'session.event'; sessionId: number; event: SessionEvent }
  | { kind: 'event'; type: 'session.state'; sessionId: number; state: SessionState }
  /** A device stream failed (gone, wedged): the main thread's router decides where it goes (AudioRouter.recover). */
  | { kind: 'event'; type: 'device.failed'; sessionId: number; direction: 'input' | 'output'; error: WireError };

export type ToWorker = Request | Notice;
export type FromWorker = Reply | WorkerEvent;

/** An error for the wire: the message, and the code when the error has a string one (ParleyError's `code`, AudioDeviceError's `kind`). */
export function toWire(e: unknown): WireError {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code ?? (e as { kind?: unknown }).kind;
    return typeof code === 'string' ? { message: e.message, code } : { message: e.message };
  }
  return { message: String(e) };
}
