import type { Envelope } from '../../common/protocol/envelope';
import type { types } from 'mediasoup';
import type { Logger } from 'pino';
import { ParleyError } from '../../common/errors';
import type {
  DtlsParameters,
  RoomEndReason,
  RoomId,
  RoomNotification,
  RoomNotificationParams,
  RoomParticipant,
  RoomProducer,
  RtpCapabilities,
  RtpParameters,
  TransportDirection,
} from '../../common/protocol/sfu';
import { ACTIVE_SPEAKER_INTERVAL_MS, AUDIO_LEVEL_INTERVAL_MS, AUDIO_LEVEL_THRESHOLD_DBOV } from './codecs';

/**
 * One member's way to hear from the room: its signaling connection. `token`
 * tells two connections of the same device apart (a device that reconnects
 * takes its own place in the room).
 */
export interface RoomMember {
  peer: RoomParticipant;
  token: object;
  notify<N extends RoomNotification>(method: N, params: RoomNotificationParams<N>): void;
}

/** Where new WebRTC transports listen (read from the live `[sfu]` config each time). */
export interface TransportListen {
  listenIp: string;
  announcedAddress: string;
  rtcMinPort: number;
  rtcMaxPort: number;
}

/** What the room tells its owner (server/sfu/sfu.ts). */
export interface RoomHooks {
  /** The room ended (once), with `participants` in it. */
  onEnded(room: Room, reason: RoomEndReason, participants: number): void;
  /** The room became empty (a timer may end it) or someone joined it again. */
  onEmptyChanged(room: Room, empty: boolean): void;
}

/** A room as the admin API lists it. Times are Unix ms. */
export interface RoomSnapshot {
  roomId: RoomId;
  createdAt: number;
  maxParticipants: number;
  /** The mediasoup worker process carrying the room. */
  workerPid: number;
  participants: (RoomParticipant & {
    joinedAt: number;
    producers: number;
    consumers: number;
    away: boolean;
    /** Each transport's ICE-selected remote address (`ip:port`), null before ICE completes. */
    paths: { direction: TransportDirection; remote: string | null }[];
  })[];
}

/**
 * A participant: one device in the room, owning its transports (one per
 * direction) and, through them, its producers and consumers: closing a
 * transport closes what runs on it (mediasoup).
 */
class Participant {
  readonly joinedAt = Date.now();
  readonly transports: Partial<Record<TransportDirection, types.WebRtcTransport>> = {};
  readonly producers = new Map<string, types.Producer>();
  readonly consumers = new Map<string, types.Consumer>();
  /**
   * Set while its signaling connection is gone (see {@link Room.detach}): the
   * timer that removes it when the grace is over. Its media goes on meanwhile.
   */
  away: NodeJS.Timeout | undefined;

  /** The connection it hears the room through; replaced when its device resumes on a new one. */
  constructor(public member: RoomMember) {}

  get peer(): RoomParticipant {
    return this.member.peer;
  }

  /** Its transport `transportId`. @throws ParleyError `not_found` */
  transport(transportId: string): types.WebRtcTransport {
    for (const t of Object.values(this.transports)) if (t.id === transportId) return t;
    throw new ParleyError('not_found', `no transport ${transportId} of yours in this room`);
  }

  close(): void {
    clearTimeout(this.away);
    this.away = undefined;
    for (const t of Object.values(this.transports)) t.close();
  }
}

/** The room's state: the router and everything on it live in `open`; `ended` keeps only why. */
type RoomState =
  | {
      phase: 'open';
      router: types.Router;
      speakers: types.ActiveSpeakerObserver;
      levels: types.AudioLevelObserver;
      participants: Map<string, Participant>;
      /** The dominant speaker's producer, as the ActiveSpeakerObserver last said (a newcomer is told at join). */
      speaker: { participant: Participant; producerId: string } | undefined;
    }
  | { phase: 'ended'; reason: RoomEndReason };

/**
 * A group call's room: a mediasoup Router on one worker (Opus only, see
 * codecs.ts), an ActiveSpeakerObserver and an AudioLevelObserver whose events
 * go to every participant, and the participants (one per device), each with
 * a send and a recv WebRTC transport. Every method checks, after each await,
 * that the room and the participant are still there (a room may end while a
 * request is in flight: its worker died, an admin ended it).
 */
