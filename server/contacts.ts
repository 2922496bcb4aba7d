import type { Kysely } from 'kysely';
import { ParleyError } from '../common/errors';
import type {
  ContactRef,
  ContactsListResult,
  PeerInfo,
  Presence,
  PresenceStatus,
} from '../common/protocol/signaling';
import type { AuditLog } from './audit';
import type { DB } from './db';
import type { Hub } from './hub';

/** An account by id and name. */
interface Account {
  accountId: string;
  username: string;
}

/**
 * Contacts, contact requests, blocks and presence.
 *
 * - A contact relation is mutual: a request from A to B becomes a contact
 *   when B accepts (or when B had already asked A). Either side may remove it.
 * - A block is one-directional and silent: the blocked account is never told.
 *   To it, the blocker looks offline (presence `offline`, calls answered with
 *   exactly the `callee_offline` error an offline callee gives), and its
 *   contact requests are accepted by the server but never shown to the blocker
 *   while the block lasts.
 * - Presence (`online`, `away`, `dnd` chosen by the user; `in_call` while in
 *   an answered call, unless `dnd`; `offline` without a connected device) is
 *   pushed as `presence.changed` to the online devices of contacts only.
 *
 * Every change is audited (`contact.*`); notifications go to every online
 * device of both sides (`contact.request`, `contact.updated`).
 */
export class Contacts {
  /** What each account chose (in memory; a restart resets everyone to `online`). */
  private readonly chosen = new Map<string, PresenceStatus>();
  /** The presence last published per account, to send only changes. */
  private readonly published = new Map<string, Presence>();

  constructor(
    private readonly db: Kysely<DB>,
    private readonly hub: Hub,
    private readonly audit: AuditLog,
  ) {}

  // ---- presence ------------------------------------------------------------------

  /** The presence of `accountId` as everyone but blocked accounts sees it. */
  presenceOf(accountId: string): Presence {
    if (!this.hub.accountOnline(accountId)) return 'offline';
    const chosen = this.chosen.get(accountId) ?? 'online';
    if (chosen === 'dnd') return 'dnd';
    if (this.hub.inAnsweredCall(accountId)) return 'in_call';
    return chosen;
  }

  /** Sets the presence an account chose; contacts are told if what they see changes. */
  async setPresence(me: PeerInfo, status: PresenceStatus): Promise<Presence> {
    this.chosen.set(me.accountId, status);
    await this.presenceMayHaveChanged(me);
    return this.presenceOf(me.accountId);
  }

  /**
   * Recomputes an account's presence (after a device connected or left, a
   * call was answered or ended) and pushes `presence.changed` to its
   * contacts' online devices when it changed. Never throws.
   */
  async presenceMayHaveChanged(account: Account): Promise<void> {
    const now = this.presenceOf(account.accountId);
    const before = this.published.get(account.accountId) ?? 'offline';
    if (now === before) return;
    if (now === 'offline') this.published.delete(account.accountId);
    else this.published.set(account.accountId, now);
    try {
      const viewers = await this.contactIdsVisibleTo(account.accountId);
      for (const viewer of viewers) {
        this.hub.notifyAccount(viewer, 'presence.changed', {
          accountId: account.accountId,
          username: account.username,
          presence: now,
        });
      }
    } catch {
      // Presence is best effort; a store error must not break signaling.
    }
  }

  // ---- queries --------------------------------------------------------------------

  /** True when `a` and `b` are contacts. */
  async areContacts(a: string, b: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('contacts')
      .select('created_at')
      .where('account_id', '=', a)
      .where('contact_id', '=', b)
      .executeTakeFirst();
    return row !== undefined;
  }

  /** True when `blocker` blocked `blocked`. */
  async hasBlocked(blocker: string, blocked: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('blocks')
      .select('created_at')
      .where('account_id', '=', blocker)
      .where('blocked_id', '=', blocked)
      .executeTakeFirst();
    return row !== undefined;
  }

