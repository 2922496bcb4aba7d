import type { Kysely } from 'kysely';
import { sql } from 'kysely';
import { ParleyError } from '../common/errors';
import type { PeerInfo } from '../common/protocol/signaling';
import type { AuditLog } from './audit';
import type { PolicyConfig, ServerConfig } from './config';
import type { DB } from './db';
import type { AccountRef, Hub } from './hub';
import { TokenBuckets, type BucketStore } from './rate-limit';

/** The UTC day of a time, `YYYY-MM-DD` (the unit of the daily budget). */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function minutes(seconds: number): string {
  const m = Math.round(seconds / 60);
  if (m >= 1) return `${m} minute${m === 1 ? '' : 's'}`;
  const sec = Math.max(1, Math.round(seconds));
  return `${sec} second${sec === 1 ? '' : 's'}`;
}

/**
 * Call policy (config `[policy]`, read at each use so `config.reload` applies):
 *
 * - **Server-wide lists**: an account on `blocked_accounts`, or missing from a
 *   non-empty `allowed_accounts`, may neither call nor be called (`policy`).
 * - **Call-creation rate** per account: a token bucket of `call_burst` refilled
 *   at `calls_per_minute`; over it, `rate_limited` with `retryAfter` seconds.
 * - **Concurrency** per account and per server: enforced by the hub (`Hub.setLimits`).
 * - **Lifetime** of an answered call: `call.warning` (kind `lifetime`) to both
 *   parties `lifetime_warning_seconds` before each end; at `call_lifetime_seconds`
 *   `terminate` ends it (`ttl_expired`), `warn` only warns, `extend` grants
 *   another lifetime; no call outlives `max_call_lifetime_seconds`.
 * - **Duration budget** per call and per account per UTC day: `call.warning`
 *   (kind `budget`) at `budget_warning_percent`; when used up, `hard_stop`
 *   ends the call (`budget_exceeded`), otherwise both are warned and the
 *   overrun is audited. An account with no daily time left cannot start calls
 *   while `hard_stop` is on.
 *
 * Every refusal, warning and overrun is audited.
 */
export class CallPolicy {
  private readonly buckets: TokenBuckets;
  /** Accounts over their call rate right now (one audit record per episode). */
  private readonly limited = new Set<string>();
  /** The last usage write (onEnded); never rejects. */
  private usageWrites: Promise<void> = Promise.resolve();

  constructor(
    private readonly config: ServerConfig,
    private readonly hub: Hub,
    private readonly db: Kysely<DB>,
    private readonly audit: AuditLog,
    /** Several nodes: the cluster's Redis, so that the call rate holds across nodes. */
    store?: BucketStore,
  ) {
    this.buckets = new TokenBuckets('parley:bucket:calls:', store);
  }

  private get p(): PolicyConfig {
    return this.config.policy;
  }

  /**
   * Checks an invite before it is routed.
   * @throws ParleyError `policy` (server lists, daily budget used up), `rate_limited` (with `retryAfter`).
   */
  async checkInvite(caller: PeerInfo, callee: AccountRef): Promise<void> {
    if (!this.mayUse(caller.username)) {
      throw new ParleyError(
        'policy',
        'your account may not make calls on this server; ask its operator',
      );
    }
    if (!this.mayUse(callee.username)) {
      throw new ParleyError('policy', `${callee.username} cannot take calls on this server`);
    }
    await this.takeCallToken(caller);
    const daily = this.p.dailyBudgetSeconds;
    if (daily > 0 && this.p.hardStop) {
      const used = await this.usedToday(caller.accountId);
      if (used >= daily) {
        throw new ParleyError(
          'policy',
          `you have used today's call time (${minutes(daily)}); it renews at midnight UTC`,
        );
      }
    }
  }

