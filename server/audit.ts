import type { Insertable, Kysely } from 'kysely';
import { ParleyError } from '../common/errors';
import type { DB } from './db';

/**
 * The audit log: an append-only record of security-relevant events in the
 * `audit` table. Rows are only ever inserted, and deleted by retention
 * (`prune`); nothing updates them.
 *
 * A record never holds a secret: no password, device token, TURN secret or
 * credential, and no envelope (SDP, ICE candidates). `sanitizeDetail` drops
 * such keys as a second fence behind the callers, which never pass them.
 */

/** Every event name the server records, with what `detail` holds. */
export const AUDIT_EVENTS = [
  /** An account was created. */
  'account.registered',
  /** A password login created a device. detail: `{deviceName}`. */
  'login',
  /**
   * A login was refused (unknown user or wrong password). detail: `{username, remote}`.
   * Sampled (`recordSampled`): the first failure for one address and username, then one
   * summary with `{summary: true, count, windowSeconds, since}` for the others in the window;
   * beyond 20 usernames from one address in a window, one shared `{remote, grouped: true}`.
   */
  'login.failed',
  /** A signaling connection authenticated (`hello`). detail: `{remote}`. */
  'device.connected',
  /** `hello` was refused (unknown device or wrong token). detail: `{remote, reason}`. Sampled per address and device. */
  'device.auth_failed',
  /** An authenticated signaling connection closed. detail: `{code}` (WebSocket close code). */
  'device.disconnected',
  /** A call started ringing. detail: `{callee, calleeAccountId, devices}`. */
  'call.created',
  /** An invite found the callee in another call; the caller got `busy`. detail: `{callee}`. */
  'call.busy',
  /** A callee device answered. detail: `{calleeDeviceId, setupMs}`. */
  'call.answered',
  /** A callee device refused a ringing call. detail: `{reason}` (`declined` | `busy`). */
  'call.rejected',
  /** A call ended. detail: `{reason, by, durationMs, cause?}`; cause `admin`, `server_shutdown` or `server_restart`. */
  'call.ended',
  /** An answered call came back after a server crash, both devices confirming it. detail: `{callerAccountId, answeredAt}`. */
  'call.resumed',
  /** An invite was refused by policy or routing. detail: `{callee, reason}` (error reason). */
  'call.refused',
  /**
   * A limit refused requests. detail: `{scope, retryAfter}` and `remote`; scope `messages`
   * (a connection's rate), `calls`, `relay`, or a front door (`login_ip`, `login_username`,
   * `registration_ip`, `registration_username`: also `username`; sampled per limit and key).
   */
  'rate_limited',
  /** Relay (TURN) credentials were issued. detail: `{ttlSeconds, expiresAt, urls}` — never the credential. */
  'relay.credentials_issued',
  /** The admin API reloaded the config file. detail: `{changed, restartRequired}` (key names only). */
  'config.reloaded',
  /** A device was revoked (device = the revoked one). detail: `{by}` (the device that revoked it). */
  'device.revoked',
  /** A device renewed its token. detail: `{expiresAt}`. */
  'session.refreshed',
  /** A device logged out (its token is gone). */
  'session.logout',
  /** Contact request sent. detail: `{otherAccountId}`. */
  'contact.requested',
  /** Contact request accepted (by account). detail: `{otherAccountId}`. */
  'contact.accepted',
  /** Contact request declined. detail: `{otherAccountId}`. */
  'contact.declined',
  /** Contact removed or request withdrawn. detail: `{otherAccountId}`. */
  'contact.removed',
  /** Account blocked another. detail: `{otherAccountId}`. */
  'contact.blocked',
  /** Block lifted. detail: `{otherAccountId}`. */
  'contact.unblocked',
  /** An account setting changed. detail: the new values (e.g. `{contactsOnly}`). */
  'settings.changed',
  /** The external relay credential API failed. detail: `{failure}` (`timeout`, `unreachable`, `status N`, `invalid answer`). */
  'relay.provider_error',
  /** First-time caller approval asked of the callee (account). detail: `{callerAccountId}`. */
  'caller.approval_requested',
  /** The callee (account) answered, or the request expired. detail: `{callerAccountId, result}`. */
  'caller.approval_answered',
  /** A policy warning went to both parties of a call. detail: `{kind, endsAt, action}` (kind `lifetime` | `budget`). */
  'policy.warning',
  /** A call used up its duration budget. detail: `{budgetSeconds, hardStop}` (hardStop: the call was ended). */
  'policy.budget_exceeded',
  /** A call reached its lifetime and was extended (on_expiry = extend). detail: `{endsAt}`. */
  'policy.call_extended',
  /** A device published its public key bundle. detail: `{identityKey, replaced}` (public key; `replaced`: another identity key was there). */
  'device.keys_published',
  /**
   * A device published an account key other than the stored one (a reset after
   * the key-holding device was lost). detail: `{accountKey}` (public key).
   */
  'account.key_replaced',
  /** A device opened a link rendezvous or answered one (device linking). detail: `{step: 'open' | 'request' | 'reply'}`. */
  'device.link',
  /**
   * A party's client reported a failed end-to-end check and the call ended `failed`
   * (device = the reporting one). detail: `{reason}` (SecurityReason).
   */
  'call.security_failure',
  /** A group-call room was opened on the SFU (account and device that asked). detail: `{roomId, maxParticipants, workerPid}`. */
  'room.created',
  /** A room ended. detail: `{roomId, reason, participants}` (RoomEndReason; participants in it at the end). */
  'room.ended',
  /** A participant (account, device) rang accounts into a room. detail: `{roomId, invited: [accountId], devices}` (devices rung). */
  'room.invited',
  /** An invited account declined (device that declined). detail: `{roomId}`. */
  'room.declined',
  /** A room invite, create, knock or join was refused. detail: `{roomId?, action, reason, invitee?}` (reason: the error's, or `blocked`). */
  'room.refused',
  /** A device joined a room. detail: `{roomId, via}` (`host`, `invite`, `link`, `admitted`). */
  'room.joined',
  /** A device left a room (said room.leave or its connection closed). detail: `{roomId, seconds}`. */
  'room.left',
  /** A participant created a call link. detail: `{roomId, linkId, expiresAt, approval}` (never the token). */
  'room.link_created',
  /** An account joined or knocked through a call link. detail: `{roomId, linkId}`. */
  'room.link_used',
  /** A call link was revoked. detail: `{roomId, linkId}`. */
  'room.link_revoked',
  /** The host admitted or denied a knock. detail: `{roomId, knockId, knockerAccountId, admitted}`. */
  'room.knock_answered',
] as const;
export type AuditEventName = (typeof AUDIT_EVENTS)[number];

