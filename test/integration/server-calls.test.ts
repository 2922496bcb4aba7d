import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plainEnvelope } from '../../common/protocol/envelope';
import { startServer, type RunningServer } from '../harness/server';
import {
  signIn,
  SignalClient,
  type SignedInDevice,
  makeContacts,
  offlineContact,
} from '../harness/signal-client';

const offer = plainEnvelope({ type: 'offer', sdp: 'v=0 offer-sdp-7d1e' });
const answer = plainEnvelope({ type: 'answer', sdp: 'v=0 answer-sdp-44c0' });
const candidate = (c: string) =>
  plainEnvelope({ type: 'candidate', candidate: c, sdpMid: '0', sdpMLineIndex: 0 });

/** The server's grace for a device that drops mid-call, s (short: the test waits it out). */
const GRACE_S = 2;
let server: RunningServer;
let n = 0;
/** A fresh pair of signed-in users (fresh names so tests never share call state). */
async function pair(): Promise<[SignedInDevice, SignedInDevice]> {
  n++;
  const a = await signIn(server, `caller${n}`);
  const b = await signIn(server, `callee${n}`);
  await makeContacts(a, b);
  return [a, b];
}
async function closeAll(...devices: SignedInDevice[]): Promise<void> {
  await Promise.all(devices.map((d) => d.client.close()));
}
/** Invites and waits until the callee has the call; returns the call id. */
async function ring(caller: SignedInDevice, callee: SignedInDevice): Promise<string> {
  const callId = randomUUID();
  await caller.client.request('call.invite', { callId, callee: callee.username, envelope: offer });
  await callee.client.nextNotification('call.incoming', { callId });
  return callId;
}

beforeAll(async () => {
  server = await startServer({ env: { PARLEY_CALL_GRACE: String(GRACE_S) } });
});
afterAll(async () => {
  await server?.stop();
});

describe('calls: the happy path', () => {
  it('invite → incoming, ringing, answer → answered, candidates both ways, hangup ends the other side', async () => {
    const [alice, bob] = await pair();
    const callId = randomUUID();

    const invited = await alice.client.request('call.invite', {
      callId,
      callee: bob.username,
      envelope: offer,
    });
    expect(invited).toEqual({ callId });
    const incoming = await bob.client.nextNotification('call.incoming', { callId });
    expect(incoming).toEqual({
      callId,
      caller: { accountId: alice.accountId, username: alice.username, deviceId: alice.deviceId },
      envelope: offer,
    });

    // Trickled before the answer: caller's candidate to the callee's device and back.
    await alice.client.request('call.candidate', { callId, envelope: candidate('a-early') });
    expect(await bob.client.nextNotification('call.candidate', { callId })).toEqual({
      callId,
      envelope: candidate('a-early'),
    });
    await bob.client.request('call.candidate', { callId, envelope: candidate('b-early') });
    expect((await alice.client.nextNotification('call.candidate', { callId })).envelope).toEqual(
      candidate('b-early'),
    );

    await expect(bob.client.request('call.ringing', { callId })).resolves.toEqual({ ok: true });
    expect(await alice.client.nextNotification('call.ringing', { callId })).toEqual({ callId });

    await expect(bob.client.request('call.answer', { callId, envelope: answer })).resolves.toEqual({
      ok: true,
    });
    expect(await alice.client.nextNotification('call.answered', { callId })).toEqual({
      callId,
      callee: { accountId: bob.accountId, username: bob.username, deviceId: bob.deviceId },
      envelope: answer,
    });

    await alice.client.request('call.candidate', { callId, envelope: candidate('a-late') });
    expect((await bob.client.nextNotification('call.candidate', { callId })).envelope).toEqual(
      candidate('a-late'),
    );
    await bob.client.request('call.candidate', { callId, envelope: candidate('b-late') });
    expect((await alice.client.nextNotification('call.candidate', { callId })).envelope).toEqual(
      candidate('b-late'),
    );

    await expect(alice.client.request('call.hangup', { callId })).resolves.toEqual({ ok: true });
    expect(await bob.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'hangup',
    });
    // The call is gone for both.
    await expect(bob.client.request('call.hangup', { callId })).rejects.toMatchObject({
      reason: 'call_not_found',
    });
    await alice.client.expectNoNotification('call.ended', { callId }, 100);
    await closeAll(alice, bob);
  });

  it('the callee can hang up an answered call; the caller gets hangup', async () => {
    const [alice, bob] = await pair();
    const callId = await ring(alice, bob);
    await bob.client.request('call.answer', { callId, envelope: answer });
    await alice.client.nextNotification('call.answered', { callId });
    await bob.client.request('call.hangup', { callId });
    expect(await alice.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'hangup',
    });
    // Both are free again: a new call between them works.
    const again = await ring(bob, alice);
    await alice.client.request('call.reject', { callId: again, reason: 'declined' });
    await closeAll(alice, bob);
  });
});

