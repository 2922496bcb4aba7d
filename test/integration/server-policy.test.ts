import { writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plainEnvelope } from '../../common/protocol/envelope';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { connectCall, makeContacts, signIn, type SignedInDevice } from '../harness/signal-client';

const offer = plainEnvelope({ type: 'offer', sdp: 'v=0 offer' });
const answer = plainEnvelope({ type: 'answer', sdp: 'v=0 answer' });

let server: RunningServer;
let n = 0;

/** Rewrites the server's TOML with these `[policy]` lines and reloads it. */
async function usePolicy(lines: string): Promise<void> {
  writeFileSync(server.configFile!, `[policy]\n${lines}\n`);
  await adminRequest(server.adminSocket, 'config.reload');
}
async function pair(): Promise<[SignedInDevice, SignedInDevice]> {
  n++;
  const a = await signIn(server, `pcaller${n}`);
  const b = await signIn(server, `pcallee${n}`);
  await makeContacts(a, b);
  return [a, b];
}
const closeAll = (...d: SignedInDevice[]) => Promise.all(d.map((x) => x.client.close()));
const invite = (from: SignedInDevice, to: string, callId = randomUUID()) =>
  from.client.request('call.invite', { callId, callee: to, envelope: offer });
interface AuditEvent {
  event: string;
  callId: string | null;
  detail: Record<string, unknown> | null;
}
const audit = async (params: object) =>
  (await adminRequest<{ events: AuditEvent[] }>(server.adminSocket, 'audit.query', params)).events;

beforeAll(async () => {
  server = await startServer({ configToml: '' });
});
afterAll(async () => {
  await server?.stop();
});

describe('policy: call-creation rate per account', () => {
  it('over the burst, invites get rate_limited with retryAfter; one audit record per episode', async () => {
    await usePolicy('calls_per_minute = 6\ncall_burst = 2');
    const [alice, bob] = await pair();
    for (let i = 0; i < 2; i++) {
      const { callId } = await invite(alice, bob.username);
      await bob.client.nextNotification('call.incoming', { callId });
      await alice.client.request('call.cancel', { callId });
    }
    for (let i = 0; i < 2; i++) {
      const err = await invite(alice, bob.username).catch((e: unknown) => e);
      expect(err).toMatchObject({ reason: 'rate_limited', code: -32008 });
      const retryAfter = (err as { data: { retryAfter: number; retry_after: number } }).data.retryAfter;
      expect((err as { data: { retry_after: number } }).data.retry_after).toBe(retryAfter);
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(10);
      expect((err as Error).message).toBe(
        `you are starting calls too quickly; try again in ${retryAfter} s`,
      );
    }
    const limited = await audit({ event: 'rate_limited', accountId: alice.accountId });
    expect(limited).toHaveLength(1);
    expect(limited[0]?.detail).toMatchObject({ scope: 'calls' });
    // Bob, another account, is not limited by Alice's rate.
    const { callId } = await invite(bob, alice.username);
    await bob.client.request('call.cancel', { callId });
    await closeAll(alice, bob);
  });
});

describe('policy: concurrency', () => {
  it('limits the calls of one account (policy) and of the whole server (unavailable)', async () => {
    await usePolicy('max_calls_per_account = 2');
    const [alice, bob] = await pair();
    const alice2 = await signIn(server, alice.username, { register: false });
    const alice3 = await signIn(server, alice.username, { register: false });
    const bob2 = await signIn(server, bob.username, { register: false });
    // Two of Alice's devices call Bob's two devices: two calls for each account.
    const first = await invite(alice, bob.username);
    await bob.client.nextNotification('call.incoming', { callId: first.callId });
    await bob.client.request('call.answer', { callId: first.callId, envelope: answer });
    const second = await invite(alice2, bob.username);
    // Only Bob's free device rings for the second call.
    await bob2.client.nextNotification('call.incoming', { callId: second.callId });
    await bob.client.expectNoNotification('call.incoming', { callId: second.callId }, 100);
    const third = await invite(alice3, bob.username).catch((e: unknown) => e);
    expect(third).toMatchObject({ reason: 'policy', code: -32016 });
    expect((third as Error).message).toBe(
      'your account already has 2 calls going, the most this server allows; end one first',
    );

    await usePolicy('max_calls = 2');
    const [carol, dave] = await pair();
    const err = await invite(carol, dave.username).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: 'unavailable' });
    expect((err as Error).message).toContain('try again in a few minutes');
    await alice.client.request('call.hangup', { callId: first.callId });
    await alice2.client.request('call.cancel', { callId: second.callId });
    const ok = await invite(carol, dave.username);
    await carol.client.request('call.cancel', { callId: ok.callId });
    await closeAll(alice, alice2, alice3, bob, bob2, carol, dave);
  });
});