export class Room {
  readonly createdAt = Date.now();
  private state: RoomState;

  /** Builds a room on `router` (see {@link Room.open}). */
  private constructor(
    readonly id: RoomId,
    readonly worker: types.Worker,
    readonly maxParticipants: number,
    router: types.Router,
    speakers: types.ActiveSpeakerObserver,
    levels: types.AudioLevelObserver,
    private readonly hooks: RoomHooks,
    private readonly log: Logger,
  ) {
    this.state = { phase: 'open', router, speakers, levels, participants: new Map(), speaker: undefined };
    speakers.on('dominantspeaker', ({ producer }) => {
      const owner = this.ownerOf(producer.id);
      if (!owner || this.state.phase !== 'open') return;
      this.state.speaker = { participant: owner, producerId: producer.id };
      this.broadcast('room.speaker', { roomId: id, participant: owner.peer, producerId: producer.id });
    });
    levels.on('volumes', (volumes) => {
      const list = volumes.flatMap(({ producer, volume }) => {
        const owner = this.ownerOf(producer.id);
        return owner ? [{ participant: owner.peer, producerId: producer.id, volume }] : [];
      });
      this.broadcast('room.audio_levels', { roomId: id, levels: list });
    });
    levels.on('silence', () => this.broadcast('room.audio_levels', { roomId: id, levels: [] }));
    // The router closes with its worker (a crash): the room cannot go on.
    router.on('workerclose', () => this.end('sfu_failed'));
  }

  /**
   * Opens a room: a router with `mediaCodecs` on `worker`, and its observers.
   * @throws Error from mediasoup when the worker is gone.
   */
  static async open(
    id: RoomId,
    worker: types.Worker,
    mediaCodecs: types.RouterRtpCodecCapability[],
    maxParticipants: number,
    hooks: RoomHooks,
    log: Logger,
  ): Promise<Room> {
    const router = await worker.createRouter({ mediaCodecs, appData: { roomId: id } });
    try {
      const speakers = await router.createActiveSpeakerObserver({ interval: ACTIVE_SPEAKER_INTERVAL_MS });
      const levels = await router.createAudioLevelObserver({
        maxEntries: maxParticipants,
        threshold: AUDIO_LEVEL_THRESHOLD_DBOV,
        interval: AUDIO_LEVEL_INTERVAL_MS,
      });
      return new Room(id, worker, maxParticipants, router, speakers, levels, hooks, log.child({ roomId: id }));
    } catch (e) {
      router.close();
      throw e;
    }
  }

  /** Why the room ended, or undefined while it is open. */
  get endReason(): RoomEndReason | undefined {
    return this.state.phase === 'ended' ? this.state.reason : undefined;
  }

  /** Participants now (0 once ended). */
  get size(): number {
    return this.state.phase === 'open' ? this.state.participants.size : 0;
  }

  /** For the admin API. */
  snapshot(): RoomSnapshot {
    const participants = this.state.phase === 'open' ? [...this.state.participants.values()] : [];
    return {
      roomId: this.id,
      createdAt: this.createdAt,
      maxParticipants: this.maxParticipants,
      workerPid: this.worker.pid,
      participants: participants.map((p) => ({
        ...p.peer,
        joinedAt: p.joinedAt,
        producers: p.producers.size,
        consumers: p.consumers.size,
        away: p.away !== undefined,
        paths: (Object.entries(p.transports) as [TransportDirection, types.WebRtcTransport][]).map(([direction, t]) => {
          const tuple = t.closed ? undefined : t.iceSelectedTuple;
          return { direction, remote: tuple ? `${tuple.remoteIp}:${tuple.remotePort}` : null };
        }),
      })),
    };
  }

