/**
 * Real headless Parley clients for tests, the demo and the benchmark: each is
 * the `parley` CLI in its own process (its own audio devices through the
 * PulseAudio harness, its own data folder, the shared test keychain), driven
 * over its JSON-RPC control socket exactly as automation would drive it.
 *
 * ```ts
 * const alice = await startClient({ name: 'alice', server, env: { ...pulse.clientEnv('a'), ...keyring.env },
 *                                   input: 'a_mic', output: 'a_spk' });
 * const { callId } = await alice.request('create_call', { to: 'bob' });
 * await alice.waitForCall(callId, (s) => s.state === 'active');
 * ```
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { CallStatsNotification, CallStatus } from '../../common/protocol/control';
import { ControlClient } from '../../main/cli/control-server';
import { makeTempDir, removeTempDir, startChild, waitFor, type Child } from './process';
import { ensureCliBuilt } from '../../scripts/build-cli';
import { REPO_ROOT } from './server';
import { DEFAULT_PASSWORD } from './signal-client';

export interface StartClientOptions {
  /** Account name; registered on the server unless `register` is false. */
  name: string;
  /** The running server (test/harness/server.ts). */
  server: { url: string };
  /** Environment for the client process: Pulse client env and keyring env merged. */
  env: Record<string, string>;
  /** Device names for `--input` / `--output` (e.g. `a_mic`, `a_spk`). */
  input?: string;
  output?: string;
  frameMs?: 10 | 20;
  jitterMs?: number;
  relay?: boolean;
  autoAnswer?: boolean;
  /** Seconds without RTP before a connected call fails (daemon default 30). */
  mediaTimeoutS?: number;
  /** Register the account first (default true). */
  register?: boolean;
  /**
   * A running client of the same account that holds the account key: the new
   * device is linked through it (`start_device_link` there, `link_device`
   * here), as a user would with "parley devices link" and "parley link CODE".
   * Without it a second device of an account stays unlinked (contacts do not ring it).
   */
  linkFrom?: RunningClient;
  /** Run the daemon (and its register and login) inside this network namespace (`ip netns exec NAME`; root only). */
  netns?: string;
  /** Gather 127.0.0.1 only (`--loopback`, default true); false gathers every interface's address. */
  loopback?: boolean;
  /** More `parley login` flags, e.g. `['--link', CODE]`. */
  loginArgs?: string[];
  /** More daemon flags, e.g. `['--no-noise-suppression']`. */
  extraArgs?: string[];
  password?: string;
}

export interface RunningClient {
  readonly name: string;
  /** Process id of the daemon (for CPU measurement). */
  readonly pid: number;
  /** The client's data folder (profile, control socket). */
  readonly dataDir: string;
  readonly socket: string;
  /** Every `call.state` notification received, in order. */
  readonly events: CallStatus[];
  /** Every `call.stats` notification (one a second per connected call), in order. */
  readonly stats: CallStatsNotification[];
  /** Every other notification (`audio.levels`, `audio.warning`, `devices.changed`, `devices.switched`, …), in order. */
  readonly notifications: Array<{ method: string; params: unknown }>;
  /**
   * Resolves with the params of the first notification (past or future) named
   * `method` that matches `pred`. @throws Error after `timeoutMs` (default 10 000).
   */
  waitForNotification<T>(method: string, pred?: (params: T) => boolean, timeoutMs?: number): Promise<T>;
  /** Sends a control request. @throws ParleyError from the daemon. */
  request<T = unknown>(method: string, params?: object): Promise<T>;
  /** Resolves with the first call status (past or future) of `callId` (or of any call) matching `pred`. */
  waitForCall(callId: string | undefined, pred: (s: CallStatus) => boolean, timeoutMs?: number): Promise<CallStatus>;
  /**
   * Stops the daemon and starts it again on the same data folder and keychain
   * (the same account and device), as a user quitting and reopening Parley;
   * resolves when it is online again. The recorded events and notifications go on.
   */
  restart(): Promise<void>;
  /** Sends a signal to the daemon (e.g. SIGSTOP to freeze it as a hung peer would be). */
  kill(signal: NodeJS.Signals): void;
  /** The daemon's stdout and stderr so far. */
  log(): string;
  /** Stops the daemon (SIGTERM, then SIGKILL) and removes the data folder. */
  stop(): Promise<void>;
}

/**
 * The client runs as users run it: the built JavaScript (`out/cli/parley.mjs`,
 * scripts/build-cli.ts, rebuilt here when a source is newer), not through a
 * TypeScript loader.
 */
const cli = (): Promise<string> => ensureCliBuilt();

/** Runs one `parley` command to completion. @throws Error with its output when it fails. */
export async function runParley(
  args: string[],
  env: Record<string, string>,
  stdin?: string,
  timeoutMs = 30_000,
  netns?: string,
): Promise<string> {
  const CLI = await cli();
  return new Promise((resolve, reject) => {
    const node = [process.execPath, CLI, ...args];
    const [command, ...rest] = netns ? ['ip', 'netns', 'exec', netns, ...node] : node;
    const child = spawn(command!, rest, {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`parley ${args[0]} exited ${code}: ${out.trim()}`));
    });
    child.stdin.end(stdin ?? '');
  });
}

/**
 * Registers (optionally), signs in and starts a client daemon; resolves when
 * its control socket answers and it is online.
 * @throws Error when any step fails (with the client's output).
 */
