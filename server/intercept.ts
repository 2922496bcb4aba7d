import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Logger } from 'pino';

/**
 * TEST ONLY — a hook that sees, and may rewrite, every message the server
 * sends to a device: the "malicious server" of test/e2e/malicious-server.test.ts.
 *
 * It exists only when the environment variable `PARLEY_TEST_INTERCEPT` names a
 * module AND `PARLEY_TEST_INTERCEPT_ENABLE` holds the exact value
 * {@link INTERCEPT_ENABLE_VALUE} — a sentence no production configuration sets
 * by accident; a module named without it stops the server at start-up. No
 * config file key can enable it, it is refused when `NODE_ENV=production`
 * (even with the flag), and when active the server says so at start-up at
 * `fatal` level in its log and in a banner on stderr, so it never runs silently.
 */
export interface Interceptor {
  /**
   * A JSON-RPC message (request reply or notification, parsed) about to go to
   * the device `to`. Returns the messages to send instead: `[]` drops it,
   * `[m, m]` replays it, a changed object rewrites it.
   */
  outbound(message: Record<string, unknown>, to: { username: string; deviceId: string } | undefined): Record<string, unknown>[];
}

/** The environment variable that names the interception module. */
export const INTERCEPT_ENV = 'PARLEY_TEST_INTERCEPT';
/** The environment variable that must also be set, to {@link INTERCEPT_ENABLE_VALUE}, for the module to load. */
export const INTERCEPT_ENABLE_ENV = 'PARLEY_TEST_INTERCEPT_ENABLE';
/** The only value of {@link INTERCEPT_ENABLE_ENV} that enables the hook. */
export const INTERCEPT_ENABLE_VALUE = 'i-understand-this-server-rewrites-signaling-for-a-test';

/**
 * Loads the interception module named by `PARLEY_TEST_INTERCEPT` (its
 * `interceptor` export), if any. Nothing is imported before every check passed.
 * @throws Error when set under NODE_ENV=production, when
 *   `PARLEY_TEST_INTERCEPT_ENABLE` is not exactly {@link INTERCEPT_ENABLE_VALUE},
 *   or when the module has no `interceptor`; the server then does not start.
 */
export async function loadInterceptor(env: NodeJS.ProcessEnv, log: Logger): Promise<Interceptor | undefined> {
  const spec = env[INTERCEPT_ENV];
  if (!spec) return undefined;
  if (env.NODE_ENV === 'production') {
    throw new Error(`${INTERCEPT_ENV} is set, but NODE_ENV is production: refusing to start with a message interception hook`);
  }
  if (env[INTERCEPT_ENABLE_ENV] !== INTERCEPT_ENABLE_VALUE) {
    throw new Error(
      `${INTERCEPT_ENV} is set, but ${INTERCEPT_ENABLE_ENV} is not "${INTERCEPT_ENABLE_VALUE}": ` +
        'refusing to start with a message interception hook (it exists for tests only; unset PARLEY_TEST_INTERCEPT)',
    );
  }
  const path = isAbsolute(spec) ? spec : resolve(spec);
  const mod = (await import(pathToFileURL(path).href)) as { interceptor?: Interceptor };
  if (!mod.interceptor || typeof mod.interceptor.outbound !== 'function') {
    throw new Error(`${INTERCEPT_ENV} module ${path} exports no interceptor`);
  }
  const banner = `TEST INTERCEPTION HOOK ACTIVE (${INTERCEPT_ENV}=${path}): this server rewrites signaling messages; never use it for real calls`;
  log.fatal({ interceptModule: path }, banner);
  process.stderr.write(`\n*** ${banner} ***\n\n`);
  return mod.interceptor;
}
