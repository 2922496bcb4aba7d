/**
 * A group that rings, as a user of the headless client meets it: two real
 * daemons (`parley daemon`, the built CLI) of one account, each with its own
 * PulseAudio devices (the two-client layout), on the real signaling server
 * with its SFU (a real mediasoup worker). The host is a plain signed-in
 * device speaking the signaling protocol (test/harness/signal-client.ts), so
 * that the only audio in this file is the one join. What is checked is what
 * the daemons' controllers see: `room.ringing`, `room.ring_cancelled`,
 * `join_room` / `decline_room` / `list_room_rings`, and the CLI's
 * `parley room …` verbs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomRing, RoomStatus } from '../../common/protocol/control';
import { runParley, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { DEVICES, startPulse, type Pulse } from '../harness/pulse';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { signIn, type SignedInDevice } from '../harness/signal-client';

/** Ring timeout of the server, seconds (short, for the timeout case). */
const RING_SECONDS = 4;

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let host: SignedInDevice;
/** Bob's two devices: the second linked through the first, as `parley devices link` does. */
let bob1: RunningClient;
let bob2: RunningClient;

type Cancelled = { roomId: string; reason: string };
const cli = (c: RunningClient, args: string[]) => runParley(['room', ...args], { PARLEY_SOCKET: c.socket, PARLEY_DATA_DIR: c.dataDir });

beforeAll(async () => {
  [pulse, keyring] = await Promise.all([startPulse({ clients: 2 }), startKeyring()]);
  server = await startServer({ ringTimeoutSeconds: RING_SECONDS, env: { PARLEY_SFU_WORKERS: '1' } });
  const bob = `bob${Math.floor(Math.random() * 1e6)}`;
  bob1 = await startClient({ name: bob, server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: DEVICES.a.mic, output: DEVICES.a.speaker });
  bob2 = await startClient({
    name: bob,
    register: false,
    linkFrom: bob1,
    server,
    env: { ...pulse.clientEnv('b'), ...keyring.env },
    input: DEVICES.b.mic,
    output: DEVICES.b.speaker,
  });
  host = await signIn(server, `host${Math.floor(Math.random() * 1e6)}`);
  await host.client.request('contacts.request', { username: bob });
  await bob1.request('accept_contact', { username: host.username });
}, 120_000);

afterAll(async () => {
  await host?.client.close();
  await Promise.allSettled([bob1?.stop(), bob2?.stop()]);
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
});

