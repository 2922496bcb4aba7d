/**
 * The media worker: a `worker_threads` thread that carries the 1:1 calls'
 * media path end to end — microphone → voice processing (native/apm) → Opus
 * (native/opus) → RTP → SRTP → UDP (werift), and UDP → SRTP → jitter buffer →
 * Opus decode/PLC → mixer → speaker — so that signaling, sealing, the control
 * socket and the app's IPC on the main thread never delay a frame, and the
 * thread can be given real-time priority of its own.
 *
 * It is driven only through main/media/worker/contract.ts by host.ts; it
 * holds werift Peers and MediaSessions by the ids the main thread gave them.
 * Which device a direction uses stays the main thread's decision (its
 * AudioRouter); the streams themselves are opened here.
 */
import { readlinkSync, readdirSync, writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';
import { createVoiceProcessor, type VoiceProcessingSettings, type VoiceProcessor } from '../../../native/apm';
import { AudioDeviceError, devicesSettled } from '../../../native/audio-device';
import { createOpusDecoder, createOpusEncoder } from '../../../native/opus';
import { onStreamThread, RoutedCapture, RoutedPlayback, type StreamOwner } from '../audio-router';
import { EchoGatedProcessor } from '../echo-path';
import { MediaSession } from '../media-session';
import { Peer } from '../peer';
import { deviceDelayMs } from '../platform';
import { MEDIA_NICE, raiseMediaPriority, raiseToRealtime, rtkitHighPriority, type PriorityDeps } from '../priority';
import { warmUpMediaPath } from '../warmup';
import { trackGcPauses, type GcPauses } from './gc-pauses';
import { STATE_REPORT_MS } from '../media-backend';
import {
  MEDIA_THREAD_NAME,
  toWire,
  type FromWorker,
  type Method,
  type Notice,
  type Params,
  type PeerSnapshot,
  type Results,
  type SessionOpenParams,
  type SessionState,
  type ToWorker,
} from './contract';

export { MEDIA_THREAD_NAME };

const port = parentPort;
if (!port) throw new Error('main/media/worker/media-worker.ts runs as a worker thread (started by host.ts)');

function post(message: FromWorker): void {
  port!.postMessage(message);
}

/** One call's media in this thread: the session, its routed devices and its voice processor. */
interface WorkerSession {
  media: MediaSession;
  source: RoutedCapture;
  sink: RoutedPlayback;
  processor: VoiceProcessor | undefined;
  timer: NodeJS.Timeout;
  /** Ends the count of the media thread's garbage-collection pauses for this session. */
  stopGcCount: () => void;
}

const peers = new Map<number, Peer>();
const sessions = new Map<number, WorkerSession>();

function peerOf(peerId: number): Peer {
  const peer = peers.get(peerId);
  if (!peer) throw new Error(`internal: no media transport ${peerId} in the media thread`);
  return peer;
}

function sessionOf(sessionId: number): WorkerSession | undefined {
  return sessions.get(sessionId);
}

function snapshot(peer: Peer): PeerSnapshot {
  const s: PeerSnapshot = { connectionState: peer.pc.connectionState, srtpKeysBound: peer.srtpKeysBound };
  const kind = peer.transportKind();
  if (kind) s.transportKind = kind;
  const cert = peer.remoteCertificate();
  if (cert) s.remoteCertificate = cert;
  const failure = peer.dtlsAuthFailure();
  if (failure) s.dtlsAuthFailure = failure;
  return s;
}

function postPeerState(peerId: number, peer: Peer): void {
  post({ kind: 'event', type: 'peer.state', peerId, snapshot: snapshot(peer) });
}

/** The media thread's garbage-collection pauses since each session opened. */
const gcPausesOf = new WeakMap<MediaSession, GcPauses>();

function sessionState(media: MediaSession): SessionState {
  const silentMs = media.silentMs();
  const gc = gcPausesOf.get(media);
  return {
    stats: { ...media.stats(), ...(gc ? { mediaThreadGc: { ...gc } } : {}) },
    stalled: media.isStalled(),
    ...(silentMs !== undefined ? { silentSince: Date.now() - silentMs } : {}),
  };
}

function postSessionState(sessionId: number, media: MediaSession): void {
  post({ kind: 'event', type: 'session.state', sessionId, state: sessionState(media) });
}

async function openSession(p: SessionOpenParams): Promise<Results['session.open']> {
  const peer = peerOf(p.peerId);
  // The routed streams report failures to the router in the main thread, which decides where they go.
  const owner: StreamOwner = {
    pulse: p.pulse,
    recover: async (stream, error) => {
      post({ kind: 'event', type: 'device.failed', sessionId: p.sessionId, direction: stream.direction, error: toWire(error) });
    },
    forget: () => {},
  };
  await devicesSettled();
  const source = new RoutedCapture(owner, p.frameMs);
  source.open(p.input);
  const sink = new RoutedPlayback(owner, p.frameMs);
  try {
    sink.open(p.output);
  } catch (e) {
    await source.close();
    throw e;
  }
  let processor: VoiceProcessor | undefined;
  let processingUnavailable: string | undefined;
  try {
    processor = createVoiceProcessor(p.processing);
  } catch (e) {
    processingUnavailable = e instanceof Error ? e.message : String(e);
  }
  const media = new MediaSession(peer, {
    frameMs: p.frameMs,
    ...(p.jitterTargetMs !== undefined ? { jitterTargetMs: p.jitterTargetMs } : {}),
    source,
    sink,
    encoder: createOpusEncoder({ frameMs: p.frameMs, ...p.opus }),
    decoder: createOpusDecoder(),
    dtx: p.dtx,
    mediaTimeoutMs: p.mediaTimeoutMs,
    // The echo canceller hears the far end only while an echo path may exist.
    ...(processor ? { processor: new EchoGatedProcessor(processor, () => performance.now()) } : {}),
    deviceDelayMs: () => deviceDelayMs(p.pulse, { source, sink }),
  });
  media.setMicOpen(p.micOpen);
  media.setOutputGain(p.outputGain);
  const id = p.sessionId;
  const event = (e: Extract<FromWorker, { type: 'session.event' }>['event']) => post({ kind: 'event', type: 'session.event', sessionId: id, event: e });
  media.on('firstAudio', () => event({ name: 'firstAudio' }));
  media.on('deviceError', (e, direction) => event({ name: 'deviceError', direction, error: toWire(e) }));
  media.on('deviceRestored', (direction) => event({ name: 'deviceRestored', direction }));
  // Liveness changes carry the state first, so that isStalled() agrees when the event arrives.
  media.on('mediaStalled', () => (postSessionState(id, media), event({ name: 'mediaStalled' })));
  media.on('mediaResumed', () => (postSessionState(id, media), event({ name: 'mediaResumed' })));
  media.on('mediaTimeout', () => (postSessionState(id, media), event({ name: 'mediaTimeout' })));
  media.on('suspended', (ms) => event({ name: 'suspended', ms }));
  media.on('levels', (levels) => event({ name: 'levels', levels }));
  const gc = trackGcPauses();
  gcPausesOf.set(media, gc.pauses);
  const timer = setInterval(() => postSessionState(id, media), STATE_REPORT_MS);
  sessions.set(id, { media, source, sink, processor, timer, stopGcCount: gc.stop });
  // Sending starts here the moment the transport is authenticated (DTLS up, the certificate the sealed SDP
  // names), not a round trip through a busy main thread later; the call engine's own check confirms it.
  peer.onceAuthenticated(() => {
    if (sessions.get(id)?.media !== media) return;
    media.startSending();
    postSessionState(id, media);
  });
  return { state: sessionState(media), ...(processingUnavailable !== undefined ? { processingUnavailable } : {}) };
}

/** The kernel id of this thread (Linux: /proc/thread-self → `<pid>/task/<tid>`), or undefined elsewhere. */
function ownThreadId(): number | undefined {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    return Number.isInteger(tid) && tid > 0 ? tid : undefined;
  } catch {
    return undefined;
  }
}

