/**
 * vitest globalSetup of the `server-pg` project: one throw-away PostgreSQL
 * cluster for the whole run (test/harness/postgres.ts), its admin URL handed
 * to the test processes in PARLEY_TEST_PG_URL; each server data folder then
 * gets a database of its own in it (test/harness/store.ts). Stopped, with its
 * folder, when the run ends.
 */
import { startPostgres } from './postgres';
import { TEST_PG_URL_ENV } from './store';

export default async function setup(): Promise<() => Promise<void>> {
  const cluster = await startPostgres();
  process.env[TEST_PG_URL_ENV] = cluster.adminUrl;
  return async () => {
    delete process.env[TEST_PG_URL_ENV];
    await cluster.stop();
  };
}
