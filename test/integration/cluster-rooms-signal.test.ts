/**
 * Room signaling across cluster nodes at the protocol level (server/sfu/room-proxy.ts):
 * three nodes on one PostgreSQL and one Redis, participants signed in on
 * different nodes, mediasoup-client over werift (test/harness/sfu-client.ts)
 * sending tones through the one real SFU that carries the room.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomParticipant } from '../../common/protocol/sfu';
import { DeviceIdentity } from '../../main/core/e2ee';
import { waitFor } from '../harness/process';
import { startRedis, type RunningRedis } from '../harness/redis';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { SfuParticipant } from '../harness/sfu-client';
import { makeContacts, signIn, type SignedInDevice } from '../harness/signal-client';
import { createTestDatabase } from '../harness/store';

let redis: RunningRedis;
const nodes: RunningServer[] = [];
let n = 0;
const who = (d: SignedInDevice): RoomParticipant => ({ accountId: d.accountId, username: d.username, deviceId: d.deviceId });

beforeAll(async () => {
  redis = await startRedis();
  const storeUrl = await createTestDatabase();
  const node = (id: string, i: number) =>
    startServer({
      env: {
        PARLEY_STORE_URL: storeUrl,
        PARLEY_CLUSTER_REDIS_URL: redis.url,
        PARLEY_NODE_ID: id,
        PARLEY_SFU_WORKERS: '1',
        // A closed socket keeps its place for this grace (room.resume), then leaves: 1 s keeps the tests short.
        PARLEY_SFU_RECONNECT_GRACE: '1',
        PARLEY_SFU_MIN_PORT: String(45000 + i * 500),
        PARLEY_SFU_MAX_PORT: String(45499 + i * 500),
      },
    });
  nodes.push(await node('n1', 0));
  nodes.push(...(await Promise.all([node('n2', 1), node('n3', 2)])));
});
afterAll(async () => {
  await Promise.allSettled(nodes.map((x) => x.stop()));
  await redis?.stop();
});

describe('a room used from other nodes', () => {
  it('proxies join, notifications, media set-up and key look-ups to the room’s node; a closed socket leaves the room there', async () => {
    const [n1, n2, n3] = nodes as [RunningServer, RunningServer, RunningServer];
    const ann = await signIn(n1, `ann${++n}`);
    const bo = await signIn(n2, `bo${n}`);
    const cy = await signIn(n3, `cy${n}`);
    // Only invited accounts may join by id: ann rings bo and cy in (their nodes deliver the ring).
    await makeContacts(ann, bo);
    await makeContacts(ann, cy);
    const { roomId } = await ann.client.request('room.create', { invite: [bo.username, cy.username] });
    const pa = await SfuParticipant.join(ann.client, roomId, who(ann));
    const pb = await SfuParticipant.join(bo.client, roomId, who(bo));
    const pc = await SfuParticipant.join(cy.client, roomId, who(cy));
    // Notifications from the room's node reach participants on the other nodes.
    expect((await bo.client.nextNotification('room.participant_joined', {})).participant.deviceId).toBe(cy.deviceId);
    expect((await ann.client.nextNotification('room.participant_joined', {})).participant.deviceId).toBe(bo.deviceId);
    // Only n1 carries the room: its SFU made every transport (announced on n1's own port range).
    expect(nodes.map((x) => x.logLines().filter((l) => l.msg === 'room created').length)).toEqual([1, 0, 0]);

    await pa.produceSine({ frequencyHz: 440, levelDbov: 10 });
    await pb.produceSine({ frequencyHz: 700, levelDbov: 30 });
    await waitFor('bo and cy to learn of the producers', () => pb.producersKnown() >= 1 && pc.producersKnown() >= 2, 5000);
    await Promise.all([pa.consumeAll(), pb.consumeAll(), pc.consumeAll()]);
    await waitFor(
      '50 packets across nodes',
      () => pc.packetsFrom(ann.deviceId).length >= 50 && pc.packetsFrom(bo.deviceId).length >= 50 && pa.packetsFrom(bo.deviceId).length >= 50,
      10_000,
    );

    // A device in a room with ann (on another node) may fetch her device keys, to seal its sender key to them;
    // a stranger outside the room may not (they are not contacts).
    await ann.client.request('keys.publish', { bundle: DeviceIdentity.ephemeral(ann.username, ann.deviceId).bundle });
    const dan = await signIn(n2, `dan${n}`);
    await expect(dan.client.request('keys.get', { username: ann.username })).rejects.toThrow(/only takes calls from contacts/);
    await dan.client.close();
    const keys = await cy.client.request('keys.get', { username: ann.username });
    expect(keys.devices.map((d) => d.deviceId)).toContain(ann.deviceId);

    // An unknown room is not_found on any node; a malformed request is refused there, unproxied.
    await expect(bo.client.request('room.join', { roomId: '00000000-0000-4000-8000-000000000000' })).rejects.toMatchObject({ reason: 'not_found' });

    // bo's socket closes on n2: n1 keeps his place for the grace (the others hear he is away), then removes him.
    pb.close();
    await bo.client.close();
    const away = await cy.client.nextNotification('room.participant_away', {});
    expect([away.participant.deviceId, away.away]).toEqual([bo.deviceId, true]);
    expect((await cy.client.nextNotification('room.participant_left', {})).participant.deviceId).toBe(bo.deviceId);
    pa.close();
    pc.close();
    await Promise.all([ann.client.close(), cy.client.close()]);
  });

  it('cluster-wide admin lists and metrics: rooms.list and calls.list with cluster:true, and /metrics sums over nodes', async () => {
    const [n1, n2, n3] = nodes as [RunningServer, RunningServer, RunningServer];
    // The first test's participants closed their sockets: their places go after the 1 s grace.
    await waitFor(
      'the first test’s places to be given up',
      async () => (await adminRequest<{ rooms: { participants: unknown[] }[] }>(n1.adminSocket, 'rooms.list')).rooms.every((r) => r.participants.length === 0),
      5000,
      100,
    );
    const ann = await signIn(n1, `ann${++n}`);
    const bo = await signIn(n2, `bo${n}`);
    const cy = await signIn(n3, `cy${n}`);
    await makeContacts(ann, cy);
    const r1 = (await ann.client.request('room.create', { invite: [cy.username] })).roomId;
    const r2 = (await bo.client.request('room.create', {})).roomId;
    await ann.client.request('room.join', { roomId: r1 });
    await cy.client.request('room.join', { roomId: r1 });
    await bo.client.request('room.join', { roomId: r2 });
    // Each node's own list has its own room only; with cluster:true any node lists both, naming the node.
    // (The first test's room, empty now, is still open on n1 until its empty-room timeout.)
    expect((await adminRequest<{ rooms: { roomId: string }[] }>(n3.adminSocket, 'rooms.list')).rooms).toEqual([]);
    const all = await adminRequest<{ rooms: { roomId: string; node: string; participants: unknown[] }[]; missing: string[] }>(n3.adminSocket, 'rooms.list', { cluster: true });
    expect(all.missing).toEqual([]);
    const mine = all.rooms.filter((r) => r.roomId === r1 || r.roomId === r2);
    expect(all.rooms.filter((r) => r.participants.length > 0)).toEqual(mine);
    expect(mine.map((r) => [r.node, r.roomId, r.participants.length]).sort()).toEqual(
      [
        ['n1', r1, 2],
        ['n2', r2, 1],
      ].sort(),
    );
    const calls = await adminRequest<{ calls: unknown[]; missing: string[] }>(n2.adminSocket, 'calls.list', { cluster: true });
    expect(calls).toEqual({ calls: [], missing: [] });
    // Any node's /metrics sums the live nodes' counts (written with each 1 s heartbeat).
    const sample = async (name: string) => {
      const text = await (await fetch(new URL('/metrics', n2.url))).text();
      return Number(text.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ')[1]);
    };
    // (Each node's counts are as of its last heartbeat: wait for the ones after the joins.)
    await waitFor(
      'the cluster gauges to count every node, device and participant',
      async () =>
        // (rooms too: the first test's 3 participants, gone now, can still be in n1's last heartbeat)
        (await sample('parley_cluster_sfu_rooms')) === all.rooms.length &&
        (await sample('parley_cluster_sfu_participants')) === 3 &&
        (await sample('parley_cluster_nodes')) === 3 &&
        (await sample('parley_cluster_connected_devices')) >= 3,
      5000,
      200,
    );
    expect(await sample('parley_cluster_sfu_rooms')).toBe(all.rooms.length);
    expect(await sample('parley_sfu_rooms')).toBe(1); // n2's own
    await Promise.all([ann.client.close(), bo.client.close(), cy.client.close()]);
  });

  it('group ringing across nodes: a device signing in on another node rings; how the ring ended reaches participants on other nodes (room.invite_ended)', async () => {
    const [n1, n2, n3] = nodes as [RunningServer, RunningServer, RunningServer];
    const ann = await signIn(n1, `ann${++n}`);
    const bo = await signIn(n2, `bo${n}`);
    const cy = await signIn(n3, `cy${n}`);
    await makeContacts(ann, bo);
    await makeContacts(ann, cy);
    // The room lives on n1; bo joins it from n2 (proxied), cy's phone rings on n3.
    const { roomId } = await ann.client.request('room.create', { invite: [bo.username, cy.username] });
    await ann.client.request('room.join', { roomId });
    await bo.client.request('room.join', { roomId });
    const first = await cy.client.nextNotification('room.ring', { roomId });
    // cy's laptop signs in on n2 during the ring: n1 hears its hello through the cluster and rings it.
    const cyLaptop = await signIn(n2, cy.username, { register: false, deviceName: 'laptop' });
    try {
      const late = await cyLaptop.client.nextNotification('room.ring', { roomId });
      expect(late.expiresAt).toBe(first.expiresAt);
      expect(new Set(late.participants)).toEqual(new Set([ann.username, bo.username]));
      // It declines: the phone stops, and both participants (n1 and, through the proxy, n2) hear it.
      await cyLaptop.client.request('room.decline', { roomId });
      expect(await cy.client.nextNotification('room.ring_cancelled', { roomId })).toEqual({ roomId, reason: 'declined_elsewhere' });
      const ended = { roomId, username: cy.username, reason: 'declined' };
      expect(await bo.client.nextNotification('room.invite_ended', { roomId })).toEqual(ended);
      // (ann heard bo's ring end first: joined)
      expect(await ann.client.nextNotification('room.invite_ended', { roomId })).toEqual({ roomId, username: bo.username, reason: 'joined' });
      expect(await ann.client.nextNotification('room.invite_ended', { roomId })).toEqual(ended);
    } finally {
      await adminRequest(n1.adminSocket, 'rooms.end', { roomId }).catch(() => {});
      await Promise.all([ann.client.close(), bo.client.close(), cy.client.close(), cyLaptop.client.close()]);
    }
  });

  it('sfu.max_rooms_per_account (3 by default) counts an account’s rooms on every node; a room that ends frees its place', async () => {
    const [n1, n2, n3] = nodes as [RunningServer, RunningServer, RunningServer];
    // One account with a device on each node: each creates a room on its own node.
    const name = `eve${++n}`;
    const e1 = await signIn(n1, name);
    const e2 = await signIn(n2, name, { register: false });
    const e3 = await signIn(n3, name, { register: false });
    const rooms: string[] = [];
    try {
      for (const d of [e1, e2, e3]) rooms.push((await d.client.request('room.create', {})).roomId);
      // n1 carries one of them only; the limit holds across the cluster all the same.
      const refused = await e1.client.request('room.create', {}).then(
        () => undefined,
        (e: { reason?: string; message?: string }) => e,
      );
      expect(refused).toMatchObject({ reason: 'policy', message: expect.stringMatching(/3 group calls open already/) });
      // The room on n2 ends: a place is free again, here on n1.
      await adminRequest(n2.adminSocket, 'rooms.end', { roomId: rooms[1] });
      // (once the cluster knows it ended: n1 answers a request for it room_ended)
      await waitFor(
        'n2’s room known ended on n1',
        () => e1.client.request('room.join', { roomId: rooms[1]! }).then(() => undefined, (e: { reason?: string }) => (e.reason === 'room_ended' ? true : undefined)),
        5000,
        100,
      );
      rooms.push((await e1.client.request('room.create', {})).roomId);
      expect(new Set(rooms).size).toBe(4);
    } finally {
      for (const [i, roomId] of rooms.entries()) await adminRequest(nodes[i === 3 ? 0 : i]!.adminSocket, 'rooms.end', { roomId }).catch(() => {});
      await Promise.all([e1.client.close(), e2.client.close(), e3.client.close()]);
    }
  });

  it('a room whose node froze past the dead-node timeout ends node_lost for everyone, there too when it wakes', async () => {
    const [n1, n2] = nodes as [RunningServer, RunningServer];
    const ann = await signIn(n1, `ann${++n}`);
    const bo = await signIn(n2, `bo${n}`);
    await makeContacts(ann, bo);
    const { roomId } = await ann.client.request('room.create', { invite: [bo.username] });
    await ann.client.request('room.join', { roomId });
    await bo.client.request('room.join', { roomId });
    process.kill(n1.pid, 'SIGSTOP');
    try {
      expect(await bo.client.nextNotification('room.ended', {}, 10_000)).toMatchObject({ reason: 'node_lost' });
      // A late request for it, on any live node, says why.
      await expect(bo.client.request('room.join', { roomId })).rejects.toMatchObject({ reason: 'room_ended', message: expect.stringContaining('node_lost') });
    } finally {
      process.kill(n1.pid, 'SIGCONT');
    }
    // Awake, n1 learns it was taken for dead: it ends its rooms (ann is told) and closes its sockets.
    expect(await ann.client.nextNotification('room.ended', {}, 10_000)).toMatchObject({ reason: 'node_lost' });
    expect((await ann.client.closed).code).toBe(1012);
    await bo.client.close();
  });
});
