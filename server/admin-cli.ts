import { Command } from 'commander';
import { ParleyError } from '../common/errors';
import { connectAdmin, type AdminConnection } from './admin-client';
import { AdminRequests, type AdminMethod } from './admin-schema';
import { ConfigError, loadConfig } from './config';

/**
 * `npm run admin -- <method> [json params]`: calls one admin API method on
 * the running server and prints the JSON result on stdout.
 *
 * The socket is found the way the server finds it: `PARLEY_ADMIN_SOCKET`,
 * else `admin.socket` of the config file (`--config` / `PARLEY_SERVER_CONFIG`),
 * else `<data dir>/admin.sock` with the data dir from `PARLEY_DATA_DIR` or the config.
 *
 * Exit codes: 0 with the result printed; 1 when the server answered with an
 * error (`reason: message` on stderr); 2 for a usage or config error; 3 when
 * no server listens on the socket.
 */

/** How long to wait for the server's answer, ms. */
const REQUEST_TIMEOUT_MS = 15_000;

function fail(code: number, message: string): never {
  process.stderr.write(`parley-admin: ${message}\n`);
  process.exit(code);
}

async function main(): Promise<void> {
  const methods = Object.keys(AdminRequests).join(', ');
  const program = new Command()
    .name('parley-admin')
    .description(`Calls the Parley server's admin API. Methods: ${methods}`)
    .argument('<method>', `one of: ${methods}`)
    .argument('[params]', 'JSON object of params, e.g. \'{"callId":"…"}\'', '{}')
    .option('-c, --config <path>', 'server config file (default: $PARLEY_SERVER_CONFIG)')
    .option(
      '-s, --socket <path>',
      'admin socket (default: as the server: $PARLEY_ADMIN_SOCKET, config, data dir)',
    )
    .parse(process.argv);
  const [method, paramsText] = program.args as [string, string | undefined];
  const opts = program.opts<{ config?: string; socket?: string }>();

  if (!(method in AdminRequests)) fail(2, `unknown method "${method}"; methods: ${methods}`);
  let params: unknown;
  try {
    params = JSON.parse(paramsText ?? '{}');
  } catch {
    fail(2, `params must be a JSON object, got: ${paramsText}`);
  }
  if (typeof params !== 'object' || params === null || Array.isArray(params))
    fail(2, 'params must be a JSON object');

  let path = opts.socket;
  if (!path) {
    try {
      path = loadConfig(opts.config).admin.socket;
    } catch (e) {
      if (e instanceof ConfigError) fail(2, `config error: ${e.message}`);
      throw e;
    }
  }

  let admin: AdminConnection;
  try {
    admin = await connectAdmin(path, REQUEST_TIMEOUT_MS);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    fail(
      3,
      `no Parley server is listening on the admin socket ${path} (${code}); ` +
        'start one (npm run server) or point PARLEY_DATA_DIR / PARLEY_ADMIN_SOCKET at its data folder',
    );
  }
  try {
    const result = await admin.request(method as AdminMethod, params as object);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } catch (e) {
    if (e instanceof ParleyError) fail(1, `${e.reason}: ${e.message}`);
    throw e;
  } finally {
    admin.close();
  }
}

main().catch((err: unknown) => fail(1, err instanceof Error ? err.message : String(err)));
