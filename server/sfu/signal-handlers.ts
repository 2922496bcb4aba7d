import type { Logger } from 'pino';
import type { Accounts } from '../accounts';
import type { AuditInput, AuditLog } from '../audit';
import type { Cluster } from '../cluster';
import type { ServerConfig } from '../config';
import type { Contacts } from '../contacts';
import type { AccountRef, Hub } from '../hub';
import type { CallPolicy } from '../policy';
import type { RpcPeer } from '../../common/protocol/rpc';
import { RoomRequests, type RoomId, type RoomNotification, type RoomNotificationParams } from '../../common/protocol/sfu';
import type { PeerInfo } from '../../common/protocol/signaling';
import { ParleyError } from '../../common/errors';
import { checkCallAllowed } from '../signal/calls';
import type { RoomInvitations } from './invitations';
import type { Room, RoomMember } from './room';
import type { Sfu } from './sfu';

/**
 * What the room handlers need of a signaling connection (a structural part
 * of server/signal's `SignalConnection`).
 */
export interface RoomConnection<Ctx> {
  /** Register handlers here; notifications to this device go out through it too. */
  readonly peer: RpcPeer<Ctx>;
  readonly log: Logger;
  /**
   * The authenticated device.
   * @throws ParleyError `unauthenticated` before hello, `token_expired` after the token's end.
   */
  me(): PeerInfo;
  /** Runs `fn` when the socket closes. */
  onClose(fn: () => void): void;
  /** True once the socket has closed (frames queued before it may still be handled). */
  isClosed(): boolean;
}

/** What the room handlers use of the server. */
export interface RoomDeps {
  sfu: Sfu;
  /** Ringing, call links and knocks of the rooms (server/sfu/invitations.ts). */
  roomInvitations: RoomInvitations;
  audit: Pick<AuditLog, 'record'>;
  accounts: Pick<Accounts, 'findByUsername' | 'contactsOnly'>;
  contacts: Pick<Contacts, 'areContacts' | 'hasBlocked'>;
  policy: Pick<CallPolicy, 'checkRoomAction' | 'onEnded'>;
  hub: Pick<Hub, 'devicesOf'>;
  /** The live configuration (`sfu.*`, `policy.*`). */
  config: Pick<ServerConfig, 'sfu' | 'policy'>;
  /** Several nodes: `sfu.max_rooms_per_account` counts the account's rooms on every node. */
  cluster?: Pick<Cluster, 'roomHosted' | 'roomsHostedBy'> | undefined;
}

/**
 * Registers the group-call methods (`RoomRequests`, common/protocol/sfu.ts)
 * on one signaling connection. The device joins rooms through this
 * connection and hears them through it (`room.*` notifications); when the
 * socket closes it keeps its place in every room it is in for the SFU's
 * `reconnect_grace_seconds` (the others get `room.participant_away`; its
 * media goes on) and takes it back with `room.resume` on a new connection;
 * after the grace it leaves (the others get `room.participant_left`). Every method needs `hello` first.
 */
/**
 * When each device first joined each room, Unix ms: a place resumed on a new
 * connection (`room.resume`) keeps counting from there for the audit's
 * `room.left` seconds and the call-time budget.
 */
const JOINED_AT = new WeakMap<Room, Map<string, number>>();

