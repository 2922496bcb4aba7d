/**
 * The main thread's side of the media worker (media-worker.ts): starts the
 * thread, speaks contract.ts with it, and hands the call engine a
 * {@link MediaBackend} whose peers and sessions are handles on the worker's.
 * The AudioRouter stays here and decides which device each direction uses;
 * the worker's streams follow it through {@link RemoteStream}.
 */
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SHARE_ENV, Worker } from 'node:worker_threads';
import { setFlagsFromString } from 'node:v8';
import type { TransportKind } from '../../../common/call';
import type { MediaStats } from '../../../common/protocol/control';
import { AudioDeviceError, devicesSettled } from '../../../native/audio-device';
import type { RoutedStream } from '../audio-router';
import type { CallMedia, CallPeer, MediaBackend, MediaSessionSettings } from '../media-backend';
import type { MediaSessionEvents } from '../media-session';
import type { CandidateInit, DtlsAuthFailure, PeerConnectionState, PeerOptions, SessionDescription } from '../peer';
import type { LocalAudio, OpusSettings } from '../platform';
import type { PriorityResult, RealtimeResult } from '../priority';
import type { SrtpKeyBinding } from '../srtp-binding';
import type { FromWorker, Method, Notice, Params, PeerSnapshot, Results, SessionEvent, SessionState, ToWorker, WireError } from './contract';

/** Where the worker's code is: built next to the bundle (out/cli/media-worker.mjs, out/main/media-worker.js) or the TypeScript source. */
function workerEntry(): { path: string; execArgv: string[] } {
  for (const name of ['./media-worker.mjs', './media-worker.js']) {
    const path = fileURLToPath(new URL(name, import.meta.url));
    if (existsSync(path)) return { path, execArgv: [] };
  }
  const source = fileURLToPath(new URL('./media-worker.ts', import.meta.url));
  if (existsSync(source)) return { path: source, execArgv: ['--import', 'tsx'] };
  throw new Error(`the media thread's code (media-worker.mjs) is missing next to ${fileURLToPath(import.meta.url)}: rebuild Parley`);
}

function spawnWorker(): Worker {
  const entry = workerEntry();
  // V8's memory reducer, for the heap the media thread is about to get (a V8 flag is read when an
  // isolate's heap is set up, and is process-wide: heaps made later have none either). It collects
  // garbage on a timer to shrink an idle heap — in a call, each daemon ran two or three such collections
  // 15–16 s after the call began, 0.6 s apart, and each held the media thread (and, on two cores, the
  // other end's capture) for 30–50 ms: a late packet, an underrun, a jitter buffer 5 ms deeper for
  // 20 s (docs/audio.md, "The media thread's garbage collection"). The media thread allocates little
  // and lives as long as the process: the young generation's scavenges and the old generation's own
  // limits keep its heap in bounds without it.
  setFlagsFromString('--no-memory-reducer');
  // SHARE_ENV: the worker's process.env is the process's real environment, which ALSA's pulse
  // plugin reads (native/audio-device picks a PulseAudio device through PULSE_SOURCE / PULSE_SINK).
  const worker = new Worker(entry.path, { execArgv: entry.execArgv, name: 'parley-media', env: SHARE_ENV });
  // The daemon lives as long as its sockets do; the media thread does not keep it up.
  worker.unref();
  return worker;
}

/** A media thread started by {@link startMediaThreadEarly}, not yet taken by a host. */
let early: { worker: Worker; dead: boolean } | undefined;

/**
 * Starts the media thread now, for the first {@link MediaWorkerHost} to take:
 * loading its code (werift, Opus, the APM, naudiodon) takes 0.4-0.6 s of a
 * thread here, and a daemon that starts it first thing has it ready by the
 * time it has signed in, so the first call's offer does not wait for it.
 * Never throws (a host then starts its own when it needs one).
 */
export function startMediaThreadEarly(): void {
  if (early) return;
  try {
    const e = { worker: spawnWorker(), dead: false };
    e.worker.once('error', () => (e.dead = true));
    e.worker.once('exit', () => (e.dead = true));
    early = e;
  } catch {
    // the media thread's code is missing: the host reports that when it is used
  }
}

/** Whether the media thread's code is there to start (it is beside the CLI bundle, and in the sources). */
export function mediaWorkerAvailable(): boolean {
  try {
    workerEntry();
    return true;
  } catch {
    return false;
  }
}

function errorOf(w: WireError): Error {
  if (w.code && ['unavailable', 'no_device', 'not_found', 'open_failed', 'stream_error'].includes(w.code)) {
    return new AudioDeviceError(w.code as AudioDeviceError['kind'], w.message);
  }
  return Object.assign(new Error(w.message), w.code ? { code: w.code } : {});
}