  /** My contacts (with presence as I may see it), pending requests both ways, and my blocks. */
  async list(me: PeerInfo): Promise<ContactsListResult> {
    const id = me.accountId;
    const contacts = await this.db
      .selectFrom('contacts')
      .innerJoin('accounts', 'accounts.id', 'contacts.contact_id')
      .select(['accounts.id', 'accounts.username', 'contacts.created_at'])
      .where('contacts.account_id', '=', id)
      .orderBy('accounts.username')
      .execute();
    const blockedMe = new Set(
      (
        await this.db
          .selectFrom('blocks')
          .select('account_id')
          .where('blocked_id', '=', id)
          .execute()
      ).map((r) => r.account_id),
    );
    const myBlocks = await this.db
      .selectFrom('blocks')
      .innerJoin('accounts', 'accounts.id', 'blocks.blocked_id')
      .select(['accounts.id', 'accounts.username', 'blocks.created_at'])
      .where('blocks.account_id', '=', id)
      .orderBy('accounts.username')
      .execute();
    const blockedByMe = new Set(myBlocks.map((r) => r.id));
    const incoming = await this.db
      .selectFrom('contact_requests')
      .innerJoin('accounts', 'accounts.id', 'contact_requests.from_id')
      .select(['accounts.id', 'accounts.username', 'contact_requests.created_at'])
      .where('contact_requests.to_id', '=', id)
      .orderBy('contact_requests.created_at')
      .execute();
    const outgoing = await this.db
      .selectFrom('contact_requests')
      .innerJoin('accounts', 'accounts.id', 'contact_requests.to_id')
      .select(['accounts.id', 'accounts.username', 'contact_requests.created_at'])
      .where('contact_requests.from_id', '=', id)
      .orderBy('contact_requests.created_at')
      .execute();
    const ref = (r: { id: string; username: string; created_at: number }): ContactRef => ({
      accountId: r.id,
      username: r.username,
      at: r.created_at,
    });
    return {
      contacts: contacts.map((r) => ({
        accountId: r.id,
        username: r.username,
        presence: blockedMe.has(r.id) ? 'offline' : this.presenceOf(r.id),
        since: r.created_at,
      })),
      incoming: incoming.filter((r) => !blockedByMe.has(r.id)).map(ref),
      outgoing: outgoing.map(ref),
      blocked: myBlocks.map(ref),
    };
  }

  // ---- changes --------------------------------------------------------------------

  /**
   * Asks `username` to become my contact. If they had already asked me, we
   * become contacts at once. Asking again, or asking a contact, is harmless.
   * @returns `requested` or `contact`.
   * @throws ParleyError `unknown_user`, `forbidden` (yourself), `invalid_state` (you blocked them).
   */
  async request(me: PeerInfo, username: string): Promise<{ status: 'requested' | 'contact' }> {
    const other = await this.target(me, username);
    if (await this.areContacts(me.accountId, other.accountId)) return { status: 'contact' };
    if (await this.hasBlocked(me.accountId, other.accountId)) {
      throw new ParleyError(
        'invalid_state',
        `you blocked ${other.username}; unblock them before sending a contact request`,
      );
    }
    const blockedByThem = await this.hasBlocked(other.accountId, me.accountId);
    // A request they sent before blocking me must not turn mine into a contact.
    const theirs = !blockedByThem && (await this.pending(other.accountId, me.accountId));
    if (theirs) {
      await this.makeContacts(me, other);
      return { status: 'contact' };
    }
    const at = Date.now();
    await this.db
      .insertInto('contact_requests')
      .values({ from_id: me.accountId, to_id: other.accountId, created_at: at })
      .onConflict((oc) => oc.doNothing())
      .execute();
    void this.audit.record({
      event: 'contact.requested',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { otherAccountId: other.accountId },
    });
    this.hub.notifyAccount(me.accountId, 'contact.updated', {
      accountId: other.accountId,
      username: other.username,
      relation: 'outgoing',
    });
    // A blocked requester is not told it is blocked, and the blocker is not disturbed.
    if (!blockedByThem) {
      this.hub.notifyAccount(other.accountId, 'contact.request', {
        accountId: me.accountId,
        username: me.username,
        at,
      });
    }
    return { status: 'requested' };
  }

