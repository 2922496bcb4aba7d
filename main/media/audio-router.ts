/**
 * Which microphone and speaker a call uses, and keeping that right while the
 * call runs (issue 7, docs/audio.md):
 *
 * - the user's choice per direction is `default` (follow the OS default) or a
 *   PulseAudio sink/source *name*, the device's stable identity;
 * - the device list comes from PulseAudio (`native/audio-device/pulse.ts`) and
 *   is refreshed on every `pactl subscribe` event, without touching PortAudio;
 * - on a change the router works out the device each direction should use
 *   (the chosen one when present, else the OS default) and, when that differs
 *   from the open stream's, moves the stream: the old one is closed, the new
 *   one opened on the same {@link RoutedCapture} / {@link RoutedPlayback}, so
 *   the media session never sees the switch (the far end hears a short gap);
 * - a chosen device that disappears falls back to the default with a
 *   `warning`; when it returns it is used again and the warning is
 *   `cleared` (so is a failed stream's, once a stream on the device the
 *   rules prefer carries audio again).
 *
 * Without PulseAudio (no pactl) device names go to PortAudio as before and
 * nothing is followed: switching still works, but only on request.
 */
import { EventEmitter } from 'node:events';
import {
  AudioDeviceError,
  devicesSettled,
  openCapture,
  openPlayback,
  type CaptureStream,
  type FrameMs,
  type PlaybackStream,
} from '../../native/audio-device';
import { listPulseDevices, PulseWatcher, type PulseDevices } from '../../native/audio-device/pulse';
import type { AudioSink, AudioSource } from './media-session';

export type Direction = 'input' | 'output';

/** What the user chose: `default` or a PulseAudio device name. */
export interface DeviceChoice {
  input: string;
  output: string;
}

/** The device list as the control API shows it. */
export interface DeviceList {
  /** False when PulseAudio cannot be asked (no pactl or no server): names then go to PortAudio. */
  pulse: boolean;
  inputs: { name: string; description: string; isDefault: boolean }[];
  outputs: { name: string; description: string; isDefault: boolean }[];
  /** The user's choice (`default` or a name). */
  chosen: DeviceChoice;
  /** The device each open stream uses now (absent when no call has the devices open). */
  active: { input?: string; output?: string };
}

/** A problem the user should see (the call goes on). */
export interface AudioWarning {
  direction: Direction;
  /** The device concerned (a PulseAudio name), when there is one. */
  device?: string;
  message: string;
}

/** A direction's warning whose cause ended: its stream carries audio on the device the user wants again. */
export interface AudioWarningCleared {
  direction: Direction;
  /** The device the stream uses now (a PulseAudio name, or `default`). */
  device: string;
  message: string;
}

/** One completed stream switch and how long no audio flowed, ms (close + open + first frame). */
export interface SwitchReport {
  direction: Direction;
  from: string | undefined;
  to: string;
  gapMs: number;
  reason: 'requested' | 'default_changed' | 'fell_back' | 'returned' | 'recovered';
}

const DEFAULT = 'default';

/**
 * Writes the router's device events to a log, one line each (`[audio] …`):
 * switches with their gap, warnings and their clearing. The CLI daemon, the
 * desktop app and the development bridge all log the same lines.
 */
export function logDeviceEvents(router: AudioRouter, log: (line: string) => void): void {
  router.on('warning', (w) => log(`[audio] warning: ${w.message}`));
  router.on('cleared', (c) => log(`[audio] ${c.message}`));
  router.on('switched', (r) => log(`[audio] ${r.direction} ${r.from ?? '-'} → ${r.to} (${r.reason}, ${r.gapMs.toFixed(0)} ms)`));
}


function normalise(name: string | undefined): string {
  if (!name || name === DEFAULT) return DEFAULT;
  return name.startsWith('pulse:') ? name.slice('pulse:'.length) : name;
}

/**
 * The router. `start()` once (it lists devices and starts watching), then
 * `open(frameMs)` for each call. Events: `devices` (the list changed),
 * `warning`, `cleared` (a direction's warning no longer holds), `switched`.
 */
