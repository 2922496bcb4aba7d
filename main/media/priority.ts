import dbus from '@particle/dbus-next';
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { setPriority } from 'node:os';
import { loadPulseAddon, type PulseAddon } from '../../native/pulse';

/**
 * The nice level asked for the thread that carries the media path: −11, the
 * level PulseAudio asks for its own threads (`nice-level = -11` in
 * daemon.conf) and within RTKit's default `MinNiceLevel` (−15).
 */
export const MEDIA_NICE = -11;

/** What the media thread got. */
export type PriorityResult =
  | { method: 'setpriority' | 'rtkit'; nice: number }
  | { method: 'none'; reason: string };

export interface PriorityDeps {
  /** setpriority(2) for thread `tid` (Linux: PRIO_PROCESS takes a thread id). @throws on EACCES/EPERM. */
  setThreadNice(tid: number, nice: number): void;
  /**
   * Asks RTKit (org.freedesktop.RealtimeKit1 on the system bus) to give thread
   * `tid` the nice level. @throws when there is no system bus, no RTKit, or it refuses.
   */
  rtkitHighPriority(tid: number, nice: number): Promise<void>;
  /**
   * The kernel thread ids to raise, the main thread's (= the process id) first:
   * on Linux every thread of the process now, so the libuv pool threads that
   * run PortAudio's blocking reads and writes are raised too (threads made
   * later inherit the nice level of the thread that makes them).
   */
  threads(): number[];
  platform: NodeJS.Platform;
}

const defaultDeps: PriorityDeps = {
  setThreadNice: (tid, nice) => setPriority(tid, nice),
  rtkitHighPriority,
  threads: () => {
    try {
      const all = readdirSync('/proc/self/task').map(Number).filter((t) => Number.isInteger(t) && t !== process.pid);
      return [process.pid, ...all];
    } catch {
      return [process.pid];
    }
  },
  platform: process.platform,
};

/**
 * Raises the priority of the thread that runs the media path (the media
 * worker's thread, main/media/worker/media-worker.ts, which passes its own
 * kernel thread id first; with the media in the main thread, the JavaScript
 * main thread: capture, voice processing, Opus, SRTP and playout), so that a busy machine — a compile, a
 * browser, a CPU hog at normal priority — delays it less. Linux, as audio
 * clients do it:
 *
 * 1. `setpriority(PRIO_PROCESS, tid, −11)` for each thread of the process
 *    (Linux gives each thread its own nice level); allowed with CAP_SYS_NICE
 *    or an RLIMIT_NICE that permits it (root, or limits.conf);
 * 2. otherwise RTKit over D-Bus (`MakeThreadHighPriority(tid, −11)` per
 *    thread), the way PulseAudio and PipeWire clients get it as normal users;
 * 3. otherwise nothing, and the reason is returned (the call runs at normal
 *    priority; nothing else changes).
 *
 * Other platforms: `none` (not done yet; docs/audio.md). Never throws.
 */
