/**
 * The development bridge (DESIGN.md "What cannot run on these machines"): the
 * IPC contract of common/ipc carried over a loopback WebSocket, so that the
 * real renderer runs in a plain browser against the real core. `npm run
 * dev:web` and the UI tests use it; the Electron app never does.
 *
 * - Listens on 127.0.0.1 only, on a random port, and serves the renderer
 *   (through the `serve` handler, e.g. Vite's middleware) on the same origin.
 * - The socket is `/bridge`; a client proves it was given the page URL by
 *   offering the WebSocket subprotocol `parley-bridge.<token>` (a random
 *   128-bit token that only appears in the URL's fragment, never in a request
 *   line or a log), and must come from the page's own origin.
 * - Messages are JSON-RPC 2.0: one request per contract request (params
 *   validated with the contract's schema, as in Electron), and a notification
 *   `event` `{name, payload}` per contract event.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { IPC_EVENT_NAMES, IpcRequests, type IpcRequestName } from '../../common/ipc/contract';
import { RpcPeer } from '../../common/protocol/rpc';
import type { Softphone } from '../core/softphone';
import { createHandlers } from './ipc-handlers';

/** Subprotocol prefix of the bridge socket; the token follows the dot. */
export const BRIDGE_PROTOCOL_PREFIX = 'parley-bridge.';
/** Largest message the bridge takes from the page, bytes. */
const MAX_BRIDGE_MESSAGE = 256 * 1024;

export interface DevBridgeOptions {
  /** Port to listen on (0 = random, the default). */
  port?: number;
  /** Serves the renderer's files (Vite middleware in development and tests). */
  serve: (req: IncomingMessage, res: ServerResponse, next: () => void) => void;
  /** Receives errors hidden from the page, for the local log. */
  onInternalError?: (method: string, error: unknown) => void;
}

export interface DevBridge {
  /** The page to open, with the token in its fragment: `http://127.0.0.1:<port>/#bridge=<token>`. */
  readonly url: string;
  readonly origin: string;
  readonly server: ReturnType<typeof createServer>;
  close(): Promise<void>;
}

/** Starts the bridge for one Softphone. */
export async function startDevBridge(phone: Softphone, options: DevBridgeOptions): Promise<DevBridge> {
  const token = randomBytes(16).toString('hex');
  const expected = Buffer.from(BRIDGE_PROTOCOL_PREFIX + token);
  const handlers = createHandlers(phone);
  const server = createServer((req, res) =>
    options.serve(req, res, () => {
      res.statusCode = 404;
      res.end('not found');
    }),
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_BRIDGE_MESSAGE,
    handleProtocols: (protocols) => {
      for (const p of protocols) {
        const b = Buffer.from(p);
        if (b.length === expected.length && timingSafeEqual(b, expected)) return p;
      }
      return false;
    },
  });
  server.on('upgrade', (req, socket, head) => {
    if (new URL(req.url ?? '/', origin).pathname !== '/bridge') return; // Vite's HMR socket, if any
    const offered = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((s) => s.trim());
    const tokenOk = offered.some((p) => {
      const b = Buffer.from(p);
      return b.length === expected.length && timingSafeEqual(b, expected);
    });
    if (req.headers.origin !== origin || !tokenOk) {
      socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => attach(ws));
  });

  const sockets = new Set<WebSocket>();
  const unsubscribe: (() => void)[] = [];
  const peers = new Set<RpcPeer>();
  for (const name of IPC_EVENT_NAMES) {
    const listener = (payload: unknown) => {
      for (const p of peers) p.notify('event', { name, payload });
    };
    phone.on(name, listener as never);
    unsubscribe.push(() => phone.off(name, listener as never));
  }

  function attach(ws: WebSocket): void {
    sockets.add(ws);
    const rpc = new RpcPeer((text) => ws.send(text), {
      maxMessageBytes: MAX_BRIDGE_MESSAGE,
      onInternalError: options.onInternalError,
    });
    for (const m of Object.keys(IpcRequests) as IpcRequestName[]) {
      const handler = handlers[m] as (p: unknown) => unknown;
      rpc.handle(m, IpcRequests[m].params, (p) => handler(p));
    }
    peers.add(rpc);
    ws.on('message', (data) => void rpc.receive(String(data), undefined));
    ws.on('close', () => {
      peers.delete(rpc);
      sockets.delete(ws);
    });
  }

  return {
    url: `${origin}/#bridge=${token}`,
    origin,
    server,
    async close() {
      for (const u of unsubscribe) u();
      for (const ws of sockets) ws.terminate();
      wss.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