  /**
   * Adds `member` to the room; everyone else gets `room.participant_joined`.
   * The same device on another connection (it reconnected) replaces its old place.
   * @throws ParleyError `room_ended`, `room_full`, `invalid_state` (already in on this connection).
   */
  join(member: RoomMember): {
    routerRtpCapabilities: types.RtpCapabilities;
    participants: RoomParticipant[];
    producers: RoomProducer[];
    speaker: { participant: RoomParticipant; producerId: string } | null;
  } {
    const open = this.open();
    const existing = open.participants.get(member.peer.deviceId);
    if (existing?.member.token === member.token)
      throw new ParleyError('invalid_state', 'this device is already in the room');
    if (existing) this.leave(member.peer.deviceId);
    if (open.participants.size >= this.maxParticipants)
      throw new ParleyError('room_full', `the room is full (${this.maxParticipants} participants)`);
    const others = [...open.participants.values()];
    open.participants.set(member.peer.deviceId, new Participant(member));
    if (open.participants.size === 1) this.hooks.onEmptyChanged(this, false);
    for (const o of others) o.member.notify('room.participant_joined', { roomId: this.id, participant: member.peer });
    this.log.info({ deviceId: member.peer.deviceId, participants: open.participants.size }, 'room joined');
    return this.viewFor(member.peer.deviceId);
  }

  /** The room as device `deviceId` finds it on joining or resuming: everyone else, their producers, the speaker. */
  private viewFor(deviceId: string): ReturnType<Room['join']> {
    const open = this.open();
    const others = [...open.participants.values()].filter((o) => o.peer.deviceId !== deviceId);
    return {
      routerRtpCapabilities: open.router.rtpCapabilities,
      participants: others.map((o) => o.peer),
      producers: others.flatMap((o) =>
        [...o.producers.values()].map((p) => ({ producerId: p.id, participant: o.peer, kind: 'audio' as const, paused: p.paused })),
      ),
      speaker: open.speaker ? { participant: open.speaker.participant.peer, producerId: open.speaker.producerId } : null,
    };
  }

  /**
   * The member's signaling connection closed: unless `graceMs` is 0, the
   * device keeps its place — transports, producers and consumers, so its
   * audio goes on — for `graceMs`, and the others get
   * `room.participant_away` (`away: true`). If the device has not resumed
   * ({@link resume}) by then it leaves as with {@link leave}, and `onGone`
   * runs (not when it resumes). Nothing happens when the device is not in the
   * room on that connection (`token`).
   */
  detach(deviceId: string, token: object, graceMs: number, onGone?: () => void): void {
    if (this.state.phase !== 'open') return;
    const p = this.state.participants.get(deviceId);
    if (!p || p.member.token !== token || p.away) return;
    if (graceMs <= 0) {
      this.leave(deviceId, token);
      onGone?.();
      return;
    }
    p.away = setTimeout(() => {
      p.away = undefined;
      this.log.info({ deviceId, graceMs }, 'room participant did not come back in time');
      this.leave(deviceId, token);
      onGone?.();
    }, graceMs);
    p.away.unref();
    this.log.info({ deviceId, graceMs }, 'room participant away (signaling lost)');
    this.broadcast('room.participant_away', { roomId: this.id, participant: p.peer, away: true }, p);
  }

  /**
   * The device is back on a new signaling connection (`member`) and takes
   * its place again, with its transports, producers and consumers as they
   * are; the others get `room.participant_away` (`away: false`) if they were
   * told it was away. Also works before the server noticed the old
   * connection close (it then never detaches).
   * @returns the room as it is now (what changed while it was away is in it).
   * @throws ParleyError `room_ended`; `not_found` when the device has no
   *   place in the room (it never joined, or its grace ran out: join again);
   *   `invalid_state` when it is already in on this connection.
   */
  resume(member: RoomMember): ReturnType<Room['join']> {
    const open = this.open();
    const p = open.participants.get(member.peer.deviceId);
    if (!p)
      throw new ParleyError('not_found', 'this device has no place in the room any more (it was away longer than the server waits); join again');
    if (p.member.token === member.token) throw new ParleyError('invalid_state', 'this device is already in the room on this connection');
    const wasAway = p.away !== undefined;
    clearTimeout(p.away);
    p.away = undefined;
    p.member = member;
    this.log.info({ deviceId: member.peer.deviceId, wasAway }, 'room participant resumed');
    if (wasAway) this.broadcast('room.participant_away', { roomId: this.id, participant: p.peer, away: false }, p);
    return this.viewFor(member.peer.deviceId);
  }