  /**
   * Checks a group-call action (room.create, room.invite, room.knock, room.join)
   * the same way as an invite: the server's allow/block lists for `actor` and
   * for each of `others`; with `rate`, one token of the actor's call rate
   * (`calls_per_minute` / `call_burst`: creating a room or ringing people
   * into one counts as starting a call); and, while `hard_stop` is on, the
   * actor's daily budget.
   * @throws ParleyError `policy` (lists, daily budget used up), `rate_limited` (with `retryAfter`).
   */
  async checkRoomAction(actor: PeerInfo, others: readonly AccountRef[], options: { rate: boolean }): Promise<void> {
    if (!this.mayUse(actor.username)) {
      throw new ParleyError('policy', 'your account may not make calls on this server; ask its operator');
    }
    for (const o of others) {
      if (!this.mayUse(o.username)) throw new ParleyError('policy', `${o.username} cannot take calls on this server`);
    }
    if (options.rate) await this.takeCallToken(actor);
    const daily = this.p.dailyBudgetSeconds;
    if (daily > 0 && this.p.hardStop && (await this.usedToday(actor.accountId)) >= daily) {
      throw new ParleyError('policy', `you have used today's call time (${minutes(daily)}); it renews at midnight UTC`);
    }
  }

  /**
   * Schedules the lifetime and budget timers of a call that was just answered.
   * Never throws (a store error only skips the daily part).
   */
  async onAnswered(
    callId: string,
    caller: PeerInfo,
    callee: PeerInfo,
    answeredAt: number,
  ): Promise<void> {
    const p = { ...this.p };
    this.scheduleLifetime(callId, caller, answeredAt, answeredAt + p.callLifetimeSeconds * 1000, p);

    // Budget: the tightest of the call's own budget and each party's time left today.
    const limits: { seconds: number; warnAt: number }[] = [];
    const share = p.budgetWarningPercent / 100;
    if (p.callBudgetSeconds > 0) {
      limits.push({ seconds: p.callBudgetSeconds, warnAt: p.callBudgetSeconds * share });
    }
    if (p.dailyBudgetSeconds > 0) {
      for (const accountId of new Set([caller.accountId, callee.accountId])) {
        const used = await this.usedToday(accountId).catch(() => 0);
        const left = Math.max(0, p.dailyBudgetSeconds - used);
        limits.push({ seconds: left, warnAt: Math.max(0, p.dailyBudgetSeconds * share - used) });
      }
    }
    if (limits.length === 0) return;
    const budget = Math.min(...limits.map((l) => l.seconds));
    const warnAt = Math.min(budget, ...limits.map((l) => l.warnAt));
    this.hub.setCallBudget(callId, budget);
    const endsAt = answeredAt + budget * 1000;
    const action = p.hardStop ? 'terminate' : 'warn';
    const elapsed = Date.now() - answeredAt;
    this.hub.addCallTimer(callId, warnAt * 1000 - elapsed, () =>
      this.warn(
        callId,
        caller,
        'budget',
        endsAt,
        action,
        p.hardStop
          ? `this call will end in ${minutes((endsAt - Date.now()) / 1000)}: its time budget is nearly used`
          : `this call has nearly used its time budget (${minutes(budget)})`,
      ),
    );
    this.hub.addCallTimer(callId, budget * 1000 - elapsed, () => {
      void this.audit.record({
        event: 'policy.budget_exceeded',
        accountId: caller.accountId,
        callId,
        detail: { budgetSeconds: budget, hardStop: p.hardStop },
      });
      if (p.hardStop) {
        this.hub.endCall(callId, 'budget_exceeded', 'policy');
      } else {
        this.warn(callId, caller, 'budget', endsAt, 'warn', 'this call has used its time budget');
      }
    });
  }

  /**
   * Adds a finished call's duration to both accounts' usage of the day. Never throws.
   * Usage writes run one after another, and `usedToday` waits for those asked
   * before it: with PostgreSQL's pool an invite right after a hang-up would
   * otherwise read the usage from before that call.
   */
  onEnded(accounts: string[], durationMs: number, endedAt = Date.now()): Promise<void> {
    if (durationMs <= 0) return Promise.resolve();
    this.usageWrites = this.usageWrites.then(() => this.addUsage(accounts, durationMs, endedAt));
    return this.usageWrites;
  }

