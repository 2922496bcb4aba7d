import type { Logger } from 'pino';
import type { AuditLog } from '../audit';
import type { RpcPeer } from '../../common/protocol/rpc';
import { RoomRequests, type RoomId, type RoomNotification, type RoomNotificationParams } from '../../common/protocol/sfu';
import type { PeerInfo } from '../../common/protocol/signaling';
import { ParleyError } from '../../common/errors';
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
  audit: Pick<AuditLog, 'record'>;
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
export function registerRoomHandlers<Ctx>(conn: RoomConnection<Ctx>, deps: RoomDeps): void {
  const { sfu, audit } = deps;
  /** Rooms this connection joined, with the device id it joined as. */
  const joined = new Map<RoomId, { room: Room; deviceId: string }>();
  /** Tells this connection's place in a room from the same device's other connection. */
  const token = {};

  const member = (): RoomMember => ({
    peer: conn.me(),
    token,
    notify<N extends RoomNotification>(method: N, params: RoomNotificationParams<N>) {
      if (method === 'room.ended') joined.delete(params.roomId);
      if (!conn.isClosed()) conn.peer.notify(method, params);
    },
  });
  /** The room, if this connection is in it: its device id with it. */
  const mine = (roomId: RoomId): { room: Room; deviceId: string } => {
    conn.me();
    const room = sfu.room(roomId);
    const entry = joined.get(roomId);
    if (entry?.room !== room) throw new ParleyError('invalid_state', 'join the room first (room.join)');
    return entry;
  };
  const ok = { ok: true as const };

  conn.peer.handle('room.create', RoomRequests['room.create'].params, async (p) => {
    const me = conn.me();
    const room = await sfu.createRoom(p.maxParticipants);
    conn.log.info({ roomId: room.id, maxParticipants: room.maxParticipants, by: me.deviceId }, 'room created');
    void audit.record({
      event: 'room.created',
      accountId: me.accountId,
      deviceId: me.deviceId,
      detail: { roomId: room.id, maxParticipants: room.maxParticipants, workerPid: room.worker.pid },
    });
    return { roomId: room.id, maxParticipants: room.maxParticipants };
  });

  conn.peer.handle('room.join', RoomRequests['room.join'].params, (p) => {
    const m = member();
    // A join queued behind other frames when the socket closed would leave a participant nobody removes.
    if (conn.isClosed()) throw new ParleyError('unavailable', 'connection closed');
    const room = sfu.room(p.roomId);
    const result = room.join(m);
    joined.set(room.id, { room, deviceId: m.peer.deviceId });
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
    joined.set(room.id, { room, deviceId: m.peer.deviceId });
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
    const { room, deviceId } = mine(p.roomId);
    joined.delete(p.roomId);
    room.leave(deviceId, token);
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
    const graceMs = sfu.listen.reconnectGraceMs;
    for (const { room, deviceId } of joined.values()) room.detach(deviceId, token, graceMs);
    joined.clear();
  });
}
