/**
 * A throw-away PostgreSQL cluster on loopback (Debian's `postgresql` package,
 * binaries in /usr/lib/postgresql/<version>/bin): `initdb` into a temporary
 * folder, then `postgres` as a direct child of the test process on 127.0.0.1
 * and a free port, without durability (`fsync=off`, `synchronous_commit=off`,
 * `full_page_writes=off`: a crash loses the cluster, which we throw away
 * anyway) and without a Unix socket. Logins over TCP need the superuser's
 * password (scram-sha-256), so every URL handed out carries a secret that the
 * server must never log.
 *
 * ```ts
 * const pg = await startPostgres();
 * const url = await pg.createDatabase('parley_test_1'); // postgres://parley_test:…@127.0.0.1:…/parley_test_1
 * await pg.stop();
 * ```
 *
 * Facts found on this machine (PostgreSQL 15, running as root): `initdb`
 * refuses to run as root ("cannot be run as root"), so as root the cluster
 * runs as the `postgres` account the Debian package creates, through
 * `setpriv --reuid --regid --init-groups --pdeathsig KILL`; its folder is
 * handed to that account first. As any other user it runs as that user.
 * The kernel clears a process's parent-death signal when its user id
 * changes, so the one startChild's own `setpriv` sets does not survive the
 * switch: the inner `setpriv` sets it again after it (without it, a test
 * process killed outright left its cluster running;
 * test/integration/harness-cleanup.test.ts).
 */
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { freeTcpPort, LOOPBACK } from './ports';
import { makeTempDir, removeTempDir, run, startChild, waitFor, type Child } from './process';

/** A running cluster, see {@link startPostgres}. */
export interface Postgres {
  readonly host: string;
  readonly port: number;
  /** The superuser's name. */
  readonly user: string;
  /** The superuser's password (random hex). */
  readonly password: string;
  /** URL of the maintenance database `postgres`, with the superuser's credentials. */
  readonly adminUrl: string;
  /** The server's log file (kept until stop). */
  readonly logPath: string;
  /** The postmaster's process id. */
  readonly pid: number;
  /**
   * Creates an empty database owned by the superuser.
   * @param name lower-case letters, digits and `_`.
   * @returns its URL, with credentials.
   */
  createDatabase(name: string): Promise<string>;
  /** Drops a database, closing its sessions first (no error if it is gone). */
  dropDatabase(name: string): Promise<void>;
  /** Stops the cluster (fast shutdown) and removes its folder. Idempotent. */
  stop(): Promise<void>;
}

/** The newest PostgreSQL binaries on this machine, e.g. /usr/lib/postgresql/15/bin. */
export function postgresBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, 'bin', 'postgres')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (!versions[0]) {
    throw new Error(
      `PostgreSQL is not installed (no ${root}/<version>/bin/postgres): apt-get install postgresql (scripts/setup.sh does)`,
    );
  }
  return join(root, versions[0], 'bin');
}

/** The numeric uid and gid of a local account (`getent passwd`). */
async function accountIds(name: string): Promise<{ uid: number; gid: number }> {
  const line = (await run('getent', ['passwd', name])).trim();
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/** The name of a database, quoted as an SQL identifier. */
function ident(name: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`not a database name: ${name}`);
  return `"${name}"`;
}

/**
 * Starts a fresh cluster; see the file comment.
 * @param options.startTimeoutMs how long to wait for the first accepted login, ms (default 30000).
 * @throws Error (with the tail of the server log) when the binaries are missing or it does not start.
 */
export async function startPostgres(options: { startTimeoutMs?: number } = {}): Promise<Postgres> {
  const bin = postgresBinDir();
  const dir = makeTempDir('postgres');
  const data = join(dir, 'data');
  const logPath = join(dir, 'postgres.log');
  const user = 'parley_test';
  const password = randomBytes(16).toString('hex');
  const asRoot = process.getuid?.() === 0;
  // As root: run everything as the Debian package's `postgres` account.
  const prefix: string[] = [];
  if (asRoot) {
    const owner = await accountIds('postgres').catch(() => {
      throw new Error('running as root, and there is no "postgres" account to run PostgreSQL as');
    });
    chownSync(dir, owner.uid, owner.gid);
    prefix.push('/usr/bin/setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', '--pdeathsig', 'KILL', '--');
  }
  const pwfile = join(dir, 'pwfile');
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (asRoot) {
    const owner = await accountIds('postgres');
    chownSync(pwfile, owner.uid, owner.gid);
  }
  const as = (command: string, args: string[]): [string, string[]] =>
    prefix.length ? [prefix[0]!, [...prefix.slice(1), command, ...args]] : [command, args];

  // --no-locale: byte order for text (as SQLite's BINARY collation), UTF-8 encoding.
  await run(
    ...as(join(bin, 'initdb'), [
      '-D',
      data,
      '-U',
      user,
      `--pwfile=${pwfile}`,
      '--auth-host=scram-sha-256',
      '--auth-local=peer',
      '--encoding=UTF8',
      '--no-locale',
      '--no-sync',
    ]),
    { timeoutMs: 60_000, cwd: dir },
  );

  const port = await freeTcpPort();
  const child: Child = await startChild(
    ...as(join(bin, 'postgres'), [
      '-D',
      data,
      '-h',
      LOOPBACK,
      '-p',
      String(port),
      '-c',
      'unix_socket_directories=',
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
      '-c',
      'max_connections=300',
      '-c',
      'shared_buffers=64MB',
      '-c',
      'log_min_messages=warning',
    ]),
    { logFile: logPath, cwd: dir },
  );

  const urlOf = (database: string) =>
    `postgres://${user}:${password}@${LOOPBACK}:${port}/${database}`;
  const adminUrl = urlOf('postgres');
  const admin = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // SIGINT: "fast shutdown" (sessions are ended, no checkpoint wait for clients).
    await child.stop('SIGINT', 10_000);
    removeTempDir(dir);
  };

  try {
    await waitFor(
      `PostgreSQL on ${LOOPBACK}:${port}`,
      async () => {
        if (child.hasExited()) throw new Error('postgres exited');
        return admin(async (c) => (await c.query('select 1 as ok')).rows.length === 1);
      },
      options.startTimeoutMs ?? 30_000,
      100,
    );
  } catch (e) {
    const log = existsSync(logPath) ? readFileSync(logPath, 'utf8').slice(-2000) : '';
    await stop();
    throw new Error(`${(e as Error).message}\npostgres log:\n${log}`, { cause: e });
  }

  return {
    host: LOOPBACK,
    port,
    user,
    password,
    adminUrl,
    logPath,
    pid: child.pid,
    async createDatabase(name: string) {
      await admin((c) => c.query(`create database ${ident(name)}`));
      return urlOf(name);
    },
    async dropDatabase(name: string) {
      await admin((c) => c.query(`drop database if exists ${ident(name)} with (force)`));
    },
    stop,
  };
}