/**
 * The media worker of this process, started on first use and again after it
 * died (a call it carried ends `failed`). One per process: every 1:1 call's
 * media runs on it.
 */
export class MediaWorkerHost {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** @internal handles by id, for the worker's events. */
  readonly peers = new Map<number, RemotePeer>();
  /** @internal */
  readonly sessions = new Map<number, RemoteMedia>();
  /**
   * Runs before a call's devices open in the worker: what holds devices in
   * this thread (a ringtone, the microphone test) lets go of them first
   * (PortAudio opens and closes must not overlap).
   */
  prepareDevices: (() => Promise<void>) | undefined;

  constructor(
    readonly audio: LocalAudio,
    readonly opus: OpusSettings,
  ) {
    audio.onProcessingChange((settings) => this.notify({ kind: 'notice', type: 'processing.configure', settings }));
  }

  /** A new id for a peer or session. */
  newId(): number {
    return this.nextId++;
  }

  /**
   * Calls `method` in the worker.
   * @throws the worker's error (an AudioDeviceError for device failures), or
   *   `the media thread stopped` when it died meanwhile.
   */
  request<M extends Method>(method: M, params: Params[M]): Promise<Results[M]> {
    const worker = this.start();
    const id = this.nextId++;
    return new Promise<Results[M]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.postMessage({ kind: 'request', id, method, params } as ToWorker);
    });
  }

  /** Sends a setter to the worker (dropped when it is not running: nothing of it is left to set). */
  notify(notice: Notice): void {
    this.worker?.postMessage(notice);
  }

  /**
   * Raises the worker thread's priority (main/media/priority.ts, with the
   * worker's kernel thread id): nice −11, and SCHED_RR when allowed. Never throws.
   */
  async raisePriority(): Promise<PriorityResult & { tid?: number; realtime?: RealtimeResult }> {
    try {
      return await this.request('priority', {});
    } catch (e) {
      return { method: 'none', reason: e instanceof Error ? e.message : String(e) };
    }
  }

  /** Stops the worker (calls it carries lose their media). */
  async close(): Promise<void> {
    const w = this.worker;
    if (!w) return;
    this.stopped(w, 'closed');
    await w.terminate();
  }

  /** The {@link MediaBackend} of this worker for the call engine. */
  backend(): MediaBackend {
    return {
      thread: 'worker',
      createPeer: (options) => new RemotePeer(this, options),
      openMedia: (peer, settings) => RemoteMedia.open(this, peer as RemotePeer, settings),
      warmUp: (ptimeMs) => this.request('warmUp', { ptimeMs }),
    };
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const adopted = early && !early.dead ? early.worker : undefined;
    early = undefined;
    const worker = adopted ?? spawnWorker();
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (e) => this.stopped(worker, e.message));
    worker.on('exit', (code) => this.stopped(worker, `exit code ${code}`));
    this.worker = worker;
    return worker;
  }

  /** The worker ended (or is being closed): what it carried fails, the next request starts a new one. */
  private stopped(worker: Worker, why: string): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    const error = new Error(`the media thread stopped (${why})`);
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
    for (const s of this.sessions.values()) s.lost(error);
    this.sessions.clear();
    this.peers.clear();
  }

  private onMessage(m: FromWorker): void {
    if (m.kind === 'reply') {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(errorOf(m.error));
      return;
    }
    switch (m.type) {
      case 'ready':
        return;
      case 'peer.candidate':
        return this.peers.get(m.peerId)?.candidate(m.candidate ?? undefined);
      case 'peer.state':
        return this.peers.get(m.peerId)?.update(m.snapshot);
      case 'session.state':
        return this.sessions.get(m.sessionId)?.update(m.state);
      case 'session.event':
        return this.sessions.get(m.sessionId)?.event(m.event);
      case 'device.failed':
        return this.sessions.get(m.sessionId)?.deviceFailed(m.direction, errorOf(m.error));
    }
  }
}

/**
 * A werift peer in the media worker, seen from the main thread: requests go
 * over, candidates and state changes come back; the read-only accessors
 * answer from the last {@link PeerSnapshot}.
 */
export class RemotePeer implements CallPeer {
  readonly id: number;
  private state: PeerSnapshot = { connectionState: 'new', srtpKeysBound: false };
  private readonly candidateListeners: ((c: CandidateInit | undefined) => void)[] = [];
  /** Candidates that came before anyone listened. */
  private early: (CandidateInit | undefined)[] | undefined = [];
  private readonly stateListeners: ((s: PeerConnectionState) => void)[] = [];
  private closed = false;