/** What a caller hands to `AuditLog.record`. */
export interface AuditInput {
  event: AuditEventName;
  accountId?: string | null;
  deviceId?: string | null;
  callId?: string | null;
  /** Non-secret facts; secret-looking keys are dropped (see sanitizeDetail). */
  detail?: Record<string, unknown>;
}

/** One audit record as `audit.query` returns it. `at` is Unix ms. */
export interface AuditRecord {
  id: number;
  at: number;
  event: string;
  accountId: string | null;
  deviceId: string | null;
  callId: string | null;
  detail: Record<string, unknown> | null;
}

/** Filters for `AuditLog.query`; all optional and combined with AND. */
export interface AuditQuery {
  /** Only these event names. */
  events?: string[];
  accountId?: string;
  deviceId?: string;
  callId?: string;
  /** Records at or after this time, Unix ms. */
  since?: number;
  /** Records before this time, Unix ms. */
  until?: number;
  /** Page size, 1–1000 (default 100). */
  limit?: number;
  /** The `next` of the previous page. */
  cursor?: string;
}

/** Keys whose values are never written to the audit table. */
const SECRET_KEY = /pass|token|secret|credential|envelope|sdp|candidate|authorization|cookie/i;
/** Longest string value kept in a detail, characters (longer ones are cut). */
const MAX_DETAIL_STRING = 200;

/**
 * A copy of `detail` without secret-looking keys (at any depth) and with long
 * strings cut to MAX_DETAIL_STRING characters.
 */
export function sanitizeDetail(detail: Record<string, unknown>): Record<string, unknown> {
  const clean = (value: unknown, depth: number): unknown => {
    if (typeof value === 'string') return value.slice(0, MAX_DETAIL_STRING);
    if (Array.isArray(value))
      return depth > 3 ? [] : value.slice(0, 20).map((v) => clean(v, depth + 1));
    if (typeof value === 'object' && value !== null) {
      if (depth > 3) return {};
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) {
        if (!SECRET_KEY.test(k) && v !== undefined) out[k] = clean(v, depth + 1);
      }
      return out;
    }
    return value;
  };
  return clean(detail, 0) as Record<string, unknown>;
}

