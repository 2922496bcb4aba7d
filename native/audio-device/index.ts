import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { createRequire, Module } from 'node:module';
import { loadNativeModule, type NativeModuleSpec } from '../load';
import { loadPulseAddon, type PulseAddon, type PulseStream } from '../pulse/index';

/**
 * Audio devices through PortAudio (naudiodon). Parley's pipeline format is
 * fixed: 48 kHz, mono, signed 16-bit PCM, in frames of 10 ms (480 samples) or
 * 20 ms (960 samples). Capture emits exactly one frame per `frame` event;
 * playback takes exactly one frame per `write`.
 *
 * On Linux PortAudio reaches PulseAudio through ALSA's pulse plugin
 * (libasound2-plugins). A device is chosen by name:
 * - `undefined` or `"default"`: the system default;
 * - `"pulse:<name>"`: the PulseAudio source or sink `<name>` (sets
 *   `PULSE_SOURCE` / `PULSE_SINK` for this process before the stream opens);
 * - anything else: a PortAudio device whose name equals it, or else contains it
 *   (case-insensitive).
 */
export const SAMPLE_RATE = 48_000;
export type FrameMs = 10 | 20;

/**
 * PortAudio buffer size in samples (5 ms). Independent of the frame size:
 * measured on PulseAudio here, 5 ms periods cut the device round trip from
 * ~50 ms (one 20 ms period) to ~25 ms without underruns.
 */
export const PERIOD_SAMPLES = 240;

/**
 * The PulseAudio / PipeWire media role of the streams this process opens from
 * now on (`phone` for calls: the sound server's role policy — module-role-cork,
 * module-role-ducking, WirePlumber — then corks or ducks music and video), or
 * `undefined` for none. Streams already open keep theirs.
 *
 * How: libpulse (inside ALSA's pulse plugin, which PortAudio opens per stream)
 * adds every `PULSE_PROP_<key>` variable of the environment to the client's
 * property list, and PulseAudio copies the client's properties onto its
 * streams (pulse-client.conf(5), "ENVIRONMENT VARIABLES"); PipeWire's pulse
 * server does the same.
 */
export function setStreamRole(role: 'phone' | undefined): void {
  if (role) process.env['PULSE_PROP_media.role'] = role;
  else delete process.env['PULSE_PROP_media.role'];
}

/** Samples in one frame of `frameMs` at 48 kHz mono. */
export function frameSamples(frameMs: FrameMs): number {
  return (SAMPLE_RATE / 1000) * frameMs;
}

export interface AudioDeviceInfo {
  id: number;
  name: string;
  hostApi: string;
  maxInputChannels: number;
  maxOutputChannels: number;
  defaultSampleRate: number;
}

/** Why an audio device could not be used; `message` is written for the user. */
export class AudioDeviceError extends Error {
  constructor(
    readonly kind: 'unavailable' | 'no_device' | 'not_found' | 'open_failed' | 'stream_error',
    message: string,
  ) {
    super(message);
    this.name = 'AudioDeviceError';
  }
}

interface NaudiodonDevice {
  id: number;
  name: string;
  hostAPIName: string;
  maxInputChannels: number;
  maxOutputChannels: number;
  defaultSampleRate: number;
}
interface AudioIOStream {
  start(): void;
  quit(cb?: () => void): Promise<void>;
  abort(cb?: () => void): void;
}
interface Naudiodon {
  getDevices(): NaudiodonDevice[];
  SampleFormat16Bit: number;
  AudioIO(options: object): (Readable | Writable) & AudioIOStream;
}

const NAUDIODON: NativeModuleSpec = {
  packageName: 'naudiodon',
  purpose: 'the microphone and speakers (PortAudio)',
  addonPaths: ['build/Release/naudiodon.node'],
  systemLibraries: { 'libasound.so.2': 'libasound2', 'libstdc++.so.6': 'libstdc++6' },
};

let loaded: Naudiodon | undefined;

/**
 * naudiodon's index.js loads `segfault-handler` and registers it to write
 * `crash.log` into the current folder — wherever the user started Parley.
 * It is also not context-aware: a second thread that loads it gets "Module
 * did not self-register", so naudiodon would not load in a worker thread
 * (main/media/worker/) once the main thread had it, nor in a second worker.
 * So naudiodon always gets a module whose `registerHandler` does nothing; the
 * process's crash handler is installed on purpose, with a path in the data
 * folder, by native/crash-log.ts. Never throws.
 */