  constructor(
    private readonly host: MediaWorkerHost,
    options: PeerOptions,
  ) {
    this.id = host.newId();
    host.peers.set(this.id, this);
    // The worker takes messages in order and creates the peer at once: requests need not wait for this answer.
    void host.request('peer.create', { peerId: this.id, options }).catch(() => {});
  }

  private call<M extends Method>(method: M, params: Params[M]): Promise<Results[M]> {
    return this.host.request(method, params);
  }

  /** @internal from the worker. */
  candidate(c: CandidateInit | undefined): void {
    if (this.early) this.early.push(c);
    else for (const l of this.candidateListeners) l(c);
  }

  /** @internal from the worker. */
  update(snapshot: PeerSnapshot): void {
    const changed = snapshot.connectionState !== this.state.connectionState;
    this.state = snapshot;
    if (changed) for (const l of this.stateListeners) l(snapshot.connectionState);
  }

  bindSrtpKeys(binding: SrtpKeyBinding | undefined): void {
    void this.call('peer.bindSrtpKeys', { peerId: this.id, binding }).catch(() => {});
  }

  get srtpKeysBound(): boolean {
    return this.state.srtpKeysBound;
  }

  onCandidate(listener: (candidate: CandidateInit | undefined) => void): void {
    this.candidateListeners.push(listener);
    const early = this.early;
    this.early = undefined;
    for (const c of early ?? []) listener(c);
  }

  onConnectionState(listener: (state: PeerConnectionState) => void): void {
    this.stateListeners.push(listener);
  }

  createOffer(): Promise<SessionDescription> {
    return this.call('peer.createOffer', { peerId: this.id });
  }

  acceptOffer(offer: string): Promise<SessionDescription> {
    return this.call('peer.acceptOffer', { peerId: this.id, sdp: offer });
  }

  async acceptAnswer(answer: string): Promise<void> {
    await this.call('peer.acceptAnswer', { peerId: this.id, sdp: answer });
  }

  async addCandidate(candidate: CandidateInit): Promise<void> {
    await this.call('peer.addCandidate', { peerId: this.id, candidate });
  }

  async connected(timeoutMs: number): Promise<void> {
    await this.call('peer.connected', { peerId: this.id, timeoutMs });
  }

  gatheredSdp(timeoutMs: number): Promise<string> {
    return this.call('peer.gatheredSdp', { peerId: this.id, timeoutMs });
  }

  transportKind(): TransportKind | undefined {
    return this.state.transportKind;
  }

  remoteCertificate(): Uint8Array | undefined {
    return this.state.remoteCertificate;
  }

  dtlsAuthFailure(): DtlsAuthFailure | undefined {
    return this.state.dtlsAuthFailure;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.call('peer.close', { peerId: this.id }).catch(() => {});
    this.host.peers.delete(this.id);
  }
}

/**
 * A direction of a worker session as the router sees it: switches go to the
 * worker's RoutedCapture/RoutedPlayback, warnings and recoveries come and go
 * through the session.
 */
class RemoteStream implements RoutedStream {
  private switches = 0;
  private opened = true;
  closed = false;

  constructor(
    private readonly media: RemoteMedia,
    readonly direction: 'input' | 'output',
    public device: string | undefined,
  ) {}

  get isOpen(): boolean {
    return this.opened || this.switches > 0;
  }

  async switchTo(device: string): Promise<{ gapMs: number; flowing: boolean } | undefined> {
    if (this.closed) return undefined;
    this.switches++;
    try {
      const result = await this.media.host.request('device.switch', { sessionId: this.media.id, direction: this.direction, device });
      if (result) {
        this.device = device;
        this.opened = true;
      }
      return result ?? undefined;
    } catch (e) {
      this.opened = false;
      throw e;
    } finally {
      this.switches--;
    }
  }

  warn(error: AudioDeviceError): void {
    if (this.closed) return;
    this.media.host.notify({
      kind: 'notice',
      type: 'device.warn',
      sessionId: this.media.id,
      direction: this.direction,
      error: { message: error.message, code: error.kind },
    });
  }

  restored(): void {
    if (!this.closed) this.media.host.notify({ kind: 'notice', type: 'device.restored', sessionId: this.media.id, direction: this.direction });
  }
}

/**
 * A media session in the worker, seen from the main thread: the same events
 * as a MediaSession; `stats`, `isStalled` and `silentMs` from its last report.
 */
export class RemoteMedia extends EventEmitter<MediaSessionEvents> implements CallMedia {
  private state: SessionState;
  /** When startSending was called here, Unix ms. */
  private sendingSince: number | undefined;
  private readonly streams: RemoteStream[];
  private closed = false;