export class AudioRouter
  extends EventEmitter<{
    devices: [DeviceList];
    warning: [AudioWarning];
    cleared: [AudioWarningCleared];
    switched: [SwitchReport];
  }>
  implements StreamOwner
{
  /** Directions with a warning out that has not been cleared yet. */
  private readonly warned = new Set<Direction>();
  private choice: DeviceChoice;
  private known: PulseDevices | undefined;
  private watcher: PulseWatcher | undefined;
  private readonly live = new Set<RoutedStream>();
  private refreshing: Promise<void> | undefined;
  /** Every description seen, so that a device that is gone can still be named for the user. */
  private readonly descriptions = new Map<string, string>();
  /**
   * Streams that failed (would not open, or opened and stalled): when last
   * (performance.now() ms), the retry delay (ms; doubles up to RETRY_MAX_MS)
   * and the pending retry. Failures less than FAILURE_RUN_MS apart are one
   * run: warned about once, retried with back-off.
   */
  private readonly failures = new Map<RoutedStream, { at: number; delayMs: number; timer: NodeJS.Timeout | undefined }>();

  constructor(choice: Partial<DeviceChoice> = {}) {
    super();
    this.choice = { input: normalise(choice.input), output: normalise(choice.output) };
  }

  /** Lists devices and starts following changes; without PulseAudio it stays in PortAudio mode. Never throws. */
  async start(): Promise<void> {
    try {
      this.known = this.learn(await listPulseDevices());
    } catch {
      this.known = undefined;
      return;
    }
    this.watcher = new PulseWatcher();
    this.watcher.on('change', () => void this.refresh());
    this.watcher.on('error', (e) => this.emit('warning', { direction: 'output', message: e.message }));
    this.watcher.start();
  }

  /** Stops following changes and retrying failed opens (open streams stay open). */
  close(): void {
    this.watcher?.close();
    for (const f of this.failures.values()) clearTimeout(f.timer);
    this.failures.clear();
  }

  /** Whether PulseAudio answers (else device names go to PortAudio and nothing is followed). */
  get pulse(): boolean {
    return this.known !== undefined;
  }

  /** The devices, the choice and the devices the open streams use now. */
  list(): DeviceList {
    const active: DeviceList['active'] = {};
    for (const s of this.live) active[s.direction] = s.device;
    return {
      pulse: this.pulse,
      inputs: this.known?.inputs ?? [],
      outputs: this.known?.outputs ?? [],
      chosen: { ...this.choice },
      active,
    };
  }

  /**
   * Chooses devices (`default` or a PulseAudio name, `pulse:` prefix allowed)
   * and moves open streams to them. Resolves once the streams have moved.
   * @throws AudioDeviceError('not_found') for a name PulseAudio does not have
   *   (the list is in the message); nothing changes then.
   */
  async choose(next: Partial<DeviceChoice>): Promise<DeviceList> {
    const want = { ...this.choice };
    for (const direction of ['input', 'output'] as const) {
      const raw = next[direction];
      if (raw === undefined) continue;
      const name = normalise(raw);
      if (name !== DEFAULT && this.known) {
        const list = direction === 'input' ? this.known.inputs : this.known.outputs;
        if (!list.some((d) => d.name === name)) {
          throw new AudioDeviceError(
            'not_found',
            `no audio ${direction} named "${name}"; available: ${list.map((d) => `"${d.name}"`).join(', ') || 'none'}`,
          );
        }
      }
      want[direction] = name;
    }
    this.choice = want;
    await this.reconcile('requested');
    this.emit('devices', this.list());
    return this.list();
  }

  /** Re-reads the device list and moves streams where the rules say. Never throws. */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        this.known = this.learn(await listPulseDevices());
      } catch {
        return;
      } finally {
        this.refreshing = undefined;
      }
      await this.reconcile();
      this.emit('devices', this.list());
    })();
    return this.refreshing;
  }

  /**
   * Opens (does not start) a microphone and a speaker on the devices the rules pick.
   * @throws AudioDeviceError when a device cannot be opened.
   */
  async open(frameMs: FrameMs): Promise<{ source: RoutedCapture; sink: RoutedPlayback }> {
    await devicesSettled();
    const source = new RoutedCapture(this, frameMs);
    source.open(this.target('input'));
    const sink = new RoutedPlayback(this, frameMs);
    try {
      sink.open(this.target('output'));
    } catch (e) {
      await source.close();
      throw e;
    }
    this.live.add(source);
    this.live.add(sink);
    return { source, sink };
  }

  /**
   * Routes a stream opened elsewhere (the media worker's, through its handle,
   * main/media/worker/host.ts) like one of {@link open}'s: it moves with the
   * choice and the default until it is forgotten.
   */
  adopt(stream: RoutedStream): void {
    this.live.add(stream);
  }

  /** @internal a routed stream closed for good. */
  forget(stream: RoutedStream): void {
    this.live.delete(stream);
    clearTimeout(this.failures.get(stream)?.timer);
    this.failures.delete(stream);
  }

  /** @internal a routed stream failed (device gone, wedged): re-evaluate and reopen it. */
  async recover(stream: RoutedStream, error: AudioDeviceError): Promise<void> {
    // Failing again before it carried audio (a stream that opens but stalls): no new warning, and the
    // next reopen waits its turn in the retry back-off instead of looping every few seconds.
    if (this.failing(stream)) {
      this.retry(stream);
      return;
    }
    this.failed(stream);
    await this.refresh();
    const target = this.target(stream.direction);
    this.warn({ direction: stream.direction, device: stream.device, message: error.message });
    await this.move(stream, target, 'recovered');
    if (stream.device === target) await this.settle(stream);
  }

  /**
   * The device a direction should use now: the chosen one when PulseAudio has
   * it, else the OS default (by name, so that a later default change is seen
   * as a change). `default` means "whatever the sound server picks" when
   * PulseAudio cannot be asked.
   */
  target(direction: Direction): string {
    const chosen = this.choice[direction];
    if (!this.known) return chosen;
    const list = direction === 'input' ? this.known.inputs : this.known.outputs;
    const fallback = (direction === 'input' ? this.known.defaultInput : this.known.defaultOutput) ?? DEFAULT;
    if (chosen === DEFAULT) return fallback;
    return list.some((d) => d.name === chosen) ? chosen : fallback;
  }

  private async reconcile(reason?: SwitchReport['reason']): Promise<void> {
    await Promise.all([...this.live].map((stream) => this.settle(stream, reason)));
  }

  /**
   * Moves a stream until it is on the device the rules pick. A move can take
   * seconds (closing a stream whose device vanished waits for PulseAudio), and
   * the device list may change meanwhile — the unplugged headset is plugged
   * back while the stream still moves away from it — so the target is checked
   * again after each move (a refresh that ran meanwhile saw the old device
   * still open and left it).
   */
  private async settle(stream: RoutedStream, reason?: SwitchReport['reason']): Promise<void> {
    for (let moves = 0; moves < 4; moves++) {
      const target = this.target(stream.direction);
      // A stream whose last open failed has no device open: the same name coming back must reopen it.
      if (target === stream.device && stream.isOpen) return;
      const chosen = this.choice[stream.direction];
      let why = moves === 0 ? reason : undefined;
      if (!why) {
        if (chosen === DEFAULT) why = 'default_changed';
        else if (target === chosen) why = 'returned';
        else why = 'fell_back';
      }
      if (why === 'fell_back') {
        const role = stream.direction === 'input' ? 'microphone' : 'speaker';
        this.warn({
          direction: stream.direction,
          device: chosen,
          message: `the ${role} "${this.describe(stream.direction, chosen)}" is gone; using the default (${this.describe(stream.direction, target)}) until it returns`,
        });
        stream.warn(
          new AudioDeviceError('not_found', `the ${role} "${this.describe(stream.direction, chosen)}" is gone; now using ${this.describe(stream.direction, target)}`),
        );
      }
      await this.move(stream, target, why);
      if (stream.device !== target || !stream.isOpen) return; // closed meanwhile, or the device would not open (warned)
    }
  }

  private describe(direction: Direction, name: string): string {
    return this.descriptions.get(`${direction}:${name}`) ?? name;
  }

  private learn(devices: PulseDevices): PulseDevices {
    for (const d of devices.inputs) this.descriptions.set(`input:${d.name}`, d.description);
    for (const d of devices.outputs) this.descriptions.set(`output:${d.name}`, d.description);
    return devices;
  }

  private warn(w: AudioWarning): void {
    this.warned.add(w.direction);
    this.emit('warning', w);
  }

  /**
   * Whether `device` is where the user wants `direction`: the chosen device,
   * or with `default` whatever the OS default is (not a fallback).
   */
  private preferred(direction: Direction, device: string): boolean {
    const chosen = this.choice[direction];
    return chosen === DEFAULT || chosen === device;
  }

  private async move(stream: RoutedStream, target: string, reason: SwitchReport['reason']): Promise<void> {
    const from = stream.device;
    try {
      const switched = await stream.switchTo(target);
      if (switched === undefined) return;
      // Audio flows: no retry is needed now (the run is remembered a while, for a stream that stalls again).
      if (switched.flowing) clearTimeout(this.failures.get(stream)?.timer);
      // Open but not (yet) carrying audio: looked at again after the back-off, when a reopen that flows clears
      // the warning. (One that starts flowing by itself meanwhile — a sink that resumes — is otherwise never
      // seen by the router, and its warning would stay.)
      else this.retry(stream);
      this.emit('switched', { direction: stream.direction, from, to: target, gapMs: switched.gapMs, reason });
      // The cause of a warning ended: the stream carries audio on the device the user wants.
      if (switched.flowing && this.preferred(stream.direction, target) && this.target(stream.direction) === target) {
        const role = stream.direction === 'input' ? 'microphone' : 'speaker';
        stream.restored();
        if (this.warned.delete(stream.direction)) {
          this.emit('cleared', { direction: stream.direction, device: target, message: `the ${role} "${this.describe(stream.direction, target)}" works again` });
        }
      }
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      // Said once per run of failures; the retries go on quietly until one opens (or the stream closes).
      if (!this.failing(stream)) {
        this.warn({ direction: stream.direction, device: target, message: `${message}; trying again` });
        stream.warn(e instanceof AudioDeviceError ? e : new AudioDeviceError('open_failed', message));
      }
      this.retry(stream);
    }
  }

  /**
   * Opens a stream that failed (would not open, or opened and stalled) again
   * after 1 s, then 2, 4 and every 8 s while it is routed, until audio flows:
   * a sound server too busy to answer within the open's 3 s, or a device
   * that is briefly busy, must not leave the call without audio until the
   * user picks a device again.
   */
  private retry(stream: RoutedStream): void {
    if (!this.live.has(stream)) return;
    const f = this.failed(stream);
    f.delayMs = f.delayMs ? Math.min(RETRY_MAX_MS, f.delayMs * 2) : RETRY_FIRST_MS;
    clearTimeout(f.timer);
    const timer = setTimeout(() => {
      if (!this.live.has(stream) || this.failures.get(stream)?.timer !== timer) return;
      // Reopened even when it is (stalled) on the right device; then moved on if the rules changed meanwhile.
      void this.move(stream, this.target(stream.direction), 'recovered').then(() => this.settle(stream));
    }, f.delayMs);
    timer.unref();
    f.timer = timer;
  }

  /** Whether the stream is in a run of failures (its last one less than FAILURE_RUN_MS ago). */
  private failing(stream: RoutedStream): boolean {
    const f = this.failures.get(stream);
    return f !== undefined && performance.now() - f.at < FAILURE_RUN_MS;
  }

  /** Notes a failure of the stream now (a new run, with no back-off yet, when the last run is over). */
  private failed(stream: RoutedStream): { at: number; delayMs: number; timer: NodeJS.Timeout | undefined } {
    const running = this.failing(stream);
    let f = this.failures.get(stream);
    if (!f) this.failures.set(stream, (f = { at: 0, delayMs: 0, timer: undefined }));
    if (!running) f.delayMs = 0;
    f.at = performance.now();
    return f;
  }
}

