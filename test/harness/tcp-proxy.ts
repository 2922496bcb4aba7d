/**
 * A TCP proxy on loopback in front of a server, which a test can cut and
 * restore: a signaling blip (Wi-Fi roaming, a NAT rebinding, a proxy restart)
 * without touching the server or the client, and with the media path left
 * alone. `cut()` resets every open connection and refuses new ones (each is
 * reset as it arrives) until `restore()`.
 */
import { createServer, type Server, type Socket, connect } from 'node:net';
import { LOOPBACK } from './ports';

export interface TcpProxy {
  /** `http://127.0.0.1:<port>`: give it to clients in place of the server's URL. */
  readonly url: string;
  readonly port: number;
  /** Resets every open connection and refuses new ones until `restore()`. */
  cut(): void;
  /** Lets connections through again. */
  restore(): void;
  /** Connections accepted and forwarded so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

/**
 * Starts a proxy to `target` (`host:port`) on a free loopback port.
 * @param targetUrl the server's URL (`http://127.0.0.1:8787`).
 */
export async function startTcpProxy(targetUrl: string): Promise<TcpProxy> {
  const target = new URL(targetUrl);
  const open = new Set<Socket>();
  let down = false;
  let accepted = 0;
  const server: Server = createServer((client) => {
    if (down) {
      client.resetAndDestroy();
      return;
    }
    accepted++;
    const upstream = connect(Number(target.port), target.hostname);
    open.add(client);
    open.add(upstream);
    const drop = () => {
      open.delete(client);
      open.delete(upstream);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, LOOPBACK, resolve);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://${LOOPBACK}:${port}`,
    port,
    get accepted() {
      return accepted;
    },
    cut() {
      down = true;
      for (const s of [...open]) s.resetAndDestroy();
      open.clear();
    },
    restore() {
      down = false;
    },
    close() {
      down = true;
      for (const s of [...open]) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