export async function startClient(o: StartClientOptions): Promise<RunningClient> {
  const dataDir = makeTempDir(`client-${o.name}`);
  const socket = join(dataDir, 'control.sock');
  const env = { ...o.env, PARLEY_DATA_DIR: dataDir, PARLEY_SOCKET: socket };
  const password = o.password ?? DEFAULT_PASSWORD;
  if (o.register !== false) {
    await runParley(['register', '--server', o.server.url, '--username', o.name, '--password-stdin'], env, password, undefined, o.netns);
  }
  await runParley(['login', '--server', o.server.url, '--username', o.name, '--password-stdin', ...(o.loginArgs ?? [])], env, password, undefined, o.netns);

  const args = [await cli(), 'daemon', ...(o.loopback === false ? [] : ['--loopback'])];
  if (o.input) args.push('--input', o.input);
  if (o.output) args.push('--output', o.output);
  if (o.frameMs) args.push('--frame-ms', String(o.frameMs));
  if (o.jitterMs) args.push('--jitter-ms', String(o.jitterMs));
  if (o.relay) args.push('--relay');
  if (o.autoAnswer) args.push('--auto-answer');
  if (o.mediaTimeoutS) args.push('--media-timeout', String(o.mediaTimeoutS));
  if (o.extraArgs) args.push(...o.extraArgs);
  const logFile = join(dataDir, 'daemon.log');
  const launch = () =>
    startChild(o.netns ? 'ip' : process.execPath, o.netns ? ['netns', 'exec', o.netns, process.execPath, ...args] : args, {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      logFile,
    });
  let child: Child = await launch();
  const readLog = async () => {
    const { readFile } = await import('node:fs/promises');
    return readFile(logFile, 'utf8').catch(() => '');
  };
  let logText = '';
  const events: CallStatus[] = [];
  const stats: CallStatsNotification[] = [];
  const notifications: Array<{ method: string; params: unknown }> = [];
  const waiters = new Set<() => void>();
  let control!: ControlClient;
  const boot = async () => {
    control = await waitFor(
      `${o.name}'s control socket`,
      async () => {
        if (child.hasExited()) throw new Error(`parley daemon exited: ${await readLog()}`);
        return ControlClient.connect(socket, (method, p) => {
          if (method === 'call.stats') stats.push(p as CallStatsNotification);
          else if (method !== 'call.state') notifications.push({ method, params: p });
          if (method !== 'call.state') {
            for (const w of [...waiters]) w();
            return;
          }
          events.push(p as CallStatus);
          for (const w of [...waiters]) w();
        }).catch(() => undefined);
      },
      20_000,
    );
    await waitFor(
      `${o.name} online`,
      async () => {
        const s = await control.request<{ signaling: string }>('get_status');
        return s.signaling === 'online' ? true : undefined;
      },
      15_000,
    );
  };
  try {
    await boot();
    if (o.linkFrom) {
      const { code } = await o.linkFrom.request<{ code: string }>('start_device_link');
      await control.request('link_device', { code });
    }
  } catch (e) {
    await child.stop('SIGKILL');
    logText = await readLog();
    removeTempDir(dataDir);
    throw new Error(`${(e as Error).message}\n${logText}`, { cause: e });
  }

  return {
    name: o.name,
    get pid() {
      return child.pid;
    },
    dataDir,
    socket,
    events,
    stats,
    notifications,
    waitForNotification<T>(method: string, pred: (params: T) => boolean = () => true, timeoutMs = 10_000) {
      const match = () => notifications.find((n) => n.method === method && pred(n.params as T));
      const found = match();
      if (found) return Promise.resolve(found.params as T);
      return new Promise<T>((resolve, reject) => {
        const check = () => {
          const m = match();
          if (!m) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(m.params as T);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${o.name}: no matching ${method} notification in ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(check);
      });
    },
    request: (method, params = {}) => control.request(method, params),
    waitForCall(callId, pred, timeoutMs = 20_000) {
      const match = () => events.find((s) => (!callId || s.callId === callId) && pred(s));
      const found = match();
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = match();
          if (m) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(m);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          const last = events.filter((s) => !callId || s.callId === callId).at(-1);
          reject(new Error(`${o.name}: call did not reach the expected state in ${timeoutMs} ms (last: ${JSON.stringify(last)})`));
        }, timeoutMs);
        waiters.add(check);
      });
    },
    kill: (signal) => void child.process.kill(signal),
    async restart() {
      control.close();
      await child.stop('SIGTERM', 5000);
      child = await launch();
      await boot();
    },
    log: () => logText,
    async stop() {
      control.close();
      await child.stop('SIGTERM', 5000);
      logText = await readLog();
      removeTempDir(dataDir);
    },
  };
}

/**
 * Makes two client daemons contacts over their control sockets (a asks, b
 * accepts), as every call between two fresh accounts needs: "only contacts
 * may call me" is on by default on the server.
 * @throws ParleyError from either daemon.
 */
export async function makeClientContacts(a: RunningClient, b: RunningClient): Promise<void> {
  const r = await a.request<{ status: string }>('request_contact', { username: b.name });
  if (r.status === 'requested') await b.request('accept_contact', { username: a.name });
}

/**
 * `caller` calls `callee`, which answers; resolves with the call id once both
 * sides are active and have played the other's first audio.
 * @throws Error when a step does not happen within the clients' wait time.
 */
export async function placeAnsweredCall(caller: RunningClient, callee: RunningClient): Promise<string> {
  const { callId } = await caller.request<{ callId: string }>('create_call', { to: callee.name });
  await callee.waitForCall(callId, (s) => s.state === 'incoming');
  await callee.request('answer_call', { callId });
  await Promise.all([
    caller.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
    callee.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
  ]);
  return callId;
}