/** The first retry of a failed open, and the longest gap between retries, ms. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 8000;
/** Audio a reopened speaker must have asked for before it counts as playing, ms (more than its 20 ms buffer). */
const FLOWING_MS = 100;
/** How long a switched speaker may take to ask for {@link FLOWING_MS}, ms. */
const PLAYBACK_FLOWING_WAIT_MS = 3500;
/** Failures of one stream less than this far apart are one run (one warning, growing back-off), ms. */
const FAILURE_RUN_MS = 20_000;

let streamThreadHook: ((tid: number) => void) | undefined;

/**
 * What to do with the own thread of each device stream opened from now on
 * (the libpulse path's `parley-pa-in` / `parley-pa-out`, Linux): the media
 * worker raises it as it raised itself (main/media/worker/media-worker.ts).
 * Such threads do not inherit a real-time policy: it is set with
 * SCHED_RESET_ON_FORK. `undefined` stops it.
 */
export function onStreamThread(hook: ((tid: number) => void) | undefined): void {
  streamThreadHook = hook;
}

/**
 * What a routed stream reports to: the {@link AudioRouter} in its own thread,
 * or, in the media worker, a stand-in that passes failures on to the router
 * in the main thread (main/media/worker/media-worker.ts).
 */
export interface StreamOwner {
  /** Whether device names are PulseAudio's (opened as `pulse:<name>`). */
  readonly pulse: boolean;
  /** A stream failed (device gone, wedged): re-evaluate and reopen it. */
  recover(stream: RoutedStream, error: AudioDeviceError): Promise<void>;
  /** A stream closed for good. */
  forget(stream: RoutedStream): void;
}

