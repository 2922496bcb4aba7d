import { Command } from 'commander';
import { buildServer, serverVersion } from './app';
import { ConfigError, loadConfig } from './config';

/**
 * `npm run server [-- --config path]`: the Parley signaling server.
 * Exit codes: 0 after a clean SIGINT/SIGTERM shutdown, 2 on a configuration
 * error (message on stderr naming the key), 1 when it cannot start.
 */
async function main(): Promise<void> {
  const program = new Command()
    .name('parley-server')
    .description('Parley signaling server: accounts, devices, call routing, TURN credentials')
    .version(serverVersion())
    .option(
      '-c, --config <path>',
      'TOML config file (default: $PARLEY_SERVER_CONFIG, else built-in defaults)',
    )
    .parse(process.argv);
  const opts = program.opts<{ config?: string }>();

  let config;
  try {
    config = loadConfig(opts.config);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`parley-server: config error: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }

  const server = await buildServer(config, {
    reloadConfig: () => loadConfig(opts.config),
    // A drain (admin `server.drain`, or SIGTERM with several nodes) ends the process.
    onDrained: () => process.exit(0),
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    // Several nodes: SIGTERM drains (clients move to the other nodes with their calls); one node: it shuts down.
    const drain = signal === 'SIGTERM' && config.cluster !== undefined;
    server.log.info({ signal, drain }, 'shutting down');
    const force = setTimeout(() => process.exit(1), drain ? 45_000 : 10_000);
    force.unref();
    (drain ? server.drain() : server.close()).then(
      () => process.exit(0),
      (err: unknown) => {
        server.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // A bug in one handler must not take every call down: log it and keep serving.
  process.on('unhandledRejection', (err) => server.log.error({ err }, 'unhandled rejection'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  await server.listen();
}

main().catch((err: unknown) => {
  process.stderr.write(
    `parley-server: cannot start: ${err instanceof Error ? err.message : String(err)}\n`,
  );
  process.exit(1);
});
