/**
 * Starts the REAL Parley signaling server (`server/main.ts`) as a child
 * process on loopback, on a free port, with a temporary data folder, and
 * stops it afterwards. Its JSON log lines (stdout) are captured for assertions.
 * Its store is the SQLite file in that folder, or, with
 * `PARLEY_TEST_STORE=postgres`, a PostgreSQL database of that folder's own
 * (test/harness/store.ts), passed as PARLEY_STORE_URL.
 *
 * ```ts
 * const server = await startServer({ ringTimeoutSeconds: 1 });
 * // server.url = 'http://127.0.0.1:41234', server.wsUrl = 'ws://127.0.0.1:41234/v1/signal'
 * await server.stop();
 * ```
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ParleyError } from '../../common/errors';
import { connectAdmin, type AdminConnection } from '../../server/admin-client';
import { INTERCEPT_ENABLE_ENV, INTERCEPT_ENABLE_VALUE, INTERCEPT_ENV } from '../../server/intercept';
import { dropStoreFor, storeUrlFor } from './store';

/** The repository root (the server runs with this working directory). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface StartServerOptions {
  /** TURN settings passed as PARLEY_TURN_URLS / PARLEY_TURN_SECRET / PARLEY_TURN_TTL. */
  turn?: { urls: string[]; secret: string; ttlSeconds?: number };
  /** STUN URLs (PARLEY_STUN_URLS). */
  stunUrls?: string[];
  /** Ring timeout in seconds (PARLEY_RING_TIMEOUT); server default 45. */
  ringTimeoutSeconds?: number;
  /** Text of a TOML config file, written to the data folder and passed with `--config`. */
  configToml?: string;
  /**
   * TEST ONLY: a module whose `interceptor` rewrites what the server sends
   * (server/intercept.ts): sets PARLEY_TEST_INTERCEPT and its explicit enable
   * flag, PARLEY_TEST_INTERCEPT_ENABLE. Without this option neither is passed on.
   */
  intercept?: string;
  /**
   * Keep the server's login and registration limits (`[auth]`, from its defaults,
   * `configToml` or `env`). By default the harness turns the four limits off
   * (0) through the environment, because a test signs many accounts in from
   * 127.0.0.1 within one window; tests of the limits themselves set this.
   */
  authLimits?: boolean;
  /** Extra environment variables (win over the ones above). */
  env?: Record<string, string>;
  /** Use this data folder instead of a fresh temporary one (it is then not deleted by stop()). */
  dataDir?: string;
  /** How long to wait for the "listening" line, ms (default 20000). */
  startTimeoutMs?: number;
  /** Run the server inside this network namespace (`ip netns exec NAME`; root only). */
  netns?: string;
  /** Copy the server's stdout/stderr to this process's stderr (debugging). */
  echo?: boolean;
}

/** One log line of the server (pino JSON). */
export interface ServerLogLine {
  level: number;
  msg?: string;
  [key: string]: unknown;
}