/** The spec native/audio-device opens for a routed device name. */
function deviceSpec(router: StreamOwner, name: string): string | undefined {
  if (name === DEFAULT) return undefined;
  return router.pulse ? `pulse:${name}` : name;
}

/** What the router needs of a routed stream (in this thread, or a handle on one in the media worker). */
export interface RoutedStream {
  readonly direction: Direction;
  /** The device the open stream uses (undefined while none is open). */
  readonly device: string | undefined;
  /** A stream is open on `device`, or a switch is under way (false after a failed open). */
  readonly isOpen: boolean;
  /**
   * Closes the current stream and opens `device`; resolves with the gap in ms
   * and whether audio flows on the new stream (a first frame within 2 s), or
   * undefined when closed meanwhile.
   */
  switchTo(device: string): Promise<{ gapMs: number; flowing: boolean } | undefined>;
  /** Passes a warning to the media session (as an `error` event: the call goes on). */
  warn(error: AudioDeviceError): void;
  /** Tells the media session the device trouble is over (a `restored` event). */
  restored(): void;
}

/**
 * A microphone whose device can change underneath: an {@link AudioSource}
 * that forwards the frames of whichever capture stream is open.
 */
export class RoutedCapture
  extends EventEmitter<{ frame: [Int16Array]; error: [AudioDeviceError]; restored: []; switched: [] }>
  implements AudioSource, RoutedStream
{
  readonly direction = 'input' as const;
  device: string | undefined;
  private stream: CaptureStream | undefined;
  private started = false;
  private closed = false;
  private switching: Promise<unknown> = Promise.resolve();
  private switches = 0;

  get isOpen(): boolean {
    return this.stream !== undefined || this.switches > 0;
  }

  constructor(
    private readonly router: StreamOwner,
    readonly frameMs: FrameMs,
  ) {
    super();
  }

  /** @internal opens `device` (not started). @throws AudioDeviceError */
  open(device: string): void {
    const stream = openCapture({ device: deviceSpec(this.router, device), frameMs: this.frameMs });
    if (stream.threadId) streamThreadHook?.(stream.threadId);
    stream.on('frame', (f) => this.emit('frame', f));
    stream.on('error', (e) => {
      if (this.stream === stream && !this.closed) void this.router.recover(this, e);
    });
    this.stream = stream;
    this.device = device;
  }

  start(): void {
    this.started = true;
    this.stream?.start();
  }

  /** The current stream's measured latency, ms (libpulse path), or undefined. */
  latencyMs(): number | undefined {
    return this.stream?.latencyMs?.();
  }

  onSwitched(listener: () => void): void {
    this.on('switched', listener);
  }

  warn(error: AudioDeviceError): void {
    if (!this.closed) this.emit('error', error);
  }

  restored(): void {
    if (!this.closed) this.emit('restored');
  }

  switchTo(device: string): Promise<{ gapMs: number; flowing: boolean } | undefined> {
    const run = async (): Promise<{ gapMs: number; flowing: boolean } | undefined> => {
      if (this.closed) return undefined;
      const t0 = performance.now();
      const old = this.stream;
      this.stream = undefined;
      old?.removeAllListeners('frame');
      await old?.close();
      await devicesSettled();
      if (this.closed) return undefined;
      this.open(device);
      const first = new Promise<boolean>((resolve) => this.stream!.once('frame', () => resolve(true)));
      if (this.started) this.stream!.start();
      const flowing = await Promise.race([first, new Promise<boolean>((r) => setTimeout(() => r(false), 2000))]);
      this.emit('switched');
      return { gapMs: performance.now() - t0, flowing: flowing || !this.started };
    };
    this.switches++;
    const p = this.switching.then(run, run).finally(() => this.switches--);
    this.switching = p.catch(() => {});
    return p;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.router.forget(this);
    await this.switching.catch(() => {});
    const s = this.stream;
    this.stream = undefined;
    s?.removeAllListeners('frame');
    await s?.close();
  }
}