function stubSegfaultHandler(): void {
  try {
    const fromNaudiodon = createRequire(createRequire(import.meta.url).resolve('naudiodon/package.json'));
    const path = fromNaudiodon.resolve('segfault-handler');
    if (fromNaudiodon.cache[path]?.exports === SEGFAULT_HANDLER_STUB) return;
    const stub = new Module(path);
    stub.filename = path;
    stub.loaded = true;
    stub.exports = SEGFAULT_HANDLER_STUB;
    fromNaudiodon.cache[path] = stub;
  } catch {
    // naudiodon or segfault-handler not installed: loading naudiodon will say so
  }
}

const SEGFAULT_HANDLER_STUB = { registerHandler: () => {} };

/**
 * Loads naudiodon on first use.
 * @throws AudioDeviceError('unavailable') naming the missing system library and its package when the addon cannot load.
 */
function naudiodon(): Naudiodon {
  if (loaded) return loaded;
  try {
    stubSegfaultHandler();
    loaded = loadNativeModule<Naudiodon>(NAUDIODON);
  } catch (e) {
    throw new AudioDeviceError('unavailable', `audio is unavailable: ${(e as Error).message}`);
  }
  return loaded;
}

/**
 * Lists PortAudio's devices. PortAudio scans devices once per process, so the
 * list reflects the moment audio was first used.
 * @throws AudioDeviceError('unavailable') when the addon cannot load.
 */
export function listAudioDevices(): AudioDeviceInfo[] {
  return naudiodon()
    .getDevices()
    .map((d) => ({
      id: d.id,
      name: d.name,
      hostApi: d.hostAPIName,
      maxInputChannels: d.maxInputChannels,
      maxOutputChannels: d.maxOutputChannels,
      defaultSampleRate: d.defaultSampleRate,
    }));
}

/**
 * Resolves a device name to a PortAudio device id (-1 = default).
 * @throws AudioDeviceError('no_device') when PortAudio sees no device at all,
 *   ('not_found') when no device matches the name (the message lists the ones there are).
 */
export function resolveDevice(name: string | undefined, direction: 'input' | 'output'): number {
  const devices = listAudioDevices().filter((d) =>
    direction === 'input' ? d.maxInputChannels > 0 : d.maxOutputChannels > 0,
  );
  if (devices.length === 0) {
    throw new AudioDeviceError(
      'no_device',
      `no audio ${direction} device found: PortAudio sees none. Is PulseAudio (or PipeWire) running, and ALSA's pulse plugin (libasound2-plugins) installed?`,
    );
  }
  if (name === undefined || name === '' || name === 'default') return -1;
  if (name.startsWith('pulse:')) {
    const pulseName = name.slice('pulse:'.length);
    process.env[direction === 'input' ? 'PULSE_SOURCE' : 'PULSE_SINK'] = pulseName;
    return devices.find((d) => d.name === 'pulse')?.id ?? -1;
  }
  const exact = devices.find((d) => d.name === name);
  if (exact) return exact.id;
  const lower = name.toLowerCase();
  const partial = devices.find((d) => d.name.toLowerCase().includes(lower));
  if (partial) return partial.id;
  throw new AudioDeviceError(
    'not_found',
    `no audio ${direction} device named "${name}"; available: ${devices.map((d) => `"${d.name}"`).join(', ')}`,
  );
}

/** A started microphone that has delivered nothing after this long is reported as failed, ms. */
const CAPTURE_START_TIMEOUT_MS = 3000;

/**
 * A started PulseAudio playback stream that has asked for nothing for this
 * long (its buffer holds 20 ms) is reported as failed, ms: the router then
 * reopens it. Above PulseAudio's longest sink latency (2 s: an idle sink
 * that renders in 2 s blocks notices a new low-latency stream only at the
 * end of its block, measured 1.9 s on a null sink). A pause of this process
 * (SIGSTOP, a machine asleep, a long GC) is not counted: the check forgives
 * any tick that itself came late.
 */
const PLAYBACK_STALL_MS = 4000;
const PLAYBACK_CHECK_MS = 250;

/** Longest wait for PortAudio to stop a stream, ms. */
const STOP_TIMEOUT_MS = 2000;

/**
 * Stops and closes a naudiodon stream (Pa_StopStream, Pa_CloseStream) off the
 * main thread. naudiodon's own `abort()` throws (it passes its native `quit`
 * a callback it does not take), so this uses `quit()`, bounded by
 * STOP_TIMEOUT_MS so that a wedged device cannot hang a hangup.
 */