describe('calls: refusals and ends', () => {
  it('decline ends the call for the caller with declined; the callee gets only its ok', async () => {
    const [alice, bob] = await pair();
    const callId = await ring(alice, bob);
    await expect(
      bob.client.request('call.reject', { callId, reason: 'declined' }),
    ).resolves.toEqual({ ok: true });
    expect(await alice.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'declined',
    });
    await bob.client.expectNoNotification('call.ended', { callId }, 100);
    await closeAll(alice, bob);
  });

  it('reject with busy reaches the caller as busy', async () => {
    const [alice, bob] = await pair();
    const callId = await ring(alice, bob);
    await bob.client.request('call.reject', { callId, reason: 'busy' });
    expect(await alice.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'busy',
    });
    await closeAll(alice, bob);
  });

  it('cancel before answer ends the call for the callee with hangup', async () => {
    const [alice, bob] = await pair();
    const callId = await ring(alice, bob);
    await expect(alice.client.request('call.cancel', { callId })).resolves.toEqual({ ok: true });
    expect(await bob.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'hangup',
    });
    await closeAll(alice, bob);
  });

  it('a busy callee makes the caller get busy after the invite result, and the callee is not disturbed', async () => {
    const [alice, bob] = await pair();
    const [carol] = await pair();
    await makeContacts(carol, bob);
    await makeContacts(carol, alice);
    const first = await ring(alice, bob);

    const callId = randomUUID();
    await expect(
      carol.client.request('call.invite', { callId, callee: bob.username, envelope: offer }),
    ).resolves.toEqual({
      callId,
    });
    expect(await carol.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'busy',
    });
    // Result first, then the notification.
    const frames = carol.client.frames() as { id?: unknown; result?: unknown; method?: string }[];
    const resultAt = frames.findIndex(
      (f) => (f.result as { callId?: string } | undefined)?.callId === callId,
    );
    const endedAt = frames.findIndex((f) => f.method === 'call.ended');
    expect(resultAt).toBeGreaterThanOrEqual(0);
    expect(resultAt).toBeLessThan(endedAt);
    await bob.client.expectNoNotification('call.incoming', { callId }, 200);

    // The caller of an ongoing call is busy too (either role counts).
    const toAlice = randomUUID();
    await carol.client.request('call.invite', {
      callId: toAlice,
      callee: alice.username,
      envelope: offer,
    });
    expect(await carol.client.nextNotification('call.ended', { callId: toAlice })).toEqual({
      callId: toAlice,
      reason: 'busy',
    });

    // A caller already in a call cannot start another.
    await expect(
      alice.client.request('call.invite', {
        callId: randomUUID(),
        callee: carol.username,
        envelope: offer,
      }),
    ).rejects.toMatchObject({ reason: 'invalid_state' });
    await alice.client.request('call.cancel', { callId: first });
    await closeAll(alice, bob, carol);
  });

  it('an unknown callee gets unknown_user naming the account; an offline one callee_offline', async () => {
    const [alice] = await pair();
    const err = await alice.client
      .request('call.invite', { callId: randomUUID(), callee: 'no-such-user', envelope: offer })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: 'unknown_user', code: -32003 });
    expect((err as Error).message).toBe('no account named no-such-user');

    await offlineContact(server, alice, 'offline-olga');
    await expect(
      alice.client.request('call.invite', {
        callId: randomUUID(),
        callee: 'offline-olga',
        envelope: offer,
      }),
    ).rejects.toMatchObject({ reason: 'callee_offline', code: -32004 });
    await closeAll(alice);
  });

  it('refuses calling yourself and reusing a call id', async () => {
    const [alice, bob] = await pair();
    const self = await alice.client
      .request('call.invite', { callId: randomUUID(), callee: alice.username, envelope: offer })
      .catch((e: unknown) => e);
    expect(self).toMatchObject({ reason: 'forbidden', message: 'you cannot call yourself' });

    const callId = await ring(alice, bob);
    await alice.client.request('call.cancel', { callId: callId });
    await bob.client.nextNotification('call.ended', { callId });
    const live = await ring(alice, bob);
    await expect(
      alice.client.request('call.invite', { callId: live, callee: bob.username, envelope: offer }),
    ).rejects.toMatchObject({ reason: 'invalid_state' });
    await alice.client.request('call.cancel', { callId: live });
    await closeAll(alice, bob);
  });
});

