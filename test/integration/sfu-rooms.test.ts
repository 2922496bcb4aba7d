/**
 * Rooms as users know them (issue 14 item 2), server side: a group that
 * rings, call links with expiry and the host's approval, and the policy of
 * rooms — against the real signaling server with its SFU (a real mediasoup
 * worker) on loopback and real signed-in devices over its WebSocket
 * (test/harness/signal-client.ts). Joining here is `room.join` only (no
 * media): the audio through rooms is covered by sfu.test.ts and
 * group-call.test.ts.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ParleyError } from '../../common/errors';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { makeContacts, signIn, type SignedInDevice } from '../harness/signal-client';

/** Ring timeout of the shared server, seconds (short, so the timeout test is quick). */
const RING_SECONDS = 3;

let server: RunningServer;
let n = 0;

/** A fresh account with one signed-in device. */
async function account(on: RunningServer, name: string): Promise<SignedInDevice> {
  n += 1;
  return signIn(on, `${name}${n}${Math.floor(Math.random() * 1e6)}`);
}
/** Another device of `d`'s account, signed in and connected. */
function secondDevice(on: RunningServer, d: SignedInDevice): Promise<SignedInDevice> {
  return signIn(on, d.username, { register: false, deviceName: 'second' });
}

/** The request's ParleyError (fails the test when it succeeds). */
async function refusal(p: Promise<unknown>): Promise<ParleyError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ParleyError) return e;
    throw e;
  }
  throw new Error('expected the request to be refused');
}

/** How many notifications `method` (for `roomId`) the device received so far. */
function count(d: SignedInDevice, method: string, roomId: string): number {
  return d.client.notifications().filter((x) => x.method === method && (x.params as { roomId?: string }).roomId === roomId).length;
}

type AuditRow = { event: string; accountId: string | null; deviceId: string | null; detail: Record<string, unknown> | null };
/** The audit rows of `roomId` (those with detail.roomId), oldest first. */
async function auditOf(on: RunningServer, roomId: string, events: string[]): Promise<AuditRow[]> {
  const r = await adminRequest<{ events: AuditRow[] }>(on.adminSocket, 'audit.query', { event: events });
  return r.events.filter((e) => e.detail?.roomId === roomId);
}

beforeAll(async () => {
  const bin = process.env.MEDIASOUP_WORKER_BIN;
  if (!bin || !existsSync(bin)) throw new Error('no mediasoup worker: run the tests through scripts/with-node.sh (MEDIASOUP_WORKER_BIN)');
  server = await startServer({ ringTimeoutSeconds: RING_SECONDS, env: { PARLEY_SFU_WORKERS: '1', PARLEY_LOG_LEVEL: 'debug' } });
});
afterAll(async () => {
  await server?.stop();
});

