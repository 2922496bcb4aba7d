import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { ParleyError } from '../../common/errors';
import type { RoomId, RoomInviteEndReason, RoomParticipant, RoomRingCancelReason } from '../../common/protocol/sfu';
import type { PeerInfo } from '../../common/protocol/signaling';
import type { AccountRef, Hub } from '../hub';

/** A call link's default life, seconds (a day). */
export const DEFAULT_LINK_SECONDS = 86_400;
/** Random bytes in a call link token (256 bits; base64url: 43 characters). */
const LINK_TOKEN_BYTES = 32;
/** Call links one room may hold (expired and revoked ones included, so that their error stays clear). */
const MAX_LINKS_PER_ROOM = 32;
/** Knocks waiting at once in one room. */
const MAX_KNOCKS_PER_ROOM = 32;

/** How a device came to be allowed into a room (the `via` of the `room.joined` audit row). */
export type JoinVia = 'host' | 'invite' | 'admitted' | 'link';

/**
 * One invited account's ringing: its devices that ring, until `expiresAt`
 * (Unix ms). It rings on with no device online too: a device of the account
 * that comes online before `expiresAt` rings then ({@link RoomInvitations.deviceOnline}).
 */
interface Ring {
  account: AccountRef;
  /** Who rang it (the `inviter` of the `room.ring` a device coming online gets). */
  inviter: RoomParticipant;
  devices: Set<string>;
  expiresAt: number;
  timer: NodeJS.Timeout;
}

/** What the invitee's side was told (`room.ring_cancelled`) → what the room is told (`room.invite_ended`). */
const INVITE_END: Record<RoomRingCancelReason, RoomInviteEndReason> = {
  answered_elsewhere: 'joined',
  declined_elsewhere: 'declined',
  timeout: 'timeout',
  cancelled: 'cancelled',
  room_ended: 'room_ended',
};

/** A call link. Only the SHA-256 of its token is kept (the token itself is a secret: never stored, never logged). */
interface Link {
  linkId: string;
  tokenHash: Buffer;
  /** Unix ms. */
  expiresAt: number;
  approval: boolean;
  revoked: boolean;
}

/** Someone asking the host to let them in through a link that needs approval. */
interface Knock {
  knockId: string;
  from: PeerInfo;
  linkId: string;
  timer: NodeJS.Timeout;
}

/** Who may be in one room, who it rings, its links and knocks, and its policy timers. */
interface Guests {
  host: AccountRef;
  /** Accounts invited (rung) into the room, by account id: every device of them may join by id. */
  invited: Map<string, AccountRef>;
  /** Accounts let in through a call link (directly, or admitted by the host after a knock). */
  admitted: Set<string>;
  rings: Map<string, Ring>;
  links: Map<string, Link>;
  knocks: Map<string, Knock>;
  /** Lifetime and budget timers (cleared when the room ends). */
  timers: NodeJS.Timeout[];
}

/** What the invitations use of the server. */
export interface InvitationDeps {
  /** Per-device delivery, the same as 1:1 calls use (with several nodes it reaches devices on any node). */
  hub: Pick<Hub, 'devicesOf' | 'notifyDevice'>;
  /** How long a room rings, ms (the live `ring_timeout_seconds`, the same as 1:1 ringing). */
  ringTimeoutMs: () => number;
  /**
   * Tells everyone in the room but the invitee that an invitation ended
   * (`room.invite_ended`): through the room's own members, so that with
   * several nodes it reaches participants on any node as `room.participant_*` do.
   */
  inviteEnded?: (roomId: RoomId, invitee: AccountRef, reason: RoomInviteEndReason) => void;
  /** Usernames in the room now (the `participants` of a late `room.ring`). */
  participantsOf?: (roomId: RoomId) => string[];
  log: Logger;
}

