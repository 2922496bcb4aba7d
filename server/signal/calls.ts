import { ParleyError } from '../../common/errors';
import type { Envelope } from '../../common/protocol/envelope';
import { SignalRequests, type PeerInfo } from '../../common/protocol/signaling';
import type { Accounts } from '../accounts';
import type { Contacts } from '../contacts';
import type { Routed } from '../hub';
import type { SignalModule } from './module';

/**
 * 1:1 calls: invite (policy, contacts-only, blocks, caller approval), ringing,
 * answer, reject, cancel, hangup, candidates and security-check failures. The
 * call state itself lives in the hub (server/hub.ts).
 */
export const registerCallHandlers: SignalModule = (conn, deps) => {
  const { peer } = conn;
  const { accounts, contacts, policy, approvals, hub, audit } = deps;

  peer.handle('call.invite', SignalRequests['call.invite'].params, async (p, ctx) => {
    const from = conn.me();
    /** The real reason behind a refusal, when the caller is told something else (a block). */
    let refusedBecause: string | undefined;
    try {
      const callee = await accounts.findByUsername(p.callee);
      if (!callee) throw new ParleyError('unknown_user', `no account named ${p.callee}`);
      await policy.checkInvite(from, callee);
      const blocked = await checkCallAllowed(from, callee, contacts, accounts);
      // A blocked caller goes through the approval step too (silently: the callee is
      // not asked), so that it gets exactly what it would get from an offline callee.
      await approvals.check(from, callee, { silent: blocked }).catch((e: unknown) => {
        if (blocked) refusedBecause = 'blocked';
        throw e;
      });
      if (blocked) {
        refusedBecause = 'blocked';
        throw calleeOffline(callee.username);
      }
      const counts = deps.cluster ? await deps.cluster.inviteCounts(from, callee.accountId) : undefined;
      if (conn.isClosed()) throw new ParleyError('unavailable', 'connection closed');
      return hub.invite(from, p.callId, callee, routedOf(p), ctx.afterReply, counts);
    } catch (e) {
      if (e instanceof ParleyError) {
        void audit.record({
          event: 'call.refused',
          accountId: from.accountId,
          deviceId: from.deviceId,
          callId: p.callId,
          detail: { callee: p.callee, reason: refusedBecause ?? e.reason },
        });
      }
      throw e;
    }
  });
  // One process: the hub, synchronously. Several nodes: where the call lives (server/cluster.ts).
  const cluster = deps.cluster;
  if (cluster) {
    const ok = { ok: true as const };
    peer.handle('call.ringing', SignalRequests['call.ringing'].params, async (p) => {
      await cluster.route({ op: 'ringing', from: conn.me(), callId: p.callId });
      return ok;
    });
    peer.handle('call.answer', SignalRequests['call.answer'].params, async (p) => {
      await cluster.route({ op: 'answer', from: conn.me(), callId: p.callId, envelope: p.envelope });
      return ok;
    });
    peer.handle('call.reject', SignalRequests['call.reject'].params, async (p) => {
      await cluster.route({ op: 'reject', from: conn.me(), callId: p.callId, reason: p.reason });
      return ok;
    });
    peer.handle('call.cancel', SignalRequests['call.cancel'].params, async (p) => {
      await cluster.route({ op: 'cancel', from: conn.me(), callId: p.callId });
      return ok;
    });
    peer.handle('call.hangup', SignalRequests['call.hangup'].params, async (p) => {
      await cluster.route({ op: 'hangup', from: conn.me(), callId: p.callId, failed: p.reason });
      return ok;
    });
    peer.handle('call.candidate', SignalRequests['call.candidate'].params, async (p) => {
      await cluster.route({ op: 'candidate', from: conn.me(), callId: p.callId, routed: routedOf(p) });
      return ok;
    });
  } else {
    peer.handle('call.ringing', SignalRequests['call.ringing'].params, (p) => {
      hub.ringing(conn.me(), p.callId);
      return { ok: true as const };
    });
    peer.handle('call.answer', SignalRequests['call.answer'].params, (p) => {
      hub.answer(conn.me(), p.callId, p.envelope);
      return { ok: true as const };
    });
    peer.handle('call.reject', SignalRequests['call.reject'].params, (p) => {
      hub.reject(conn.me(), p.callId, p.reason);
      return { ok: true as const };
    });
    peer.handle('call.cancel', SignalRequests['call.cancel'].params, (p) => {
      hub.cancel(conn.me(), p.callId);
      return { ok: true as const };
    });
    peer.handle('call.hangup', SignalRequests['call.hangup'].params, (p) => {
      hub.hangup(conn.me(), p.callId, p.reason);
      return { ok: true as const };
    });
    peer.handle('call.candidate', SignalRequests['call.candidate'].params, (p) => {
      hub.candidate(conn.me(), p.callId, routedOf(p));
      return { ok: true as const };
    });
  }
  peer.handle('call.security', SignalRequests['call.security'].params, async (p) => {
    const from = conn.me();
    if (cluster) await cluster.route({ op: 'security', from, callId: p.callId, security: p.reason });
    else hub.securityFailure(from, p.callId, p.reason);
    conn.log.warn({ callId: p.callId, reason: p.reason }, 'a client reported a failed end-to-end security check');
    void audit.record({
      event: 'call.security_failure',
      accountId: from.accountId,
      deviceId: from.deviceId,
      callId: p.callId,
      detail: { reason: p.reason },
    });
    return { ok: true as const };
  });
};

/**
 * May `caller` call `callee`? The callee's "only contacts may call me"
 * setting is checked first (`not_contact`, which an offline callee gives
 * too), then blocks. A blocked caller must then get exactly what an offline
 * callee would give (the caller's `callee_offline` error, after the same
 * approval step), so a block is never revealed: the caller does that.
 * @returns true when the callee blocked the caller.
 * @throws ParleyError `not_contact`.
 */
export async function checkCallAllowed(
  caller: PeerInfo,
  callee: { accountId: string; username: string },
  contacts: Pick<Contacts, 'areContacts' | 'hasBlocked'>,
  accounts: Pick<Accounts, 'contactsOnly'>,
): Promise<boolean> {
  if (callee.accountId === caller.accountId) return false; // the hub refuses it with `forbidden`
  if (
    (await accounts.contactsOnly(callee.accountId)) &&
    !(await contacts.areContacts(callee.accountId, caller.accountId))
  ) {
    throw new ParleyError(
      'not_contact',
      `${callee.username} only takes calls from contacts; send a contact request first`,
    );
  }
  return contacts.hasBlocked(callee.accountId, caller.accountId);
}

/** The error for a callee with no device online (also what a blocked caller gets). */
export function calleeOffline(username: string): ParleyError {
  return new ParleyError('callee_offline', `${username} is not online`);
}

/** The routing part of an invite or candidate: one envelope for all, or one per device. */
function routedOf(p: { envelope?: Envelope | undefined; envelopes?: Record<string, Envelope> | undefined }): Routed {
  return p.envelopes ? { envelopes: p.envelopes } : { envelope: p.envelope! };
}