export interface RunningServer {
  /** Base HTTP URL, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  /** Signaling WebSocket URL, e.g. `ws://127.0.0.1:41234/v1/signal`. */
  readonly wsUrl: string;
  /** The server's data folder (SQLite file inside; with PostgreSQL, the file naming its database). */
  readonly dataDir: string;
  /** The admin API's Unix socket (from the "listening" line). */
  readonly adminSocket: string;
  /** The TOML file passed with `--config` (when `configToml` was given; rewrite it before `config.reload`). */
  readonly configFile: string | undefined;
  /** The child's process id. */
  readonly pid: number;
  /** Everything the server wrote to stdout so far (raw text). */
  stdout(): string;
  /** Everything the server wrote to stderr so far. */
  stderr(): string;
  /** The stdout lines that parsed as JSON log lines. */
  logLines(): ServerLogLine[];
  /**
   * Resolves with the first log line (already written or future) matching `predicate`.
   * @throws Error after `timeoutMs` (default 5000).
   */
  waitForLog(
    predicate: (line: ServerLogLine) => boolean,
    timeoutMs?: number,
  ): Promise<ServerLogLine>;
  /**
   * Sends SIGTERM and waits for the exit (SIGKILL after `timeoutMs`, default 5000);
   * then deletes the temporary data folder. Safe to call twice.
   */
  stop(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Result of a server run that exited by itself (e.g. a config error). */
export interface ServerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Prepared {
  args: string[];
  env: NodeJS.ProcessEnv;
  dataDir: string;
  ownsDataDir: boolean;
  configFile: string | undefined;
  netns: string | undefined;
}

function prepare(options: StartServerOptions): Prepared {
  const ownsDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'parley-server-'));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PARLEY_SERVER_LISTEN: '127.0.0.1:0',
    PARLEY_DATA_DIR: dataDir,
  };
  // Never inherit server settings from the developer's shell.
  for (const key of Object.keys(env)) {
    if (key.startsWith('PARLEY_') && !['PARLEY_SERVER_LISTEN', 'PARLEY_DATA_DIR'].includes(key))
      delete env[key];
  }
  if (options.turn) {
    env.PARLEY_TURN_URLS = options.turn.urls.join(',');
    env.PARLEY_TURN_SECRET = options.turn.secret;
    if (options.turn.ttlSeconds !== undefined)
      env.PARLEY_TURN_TTL = String(options.turn.ttlSeconds);
  }
  if (options.stunUrls) env.PARLEY_STUN_URLS = options.stunUrls.join(',');
  if (options.ringTimeoutSeconds !== undefined)
    env.PARLEY_RING_TIMEOUT = String(options.ringTimeoutSeconds);
  if (!options.authLimits) {
    env.PARLEY_LOGIN_FAILURES_PER_USERNAME = '0';
    env.PARLEY_LOGIN_ATTEMPTS_PER_IP = '0';
    env.PARLEY_REGISTRATIONS_PER_IP = '0';
    env.PARLEY_REGISTRATION_ATTEMPTS_PER_USERNAME = '0';
  }
  if (options.intercept !== undefined) {
    env[INTERCEPT_ENV] = options.intercept;
    env[INTERCEPT_ENABLE_ENV] = INTERCEPT_ENABLE_VALUE;
  }
  Object.assign(env, options.env ?? {});
  const args = ['--import', 'tsx', join(REPO_ROOT, 'server/main.ts')];
  let configFile: string | undefined;
  if (options.configToml !== undefined) {
    configFile = join(dataDir, 'parley-server.toml');
    writeFileSync(configFile, options.configToml);
    args.push('--config', configFile);
  }
  return { args, env, dataDir, ownsDataDir, configFile, netns: options.netns };
}

/**
 * Points the server at the test run's store for its data folder (PostgreSQL
 * only; a test's own PARLEY_STORE_URL wins).
 */
async function prepareStore(p: Prepared, options: StartServerOptions): Promise<void> {
  if (options.env?.PARLEY_STORE_URL !== undefined) return;
  const url = await storeUrlFor(p.dataDir);
  if (url !== undefined) p.env.PARLEY_STORE_URL = url;
}

/** Removes what the harness made for a server: its store (PostgreSQL) and its data folder. */
async function removeOwned(p: Prepared): Promise<void> {
  if (!p.ownsDataDir) return;
  await dropStoreFor(p.dataDir).catch(() => {});
  rmSync(p.dataDir, { recursive: true, force: true });
}