async function stopStream(io: AudioIOStream): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const quit = io.quit().catch(() => {});
  stopping.add(quit);
  void quit.finally(() => stopping.delete(quit));
  await Promise.race([quit, new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_TIMEOUT_MS)))]);
  clearTimeout(timer);
}

/** Streams being stopped on a worker thread (Pa_StopStream, Pa_CloseStream, Pa_Terminate). */
const stopping = new Set<Promise<void>>();

/**
 * Resolves once every stream that was closing has stopped (at most
 * STOP_TIMEOUT_MS). PortAudio's initialise/terminate and open/close are not
 * thread-safe, and naudiodon stops streams on a worker thread: open new
 * streams only after this, or a call that starts right after another ends can
 * get a microphone that never delivers a frame.
 */
export async function devicesSettled(): Promise<void> {
  if (stopping.size === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all([...stopping]),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
}

/**
 * Opens one PortAudio stream, 48 kHz mono s16 with 5 ms periods.
 * @param chunkBytes bytes per stream chunk (naudiodon's highwaterMark).
 * @param maxQueue chunks naudiodon queues between PortAudio and Node.
 * @throws AudioDeviceError('open_failed') naming the device role and PortAudio's reason.
 */
function openStream(
  direction: 'input' | 'output',
  deviceId: number,
  chunkBytes: number,
  maxQueue: number,
): (Readable | Writable) & AudioIOStream {
  const options = {
    channelCount: 1,
    sampleFormat: naudiodon().SampleFormat16Bit,
    sampleRate: SAMPLE_RATE,
    deviceId,
    closeOnError: false,
    framesPerBuffer: PERIOD_SAMPLES,
    highwaterMark: chunkBytes,
    maxQueue,
  };
  let io: (Readable | Writable) & AudioIOStream;
  lastBackend = 'portaudio';
  try {
    io = naudiodon().AudioIO(direction === 'input' ? { inOptions: options } : { outOptions: options });
  } catch (e) {
    const role = direction === 'input' ? 'microphone' : 'speaker';
    throw new AudioDeviceError('open_failed', `could not open the ${role}: ${(e as Error).message}`);
  }
  // naudiodon logs stream errors to the console itself; Parley reports them through its own events.
  io.removeAllListeners('error');
  return io;
}

export interface CaptureOptions {
  /** Device name (see module doc); default: the system's. */
  device?: string;
  frameMs: FrameMs;
}

/**
 * Microphone capture. Emits `frame` (Int16Array of exactly frameSamples(frameMs)
 * samples, 48 kHz mono) once per frame, in device time; `error` with an
 * AudioDeviceError when the device fails or disappears.
 */
export interface CaptureStream extends EventEmitter<{
  frame: [Int16Array];
  error: [AudioDeviceError];
}> {
  readonly frameMs: FrameMs;
  /** The kernel id of the stream's own thread (libpulse path, Linux), to raise its priority; absent otherwise. */
  readonly threadId?: number;
  /**
   * The capture latency the sound server measures for this stream, ms: the
   * source's own plus what waits in the stream's buffer (pa_stream_get_latency,
   * libpulse path); undefined on other paths or before the first timing update.
   */
  latencyMs?(): number | undefined;
  start(): void;
  /** Stops and releases the device. Never throws. */
  close(): Promise<void>;
}

/**
 * Opens a capture stream (not started).
 * @throws AudioDeviceError when the device cannot be found or opened.
 */
export function openCapture(options: CaptureOptions): CaptureStream {
  const pulse = pulseStream(options.device, 'input', options.frameMs);
  if (pulse) return pulseCapture(pulse, options.frameMs);
  const id = resolveDevice(options.device, 'input');
  const samples = frameSamples(options.frameMs);
  const frameBytes = samples * 2;
  const io = openStream('input', id, frameBytes, 4) as Readable & AudioIOStream;

  const emitter = new EventEmitter() as CaptureStream;
  let pending: Buffer = Buffer.alloc(0);
  let framesSeen = 0;
  let closed = false;
  io.on('data', (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= frameBytes) {
      // Copy into an aligned buffer: chunk offsets may be odd.
      const frame = new Int16Array(samples);
      Buffer.from(frame.buffer).set(pending.subarray(0, frameBytes));
      pending = pending.subarray(frameBytes);
      framesSeen++;
      emitter.emit('frame', frame);
    }
  });
  io.on('error', (err: Error) => {
    if (!closed) emitter.emit('error', new AudioDeviceError('stream_error', `microphone failed: ${err.message}`));
  });
  Object.assign(emitter, {
    frameMs: options.frameMs,
    start: () => {
      io.start();
      watchFirstFrame(emitter, () => !closed && framesSeen === 0);
    },
    close: async () => {
      if (closed) return;
      closed = true;
      io.removeAllListeners('data');
      await stopStream(io);
    },
  });
  return emitter;
}