  /**
   * Removes a device from the room (its transports, producers and consumers
   * close); the others get `room.producer_removed` for each of its producers
   * and `room.participant_left`. Nothing happens for a device not in it.
   * @param token when given, only the member on that connection leaves (a
   *   reconnected device's new place stays).
   */
  leave(deviceId: string, token?: object): void {
    if (this.state.phase !== 'open') return;
    const { participants } = this.state;
    const p = participants.get(deviceId);
    if (!p || (token !== undefined && p.member.token !== token)) return;
    participants.delete(deviceId);
    if (this.state.speaker?.participant === p) this.state.speaker = undefined;
    const producers = [...p.producers.values()];
    p.close();
    for (const o of participants.values()) {
      for (const prod of producers)
        o.member.notify('room.producer_removed', { roomId: this.id, producerId: prod.id, participant: p.peer });
      o.member.notify('room.participant_left', { roomId: this.id, participant: p.peer });
    }
    this.log.info({ deviceId, participants: participants.size }, 'room left');
    if (participants.size === 0) this.hooks.onEmptyChanged(this, true);
  }

  /**
   * Sends a notification to everyone in the room now (away participants
   * included: their connection drops it, as any other), except the devices
   * of account `exceptAccountId`. Nothing once the room ended.
   */
  announce<N extends RoomNotification>(method: N, params: RoomNotificationParams<N>, exceptAccountId?: string): void {
    if (this.state.phase !== 'open') return;
    for (const p of this.state.participants.values()) if (p.peer.accountId !== exceptAccountId) p.member.notify(method, params);
  }

  /** Whether device `deviceId` is in the room and a device of account `accountId` is too. */
  hasBoth(deviceId: string, accountId: string): boolean {
    if (this.state.phase !== 'open') return false;
    const { participants } = this.state;
    if (!participants.has(deviceId)) return false;
    for (const p of participants.values()) if (p.peer.accountId === accountId) return true;
    return false;
  }

  /**
   * Routes a sealed message from one participant's device to another's
   * (`room.message`); the envelope is passed on unopened.
   * @throws ParleyError `room_ended`, `invalid_state` (the sender is not in the room), `not_found` (the recipient is not).
   */
  relay(fromDeviceId: string, toDeviceId: string, envelope: Envelope): void {
    const { participants } = this.open();
    const from = participants.get(fromDeviceId);
    if (!from) throw new ParleyError('invalid_state', 'join the room first (room.join)');
    const to = participants.get(toDeviceId);
    if (!to) throw new ParleyError('not_found', 'that device is not in this room (it may have just left)');
    to.member.notify('room.message', { roomId: this.id, from: from.peer, envelope });
  }

  /**
   * Creates the device's WebRTC transport for `direction` (UDP, ICE-lite on
   * the SFU's side), replacing one it had.
   * @throws ParleyError `room_ended`, `invalid_state` (not in the room).
   */
  async createTransport(
    deviceId: string,
    direction: TransportDirection,
    listen: TransportListen,
  ): Promise<types.WebRtcTransport> {
    const { router } = this.open();
    this.participant(deviceId);
    const transport = await this.guard(() =>
      router.createWebRtcTransport({
        listenInfos: [
          {
            protocol: 'udp',
            ip: listen.listenIp,
            ...(listen.announcedAddress ? { announcedAddress: listen.announcedAddress } : {}),
            portRange: { min: listen.rtcMinPort, max: listen.rtcMaxPort },
          },
        ],
        enableUdp: true,
        enableTcp: false,
        appData: { deviceId, direction },
      }),
    );
    const p = this.stillThere(deviceId, () => transport.close());
    const previous = p.transports[direction];
    if (previous) {
      // What ran on the old transport closes with it: tell the others its producers are gone.
      for (const producer of direction === 'send' ? [...p.producers.values()] : []) {
        p.producers.delete(producer.id);
        this.broadcast('room.producer_removed', { roomId: this.id, producerId: producer.id, participant: p.peer }, p);
      }
      if (direction === 'recv') p.consumers.clear();
      previous.close();
    }
    p.transports[direction] = transport;
    return transport;
  }

