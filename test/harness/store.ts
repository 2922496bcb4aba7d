/**
 * Which store the servers of a test run use: SQLite in each server's data
 * folder (the default), or PostgreSQL with `PARLEY_TEST_STORE=postgres` (the
 * `server-pg` vitest project sets it). With PostgreSQL every server data
 * folder gets a database of its own in one throw-away cluster: created the
 * first time a server starts on that folder, named in the file
 * `test-store-url` inside it, so that a server restarted on the same folder
 * finds its data again, exactly as with the SQLite file.
 *
 * The cluster is the one the project's globalSetup started
 * (test/harness/postgres.global.ts, its admin URL in `PARLEY_TEST_PG_URL`),
 * or, when a file runs without it, one started for this test process.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import pg from 'pg';
import { openDatabase, type DB } from '../../server/db';
import { startPostgres } from './postgres';

/** The environment variable that selects the store: `postgres` or `sqlite` (default). */
export const TEST_STORE_ENV = 'PARLEY_TEST_STORE';
/** The admin URL of the run's cluster (set by the globalSetup). */
export const TEST_PG_URL_ENV = 'PARLEY_TEST_PG_URL';
/** The file in a server data folder that names its PostgreSQL database. */
const MARKER = 'test-store-url';

/** The store the servers of this run use. */
export function testStore(): 'sqlite' | 'postgres' {
  return process.env[TEST_STORE_ENV] === 'postgres' ? 'postgres' : 'sqlite';
}

let ownCluster: Promise<string> | undefined;

/** The admin URL of the run's cluster, starting one for this process if the globalSetup did not. */
function clusterAdminUrl(): Promise<string> {
  const fromSetup = process.env[TEST_PG_URL_ENV];
  if (fromSetup) return Promise.resolve(fromSetup);
  // Stopped with this process (startChild's exit hook and parent-death signal).
  ownCluster ??= startPostgres().then((p) => p.adminUrl);
  return ownCluster;
}

/**
 * The store URL a server on `dataDir` should use: undefined with SQLite; with
 * PostgreSQL the URL of that folder's own database (created now if it has none).
 */
export async function storeUrlFor(dataDir: string): Promise<string | undefined> {
  if (testStore() !== 'postgres') return undefined;
  const marker = join(dataDir, MARKER);
  if (existsSync(marker)) return readFileSync(marker, 'utf8').trim();
  const url = await createTestDatabase();
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(marker, `${url}\n`, { mode: 0o600 });
  return url;
}

/**
 * A new empty database in the run's PostgreSQL cluster (started for this
 * process if the run has none, also when the run's store is SQLite); its URL,
 * with credentials.
 */
export async function createTestDatabase(): Promise<string> {
  const admin = new URL(await clusterAdminUrl());
  const name = `parley_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    await client.query(`create database "${name}"`);
  } finally {
    await client.end();
  }
  admin.pathname = `/${name}`;
  return admin.toString();
}

/**
 * Drops the database of a data folder (PostgreSQL only; no error if there is none).
 * The harness calls it for the folders it made; the cluster goes at the end of the run anyway.
 */
export async function dropStoreFor(dataDir: string): Promise<void> {
  const marker = join(dataDir, MARKER);
  if (testStore() !== 'postgres' || !existsSync(marker)) return;
  const url = new URL(readFileSync(marker, 'utf8').trim());
  const name = url.pathname.slice(1);
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    await client.query(`drop database if exists "${name}" with (force)`);
  } finally {
    await client.end();
  }
}

/**
 * Opens the store a test server on `dataDir` uses (SQLite file or its
 * PostgreSQL database), to check what the server wrote. Close it with `destroy()`.
 */
export async function openServerStore(dataDir: string): Promise<Kysely<DB>> {
  return openDatabase(dataDir, { url: await storeUrlFor(dataDir) });
}

/**
 * A fresh empty store for a test that uses the store modules directly: an
 * in-memory SQLite, or a new PostgreSQL database.
 */
export async function openTestStore(): Promise<Kysely<DB>> {
  if (testStore() !== 'postgres') return openDatabase(':memory:');
  return openDatabase(':memory:', { url: await createTestDatabase() });
}

/**
 * The calls a server on `dataDir` has written to its store as open
 * (`open_calls`): call id → whether it was answered. A test that kills the
 * server with SIGKILL polls this first: the open-call writes go to the store
 * asynchronously, and with PostgreSQL's pool on other connections than the
 * audit records, so an audit record on disk does not prove them written.
 */
export async function openCallsOnDisk(dataDir: string): Promise<Map<string, boolean>> {
  const db = await openServerStore(dataDir);
  try {
    const rows = await db.selectFrom('open_calls').select(['call_id', 'answered_at']).execute();
    return new Map(rows.map((r) => [r.call_id, r.answered_at !== null]));
  } finally {
    await db.destroy();
  }
}