  private constructor(
    readonly host: MediaWorkerHost,
    readonly id: number,
    state: SessionState,
    input: string,
    output: string,
  ) {
    super();
    this.state = state;
    this.streams = [new RemoteStream(this, 'input', input), new RemoteStream(this, 'output', output)];
    for (const s of this.streams) host.audio.router.adopt(s);
  }

  /**
   * Opens a session in the worker on `peer`, on the devices the router picks now.
   * @throws AudioDeviceError when a device cannot be opened.
   */
  static async open(host: MediaWorkerHost, peer: RemotePeer, settings: MediaSessionSettings): Promise<RemoteMedia> {
    // Streams this thread closes (a tone, the microphone test) finish before the worker opens its own.
    await host.prepareDevices?.();
    await devicesSettled();
    const router = host.audio.router;
    const input = router.target('input');
    const output = router.target('output');
    const id = host.newId();
    const opened = await host.request('session.open', {
      sessionId: id,
      peerId: peer.id,
      frameMs: settings.frameMs,
      ...(settings.jitterTargetMs !== undefined ? { jitterTargetMs: settings.jitterTargetMs } : {}),
      dtx: settings.dtx,
      mediaTimeoutMs: settings.mediaTimeoutMs,
      micOpen: settings.micOpen,
      outputGain: settings.outputGain,
      opus: { ...host.opus, dtx: settings.dtx || host.opus.dtx },
      processing: host.audio.getProcessing(),
      pulse: router.pulse,
      input,
      output,
    });
    if (opened.processingUnavailable) host.audio.processingUnavailable = opened.processingUnavailable;
    const media = new RemoteMedia(host, id, opened.state, input, output);
    host.sessions.set(id, media);
    return media;
  }

  private notice(n: Record<string, unknown> & { type: Notice['type'] }): void {
    if (!this.closed) this.host.notify({ kind: 'notice', sessionId: this.id, ...n } as Notice);
  }

  start(): void {
    this.notice({ type: 'session.start' });
  }

  startSending(): void {
    // Until the worker's first report after this, silence counts from now (as MediaSession's watchdog does).
    this.sendingSince = Date.now();
    this.state = { ...this.state, silentSince: this.state.silentSince ?? this.sendingSince };
    this.notice({ type: 'session.startSending' });
  }

  setHeld(held: boolean): void {
    this.notice({ type: 'session.setHeld', held });
  }

  setMicOpen(open: boolean): void {
    this.notice({ type: 'session.setMicOpen', open });
  }

  setOutputGain(gain: number): void {
    this.notice({ type: 'session.setOutputGain', gain });
  }

  replacePeer(peer: CallPeer): void {
    this.notice({ type: 'session.replacePeer', peerId: (peer as RemotePeer).id });
  }

  isStalled(): boolean {
    return this.state.stalled;
  }

  silentMs(): number | undefined {
    return this.state.silentSince === undefined ? undefined : Math.max(0, Date.now() - this.state.silentSince);
  }

  stats(): MediaStats {
    return this.state.stats;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.forgetStreams();
    try {
      const { state } = await this.host.request('session.close', { sessionId: this.id });
      this.state = state;
    } catch {
      // the worker is gone: so are the devices
    }
    this.host.sessions.delete(this.id);
  }

  /** @internal the worker's periodic report. */
  update(state: SessionState): void {
    // A report sent before the worker took startSending has no silence yet: keep counting from startSending.
    this.state = state.silentSince === undefined && this.sendingSince !== undefined ? { ...state, silentSince: this.sendingSince } : state;
  }

  /** @internal a session event from the worker. */
  event(e: SessionEvent): void {
    if (this.closed) return;
    switch (e.name) {
      case 'deviceError':
        this.emit('deviceError', errorOf(e.error), e.direction);
        return;
      case 'deviceRestored':
        this.emit('deviceRestored', e.direction);
        return;
      case 'suspended':
        this.emit('suspended', e.ms);
        return;
      case 'levels':
        this.emit('levels', e.levels);
        return;
      default:
        this.emit(e.name);
    }
  }

  /** @internal a device stream failed in the worker: the router decides where it goes. */
  deviceFailed(direction: 'input' | 'output', error: Error): void {
    const stream = this.streams.find((s) => s.direction === direction);
    if (!stream || stream.closed) return;
    const e = error instanceof AudioDeviceError ? error : new AudioDeviceError('stream_error', error.message);
    void this.host.audio.router.recover(stream, e);
  }

  /** @internal the worker died: the call's media is gone. */
  lost(error: Error): void {
    if (this.closed) return;
    this.forgetStreams();
    this.emit('deviceError', error, 'output');
    this.emit('mediaTimeout');
  }

  private forgetStreams(): void {
    for (const s of this.streams) {
      s.closed = true;
      this.host.audio.router.forget(s);
    }
  }
}
