/**
 * PulseAudio streams straight through libpulse (Parley's addon,
 * native/pulse/addon/pulse.c): one capture or playback stream of 48 kHz mono
 * s16le on its own libpulse mainloop thread. native/audio-device uses it for
 * every PulseAudio device (PipeWire's pulse server included) and keeps
 * PortAudio for the rest; docs/audio.md ("The device path") says why.
 */
import { loadOwnAddon, ownAddonPaths, type OwnAddonSpec } from '../load';

/** One open stream (corked until {@link PulseStream.start}). */
export interface PulseStream {
  /** Uncorks: capture starts delivering, playback asks for its first buffer. */
  start(): void;
  /**
   * Playback: bytes the server wants now beyond what the addon still holds
   * from earlier writes (which it hands over first); 0 when satisfied.
   */
  writable(): number;
  /**
   * Playback: queues s16le bytes (copied at once; the array may be reused).
   * What the server wants now goes to it at once; the rest stays in the addon
   * (at most 200 ms) and is handed to the server's next requests from the
   * stream's own thread, without a 'need' event.
   * @returns bytes the server still wants after this write (0 when satisfied: the next 'need' asks again).
   * @throws Error when the stream has failed or is closed, or more than 200 ms would wait.
   */
  write(bytes: Uint8Array): number;
  /**
   * Underruns (playback) and overruns (capture) so far, and the stream's
   * latency, µs (buffer + device). Playback also: `targetUs`, the buffer's
   * target length now (the `latencyBytes` asked for, raised by a 5 ms period
   * for each underflow that recurs within 5 s of the last, at most 10 ms
   * above it, lowered a period again after 30 s without a raise; underflows in
   * the stream's first second do not count), `grantedUs`, the stream queue's
   * part of it as the server granted it (PA_STREAM_ADJUST_LATENCY gives the
   * sink the rest), and `raises`, how many times it was raised (pulse.c,
   * PLAYBACK_*).
   */
  stats(): { underflows: number; overflows: number; latencyUs?: number; targetUs?: number; grantedUs?: number; raises?: number };
  /**
   * The kernel thread id (Linux) of the stream's own thread (`parley-pa-in` /
   * `parley-pa-out`), which moves its audio: to raise its priority like the
   * media thread's (main/media/priority.ts). 0 elsewhere.
   */
  threadId(): number;
  /** Disconnects and stops the stream's thread; idempotent, never throws. */
  close(): void;
}

/** What the addon reports: a whole capture frame, a playback request (the server wants more than the addon holds), or a failure (in words for the user). */
export type PulseStreamEvent = ((kind: 'frame', frame: ArrayBuffer) => void) &
  ((kind: 'need') => void) &
  ((kind: 'error', message: string) => void);

/** Options of {@link PulseAddon.open}; sizes in bytes of 48 kHz mono s16le (2 bytes per sample). */
export interface PulseStreamOptions {
  capture: boolean;
  /** PulseAudio source or sink name; undefined for the server's default (PULSE_SOURCE / PULSE_SINK apply). */
  device?: string;
  /** Stream name shown by the sound server (pavucontrol, pactl). */
  name: string;
  /** Capture: bytes per delivered frame (960 = 10 ms). */
  frameBytes: number;
  /** Playback: the buffer's target length (tlength); capture: the fragment size (fragsize). */
  latencyBytes: number;
  /** Playback: the smallest request (minreq). */
  periodBytes: number;
}

/** The addon's exports. */
export interface PulseAddon {
  /**
   * Connects to the sound server and opens a stream (corked).
   * @throws Error with `code` `ENOENT` when the named device does not exist,
   *   `EPULSE` for other refusals; a plain Error when no server answers (within 3 s).
   */
  open(options: PulseStreamOptions, onEvent: (kind: string, payload?: ArrayBuffer | string) => void): PulseStream;
  /** libpulse's version, e.g. "16.1.0". */
  libraryVersion: string;
  /**
   * Linux: sched_setscheduler(2) SCHED_RR | SCHED_RESET_ON_FORK, `priority`
   * 1–99, for kernel thread `tid` — in-process, where util-linux's `chrt`
   * would fork this whole process first (100–140 ms on the calling thread here).
   * @throws Error with `code` EPERM (not root, no CAP_SYS_NICE, RLIMIT_RTPRIO too low),
   *   ESRCH (no such thread), EINVAL (priority out of range), ENOSYS (not Linux); TypeError for bad arguments.
   */
  schedRoundRobin(tid: number, priority: number): void;
}

const ADDON: OwnAddonSpec = {
  packageName: 'parley_pulse (native/pulse/addon)',
  purpose: 'the microphone and speakers through PulseAudio',
  systemLibraries: { 'libpulse.so.0': 'libpulse0' },
  dir: 'pulse',
  target: 'parley_pulse',
  envVar: 'PARLEY_PULSE_ADDON',
  title: "Parley's PulseAudio addon",
  buildPackage: 'libpulse-dev',
};

/** Where the addon may be, most specific first (native/load.ts {@link ownAddonPaths}; `PARLEY_PULSE_ADDON` first). */
export function pulseAddonPaths(): string[] {
  return ownAddonPaths(ADDON, import.meta.url);
}

let loaded: PulseAddon | undefined;

/**
 * Loads the addon once per thread.
 * @throws NativeModuleLoadError when it is not built (run scripts/setup.sh) or libpulse is missing.
 */
export function loadPulseAddon(candidates: readonly string[] = pulseAddonPaths()): PulseAddon {
  loaded ??= loadOwnAddon<PulseAddon>(ADDON, candidates);
  return loaded;
}