/** The SHA-256 of a link token (what is stored). */
function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/**
 * Group ringing and call links of the rooms this node owns (issue 14 item 2;
 * docs/group-calls.md "A group that rings", "Call links"). In memory, beside
 * the rooms themselves (server/sfu/sfu.ts): a room and its invitations live
 * and end together on one node; the ring itself reaches each invitee device
 * through the hub's per-device delivery, on whichever node holds the device.
 *
 * Who may join a room (`room.join` by id): its host (the creator's account),
 * the accounts invited into it, and the accounts let in through a call link.
 * Not a contact of a participant by that alone: a room id travels in rings,
 * logs and call histories, and being one participant's contact is no consent
 * of the others; inviting costs one request.
 *
 * Ringing follows the 1:1 rules: every online device of an invited account
 * rings (`room.ring`); one of them joining stops the others
 * (`answered_elsewhere`), one declining stops the others
 * (`declined_elsewhere`); after the ring timeout all stop (`timeout`); the
 * room's end stops every ring of it (`room_ended`). A device of the account
 * that comes online (says `hello`) while the ring lasts rings too, until the
 * same `expiresAt` (Signal and WhatsApp do this; a 1:1 call cannot, its
 * invite is sealed to the devices online when it was placed). When a ring
 * stops, everyone in the room hears how it ended (`room.invite_ended`).
 */
export class RoomInvitations {
  private readonly rooms = new Map<RoomId, Guests>();

  constructor(private readonly deps: InvitationDeps) {}

  /** Starts the guest list of a room just created by `host`. */
  opened(roomId: RoomId, host: AccountRef): void {
    this.rooms.set(roomId, {
      host: { accountId: host.accountId, username: host.username },
      invited: new Map(),
      admitted: new Set(),
      rings: new Map(),
      links: new Map(),
      knocks: new Map(),
      timers: [],
    });
  }

  /** Runs `fn` after `delayMs` unless the room ended first (lifetime and budget policy). */
  addTimer(roomId: RoomId, delayMs: number, fn: () => void): void {
    const g = this.rooms.get(roomId);
    if (!g) return;
    const t = setTimeout(fn, Math.max(0, Math.min(delayMs, 2 ** 31 - 1)));
    t.unref();
    g.timers.push(t);
  }

  /** The room ended: every ring of it stops (`room_ended`), every knock is answered `admitted: false`. */
  ended(roomId: RoomId): void {
    const g = this.rooms.get(roomId);
    if (!g) return;
    this.rooms.delete(roomId);
    for (const t of g.timers) clearTimeout(t);
    for (const ring of g.rings.values()) this.stop(roomId, g, ring, 'room_ended');
    for (const k of g.knocks.values()) {
      clearTimeout(k.timer);
      this.deps.hub.notifyDevice(k.from.deviceId, 'room.knock_answered', { roomId, knockId: k.knockId, admitted: false });
    }
    g.knocks.clear();
  }

  /**
   * Everyone left the room (said `room.leave`) while rings of it were
   * unanswered: they stop (`cancelled`), as a 1:1 ring stops when the caller
   * hangs up. The room itself stays open until its empty-room timeout (an
   * invited account may still join by id, a link still works).
   */
  everyoneLeft(roomId: RoomId): void {
    const g = this.rooms.get(roomId);
    if (!g) return;
    for (const ring of [...g.rings.values()]) this.stop(roomId, g, ring, 'cancelled');
  }

  /** The room's host (its creator's account), or undefined for a room this node does not hold. */
  hostOf(roomId: RoomId): AccountRef | undefined {
    return this.rooms.get(roomId)?.host;
  }

  /** Open rooms whose host is `accountId` (the `max_rooms_per_account` limit). */
  hostedBy(accountId: string): number {
    let n = 0;
    for (const g of this.rooms.values()) if (g.host.accountId === accountId) n++;
    return n;
  }

  /** Accounts ringing now in the room. */
  ringingCount(roomId: RoomId): number {
    return this.rooms.get(roomId)?.rings.size ?? 0;
  }