  private async addUsage(accounts: string[], durationMs: number, endedAt: number): Promise<void> {
    const day = utcDay(endedAt);
    const seconds = durationMs / 1000;
    for (const accountId of new Set(accounts)) {
      await this.db
        .insertInto('call_usage')
        .values({ account_id: accountId, day, seconds })
        .onConflict((oc) =>
          // Qualified: in PostgreSQL a bare `seconds` is ambiguous beside `excluded.seconds`.
          oc
            .columns(['account_id', 'day'])
            .doUpdateSet({ seconds: sql`call_usage.seconds + ${seconds}` }),
        )
        .execute()
        .catch(() => {});
    }
  }

  /** Call time the account used today (UTC), seconds (finished calls only). */
  async usedToday(accountId: string): Promise<number> {
    await this.usageWrites;
    const row = await this.db
      .selectFrom('call_usage')
      .select('seconds')
      .where('account_id', '=', accountId)
      .where('day', '=', utcDay(Date.now()))
      .executeTakeFirst();
    return row?.seconds ?? 0;
  }

  // ---- internals ------------------------------------------------------------------

  private mayUse(username: string): boolean {
    if (this.p.blockedAccounts.includes(username)) return false;
    return this.p.allowedAccounts.length === 0 || this.p.allowedAccounts.includes(username);
  }

  private async takeCallToken(caller: PeerInfo): Promise<void> {
    const verdict = await this.buckets.take(caller.accountId, this.p.callsPerMinute / 60, this.p.callBurst);
    if (verdict.ok) {
      this.limited.delete(caller.accountId);
      return;
    }
    const retryAfter = Math.ceil(verdict.retryAfter);
    if (!this.limited.has(caller.accountId)) {
      this.limited.add(caller.accountId);
      void this.audit.record({
        event: 'rate_limited',
        accountId: caller.accountId,
        deviceId: caller.deviceId,
        detail: { scope: 'calls', retryAfter },
      });
    }
    throw new ParleyError(
      'rate_limited',
      `you are starting calls too quickly; try again in ${retryAfter} s`,
      { retryAfter },
    );
  }

  private scheduleLifetime(
    callId: string,
    caller: PeerInfo,
    answeredAt: number,
    endsAt: number,
    p: PolicyConfig,
  ): void {
    const hardEnd = answeredAt + p.maxCallLifetimeSeconds * 1000;
    const end = Math.min(endsAt, hardEnd);
    const final = end >= hardEnd || p.onExpiry === 'terminate';
    const action = final ? 'terminate' : p.onExpiry;
    const warning = p.lifetimeWarningSeconds * 1000;
    const now = Date.now();
    if (warning > 0) {
      this.hub.addCallTimer(callId, end - warning - now, () =>
        this.warn(
          callId,
          caller,
          'lifetime',
          end,
          action,
          action === 'terminate'
            ? `this call will end in ${minutes((end - Date.now()) / 1000)}: it reaches its time limit`
            : action === 'extend'
              ? `this call reaches its time limit in ${minutes((end - Date.now()) / 1000)}; it will be extended`
              : `this call reaches its time limit in ${minutes((end - Date.now()) / 1000)}`,
        ),
      );
    }
    this.hub.addCallTimer(callId, end - now, () => {
      if (action === 'terminate') {
        this.hub.endCall(callId, 'ttl_expired', 'policy');
        return;
      }
      const next = Math.min(end + p.callLifetimeSeconds * 1000, hardEnd);
      if (action === 'warn') {
        this.warn(
          callId,
          caller,
          'lifetime',
          hardEnd,
          'warn',
          'this call has passed its time limit',
        );
        this.scheduleLifetime(callId, caller, answeredAt, hardEnd, { ...p, onExpiry: 'terminate' });
      } else {
        void this.audit.record({
          event: 'policy.call_extended',
          accountId: caller.accountId,
          callId,
          detail: { endsAt: next },
        });
        this.scheduleLifetime(callId, caller, answeredAt, next, p);
      }
    });
  }

  private warn(
    callId: string,
    caller: PeerInfo,
    kind: 'lifetime' | 'budget',
    endsAt: number,
    action: 'terminate' | 'warn' | 'extend',
    message: string,
  ): void {
    this.hub.notifyParties(callId, 'call.warning', { callId, kind, endsAt, action, message });
    void this.audit.record({
      event: 'policy.warning',
      accountId: caller.accountId,
      callId,
      detail: { kind, endsAt, action },
    });
  }
}
