/**
 * Starts a REAL Redis (Debian's `redis-server`) on loopback, on a free port,
 * in a temporary folder, with no persistence (`--save '' --appendonly no`), and
 * stops it afterwards. `restart()` stops it and starts it again on the same
 * port, empty: what a Redis blip with data loss looks like to the servers.
 *
 * ```ts
 * const redis = await startRedis();
 * // redis.url = 'redis://127.0.0.1:41234'
 * await redis.stop();
 * ```
 */
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { freeTcpPort, LOOPBACK } from './ports';
import { makeTempDir, removeTempDir, startChild, waitFor, type Child } from './process';

/** A running Redis, see {@link startRedis}. */
export interface RunningRedis {
  readonly port: number;
  /** `redis://127.0.0.1:<port>` (no password: loopback only). */
  readonly url: string;
  /** The server's log file (kept until stop). */
  readonly logPath: string;
  /** Sends `PING` and resolves with true on `+PONG`. */
  ping(): Promise<boolean>;
  /** SIGKILLs the server (its memory is lost) and starts it again, empty, on the same port. */
  restart(options?: { downMs?: number }): Promise<void>;
  /** Stops the server and removes its folder. Idempotent. */
  stop(): Promise<void>;
}

const REDIS_SERVER = '/usr/bin/redis-server';

/** One inline command over a fresh connection; resolves with the first reply line. */
function command(port: number, text: string, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, LOOPBACK);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('redis did not answer'));
    }, timeoutMs);
    let data = '';
    socket.on('connect', () => socket.write(`${text}\r\n`));
    socket.on('data', (d) => {
      data += d.toString('utf8');
      if (data.includes('\r\n')) {
        clearTimeout(timer);
        socket.end();
        resolve(data.split('\r\n')[0]!);
      }
    });
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/**
 * Starts Redis; see the file comment.
 * @throws Error (with the tail of its log) when `redis-server` is missing or does not answer within 10 s.
 */
export async function startRedis(): Promise<RunningRedis> {
  if (!existsSync(REDIS_SERVER))
    throw new Error(`${REDIS_SERVER} is missing: apt-get install redis-server (scripts/setup.sh does)`);
  const dir = makeTempDir('redis');
  const logPath = join(dir, 'redis.log');
  const port = await freeTcpPort();
  const launch = async (): Promise<Child> => {
    const child = await startChild(
      REDIS_SERVER,
      [
        '--port',
        String(port),
        '--bind',
        LOOPBACK,
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
        '--logfile',
        logPath,
        '--daemonize',
        'no',
        // Keyspace events are not used: the ring timer lives in the owner's hub.
      ],
      { cwd: dir, stdio: 'ignore' },
    );
    try {
      await waitFor(
        `redis on ${LOOPBACK}:${port}`,
        async () => {
          if (child.hasExited()) throw new Error('redis-server exited');
          return (await command(port, 'PING')) === '+PONG';
        },
        10_000,
        50,
      );
    } catch (e) {
      const log = existsSync(logPath) ? readFileSync(logPath, 'utf8').slice(-2000) : '';
      await child.stop('SIGKILL');
      throw new Error(`${(e as Error).message}\nredis log:\n${log}`, { cause: e });
    }
    return child;
  };
  let child = await launch();
  let stopped = false;
  return {
    port,
    url: `redis://${LOOPBACK}:${port}`,
    logPath,
    ping: () => command(port, 'PING').then((r) => r === '+PONG', () => false),
    async restart(options = {}) {
      await child.stop('SIGKILL');
      await new Promise((r) => setTimeout(r, options.downMs ?? 0));
      child = await launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await child.stop('SIGTERM', 3000);
      removeTempDir(dir);
    },
  };
}