  /** True when the account's devices ring for the room now. */
  isRinging(roomId: RoomId, accountId: string): boolean {
    return this.rooms.get(roomId)?.rings.has(accountId) ?? false;
  }

  /**
   * May `peer` join the room (by id, or with a link token)?
   * @returns how it is allowed in (for the audit row); with a valid link token
   *   that needs no approval the account is let in from now on.
   * @throws ParleyError `forbidden` naming why (not invited; the link expired,
   *   was revoked, is unknown, or needs the host's approval first).
   */
  access(roomId: RoomId, peer: PeerInfo, linkToken?: string): JoinVia {
    const g = this.guests(roomId);
    if (g.host.accountId === peer.accountId) return 'host';
    if (g.invited.has(peer.accountId)) return 'invite';
    if (g.admitted.has(peer.accountId)) return 'admitted';
    if (linkToken === undefined) {
      throw new ParleyError('forbidden', 'you are not invited to this group call: ask a participant to invite you or for a call link');
    }
    const link = this.validLink(g, linkToken);
    if (link.approval) {
      throw new ParleyError('forbidden', 'this call link needs the host to let you in: knock first (room.knock)');
    }
    g.admitted.add(peer.accountId);
    return 'link';
  }

  /**
   * Rings every online device of each invitee (`room.ring`, per device, the
   * 1:1 delivery) and lets the invitees join by id. An account that already
   * rings for the room is left out (its ring goes on).
   * @param participants usernames in the room now (shown on the ringing screen).
   * @returns the accounts rung and how many devices ring.
   */
  ring(roomId: RoomId, inviter: RoomParticipant, invitees: readonly AccountRef[], participants: string[]): { invited: AccountRef[]; devices: number } {
    const g = this.guests(roomId);
    const timeoutMs = this.deps.ringTimeoutMs();
    const invited: AccountRef[] = [];
    let devices = 0;
    for (const account of invitees) {
      g.invited.set(account.accountId, account);
      if (g.rings.has(account.accountId)) continue;
      invited.push(account);
      const expiresAt = Date.now() + timeoutMs;
      const online = this.deps.hub.devicesOf(account.accountId);
      const timer = setTimeout(() => {
        const r = g.rings.get(account.accountId);
        if (r && this.rooms.get(roomId) === g) this.stop(roomId, g, r, 'timeout');
      }, timeoutMs);
      timer.unref();
      // With no device online it rings on all the same: a device that comes online in time rings then.
      const ring: Ring = { account, inviter, devices: new Set(online), expiresAt, timer };
      g.rings.set(account.accountId, ring);
      for (const deviceId of online) {
        this.deps.hub.notifyDevice(deviceId, 'room.ring', { roomId, inviter, participants, expiresAt });
        devices++;
      }
    }
    this.deps.log.info({ roomId, invited: invited.map((a) => a.accountId), devices }, 'room rings');
    return { invited, devices };
  }

  /**
   * A device said `hello` (on this node, or on another: the cluster's hello
   * broadcast): every room still ringing for its account rings it too
   * (`room.ring`, with the ring's own `expiresAt`). A device that already
   * rang gets the ring again (it may have restarted and forgotten it; the
   * client keeps one ring per room).
   * @returns how many rooms ring it.
   */
  deviceOnline(peer: PeerInfo): number {
    const now = Date.now();
    let n = 0;
    for (const [roomId, g] of this.rooms) {
      const ring = g.rings.get(peer.accountId);
      if (!ring || ring.expiresAt <= now) continue;
      ring.devices.add(peer.deviceId);
      const participants = [...new Set(this.deps.participantsOf?.(roomId) ?? [])];
      this.deps.hub.notifyDevice(peer.deviceId, 'room.ring', { roomId, inviter: ring.inviter, participants, expiresAt: ring.expiresAt });
      n++;
    }
    if (n > 0) this.deps.log.info({ deviceId: peer.deviceId, rooms: n }, 'room rings a device that came online');
    return n;
  }