/**
 * A stream that opened but never delivers (a wedged device or sound server)
 * is reported rather than leaving the call silently mute: `error` after
 * CAPTURE_START_TIMEOUT_MS while `silent()` still holds.
 */
function watchFirstFrame(emitter: CaptureStream, silent: () => boolean): void {
  const watchdog = setTimeout(() => {
    if (silent()) emitter.emit('error', new AudioDeviceError('stream_error', `the microphone has delivered no audio for ${CAPTURE_START_TIMEOUT_MS / 1000} s`));
  }, CAPTURE_START_TIMEOUT_MS);
  watchdog.unref();
}

export interface PlaybackOptions {
  /** Device name (see module doc); default: the system's. */
  device?: string;
  frameMs: FrameMs;
  /**
   * Audio queued ahead of the period the device is playing, in ms (rounded
   * to whole 5 ms periods, at least one; default 10). Every period adds 5 ms
   * of mouth-to-ear delay and 5 ms of protection against a late event loop.
   */
  queueMs?: number;
}

/**
 * Speaker playback, paced by the device: the stream asks for the next frame
 * (`pull`) whenever the device has room for one, so the device clock drives
 * playout and there is no drift between a timer and the sound card.
 */
export interface PlaybackStream extends EventEmitter<{ error: [AudioDeviceError] }> {
  readonly frameMs: FrameMs;
  /** The kernel id of the stream's own thread (libpulse path, Linux), to raise its priority; absent otherwise. */
  readonly threadId?: number;
  /**
   * The playback latency the sound server measures for this stream, ms: what
   * waits in the stream's buffer plus the sink's own (pa_stream_get_latency,
   * libpulse path); undefined on other paths or before the first timing update.
   */
  latencyMs?(): number | undefined;
  /**
   * Starts playout; `pull` is called once per frame and must return
   * frameSamples(frameMs) samples (silence when there is nothing to play), or
   * another multiple of the 5 ms period up to twice that (a playout aligning
   * its phase to the packets' arrivals). @throws RangeError from the pull's
   * caller for any other length.
   */
  start(pull: () => Int16Array): void;
  /** Stops and releases the device. Never throws. */
  close(): Promise<void>;
}

/**
 * Opens a playback stream (not started).
 * @throws AudioDeviceError when the device cannot be found or opened.
 */
export function openPlayback(options: PlaybackOptions): PlaybackStream {
  const pulse = pulseStream(options.device, 'output', options.frameMs, options.queueMs);
  if (pulse) return pulsePlayback(pulse, options.frameMs);
  const id = resolveDevice(options.device, 'output');
  const samples = frameSamples(options.frameMs);
  const periods = Math.max(1, Math.round((options.queueMs ?? 10) / ((PERIOD_SAMPLES * 1000) / SAMPLE_RATE)));
  const io = openStream('output', id, PERIOD_SAMPLES * 2, periods) as Writable & AudioIOStream;
  const emitter = new EventEmitter() as PlaybackStream;
  let closed = false;
  io.on('error', (err: Error) => {
    if (!closed) emitter.emit('error', new AudioDeviceError('stream_error', `speaker failed: ${err.message}`));
  });
  Object.assign(emitter, {
    frameMs: options.frameMs,
    start: (pull: () => Int16Array) => {
      // Frames are written one 5 ms period at a time. Each write completes
      // when naudiodon's queue has room, i.e. at the device's pace once the
      // queue is full; that completion writes the next period, and pulls the
      // next frame when the current one is used up. So the queue ahead of the
      // device stays at `queueMs` whatever the frame size.
      let frame: Int16Array = new Int16Array(0);
      let offset = 0;
      const writeNext = (): void => {
        if (closed) return;
        if (offset >= frame.length) {
          frame = pull();
          offset = 0;
          if (!playableLength(frame.length, samples)) throw new RangeError(`playback frame must be ${samples} samples (or a multiple of ${PERIOD_SAMPLES} up to twice that)`);
        }
        const period = Buffer.from(frame.buffer, frame.byteOffset + offset * 2, PERIOD_SAMPLES * 2);
        offset += PERIOD_SAMPLES;
        io.write(period, (err) => {
          if (!err) writeNext();
        });
      };
      io.start();
      writeNext();
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await stopStream(io);
    },
  });
  return emitter;
}