/**
 * A speaker whose device can change underneath: an {@link AudioSink} whose
 * `pull` keeps being served by whichever playback stream is open.
 */
export class RoutedPlayback extends EventEmitter<{ error: [AudioDeviceError]; restored: []; switched: [] }> implements AudioSink, RoutedStream {
  readonly direction = 'output' as const;
  device: string | undefined;
  private stream: PlaybackStream | undefined;
  private pull: (() => Int16Array) | undefined;
  private closed = false;
  private switching: Promise<unknown> = Promise.resolve();
  private switches = 0;

  get isOpen(): boolean {
    return this.stream !== undefined || this.switches > 0;
  }

  constructor(
    private readonly router: StreamOwner,
    readonly frameMs: FrameMs,
  ) {
    super();
  }

  /** @internal opens `device` (not started). @throws AudioDeviceError */
  open(device: string): void {
    const stream = openPlayback({ device: deviceSpec(this.router, device), frameMs: this.frameMs });
    if (stream.threadId) streamThreadHook?.(stream.threadId);
    stream.on('error', (e) => {
      if (this.stream === stream && !this.closed) void this.router.recover(this, e);
    });
    this.stream = stream;
    this.device = device;
  }

  start(pull: () => Int16Array): void {
    this.pull = pull;
    this.stream?.start(pull);
  }