describe('a group call rings every device of an invited contact', () => {
  it('both of bob’s devices ring; one answers and the other stops ringing (answered_elsewhere)', async () => {
    const { roomId } = await host.client.request('room.create', {});
    await host.client.request('room.join', { roomId });
    expect(await host.client.request('room.invite', { roomId, usernames: [bob1.name] })).toEqual({ invited: [bob1.name] });
    for (const d of [bob1, bob2]) {
      const ring = await d.waitForNotification<RoomRing>('room.ringing', (r) => r.roomId === roomId);
      expect(ring.inviter.username).toBe(host.username);
      expect(ring.participants).toEqual([host.username]);
    }
    // What the CLI shows of it.
    expect(await cli(bob2, ['rings'])).toContain(`room ${roomId}: ${host.username} invites you`);

    const joined = await bob1.request<RoomStatus>('join_room', {});
    expect(joined.state).toBe('joined');
    expect(joined.participants.map((p) => p.username).sort()).toEqual([bob1.name, host.username].sort());
    const stop = await bob2.waitForNotification<Cancelled>('room.ring_cancelled', (r) => r.roomId === roomId);
    expect(stop.reason).toBe('answered_elsewhere');
    expect(await bob2.request<RoomRing[]>('list_room_rings')).toEqual([]);
    // The host sees bob in the room.
    expect((await host.client.nextNotification('room.participant_joined', { roomId })).participant.username).toBe(bob1.name);
    await bob1.request('leave_room');
    await adminRequest(server.adminSocket, 'rooms.end', { roomId });
  }, 60_000);

  it('a decline on one device (the CLI) stops the other (declined_elsewhere); unanswered, both stop at the ring timeout', async () => {
    const { roomId } = await host.client.request('room.create', { invite: [bob1.name] });
    await host.client.request('room.join', { roomId });
    for (const d of [bob1, bob2]) await d.waitForNotification<RoomRing>('room.ringing', (r) => r.roomId === roomId);
    expect(await cli(bob2, ['decline'])).toContain(`declined room ${roomId}`);
    expect((await bob1.waitForNotification<Cancelled>('room.ring_cancelled', (r) => r.roomId === roomId)).reason).toBe('declined_elsewhere');
    await expect(bob1.request('decline_room', {})).rejects.toThrow(/no group call rings/);

    // Rung again, nobody answers: both stop at the ring timeout (the same as 1:1).
    expect(await host.client.request('room.invite', { roomId, usernames: [bob1.name] })).toEqual({ invited: [bob1.name] });
    const t0 = Date.now();
    const stops = await Promise.all(
      [bob1, bob2].map((d) =>
        d.waitForNotification<Cancelled>('room.ring_cancelled', (r) => r.roomId === roomId && r.reason === 'timeout', (RING_SECONDS + 5) * 1000),
      ),
    );
    expect(stops.map((s) => s.reason)).toEqual(['timeout', 'timeout']);
    expect(Date.now() - t0).toBeGreaterThan((RING_SECONDS - 1) * 1000);
    await adminRequest(server.adminSocket, 'rooms.end', { roomId });
  }, 60_000);

  it('a contact who blocked the host is never rung; the room ending stops a ring (room_ended)', async () => {
    const { roomId } = await host.client.request('room.create', { invite: [bob1.name] });
    await host.client.request('room.join', { roomId });
    await bob2.waitForNotification<RoomRing>('room.ringing', (r) => r.roomId === roomId);
    await adminRequest(server.adminSocket, 'rooms.end', { roomId });
    for (const d of [bob1, bob2]) {
      expect((await d.waitForNotification<Cancelled>('room.ring_cancelled', (r) => r.roomId === roomId)).reason).toBe('room_ended');
    }

    await bob1.request('block_contact', { username: host.username });
    const before = bob2.notifications.filter((x) => x.method === 'room.ringing').length;
    await expect(host.client.request('room.create', { invite: [bob1.name] })).rejects.toMatchObject({ reason: 'forbidden' });
    await new Promise((r) => setTimeout(r, 500));
    expect(bob2.notifications.filter((x) => x.method === 'room.ringing').length).toBe(before);
    await bob1.request('unblock_contact', { username: host.username });
  }, 60_000);

  it('a call link through the daemon: an expired one is refused, and one that needs approval waits for the host, who denies', async () => {
    const { roomId } = await host.client.request('room.create', {});
    await host.client.request('room.join', { roomId });
    const short = await host.client.request('room.link.create', { roomId, expiresInSeconds: 1 });
    await new Promise((r) => setTimeout(r, 1200));
    await expect(bob2.request('join_room', { link: short.url })).rejects.toThrow(/call link expired/);
    await expect(bob2.request('join_room', { link: 'parley://room/nope' })).rejects.toThrow(/not a call link/);

    const link = await host.client.request('room.link.create', { roomId, approval: true });
    const joining = bob2.request('join_room', { link: link.url }).then(
      () => 'joined',
      (e: Error) => e.message,
    );
    const knock = await host.client.nextNotification('room.knock', { roomId });
    expect(knock.from.username).toBe(bob2.name);
    await host.client.request('room.admit', { roomId, knockId: knock.knockId, admit: false });
    expect(await joining).toMatch(/did not let you into the call/);
    await adminRequest(server.adminSocket, 'rooms.end', { roomId });
  }, 60_000);
});
