/**
 * The PulseAudio (or PipeWire-Pulse) device directory, asked directly with
 * `pactl` (Debian: pulseaudio-utils).
 *
 * Why not PortAudio: PortAudio scans devices once, at Pa_Initialize, and
 * rescanning means Pa_Terminate, which kills every open stream — a call would
 * drop. A short-lived child process running PortAudio could list devices
 * without touching ours, but it would show ALSA PCM names, which say nothing
 * stable about the device behind them. PulseAudio's own sink and source
 * *names* are stable identities (the same headset has the same name when it
 * returns), it knows the OS default, and `pactl subscribe` reports every
 * change as it happens. Streams are then opened through PortAudio on ALSA's
 * pulse plugin with `PULSE_SINK` / `PULSE_SOURCE` naming the device (see
 * index.ts), so the directory and the streams agree on names.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { AudioDeviceError } from './index';

/** One PulseAudio sink (output) or source (input). */
export interface PulseDevice {
  /** PulseAudio's name: the stable identity a choice is remembered by (e.g. `alsa_output.usb-Jabra…analog-stereo`). */
  name: string;
  /** What the user reads (`device.description`). */
  description: string;
  /** True for the sink's or source's current OS default. */
  isDefault: boolean;
}

/** Everything PulseAudio offers, in its own order. Monitor sources are left out of `inputs`. */
export interface PulseDevices {
  inputs: PulseDevice[];
  outputs: PulseDevice[];
  /** Names of the OS defaults (`pactl get-default-source/-sink`). */
  defaultInput: string | undefined;
  defaultOutput: string | undefined;
}

/** After `pactl subscribe` exits, it is started again this much later, ms. */
const RESUBSCRIBE_MS = 2000;

/** Longest wait for one pactl command, ms. */
const PACTL_TIMEOUT_MS = 3000;

function pactl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn('pactl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      reject(pactlError(e as Error));
      return;
    }
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), PACTL_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(pactlError(e));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new AudioDeviceError('unavailable', `PulseAudio did not answer (pactl ${args[0]}): ${err.trim() || `exit ${code}`}`));
    });
  });
}

function pactlError(e: Error): AudioDeviceError {
  if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
    return new AudioDeviceError('unavailable', 'pactl not found: install pulseaudio-utils (needed to list audio devices and follow changes)');
  }
  return new AudioDeviceError('unavailable', `pactl failed: ${e.message}`);
}

interface PactlDevice {
  name: string;
  description?: string;
  properties?: Record<string, string>;
  monitor_of_sink?: string | null;
  monitor_of_sink_name?: string | null;
  driver?: string;
}

/**
 * Lists PulseAudio's inputs and outputs and the current defaults.
 * @throws AudioDeviceError('unavailable') when pactl is missing or PulseAudio does not answer.
 */
export async function listPulseDevices(): Promise<PulseDevices> {
  const [info, sinks, sources] = await Promise.all([
    pactl(['-f', 'json', 'info']),
    pactl(['-f', 'json', 'list', 'sinks']),
    pactl(['-f', 'json', 'list', 'sources']),
  ]);
  const i = JSON.parse(info) as { default_sink_name?: string; default_source_name?: string };
  const toDevice = (d: PactlDevice, def: string | undefined): PulseDevice => ({
    name: d.name,
    description: d.description ?? d.properties?.['device.description'] ?? d.name,
    isDefault: d.name === def,
  });
  const isMonitor = (d: PactlDevice) =>
    !!d.monitor_of_sink_name || (d.monitor_of_sink !== undefined && d.monitor_of_sink !== null && d.monitor_of_sink !== 'n/a') || d.properties?.['device.class'] === 'monitor';
  return {
    outputs: (JSON.parse(sinks) as PactlDevice[]).map((d) => toDevice(d, i.default_sink_name)),
    inputs: (JSON.parse(sources) as PactlDevice[]).filter((d) => !isMonitor(d)).map((d) => toDevice(d, i.default_source_name)),
    defaultInput: i.default_source_name,
    defaultOutput: i.default_sink_name,
  };
}

/** What `pactl subscribe` reported: a sink, source or server (default) change. */
export type PulseChange = 'sink' | 'source' | 'server';

/**
 * Watches PulseAudio for device changes with one long-running `pactl subscribe`.
 * Emits `change` (coalesced: at most one per `settleMs`, default 50) with the
 * kinds seen, and `error` (AudioDeviceError) when pactl cannot run or exits
 * unexpectedly; call `close()` to stop.
 */
export class PulseWatcher extends EventEmitter<{ change: [Set<PulseChange>]; error: [AudioDeviceError] }> {
  private child: ChildProcess | undefined;
  private pending = new Set<PulseChange>();
  private timer: NodeJS.Timeout | undefined;
  private restart: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly settleMs = 50) {
    super();
  }

  start(): void {
    if (this.child || this.closed) return;
    const child = spawn('pactl', ['subscribe'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.child = child;
    let buffered = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buffered += d;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        this.onLine(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
      }
    });
    child.on('error', (e) => {
      if (!this.closed) this.emit('error', pactlError(e));
    });
    child.on('exit', (code) => {
      this.child = undefined;
      if (this.closed) return;
      // The sound server restarted or went away: say so, and try again (a restarted server is followed again).
      this.emit('error', new AudioDeviceError('unavailable', `lost contact with PulseAudio (pactl subscribe exited ${code}); retrying`));
      this.restart = setTimeout(() => {
        this.start();
        this.pending.add('server');
        this.flush();
      }, RESUBSCRIBE_MS);
      this.restart.unref();
    });
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.restart);
    this.child?.kill('SIGTERM');
    this.child = undefined;
  }

  private onLine(line: string): void {
    // "Event 'new' on sink #3", "Event 'remove' on source #5", "Event 'change' on server #-1"
    const m = /^Event '(new|remove|change)' on (sink|source|server) /.exec(line);
    if (!m) return;
    const [, what, kind] = m;
    // A sink's or source's own 'change' is volume and state noise; new/remove matter, and any server change (defaults).
    if (kind !== 'server' && what === 'change') return;
    this.pending.add(kind as PulseChange);
    this.flush();
  }

  private flush(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const kinds = this.pending;
      this.pending = new Set();
      this.emit('change', kinds);
    }, this.settleMs);
  }
}

/**
 * The measured latency of this process's own PulseAudio streams, µs summed
 * over the stream buffer and the device: `{ output, input }` for the newest
 * playback stream (sink input) and capture stream (source output) whose
 * `application.process.id` is this process. Missing when not found.
 * @throws AudioDeviceError('unavailable') when pactl fails.
 */
export async function ownStreamLatencyMs(): Promise<{ outputMs?: number; inputMs?: number }> {
  const [inputs, outputs] = await Promise.all([
    pactl(['-f', 'json', 'list', 'sink-inputs']),
    pactl(['-f', 'json', 'list', 'source-outputs']),
  ]);
  type Stream = { properties?: Record<string, string>; buffer_latency_usec?: number; sink_latency_usec?: number; source_latency_usec?: number };
  const mine = (list: Stream[]) => list.filter((s) => s.properties?.['application.process.id'] === String(process.pid)).at(-1);
  const out = mine(JSON.parse(inputs) as Stream[]);
  const cap = mine(JSON.parse(outputs) as Stream[]);
  return {
    ...(out ? { outputMs: ((out.buffer_latency_usec ?? 0) + (out.sink_latency_usec ?? 0)) / 1000 } : {}),
    ...(cap ? { inputMs: ((cap.buffer_latency_usec ?? 0) + (cap.source_latency_usec ?? 0)) / 1000 } : {}),
  };
}
