/**
 * Free loopback ports for components started by the test harness.
 *
 * The kernel picks the port (bind to port 0), we read it back and release the
 * socket. There is a short window in which another process could take the
 * port; on these machines only our own tests allocate ports, so callers that
 * start a daemon on the port simply retry on "address in use".
 */
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

/** The loopback address every harness component listens on. */
export const LOOPBACK = '127.0.0.1';

/**
 * A UDP port on 127.0.0.1 that was free a moment ago.
 * @returns the port number (1024–65535).
 */
export function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, LOOPBACK, () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago.
 * @returns the port number (1024–65535).
 */
export function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('no TCP port assigned'))));
    });
  });
}

/**
 * A port that is free for both UDP and TCP on 127.0.0.1 (TURN and STUN
 * servers listen on both). Tries up to `attempts` kernel-chosen UDP ports.
 * @throws Error when no such port was found.
 */
export async function freeUdpTcpPort(attempts = 20): Promise<number> {
  for (let i = 0; i < attempts; i++) {
    const port = await freeUdpPort();
    if (await tcpPortIsFree(port)) return port;
  }
  throw new Error(`no port free for both UDP and TCP after ${attempts} attempts`);
}

/**
 * A range of `count` consecutive UDP ports that were all free a moment ago,
 * e.g. for coturn's relay ports (`--min-port`/`--max-port`). The range is
 * picked at random inside 20000–59999 to keep clear of the kernel's
 * ephemeral range collisions between parallel test files.
 * @returns `[min, max]` inclusive.
 * @throws Error when no free range was found in 50 attempts.
 */
export async function freeUdpPortRange(count: number): Promise<[number, number]> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const min = 20000 + Math.floor(Math.random() * (40000 - count));
    let ok = true;
    for (let port = min; port < min + count && ok; port++) ok = await udpPortIsFree(port);
    if (ok) return [min, min + count - 1];
  }
  throw new Error(`no range of ${count} free UDP ports found`);
}

/** Whether a UDP port on 127.0.0.1 can be bound right now. */
export function udpPortIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    socket.once('error', () => resolve(false));
    socket.bind(port, LOOPBACK, () => socket.close(() => resolve(true)));
  });
}

/** Whether a TCP port on 127.0.0.1 can be listened on right now. */
export function tcpPortIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, LOOPBACK, () => server.close(() => resolve(true)));
  });
}