export function registerRoomHandlers<Ctx>(conn: RoomConnection<Ctx>, deps: RoomDeps): void {
  const { sfu, audit, roomInvitations: invitations, policy } = deps;
  /** Rooms this connection joined, with the device id it joined as and when (Unix ms). */
  const joined = new Map<RoomId, { room: Room; deviceId: string; at: number }>();
  /** The device, also after its token expired (for the records of a closing connection). */
  let bound: PeerInfo | undefined;
  const safeMe = (): PeerInfo | undefined => {
    try {
      bound = conn.me();
    } catch {
      // expired token or closed: the last known device
    }
    return bound;
  };
  /** Records a left room: its audit row and the time it used of the account's daily budget. */
  const left = (roomId: RoomId, entry: { at: number }): void => {
    const me = safeMe();
    if (!me) return;
    const ms = Date.now() - entry.at;
    void audit.record({ event: 'room.left', accountId: me.accountId, deviceId: me.deviceId, detail: { roomId, seconds: Math.round(ms / 1000) } });
    void policy.onEnded([me.accountId], ms);
  };
  /** Audits a refused room action and rethrows. */
  const refused = (action: string, me: PeerInfo, detail: Record<string, unknown>, e: unknown): never => {
    if (e instanceof ParleyError) {
      const row: AuditInput = { event: 'room.refused', accountId: me.accountId, deviceId: me.deviceId, detail: { action, reason: e.reason, ...detail } };
      void audit.record(row);
    }
    throw e;
  };
  /**
   * The accounts named, checked as a 1:1 invite is: each exists, its
   * contacts-only setting lets `me` in, neither blocked the other; yourself
   * and repeats are left out.
   * @throws ParleyError `unknown_user`, `not_contact`, `forbidden` (a block).
   */
  const resolveInvitees = async (me: PeerInfo, usernames: readonly string[]): Promise<AccountRef[]> => {
    const out = new Map<string, AccountRef>();
    for (const name of usernames) {
      const a = await deps.accounts.findByUsername(name);
      if (!a) throw new ParleyError('unknown_user', `no account named ${name}`);
      if (a.accountId === me.accountId || out.has(a.accountId)) continue;
      const ref = { accountId: a.accountId, username: a.username };
      if (await deps.contacts.hasBlocked(me.accountId, a.accountId)) {
        throw new ParleyError('forbidden', `you blocked ${a.username}; unblock them to invite them`);
      }
      if (await checkCallAllowed(me, ref, deps.contacts, deps.accounts)) {
        throw new ParleyError('forbidden', `you cannot invite ${a.username} to a group call`);
      }
      out.set(a.accountId, ref);
    }
    return [...out.values()];
  };
  /** Rings `invitees` into `room` and audits it. */
  const ringInto = (room: Room, me: PeerInfo, invitees: AccountRef[]): string[] => {
    const participants = room.snapshot().participants;
    const inRoom = new Set(participants.map((p) => p.accountId));
    const fresh = invitees.filter((a) => !inRoom.has(a.accountId));
    const ringingNow = invitations.ringingCount(room.id);
    const newcomers = fresh.filter((a) => !invitations.isRinging(room.id, a.accountId)).length;
    if (room.size + ringingNow + newcomers > room.maxParticipants)
      throw new ParleyError('room_full', `the room holds ${room.maxParticipants} participants: ${room.size} are in it and ${ringingNow} ringing, so not ${newcomers} more`);
    const inviter = { accountId: me.accountId, username: me.username, deviceId: me.deviceId };
    const r = invitations.ring(room.id, inviter, fresh, [...new Set(participants.map((p) => p.username))]);
    if (r.invited.length > 0) {
      void audit.record({
        event: 'room.invited',
        accountId: me.accountId,
        deviceId: me.deviceId,
        detail: { roomId: room.id, invited: r.invited.map((a) => a.accountId), devices: r.devices },
      });
    }
    return r.invited.map((a) => a.username);
  };
  /** Ends a room by policy (lifetime, budget); nothing when it already ended. */
  const endByPolicy = (roomId: RoomId, reason: 'ttl_expired' | 'budget_exceeded'): void => {
    try {
      sfu.end(roomId, reason);
    } catch {
      // ended already
    }
  };
  /** Tells this connection's place in a room from the same device's other connection. */
  const token = {};

  const member = (): RoomMember => ({
    peer: conn.me(),
    token,
    notify<N extends RoomNotification>(method: N, params: RoomNotificationParams<N>) {
      if (method === 'room.ended') {
        const entry = joined.get(params.roomId);
        joined.delete(params.roomId);
        if (entry) left(params.roomId, entry);
      }
      if (!conn.isClosed()) conn.peer.notify(method, params);
    },
  });
  /** The room, if this connection is in it: its device id with it. */
  const mine = (roomId: RoomId): { room: Room; deviceId: string; at: number } => {
    conn.me();
    const room = sfu.room(roomId);
    const entry = joined.get(roomId);
    if (entry?.room !== room) throw new ParleyError('invalid_state', 'join the room first (room.join)');
    return entry;
  };
  const ok = { ok: true as const };

  conn.peer.handle('room.create', RoomRequests['room.create'].params, async (p) => {
    const me = conn.me();
    let invitees: AccountRef[] = [];
    try {
      invitees = p.invite?.length ? await resolveInvitees(me, p.invite) : [];
      await policy.checkRoomAction(me, invitees, { rate: true });
      const most = deps.config.sfu.maxRoomsPerAccount;
      if (most > 0) {
        // Several nodes: the rooms on every node (Redis); this node's own count when Redis is away.
        const hosted = Math.max(invitations.hostedBy(me.accountId), (await deps.cluster?.roomsHostedBy(me.accountId)) ?? 0);
        if (hosted >= most) throw new ParleyError('policy', `you have ${most} group calls open already (this server's limit); end one first`);
      }
      const size = p.maxParticipants ?? deps.config.sfu.maxParticipants;
      if (invitees.length + 1 > size) throw new ParleyError('room_full', `a room of ${size} cannot take you and ${invitees.length} invitees`);
    } catch (e) {
      refused('create', me, p.invite ? { invitees: p.invite.length } : {}, e);
    }
    const room = await sfu.createRoom(p.maxParticipants);
    invitations.opened(room.id, me);
    await deps.cluster?.roomHosted(room.id, me.accountId);
    const lifetime = deps.config.sfu.roomLifetimeSeconds;
    if (lifetime > 0) invitations.addTimer(room.id, lifetime * 1000, () => endByPolicy(room.id, 'ttl_expired'));
    const pol = deps.config.policy;
    if (pol.hardStop && pol.callBudgetSeconds > 0 && (lifetime === 0 || pol.callBudgetSeconds < lifetime))
      invitations.addTimer(room.id, pol.callBudgetSeconds * 1000, () => endByPolicy(room.id, 'budget_exceeded'));
    conn.log.info({ roomId: room.id, maxParticipants: room.maxParticipants, by: me.deviceId }, 'room created');
    void audit.record({
      event: 'room.created',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { roomId: room.id, maxParticipants: room.maxParticipants, workerPid: room.worker.pid },
    });
    if (!p.invite) return { roomId: room.id, maxParticipants: room.maxParticipants };
    return { roomId: room.id, maxParticipants: room.maxParticipants, invited: ringInto(room, me, invitees) };
  });

  conn.peer.handle('room.invite', RoomRequests['room.invite'].params, async (p) => {
    const me = conn.me();
    try {
      const { room } = mine(p.roomId);
      const invitees = await resolveInvitees(me, p.usernames);
      await policy.checkRoomAction(me, invitees, { rate: true });
      return { invited: ringInto(room, me, invitees) };
    } catch (e) {
      return refused('invite', me, { roomId: p.roomId, invitees: p.usernames.length }, e);
    }
  });

  conn.peer.handle('room.decline', RoomRequests['room.decline'].params, (p) => {
    const me = conn.me();
    invitations.decline(p.roomId, me);
    void audit.record({ event: 'room.declined', accountId: me.accountId, deviceId: me.deviceId, detail: { roomId: p.roomId } });
    return ok;
  });

  conn.peer.handle('room.link.create', RoomRequests['room.link.create'].params, (p) => {
    const me = conn.me();
    const { room } = mine(p.roomId);
    const lifetime = deps.config.sfu.roomLifetimeSeconds;
    const link = invitations.createLink(room.id, p, lifetime > 0 ? room.createdAt + lifetime * 1000 : Infinity);
    void audit.record({
      event: 'room.link_created',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { roomId: room.id, linkId: link.linkId, expiresAt: link.expiresAt, approval: link.approval },
    });
    conn.log.info({ roomId: room.id, linkId: link.linkId, expiresAt: link.expiresAt, approval: link.approval }, 'call link created');
    return link;
  });

  conn.peer.handle('room.link.revoke', RoomRequests['room.link.revoke'].params, (p) => {
    const me = conn.me();
    const { room } = mine(p.roomId);
    invitations.revokeLink(room.id, p.linkId);
    void audit.record({ event: 'room.link_revoked', accountId: me.accountId, deviceId: me.deviceId, detail: { roomId: room.id, linkId: p.linkId } });
    return ok;
  });

  conn.peer.handle('room.knock', RoomRequests['room.knock'].params, async (p) => {
    const me = conn.me();
    try {
      const room = sfu.room(p.roomId);
      await policy.checkRoomAction(me, [], { rate: true });
      const host = invitations.hostOf(room.id);
      const hostDevices = room.snapshot().participants.filter((x) => x.accountId === host?.accountId).map((x) => x.deviceId);
      const r = invitations.knock(room.id, me, p.link, hostDevices);
      void audit.record({ event: 'room.link_used', accountId: me.accountId, deviceId: me.deviceId, detail: { roomId: room.id, linkId: r.linkId, knock: r.state } });
      return { knockId: r.knockId, state: r.state };
    } catch (e) {
      return refused('knock', me, { roomId: p.roomId }, e);
    }
  });

  conn.peer.handle('room.admit', RoomRequests['room.admit'].params, (p) => {
    const me = conn.me();
    sfu.room(p.roomId);
    const who = invitations.admit(p.roomId, me, p.knockId, p.admit);
    void audit.record({
      event: 'room.knock_answered',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { roomId: p.roomId, knockId: p.knockId, knockerAccountId: who.accountId, admitted: p.admit },
    });
    return ok;
  });

  conn.peer.handle('room.join', RoomRequests['room.join'].params, async (p) => {
    const m = member();
    const me = conn.me();
    bound = me;
    let room: Room;
    let via;
    try {
      room = sfu.room(p.roomId);
      await policy.checkRoomAction(me, [], { rate: false });
      via = invitations.access(room.id, me, p.link);
    } catch (e) {
      return refused('join', me, { roomId: p.roomId }, e);
    }
    // A join queued behind other frames when the socket closed would leave a participant nobody removes.
    if (conn.isClosed()) throw new ParleyError('unavailable', 'connection closed');
    const result = room.join(m);
    const at = Date.now();
    joined.set(room.id, { room, deviceId: m.peer.deviceId, at });
    if (!JOINED_AT.has(room)) JOINED_AT.set(room, new Map());
    JOINED_AT.get(room)!.set(m.peer.deviceId, at);
    invitations.joined(room.id, me);
    void audit.record({
      event: 'room.joined',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { roomId: room.id, via, ...(via === 'link' && p.link ? { linkId: invitations.linkIdOf(room.id, p.link) } : {}) },
    });
    if (via === 'link' && p.link) {
      void audit.record({ event: 'room.link_used', accountId: me.accountId, deviceId: me.deviceId, detail: { roomId: room.id, linkId: invitations.linkIdOf(room.id, p.link) } });
    }
    return {
      roomId: room.id,
      routerRtpCapabilities: result.routerRtpCapabilities,
      participants: result.participants,
      producers: result.producers,
      speaker: result.speaker,
      maxParticipants: room.maxParticipants,
      reconnectGraceMs: sfu.listen.reconnectGraceMs,
    };
  });

  conn.peer.handle('room.resume', RoomRequests['room.resume'].params, (p) => {
    const m = member();
    if (conn.isClosed()) throw new ParleyError('unavailable', 'connection closed');
    const room = sfu.room(p.roomId);
    const result = room.resume(m);
    // The place's time counts from its first join (JOINED_AT), not from the resume.
    joined.set(room.id, { room, deviceId: m.peer.deviceId, at: JOINED_AT.get(room)?.get(m.peer.deviceId) ?? Date.now() });
    conn.log.info({ roomId: room.id }, 'room resumed');
    return {
      roomId: room.id,
      routerRtpCapabilities: result.routerRtpCapabilities,
      participants: result.participants,
      producers: result.producers,
      speaker: result.speaker,
      maxParticipants: room.maxParticipants,
      reconnectGraceMs: sfu.listen.reconnectGraceMs,
    };
  });

  conn.peer.handle('room.leave', RoomRequests['room.leave'].params, (p) => {
    const entry = mine(p.roomId);
    joined.delete(p.roomId);
    entry.room.leave(entry.deviceId, token);
    left(p.roomId, entry);
    // The last one out before anyone answered: the ringing stops (a participant whose connection dropped still counts).
    if (entry.room.size === 0) invitations.everyoneLeft(p.roomId);
    return ok;
  });

  conn.peer.handle('room.relay', RoomRequests['room.relay'].params, (p) => {
    const { room, deviceId } = mine(p.roomId);
    room.relay(deviceId, p.to, p.envelope);
    return ok;
  });

  conn.peer.handle('room.transport.create', RoomRequests['room.transport.create'].params, async (p) => {
    const { room, deviceId } = mine(p.roomId);
    const t = await room.createTransport(deviceId, p.direction, sfu.listen);
    return {
      transportId: t.id,
      iceParameters: t.iceParameters,
      iceCandidates: t.iceCandidates,
      dtlsParameters: t.dtlsParameters,
    };
  });

  conn.peer.handle('room.transport.connect', RoomRequests['room.transport.connect'].params, async (p) => {
    const { room, deviceId } = mine(p.roomId);
    await room.connectTransport(deviceId, p.transportId, p.dtlsParameters);
    return ok;
  });

  conn.peer.handle('room.transport.restart_ice', RoomRequests['room.transport.restart_ice'].params, async (p) => {
    const { room, deviceId } = mine(p.roomId);
    return { iceParameters: await room.restartIce(deviceId, p.transportId) };
  });

  conn.peer.handle('room.produce', RoomRequests['room.produce'].params, async (p) => {
    const { room, deviceId } = mine(p.roomId);
    const producer = await room.produce(deviceId, p.transportId, p.rtpParameters, p.paused ?? false);
    return { producerId: producer.id };
  });

  conn.peer.handle('room.producer.pause', RoomRequests['room.producer.pause'].params, async (p) => {
    const { room, deviceId } = mine(p.roomId);
    await room.setProducerPaused(deviceId, p.producerId, true);
    return ok;
  });

  conn.peer.handle('room.producer.resume', RoomRequests['room.producer.resume'].params, async (p) => {
    const { room, deviceId } = mine(p.roomId);
    await room.setProducerPaused(deviceId, p.producerId, false);
    return ok;
  });

  conn.peer.handle('room.producer.close', RoomRequests['room.producer.close'].params, (p) => {
    const { room, deviceId } = mine(p.roomId);
    room.closeProducer(deviceId, p.producerId);
    return ok;
  });

  conn.peer.handle('room.consume', RoomRequests['room.consume'].params, async (p) => {
    const { room, deviceId } = mine(p.roomId);
    const { consumer, owner } = await room.consume(deviceId, p.producerId, p.rtpCapabilities);
    return {
      consumerId: consumer.id,
      producerId: consumer.producerId,
      kind: 'audio' as const,
      rtpParameters: consumer.rtpParameters,
      participant: owner,
    };
  });

  conn.peer.handle('room.consumer.pause', RoomRequests['room.consumer.pause'].params, async (p) => {
    const { room, deviceId } = mine(p.roomId);
    await room.setConsumerPaused(deviceId, p.consumerId, true);
    return ok;
  });

  conn.peer.handle('room.consumer.resume', RoomRequests['room.consumer.resume'].params, async (p) => {
    const { room, deviceId } = mine(p.roomId);
    await room.setConsumerPaused(deviceId, p.consumerId, false);
    return ok;
  });

  conn.onClose(() => {
    // A dropped connection keeps its places for the grace (room.resume takes them back); `room.leave` above does not.
    // Its time in the room is audited and counted once it is really gone (not if it comes back).
    const graceMs = sfu.listen.reconnectGraceMs;
    for (const [roomId, entry] of joined) entry.room.detach(entry.deviceId, token, graceMs, () => left(roomId, entry));
    joined.clear();
  });
}