const handlers: { [M in Method]: (params: Params[M]) => Promise<Results[M]> | Results[M] } = {
  'peer.create': ({ peerId, options }) => {
    const peer = new Peer(options);
    peers.set(peerId, peer);
    peer.onCandidate((candidate) => post({ kind: 'event', type: 'peer.candidate', peerId, candidate: candidate ?? null }));
    peer.onConnectionState(() => postPeerState(peerId, peer));
    return null;
  },
  'peer.bindSrtpKeys': ({ peerId, binding }) => {
    peerOf(peerId).bindSrtpKeys(binding);
    return null;
  },
  'peer.createOffer': ({ peerId }) => peerOf(peerId).createOffer(),
  'peer.acceptOffer': ({ peerId, sdp }) => peerOf(peerId).acceptOffer(sdp),
  'peer.acceptAnswer': async ({ peerId, sdp }) => {
    await peerOf(peerId).acceptAnswer(sdp);
    return null;
  },
  'peer.addCandidate': async ({ peerId, candidate }) => {
    await peerOf(peerId).addCandidate(candidate);
    return null;
  },
  'peer.connected': async ({ peerId, timeoutMs }) => {
    const peer = peerOf(peerId);
    try {
      await peer.connected(timeoutMs);
    } finally {
      // What the engine reads next (certificate, DTLS failure, transport kind) is mirrored before the answer.
      postPeerState(peerId, peer);
    }
    return null;
  },
  'peer.gatheredSdp': ({ peerId, timeoutMs }) => peerOf(peerId).gatheredSdp(timeoutMs),
  'peer.close': async ({ peerId }) => {
    const peer = peers.get(peerId);
    peers.delete(peerId);
    await peer?.close();
    return null;
  },
  'session.open': (p) => openSession(p),
  'session.close': async ({ sessionId }) => {
    const s = sessionOf(sessionId);
    if (!s) throw new Error(`internal: no media session ${sessionId} in the media thread`);
    sessions.delete(sessionId);
    clearInterval(s.timer);
    const state = sessionState(s.media);
    s.stopGcCount();
    await s.media.close();
    return { state };
  },
  'device.switch': async ({ sessionId, direction, device }) => {
    const s = sessionOf(sessionId);
    if (!s) return null;
    return (await (direction === 'input' ? s.source : s.sink).switchTo(device)) ?? null;
  },
  warmUp: ({ ptimeMs }) =>
    warmUpMediaPath({
      ptimeMs,
      // The codec and the voice processing load here, in the thread that uses them.
      encode: () => {
        createOpusEncoder({ frameMs: ptimeMs }).encode(new Int16Array(48 * ptimeMs));
        createOpusDecoder();
      },
    }),
  priority: async () => {
    const tid = ownThreadId();
    // Off Linux there is no /proc/thread-self: priority.ts answers `none` for those platforms anyway.
    const own = tid ?? process.pid;
    const nice = await raiseMediaPriority(priorityDeps(own));
    // This thread only carries audio and sleeps between frames: it may be real-time (the main thread never is).
    const realtime = tid !== undefined ? await raiseToRealtime(tid) : ({ method: 'none', reason: 'no thread id' } as const);
    // The device streams' own threads move the audio too: the same as this thread got (they would run at
    // nice 0 otherwise: a real-time policy is not inherited, and they start after the nice level was set).
    onStreamThread((t) => {
      if (realtime.method !== 'none') void raiseToRealtime(t);
      else if (nice.method === 'setpriority') {
        try {
          setPriority(t, MEDIA_NICE);
        } catch {
          // refused now although allowed before: the stream still works at normal priority
        }
      } else if (nice.method === 'rtkit') void rtkitHighPriority(t, MEDIA_NICE).catch(() => {});
    });
    return { ...nice, tid: own, realtime };
  },
};

