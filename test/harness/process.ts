/**
 * Child processes and temporary folders for the harness launchers.
 *
 * Every daemon a launcher starts is a direct child of the test process (never
 * a self-daemonising fork), so we always know its pid. Three layers of
 * cleanup: each launcher's `stop()` (called from `afterAll`, which vitest runs
 * even when tests fail); an `exit` hook that SIGKILLs children still running
 * and removes temporary folders; and, for a test process killed outright
 * (SIGKILL, SIGTERM without exit hooks), the kernel's parent-death signal:
 * daemons are started through `setpriv --pdeathsig KILL` (util-linux), so they
 * die with the process that started them.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SETPRIV = '/usr/bin/setpriv';
const liveChildren = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveChildren) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
  });
}

/**
 * A fresh temporary folder `/tmp/parley-<label>-XXXXXX`, removed by
 * {@link removeTempDir} or, at the latest, when the test process exits.
 */
export function makeTempDir(label: string): string {
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), `parley-${label}-`));
  liveDirs.add(dir);
  return dir;
}

/** Removes a folder made by {@link makeTempDir} (no error if already gone). */
export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
}

/** A child process started by {@link startChild}. */
export interface Child {
  readonly process: ChildProcess;
  readonly pid: number;
  /** Resolves with the exit code (or the signal name) once the child has exited. */
  readonly exited: Promise<number | string>;
  /** Whether the child has exited. */
  hasExited(): boolean;
  /**
   * Sends `signal` (default SIGTERM), waits up to `graceMs` (default 3000 ms)
   * and then SIGKILLs. Resolves once the child is gone; never rejects.
   */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

/**
 * Spawns `command` as a direct child (through `setpriv --pdeathsig KILL` when
 * available: same pid, killed by the kernel if this process dies), tracked for
 * cleanup at process exit.
 * `logFile` (optional) receives stdout and stderr unless `options.stdio` says otherwise.
 * @throws Error when the executable cannot be started (ENOENT etc.).
 */
export async function startChild(
  command: string,
  args: readonly string[],
  options: SpawnOptions & { logFile?: string } = {},
): Promise<Child> {
  installExitHook();
  const { logFile, ...spawnOptions } = options;
  let logFd: number | undefined;
  if (logFile && !spawnOptions.stdio) {
    logFd = openSync(logFile, 'a');
    spawnOptions.stdio = ['ignore', logFd, logFd];
  }
  const child = existsSync(SETPRIV)
    ? spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', command, ...args], spawnOptions)
    : spawn(command, args, spawnOptions);
  if (logFd !== undefined) closeSync(logFd);
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  liveChildren.add(child);
  let exitedFlag = false;
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      exitedFlag = true;
      liveChildren.delete(child);
      resolve(code ?? signal ?? 'unknown');
    });
  });
  return {
    process: child,
    pid: child.pid ?? -1,
    exited,
    hasExited: () => exitedFlag,
    async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000) {
      if (exitedFlag) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Runs `command` to completion and returns its stdout.
 * @throws Error with the exit code and stderr when it exits non-zero or takes
 *   longer than `timeoutMs` (default 15000 ms).
 */
export function run(
  command: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; cwd?: string } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 15_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else
        reject(
          new Error(
            `${command} ${args.join(' ')} exited with ${code ?? signal}: ${stderr.trim().slice(0, 2000)}`,
          ),
        );
    });
    if (child.stdin) {
      child.stdin.on('error', () => {
        // the child did not read all its input; its exit code tells the story
      });
      child.stdin.end(options.input);
    }
  });
}

/**
 * Polls `check` every `intervalMs` (default 50 ms) until it returns a truthy
 * value, which is returned.
 * @throws Error naming `what` after `timeoutMs`; includes the last error `check` threw.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs: number,
  intervalMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const detail = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