describe('a group that rings', () => {
  it('rings every device of each invitee; one device joining stops the other (answered_elsewhere); the inviter is told who was rung', async () => {
    const host = await account(server, 'host');
    const bob = await account(server, 'bob');
    await makeContacts(host, bob);
    const bob2 = await secondDevice(server, bob);
    const hostPhone = await secondDevice(server, host);

    const created = await host.client.request('room.create', { invite: [bob.username] });
    expect(created.invited).toEqual([bob.username]);
    const { roomId } = created;
    const before = Date.now();
    for (const d of [bob, bob2]) {
      const ring = await d.client.nextNotification('room.ring', { roomId });
      expect(ring.inviter).toEqual({ accountId: host.accountId, username: host.username, deviceId: host.deviceId });
      expect(ring.participants).toEqual([]);
      expect(ring.expiresAt).toBeGreaterThan(before + (RING_SECONDS - 1) * 1000);
      expect(ring.expiresAt).toBeLessThanOrEqual(Date.now() + RING_SECONDS * 1000);
    }
    // The inviter's own devices do not ring.
    expect(count(hostPhone, 'room.ring', roomId)).toBe(0);

    await host.client.request('room.join', { roomId });
    await bob.client.request('room.join', { roomId });
    expect(await bob2.client.nextNotification('room.ring_cancelled', { roomId })).toEqual({ roomId, reason: 'answered_elsewhere' });
    // The device that joined is not told to stop (it answered), and nothing more comes later.
    await new Promise((r) => setTimeout(r, (RING_SECONDS + 0.5) * 1000));
    expect(count(bob, 'room.ring_cancelled', roomId)).toBe(0);
    expect(count(bob2, 'room.ring_cancelled', roomId)).toBe(1);
    // Bob's second device may still join by id (its account was invited).
    await bob2.client.request('room.join', { roomId });

    // A later invite from a participant rings the newcomer and names who is in the room.
    const cy = await account(server, 'cy');
    await makeContacts(bob, cy);
    expect(await bob.client.request('room.invite', { roomId, usernames: [cy.username, host.username] })).toEqual({ invited: [cy.username] });
    const ring = await cy.client.nextNotification('room.ring', { roomId });
    expect(new Set(ring.participants)).toEqual(new Set([host.username, bob.username]));
    expect(ring.inviter.deviceId).toBe(bob.deviceId);
    for (const d of [host, hostPhone, bob, bob2, cy]) await d.client.close();
  }, 30_000);

  it('a decline on one device stops the others (declined_elsewhere); a ring nobody answers stops at the ring timeout; the end of the room stops every ring', async () => {
    const host = await account(server, 'dh');
    const [dan, eve] = [await account(server, 'dan'), await account(server, 'eve')];
    await makeContacts(host, dan);
    await makeContacts(host, eve);
    const dan2 = await secondDevice(server, dan);
    const { roomId } = await host.client.request('room.create', { invite: [dan.username, eve.username] });
    await host.client.request('room.join', { roomId });
    await dan.client.nextNotification('room.ring', { roomId });
    await dan2.client.nextNotification('room.ring', { roomId });
    await eve.client.nextNotification('room.ring', { roomId });

    await dan2.client.request('room.decline', { roomId });
    expect(await dan.client.nextNotification('room.ring_cancelled', { roomId })).toEqual({ roomId, reason: 'declined_elsewhere' });
    expect((await refusal(dan.client.request('room.decline', { roomId }))).reason).toBe('not_found');

    // Eve does nothing: her ring stops at the ring timeout (the 1:1 one).
    const t0 = Date.now();
    expect(await eve.client.nextNotification('room.ring_cancelled', { roomId }, (RING_SECONDS + 3) * 1000)).toEqual({ roomId, reason: 'timeout' });
    expect(Date.now() - t0).toBeLessThan((RING_SECONDS + 2) * 1000);

    // Ring her again, then end the room: room_ended.
    expect(await host.client.request('room.invite', { roomId, usernames: [eve.username] })).toEqual({ invited: [eve.username] });
    await eve.client.nextNotification('room.ring', { roomId });
    await adminRequest(server.adminSocket, 'rooms.end', { roomId });
    expect(await eve.client.nextNotification('room.ring_cancelled', { roomId })).toEqual({ roomId, reason: 'room_ended' });

    const rows = await auditOf(server, roomId, ['room.invited', 'room.declined', 'room.joined', 'room.left', 'room.ended']);
    expect(rows.map((r) => r.event)).toEqual(expect.arrayContaining(['room.invited', 'room.declined', 'room.joined', 'room.left', 'room.ended']));
    expect(rows.find((r) => r.event === 'room.declined')?.deviceId).toBe(dan2.deviceId);
    expect(rows.find((r) => r.event === 'room.joined')?.detail).toMatchObject({ via: 'host' });
    for (const d of [host, dan, dan2, eve]) await d.client.close();
  }, 30_000);

  it('everyone leaving before the ring was answered stops it (cancelled), as a caller hanging up; the invitee may still join', async () => {
    const host = await account(server, 'ch');
    const fay = await account(server, 'fay');
    await makeContacts(host, fay);
    const { roomId } = await host.client.request('room.create', { invite: [fay.username] });
    await host.client.request('room.join', { roomId });
    await fay.client.nextNotification('room.ring', { roomId });
    await host.client.request('room.leave', { roomId });
    expect(await fay.client.nextNotification('room.ring_cancelled', { roomId })).toEqual({ roomId, reason: 'cancelled' });
    // The room is open until its empty-room timeout: the invited account may still come in.
    expect((await fay.client.request('room.join', { roomId })).roomId).toBe(roomId);
    for (const d of [host, fay]) await d.client.close();
  }, 20_000);

  it('a stranger cannot join by id; blocks work both ways; a non-contact cannot be rung; a full room refuses more invitees', async () => {
    const host = await account(server, 'sh');
    const [fay, gus, stranger] = [await account(server, 'fay'), await account(server, 'gus'), await account(server, 'str')];
    await makeContacts(host, fay);
    await makeContacts(host, gus);
    const { roomId } = await host.client.request('room.create', { maxParticipants: 2 });
    await host.client.request('room.join', { roomId });

    const out = await refusal(stranger.client.request('room.join', { roomId }));
    expect(out.reason).toBe('forbidden');
    expect(out.message).toMatch(/not invited/);
    // No contact (contacts-only is the default): not_contact, nothing rings.
    expect((await refusal(host.client.request('room.invite', { roomId, usernames: [stranger.username] }))).reason).toBe('not_contact');
    expect((await refusal(host.client.request('room.invite', { roomId, usernames: ['nobody-by-this-name'] }))).reason).toBe('unknown_user');
    // Only a participant may invite.
    expect((await refusal(fay.client.request('room.invite', { roomId, usernames: [gus.username] }))).reason).toBe('invalid_state');

    // Gus blocks the host: the host can no longer ring gus; and the host, having blocked fay, cannot ring fay.
    await gus.client.request('contacts.block', { username: host.username });
    const blocked = await refusal(host.client.request('room.invite', { roomId, usernames: [gus.username] }));
    expect(blocked.reason).toBe('forbidden');
    await host.client.request('contacts.block', { username: fay.username });
    const blocker = await refusal(host.client.request('room.invite', { roomId, usernames: [fay.username] }));
    expect(blocker.reason).toBe('forbidden');
    expect(blocker.message).toMatch(/unblock/);
    await new Promise((r) => setTimeout(r, 300));
    expect(count(gus, 'room.ring', roomId)).toBe(0);
    expect(count(fay, 'room.ring', roomId)).toBe(0);
    expect(count(stranger, 'room.ring', roomId)).toBe(0);

    // Room of 2 with the host in it: one more rings, a second does not fit.
    await host.client.request('contacts.unblock', { username: fay.username });
    const hal = await account(server, 'hal');
    await makeContacts(host, hal);
    expect(await host.client.request('room.invite', { roomId, usernames: [fay.username] })).toEqual({ invited: [fay.username] });
    const full = await refusal(host.client.request('room.invite', { roomId, usernames: [hal.username] }));
    expect(full.reason).toBe('room_full');
    await fay.client.request('room.join', { roomId });

    const refusedRows = await auditOf(server, roomId, ['room.refused']);
    expect(refusedRows.map((r) => r.detail?.reason)).toEqual(expect.arrayContaining(['forbidden', 'not_contact', 'room_full']));
    for (const d of [host, fay, gus, stranger, hal]) await d.client.close();
  }, 30_000);
});