  /**
   * Completes DTLS on the device's transport with the client's parameters.
   * @throws ParleyError `not_found`, `invalid_state` (already connected), `invalid_params`.
   */
  async connectTransport(deviceId: string, transportId: string, dtlsParameters: DtlsParameters): Promise<void> {
    const transport = this.participant(deviceId).transport(transportId);
    if (transport.dtlsState !== 'new')
      throw new ParleyError('invalid_state', 'this transport is already connected');
    await this.guard(() => transport.connect({ dtlsParameters: dtlsParameters as types.DtlsParameters }));
  }

  /** New ICE credentials for the device's transport (its network changed). @throws ParleyError `not_found` */
  async restartIce(deviceId: string, transportId: string): Promise<types.IceParameters> {
    const transport = this.participant(deviceId).transport(transportId);
    return this.guard(() => transport.restartIce());
  }

  /**
   * Starts the device's audio producer on its send transport; every other
   * participant gets `room.producer_added`, and the observers hear it.
   * @throws ParleyError `not_found` (not its send transport), `invalid_params` (RTP parameters mediasoup refuses).
   */
  async produce(deviceId: string, transportId: string, rtpParameters: RtpParameters, paused = false): Promise<types.Producer> {
    const open = this.open();
    const p = this.participant(deviceId);
    const transport = p.transport(transportId);
    if (transport !== p.transports.send)
      throw new ParleyError('invalid_state', 'produce on your send transport');
    const producer = await this.guard(() =>
      transport.produce({ kind: 'audio', rtpParameters: rtpParameters as types.RtpParameters, paused, appData: { deviceId } }),
    );
    const owner = this.stillThere(deviceId, () => producer.close());
    owner.producers.set(producer.id, producer);
    producer.on('transportclose', () => owner.producers.delete(producer.id));
    await Promise.all([
      open.speakers.addProducer({ producerId: producer.id }),
      open.levels.addProducer({ producerId: producer.id }),
    ]).catch((err: unknown) => this.log.warn({ err }, 'observer could not add a producer'));
    const announced: RoomProducer = { producerId: producer.id, participant: owner.peer, kind: 'audio', paused: producer.paused };
    for (const o of open.participants.values())
      if (o !== owner) o.member.notify('room.producer_added', { roomId: this.id, producer: announced });
    return producer;
  }

  /** Pauses (mutes) or resumes the device's producer; the others get `room.producer_paused`. @throws ParleyError `not_found` */
  async setProducerPaused(deviceId: string, producerId: string, paused: boolean): Promise<void> {
    const p = this.participant(deviceId);
    const producer = p.producers.get(producerId);
    if (!producer) throw new ParleyError('not_found', `no producer ${producerId} of yours in this room`);
    await this.guard(() => (paused ? producer.pause() : producer.resume()));
    this.broadcast('room.producer_paused', { roomId: this.id, producerId, paused }, p);
  }

  /** Closes the device's producer; the others get `room.producer_removed`. @throws ParleyError `not_found` */
  closeProducer(deviceId: string, producerId: string): void {
    const p = this.participant(deviceId);
    const producer = p.producers.get(producerId);
    if (!producer) throw new ParleyError('not_found', `no producer ${producerId} of yours in this room`);
    p.producers.delete(producerId);
    producer.close();
    this.broadcast('room.producer_removed', { roomId: this.id, producerId, participant: p.peer }, p);
  }

  /**
   * Creates a paused consumer of another participant's producer on the
   * device's recv transport.
   * @throws ParleyError `not_found` (no such producer), `invalid_state` (no recv transport, own producer),
   *   `invalid_params` (these RTP capabilities cannot receive it).
   */
  async consume(
    deviceId: string,
    producerId: string,
    rtpCapabilities: RtpCapabilities,
  ): Promise<{ consumer: types.Consumer; owner: RoomParticipant }> {
    const { router } = this.open();
    const p = this.participant(deviceId);
    const owner = this.ownerOf(producerId);
    if (!owner) throw new ParleyError('not_found', `no producer ${producerId} in this room`);
    if (owner === p) throw new ParleyError('invalid_state', 'a participant does not consume its own producer');
    const transport = p.transports.recv;
    if (!transport) throw new ParleyError('invalid_state', 'create your recv transport first (room.transport.create)');
    const caps = rtpCapabilities as types.RtpCapabilities;
    if (!router.canConsume({ producerId, rtpCapabilities: caps }))
      throw new ParleyError('invalid_params', 'these RTP capabilities cannot receive this producer (Opus is required)');
    const consumer = await this.guard(() =>
      transport.consume({ producerId, rtpCapabilities: caps, paused: true, appData: { deviceId } }),
    );
    const me = this.stillThere(deviceId, () => consumer.close());
    me.consumers.set(consumer.id, consumer);
    const forget = () => me.consumers.delete(consumer.id);
    consumer.on('transportclose', forget);
    consumer.on('producerclose', forget);
    return { consumer, owner: owner.peer };
  }