  /** A device of `peer`'s account joined: its other ringing devices stop (`answered_elsewhere`). */
  joined(roomId: RoomId, peer: PeerInfo): void {
    const g = this.rooms.get(roomId);
    const ring = g?.rings.get(peer.accountId);
    if (!g || !ring) return;
    ring.devices.delete(peer.deviceId);
    this.stop(roomId, g, ring, 'answered_elsewhere');
  }

  /**
   * A ringing device refuses: the account's other ringing devices stop (`declined_elsewhere`).
   * @throws ParleyError `not_found` when the room does not ring for this account.
   */
  decline(roomId: RoomId, peer: PeerInfo): void {
    const g = this.rooms.get(roomId);
    const ring = g?.rings.get(peer.accountId);
    if (!g || !ring) throw new ParleyError('not_found', 'this group call does not ring for you (it was answered, declined, timed out or ended)');
    ring.devices.delete(peer.deviceId);
    this.stop(roomId, g, ring, 'declined_elsewhere');
  }

  /**
   * Creates a call link: `parley://room/<roomId>?t=<token>`.
   * @param notAfter the link never outlives this (the room's lifetime), Unix ms.
   * @returns the URL (holding the token: give it to the creator only, never log it), its id and expiry.
   * @throws ParleyError `policy` (too many links in the room).
   */
  createLink(roomId: RoomId, options: { expiresInSeconds?: number | undefined; approval?: boolean | undefined }, notAfter = Infinity): { linkId: string; url: string; expiresAt: number; approval: boolean } {
    const g = this.guests(roomId);
    for (const [id, l] of g.links) if (g.links.size >= MAX_LINKS_PER_ROOM && (l.revoked || l.expiresAt <= Date.now())) g.links.delete(id);
    if (g.links.size >= MAX_LINKS_PER_ROOM) throw new ParleyError('policy', `a room holds at most ${MAX_LINKS_PER_ROOM} call links; revoke one first`);
    const token = randomBytes(LINK_TOKEN_BYTES).toString('base64url');
    const link: Link = {
      linkId: randomUUID(),
      tokenHash: hashToken(token),
      expiresAt: Math.min(Date.now() + (options.expiresInSeconds ?? DEFAULT_LINK_SECONDS) * 1000, notAfter),
      approval: options.approval ?? false,
      revoked: false,
    };
    g.links.set(link.linkId, link);
    return { linkId: link.linkId, url: `parley://room/${roomId}?t=${token}`, expiresAt: link.expiresAt, approval: link.approval };
  }

  /** Stops a link working (its users already let in stay let in). @throws ParleyError `not_found`. */
  revokeLink(roomId: RoomId, linkId: string): void {
    const link = this.guests(roomId).links.get(linkId);
    if (!link || link.revoked) throw new ParleyError('not_found', `no call link ${linkId} in this room`);
    link.revoked = true;
  }

  /** The id of the link a token belongs to, if any (for the audit row). */
  linkIdOf(roomId: RoomId, token: string): string | undefined {
    const g = this.rooms.get(roomId);
    return g ? this.findLink(g, token)?.linkId : undefined;
  }