describe('policy: call lifetime', () => {
  it('terminate: both parties are warned before the end, then the call ends with ttl_expired', async () => {
    await usePolicy('call_lifetime_seconds = 2\nlifetime_warning_seconds = 1');
    const [alice, bob] = await pair();
    const callId = await connectCall(alice, bob, { offer, answer });
    for (const d of [alice, bob]) {
      const w = await d.client.nextNotification('call.warning', { callId });
      expect(w).toMatchObject({ callId, kind: 'lifetime', action: 'terminate' });
      expect(w.message).toMatch(/^this call will end in \d+ seconds?: it reaches its time limit$/);
    }
    for (const d of [alice, bob]) {
      expect(await d.client.nextNotification('call.ended', { callId })).toEqual({
        callId,
        reason: 'ttl_expired',
      });
    }
    const ended = await audit({ event: 'call.ended', callId });
    expect(ended[0]?.detail).toMatchObject({ reason: 'ttl_expired', cause: 'policy' });
    expect(await audit({ event: 'policy.warning', callId })).toHaveLength(1);
    await closeAll(alice, bob);
  });

  it('extend: another lifetime is granted up to the maximum, with a warning before each end', async () => {
    await usePolicy(
      'call_lifetime_seconds = 1\nmax_call_lifetime_seconds = 2\nlifetime_warning_seconds = 1\non_expiry = "extend"',
    );
    const [alice, bob] = await pair();
    const callId = await connectCall(alice, bob, { offer, answer });
    expect(await alice.client.nextNotification('call.warning', { callId })).toMatchObject({
      kind: 'lifetime',
      action: 'extend',
    });
    expect(await alice.client.nextNotification('call.warning', { callId })).toMatchObject({
      kind: 'lifetime',
      action: 'terminate',
    });
    expect(await bob.client.nextNotification('call.ended', { callId })).toEqual({
      callId,
      reason: 'ttl_expired',
    });
    expect(await audit({ event: 'policy.call_extended', callId })).toHaveLength(1);
    await closeAll(alice, bob);
  });
});

