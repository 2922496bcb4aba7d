/**
 * Three real server processes on loopback, one real PostgreSQL and one real
 * Redis (issue 15 items 2 and 5): devices connect to chosen nodes directly
 * (every call crosses nodes), and once through a real nginx in front of them. Routing, answered-elsewhere, the ring timer,
 * displacement of an older socket on another node, a Redis restart mid-run,
 * and kill -9 of the node that owns a live call (the call resumes on another
 * node and is hung up normally).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plainEnvelope } from '../../common/protocol/envelope';
import { PROTOCOL_VERSION } from '../../common/protocol/signaling';
import { startNginx } from '../harness/nginx';
import { startRedis, type RunningRedis } from '../harness/redis';
import { startServer, type RunningServer } from '../harness/server';
import {
  connectCall,
  httpJson,
  login,
  makeContacts,
  signIn,
  SignalClient,
  type SignedInDevice,
} from '../harness/signal-client';
import { createTestDatabase } from '../harness/store';

const offer = plainEnvelope({ type: 'offer', sdp: 'v=0 offer' });
const answer = plainEnvelope({ type: 'answer', sdp: 'v=0 answer' });
const candidate = (c: string) => plainEnvelope({ type: 'candidate', candidate: c, sdpMid: '0', sdpMLineIndex: 0 });

let redis: RunningRedis;
let storeUrl: string;
const nodes: RunningServer[] = [];

/** Starts node `id` on the shared store and Redis. */
async function startNode(id: string, storeUrl: string): Promise<RunningServer> {
  return startServer({
    ringTimeoutSeconds: 3,
    // Small enough to reach in a test: 4 invites at once per account, then 6 a minute.
    configToml: '[policy]\ncalls_per_minute = 6\ncall_burst = 4\n',
    env: {
      PARLEY_STORE_URL: storeUrl,
      PARLEY_CLUSTER_REDIS_URL: redis.url,
      PARLEY_NODE_ID: id,
      PARLEY_CALL_GRACE: '20',
    },
  });
}

/** A second device of an existing account, signed in on `node`. */
async function secondDevice(node: RunningServer, of: SignedInDevice): Promise<SignedInDevice> {
  const session = await login(node.url, of.username, of.password, 'second');
  const client = await SignalClient.connect(node.wsUrl);
  await client.hello(session);
  return { ...session, client, password: of.password };
}

/** Ends the test's sockets. */
async function closeAll(...devices: SignedInDevice[]): Promise<void> {
  await Promise.all(devices.map((d) => d.client.close()));
}

