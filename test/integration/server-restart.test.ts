/**
 * kill -9 during calls, then a restart on the same data folder: accounts,
 * devices, contacts, blocks, settings and the audit log are intact; devices
 * that were in calls and come back without them (older clients list none in
 * `hello`) learn on reconnecting that those calls ended (`failed`). An
 * answered call both devices list in `hello` resumes (server/resume.ts); one
 * only a single device comes back with ends `failed` after the grace period.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { plainEnvelope } from '../../common/protocol/envelope';
import { PROTOCOL_VERSION } from '../../common/protocol/signaling';
import { adminRequest, startServer } from '../harness/server';
import { openCallsOnDisk } from '../harness/store';
import { connectCall, makeContacts, signIn, SignalClient } from '../harness/signal-client';

const offer = plainEnvelope({ type: 'offer', sdp: 'v=0 offer' });
const answer = plainEnvelope({ type: 'answer', sdp: 'v=0 answer' });

describe('kill -9 and restart', () => {
  it('keeps accounts, contacts, blocks, settings and audit; reconnecting devices learn their calls ended', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-restart-'));
    try {
      const first = await startServer({ dataDir });
      const alice = await signIn(first, 'alice');
      const bob = await signIn(first, 'bob');
      const carol = await signIn(first, 'carol');
      const dave = await signIn(first, 'dave');
      await makeContacts(alice, bob);
      await makeContacts(carol, dave);
      await alice.client.request('contacts.block', { username: 'carol' });
      await bob.client.request('settings.set', { contactsOnly: false });
      const active = await connectCall(alice, bob, { offer, answer });
      const ringing = randomUUID();
      await carol.client.request('call.invite', {
        callId: ringing,
        callee: 'dave',
        envelope: offer,
      });
      await dave.client.nextNotification('call.incoming', { callId: ringing });
      // Every record written so far is on disk before the kill.
      await expect
        .poll(
          async () => {
            const r = await adminRequest<{ events: unknown[] }>(first.adminSocket, 'audit.query', {
              event: ['call.created', 'call.answered'],
            });
            return r.events.length;
          },
          { timeout: 5_000 },
        )
        .toBe(3);
      await expect
        .poll(() => openCallsOnDisk(dataDir), { timeout: 5_000 })
        .toEqual(new Map([[active, true], [ringing, false]]));
      const before = await adminRequest<{ events: { id: number }[] }>(
        first.adminSocket,
        'audit.query',
        {
          limit: 1000,
        },
      );

      process.kill(first.pid, 'SIGKILL');
      await first.stop();
      for (const d of [alice, bob, carol, dave]) await d.client.closed;

      const second = await startServer({ dataDir });
      try {
        const reconnect = async (d: typeof alice) => {
          const c = await SignalClient.connect(second.wsUrl);
          await c.hello(d);
          return c;
        };
        const [a, b, c, d] = await Promise.all([alice, bob, carol, dave].map(reconnect));
        expect(await a!.nextNotification('call.ended', { callId: active })).toEqual({
          callId: active,
          reason: 'failed',
        });
        expect(await b!.nextNotification('call.ended', { callId: active })).toEqual({
          callId: active,
          reason: 'failed',
        });
        expect(await c!.nextNotification('call.ended', { callId: ringing })).toEqual({
          callId: ringing,
          reason: 'failed',
        });
        expect(await d!.nextNotification('call.ended', { callId: ringing })).toEqual({
          callId: ringing,
          reason: 'failed',
        });

        const book = await a!.request('contacts.list', {});
        expect(book.contacts.map((x) => x.username)).toEqual(['bob']);
        expect(book.blocked.map((x) => x.username)).toEqual(['carol']);
        await expect(b!.request('settings.get', {})).resolves.toEqual({ contactsOnly: false });
        // Carol, blocked and not a contact, gets what any stranger gets from alice.
        await expect(
          c!.request('call.invite', { callId: randomUUID(), callee: 'alice', envelope: offer }),
        ).rejects.toMatchObject({ reason: 'not_contact' });

        const after = await adminRequest<{
          events: {
            id: number;
            event: string;
            callId: string | null;
            detail: Record<string, unknown> | null;
          }[];
        }>(second.adminSocket, 'audit.query', { limit: 1000 });
        const ids = new Set(after.events.map((e) => e.id));
        for (const e of before.events) expect(ids.has(e.id)).toBe(true);
        const crashEnds = after.events.filter(
          (e) => e.event === 'call.ended' && e.detail?.cause === 'server_restart',
        );
        expect(crashEnds.map((e) => e.callId).sort()).toEqual([active, ringing].sort());
        // Told once only: a second reconnect hears nothing more.
        await a!.close();
        const again = await reconnect(alice);
        await again.expectNoNotification('call.ended', {}, 200);
        await Promise.all([again, b!, c!, d!].map((x) => x.close()));
      } finally {
        await second.stop();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('resumes an answered call both devices come back with, and routes its hang-up again', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-resume-'));
    try {
      const first = await startServer({ dataDir });
      const alice = await signIn(first, 'alice');
      const bob = await signIn(first, 'bob');
      const carol = await signIn(first, 'carol');
      await makeContacts(alice, bob);
      await bob.client.request('settings.set', { contactsOnly: false });
      const callId = await connectCall(alice, bob, { offer, answer });
      await expect
        .poll(
          async () =>
            (
              await adminRequest<{ events: unknown[] }>(first.adminSocket, 'audit.query', {
                event: ['call.answered'],
              })
            ).events.length,
          { timeout: 5_000 },
        )
        .toBe(1);
      await expect
        .poll(() => openCallsOnDisk(dataDir), { timeout: 5_000 })
        .toEqual(new Map([[callId, true]]));
      process.kill(first.pid, 'SIGKILL');
      await first.stop();
      await Promise.all([alice.client.closed, bob.client.closed, carol.client.closed]);

      const second = await startServer({ dataDir });
      try {
        const back = async (d: typeof alice, calls: string[]) => {
          const c = await SignalClient.connect(second.wsUrl);
          await c.request('hello', {
            protocol: PROTOCOL_VERSION,
            deviceId: d.deviceId,
            token: d.token,
            calls: calls.map((id) => ({ callId: id })),
          });
          return c;
        };
        const a = await back(alice, [callId]);
        const b = await back(bob, [callId]);
        // A call nobody else knows is ended for the device that lists it.
        const stray = randomUUID();
        const c = await back(carol, [stray]);
        expect(await c.nextNotification('call.ended', { callId: stray })).toEqual({
          callId: stray,
          reason: 'failed',
        });
        await a.expectNoNotification('call.ended', { callId }, 300);
        await b.expectNoNotification('call.ended', { callId }, 300);
        const calls = await adminRequest<{ calls: { callId: string; state: string }[] }>(
          second.adminSocket,
          'calls.list',
          {},
        );
        expect(calls.calls).toEqual([expect.objectContaining({ callId, state: 'active' })]);
        // Bob is busy again: the resumed call counts as one in progress.
        const second2 = randomUUID();
        await c.request('call.invite', { callId: second2, callee: 'bob', envelope: offer });
        expect(await c.nextNotification('call.ended', { callId: second2 })).toEqual({
          callId: second2,
          reason: 'busy',
        });
        await a.request('call.hangup', { callId });
        expect(await b.nextNotification('call.ended', { callId })).toEqual({
          callId,
          reason: 'hangup',
        });
        const audit = await adminRequest<{ events: { event: string; callId: string | null }[] }>(
          second.adminSocket,
          'audit.query',
          { event: ['call.resumed'] },
        );
        expect(audit.events.map((e) => e.callId)).toEqual([callId]);
        await Promise.all([a, b, c].map((x) => x.close()));
      } finally {
        await second.stop();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('ends a call only one device comes back with, after the grace period', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-resume-'));
    try {
      const first = await startServer({ dataDir });
      const alice = await signIn(first, 'alice');
      const bob = await signIn(first, 'bob');
      await makeContacts(alice, bob);
      const callId = await connectCall(alice, bob, { offer, answer });
      await expect
        .poll(
          async () =>
            (
              await adminRequest<{ events: unknown[] }>(first.adminSocket, 'audit.query', {
                event: ['call.answered'],
              })
            ).events.length,
          { timeout: 5_000 },
        )
        .toBe(1);
      await expect
        .poll(() => openCallsOnDisk(dataDir), { timeout: 5_000 })
        .toEqual(new Map([[callId, true]]));
      process.kill(first.pid, 'SIGKILL');
      await first.stop();
      await Promise.all([alice.client.closed, bob.client.closed]);
      const second = await startServer({ dataDir });
      try {
        const a = await SignalClient.connect(second.wsUrl);
        await a.request('hello', {
          protocol: PROTOCOL_VERSION,
          deviceId: alice.deviceId,
          token: alice.token,
          calls: [{ callId }],
        });
        await a.expectNoNotification('call.ended', { callId }, 1000);
        // Bob never returns: after the grace period (10 s) Alice is told.
        expect(await a.nextNotification('call.ended', { callId }, 15_000)).toEqual({
          callId,
          reason: 'failed',
        });
        // Bob learns it when he does come back.
        const b = await SignalClient.connect(second.wsUrl);
        await b.hello(bob);
        expect(await b.nextNotification('call.ended', { callId })).toEqual({ callId, reason: 'failed' });
        await Promise.all([a.close(), b.close()]);
      } finally {
        await second.stop();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 30_000);
});