/** A page cursor: the id of the last record returned, base64url so that callers treat it as opaque. */
function encodeCursor(id: number): string {
  return Buffer.from(`a${id}`, 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): number {
  const m = /^a(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!m) throw new ParleyError('invalid_params', 'cursor is not one this server returned');
  return Number(m[1]);
}

/** Records one INSERT writes at most (SQLite's default limit is 32766 bound values; 6 per row). */
const MAX_BATCH = 500;

/** Length of a day, ms. */
export const DAY_MS = 86_400_000;

/**
 * Open summaries beyond which new keys share one summary per event (`overflow`),
 * so that even failures from ever-new sources cannot grow memory or rows without bound.
 */
export const MAX_OPEN_SUMMARIES = 10_000;

/**
 * Sources of one group (e.g. the usernames tried from one address) that get
 * windows of their own; further ones in that group share one `{grouped: true}` window.
 */
export const MAX_SOURCES_PER_GROUP = 20;

/** Sources that share a bound in `recordSampled`: its key, and the detail its shared summary carries. */
export interface SampleGroup {
  key: string;
  detail: Record<string, unknown>;
}

/** One open summary window of `recordSampled`. */
interface Summary {
  input: AuditInput;
  /** The group this window counts against, if any. */
  group?: string | undefined;
  /** Records not written one by one since the first. */
  count: number;
  /** When the window started, Unix ms. */
  since: number;
  windowMs: number;
  timer: NodeJS.Timeout;
}

/**
 * Writes and reads the audit table. Writes are asynchronous and never throw
 * to the caller (auditing must not break signaling); a failed write goes to
 * `onError`. `flush()` waits for writes in flight (before the store closes).
 */
export class AuditLog {
  /** Records not yet written, in order, with who waits for each. */
  private readonly queue: { row: Insertable<DB['audit']>; done: () => void }[] = [];
  /** The writer while one runs. */
  private writing: Promise<void> | undefined;
  private readonly summaries = new Map<string, Summary>();
  /** Open windows per group key. */
  private readonly groups = new Map<string, number>();

  /**
   * @param db the store.
   * @param onError sees a failed write (for the log); must not throw.
   * @param now clock, Unix ms (injectable for tests).
   * @param sampling.windowMs the window of `recordSampled`, ms (read when a window opens; default 5 min).
   * @param sampling.maxOpen open windows before new sources share an overflow one (default MAX_OPEN_SUMMARIES).
   */
  constructor(
    private readonly db: Kysely<DB>,
    private readonly onError: (err: unknown, event: string) => void = () => {},
    private readonly now: () => number = Date.now,
    private readonly sampling: { windowMs?: () => number; maxOpen?: number } = {},
  ) {}

  /**
   * Records an event that an attacker can repeat at will (failed logins,
   * refused hellos, limit refusals) without writing one row per repeat: the
   * first record for `key` is written at once and opens a window of
   * `summaryWindowMs`; records for the same key within it are only counted;
   * when the window ends, one summary row is written (if any were counted)
   * with the first record's fields and detail plus
   * `{summary: true, count, windowSeconds, since}` — `count` is the number of
   * records not written one by one, `since` (Unix ms) the window's start. The
   * next record after that opens a new window. So one source costs at most
   * two rows per window. Bounds on new sources: beyond MAX_SOURCES_PER_GROUP
   * open sources of one `group`, the group's further sources share one window
   * whose rows carry `group.detail` and `{grouped: true}`; beyond
   * MAX_OPEN_SUMMARIES open windows in all, new sources share one
   * `{overflow: true}` window per event.
   * @param key the source, e.g. `login.failed:<address>:<username>`.
   * @param group sources that share a bound, e.g. `{key: 'login.failed:<address>', detail: {remote}}`.
   * @returns resolves when the immediate row (if any) is written. Never rejects.
   */
  recordSampled(key: string, input: AuditInput, group?: SampleGroup): Promise<void> {
    let k = key;
    let record = input;
    let member = group?.key;
    if (!this.summaries.has(k) && group && (this.groups.get(group.key) ?? 0) >= MAX_SOURCES_PER_GROUP) {
      k = `group:${group.key}`;
      record = { event: input.event, detail: { ...group.detail, grouped: true } };
      member = undefined;
    }
    if (!this.summaries.has(k) && this.summaries.size >= (this.sampling.maxOpen ?? MAX_OPEN_SUMMARIES)) {
      k = `overflow:${input.event}`;
      record = { event: input.event, detail: { overflow: true } };
      member = undefined;
    }
    const open = this.summaries.get(k);
    if (open) {
      open.count++;
      return Promise.resolve();
    }
    const windowMs = this.sampling.windowMs?.() ?? 300_000;
    const timer = setTimeout(() => this.closeSummary(k), windowMs);
    timer.unref();
    this.summaries.set(k, { input: record, group: member, count: 0, since: this.now(), windowMs, timer });
    if (member) this.groups.set(member, (this.groups.get(member) ?? 0) + 1);
    return this.record(record);
  }

  /** Ends every open `recordSampled` window now, writing its summary (at shutdown, before `flush`). */
  closeSummaries(): void {
    for (const key of [...this.summaries.keys()]) this.closeSummary(key);
  }

  private closeSummary(key: string): void {
    const s = this.summaries.get(key);
    if (!s) return;
    this.summaries.delete(key);
    clearTimeout(s.timer);
    if (s.group) {
      const left = (this.groups.get(s.group) ?? 1) - 1;
      if (left > 0) this.groups.set(s.group, left);
      else this.groups.delete(s.group);
    }
    if (s.count === 0) return;
    void this.record({
      ...s.input,
      detail: {
        ...s.input.detail,
        summary: true,
        count: s.count,
        windowSeconds: s.windowMs / 1000,
        since: s.since,
      },
    });
  }

  /**
   * Appends one record; resolves when written (or when the failure was reported). Never rejects.
   * Records are written in the order of these calls (their ids follow it), also
   * with PostgreSQL's pool of connections: one writer at a time takes every
   * record queued meanwhile into one multi-row INSERT.
   */
  record(input: AuditInput): Promise<void> {
    const row = {
      at: this.now(),
      event: input.event,
      account_id: input.accountId ?? null,
      device_id: input.deviceId ?? null,
      call_id: input.callId ?? null,
      detail: input.detail ? JSON.stringify(sanitizeDetail(input.detail)) : null,
    };
    return new Promise<void>((done) => {
      this.queue.push({ row, done });
      this.writing ??= this.writeQueued();
    });
  }

  /** Writes queued records, oldest first, until none is left; then clears `writing`. */
  private async writeQueued(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_BATCH);
      try {
        await this.db
          .insertInto('audit')
          .values(batch.map((b) => b.row))
          .execute();
      } catch (err) {
        if (batch.length === 1) this.onError(err, batch[0]!.row.event);
        // One bad row must not lose the others: write them one by one.
        else
          for (const b of batch)
            await this.db
              .insertInto('audit')
              .values(b.row)
              .execute()
              .catch((e: unknown) => this.onError(e, b.row.event));
      }
      for (const b of batch) b.done();
    }
    // Cleared in the same turn as the last empty check: a record() after it starts a new writer.
    this.writing = undefined;
  }

  /** Resolves when every write started so far has finished. */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
  }

  /**
   * One page of records, newest first, and the cursor of the next page
   * (`null` on the last page).
   * @throws ParleyError `invalid_params` for a cursor this server did not return.
   */
  async query(q: AuditQuery): Promise<{ events: AuditRecord[]; next: string | null }> {
    // A query sees every record asked for before it (with a pool, the write may still be in flight).
    await this.flush();
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 1000);
    let sel = this.db.selectFrom('audit').selectAll();
    if (q.events?.length) sel = sel.where('event', 'in', q.events);
    if (q.accountId !== undefined) sel = sel.where('account_id', '=', q.accountId);
    if (q.deviceId !== undefined) sel = sel.where('device_id', '=', q.deviceId);
    if (q.callId !== undefined) sel = sel.where('call_id', '=', q.callId);
    if (q.since !== undefined) sel = sel.where('at', '>=', q.since);
    if (q.until !== undefined) sel = sel.where('at', '<', q.until);
    if (q.cursor !== undefined) sel = sel.where('id', '<', decodeCursor(q.cursor));
    const rows = await sel
      .orderBy('id', 'desc')
      .limit(limit + 1)
      .execute();
    const page = rows.slice(0, limit);
    const events = page.map((r) => ({
      id: r.id,
      at: r.at,
      event: r.event,
      accountId: r.account_id,
      deviceId: r.device_id,
      callId: r.call_id,
      detail: r.detail ? (JSON.parse(r.detail) as Record<string, unknown>) : null,
    }));
    const last = page[page.length - 1];
    return { events, next: rows.length > limit && last ? encodeCursor(last.id) : null };
  }

  /**
   * Deletes records older than `retentionDays` days.
   * @returns how many were deleted.
   */
  async prune(retentionDays: number): Promise<number> {
    const result = await this.db
      .deleteFrom('audit')
      .where('at', '<', this.now() - retentionDays * DAY_MS)
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }
}