  /** The current stream's measured latency, ms (libpulse path), or undefined. */
  latencyMs(): number | undefined {
    return this.stream?.latencyMs?.();
  }

  onSwitched(listener: () => void): void {
    this.on('switched', listener);
  }

  warn(error: AudioDeviceError): void {
    if (!this.closed) this.emit('error', error);
  }

  restored(): void {
    if (!this.closed) this.emit('restored');
  }

  switchTo(device: string): Promise<{ gapMs: number; flowing: boolean } | undefined> {
    const run = async (): Promise<{ gapMs: number; flowing: boolean } | undefined> => {
      if (this.closed) return undefined;
      const t0 = performance.now();
      const old = this.stream;
      this.stream = undefined;
      await old?.close();
      await devicesSettled();
      if (this.closed) return undefined;
      this.open(device);
      if (!this.pull) return { gapMs: performance.now() - t0, flowing: true };
      const pull = this.pull;
      // Flowing once the device has asked for FLOWING_MS of audio: a stream on a stalled sink is asked
      // for its first buffer (20 ms) and then never again. The gap is measured to the first request.
      let settle: (flowing: boolean) => void = () => {};
      const flowingNow = new Promise<boolean>((resolve) => (settle = resolve));
      let pulledSamples = 0;
      let firstAt: number | undefined;
      this.stream!.start(() => {
        firstAt ??= performance.now();
        const frame = pull(); // frames may be shorter or longer than frameMs (an aligned playout)
        pulledSamples += frame.length;
        if ((pulledSamples * 1000) / 48_000 >= FLOWING_MS) settle(true);
        return frame;
      });
      // A stream that never asks must not hold up later switches (its own watchdog reports it). Longer than
      // PulseAudio's longest sink latency: an idle sink rendering in 2 s blocks asks a new stream for its
      // second buffer only when its block ends (1.9 s measured on a null sink), so a 2 s limit judged such a
      // stream not playing, and each reopen made the sink idle again.
      const timer = setTimeout(() => settle(false), PLAYBACK_FLOWING_WAIT_MS);
      const flowing = await flowingNow;
      clearTimeout(timer);
      this.emit('switched');
      return { gapMs: (firstAt ?? performance.now()) - t0, flowing };
    };
    this.switches++;
    const p = this.switching.then(run, run).finally(() => this.switches--);
    this.switching = p.catch(() => {});
    return p;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.router.forget(this);
    await this.switching.catch(() => {});
    const s = this.stream;
    this.stream = undefined;
    await s?.close();
  }
}
