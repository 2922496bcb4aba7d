/**
 * Drain for a rolling restart (issue 15): two real `parley` daemons in a call
 * through nginx in front of three server nodes (one PostgreSQL, one Redis).
 * The node that owns the call is drained through its admin socket: its
 * readiness fails, another node takes the call over at once, the daemons are
 * told to reconnect (1012) and do so through nginx to the other nodes, the
 * call resumes there well before the dead-node timeout, media never stops,
 * and the drained process exits by itself. The call is later hung up
 * normally; a second drain, by SIGTERM, moves the call again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallStatus } from '../../common/protocol/control';
import { NODE_DEAD_MS } from '../../server/cluster';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { startNginx, type RunningNginx } from '../harness/nginx';
import { startPulse, type Pulse } from '../harness/pulse';
import { startRedis, type RunningRedis } from '../harness/redis';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { signIn } from '../harness/signal-client';
import { createTestDatabase } from '../harness/store';

let pulse: Pulse;
let keyring: Keyring;
let redis: RunningRedis;
let lb: RunningNginx;
const nodes: RunningServer[] = [];
let alice: RunningClient;
let bob: RunningClient;
const drained = new Set<RunningServer>();

beforeAll(async () => {
  [pulse, keyring, redis] = await Promise.all([startPulse(), startKeyring(), startRedis()]);
  const storeUrl = await createTestDatabase();
  const node = (id: string) =>
    startServer({ env: { PARLEY_STORE_URL: storeUrl, PARLEY_CLUSTER_REDIS_URL: redis.url, PARLEY_NODE_ID: id } });
  nodes.push(await node('n1'));
  nodes.push(...(await Promise.all([node('n2'), node('n3')])));
  lb = await startNginx(nodes.map((n) => n.url));
  const server = { url: lb.url };
  [alice, bob] = await Promise.all([
    startClient({ name: `alice${Math.floor(Math.random() * 1e6)}`, server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: `bob${Math.floor(Math.random() * 1e6)}`, server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await lb?.stop();
  await Promise.allSettled(nodes.map((n) => n.stop()));
  await redis?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
});

/** The node that owns call `callId` now: the one that took its invite or, after a move, resumed it last. */
function ownerOf(callId: string, among: RunningServer[]): RunningServer | undefined {
  let best: { node: RunningServer; time: number } | undefined;
  for (const node of among)
    for (const l of node.logLines()) {
      const taken =
        (l.msg === 'call.invited' && (l.call as { callId?: string } | undefined)?.callId === callId) ||
        (l.msg === 'call resumed after restart' && l.callId === callId);
      if (taken && (!best || (l.time as number) > best.time)) best = { node, time: l.time as number };
    }
  return best?.node;
}

/** Drains `node` with `how`; returns ms from the drain until the call resumed on another node. */
async function drainMidCall(callId: string, node: RunningServer, how: 'admin' | 'SIGTERM'): Promise<number> {
  const survivors = nodes.filter((n) => n !== node && !drained.has(n));
  drained.add(node);
  const before = (await bob.request<CallStatus>('get_call_status', { callId })).stats!.packetsReceived;
  const t0 = Date.now();
  const resumed = Promise.race(
    survivors.map((n) =>
      n.waitForLog((l) => l.msg === 'call resumed after restart' && l.callId === callId && (l.time as number) >= t0 - 50, 15_000),
    ),
  );
  if (how === 'admin') {
    expect(await adminRequest(node.adminSocket, 'server.drain')).toEqual({ ok: true, draining: true });
    // Readiness fails at once: a load balancer's health check takes the node out.
    const ready = await fetch(new URL('/readyz', node.url));
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ ready: false, reason: 'draining' });
  } else process.kill(node.pid, 'SIGTERM');
  const line = await resumed.catch((e: unknown) => {
    for (const n of nodes)
      console.log(
        n.logLines()
          .filter((l) => (l.time as number) >= t0 - 100)
          .map((l) => JSON.stringify(l))
          .join('\n'),
      );
    throw e;
  });
  const ms = (line.time as number) - t0;
  // The drained process exits by itself, cleanly, with its sockets gone.
  expect(await node.stop(10_000)).toEqual({ code: 0, signal: null });
  for (const c of [alice, bob]) {
    const s = await c.request<CallStatus>('get_call_status', { callId });
    expect(s.state).toBe('active');
  }
  // Media went on peer to peer meanwhile (≥ 1 s of 20 ms packets).
  await new Promise((r) => setTimeout(r, 1500));
  expect((await bob.request<CallStatus>('get_call_status', { callId })).stats!.packetsReceived).toBeGreaterThan(before + 50);
  return ms;
}

describe('draining a node mid-call', () => {
  it('moves the call to another node without waiting for timeouts; it is later hung up normally', async () => {
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: bob.name });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('answer_call', { callId });
    await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
      bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
    ]);
    const first = ownerOf(callId, nodes)!;
    expect(first).toBeDefined();
    const viaAdmin = await drainMidCall(callId, first, 'admin');
    // Faster than a dead node's call could move (NODE_DEAD_MS of silence, then the sweep).
    expect(viaAdmin).toBeLessThan(NODE_DEAD_MS);

    const second = ownerOf(callId, nodes.filter((n) => n !== first))!;
    expect(second).toBeDefined();
    const viaSigterm = await drainMidCall(callId, second, 'SIGTERM');
    expect(viaSigterm).toBeLessThan(NODE_DEAD_MS);
    console.log(`drain mid-call: call resumed on another node ${viaAdmin} ms (admin) and ${viaSigterm} ms (SIGTERM) after the drain began`);

    await alice.request('end_call', { callId });
    const ended = await bob.waitForCall(callId, (s) => s.state === 'ended');
    expect(ended.endReason).toBe('hangup');
  }, 120_000);
});

describe('draining the only node of a cluster', () => {
  it('finds no node to take its calls and shuts down as one node does (sockets closed 1001, exit 0)', async () => {
    // Its own Redis database: a cluster of one, apart from the three nodes above.
    const alone = await startServer({
      env: { PARLEY_STORE_URL: await createTestDatabase(), PARLEY_CLUSTER_REDIS_URL: `${redis.url}/5`, PARLEY_NODE_ID: 'solo' },
    });
    const dee = await signIn(alone, `dee${Math.floor(Math.random() * 1e6)}`);
    await adminRequest(alone.adminSocket, 'server.drain');
    expect((await dee.client.closed).code).toBe(1001);
    expect(await alone.stop(10_000)).toEqual({ code: 0, signal: null });
    expect(alone.logLines().some((l) => l.msg === 'draining: no other node took this node’s calls in time')).toBe(true);
  }, 30_000);
});