describe('call links', () => {
  it('a link lets a stranger in; an expired or revoked link is refused with a clear error; the token never reaches the logs or the audit', async () => {
    const host = await account(server, 'lh');
    const [ivy, jo, kim] = [await account(server, 'ivy'), await account(server, 'jo'), await account(server, 'kim')];
    const { roomId } = await host.client.request('room.create', {});
    // Only a participant may make a link.
    expect((await refusal(host.client.request('room.link.create', { roomId }))).reason).toBe('invalid_state');
    await host.client.request('room.join', { roomId });
    const link = await host.client.request('room.link.create', { roomId });
    expect(link.approval).toBe(false);
    // A day by default, but never past the room's end (its lifetime: 4 h by default).
    expect(link.expiresAt).toBeGreaterThan(Date.now() + 3.9 * 3600_000);
    expect(link.expiresAt).toBeLessThanOrEqual(Date.now() + 4 * 3600_000);
    const m = /^parley:\/\/room\/([0-9a-f-]{36})\?t=([A-Za-z0-9_-]{43})$/.exec(link.url);
    expect(m?.[1]).toBe(roomId);
    const token = m![2]!;

    // A stranger: by id alone no, with the link yes (and by id afterwards, once let in).
    expect((await refusal(ivy.client.request('room.join', { roomId }))).reason).toBe('forbidden');
    const joined = await ivy.client.request('room.join', { roomId, link: token });
    expect(joined.participants.map((p) => p.deviceId)).toEqual([host.deviceId]);
    // A wrong token is not a key to another room.
    const other = await jo.client.request('room.create', {});
    expect((await refusal(host.client.request('room.join', { roomId: other.roomId, link: token }))).message).toMatch(/not valid for this room/);

    // Expiry: a link of 1 s.
    const short = await host.client.request('room.link.create', { roomId, expiresInSeconds: 1 });
    await new Promise((r) => setTimeout(r, 1300));
    const expired = await refusal(jo.client.request('room.join', { roomId, link: short.url.split('t=')[1]! }));
    expect(expired.reason).toBe('forbidden');
    expect(expired.message).toMatch(/expired/);
    // Revoked.
    const revoked = await host.client.request('room.link.create', { roomId });
    await host.client.request('room.link.revoke', { roomId, linkId: revoked.linkId });
    const r = await refusal(kim.client.request('room.join', { roomId, link: revoked.url.split('t=')[1]! }));
    expect(r.reason).toBe('forbidden');
    expect(r.message).toMatch(/revoked/);
    expect((await refusal(host.client.request('room.link.revoke', { roomId, linkId: revoked.linkId }))).reason).toBe('not_found');

    const rows = await auditOf(server, roomId, ['room.link_created', 'room.link_used', 'room.link_revoked', 'room.joined']);
    expect(rows.filter((x) => x.event === 'room.link_created').length).toBe(3);
    expect(rows.find((x) => x.event === 'room.link_used')).toMatchObject({ accountId: ivy.accountId, detail: { linkId: link.linkId } });
    expect(rows.find((x) => x.event === 'room.joined' && x.accountId === ivy.accountId)?.detail).toMatchObject({ via: 'link' });
    // The secret part of a link appears nowhere the operator can read.
    for (const t of [token, short.url.split('t=')[1]!, revoked.url.split('t=')[1]!]) {
      expect(server.stdout()).not.toContain(t);
      expect(server.stderr()).not.toContain(t);
      expect(JSON.stringify(rows)).not.toContain(t);
    }
    for (const d of [host, ivy, jo, kim]) await d.client.close();
  }, 30_000);

  it('a link that needs approval: the knock reaches the host, who admits one and denies another', async () => {
    const host = await account(server, 'ah');
    const hostTablet = await secondDevice(server, host);
    const [lea, max] = [await account(server, 'lea'), await account(server, 'max')];
    const { roomId } = await host.client.request('room.create', {});
    await host.client.request('room.join', { roomId });
    const link = await host.client.request('room.link.create', { roomId, approval: true });
    const token = link.url.split('t=')[1]!;

    // Joining straight through the link is not enough.
    const direct = await refusal(lea.client.request('room.join', { roomId, link: token }));
    expect(direct.reason).toBe('forbidden');
    expect(direct.message).toMatch(/knock/);

    const knock = await lea.client.request('room.knock', { roomId, link: token });
    expect(knock.state).toBe('waiting');
    const seen = await host.client.nextNotification('room.knock', { roomId });
    expect(seen).toEqual({ roomId, knockId: knock.knockId, from: { accountId: lea.accountId, username: lea.username, deviceId: lea.deviceId } });
    // Only the host's devices in the room are asked.
    expect(count(hostTablet, 'room.knock', roomId)).toBe(0);
    // Someone else cannot answer it.
    expect((await refusal(lea.client.request('room.admit', { roomId, knockId: knock.knockId, admit: true }))).reason).toBe('forbidden');
    await host.client.request('room.admit', { roomId, knockId: knock.knockId, admit: true });
    expect(await lea.client.nextNotification('room.knock_answered', { roomId })).toEqual({ roomId, knockId: knock.knockId, admitted: true });
    await lea.client.request('room.join', { roomId });

    const k2 = await max.client.request('room.knock', { roomId, link: token });
    await host.client.nextNotification('room.knock', { roomId, knockId: k2.knockId });
    await host.client.request('room.admit', { roomId, knockId: k2.knockId, admit: false });
    expect(await max.client.nextNotification('room.knock_answered', { roomId })).toEqual({ roomId, knockId: k2.knockId, admitted: false });
    expect((await refusal(max.client.request('room.join', { roomId }))).reason).toBe('forbidden');
    expect((await refusal(host.client.request('room.admit', { roomId, knockId: k2.knockId, admit: true }))).reason).toBe('not_found');

    const rows = await auditOf(server, roomId, ['room.knock_answered']);
    expect(rows.map((r) => [r.detail?.knockerAccountId, r.detail?.admitted]).sort()).toEqual(
      [
        [lea.accountId, true],
        [max.accountId, false],
      ].sort(),
    );
    for (const d of [host, hostTablet, lea, max]) await d.client.close();
  }, 30_000);
});

