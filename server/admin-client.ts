import { createConnection, type Socket } from 'node:net';
import { RpcPeer } from '../common/protocol/rpc';

/** A connection to the server's admin socket (JSON-RPC 2.0, one message per line). */
export interface AdminConnection {
  /** @throws ParleyError with the server's error, or `unavailable` on timeout or a closed connection. */
  request<T = unknown>(method: string, params?: object): Promise<T>;
  close(): void;
}

/**
 * Connects to the admin socket at `path`.
 * @param timeoutMs how long each request may wait for its answer.
 * @throws the socket's own error (with `code`, e.g. ENOENT or ECONNREFUSED) when nobody listens there.
 */
export async function connectAdmin(path: string, timeoutMs = 15_000): Promise<AdminConnection> {
  const socket: Socket = await new Promise((resolve, reject) => {
    const s = createConnection(path);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
  const peer = new RpcPeer((text) => socket.write(`${text}\n`), {
    maxMessageBytes: 16 * 1024 * 1024, // answers (audit pages) may be large
    requestTimeoutMs: timeoutMs,
  });
  let buffered = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) void peer.receive(line, undefined);
  });
  socket.on('error', () => {}); // 'close' follows and fails pending requests
  socket.on('close', () => peer.close('the server closed the admin connection'));
  return {
    request: <T>(method: string, params: object = {}) => peer.request<T>(method, params),
    close: () => socket.destroy(),
  };
}