describe('calls: who may do what', () => {
  it('only the two parties may act on a call; others get call_not_found', async () => {
    const [alice, bob] = await pair();
    const [mallory] = await pair();
    const callId = await ring(alice, bob);
    for (const [method, params] of [
      ['call.answer', { callId, envelope: answer }],
      ['call.hangup', { callId }],
      ['call.cancel', { callId }],
      ['call.ringing', { callId }],
      ['call.reject', { callId, reason: 'declined' }],
      ['call.candidate', { callId, envelope: candidate('m') }],
    ] as const) {
      await expect(mallory.client.requestUnchecked(method, params)).rejects.toMatchObject({
        reason: 'call_not_found',
      });
    }
    await bob.client.expectNoNotification('call.candidate', { callId }, 50);
    await alice.client.request('call.cancel', { callId });
    await closeAll(alice, bob, mallory);
  });

  it('wrong-state actions get invalid_state', async () => {
    const [alice, bob] = await pair();
    const callId = await ring(alice, bob);
    await expect(
      alice.client.request('call.answer', { callId, envelope: answer }),
    ).rejects.toMatchObject({
      reason: 'invalid_state',
    });
    await expect(bob.client.request('call.cancel', { callId })).rejects.toMatchObject({
      reason: 'invalid_state',
    });
    await bob.client.request('call.answer', { callId, envelope: answer });
    await expect(
      bob.client.request('call.answer', { callId, envelope: answer }),
    ).rejects.toMatchObject({
      reason: 'invalid_state',
    });
    await expect(
      bob.client.request('call.reject', { callId, reason: 'declined' }),
    ).rejects.toMatchObject({
      reason: 'invalid_state',
    });
    await expect(alice.client.request('call.cancel', { callId })).rejects.toMatchObject({
      reason: 'invalid_state',
    });
    await alice.client.request('call.hangup', { callId });
    await closeAll(alice, bob);
  });
});

describe('calls: disconnects', () => {
  it('a device that drops mid-call and does not come back: the other side sees it reconnecting, then the call ends failed after the grace', async () => {
    const [alice, bob] = await pair();
    const callId = await ring(alice, bob);
    await bob.client.request('call.answer', { callId, envelope: answer });
    await alice.client.nextNotification('call.answered', { callId });
    const droppedAt = Date.now();
    bob.client.terminate();
    expect(await alice.client.nextNotification('call.link', { callId })).toMatchObject({ callId, peer: 'reconnecting' });
    expect(await alice.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'failed',
    });
    expect(Date.now() - droppedAt).toBeGreaterThan(GRACE_S * 1000 - 500);
    await closeAll(alice);
  });

  it('a caller that disconnects while ringing ends the call for the callee with failed', async () => {
    const [alice, bob] = await pair();
    const callId = await ring(alice, bob);
    await alice.client.close();
    expect(await bob.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'failed',
    });
    await closeAll(bob);
  });

  it('a device reconnecting mid-call keeps the call on its new connection', async () => {
    const [alice, bob] = await pair();
    const callId = await ring(alice, bob);
    await bob.client.request('call.answer', { callId, envelope: answer });
    const bob2 = await SignalClient.connect(server.wsUrl);
    await bob2.hello(bob);
    expect((await bob.client.closed).code).toBe(4001);
    await alice.client.request('call.candidate', {
      callId,
      envelope: candidate('after-reconnect'),
    });
    expect((await bob2.nextNotification('call.candidate', { callId })).envelope).toEqual(
      candidate('after-reconnect'),
    );
    await bob2.request('call.hangup', { callId });
    expect(await alice.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'hangup',
    });
    await bob2.close();
    await closeAll(alice);
  });
});