export async function raiseMediaPriority(deps: PriorityDeps = defaultDeps): Promise<PriorityResult> {
  if (deps.platform !== 'linux') return { method: 'none', reason: `not done on ${deps.platform} yet` };
  const [main, ...others] = deps.threads();
  let direct: string;
  try {
    deps.setThreadNice(main!, MEDIA_NICE);
    for (const tid of others) {
      try {
        deps.setThreadNice(tid, MEDIA_NICE);
      } catch {
        // a thread that ended meanwhile
      }
    }
    return { method: 'setpriority', nice: MEDIA_NICE };
  } catch (e) {
    direct = e instanceof Error ? e.message : String(e);
  }
  try {
    await deps.rtkitHighPriority(main!, MEDIA_NICE);
    for (const tid of others) await deps.rtkitHighPriority(tid, MEDIA_NICE).catch(() => {});
    return { method: 'rtkit', nice: MEDIA_NICE };
  } catch (e) {
    return { method: 'none', reason: `setpriority: ${direct}; RTKit: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/** RTKit's D-Bus call (rtkit's org.freedesktop.RealtimeKit1 interface), with a 2 s limit. */
export async function rtkitHighPriority(tid: number, nice: number): Promise<void> {
  await rtkitCall((rtkit) => rtkit.MakeThreadHighPriority(BigInt(tid), nice));
}

interface RtkitInterface {
  MakeThreadHighPriority(thread: bigint, priority: number): Promise<void>;
  MakeThreadRealtime(thread: bigint, priority: number): Promise<void>;
}

async function rtkitCall(f: (rtkit: RtkitInterface) => Promise<void>): Promise<void> {
  const bus = dbus.systemBus();
  try {
    const call = (async () => {
      const obj = await bus.getProxyObject('org.freedesktop.RealtimeKit1', '/org/freedesktop/RealtimeKit1');
      await f(obj.getInterface('org.freedesktop.RealtimeKit1') as unknown as RtkitInterface);
    })();
    await Promise.race([
      call,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer from RTKit within 2 s')), 2000).unref()),
    ]);
  } finally {
    bus.disconnect();
  }
}

/**
 * The real-time priority asked for the media thread: SCHED_RR 5, PulseAudio's
 * own `realtime-priority` (daemon.conf), so a sound server's real-time
 * threads (PipeWire's data loop asks for more) still come first.
 */
export const MEDIA_RT_PRIORITY = 5;

/** What the media thread got beyond its nice level. */
export type RealtimeResult = { method: 'sched_rr' | 'rtkit'; priority: number } | { method: 'none'; reason: string };

export interface RealtimeDeps {
  /**
   * sched_setscheduler(2) SCHED_RR with SCHED_RESET_ON_FORK (processes and
   * threads it starts, such as `pactl`, run at normal priority) for thread
   * `tid`: allowed as root, with CAP_SYS_NICE or an RLIMIT_RTPRIO that permits it.
   * @throws when refused.
   */
  schedRoundRobin(tid: number, priority: number): Promise<void>;
  /**
   * RTKit's MakeThreadRealtime for `tid`, after limiting this process's
   * RLIMIT_RTTIME (RTKit refuses a process without one; a real-time thread
   * that runs 200 ms without sleeping then gets SIGXCPU instead of taking the machine).
   * @throws when there is no system bus, no RTKit, or it refuses.
   */
  rtkitRealtime(tid: number, priority: number): Promise<void>;
  platform: NodeJS.Platform;
}

/** Runs a command, rejecting with its stderr (or the spawn error) in words, with a 2 s limit. */
function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: 2000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(String(stderr).trim() || error.message));
      else resolve();
    });
  });
}

/** RLIMIT_RTTIME asked before RTKit (its own default ceiling, RTTimeUSecMax), µs. */
const RTTIME_LIMIT_US = 200_000;

let rttimeLimited: Promise<void> | undefined;

const defaultRealtimeDeps: RealtimeDeps = {
  // Node has no sched_setscheduler binding: the libpulse addon carries one. util-linux's chrt only where
  // the addon is not built: starting a process forks this one first, 100–140 ms on the media thread here
  // (a stall at every call's start when the device streams' threads were raised this way).
  schedRoundRobin: async (tid, priority) => {
    let addon: PulseAddon;
    try {
      addon = loadPulseAddon();
    } catch {
      return run('chrt', ['--rr', '--reset-on-fork', '--pid', String(priority), String(tid)]);
    }
    addon.schedRoundRobin(tid, priority);
  },
  rtkitRealtime: async (tid, priority) => {
    // RLIMIT_RTTIME is the process's: set once (at the media thread's start), not again for each device stream's thread.
    rttimeLimited ??= run('prlimit', ['--pid', String(process.pid), `--rttime=${RTTIME_LIMIT_US}:${RTTIME_LIMIT_US}`]).catch((e: unknown) => {
      rttimeLimited = undefined;
      throw e;
    });
    await rttimeLimited;
    await rtkitCall((rtkit) => rtkit.MakeThreadRealtime(BigInt(tid), priority));
  },
  platform: process.platform,
};

/**
 * Asks real-time scheduling (SCHED_RR {@link MEDIA_RT_PRIORITY}) for the
 * media worker's thread `tid` — a thread that only carries audio and sleeps
 * between frames, as Chromium's and PulseAudio's audio threads do (never for
 * the main thread, which runs everything else). Linux:
 *
 * 1. sched_setscheduler(2) directly (root, CAP_SYS_NICE, RLIMIT_RTPRIO);
 * 2. otherwise RTKit's `MakeThreadRealtime` over D-Bus, the way PulseAudio
 *    and PipeWire clients get it as normal users;
 * 3. otherwise none, with both reasons: the thread keeps the nice level
 *    {@link raiseMediaPriority} gave it.
 *
 * Other platforms: `none` (docs/audio.md). Never throws.
 */
export async function raiseToRealtime(tid: number, deps: RealtimeDeps = defaultRealtimeDeps): Promise<RealtimeResult> {
  if (deps.platform !== 'linux') return { method: 'none', reason: `not done on ${deps.platform} yet` };
  let direct: string;
  try {
    await deps.schedRoundRobin(tid, MEDIA_RT_PRIORITY);
    return { method: 'sched_rr', priority: MEDIA_RT_PRIORITY };
  } catch (e) {
    direct = e instanceof Error ? e.message : String(e);
  }
  try {
    await deps.rtkitRealtime(tid, MEDIA_RT_PRIORITY);
    return { method: 'rtkit', priority: MEDIA_RT_PRIORITY };
  } catch (e) {
    return { method: 'none', reason: `sched_setscheduler: ${direct}; RTKit: ${e instanceof Error ? e.message : String(e)}` };
  }
}