describe('policy: duration budgets', () => {
  it('per call: a warning at 80 %, then budget_exceeded (hard_stop); the admin API shows the budget', async () => {
    await usePolicy('call_budget_seconds = 2\nlifetime_warning_seconds = 0');
    const [alice, bob] = await pair();
    const callId = await connectCall(alice, bob, { offer, answer });
    const status = await adminRequest<{
      budgetUsedSeconds: number;
      budgetRemainingSeconds: number;
    }>(server.adminSocket, 'calls.get_status', { callId });
    expect(status.budgetUsedSeconds).toBeGreaterThanOrEqual(0);
    expect(status.budgetRemainingSeconds).toBeLessThanOrEqual(2);
    expect(status.budgetRemainingSeconds).toBeGreaterThan(0);
    for (const d of [alice, bob]) {
      expect(await d.client.nextNotification('call.warning', { callId })).toMatchObject({
        kind: 'budget',
        action: 'terminate',
      });
    }
    for (const d of [alice, bob]) {
      expect(await d.client.nextNotification('call.ended', { callId })).toEqual({
        callId,
        reason: 'budget_exceeded',
      });
    }
    expect((await audit({ event: 'policy.budget_exceeded', callId }))[0]?.detail).toEqual({
      budgetSeconds: 2,
      hardStop: true,
    });
    await closeAll(alice, bob);
  });

  it('without hard_stop the call goes on: both are warned and the overrun is audited', async () => {
    await usePolicy('call_budget_seconds = 1\nhard_stop = false\nlifetime_warning_seconds = 0');
    const [alice, bob] = await pair();
    const callId = await connectCall(alice, bob, { offer, answer });
    expect(await bob.client.nextNotification('call.warning', { callId })).toMatchObject({
      kind: 'budget',
      action: 'warn',
    });
    expect(await bob.client.nextNotification('call.warning', { callId })).toMatchObject({
      kind: 'budget',
      message: 'this call has used its time budget',
    });
    expect((await audit({ event: 'policy.budget_exceeded', callId }))[0]?.detail).toMatchObject({
      hardStop: false,
    });
    await alice.client.request('call.hangup', { callId });
    await closeAll(alice, bob);
  });

  it('per account per day: once used up, new calls are refused until midnight UTC', async () => {
    await usePolicy('daily_budget_seconds = 1\nlifetime_warning_seconds = 0');
    const [alice, bob] = await pair();
    const callId = await connectCall(alice, bob, { offer, answer });
    expect(await alice.client.nextNotification('call.ended', { callId }, 5000)).toEqual({
      callId,
      reason: 'budget_exceeded',
    });
    await expect
      .poll(async () => (await invite(alice, bob.username).catch((e: unknown) => e)) as object, {
        timeout: 5_000,
      })
      .toMatchObject({
        reason: 'policy',
        message: "you have used today's call time (1 second); it renews at midnight UTC",
      });
    await closeAll(alice, bob);
  });
});

describe('policy: server-wide allowed and blocked accounts', () => {
  it('a blocked account may neither call nor be called; an allow list keeps everyone else out', async () => {
    const [alice, bob] = await pair();
    await usePolicy(`blocked_accounts = ["${bob.username}"]`);
    const out = await invite(bob, alice.username).catch((e: unknown) => e);
    expect(out).toMatchObject({ reason: 'policy', code: -32016 });
    expect((out as Error).message).toBe(
      'your account may not make calls on this server; ask its operator',
    );
    await expect(invite(alice, bob.username)).rejects.toMatchObject({
      reason: 'policy',
      message: `${bob.username} cannot take calls on this server`,
    });
    await usePolicy(`allowed_accounts = ["${alice.username}"]`);
    await expect(invite(alice, bob.username)).rejects.toMatchObject({ reason: 'policy' });
    await usePolicy(`allowed_accounts = ["${alice.username}", "${bob.username}"]`);
    const { callId } = await invite(alice, bob.username);
    await alice.client.request('call.cancel', { callId });
    const refused = await audit({ event: 'call.refused', accountId: bob.accountId });
    expect(refused[0]?.detail).toMatchObject({ reason: 'policy' });
    await closeAll(alice, bob);
  });
});