/**
 * main/media/priority.ts's dependencies for this thread: this thread first,
 * then every other thread of the process — libuv's pool, which runs
 * PortAudio's blocking reads and writes, and the main thread, which still
 * carries group calls' media (main/media/group-media.ts) — at the same nice
 * level. Only this thread is made real-time.
 */
function priorityDeps(tid: number): PriorityDeps {
  return {
    setThreadNice: (t, nice) => setPriority(t, nice),
    rtkitHighPriority,
    threads: () => {
      try {
        const others = readdirSync('/proc/self/task')
          .map(Number)
          .filter((t) => Number.isInteger(t) && t !== tid);
        return [tid, ...others];
      } catch {
        return [tid];
      }
    },
    platform: process.platform,
  };
}

function onNotice(n: Notice): void {
  if (n.type === 'processing.configure') {
    for (const s of sessions.values()) s.processor?.configure(n.settings as VoiceProcessingSettings);
    return;
  }
  const s = sessionOf(n.sessionId);
  if (!s) return;
  switch (n.type) {
    case 'session.start':
      return s.media.start();
    case 'session.startSending':
      s.media.startSending();
      return postSessionState(n.sessionId, s.media);
    case 'session.setHeld':
      return s.media.setHeld(n.held);
    case 'session.setMicOpen':
      return s.media.setMicOpen(n.open);
    case 'session.setOutputGain':
      return s.media.setOutputGain(n.gain);
    case 'session.replacePeer':
      return s.media.replacePeer(peerOf(n.peerId));
    case 'device.warn': {
      const error = new AudioDeviceError((n.error.code ?? 'stream_error') as AudioDeviceError['kind'], n.error.message);
      return (n.direction === 'input' ? s.source : s.sink).warn(error);
    }
    case 'device.restored':
      return (n.direction === 'input' ? s.source : s.sink).restored();
  }
}

port.on('message', (message: ToWorker) => {
  if (message.kind === 'notice') {
    try {
      onNotice(message);
    } catch (e) {
      console.error(`[media] ${message.type}: ${e instanceof Error ? e.message : String(e)}`);
    }
    return;
  }
  const { id, method, params } = message;
  const handler = handlers[method] as (p: typeof params) => Promise<Results[Method]> | Results[Method];
  Promise.resolve()
    .then(() => handler(params))
    .then(
      (result) => post({ kind: 'reply', id, ok: true, result }),
      (e: unknown) => post({ kind: 'reply', id, ok: false, error: toWire(e) }),
    );
});

// Linux: the thread shows as `parley-media` in top -H, ps -L and /proc/<pid>/task/<tid>/comm.
try {
  writeFileSync('/proc/thread-self/comm', MEDIA_THREAD_NAME);
} catch {
  // not Linux
}

post({ kind: 'event', type: 'ready' });