function spawnServer(p: Prepared): ChildProcess {
  // process.execPath: the same Node 22 that runs the tests; tsx's loader runs the TypeScript directly.
  const [command, args] = p.netns ? ['ip', ['netns', 'exec', p.netns, process.execPath, ...p.args]] : [process.execPath, p.args];
  return spawn(command, args, {
    cwd: REPO_ROOT,
    env: p.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * Starts the server and waits until it logs `"msg":"listening"` with its URL.
 * @throws Error (with the server's stderr) when it exits or does not listen within `startTimeoutMs`.
 */
export async function startServer(options: StartServerOptions = {}): Promise<RunningServer> {
  const prepared = prepare(options);
  await prepareStore(prepared, options);
  const child = spawnServer(prepared);
  let out = '';
  let err = '';
  let partial = '';
  const lines: ServerLogLine[] = [];
  const waiters = new Set<{
    predicate: (l: ServerLogLine) => boolean;
    resolve: (l: ServerLogLine) => void;
  }>();

  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    if (options.echo) process.stderr.write(chunk);
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const text of parts) {
      let line: ServerLogLine;
      try {
        line = JSON.parse(text) as ServerLogLine;
      } catch {
        continue;
      }
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.predicate(line)) {
          waiters.delete(w);
          w.resolve(line);
        }
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
    if (options.echo) process.stderr.write(chunk);
  });
  // Never leave a server behind when the test process ends without stop().
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.once('exit', (code, signal) => {
      process.off('exit', killOnExit);
      res({ code, signal });
    }),
  );

  const waitForLog = (
    predicate: (l: ServerLogLine) => boolean,
    timeoutMs = 5000,
  ): Promise<ServerLogLine> => {
    const found = lines.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolvePromise, reject) => {
      const w = {
        predicate,
        resolve: (l: ServerLogLine) => {
          clearTimeout(timer);
          resolvePromise(l);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`no matching server log line within ${timeoutMs} ms`));
      }, timeoutMs);
      waiters.add(w);
    });
  };

  const cleanup = () => removeOwned(prepared);

  const listeningLine = waitForLog(
    (l) => l.msg === 'listening' && typeof l.url === 'string',
    options.startTimeoutMs ?? 20_000,
  ).then(
    (line) => ({ line }),
    (e: Error) => ({ error: `${e.message} (waiting for "listening")` }),
  );
  const early = exited.then(({ code, signal }) => ({
    error: `server exited before listening (code ${code}, signal ${signal})`,
  }));
  const first = await Promise.race([listeningLine, early]);
  if (!('line' in first)) {
    child.kill('SIGKILL');
    await exited;
    await cleanup();
    throw new Error(`${first.error}; stderr:\n${err}\nstdout:\n${out}`);
  }
  const listening = first.line;

  const url = listening.url as string;
  let stopping: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  return {
    url,
    wsUrl: `${url.replace(/^http/, 'ws')}/v1/signal`,
    dataDir: prepared.dataDir,
    adminSocket: String(listening.adminSocket ?? join(prepared.dataDir, 'admin.sock')),
    configFile: prepared.configFile,
    pid: child.pid!,
    stdout: () => out,
    stderr: () => err,
    logLines: () => [...lines],
    waitForLog,
    stop(timeoutMs = 5000) {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        const result = await exited;
        clearTimeout(timer);
        await cleanup();
        return result;
      })();
      return stopping;
    },
  };
}

/**
 * Runs the server expecting it to exit by itself (a configuration error, for
 * example) and returns its exit status and output.
 * @throws Error when it is still running after `timeoutMs` (default 20000); it is killed then.
 */
export async function runServerUntilExit(
  options: StartServerOptions = {},
  timeoutMs = 20_000,
): Promise<ServerExit> {
  const prepared = prepare(options);
  await prepareStore(prepared, options);
  const child = spawnServer(prepared);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  try {
    return await new Promise<ServerExit>((res, rej) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        rej(new Error(`server still running after ${timeoutMs} ms; stdout:\n${stdout}`));
      }, timeoutMs);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        res({ code, signal, stdout, stderr });
      });
    });
  } finally {
    await removeOwned(prepared);
  }
}

/**
 * Calls one method of the server's admin API (JSON-RPC 2.0, one message per
 * line, over the Unix socket `socketPath`) on a fresh connection.
 * @throws ParleyError with the server's error, or `unavailable` when nobody
 *   listens there or no answer comes within `timeoutMs` (default 5000).
 */
export async function adminRequest<T = unknown>(
  socketPath: string,
  method: string,
  params: object = {},
  timeoutMs = 5000,
): Promise<T> {
  let admin: AdminConnection;
  try {
    admin = await connectAdmin(socketPath, timeoutMs);
  } catch (e) {
    throw new ParleyError('unavailable', `admin socket ${socketPath}: ${(e as Error).message}`);
  }
  try {
    return await admin.request<T>(method, params);
  } finally {
    admin.close();
  }
}