  /**
   * Asks to be let in through a link. A link without approval (or an account
   * that may join anyway) is let in at once; otherwise the host's devices in
   * the room get `room.knock` and the knock waits for `admit` up to the ring
   * timeout (then `room.knock_answered` `admitted: false`).
   * @param hostDevices the host's devices in the room now.
   * @throws ParleyError `forbidden` (link expired, revoked, unknown), `unavailable` (the host is not in the room), `rate_limited` (too many knocks waiting).
   */
  knock(roomId: RoomId, from: PeerInfo, token: string, hostDevices: string[]): { knockId: string; state: 'waiting' | 'admitted'; linkId: string } {
    const g = this.guests(roomId);
    const link = this.validLink(g, token);
    const knockId = randomUUID();
    const may = g.host.accountId === from.accountId || g.invited.has(from.accountId) || g.admitted.has(from.accountId);
    if (may || !link.approval) {
      g.admitted.add(from.accountId);
      return { knockId, state: 'admitted', linkId: link.linkId };
    }
    if (hostDevices.length === 0) throw new ParleyError('unavailable', "the call's host is not in it now, so nobody can let you in; try again later");
    if (g.knocks.size >= MAX_KNOCKS_PER_ROOM) throw new ParleyError('rate_limited', 'too many people are waiting to be let in; try again shortly', { retryAfter: 10 });
    const timer = setTimeout(() => {
      if (g.knocks.delete(knockId)) this.deps.hub.notifyDevice(from.deviceId, 'room.knock_answered', { roomId, knockId, admitted: false });
    }, this.deps.ringTimeoutMs());
    timer.unref();
    g.knocks.set(knockId, { knockId, from, linkId: link.linkId, timer });
    const participant: RoomParticipant = { accountId: from.accountId, username: from.username, deviceId: from.deviceId };
    for (const d of hostDevices) this.deps.hub.notifyDevice(d, 'room.knock', { roomId, knockId, from: participant });
    return { knockId, state: 'waiting', linkId: link.linkId };
  }

  /**
   * The host lets a knocking account in, or not; the knocking device gets `room.knock_answered`.
   * @returns who knocked.
   * @throws ParleyError `forbidden` (not the host), `not_found` (no such knock waiting).
   */
  admit(roomId: RoomId, by: PeerInfo, knockId: string, admit: boolean): PeerInfo {
    const g = this.guests(roomId);
    if (g.host.accountId !== by.accountId) throw new ParleyError('forbidden', "only the call's host can let people in");
    const k = g.knocks.get(knockId);
    if (!k) throw new ParleyError('not_found', 'nobody is waiting with that knock (answered already, or it expired)');
    clearTimeout(k.timer);
    g.knocks.delete(knockId);
    if (admit) g.admitted.add(k.from.accountId);
    this.deps.hub.notifyDevice(k.from.deviceId, 'room.knock_answered', { roomId, knockId, admitted: admit });
    return k.from;
  }

  // ---- internals -----------------------------------------------------------

  private guests(roomId: RoomId): Guests {
    const g = this.rooms.get(roomId);
    if (!g) throw new ParleyError('not_found', `no room ${roomId}`);
    return g;
  }

  private findLink(g: Guests, token: string): Link | undefined {
    const h = hashToken(token);
    for (const l of g.links.values()) if (timingSafeEqual(l.tokenHash, h)) return l;
    return undefined;
  }

  /** @throws ParleyError `forbidden` naming what is wrong with the link. */
  private validLink(g: Guests, token: string): Link {
    const link = this.findLink(g, token);
    if (!link) throw new ParleyError('forbidden', 'this call link is not valid for this room (mistyped, or from another room)');
    if (link.revoked) throw new ParleyError('forbidden', 'this call link was revoked by a participant; ask for a new one');
    if (link.expiresAt <= Date.now()) throw new ParleyError('forbidden', `this call link expired at ${new Date(link.expiresAt).toISOString()}; ask for a new one`);
    return link;
  }

  /**
   * Stops a ring: its remaining devices get `room.ring_cancelled` with
   * `reason`, and the room hears how the invitation ended (`room.invite_ended`).
   */
  private stop(roomId: RoomId, g: Guests, ring: Ring, reason: RoomRingCancelReason): void {
    clearTimeout(ring.timer);
    g.rings.delete(ring.account.accountId);
    for (const deviceId of ring.devices) this.deps.hub.notifyDevice(deviceId, 'room.ring_cancelled', { roomId, reason });
    ring.devices.clear();
    try {
      this.deps.inviteEnded?.(roomId, ring.account, INVITE_END[reason]);
    } catch (err) {
      this.deps.log.warn({ err, roomId }, 'room.invite_ended not delivered');
    }
  }
}
