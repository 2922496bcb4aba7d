/**
 * werift's UDP transport hands a datagram for an IP literal to the socket at
 * once (werift patch, patches/werift+0.25.2.patch): Node's dgram looks up the
 * destination of every datagram it sends, and dns.lookup answers even an IP
 * literal on the next tick, so each RTP packet of a call cost a deferred
 * callback and a closure (5 % of the media thread's time in a `perf` profile of
 * a call, docs/BENCHMARKS.md). Real sockets on loopback; a host name still
 * goes through the resolver.
 */
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { UdpTransport } from 'werift';

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

async function receiver(): Promise<{ socket: Socket; port: number; got: Buffer[] }> {
  const socket = createSocket('udp4');
  const got: Buffer[] = [];
  socket.on('message', (m) => got.push(m));
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  cleanup.push(() => socket.close());
  return { socket, port: socket.address().port, got };
}

async function transport(): Promise<UdpTransport> {
  const t = await UdpTransport.init('udp4', { interfaceAddresses: { udp4: '127.0.0.1' } });
  cleanup.push(() => void t.close());
  return t;
}

async function until(check: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("werift's UDP transport", () => {
  it('sends to an IP literal without deferring each datagram to a later tick, and every datagram arrives in order', async () => {
    const rx = await receiver();
    const tx = await transport();
    const nextTick = process.nextTick;
    let deferred = 0;
    process.nextTick = ((...args: Parameters<typeof nextTick>) => {
      deferred++;
      return nextTick(...args);
    }) as typeof nextTick;
    try {
      for (let i = 0; i < 50; i++) void tx.send(Buffer.from([i]), ['127.0.0.1', rx.port]);
    } finally {
      process.nextTick = nextTick;
    }
    expect(deferred).toBe(0);
    await until(() => rx.got.length === 50);
    expect(rx.got.map((b) => b[0])).toEqual([...Array(50).keys()]);
  });

  it('still resolves a host name before sending to it', async () => {
    const rx = await receiver();
    const tx = await transport();
    await tx.send(Buffer.from('by name'), ['localhost', rx.port]);
    await until(() => rx.got.length === 1);
    expect(rx.got[0]!.toString()).toBe('by name');
  });

  it('a send to an unresolvable host name fails with the resolver error, and the transport keeps working', async () => {
    const rx = await receiver();
    const tx = await transport();
    await expect(tx.send(Buffer.from('x'), ['no-such-host.invalid', rx.port])).rejects.toThrow(/ENOTFOUND|EAI_AGAIN/);
    void tx.send(Buffer.from('after'), ['127.0.0.1', rx.port]);
    await until(() => rx.got.length === 1);
    expect(rx.got[0]!.toString()).toBe('after');
  });
});
