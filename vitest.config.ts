import { defineConfig } from 'vitest/config';

// Unit tests are fast and parallel; integration and e2e tests start real
// components (server, coturn, PulseAudio, gnome-keyring, Chromium) through
// test/harness and run one file at a time so that two calls never fight for
// the machine's two cores. The projects run as groups one after another
// (sequence.groupOrder): unit, then integration, then UI, then the server's
// tests against PostgreSQL. Run beside the
// parallel unit workers (ML-KEM, Opus, DTLS, depcruise on both cores), the
// first call of the integration group once heard 0.41 of the speech in CI: a
// busy machine is measured by `npm run bench`'s loaded condition, not left to
// chance in a behaviour test.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 20_000,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts'],
          globalSetup: ['test/harness/build-cli.global.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          pool: 'forks',
          sequence: { groupOrder: 1 },
        },
      },
      {
        // The renderer in Chromium against the real core (test/harness/ui.ts),
        // in a group of its own (groupOrder; vitest runs it alone, last): run beside an integration
        // file's calls, its freshly opened PulseAudio streams (ringtone, a
        // speaker switched mid-call) sometimes stayed silent past the test's
        // window in CI.
        test: {
          name: 'ui',
          include: ['test/ui/**/*.test.ts'],
          globalSetup: ['test/harness/build-cli.global.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          pool: 'forks',
          sequence: { groupOrder: 2 },
        },
      },
      {
        // The server's own tests again, against PostgreSQL instead of SQLite
        // (issue 15: the whole server test suite passes against both stores):
        // one throw-away cluster for the run (test/harness/postgres.global.ts),
        // a database per server data folder (test/harness/store.ts). Only the
        // files that need no audio, last, one at a time.
        test: {
          name: 'server-pg',
          include: ['test/integration/server-*.test.ts', 'test/unit/server-audit.test.ts'],
          // Always on PostgreSQL already, whatever the run's store.
          exclude: ['test/integration/server-store.test.ts'],
          env: { PARLEY_TEST_STORE: 'postgres' },
          globalSetup: ['test/harness/build-cli.global.ts', 'test/harness/postgres.global.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          pool: 'forks',
          sequence: { groupOrder: 3 },
        },
      },
    ],
  },
});
