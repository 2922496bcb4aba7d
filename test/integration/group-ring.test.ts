/**
 * A group that rings, as a user of the headless client meets it: two real
 * daemons (`parley daemon`, the built CLI) of one account, each with its own
 * PulseAudio devices (the two-client layout), on the real signaling server
 * with its SFU (a real mediasoup worker). The host is a plain signed-in
 * device speaking the signaling protocol (test/harness/signal-client.ts), so
 * that the only audio in this file is the one join. What is checked is what
 * the daemons' controllers see: `room.ringing`, `room.ring_cancelled`,
 * `room.invite_ended` (bob as the inviter), `join_room` / `decline_room` /
 * `list_room_rings`, and the CLI's `parley room …` verbs; and what devices
 * that come online during a ring are sent (`room.ring`).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomRing, RoomStatus } from '../../common/protocol/control';
import { runParley, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { DEVICES, startPulse, type Pulse } from '../harness/pulse';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { makeContacts, offlineContact, signIn, type SignedInDevice } from '../harness/signal-client';

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
type InviteEnded = { roomId: string; username: string; reason: string };
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

describe('the inviter hears how each invitation ended', () => {
  it('bob’s daemon rings the host: a decline reaches bob as room.invite_ended declined, an unanswered ring as timeout', async () => {
    // Bob (a daemon) starts the group call and rings the host, who declines.
    const created = await bob1.request<RoomStatus>('create_room', { invite: [host.username] });
    const roomId = created.roomId;
    try {
      await host.client.nextNotification('room.ring', { roomId });
      await host.client.request('room.decline', { roomId });
      const declined = await bob1.waitForNotification<InviteEnded>('room.invite_ended', (e) => e.roomId === roomId);
      expect(declined).toEqual({ roomId, username: host.username, reason: 'declined' });

      // Rung again, the host does not answer: bob hears `timeout` once the ring timeout is over.
      expect(await bob1.request('invite_to_room', { to: host.username })).toEqual({ invited: [host.username] });
      const t0 = Date.now();
      await host.client.nextNotification('room.ring', { roomId });
      const timedOut = await bob1.waitForNotification<InviteEnded>(
        'room.invite_ended',
        (e) => e.roomId === roomId && e.reason !== 'declined',
        (RING_SECONDS + 5) * 1000,
      );
      expect(timedOut).toEqual({ roomId, username: host.username, reason: 'timeout' });
      expect(Date.now() - t0).toBeGreaterThan((RING_SECONDS - 1) * 1000);
      expect(await host.client.nextNotification('room.ring_cancelled', { roomId })).toEqual({ roomId, reason: 'timeout' });
      // One notification per ring, none to the invitee.
      expect(bob1.notifications.filter((n) => n.method === 'room.invite_ended' && (n.params as InviteEnded).roomId === roomId)).toHaveLength(2);
      expect(host.client.notifications().filter((n) => n.method === 'room.invite_ended' && (n.params as InviteEnded).roomId === roomId)).toHaveLength(0);
    } finally {
      await bob1.request('leave_room').catch(() => {});
      await adminRequest(server.adminSocket, 'rooms.end', { roomId }).catch(() => {});
    }
  }, 60_000);
});

describe('a device that comes online while a group call rings for its account rings too', () => {
  it('a second device signing in mid-ring gets room.ring (same expiresAt); joining from it stops the first (answered_elsewhere); the host hears joined', async () => {
    const name = `cy${Math.floor(Math.random() * 1e6)}`;
    const cy1 = await signIn(server, name);
    await makeContacts(host, cy1);
    const { roomId } = await host.client.request('room.create', { invite: [name] });
    await host.client.request('room.join', { roomId });
    const first = await cy1.client.nextNotification('room.ring', { roomId });

    // The laptop is opened during the ring: a new device of the same account says hello.
    const cy2 = await signIn(server, name, { register: false, deviceName: 'laptop' });
    try {
      const late = await cy2.client.nextNotification('room.ring', { roomId });
      expect(late).toEqual({ roomId, inviter: first.inviter, participants: [host.username], expiresAt: first.expiresAt });
      expect(late.expiresAt).toBeGreaterThan(Date.now());

      await cy2.client.request('room.join', { roomId });
      expect(await cy1.client.nextNotification('room.ring_cancelled', { roomId })).toEqual({ roomId, reason: 'answered_elsewhere' });
      expect(await host.client.nextNotification('room.invite_ended', { roomId })).toEqual({ roomId, username: name, reason: 'joined' });
    } finally {
      await adminRequest(server.adminSocket, 'rooms.end', { roomId }).catch(() => {});
      await Promise.allSettled([cy1.client.close(), cy2.client.close()]);
    }
  }, 30_000);

  it('an invitee with no device online still rings for the ring timeout: a device signing in rings, and without an answer the host hears timeout', async () => {
    const name = `dy${Math.floor(Math.random() * 1e6)}`;
    await offlineContact(server, host, name);
    const { roomId } = await host.client.request('room.create', { invite: [name] });
    await host.client.request('room.join', { roomId });
    const dy = await signIn(server, name, { register: false });
    try {
      const ring = await dy.client.nextNotification('room.ring', { roomId });
      expect(ring.inviter.username).toBe(host.username);
      expect(await dy.client.nextNotification('room.ring_cancelled', { roomId }, (RING_SECONDS + 3) * 1000)).toEqual({ roomId, reason: 'timeout' });
      expect(await host.client.nextNotification('room.invite_ended', { roomId })).toEqual({ roomId, username: name, reason: 'timeout' });
      // Signing in after the ring is over rings nothing.
      const dy2 = await signIn(server, name, { register: false });
      await dy2.client.expectNoNotification('room.ring', {}, 500);
      await dy2.client.close();
    } finally {
      await adminRequest(server.adminSocket, 'rooms.end', { roomId }).catch(() => {});
      await dy.client.close();
    }
  }, 30_000);
});