describe('policy: first-time caller approval', () => {
  it('a stranger does not ring: the callee is asked once; approved calls ring, refusals and timeouts reach the caller', async () => {
    await usePolicy('first_call_approval = true\napproval_timeout_seconds = 1');
    n++;
    const stranger = await signIn(server, `stranger${n}`);
    const callee = await signIn(server, `open${n}`);
    const calleePhone = await signIn(server, callee.username, { register: false });
    await callee.client.request('settings.set', { contactsOnly: false });

    const first = await invite(stranger, callee.username).catch((e: unknown) => e);
    expect(first).toMatchObject({ reason: 'approval_required', code: -32018 });
    expect((first as Error).message).toBe(
      `${callee.username} has not taken calls from you before; they have been asked to approve you (the request waits 1 minute)`,
    );
    for (const d of [callee, calleePhone]) {
      expect(await d.client.nextNotification('caller.approval_request')).toMatchObject({
        accountId: stranger.accountId,
        username: stranger.username,
      });
    }
    // Unanswered, the request expires and the caller is told.
    expect(await stranger.client.nextNotification('caller.approval', {}, 5000)).toEqual({
      accountId: callee.accountId,
      username: callee.username,
      result: 'expired',
    });
    await expect(
      callee.client.request('callers.approve', { username: stranger.username }),
    ).rejects.toMatchObject({ reason: 'not_found' });

    // Asked again: refused.
    await usePolicy('first_call_approval = true\napproval_timeout_seconds = 300');
    await expect(invite(stranger, callee.username)).rejects.toMatchObject({
      reason: 'approval_required',
    });
    await callee.client.nextNotification('caller.approval_request');
    // A second try while the request waits does not ask again.
    await expect(invite(stranger, callee.username)).rejects.toMatchObject({
      reason: 'approval_required',
    });
    await callee.client.expectNoNotification('caller.approval_request', {}, 200);
    await calleePhone.client.request('callers.refuse', { username: stranger.username });
    expect((await stranger.client.nextNotification('caller.approval')).result).toBe('refused');

    // Asked a third time: approved, and from then on the calls ring.
    await expect(invite(stranger, callee.username)).rejects.toMatchObject({
      reason: 'approval_required',
    });
    await callee.client.nextNotification('caller.approval_request');
    await callee.client.request('callers.approve', { username: stranger.username });
    expect((await stranger.client.nextNotification('caller.approval')).result).toBe('approved');
    const { callId } = await invite(stranger, callee.username);
    await callee.client.nextNotification('call.incoming', { callId });
    await stranger.client.request('call.cancel', { callId });

    // Contacts never need approval.
    const [alice, bob] = await pair();
    const ok = await invite(alice, bob.username);
    await alice.client.request('call.cancel', { callId: ok.callId });
    const answered = await audit({
      event: 'caller.approval_answered',
      accountId: callee.accountId,
    });
    expect(answered.map((e) => e.detail?.result)).toEqual(['approved', 'refused', 'expired']);
    await closeAll(stranger, callee, calleePhone, alice, bob);
  });
});

describe('policy: first-time caller approval and blocks', () => {
  it('a blocked stranger gets exactly what an unblocked one gets, and the callee is never asked', async () => {
    await usePolicy('first_call_approval = true\napproval_timeout_seconds = 1');
    n++;
    const callee = await signIn(server, `quiet${n}`);
    const blocked = await signIn(server, `pest${n}`);
    const other = await signIn(server, `polite${n}`);
    await callee.client.request('settings.set', { contactsOnly: false });
    await callee.client.request('contacts.block', { username: blocked.username });

    const error = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (e: { code: number; message: string; data: unknown }) => ({
          code: e.code,
          message: e.message,
          data: e.data,
        }),
      );
    const fromBlocked = await error(invite(blocked, callee.username));
    const fromOther = await error(invite(other, callee.username));
    expect(fromBlocked).toEqual(fromOther);
    expect(fromBlocked).toMatchObject({ data: { reason: 'approval_required' } });
    const asked = await callee.client.nextNotification('caller.approval_request');
    expect(asked.username).toBe(other.username);
    await callee.client.expectNoNotification('caller.approval_request', {}, 200);
    await expect(
      callee.client.request('callers.approve', { username: blocked.username }),
    ).rejects.toMatchObject({ reason: 'not_found' });
    // Both hear the same outcome when nobody answers.
    expect((await blocked.client.nextNotification('caller.approval', {}, 5000)).result).toBe(
      'expired',
    );
    expect((await other.client.nextNotification('caller.approval', {}, 5000)).result).toBe(
      'expired',
    );
    const refused = await audit({ event: 'call.refused', accountId: blocked.accountId });
    expect(refused[0]?.detail).toMatchObject({ reason: 'blocked' });
    await closeAll(callee, blocked, other);
  });
});
