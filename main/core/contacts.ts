import { EventEmitter } from 'node:events';
import type {
  ContactRef,
  ContactsListResult,
  Presence,
  PresenceStatus,
  Settings,
  SignalNotificationParams,
} from '../../common/protocol/signaling';
import type { SignalingClient } from './signaling-client';

/** A contact's presence change, as pushed by the server. */
export type PresenceChange = SignalNotificationParams<'presence.changed'>;
/** A change of my relation with an account (request, accept, decline, remove, block). */
export type ContactUpdate = SignalNotificationParams<'contact.updated'>;

/** Someone's first call to me waits for my approval (first-time caller approval). */
export type ApprovalRequest = SignalNotificationParams<'caller.approval_request'>;
/** The answer to my first call to someone: `approved`, `refused` or `expired`. */
export type ApprovalResult = SignalNotificationParams<'caller.approval'>;

/** Events of a ContactBook. */
export interface ContactBookEvents {
  /** The whole book after any change (a fresh copy; also after each reconnect). */
  changed: [ContactsListResult];
  /** Someone asked to become my contact: show it, then `accept` or `decline`. */
  request: [ContactRef];
  /** A contact's presence changed (the book already holds it when this fires). */
  presence: [PresenceChange];
  /** My relation with an account changed (on this or another of my devices, or by them). */
  updated: [ContactUpdate];
  /** A first-time caller waits for `approveCaller` / `refuseCaller` (only where the server asks for approval). */
  approvalRequest: [ApprovalRequest];
  /** My first call to someone was approved (call again now), refused, or their answer did not come in time. */
  approval: [ApprovalResult];
}

/**
 * The client side of contacts, presence and per-account settings, over the
 * signaling connection. Keeps the last known book (`snapshot`) and keeps it
 * current from the server's notifications; the UI listens to `changed` (the
 * full list) or to the finer events.
 *
 * Shapes (all from `common/protocol/signaling`):
 * - `ContactsListResult`: `{contacts: Contact[], incoming: ContactRef[], outgoing: ContactRef[], blocked: ContactRef[]}`
 * - `Contact`: `{accountId, username, presence, since}` (`since` Unix ms)
 * - `ContactRef`: `{accountId, username, at}` (`at` Unix ms)
 * - `Presence`: `online | away | in_call | dnd | offline`; you may set `online | away | dnd`.
 *
 * Every method throws `ParleyError` (match on `.reason`; `.message` is written for the user):
 * `unavailable` when not connected, `invalid_params` for a malformed username,
 * `unknown_user` (no such account), `forbidden` (yourself), `not_found` (no such
 * request, contact, block or waiting caller), `invalid_state` (requesting someone you blocked).
 * A call to someone who must first approve me fails in the call engine with
 * `approval_required`; the answer arrives later as the `approval` event.
 *
 * ```ts
 * const book = new ContactBook(signaling);
 * book.on('request', (r) => showPrompt(`${r.username} wants to add you`));
 * book.on('changed', (b) => render(b.contacts));
 * await book.refresh();
 * await book.request('bob');
 * ```
 */
export class ContactBook extends EventEmitter<ContactBookEvents> {
  private book: ContactsListResult | undefined;

  constructor(private readonly signaling: SignalingClient) {
    super();
    signaling.on('presence.changed', (p) => {
      const c = this.book?.contacts.find((x) => x.accountId === p.accountId);
      if (c) c.presence = p.presence;
      this.emit('presence', p);
      if (this.book) this.emit('changed', structuredClone(this.book));
    });
    signaling.on('contact.request', (r) => {
      this.emit('request', r);
      void this.refresh().catch(() => {});
    });
    signaling.on('contact.updated', (u) => {
      this.emit('updated', u);
      void this.refresh().catch(() => {});
    });
    signaling.on('caller.approval_request', (r) => this.emit('approvalRequest', r));
    signaling.on('caller.approval', (r) => this.emit('approval', r));
    // Presence may have changed while we were away.
    signaling.on('state', (s) => {
      if (s === 'online') void this.refresh().catch(() => {});
    });
  }

  /** The last book fetched (undefined before the first `refresh`). */
  get snapshot(): ContactsListResult | undefined {
    return this.book ? structuredClone(this.book) : undefined;
  }

  /** Fetches the book from the server, keeps it and emits `changed`. */
  async refresh(): Promise<ContactsListResult> {
    this.book = await this.signaling.request('contacts.list', {});
    this.emit('changed', structuredClone(this.book));
    return structuredClone(this.book);
  }

  /**
   * Asks `username` to become my contact.
   * @returns `requested` (they must accept) or `contact` (they had asked me: we are contacts now).
   */
  async request(username: string): Promise<'requested' | 'contact'> {
    return (await this.signaling.request('contacts.request', { username })).status;
  }

  /** Accepts `username`'s request. @throws `not_found` when they did not ask. */
  async accept(username: string): Promise<void> {
    await this.signaling.request('contacts.accept', { username });
  }

  /** Declines `username`'s request (they see relation `none`). */
  async decline(username: string): Promise<void> {
    await this.signaling.request('contacts.decline', { username });
  }

  /** Removes a contact (for both sides), or withdraws my pending request. */
  async remove(username: string): Promise<void> {
    await this.signaling.request('contacts.remove', { username });
  }

  /** Blocks `username`: to them I look offline and their calls never ring. They are not told. */
  async block(username: string): Promise<void> {
    await this.signaling.request('contacts.block', { username });
  }

  /** Lifts a block. @throws `not_found` when not blocked. */
  async unblock(username: string): Promise<void> {
    await this.signaling.request('contacts.unblock', { username });
  }

  /**
   * Sets my presence for my contacts.
   * @returns what contacts see now (`dnd` wins over `in_call`; `in_call` over `online`/`away`).
   */
  async setPresence(status: PresenceStatus): Promise<Presence> {
    return (await this.signaling.request('presence.set', { status })).presence;
  }

  /**
   * Approves a first-time caller who waits (`approvalRequest`): their calls ring from now on.
   * @throws `not_found` when they are not waiting.
   */
  async approveCaller(username: string): Promise<void> {
    await this.signaling.request('callers.approve', { username });
  }

  /** Refuses a first-time caller who waits. @throws `not_found` when they are not waiting. */
  async refuseCaller(username: string): Promise<void> {
    await this.signaling.request('callers.refuse', { username });
  }

  /** My account settings (`{contactsOnly}`). */
  getSettings(): Promise<Settings> {
    return this.signaling.request('settings.get', {});
  }

  /** Turns "only contacts may call me" on (the default) or off. */
  setContactsOnly(on: boolean): Promise<Settings> {
    return this.signaling.request('settings.set', { contactsOnly: on });
  }
}