  /**
   * Accepts a pending request from `username`.
   * @throws ParleyError `unknown_user`, `not_found` (no request from them).
   */
  async accept(me: PeerInfo, username: string): Promise<void> {
    const other = await this.target(me, username);
    if (await this.areContacts(me.accountId, other.accountId)) return;
    if (
      !(await this.pending(other.accountId, me.accountId)) ||
      (await this.hasBlocked(me.accountId, other.accountId))
    ) {
      throw new ParleyError('not_found', `${other.username} has not asked to be your contact`);
    }
    await this.makeContacts(me, other);
  }

  /**
   * Declines a pending request from `username`; both sides see relation `none`.
   * @throws ParleyError `unknown_user`, `not_found` (no request from them).
   */
  async decline(me: PeerInfo, username: string): Promise<void> {
    const other = await this.target(me, username);
    const r = await this.db
      .deleteFrom('contact_requests')
      .where('from_id', '=', other.accountId)
      .where('to_id', '=', me.accountId)
      .executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) {
      throw new ParleyError('not_found', `${other.username} has not asked to be your contact`);
    }
    void this.audit.record({
      event: 'contact.declined',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { otherAccountId: other.accountId },
    });
    this.notifyBoth(me, other, 'none');
  }

  /**
   * Removes a contact, or withdraws my pending request to them.
   * @throws ParleyError `unknown_user`, `not_found` (neither a contact nor a pending request).
   */
  async remove(me: PeerInfo, username: string): Promise<void> {
    const other = await this.target(me, username);
    const removed = await this.db.transaction().execute(async (tx) => {
      const c = await tx
        .deleteFrom('contacts')
        .where((eb) =>
          eb.or([
            eb.and([eb('account_id', '=', me.accountId), eb('contact_id', '=', other.accountId)]),
            eb.and([eb('account_id', '=', other.accountId), eb('contact_id', '=', me.accountId)]),
          ]),
        )
        .executeTakeFirst();
      const r = await tx
        .deleteFrom('contact_requests')
        .where('from_id', '=', me.accountId)
        .where('to_id', '=', other.accountId)
        .executeTakeFirst();
      return Number(c.numDeletedRows) + Number(r.numDeletedRows);
    });
    if (removed === 0) {
      throw new ParleyError('not_found', `${other.username} is not your contact`);
    }
    void this.audit.record({
      event: 'contact.removed',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { otherAccountId: other.accountId },
    });
    this.notifyBoth(me, other, 'none');
  }

  /**
   * Blocks `username`: they see me offline, their calls get `callee_offline`,
   * their requests are hidden. They are never told. Blocking twice is harmless.
   * @throws ParleyError `unknown_user`, `forbidden` (yourself).
   */
  async block(me: PeerInfo, username: string): Promise<void> {
    const other = await this.target(me, username);
    await this.db
      .insertInto('blocks')
      .values({ account_id: me.accountId, blocked_id: other.accountId, created_at: Date.now() })
      .onConflict((oc) => oc.doNothing())
      .execute();
    // My own pending request to them is withdrawn: they cannot accept it any more.
    await this.db
      .deleteFrom('contact_requests')
      .where('from_id', '=', me.accountId)
      .where('to_id', '=', other.accountId)
      .execute();
    void this.audit.record({
      event: 'contact.blocked',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { otherAccountId: other.accountId },
    });
    await this.notifyMine(me, other, true);
    // To them I now look offline, exactly as if I had gone.
    if (
      this.presenceOf(me.accountId) !== 'offline' &&
      (await this.areContacts(other.accountId, me.accountId))
    ) {
      this.hub.notifyAccount(other.accountId, 'presence.changed', {
        accountId: me.accountId,
        username: me.username,
        presence: 'offline',
      });
    }
  }

  /**
   * Lifts a block.
   * @throws ParleyError `unknown_user`, `not_found` (not blocked).
   */
  async unblock(me: PeerInfo, username: string): Promise<void> {
    const other = await this.target(me, username);
    const r = await this.db
      .deleteFrom('blocks')
      .where('account_id', '=', me.accountId)
      .where('blocked_id', '=', other.accountId)
      .executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) {
      throw new ParleyError('not_found', `${other.username} is not blocked`);
    }
    void this.audit.record({
      event: 'contact.unblocked',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { otherAccountId: other.accountId },
    });
    await this.notifyMine(me, other, false);
    const presence = this.presenceOf(me.accountId);
    if (presence !== 'offline' && (await this.areContacts(other.accountId, me.accountId))) {
      this.hub.notifyAccount(other.accountId, 'presence.changed', {
        accountId: me.accountId,
        username: me.username,
        presence,
      });
    }
  }

  // ---- internals ------------------------------------------------------------------

  private async target(me: PeerInfo, username: string): Promise<Account> {
    const row = await this.db
      .selectFrom('accounts')
      .select(['id', 'username'])
      .where('username', '=', username)
      .executeTakeFirst();
    if (!row) throw new ParleyError('unknown_user', `no account named ${username}`);
    if (row.id === me.accountId) {
      throw new ParleyError('forbidden', 'you cannot do that with your own account');
    }
    return { accountId: row.id, username: row.username };
  }

  private async pending(from: string, to: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('contact_requests')
      .select('created_at')
      .where('from_id', '=', from)
      .where('to_id', '=', to)
      .executeTakeFirst();
    return row !== undefined;
  }

  private async makeContacts(me: PeerInfo, other: Account): Promise<void> {
    const at = Date.now();
    await this.db.transaction().execute(async (tx) => {
      await tx
        .deleteFrom('contact_requests')
        .where((eb) =>
          eb.or([
            eb.and([eb('from_id', '=', me.accountId), eb('to_id', '=', other.accountId)]),
            eb.and([eb('from_id', '=', other.accountId), eb('to_id', '=', me.accountId)]),
          ]),
        )
        .execute();
      await tx
        .insertInto('contacts')
        .values([
          { account_id: me.accountId, contact_id: other.accountId, created_at: at },
          { account_id: other.accountId, contact_id: me.accountId, created_at: at },
        ])
        .onConflict((oc) => oc.doNothing())
        .execute();
    });
    void this.audit.record({
      event: 'contact.accepted',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { otherAccountId: other.accountId },
    });
    const otherBlockedMe = await this.hasBlocked(other.accountId, me.accountId);
    this.hub.notifyAccount(me.accountId, 'contact.updated', {
      accountId: other.accountId,
      username: other.username,
      relation: 'contact',
      presence: otherBlockedMe ? 'offline' : this.presenceOf(other.accountId),
    });
    this.hub.notifyAccount(other.accountId, 'contact.updated', {
      accountId: me.accountId,
      username: me.username,
      relation: 'contact',
      presence: this.presenceOf(me.accountId),
    });
  }

  private notifyBoth(me: PeerInfo, other: Account, relation: 'none'): void {
    this.hub.notifyAccount(me.accountId, 'contact.updated', {
      accountId: other.accountId,
      username: other.username,
      relation,
    });
    this.hub.notifyAccount(other.accountId, 'contact.updated', {
      accountId: me.accountId,
      username: me.username,
      relation,
    });
  }

  /** Tells my own devices that I (un)blocked `other`, with our relation as it stands. */
  private async notifyMine(me: PeerInfo, other: Account, blocked: boolean): Promise<void> {
    const relation = (await this.areContacts(me.accountId, other.accountId))
      ? 'contact'
      : (await this.pending(me.accountId, other.accountId))
        ? 'outgoing'
        : (await this.pending(other.accountId, me.accountId)) && !blocked
          ? 'incoming'
          : 'none';
    this.hub.notifyAccount(me.accountId, 'contact.updated', {
      accountId: other.accountId,
      username: other.username,
      relation,
      blocked,
    });
  }

  /** Contacts of `accountId` that may see its presence (not blocked by it). */
  private async contactIdsVisibleTo(accountId: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('contacts')
      .select('contact_id')
      .where('account_id', '=', accountId)
      .where(({ not, exists, selectFrom }) =>
        not(
          exists(
            selectFrom('blocks')
              .select('blocks.created_at')
              .whereRef('blocks.blocked_id', '=', 'contacts.contact_id')
              .where('blocks.account_id', '=', accountId),
          ),
        ),
      )
      .execute();
    return rows.map((r) => r.contact_id);
  }
}