describe('policy of rooms', () => {
  it('a room ends at its lifetime with ttl_expired; rooms per account and the rate of creating rooms are limited', async () => {
    const own = await startServer({
      env: {
        PARLEY_SFU_WORKERS: '1',
        PARLEY_SFU_ROOM_LIFETIME: '2',
        PARLEY_SFU_MAX_ROOMS_PER_ACCOUNT: '1',
      },
      configToml: '[policy]\ncalls_per_minute = 1\ncall_burst = 2\n',
    });
    try {
      const host = await account(own, 'ph');
      const ned = await account(own, 'ned');
      await makeContacts(host, ned);
      const { roomId } = await host.client.request('room.create', { invite: [ned.username] });
      await host.client.request('room.join', { roomId });
      await ned.client.nextNotification('room.ring', { roomId });
      // One open room per account here.
      const second = await refusal(host.client.request('room.create', {}));
      expect(second.reason).toBe('policy');
      expect(second.message).toMatch(/1 group calls? open/);
      expect(await host.client.nextNotification('room.ended', { roomId }, 5000)).toEqual({ roomId, reason: 'ttl_expired' });
      expect(await ned.client.nextNotification('room.ring_cancelled', { roomId })).toEqual({ roomId, reason: 'room_ended' });
      const late = await refusal(ned.client.request('room.join', { roomId }));
      expect(late.reason).toBe('room_ended');
      expect(late.message).toMatch(/time limit/);
      // Burst 2 used (the create and the refused one took a token each): the next is over the rate.
      const fast = await refusal(host.client.request('room.create', {}));
      expect(fast.reason).toBe('rate_limited');
      expect(fast.message).toMatch(/try again in \d+ s/);
      const ended = await auditOf(own, roomId, ['room.ended']);
      expect(ended[0]?.detail).toMatchObject({ reason: 'ttl_expired', participants: 1 });
      for (const d of [host, ned]) await d.client.close();
    } finally {
      await own.stop();
    }
  }, 30_000);

  it('the call budget (hard_stop) ends a room with budget_exceeded; the server block list keeps an account out of rooms', async () => {
    const banned = `ban${Math.floor(Math.random() * 1e6)}`;
    const own = await startServer({
      env: { PARLEY_SFU_WORKERS: '1' },
      configToml: `[policy]\ncall_budget_seconds = 2\nhard_stop = true\nblocked_accounts = ["${banned}"]\n`,
    });
    try {
      const host = await account(own, 'bh');
      const bad = await signIn(own, banned);
      await makeContacts(host, bad);
      const listed = await refusal(host.client.request('room.create', { invite: [bad.username] }));
      expect(listed.reason).toBe('policy');
      expect(listed.message).toMatch(/cannot take calls on this server/);
      expect((await refusal(bad.client.request('room.create', {}))).reason).toBe('policy');

      const { roomId } = await host.client.request('room.create', {});
      await host.client.request('room.join', { roomId });
      expect(await host.client.nextNotification('room.ended', { roomId }, 6000)).toEqual({ roomId, reason: 'budget_exceeded' });
      const late = await refusal(host.client.request('room.join', { roomId }));
      expect(late.message).toMatch(/budget/);
      for (const d of [host, bad]) await d.client.close();
    } finally {
      await own.stop();
    }
  }, 30_000);
});
