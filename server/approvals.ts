import type { Kysely } from 'kysely';
import { ParleyError } from '../common/errors';
import type { PeerInfo } from '../common/protocol/signaling';
import type { AuditLog } from './audit';
import type { ServerConfig } from './config';
import type { Contacts } from './contacts';
import type { DB } from './db';
import type { AccountRef, Hub } from './hub';

interface Pending {
  caller: AccountRef;
  expiresAt: number;
  timer: NodeJS.Timeout;
  /** A blocked caller's request: the callee is never asked and cannot answer it. */
  silent: boolean;
}

/**
 * First-time caller approval (`policy.first_call_approval`, off by default).
 *
 * When on, a caller who is neither a contact of the callee nor approved by
 * them before does not ring: the invite is refused with `approval_required`,
 * and the callee's devices get `caller.approval_request`. The callee answers
 * with `callers.approve` (kept: later calls ring) or `callers.refuse`; the
 * caller's devices learn the outcome from `caller.approval` (`approved`,
 * `refused`, or `expired` after `policy.approval_timeout_seconds`). Asking
 * again while a request waits does not disturb the callee twice.
 *
 * With "only contacts may call me" on (the default), every caller who gets
 * this far is a contact, so approval matters for accounts that turned it off.
 * Pending requests are in memory; approvals are stored.
 */
export class CallerApprovals {
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly config: ServerConfig,
    private readonly db: Kysely<DB>,
    private readonly hub: Hub,
    private readonly contacts: Contacts,
    private readonly audit: AuditLog,
  ) {}

  /**
   * Lets the invite through, or asks the callee and refuses it.
   * @param options.silent for a caller the callee blocked: the same refusal and the same
   *   `expired` outcome later, but the callee is never asked (a block is never revealed).
   * @throws ParleyError `approval_required`.
   */
  async check(
    caller: PeerInfo,
    callee: AccountRef,
    options: { silent?: boolean } = {},
  ): Promise<void> {
    const silent = options.silent ?? false;
    const p = this.config.policy;
    if (!p.firstCallApproval || caller.accountId === callee.accountId) return;
    if (await this.contacts.areContacts(callee.accountId, caller.accountId)) return;
    if (await this.approved(callee.accountId, caller.accountId)) return;
    const key = `${callee.accountId}|${caller.accountId}`;
    const minutes = Math.max(1, Math.round(p.approvalTimeoutSeconds / 60));
    const refusal = new ParleyError(
      'approval_required',
      `${callee.username} has not taken calls from you before; they have been asked to approve you (the request waits ${minutes} minute${minutes === 1 ? '' : 's'})`,
    );
    if (this.pending.has(key)) throw refusal;
    const expiresAt = Date.now() + p.approvalTimeoutSeconds * 1000;
    const timer = setTimeout(() => {
      if (this.pending.get(key)?.timer !== timer) return;
      this.pending.delete(key);
      this.answered(callee, { accountId: caller.accountId, username: caller.username }, 'expired');
    }, p.approvalTimeoutSeconds * 1000);
    timer.unref();
    this.pending.set(key, {
      caller: { accountId: caller.accountId, username: caller.username },
      expiresAt,
      timer,
      silent,
    });
    if (silent) throw refusal;
    void this.audit.record({
      event: 'caller.approval_requested',
      accountId: callee.accountId,
      detail: { callerAccountId: caller.accountId },
    });
    this.hub.notifyAccount(callee.accountId, 'caller.approval_request', {
      accountId: caller.accountId,
      username: caller.username,
      expiresAt,
    });
    throw refusal;
  }

  /**
   * Approves a waiting caller: their calls ring from now on.
   * @throws ParleyError `not_found` when `username` is not waiting for my approval.
   */
  async approve(me: PeerInfo, username: string): Promise<void> {
    const waiting = this.take(me, username);
    await this.db
      .insertInto('approved_callers')
      .values({ callee_id: me.accountId, caller_id: waiting.accountId, created_at: Date.now() })
      .onConflict((oc) => oc.doNothing())
      .execute();
    this.answered(me, waiting, 'approved');
  }

  /**
   * Refuses a waiting caller (they may ask again by calling again).
   * @throws ParleyError `not_found` when `username` is not waiting for my approval.
   */
  refuse(me: PeerInfo, username: string): void {
    this.answered(me, this.take(me, username), 'refused');
  }

  /** Stops every expiry timer (server shutdown). */
  close(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
  }

  private take(me: PeerInfo, username: string): AccountRef {
    for (const [key, p] of this.pending) {
      if (key.startsWith(`${me.accountId}|`) && p.caller.username === username && !p.silent) {
        clearTimeout(p.timer);
        this.pending.delete(key);
        return p.caller;
      }
    }
    throw new ParleyError('not_found', `${username} is not waiting for your approval`);
  }

  private answered(
    callee: AccountRef,
    caller: AccountRef,
    result: 'approved' | 'refused' | 'expired',
  ): void {
    void this.audit.record({
      event: 'caller.approval_answered',
      accountId: callee.accountId,
      detail: { callerAccountId: caller.accountId, result },
    });
    this.hub.notifyAccount(caller.accountId, 'caller.approval', {
      accountId: callee.accountId,
      username: callee.username,
      result,
    });
  }

  private async approved(callee: string, caller: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('approved_callers')
      .select('created_at')
      .where('callee_id', '=', callee)
      .where('caller_id', '=', caller)
      .executeTakeFirst();
    return row !== undefined;
  }
}