/**
 * Which host API the streams opened last went through: `pulse` (libpulse
 * directly, native/pulse) or `portaudio` (PortAudio, on Linux through ALSA's
 * pulse plugin). Undefined before the first stream.
 */
export let lastBackend: 'pulse' | 'portaudio' | undefined;

/** Whether a pulled playback frame of `length` samples can be played: a positive multiple of the period up to twice the frame. */
function playableLength(length: number, frame: number): boolean {
  return length > 0 && length % PERIOD_SAMPLES === 0 && length <= 2 * frame;
}

/** PulseAudio's fragment (capture) and smallest request (playback): 5 ms, bytes. */
const PULSE_PERIOD_BYTES = PERIOD_SAMPLES * 2;

/**
 * Audio the playback buffer holds ahead of the speaker on PulseAudio, ms,
 * beyond `queueMs`: one fragment for the server's own mixing.
 */
const PULSE_PLAYBACK_EXTRA_MS = 10;

let pulseUnavailable: string | undefined;

/** The addon, unless `PARLEY_AUDIO_BACKEND=portaudio` or it cannot load (then PortAudio serves, and the reason is kept). */
function pulseAddon(): PulseAddon | undefined {
  if (process.env.PARLEY_AUDIO_BACKEND === 'portaudio' || pulseUnavailable !== undefined) return undefined;
  try {
    return loadPulseAddon();
  } catch (e) {
    pulseUnavailable = (e as Error).message;
    return undefined;
  }
}

/**
 * Opens a PulseAudio stream for a `pulse:<name>` or default device; undefined
 * when the device is PortAudio's to open (another name), the addon is not
 * there, or no sound server answers (PortAudio then says what is wrong).
 * Events before the caller's `start` are buffered by the returned opener.
 * @throws AudioDeviceError('not_found') when PulseAudio has no device of that
 *   name, ('open_failed') when it refuses the stream.
 */
function pulseStream(
  device: string | undefined,
  direction: 'input' | 'output',
  frameMs: FrameMs,
  queueMs = 10,
): ((onEvent: (kind: string, payload?: ArrayBuffer | string) => void) => PulseStream) | undefined {
  const name = device?.startsWith('pulse:') ? device.slice('pulse:'.length) : device === undefined || device === '' || device === 'default' ? '' : undefined;
  if (name === undefined) return undefined;
  const addon = pulseAddon();
  if (!addon) return undefined;
  const role = direction === 'input' ? 'microphone' : 'speaker';
  const options = {
    capture: direction === 'input',
    ...(name ? { device: name } : {}),
    name: direction === 'input' ? 'Parley microphone' : 'Parley speaker',
    frameBytes: frameSamples(frameMs) * 2,
    latencyBytes: direction === 'input' ? PULSE_PERIOD_BYTES : Math.round(((queueMs + PULSE_PLAYBACK_EXTRA_MS) * SAMPLE_RATE) / 1000) * 2,
    periodBytes: PULSE_PERIOD_BYTES,
  };
  // Open now (errors belong to the open), deliver events to whoever starts the stream.
  let sink: ((kind: string, payload?: ArrayBuffer | string) => void) | undefined;
  let stream: PulseStream;
  try {
    stream = addon.open(options, (kind, payload) => sink?.(kind, payload));
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === 'ENOENT') {
      throw new AudioDeviceError('not_found', `could not open the ${role}: PulseAudio has no ${direction === 'input' ? 'source' : 'sink'} named "${name}"`);
    }
    if (err.code === 'EPULSE') throw new AudioDeviceError('open_failed', `could not open the ${role}: ${err.message}`);
    return undefined; // no sound server: PortAudio reports what it sees
  }
  lastBackend = 'pulse';
  return (onEvent) => {
    sink = onEvent;
    return stream;
  };
}

/**
 * A libpulse stream's measured latency, ms (undefined before the server's
 * first timing update). A capture stream's may read slightly below zero
 * (libpulse's timing interpolation a fraction of a ms ahead: −0.62 ms seen);
 * that counts as 0.
 */
