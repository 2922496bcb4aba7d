import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { PeerInfo } from '../../common/protocol/signaling';
import { CLOSE_REPLACED, Hub, type DeviceLink, type HubEvent } from '../../server/hub';

// The hub is pure routing state: these tests drive it with in-memory links.
// The same behaviour over real sockets is covered in test/integration/server-calls.test.ts.

const env = { kind: 'plain' as const, body: '{}' };

interface TestLink extends DeviceLink {
  got: { method: string; params: unknown }[];
  closedWith?: number;
}

function device(username: string, accountId = `acct-${username}`): TestLink {
  const peer: PeerInfo = { accountId, username, deviceId: randomUUID() };
  const link: TestLink = {
    peer,
    got: [],
    notify: (method, params) => void link.got.push({ method, params }),
    close: (code) => void (link.closedWith = code),
  };
  return link;
}
const account = (l: TestLink) => ({ accountId: l.peer.accountId, username: l.peer.username });
const ended = (l: TestLink) =>
  l.got
    .filter((g) => g.method === 'call.ended')
    .map((g) => (g.params as { reason: string }).reason);

function setup(ringTimeoutMs = 45_000, graceMs = 0) {
  const events: HubEvent[] = [];
  const hub = new Hub({ ringTimeoutMs, graceMs, onEvent: (e) => events.push(e) });
  const alice = device('alice');
  const bob = device('bob');
  hub.attach(alice);
  hub.attach(bob);
  const invite = (from = alice, to = bob) => {
    const callId = randomUUID();
    const later: (() => void)[] = [];
    hub.invite(from.peer, callId, account(to), env, (fn) => later.push(fn));
    later.forEach((fn) => fn());
    return callId;
  };
  return { hub, alice, bob, invite, events };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Hub', () => {
  it('tells the caller about ringing once, however often the callee reports it', () => {
    const { hub, alice, bob, invite } = setup();
    const callId = invite();
    hub.ringing(bob.peer, callId);
    hub.ringing(bob.peer, callId);
    expect(alice.got.filter((g) => g.method === 'call.ringing')).toHaveLength(1);
  });

  it('a callee hanging up a ringing call is a decline for the caller', () => {
    const { hub, alice, bob, invite } = setup();
    const callId = invite();
    hub.hangup(bob.peer, callId);
    expect(ended(alice)).toEqual(['declined']);
    expect(ended(bob)).toEqual([]);
  });

  it('keeps ringing the other devices when one invited device goes offline', () => {
    const { hub, alice, bob, invite } = setup();
    const bobPhone = device('bob', bob.peer.accountId);
    hub.attach(bobPhone);
    const callId = invite();
    hub.detach(bob);
    expect(ended(alice)).toEqual([]);
    hub.answer(bobPhone.peer, callId, env);
    expect(alice.got.at(-1)?.method).toBe('call.answered');
    hub.detach(bobPhone);
    expect(ended(alice)).toEqual(['failed']);
  });

  it('rings only the devices the caller sealed for, each with its own envelope, and routes candidates the same way', () => {
    const { hub, alice, bob } = setup();
    const bobPhone = device('bob', bob.peer.accountId);
    const bobTablet = device('bob', bob.peer.accountId);
    hub.attach(bobPhone);
    hub.attach(bobTablet);
    const forBob = { kind: 'sealed' as const, body: 'for-bob' };
    const forPhone = { kind: 'sealed' as const, body: 'for-phone' };
    const callId = randomUUID();
    hub.invite(alice.peer, callId, account(bob), { envelopes: { [bob.peer.deviceId]: forBob, [bobPhone.peer.deviceId]: forPhone } }, (fn) => fn());
    const incoming = (l: TestLink) => l.got.filter((g) => g.method === 'call.incoming').map((g) => (g.params as { envelope: { body: string } }).envelope.body);
    expect(incoming(bob)).toEqual(['for-bob']);
    expect(incoming(bobPhone)).toEqual(['for-phone']);
    expect(incoming(bobTablet)).toEqual([]);
    hub.candidate(alice.peer, callId, { envelopes: { [bob.peer.deviceId]: { kind: 'sealed', body: 'c-bob' }, [bobPhone.peer.deviceId]: { kind: 'sealed', body: 'c-phone' } } });
    const candidates = (l: TestLink) => l.got.filter((g) => g.method === 'call.candidate').map((g) => (g.params as { envelope: { body: string } }).envelope.body);
    expect(candidates(bob)).toEqual(['c-bob']);
    expect(candidates(bobPhone)).toEqual(['c-phone']);
    hub.answer(bobPhone.peer, callId, env);
    hub.candidate(alice.peer, callId, { envelopes: { [bob.peer.deviceId]: { kind: 'sealed', body: 'late-bob' }, [bobPhone.peer.deviceId]: { kind: 'sealed', body: 'late-phone' } } });
    expect(candidates(bobPhone)).toEqual(['c-phone', 'late-phone']);
    expect(candidates(bob)).toEqual(['c-bob']);
    // A callee device reports tampering: the call ends `failed` for the others, with the reason.
    hub.securityFailure(bobPhone.peer, callId, 'envelope_invalid');
    expect(alice.got.at(-1)).toEqual({ method: 'call.ended', params: { callId, reason: 'failed', security: 'envelope_invalid' } });
  });

  it('an invite sealed for none of the online devices finds the callee offline', () => {
    const { hub, alice, bob } = setup();
    expect(() => hub.invite(alice.peer, randomUUID(), account(bob), { envelopes: {} }, (fn) => fn())).toThrow(/not online/);
  });

  it('a replaced connection is closed and does not end the device’s calls', () => {
    const { hub, alice, bob, invite } = setup();
    const callId = invite();
    const bob2: TestLink = { ...device('bob'), peer: bob.peer, got: [] };
    bob2.notify = (method, params) => void bob2.got.push({ method, params });
    hub.attach(bob2);
    expect(bob.closedWith).toBe(CLOSE_REPLACED);
    hub.detach(bob); // the old socket's close event arrives later
    expect(ended(alice)).toEqual([]);
    hub.candidate(alice.peer, callId, env);
    expect(bob2.got.map((g) => g.method)).toEqual(['call.candidate']);
  });

  it('holds an answered call for a device whose connection dropped: the peer sees "reconnecting", its messages wait in order, the device resumes it', () => {
    vi.useFakeTimers();
    const { hub, alice, bob, invite, events } = setup(45_000, 15_000);
    const callId = invite();
    hub.answer(bob.peer, callId, env);
    hub.detach(bob);
    expect(ended(alice)).toEqual([]);
    expect(alice.got.at(-1)).toEqual({ method: 'call.link', params: { callId, peer: 'reconnecting', since: expect.any(Number), until: expect.any(Number) } });
    hub.candidate(alice.peer, callId, { kind: 'sealed', body: 'c1' });
    hub.candidate(alice.peer, callId, { kind: 'sealed', body: 'c2' });
    vi.advanceTimersByTime(10_000);
    const bob2: TestLink = { ...device('bob'), peer: bob.peer, got: [] };
    bob2.notify = (method, params) => void bob2.got.push({ method, params });
    hub.attach(bob2);
    expect(hub.reconnected(bob.peer, [{ callId }])).toEqual([]);
    expect(bob2.got.map((g) => (g.params as { envelope: { body: string } }).envelope.body)).toEqual(['c1', 'c2']);
    expect(alice.got.at(-1)).toEqual({ method: 'call.link', params: { callId, peer: 'online' } });
    expect(events.map((e) => e.event)).toContain('call.party_back');
    vi.advanceTimersByTime(60_000);
    expect(hub.callsByState().active).toBe(1);
    hub.hangup(alice.peer, callId);
    expect(ended(bob2)).toEqual(['hangup']);
  });

  it('ends a held call "failed" for both when the grace passes, and tells the device the real reason of an end it missed', () => {
    vi.useFakeTimers();
    const { hub, alice, bob, invite } = setup(45_000, 15_000);
    const callId = invite();
    hub.answer(bob.peer, callId, env);
    hub.detach(alice);
    vi.advanceTimersByTime(15_001);
    expect(ended(bob)).toEqual(['failed']);
    expect(hub.callsByState().active).toBe(0);
    hub.attach(alice);
    expect(hub.reconnected(alice.peer, [{ callId }])).toEqual([{ callId, reason: 'failed' }]);

    const second = invite();
    hub.answer(bob.peer, second, env);
    hub.detach(alice);
    hub.hangup(bob.peer, second);
    hub.attach(alice);
    expect(hub.reconnected(alice.peer, [{ callId: second }])).toEqual([{ callId: second, reason: 'hangup' }]);
  });

  it('sends a device that reconnects over a new socket the relayed messages it says it did not receive, in order', () => {
    const { hub, alice, bob, invite } = setup(45_000, 15_000);
    const callId = invite();
    hub.answer(bob.peer, callId, env);
    for (const body of ['c0', 'c1', 'c2']) hub.candidate(alice.peer, callId, { kind: 'sealed', body });
    // Bob's old socket died with c1 and c2 in flight; his new one replaces it before the server noticed.
    const bob2: TestLink = { ...device('bob'), peer: bob.peer, got: [] };
    bob2.notify = (method, params) => void bob2.got.push({ method, params });
    hub.attach(bob2);
    expect(hub.reconnected(bob.peer, [{ callId, received: 1 }])).toEqual([]);
    hub.candidate(alice.peer, callId, { kind: 'sealed', body: 'c3' });
    expect(bob2.got.map((g) => (g.params as { envelope: { body: string } }).envelope.body)).toEqual(['c1', 'c2', 'c3']);
  });

  it('a party that gave up on the call (hangup with reason failed) ends it "failed" for the other side, not "hangup"', () => {
    const { hub, alice, bob, invite } = setup();
    const callId = invite();
    hub.answer(bob.peer, callId, env);
    hub.hangup(alice.peer, callId, 'failed');
    expect(ended(bob)).toEqual(['failed']);
  });

  it('a device back without a held call ends it "failed" for the peer', () => {
    const { hub, alice, bob, invite } = setup(45_000, 15_000);
    const callId = invite();
    hub.answer(bob.peer, callId, env);
    hub.detach(bob);
    hub.attach(bob);
    expect(hub.reconnected(bob.peer, [])).toEqual([{ callId, reason: 'failed' }]);
    expect(ended(alice)).toEqual(['failed']);
  });

  it('ends a ringing call with no_answer for both sides after the ring timeout, and not after an answer', () => {
    vi.useFakeTimers();
    const { hub, alice, bob, invite } = setup(1000);
    const unanswered = invite();
    vi.advanceTimersByTime(999);
    expect(ended(alice)).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(ended(alice)).toEqual(['no_answer']);
    expect(ended(bob)).toEqual(['no_answer']);
    expect(() => hub.hangup(alice.peer, unanswered)).toThrow(
      expect.objectContaining({ reason: 'call_not_found' }),
    );

    const answered = invite();
    hub.answer(bob.peer, answered, env);
    vi.advanceTimersByTime(5000);
    expect(ended(alice)).toEqual(['no_answer']);
    expect(hub.stats.calls).toBe(1);
  });

  it('reports call events without envelopes', () => {
    const { hub, bob, invite, events } = setup();
    const callId = invite();
    hub.answer(bob.peer, callId, env);
    hub.hangup(bob.peer, callId);
    expect(events.map((e) => e.event)).toEqual(['call.invited', 'call.answered', 'call.ended']);
    expect(JSON.stringify(events)).not.toContain('envelope');
  });

  it('close() forgets calls and stops their timers', () => {
    vi.useFakeTimers();
    const { hub, alice, invite } = setup(1000);
    invite();
    hub.close();
    vi.advanceTimersByTime(5000);
    expect(ended(alice)).toEqual([]);
    expect(hub.stats.calls).toBe(0);
  });

  it('endCall ends a call for both parties with the given reason and reports the cause', () => {
    const { hub, alice, bob, invite, events } = setup();
    const callId = invite();
    hub.answer(bob.peer, callId, env);
    expect(hub.get(callId)).toMatchObject({
      state: 'active',
      callee: { deviceId: bob.peer.deviceId },
    });
    expect(hub.endCall(callId, 'policy', 'admin')).toBe(true);
    expect(ended(alice)).toEqual(['policy']);
    expect(ended(bob)).toEqual(['policy']);
    expect(events.at(-1)).toMatchObject({
      event: 'call.ended',
      reason: 'policy',
      by: null,
      cause: 'admin',
    });
    expect(hub.endCall(callId, 'policy', 'admin')).toBe(false);
  });

  it('shutdown ends ringing and active calls with failed for every party', () => {
    const { hub, alice, bob, invite } = setup();
    const carol = device('carol');
    const dave = device('dave');
    hub.attach(carol);
    hub.attach(dave);
    const active = invite();
    hub.answer(bob.peer, active, env);
    invite(carol, dave);
    expect(hub.callsByState()).toEqual({ ringing: 1, active: 1 });
    expect(hub.list().map((c) => c.state)).toEqual(['active', 'ringing']);
    hub.shutdown();
    for (const l of [alice, bob, carol, dave]) expect(ended(l)).toEqual(['failed']);
    expect(hub.stats.calls).toBe(0);
  });

  it('a new ring timeout applies to calls invited after the change', () => {
    vi.useFakeTimers();
    const { hub, alice, invite } = setup(45_000);
    hub.setRingTimeout(1000);
    invite();
    vi.advanceTimersByTime(1000);
    expect(ended(alice)).toEqual(['no_answer']);
  });
});
