import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger } from 'fastify';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { Accounts } from './accounts';
import type { ServerConfig } from './config';
import { openDatabase, type DB } from './db';
import { registerHttpRoutes } from './http';
import { Hub } from './hub';
import { createLogger } from './log';
import { serveSignalSocket } from './signal';

/**
 * Largest WebSocket frame ws accepts before closing the connection (1009),
 * bytes. Well above MAX_MESSAGE_BYTES (64 KiB) so that moderately oversized
 * frames get a JSON-RPC `payload_too_large` and the connection stays up.
 */
export const WS_MAX_PAYLOAD = 1024 * 1024;

/** Interval between WebSocket pings; a client that misses one is dropped, ms. */
const HEARTBEAT_MS = 30_000;

/** A built, not yet listening, server. */
export interface ParleyServer {
  /** Starts listening on `config.listen`; resolves to the base URL (e.g. `http://127.0.0.1:41234`) and logs "listening". */
  listen(): Promise<string>;
  /** Stops accepting, closes every WebSocket (1001), drops calls and closes the store. Idempotent. */
  close(): Promise<void>;
  /** Base URL once listening, else undefined. */
  readonly url: string | undefined;
  readonly hub: Hub;
  readonly db: Kysely<DB>;
  readonly log: Logger;
}

/** The server's version (package.json), shown by /healthz. */
export function serverVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Builds the signaling server: opens (and migrates) the store in
 * `config.dataDir`, wires HTTP routes and the `/v1/signal` WebSocket.
 * @param options.logger logger to use (default: JSON to stdout at `config.logLevel`).
 * @throws Error when the data folder or database cannot be opened.
 */
export async function buildServer(
  config: ServerConfig,
  options: { logger?: Logger } = {},
): Promise<ParleyServer> {
  const log = options.logger ?? createLogger(config.logLevel);
  const db = await openDatabase(config.dataDir);
  const accounts = new Accounts(db);
  const hub = new Hub({
    ringTimeoutMs: config.ringTimeoutSeconds * 1000,
    onEvent: (e) => {
      const { event, ...facts } = e;
      log.info({ call: facts }, event);
      const caller = e.caller;
      const detail =
        e.event === 'call.ended'
          ? { callId: e.callId, reason: e.reason, durationMs: e.durationMs }
          : { callId: e.callId };
      accounts
        .audit(event, caller.accountId, caller.deviceId, detail)
        .catch((err: unknown) => log.warn({ err }, 'audit failed'));
    },
  });

  const app = Fastify({ loggerInstance: log as FastifyBaseLogger, bodyLimit: 64 * 1024 });
  await app.register(websocket, { options: { maxPayload: WS_MAX_PAYLOAD } });
  registerHttpRoutes(app, accounts, serverVersion());

  const alive = new WeakMap<WebSocket, boolean>();
  app.register(async (scope) => {
    scope.get('/v1/signal', { websocket: true }, (socket, req) => {
      alive.set(socket, true);
      socket.on('pong', () => alive.set(socket, true));
      serveSignalSocket(socket, req.ip, { accounts, hub, config, log });
    });
  });

  let url: string | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  let closing: Promise<void> | undefined;

  return {
    hub,
    db,
    log,
    get url() {
      return url;
    },
    async listen() {
      await app.listen({ host: config.listen.host, port: config.listen.port });
      const addr = app.server.address() as AddressInfo;
      const host =
        addr.family === 'IPv6' || addr.address.includes(':') ? `[${addr.address}]` : addr.address;
      url = `http://${host}:${addr.port}`;
      heartbeat = setInterval(() => {
        for (const ws of app.websocketServer.clients) {
          if (alive.get(ws) === false) {
            ws.terminate();
            continue;
          }
          alive.set(ws, false);
          ws.ping();
        }
      }, HEARTBEAT_MS);
      heartbeat.unref();
      log.info({ url, dataDir: config.dataDir, turn: config.turn.urls.length > 0 }, 'listening');
      return url;
    },
    close() {
      closing ??= (async () => {
        if (heartbeat) clearInterval(heartbeat);
        hub.close();
        for (const ws of app.websocketServer?.clients ?? []) ws.close(1001, 'server shutting down');
        await app.close();
        await db.destroy();
        log.info('closed');
      })();
      return closing;
    },
  };
}