describe('calls: several devices of one account', () => {
  it('rings every device of the callee; the others get answered_elsewhere when one answers', async () => {
    const [alice, bob] = await pair();
    const bobPhone = await signIn(server, bob.username, { register: false, deviceName: 'phone' });
    const callId = randomUUID();
    await alice.client.request('call.invite', { callId, callee: bob.username, envelope: offer });
    await bob.client.nextNotification('call.incoming', { callId });
    await bobPhone.client.nextNotification('call.incoming', { callId });

    await alice.client.request('call.candidate', { callId, envelope: candidate('to-both') });
    await bob.client.nextNotification('call.candidate', { callId });
    await bobPhone.client.nextNotification('call.candidate', { callId });

    await bobPhone.client.request('call.answer', { callId, envelope: answer });
    expect((await alice.client.nextNotification('call.answered', { callId })).callee.deviceId).toBe(
      bobPhone.deviceId,
    );
    expect(await bob.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'answered_elsewhere',
    });
    // The device that did not answer is no longer a party.
    await expect(bob.client.request('call.hangup', { callId })).rejects.toMatchObject({
      reason: 'call_not_found',
    });

    await alice.client.request('call.candidate', { callId, envelope: candidate('to-phone') });
    expect((await bobPhone.client.nextNotification('call.candidate', { callId })).envelope).toEqual(
      candidate('to-phone'),
    );
    await bob.client.expectNoNotification('call.candidate', { callId }, 100);
    await alice.client.request('call.hangup', { callId });
    expect(await bobPhone.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'hangup',
    });
    await closeAll(alice, bob, bobPhone);
  });
});

describe('calls: ring timeout', () => {
  let quick: RunningServer;
  beforeAll(async () => {
    quick = await startServer({ ringTimeoutSeconds: 1 });
  });
  afterAll(async () => {
    await quick?.stop();
  });

  it('an unanswered call ends with no_answer on both sides after ring_timeout_seconds', async () => {
    const alice = await signIn(quick, 'alice');
    const bob = await signIn(quick, 'bob');
    await makeContacts(alice, bob);
    const callId = randomUUID();
    const started = Date.now();
    await alice.client.request('call.invite', { callId, callee: 'bob', envelope: offer });
    await bob.client.nextNotification('call.incoming', { callId });
    await bob.client.request('call.ringing', { callId });
    const [a, b] = await Promise.all([
      alice.client.nextNotification('call.ended', { callId }, 5000),
      bob.client.nextNotification('call.ended', { callId }, 5000),
    ]);
    expect(a).toEqual({ callId, reason: 'no_answer' });
    expect(b).toEqual({ callId, reason: 'no_answer' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    await expect(
      bob.client.request('call.answer', { callId, envelope: answer }),
    ).rejects.toMatchObject({
      reason: 'call_not_found',
    });
    await Promise.all([alice.client.close(), bob.client.close()]);
  });
});

describe('relay credentials without TURN configured', () => {
  it('returns an empty ICE server list with the default TTL', async () => {
    const [alice] = await pair();
    const r = await alice.client.request('relay.credentials', {});
    expect(r.iceServers).toEqual([]);
    expect(r.ttlSeconds).toBe(600);
    expect(r.expiresAt).toBeGreaterThan(Date.now() / 1000);
    await closeAll(alice);
  });
});

describe('calls: the log', () => {
  it('never contains envelopes (SDP or candidates)', () => {
    const log = server.stdout();
    expect(log).toContain('call.invited');
    expect(log).not.toContain('offer-sdp-7d1e');
    expect(log).not.toContain('answer-sdp-44c0');
    expect(log).not.toContain('a-early');
  });
});