function streamLatencyMs(stream: { stats(): { latencyUs?: number } }): number | undefined {
  try {
    const us = stream.stats().latencyUs;
    return us === undefined ? undefined : Math.max(0, us / 1000);
  } catch {
    return undefined;
  }
}

/** A {@link CaptureStream} on a PulseAudio source: whole frames as the server delivers them. */
function pulseCapture(open: NonNullable<ReturnType<typeof pulseStream>>, frameMs: FrameMs): CaptureStream {
  const emitter = new EventEmitter() as CaptureStream;
  let closed = false;
  let framesSeen = 0;
  const stream = open((kind, payload) => {
    if (closed) return;
    if (kind === 'frame') {
      framesSeen++;
      emitter.emit('frame', new Int16Array(payload as ArrayBuffer));
    } else if (kind === 'error') {
      emitter.emit('error', new AudioDeviceError('stream_error', `microphone failed: ${payload as string}`));
    }
  });
  Object.assign(emitter, {
    frameMs,
    threadId: stream.threadId() || undefined,
    latencyMs: () => streamLatencyMs(stream),
    start: () => {
      stream.start();
      watchFirstFrame(emitter, () => !closed && framesSeen === 0);
    },
    close: async () => {
      if (closed) return;
      closed = true;
      stream.close();
    },
  });
  return emitter;
}

/**
 * A {@link PlaybackStream} on a PulseAudio sink, paced by the server: each
 * request is answered with exactly the bytes it wants, taken from the current
 * frame and the next pulled ones, so the buffer stays at its target length.
 * The addon keeps the rest of a pulled frame and serves the server's next
 * requests (every 5 ms) from it on its own thread; this thread runs, and pulls,
 * only when a frame is used up — once per frame instead of once per request.
 */
function pulsePlayback(open: NonNullable<ReturnType<typeof pulseStream>>, frameMs: FrameMs): PlaybackStream {
  const samples = frameSamples(frameMs);
  const emitter = new EventEmitter() as PlaybackStream;
  let closed = false;
  let pull: (() => Int16Array) | undefined;
  let lastNeed = 0;
  let watchdog: NodeJS.Timeout | undefined;
  const stream = open((kind, payload) => {
    if (closed) return;
    if (kind === 'need' && pull) {
      lastNeed = performance.now();
      // The addon serves the rest of each frame to the server's later requests by itself: this runs once a frame.
      try {
        let want = stream.writable();
        while (want > 0) {
          const frame = pull();
          if (!playableLength(frame.length, samples)) throw new RangeError(`playback frame must be ${samples} samples (or a multiple of ${PERIOD_SAMPLES} up to twice that)`);
          want = stream.write(new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength));
        }
      } catch (e) {
        if (e instanceof RangeError) throw e;
        emitter.emit('error', new AudioDeviceError('stream_error', `speaker failed: ${(e as Error).message}`));
      }
    } else if (kind === 'error') {
      emitter.emit('error', new AudioDeviceError('stream_error', `speaker failed: ${payload as string}`));
    }
  });
  Object.assign(emitter, {
    frameMs,
    threadId: stream.threadId() || undefined,
    latencyMs: () => streamLatencyMs(stream),
    start: (p: () => Int16Array) => {
      pull = p;
      stream.start();
      // A stream the server stopped asking (wedged) would leave the call silent with no word of it.
      lastNeed = performance.now();
      let lastTick = lastNeed;
      watchdog = setInterval(() => {
        const now = performance.now();
        const late = now - lastTick > 2 * PLAYBACK_CHECK_MS;
        lastTick = now;
        if (late) lastNeed = now; // this thread was not running: the stream cannot be judged on that time
        else if (now - lastNeed > PLAYBACK_STALL_MS) {
          clearInterval(watchdog);
          emitter.emit('error', new AudioDeviceError('stream_error', `the speaker has asked for no audio for ${PLAYBACK_STALL_MS / 1000} s`));
        }
      }, PLAYBACK_CHECK_MS);
      watchdog.unref();
    },
    close: async () => {
      if (closed) return;
      closed = true;
      clearInterval(watchdog);
      stream.close();
    },
  });
  return emitter;
}

/** A sound being played by {@link playPcm}. */
export interface PlayingSound {
  /** Resolves when the sound has been played out (never, while `loop` is on, until `stop`). */
  readonly done: Promise<void>;
  /** Stops at once and releases the device. Never throws. */
  stop(): Promise<void>;
}