describe('three nodes on one PostgreSQL and one Redis', () => {
  beforeAll(async () => {
    redis = await startRedis();
    storeUrl = await createTestDatabase();
    // The first node migrates the store; the others start beside it.
    nodes.push(await startNode('n1', storeUrl));
    nodes.push(...(await Promise.all([startNode('n2', storeUrl), startNode('n3', storeUrl)])));
  });

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  it('routes a call between devices on different nodes: invite, ringing, answer, candidates, hangup', async () => {
    const [n1, n2] = nodes as [RunningServer, RunningServer];
    const alice = await signIn(n1, 'alice');
    const bob = await signIn(n2, 'bob');
    await makeContacts(alice, bob); // contact requests and presence cross nodes too
    const callId = randomUUID();
    await alice.client.request('call.invite', { callId, callee: 'bob', envelope: offer });
    const incoming = await bob.client.nextNotification('call.incoming', { callId });
    expect(incoming.caller.username).toBe('alice');
    await alice.client.request('call.candidate', { callId, envelope: candidate('a-early') });
    expect((await bob.client.nextNotification('call.candidate', { callId })).envelope).toEqual(candidate('a-early'));
    await bob.client.request('call.ringing', { callId });
    await alice.client.nextNotification('call.ringing', { callId });
    await bob.client.request('call.answer', { callId, envelope: answer });
    expect((await alice.client.nextNotification('call.answered', { callId })).envelope).toEqual(answer);
    await bob.client.request('call.candidate', { callId, envelope: candidate('b-1') });
    expect((await alice.client.nextNotification('call.candidate', { callId })).envelope).toEqual(candidate('b-1'));
    await alice.client.request('call.candidate', { callId, envelope: candidate('a-1') });
    expect((await bob.client.nextNotification('call.candidate', { callId })).envelope).toEqual(candidate('a-1'));
    await bob.client.request('call.hangup', { callId });
    expect((await alice.client.nextNotification('call.ended', { callId })).reason).toBe('hangup');
    await closeAll(alice, bob);
  });

  it('stops the ringing on the callee’s other devices on other nodes when one answers, and times out across nodes', async () => {
    const [n1, n2, n3] = nodes as [RunningServer, RunningServer, RunningServer];
    const carol = await signIn(n1, 'carol');
    const dave = await signIn(n2, 'dave');
    await makeContacts(carol, dave);
    const dave2 = await secondDevice(n3, dave);
    const callId = randomUUID();
    await carol.client.request('call.invite', { callId, callee: 'dave', envelope: offer });
    await dave.client.nextNotification('call.incoming', { callId });
    await dave2.client.nextNotification('call.incoming', { callId });
    await dave2.client.request('call.answer', { callId, envelope: answer });
    await carol.client.nextNotification('call.answered', { callId });
    expect((await dave.client.nextNotification('call.ended', { callId })).reason).toBe('answered_elsewhere');
    await carol.client.request('call.hangup', { callId });
    expect((await dave2.client.nextNotification('call.ended', { callId })).reason).toBe('hangup');

    // The ring timer lives on the node that took the invite (n1 here): no answer in 3 s.
    const unanswered = randomUUID();
    await carol.client.request('call.invite', { callId: unanswered, callee: 'dave', envelope: offer });
    await dave.client.nextNotification('call.incoming', { callId: unanswered });
    await dave2.client.nextNotification('call.incoming', { callId: unanswered });
    expect((await carol.client.nextNotification('call.ended', { callId: unanswered }, 6000)).reason).toBe('no_answer');
    expect((await dave.client.nextNotification('call.ended', { callId: unanswered })).reason).toBe('no_answer');
    expect((await dave2.client.nextNotification('call.ended', { callId: unanswered })).reason).toBe('no_answer');
    await closeAll(carol, dave, dave2);
  });

  it('holds an answered call for a device that dropped off one node and comes back on another, sending what it missed', async () => {
    const [n1, n2, n3] = nodes as [RunningServer, RunningServer, RunningServer];
    const vic = await signIn(n1, 'vic');
    const wes = await signIn(n2, 'wes');
    await makeContacts(vic, wes);
    const callId = await connectCall(vic, wes, { offer, answer }); // owned by n1
    wes.client.terminate(); // n2 sees the socket go; n1, the owner, holds the call for the grace period
    const away = await vic.client.nextNotification('call.link', { callId });
    expect(away.peer).toBe('reconnecting');
    await vic.client.request('call.candidate', { callId, envelope: candidate('while-away') });
    const back = await SignalClient.connect(n3.wsUrl);
    await back.request('hello', { protocol: PROTOCOL_VERSION, deviceId: wes.deviceId, token: wes.token, calls: [{ callId, received: 0 }] });
    expect((await back.nextNotification('call.candidate', { callId })).envelope).toEqual(candidate('while-away'));
    expect((await vic.client.nextNotification('call.link', { callId })).peer).toBe('online');
    await back.request('call.hangup', { callId });
    expect((await vic.client.nextNotification('call.ended', { callId })).reason).toBe('hangup');
    await Promise.all([vic.client.close(), back.close()]);
  });

  it('a device connecting on another node displaces its older socket there', async () => {
    const [n1, n2] = nodes as [RunningServer, RunningServer];
    const gina = await signIn(n1, 'gina');
    const hugo = await signIn(n2, 'hugo');
    await makeContacts(gina, hugo);
    const again = await SignalClient.connect(n2.wsUrl);
    await again.hello(gina);
    expect((await gina.client.closed).code).toBe(4001);
    // Calls now reach the new socket on n2.
    const callId = randomUUID();
    await hugo.client.request('call.invite', { callId, callee: 'gina', envelope: offer });
    await again.nextNotification('call.incoming', { callId });
    await again.request('call.reject', { callId, reason: 'declined' });
    expect((await hugo.client.nextNotification('call.ended', { callId })).reason).toBe('declined');
    await again.close();
    await hugo.client.close();
  });

  it('behind nginx (round robin, WebSocket proxying): devices land on different nodes and call each other', async () => {
    const lb = await startNginx(nodes.map((n) => n.url));
    try {
      const address = { url: lb.url, wsUrl: lb.wsUrl };
      // A sign-in is three requests (register, login, WebSocket): one more request
      // between sign-ins moves round robin on, so the sockets land on different nodes.
      const devices: SignedInDevice[] = [];
      for (const name of ['sara', 'tom', 'uma']) {
        devices.push(await signIn(address, name));
        await fetch(`${lb.url}/healthz`);
      }
      const nodeOf = (deviceId: string) =>
        nodes.findIndex((n) => n.logLines().some((l) => l.msg === 'device online' && l.deviceId === deviceId));
      await expect.poll(() => devices.every((d) => nodeOf(d.deviceId) >= 0)).toBe(true);
      expect(new Set(devices.map((d) => nodeOf(d.deviceId))).size).toBeGreaterThan(1);
      const [sara, tom] = devices as [SignedInDevice, SignedInDevice];
      await makeContacts(sara, tom);
      const callId = await connectCall(sara, tom, { offer, answer });
      await tom.client.request('call.hangup', { callId });
      expect((await sara.client.nextNotification('call.ended', { callId })).reason).toBe('hangup');
      await closeAll(...devices);
    } finally {
      await lb.stop();
    }
  });

  it('a callee in a call owned by another node is busy', async () => {
    const [n1, n2, n3] = nodes as [RunningServer, RunningServer, RunningServer];
    const nina = await signIn(n1, 'nina');
    const omar = await signIn(n2, 'omar');
    const pat = await signIn(n3, 'pat');
    await makeContacts(nina, omar);
    await makeContacts(pat, omar);
    const first = await connectCall(nina, omar, { offer, answer }); // owned by n1
    const second = randomUUID();
    await pat.client.request('call.invite', { callId: second, callee: 'omar', envelope: offer }); // taken by n3
    expect((await pat.client.nextNotification('call.ended', { callId: second })).reason).toBe('busy');
    await omar.client.expectNoNotification('call.incoming', { callId: second });
    await nina.client.request('call.hangup', { callId: first });
    await omar.client.nextNotification('call.ended', { callId: first });
    // Free again once that call ended.
    await expect
      .poll(async () => {
        const id = randomUUID();
        await pat.client.request('call.invite', { callId: id, callee: 'omar', envelope: offer });
        const incoming = await omar.client.nextNotification('call.incoming', { callId: id }, 1000).then(() => true, () => false);
        await pat.client.request('call.cancel', { callId: id }).catch(() => {});
        return incoming;
      }, { timeout: 5000 })
      .toBe(true);
    await closeAll(nina, omar, pat);
  });

  it('holds an account’s call rate across nodes (one bucket in Redis, not one per node)', async () => {
    const [n1, n2, n3] = nodes as [RunningServer, RunningServer, RunningServer];
    const quinn = await signIn(n1, 'quinn');
    const rosa = await signIn(n3, 'rosa');
    await makeContacts(quinn, rosa);
    await rosa.client.request('settings.set', { contactsOnly: false });
    const quinn2 = await secondDevice(n2, quinn);
    // call_burst = 4: two invites through each node use the account's four tokens…
    for (const device of [quinn, quinn2, quinn, quinn2]) {
      const callId = randomUUID();
      await device.client.request('call.invite', { callId, callee: 'rosa', envelope: offer });
      await device.client.request('call.cancel', { callId });
    }
    // …so a fifth is refused, whichever node takes it (per-node buckets would still have two each).
    const refused = await quinn2.client
      .request('call.invite', { callId: randomUUID(), callee: 'rosa', envelope: offer })
      .then(() => undefined, (e: { reason?: string }) => e.reason);
    expect(refused).toBe('rate_limited');
    await closeAll(quinn, quinn2, rosa);
  });

  it('calls set up after a Redis restart work', async () => {
    const [n1, , n3] = nodes as [RunningServer, RunningServer, RunningServer];
    const ivan = await signIn(n1, 'ivan');
    const jane = await signIn(n3, 'jane');
    await makeContacts(ivan, jane);
    // Redis is killed and comes back empty. What is lost: any message published
    // while a node's subscriber was cut off (pub/sub is at-most-once) and every
    // key (presence, call records); the nodes write their presence and call
    // records again on reconnecting, and each keeps its mirror of the others'
    // devices in memory meanwhile.
    const restarting = redis.restart({ downMs: 1500 });
    // While it is down, a node says so on /readyz; once it is back, it is ready again.
    await expect.poll(async () => (await httpJson(n1.url, 'GET', '/readyz')).body, { timeout: 5000, interval: 100 }).toEqual({
      ready: false,
      reason: 'redis unreachable',
    });
    await restarting;
    await Promise.all(nodes.map((n) => n.waitForLog((l) => l.msg === 'redis reconnected; announcing this node again', 15_000)));
    await expect.poll(async () => (await httpJson(n1.url, 'GET', '/readyz')).body, { timeout: 5000 }).toEqual({ ready: true });
    const callId = randomUUID();
    await expect
      .poll(
        async () => {
          await ivan.client.request('call.invite', { callId: randomUUID(), callee: 'jane', envelope: offer }).then(
            (r) => ivan.client.request('call.cancel', { callId: r.callId }),
          );
          return true;
        },
        { timeout: 10_000 },
      )
      .toBe(true);
    await ivan.client.request('call.invite', { callId, callee: 'jane', envelope: offer });
    // (drop the incoming of the poll's calls)
    for (;;) {
      const n = await jane.client.nextNotification('call.incoming');
      if (n.callId === callId) break;
    }
    await jane.client.request('call.answer', { callId, envelope: answer });
    await ivan.client.nextNotification('call.answered', { callId });
    await ivan.client.request('call.hangup', { callId });
    expect((await jane.client.nextNotification('call.ended', { callId })).reason).toBe('hangup');
    await closeAll(ivan, jane);
  });

  it('a node frozen past the dead-node timeout steps down when it wakes: its devices reconnect and the call resumes where it was taken over', async () => {
    const [n1, n2] = nodes as [RunningServer, RunningServer];
    const xia = await signIn(n2, 'xia');
    const yan = await signIn(n2, 'yan');
    await makeContacts(xia, yan);
    const callId = await connectCall(xia, yan, { offer, answer }); // owned by n2
    process.kill(n2.pid, 'SIGSTOP');
    try {
      // n1 or n3 finds n2 silent and takes its call over.
      await Promise.race(
        nodes.filter((n) => n !== n2).map((n) => n.waitForLog((l) => l.msg === 'node is dead; taking over its calls', 10_000)),
      );
    } finally {
      process.kill(n2.pid, 'SIGCONT');
    }
    // Awake, n2 learns it was taken for dead and closes its sockets instead of routing the call too.
    expect((await xia.client.closed).code).toBe(1012);
    expect((await yan.client.closed).code).toBe(1012);
    const xia2 = await SignalClient.connect(n1.wsUrl);
    const yan2 = await SignalClient.connect(n2.wsUrl);
    await xia2.request('hello', { protocol: PROTOCOL_VERSION, deviceId: xia.deviceId, token: xia.token, calls: [{ callId }] });
    await yan2.request('hello', { protocol: PROTOCOL_VERSION, deviceId: yan.deviceId, token: yan.token, calls: [{ callId }] });
    await Promise.race(
      nodes.filter((n) => n !== n2).map((n) => n.waitForLog((l) => l.msg === 'call resumed after restart' && l.callId === callId, 10_000)),
    );
    await yan2.request('call.hangup', { callId });
    expect((await xia2.nextNotification('call.ended', { callId })).reason).toBe('hangup');
    // Neither was told the call had ended while it waited to resume.
    expect(yan2.notifications().filter((n) => n.method === 'call.ended')).toEqual([]);
    expect(xia2.notifications().filter((n) => n.method === 'call.ended')).toHaveLength(1);
    await Promise.all([xia2.close(), yan2.close()]);
  });

  it('kill -9 of the node that owns a live call: both devices reconnect to other nodes, the call resumes and is hung up normally', async () => {
    const [n1, n2, n3] = nodes as [RunningServer, RunningServer, RunningServer];
    const kim = await signIn(n3, 'kim');
    const leo = await signIn(n3, 'leo');
    await makeContacts(kim, leo);
    const callId = await connectCall(kim, leo, { offer, answer });
    process.kill(n3.pid, 'SIGKILL');
    await Promise.all([kim.client.closed, leo.client.closed]);
    // Back through the two other nodes, each listing the call it still carries.
    const kim2 = await SignalClient.connect(n1.wsUrl);
    const leo2 = await SignalClient.connect(n2.wsUrl);
    await kim2.request('hello', { protocol: PROTOCOL_VERSION, deviceId: kim.deviceId, token: kim.token, calls: [{ callId }] });
    await leo2.request('hello', { protocol: PROTOCOL_VERSION, deviceId: leo.deviceId, token: leo.token, calls: [{ callId }] });
    // One of them finds n3 dead (no heartbeat for 3 s), takes its calls, and resumes this one.
    await Promise.race(
      [n1, n2].map((n) => n.waitForLog((l) => l.msg === 'call resumed after restart' && l.callId === callId, 15_000)),
    );
    await leo2.request('call.candidate', { callId, envelope: candidate('after') });
    expect((await kim2.nextNotification('call.candidate', { callId })).envelope).toEqual(candidate('after'));
    await leo2.request('call.hangup', { callId });
    expect((await kim2.nextNotification('call.ended', { callId })).reason).toBe('hangup');
    await kim2.expectNoNotification('call.ended', {}, 300);
    await Promise.all([kim2.close(), leo2.close()]);
  });

  it('a node that crashes and comes back under the same id takes its own calls back', async () => {
    const [n1, n2] = nodes as [RunningServer, RunningServer];
    const zed = await signIn(n1, 'zed');
    const amy = await signIn(n2, 'amy');
    await makeContacts(zed, amy);
    const callId = await connectCall(zed, amy, { offer, answer }); // owned by n1
    process.kill(n1.pid, 'SIGKILL');
    await zed.client.closed;
    const again = await startNode('n1', storeUrl); // whoever is first — n1 itself, or n2 finding it dead — takes the call
    nodes.push(again);
    const zed2 = await SignalClient.connect(again.wsUrl);
    await zed2.request('hello', { protocol: PROTOCOL_VERSION, deviceId: zed.deviceId, token: zed.token, calls: [{ callId }] });
    await Promise.race(
      [again, n2].map((n) => n.waitForLog((l) => l.msg === 'call resumed after restart' && l.callId === callId, 10_000)),
    );
    await amy.client.request('call.hangup', { callId });
    expect((await zed2.nextNotification('call.ended', { callId })).reason).toBe('hangup');
    expect(amy.client.notifications().filter((n) => n.method === 'call.ended')).toEqual([]);
    await Promise.all([zed2.close(), amy.client.close()]);
  });
});