  /** Pauses or resumes the device's consumer. @throws ParleyError `not_found` */
  async setConsumerPaused(deviceId: string, consumerId: string, paused: boolean): Promise<void> {
    const consumer = this.participant(deviceId).consumers.get(consumerId);
    if (!consumer) throw new ParleyError('not_found', `no consumer ${consumerId} of yours in this room`);
    await this.guard(() => (paused ? consumer.pause() : consumer.resume()));
  }

  /**
   * Ends the room for everyone: each participant gets `room.ended` with
   * `reason`, the router (and all on it) closes. Idempotent.
   */
  end(reason: RoomEndReason): void {
    if (this.state.phase !== 'open') return;
    const { router, participants } = this.state;
    this.state = { phase: 'ended', reason };
    for (const p of participants.values()) {
      clearTimeout(p.away);
      p.away = undefined;
    }
    for (const p of participants.values()) p.member.notify('room.ended', { roomId: this.id, reason });
    if (!router.closed) router.close();
    this.log.info({ reason, participants: participants.size }, 'room ended');
    this.hooks.onEnded(this, reason, participants.size);
  }

  /** The open state. @throws ParleyError `room_ended` naming the reason. */
  private open(): Extract<RoomState, { phase: 'open' }> {
    if (this.state.phase !== 'open') throw roomEnded(this.id, this.state.reason);
    return this.state;
  }

  /** The device's participant. @throws ParleyError `room_ended`, `invalid_state` (not in the room). */
  private participant(deviceId: string): Participant {
    const p = this.open().participants.get(deviceId);
    if (!p) throw new ParleyError('invalid_state', 'join the room first (room.join)');
    return p;
  }

  /** After an await: the participant if the room and it are still there; else undoes with `undo` and throws. */
  private stillThere(deviceId: string, undo: () => void): Participant {
    try {
      return this.participant(deviceId);
    } catch (e) {
      undo();
      throw e;
    }
  }

  /** The participant owning `producerId` (undefined when none). */
  private ownerOf(producerId: string): Participant | undefined {
    if (this.state.phase !== 'open') return undefined;
    for (const p of this.state.participants.values()) if (p.producers.has(producerId)) return p;
    return undefined;
  }

  private broadcast<N extends RoomNotification>(method: N, params: RoomNotificationParams<N>, except?: Participant): void {
    if (this.state.phase !== 'open') return;
    for (const p of this.state.participants.values()) if (p !== except) p.member.notify(method, params);
  }

  /**
   * Runs a mediasoup call: what mediasoup refuses as bad input (TypeError,
   * UnsupportedError) becomes `invalid_params`; a failure because the room
   * ended meanwhile (its worker died) becomes `room_ended`.
   */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof ParleyError) throw e;
      if (this.state.phase !== 'open') throw roomEnded(this.id, this.state.reason);
      if (e instanceof TypeError || (e instanceof Error && e.name === 'UnsupportedError'))
        throw new ParleyError('invalid_params', `the SFU refused the parameters: ${e.message.slice(0, 200)}`);
      throw e;
    }
  }
}

/** The error for a request to an ended room. */
export function roomEnded(roomId: string, reason: RoomEndReason): ParleyError {
  const why: Record<RoomEndReason, string> = {
    sfu_failed: 'its SFU media worker failed',
    ended_by_admin: 'an administrator ended it',
    server_shutdown: 'the server shut down',
    empty: 'everyone left',
    ttl_expired: "it reached this server's time limit for a group call",
    budget_exceeded: "its host used up this server's call-time budget",
    node_lost: 'the server node carrying it stopped',
  };
  return new ParleyError('room_ended', `room ${roomId} has ended: ${why[reason]} (${reason})`);
}