/**
 * Plays a sound on an output of its own, independently of any call (a
 * ringtone on the speakers while calls go to the headset).
 * @param samples 48 kHz mono signed 16-bit PCM.
 * @param options.device the output (see the module doc; a `pulse:<sink>` name picks a PulseAudio sink).
 * @param options.loop repeat until stopped, with `gapMs` of silence between repetitions (default 0).
 * @throws AudioDeviceError when the device cannot be found or opened.
 * @throws RangeError for an empty sound.
 */
export async function playPcm(
  samples: Int16Array,
  options: { device?: string; loop?: boolean; gapMs?: number } = {},
): Promise<PlayingSound> {
  if (samples.length === 0) throw new RangeError('playPcm: the sound is empty');
  await devicesSettled();
  const frame = frameSamples(10);
  const gap = Math.round(((options.gapMs ?? 0) * SAMPLE_RATE) / 1000);
  const stream = openPlayback({ device: options.device, frameMs: 10 });
  let position = 0;
  let finished: () => void = () => {};
  const done = new Promise<void>((resolve) => (finished = resolve));
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await stream.close();
    finished();
  };
  // After the last sample, a few frames of silence let the device play the queue out.
  let tail = 0;
  stream.on('error', () => void stop());
  stream.start(() => {
    const out = new Int16Array(frame);
    const cycle = samples.length + gap;
    for (let i = 0; i < frame; i++) {
      if (!options.loop && position >= samples.length) break;
      const at = position % cycle;
      out[i] = at < samples.length ? samples[at]! : 0;
      position++;
    }
    if (!options.loop && position >= samples.length && ++tail === 4) void stop();
    return out;
  });
  return { done, stop };
}

/**
 * Reads a WAV file in the pipeline's format: PCM (format 1, or
 * WAVE_FORMAT_EXTENSIBLE with PCM), 16-bit, mono, 48 kHz.
 * @returns its samples (48 kHz mono s16).
 * @throws Error when the file cannot be read; RangeError naming what is wrong
 *   with any other format (convert with e.g. `sox in.wav -r 48000 -c 1 -b 16 out.wav`).
 */
export async function readWavFile(path: string): Promise<Int16Array> {
  const buf = await readFile(path);
  const bad = (why: string) => new RangeError(`${path}: ${why}; Parley plays 48 kHz mono 16-bit PCM WAV (sox in.wav -r 48000 -c 1 -b 16 out.wav)`);
  if (buf.length < 12 || buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') throw bad('not a WAV file');
  let offset = 12;
  let format: { tag: number; channels: number; rate: number; bits: number } | undefined;
  while (offset + 8 <= buf.length) {
    const id = buf.toString('ascii', offset, offset + 4);
    const size = buf.readUInt32LE(offset + 4);
    const body = offset + 8;
    if (id === 'fmt ' && body + 16 <= buf.length) {
      let tag = buf.readUInt16LE(body);
      if (tag === 0xfffe && size >= 40 && body + 26 <= buf.length) tag = buf.readUInt16LE(body + 24);
      format = { tag, channels: buf.readUInt16LE(body + 2), rate: buf.readUInt32LE(body + 4), bits: buf.readUInt16LE(body + 14) };
    } else if (id === 'data') {
      if (!format) throw bad('no format chunk before the data');
      if (format.tag !== 1) throw bad(`compressed (format ${format.tag})`);
      if (format.bits !== 16 || format.channels !== 1 || format.rate !== SAMPLE_RATE) {
        throw bad(`${format.bits}-bit, ${format.channels} channel(s), ${format.rate} Hz`);
      }
      const end = Math.min(buf.length, body + size);
      const samples = new Int16Array(Math.floor((end - body) / 2));
      for (let i = 0; i < samples.length; i++) samples[i] = buf.readInt16LE(body + 2 * i);
      return samples;
    }
    offset = body + size + (size % 2);
  }
  throw bad('no data chunk');
}

/**
 * {@link playPcm} of a WAV file ({@link readWavFile}'s format), e.g. a ringtone.
 * @throws as readWavFile and playPcm.
 */
export async function playWavFile(
  path: string,
  options: { device?: string; loop?: boolean; gapMs?: number } = {},
): Promise<PlayingSound> {
  return playPcm(await readWavFile(path), options);
}
