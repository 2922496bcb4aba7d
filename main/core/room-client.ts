import { EventEmitter } from 'node:events';
import { Device, type types as msc } from 'mediasoup-client';
import { ParleyError } from '../../common/errors';
import type { RoomMember, RoomRing, RoomStatus } from '../../common/protocol/control';
import type { RoomInviteEndReason, RoomParticipant, RoomProducer, RoomRingCancelReason } from '../../common/protocol/sfu';
import type { SignalNotificationParams, SignalResult } from '../../common/protocol/signaling';
import type { FrameTransform } from '../media/frame-transform';
import { GroupMediaSession, type RemoteStream } from '../media/group-media';
import { AUDIO_LEVEL_URI, completeIceRestart, installWebrtcPolyfill, newRtpTrack, onTrackRtp } from '../media/webrtc-polyfill';
import type { CallEngine, MediaPlatform } from './call-engine';
import { GroupKeys, type DeviceDirectory } from './e2ee/group-keys';
import type { DeviceIdentity } from './e2ee/identity';
import { NetworkWatcher } from './network-watcher';
import type { SignalingClient } from './signaling-client';

/** The longest a knock waits for the host's answer, ms (the server's own limit is its ring timeout, 45 s by default). */
const KNOCK_WAIT_MAX_MS = 5 * 60_000;
/** Knock answers kept for a reply not yet handled (see RoomClient.earlyKnockAnswers). */
const EARLY_ANSWERS_KEPT = 8;

/** A call link as `room.link.create` answers it. */
export type RoomLinkCreated = SignalResult<'room.link.create'>;

/**
 * The room id and token of a call link `parley://room/<roomId>?t=<token>`.
 * @throws ParleyError `invalid_params` naming what is wrong.
 */
export function parseRoomLink(url: string): { roomId: string; token: string } {
  const m = /^parley:\/\/room\/([0-9a-fA-F-]{36})\?(?:.*&)?t=([A-Za-z0-9_-]{43})(?:&.*)?$/.exec(url.trim());
  if (!m) throw new ParleyError('invalid_params', 'not a call link: expected parley://room/<room id>?t=<token>');
  return { roomId: m[1]!.toLowerCase(), token: m[2]! };
}

/** Most key messages kept for a room while it is being joined (one per other device and rotation). */
const MAX_EARLY_KEY_MESSAGES = 256;

/** Media settings of group calls (the same as the engine's for 1:1). */
export interface RoomMediaConfig {
  frameMs: 10 | 20;
  jitterTargetMs?: number;
  dtx: boolean;
  /** Gather 127.0.0.1 only (one-machine tests and the demo). */
  loopbackOnly: boolean;
  /**
   * Send and receive through the TURN relay only (ICE transport policy
   * `relay`, W3C webrtc-pc §4.2.1) with the server's coturn credentials
   * (`relay.credentials`), as `--relay` does for 1:1 calls.
   */
  forceRelay?: boolean;
  /** How often the network watcher looks at the host's addresses, ms (default 500). */
  networkPollMs?: number;
}

/**
 * Who is audible in the room now, by the SFU's audio-level observer
 * (`room.audio_levels`, every ~300 ms while anyone is above its threshold; an
 * empty list once everyone is silent). `volume` is dBov (−127 … 0), loudest
 * first; this client's own producer appears too.
 */
export interface RoomLevels {
  roomId: string;
  levels: { username: string; deviceId: string; volume: number }[];
}
/** A transport still `disconnected` this long is restarted (ICE restart, RFC 8445 §2.4), ms. */
export const DISCONNECTED_RESTART_MS = 2000;
/** Beyond the server's grace, how long we still try to resume before giving the room up, ms. */
const RESUME_MARGIN_MS = 2000;
/**
 * While our place is kept, how often a signaling connection that is down is tried again, ms: the
 * client's back-off (0.5 s doubling) would wait past the grace after a few seconds' outage.
 */
const RESUME_RETRY_MS = 1000;
/** How often a failed ICE restart is tried again while a transport stays down, ms. */
const RESTART_RETRY_MS = 3000;

/** One consumed producer of another participant. */
interface Consumed {
  consumer: msc.Consumer;
  stream: RemoteStream;
  participant: RoomParticipant;
  unsubscribe: () => void;
}

/** What a joined room owns; everything in it is closed by {@link RoomClient.leave} or the room's end. */
interface InRoom {
  roomId: string;
  device: Device;
  media: GroupMediaSession;
  send?: msc.Transport;
  recv?: msc.Transport;
  producer?: msc.Producer;
  sendTrack?: { stop(): void };
  consumed: Map<string, Consumed>;
  /** Producers being consumed now (a notification and the join may name one twice). */
  consuming: Set<string>;
  /** The others, by device id. */
  others: Map<string, RoomParticipant>;
  /** Device ids of the others whose producer is paused (muted, or push-to-talk up), by producer id. */
  paused: Map<string, string>;
  /** Device id of every other producer announced (join, `room.producer_added`), by producer id. */
  producerOwners: Map<string, string>;
  /** Serialises our producer's pause / resume requests (the last one wins). */
  pauseQueue: Promise<void>;
  /** Serialises consume / close on the recv transport. */
  queue: Promise<void>;
  /** The room's end-to-end keys (SFrame sender keys), when this client has an identity. */
  keys?: GroupKeys;
  /** Serialises membership changes of {@link keys} and the relaying of their key messages. */
  keyQueue: Promise<void>;
  /** How long the server keeps our place when the signaling drops, ms (its `reconnectGraceMs`). */
  graceMs: number;
  /** While the signaling is down: since when, the timer that gives the room up after the grace, and the retry timer. */
  away?: { since: number; timer: NodeJS.Timeout; retry: NodeJS.Timeout };
  /** The ICE restart under way (one at a time), and whether another was asked meanwhile. */
  restart?: { running: Promise<void>; again: boolean };
  /** Transports `disconnected` or `failed` now, with the timer that restarts them. */
  down: Map<'send' | 'recv', NodeJS.Timeout | undefined>;
  /** Devices whose connection to the server dropped (room.participant_away). */
  awayOthers: Set<string>;
  iceRestarts: number;
  resumes: number;
  closed: boolean;
}

/**
 * A group call from the main process (issue 14 item 3): mediasoup-client's
 * `Device` with its stock Chrome111 handler over werift's RTCPeerConnection
 * polyfill, signaling the SFU through the `room.*` methods of
 * common/protocol/sfu.ts on the existing signaling connection.
 *
 * One send transport with one Opus producer fed by the microphone through the
 * same CaptureChain as a 1:1 call (APM, Opus, DTX); one recv transport with
 * one consumer per remote participant, each into its own PlayoutChain, all
 * mixed into the speaker (main/media/group-media.ts). Mute / push-to-talk
 * and output gain follow the engine's (`setMicOpen`, `setOutputGain`). One
 * call at a time: joining during a 1:1 call is refused, and the engine refuses
 * calls (and turns incoming ones away as busy) while a room is joined.
 *
 * A group that rings (docs/group-calls.md): {@link invite} rings contacts'
 * devices into the room; a room ringing this device arrives as `ring` and
 * stops as `ring_cancelled` (answered or declined on another of our devices,
 * the ring timeout, the room's end); {@link join} answers it, {@link decline}
 * refuses it. Call links: {@link createLink}, {@link joinByLink} (knocks and
 * waits when the host must approve), {@link admit} for the host.
 *
 * Events: `state` (RoomStatus) on every change; `speaker` when the SFU names
 * a new dominant speaker; `ring` / `ring_cancelled` (the server's `room.ring`
 * / `room.ring_cancelled`); `invite_ended` (the server's `room.invite_ended`,
 * for the room we are in: someone rung into it joined, declined, did not
 * answer in time, or the ring was cancelled); `knock` (as the host: someone asks to join
 * through a link that needs approval); `levels` (who is audible, from the
 * SFU's `room.audio_levels`). While our microphone is closed (mute,
 * push-to-talk up) our producer is paused on the SFU, and each participant's
 * `muted` in the status follows `room.producer_paused`.
 */
export class RoomClient extends EventEmitter<{
  state: [RoomStatus];
  speaker: [{ roomId: string; username: string; deviceId: string }];
  levels: [RoomLevels];
  ring: [RoomRing];
  ring_cancelled: [{ roomId: string; reason: RoomRingCancelReason }];
  invite_ended: [{ roomId: string; username: string; reason: RoomInviteEndReason }];
  knock: [{ roomId: string; knockId: string; username: string; deviceId: string }];
}> {
  /** Rooms ringing this device now, by room id (each until its `expiresAt`). */
  private readonly rings = new Map<string, { ring: RoomRing; timer: NodeJS.Timeout }>();
  /** Knocks of ours waiting for the host, by knock id. */
  private readonly knocks = new Map<string, (admitted: boolean) => void>();
  /**
   * Answers that came before our knock's reply was handled, by knock id: a
   * host who answers at once can have the reply and `room.knock_answered`
   * arrive in one read of a busy socket, and the notification is then handled
   * before the reply's continuation registers the knock. Kept until read (at
   * most {@link EARLY_ANSWERS_KEPT}).
   */
  private readonly earlyKnockAnswers = new Map<string, boolean>();
  private room: InRoom | undefined;
  /** Key messages (`room.message`) of the room being joined that came before its keys existed. */
  private early: SignalNotificationParams<'room.message'>[] = [];
  /** The room being joined (from `join` until it is in {@link room} or failed): one at a time. */
  private joining: string | undefined;
  private status: RoomStatus | undefined;
  private micOpen = true;
  private outputGain = 1;
  /** Watches the host's addresses while in a room: a change restarts ICE to the SFU at once. */
  private readonly network: NetworkWatcher;
  /**
   * End-to-end encryption of frames for the rooms joined after it is set, in
   * place of the SFrame keys of {@link endToEnd} (tests, or a transform of
   * another kind).
   */
  frameTransform: FrameTransform | undefined;
  /**
   * This device's identity and its trusted directory of contacts' devices
   * (EndToEnd): with them every room is end-to-end encrypted — SFrame
   * (RFC 9605) over each Opus frame with a sender key per device, sealed to
   * each participant's device and relayed through `room.relay`
   * (main/core/e2ee/group-keys.ts). Without them the SFU reads the audio.
   */
  endToEnd: { identity: DeviceIdentity; directory: DeviceDirectory } | undefined;

  constructor(
    private readonly signaling: SignalingClient,
    private readonly platform: MediaPlatform,
    private readonly config: RoomMediaConfig,
    private readonly self: { username: string; deviceId: string },
    /** The live 1:1 call's peer, if any (CallEngine.liveCallPeer). */
    private readonly liveCallPeer: () => string | undefined = () => undefined,
  ) {
    super();
    this.network = new NetworkWatcher(config.networkPollMs !== undefined ? { intervalMs: config.networkPollMs } : {});
    this.network.on('change', () => {
      const room = this.room;
      if (!room || room.closed) return;
      // The signaling socket may be bound to an address that is gone: a new one at once. The server keeps
      // our place for its grace, and the resume that follows restarts ICE on both transports.
      if (this.signaling.state === 'online') this.signaling.reconnectNow();
    });
    signaling.on('room.participant_away', (p) => this.onAway(p.roomId, p.participant.deviceId, p.away));
    signaling.on('room.participant_joined', (p) => this.onParticipant(p.roomId, p.participant, true));
    signaling.on('room.participant_left', (p) => this.onParticipant(p.roomId, p.participant, false));
    signaling.on('room.producer_added', (p) => this.onProducerAdded(p));
    signaling.on('room.producer_removed', (p) => this.onProducerRemoved(p.roomId, p.producerId));
    signaling.on('room.speaker', (p) => this.onSpeaker(p.roomId, p.participant));
    signaling.on('room.audio_levels', (p) => {
      if (this.room?.roomId !== p.roomId) return;
      this.emit('levels', {
        roomId: p.roomId,
        levels: p.levels.map((l) => ({ username: l.participant.username, deviceId: l.participant.deviceId, volume: l.volume })),
      });
    });
    signaling.on('room.producer_paused', (p) => {
      const room = this.room;
      if (!room || room.roomId !== p.roomId) return;
      const owner = room.consumed.get(p.producerId)?.participant.deviceId ?? room.paused.get(p.producerId) ?? room.producerOwners.get(p.producerId);
      if (p.paused && owner) room.paused.set(p.producerId, owner);
      else room.paused.delete(p.producerId);
      this.publish();
    });
    signaling.on('room.message', (p) => {
      // The others send us their sender keys as soon as the server says we joined, which can be
      // before our own keys exist (the devices still opening): those wait for them.
      if (this.joining === p.roomId && this.room?.roomId !== p.roomId) {
        if (this.early.length < MAX_EARLY_KEY_MESSAGES) this.early.push(p);
        return;
      }
      this.acceptKeyMessage(p);
    });
    signaling.on('room.ring', (p) => this.onRing(p));
    signaling.on('room.ring_cancelled', (p) => this.stopRinging(p.roomId, p.reason));
    signaling.on('room.invite_ended', (p) => {
      if (this.room?.roomId === p.roomId || this.joining === p.roomId) this.emit('invite_ended', { roomId: p.roomId, username: p.username, reason: p.reason });
    });
    signaling.on('room.knock', (p) =>
      this.emit('knock', { roomId: p.roomId, knockId: p.knockId, username: p.from.username, deviceId: p.from.deviceId }),
    );
    signaling.on('room.knock_answered', (p) => {
      const settle = this.knocks.get(p.knockId);
      this.knocks.delete(p.knockId);
      if (settle) return settle(p.admitted);
      this.earlyKnockAnswers.set(p.knockId, p.admitted);
      if (this.earlyKnockAnswers.size > EARLY_ANSWERS_KEPT) this.earlyKnockAnswers.delete(this.earlyKnockAnswers.keys().next().value!);
    });
    signaling.on('room.ended', (p) => {
      this.stopRinging(p.roomId, 'room_ended');
      if (this.room?.roomId === p.roomId) void this.close('ended', p.reason);
    });
    signaling.on('state', (state) => {
      // A knock's answer cannot come over a closed connection (the server forgets the knock's device).
      if (state === 'offline') for (const settle of [...this.knocks.values()]) settle(false);
      const room = this.room;
      if (!room || room.closed) return;
      if (state === 'offline') this.onSignalingLost(room);
      else if (state === 'online' && room.away) void this.resume(room);
    });
  }

  /**
   * Loads what a join needs on this thread ahead of any join: the Opus codec
   * module, whose lookup (node-pre-gyp and its dependencies) took ~90 ms of
   * this thread at a first join (a daemon's CPU profile). Call it once the
   * process is up and idle. Never throws: a codec that cannot load is reported
   * by the join that needs it.
   */
  warmUp(): void {
    try {
      this.platform.createCodec(this.config.frameMs);
    } catch {
      // the join says what is wrong
    }
  }

  /** The id of the room this client is in (or joining), or undefined. */
  currentRoomId(): string | undefined {
    return this.room?.roomId ?? this.joining;
  }

  /** A sentence naming the room this client is in, or undefined (CallEngine.busyWith). */
  busyWith(): string | undefined {
    const id = this.room?.roomId ?? this.joining;
    return id ? `in the group call ${id}` : undefined;
  }

  /**
   * Opens a room on the server's SFU and joins it.
   * @throws ParleyError as {@link join}, and `unavailable` when the server has no SFU.
   */
  async create(maxParticipants?: number, invite?: string[]): Promise<RoomStatus> {
    this.assertFree();
    const r = await this.signaling.request('room.create', {
      ...(maxParticipants !== undefined ? { maxParticipants } : {}),
      ...(invite?.length ? { invite } : {}),
    });
    return this.join(r.roomId);
  }

  /**
   * Rings every online device of each account into the room (`room.invite`).
   * @returns the accounts rung now (those already in the room or ringing are left out).
   * @throws ParleyError `invalid_state` (not in the room); the server's
   *   `unknown_user`, `forbidden`, `policy`, `room_full`, `rate_limited`.
   */
  async invite(roomId: string, usernames: string[]): Promise<string[]> {
    return (await this.signaling.request('room.invite', { roomId, usernames })).invited;
  }

  /**
   * Refuses a room ringing this device (`room.decline`): our other devices stop ringing too.
   * @throws ParleyError `not_found` (it does not ring).
   */
  async decline(roomId: string): Promise<void> {
    await this.signaling.request('room.decline', { roomId });
    this.stopRinging(roomId, undefined);
  }

  /** Rooms ringing this device now, oldest first. */
  ringing(): RoomRing[] {
    return [...this.rings.values()].map((r) => r.ring);
  }

  /**
   * Creates a call link for a room we are in (`room.link.create`).
   * @param expiresInSeconds default a day; `approval`: the host admits each joiner.
   * @returns the URL (a secret) with its id and expiry (Unix ms).
   */
  async createLink(roomId: string, options: { expiresInSeconds?: number; approval?: boolean } = {}): Promise<RoomLinkCreated> {
    return this.signaling.request('room.link.create', {
      roomId,
      ...(options.expiresInSeconds !== undefined ? { expiresInSeconds: options.expiresInSeconds } : {}),
      ...(options.approval !== undefined ? { approval: options.approval } : {}),
    });
  }

  /** Stops a call link working. @throws ParleyError `not_found`. */
  async revokeLink(roomId: string, linkId: string): Promise<void> {
    await this.signaling.request('room.link.revoke', { roomId, linkId });
  }

  /**
   * Joins through a call link (`parley://room/<id>?t=<token>`): when the link
   * needs the host's approval it knocks first and waits for the answer.
   * @throws ParleyError `invalid_params` (not a call link), `forbidden`
   *   (expired, revoked or unknown link; the host denied us or did not answer),
   *   and those of {@link join}.
   */
  async joinByLink(url: string): Promise<RoomStatus> {
    this.assertFree();
    const { roomId, token } = parseRoomLink(url);
    const knock = await this.signaling.request('room.knock', { roomId, link: token });
    if (knock.state === 'waiting') {
      const early = this.earlyKnockAnswers.get(knock.knockId);
      this.earlyKnockAnswers.delete(knock.knockId);
      // The server answers within its ring timeout; this cap only covers an answer lost with the connection.
      const admitted = early ?? await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => settle(false), KNOCK_WAIT_MAX_MS);
        const settle = (ok: boolean): void => {
          clearTimeout(timer);
          this.knocks.delete(knock.knockId);
          resolve(ok);
        };
        this.knocks.set(knock.knockId, settle);
      });
      if (!admitted) throw new ParleyError('forbidden', 'the host did not let you into the call (refused, or did not answer in time)');
    }
    return this.join(roomId, token);
  }

  /** As the host, answers a knock. @throws ParleyError `not_found`, `forbidden` (not the host). */
  async admit(roomId: string, knockId: string, admit: boolean): Promise<void> {
    await this.signaling.request('room.admit', { roomId, knockId, admit });
  }

  /**
   * Joins `roomId`: devices open, both transports and the producer are set
   * up, and every producer already there is consumed before it resolves.
   * @throws ParleyError `invalid_state` during a 1:1 call or in another room;
   *   the server's `not_found`, `room_full`, `room_ended`; `device_error` when
   *   the audio devices cannot be opened. Nothing stays open after a failure.
   */
  async join(roomId: string, link?: string): Promise<RoomStatus> {
    this.assertFree();
    this.joining = roomId;
    try {
      return await this.joinNow(roomId, link);
    } finally {
      this.joining = undefined;
      this.early = [];
    }
  }

  private async joinNow(roomId: string, link?: string): Promise<RoomStatus> {
    const t0 = performance.now();
    this.status = { roomId, state: 'joining', micOpen: this.micOpen, participants: [this.selfMember()] };
    this.publish();
    let joined;
    try {
      joined = await this.signaling.request('room.join', link ? { roomId, link } : { roomId });
      this.stopRinging(roomId, undefined);
    } catch (e) {
      this.fail(roomId, e);
      throw e;
    }
    let audio;
    try {
      audio = await this.platform.openAudio(this.config.frameMs);
    } catch (e) {
      await this.signaling.request('room.leave', { roomId }).catch(() => {});
      const err = new ParleyError('device_error', e instanceof Error ? e.message : String(e));
      this.fail(roomId, err);
      throw err;
    }
    installWebrtcPolyfill({ loopbackOnly: this.config.loopbackOnly });
    const keys = !this.frameTransform && this.endToEnd
      ? new GroupKeys({ roomId, identity: this.endToEnd.identity, directory: this.endToEnd.directory })
      : undefined;
    const sframe = keys?.frameTransform();
    const transform: FrameTransform | undefined = this.frameTransform ??
      (sframe ? { encrypt: (frame) => sframe.encrypt(frame), decrypt: (payload, meta) => sframe.decrypt(payload, meta.deviceId) } : undefined);
    const { encoder } = this.platform.createCodec(this.config.frameMs);
    const media = new GroupMediaSession({
      frameMs: this.config.frameMs,
      ...(this.config.jitterTargetMs !== undefined ? { jitterTargetMs: this.config.jitterTargetMs } : {}),
      source: audio.source,
      sink: audio.sink,
      encoder,
      newDecoder: () => this.platform.createCodec(this.config.frameMs).decoder,
      dtx: this.config.dtx,
      ...(audio.processor ? { processor: audio.processor } : {}),
      ...(audio.deviceDelayMs ? { deviceDelayMs: audio.deviceDelayMs } : {}),
      ...(transform ? { transform } : {}),
    });
    media.setMicOpen(this.micOpen);
    media.setOutputGain(this.outputGain);
    media.on('firstAudio', () => this.publish());
    media.on('deviceError', (e, dir) => {
      if (this.status) this.status.error = `${dir} device: ${e.message}`;
      this.publish();
    });
    const room: InRoom = {
      roomId,
      device: new Device({ handlerName: 'Chrome111' }),
      media,
      consumed: new Map(),
      consuming: new Set(),
      others: new Map(joined.participants.map((p) => [p.deviceId, p])),
      paused: new Map(joined.producers.filter((p) => p.paused).map((p) => [p.producerId, p.participant.deviceId])),
      producerOwners: new Map(joined.producers.map((p) => [p.producerId, p.participant.deviceId])),
      pauseQueue: Promise.resolve(),
      queue: Promise.resolve(),
      keyQueue: Promise.resolve(),
      ...(keys ? { keys } : {}),
      graceMs: joined.reconnectGraceMs ?? 0,
      down: new Map(),
      awayOthers: new Set(),
      iceRestarts: 0,
      resumes: 0,
      closed: false,
    };
    this.room = room;
    this.network.start();
    if (keys) {
      keys.on('excluded', () => this.publish());
      keys.on('keyAccepted', () => this.publish());
    }
    const early = this.early.filter((m) => m.roomId === roomId);
    this.early = [];
    for (const m of early) this.acceptKeyMessage(m);
    this.status = {
      roomId,
      state: 'joining',
      maxParticipants: joined.maxParticipants,
      micOpen: this.micOpen,
      participants: [],
      ...(joined.speaker ? { speaker: { username: joined.speaker.participant.username, deviceId: joined.speaker.participant.deviceId } } : {}),
    };
    try {
      // Our sender key goes to everyone before we produce (else the first frames force a rotation).
      await this.membershipChanged(room);
      media.start();
      await room.device.load({ routerRtpCapabilities: joined.routerRtpCapabilities as msc.RtpCapabilities });
      room.send = await this.createTransport(room, 'send');
      room.recv = await this.createTransport(room, 'recv');
      const out = newRtpTrack();
      room.sendTrack = out;
      room.producer = await room.send.produce({
        track: out.track as never,
        codecOptions: { opusStereo: false, opusFec: true, opusDtx: true },
        stopTracks: false,
      });
      // The others see us muted while the microphone is closed (the SFU pauses our producer).
      if (!this.micOpen) this.pauseProducer(room, true);
      const levelId = room.producer.rtpParameters.headerExtensions?.find((e) => e.uri === AUDIO_LEVEL_URI)?.id;
      media.startSending((packet, info) => {
        if (levelId !== undefined) {
          // RFC 6464 §3: V bit, then the level in −dBov.
          packet.header.extensions = [{ id: levelId, payload: Buffer.from([(info.voice ? 0x80 : 0) | info.levelDbov]) }];
        }
        out.writeRtp(packet);
      });
      await Promise.all(joined.producers.map((p) => this.consume(room, p)));
    } catch (e) {
      await this.close('ended', 'failed', e instanceof Error ? e.message : String(e));
      await this.signaling.request('room.leave', { roomId }).catch(() => {});
      throw e instanceof ParleyError ? e : new ParleyError('unavailable', `could not join the room: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (room.closed) throw new ParleyError('room_ended', `the room ended while joining (${this.status.endReason ?? 'ended'})`);
    this.status.state = 'joined';
    this.status.joinedAt = Date.now();
    this.status.joinMs = Math.round(performance.now() - t0);
    this.publish();
    return this.snapshot();
  }

  /**
   * Leaves the room: `room.leave`, then the producer, consumers, transports
   * and devices close.
   * @throws ParleyError `invalid_state` when not in a room (or in another one than `roomId`).
   */
  async leave(roomId?: string): Promise<string> {
    const room = this.room;
    if (!room || (roomId && roomId !== room.roomId)) throw new ParleyError('invalid_state', roomId ? `not in the room ${roomId}` : 'not in a room');
    await this.signaling.request('room.leave', { roomId: room.roomId }).catch(() => {});
    await this.close('left');
    return room.roomId;
  }

  /** The room this client is in (or was in last), with each participant's received audio. @throws ParleyError `invalid_state` when there is none. */
  current(): RoomStatus {
    if (!this.status) throw new ParleyError('invalid_state', 'not in a room');
    return this.snapshot();
  }

  /** Mute / push-to-talk for the room (the engine's mic-open flag). */
  setMicOpen(open: boolean): void {
    const changed = this.micOpen !== open;
    this.micOpen = open;
    this.room?.media.setMicOpen(open);
    if (changed && this.room?.producer) this.pauseProducer(this.room, !open);
    if (this.status && this.status.micOpen !== open) {
      this.status.micOpen = open;
      this.publish();
    }
  }

  /** Output volume, linear 0–1. */
  setOutputGain(gain: number): void {
    this.outputGain = gain;
    this.room?.media.setOutputGain(gain);
  }

  /** Leaves the room, if any. Never throws. */
  async shutdown(): Promise<void> {
    for (const roomId of [...this.rings.keys()]) this.stopRinging(roomId, undefined);
    for (const settle of this.knocks.values()) settle(false);
    this.knocks.clear();
    if (this.room) await this.leave().catch(() => {});
  }

  // ---- internals -----------------------------------------------------------

  /** Gives a sealed key message to the room's keys (GroupKeys.acceptKey); a refused one shows in the status. */
  private acceptKeyMessage(p: SignalNotificationParams<'room.message'>): void {
    const keys = this.room?.roomId === p.roomId ? this.room.keys : undefined;
    if (!keys) return;
    const r = keys.acceptKey({ username: p.from.username, deviceId: p.from.deviceId }, p.envelope);
    if (r.ok !== false || !this.status) return;
    // A refused key message is counted in the status (e2ee); nothing else to do.
    this.publish();
  }

  /**
   * Pauses or resumes our producer on the SFU (`room.producer.pause` /
   * `resume`): the others get `room.producer_paused` and show us muted. The
   * microphone itself is already closed or open (encoded silence while
   * closed); a request that fails leaves only the indicator wrong.
   */
  private pauseProducer(room: InRoom, paused: boolean): void {
    const producerId = room.producer?.id;
    if (!producerId) return;
    room.pauseQueue = room.pauseQueue.then(async () => {
      if (room.closed || this.micOpen !== !paused) return; // a newer change follows
      await this.signaling.request(paused ? 'room.producer.pause' : 'room.producer.resume', { roomId: room.roomId, producerId }).catch(() => {});
    });
  }

  private onRing(ring: RoomRing): void {
    const old = this.rings.get(ring.roomId);
    if (old) clearTimeout(old.timer);
    // The server cancels at expiresAt; this only forgets a ring whose cancel never came (a lost connection).
    const timer = setTimeout(() => this.stopRinging(ring.roomId, 'timeout'), Math.max(0, ring.expiresAt - Date.now()) + 5000);
    timer.unref();
    this.rings.set(ring.roomId, { ring, timer });
    this.emit('ring', ring);
  }

  /** Forgets a ring; with a reason, tells the listeners (`ring_cancelled`). */
  private stopRinging(roomId: string, reason: RoomRingCancelReason | undefined): void {
    const r = this.rings.get(roomId);
    if (!r) return;
    clearTimeout(r.timer);
    this.rings.delete(roomId);
    if (reason) this.emit('ring_cancelled', { roomId, reason });
  }

  private assertFree(): void {
    const id = this.room?.roomId ?? this.joining;
    if (id) throw new ParleyError('invalid_state', `already in the group call ${id}; leave it first`);
    const peer = this.liveCallPeer();
    if (peer) throw new ParleyError('invalid_state', `already in a call with ${peer}; end it first (one call at a time)`);
  }

  private async createTransport(room: InRoom, direction: 'send' | 'recv'): Promise<msc.Transport> {
    const r = await this.signaling.request('room.transport.create', { roomId: room.roomId, direction });
    // Relay only: the TURN servers with the server's short-lived credentials, and no other candidates.
    const relay = this.config.forceRelay
      ? { iceServers: (await this.signaling.request('relay.credentials', {})).iceServers as NonNullable<msc.TransportOptions["iceServers"]>, iceTransportPolicy: 'relay' as const }
      : {};
    const options = {
      id: r.transportId,
      iceParameters: r.iceParameters,
      iceCandidates: r.iceCandidates as msc.IceCandidate[],
      dtlsParameters: r.dtlsParameters as msc.DtlsParameters,
      ...relay,
    };
    const transport = direction === 'send' ? room.device.createSendTransport(options) : room.device.createRecvTransport(options);
    transport.on('connect', ({ dtlsParameters }, callback, errback) => {
      this.signaling
        .request('room.transport.connect', { roomId: room.roomId, transportId: transport.id, dtlsParameters: dtlsParameters as never })
        .then(() => callback(), errback);
    });
    if (direction === 'send') {
      transport.on('produce', ({ rtpParameters }, callback, errback) => {
        this.signaling
          .request('room.produce', { roomId: room.roomId, transportId: transport.id, kind: 'audio', rtpParameters: rtpParameters as never })
          .then(({ producerId }) => callback({ id: producerId }), errback);
      });
    }
    transport.on('connectionstatechange', (state) => this.onTransportState(room, direction, state));
    return transport;
  }

  // ---- staying in the room: ICE restarts and signaling blips --------------------------

  /**
   * A transport's connection state changed (mediasoup-client, from the peer
   * connection's). `disconnected` for DISCONNECTED_RESTART_MS, or `failed`,
   * restarts ICE (RFC 8445 §2.4) on both transports; the room says
   * `reconnecting` (media) until every transport is `connected` again.
   */
  private onTransportState(room: InRoom, direction: 'send' | 'recv', state: string): void {
    if (room.closed || !this.status) return;
    if (state === 'connected') {
      clearTimeout(room.down.get(direction));
      if (!room.down.delete(direction)) return;
      if (room.down.size === 0 && !room.away && this.status.state === 'reconnecting') {
        this.status.state = 'joined';
        delete this.status.reconnecting;
        delete this.status.error;
      }
      this.publish();
      return;
    }
    if (state !== 'disconnected' && state !== 'failed') return;
    const why = `the ${direction} transport to the SFU ${state === 'failed' ? 'failed' : 'lost its path'}`;
    clearTimeout(room.down.get(direction));
    room.down.set(
      direction,
      state === 'failed' ? undefined : setTimeout(() => void this.restartIce(room, why), DISCONNECTED_RESTART_MS).unref(),
    );
    if (this.status.state === 'joined') {
      this.status.state = 'reconnecting';
      this.status.reconnecting = { since: Date.now(), what: 'media' };
    }
    this.status.error = why;
    this.publish();
    if (state === 'failed') void this.restartIce(room, why);
  }

  /**
   * ICE restart of both transports to the SFU (RFC 8445 §2.4; the SFU is
   * ICE-lite): new ICE credentials from `room.transport.restart_ice`, then
   * mediasoup-client's `Transport.restartIce`, which gathers anew and checks
   * the SFU's candidates again. One at a time; asked again meanwhile, it runs
   * once more after. While a transport stays down and the restart could not
   * be done (the signaling is down too), it is tried again every
   * RESTART_RETRY_MS. Never throws.
   */
  private restartIce(room: InRoom, why: string): Promise<void> {
    if (room.restart) {
      room.restart.again = true;
      return room.restart.running;
    }
    const run = async () => {
      do {
        room.restart!.again = false;
        let done = true;
        for (const transport of [room.send, room.recv]) {
          if (!transport || transport.closed || room.closed) continue;
          try {
            const r = await this.signaling.request('room.transport.restart_ice', { roomId: room.roomId, transportId: transport.id });
            if (room.closed) return;
            await transport.restartIce({ iceParameters: r.iceParameters });
            await completeIceRestart(transport);
            room.iceRestarts++;
          } catch (e) {
            done = false;
            if (this.status && !room.closed) this.status.error = `ICE restart after "${why}" failed: ${e instanceof Error ? e.message : String(e)}`;
          }
        }
        if (done && this.status?.error?.startsWith('ICE restart')) delete this.status.error;
        this.publish();
        if (!done && !room.closed && room.down.size > 0) {
          // Try again later, as long as something is down (the signaling may be down as well).
          setTimeout(() => void this.restartIce(room, why), RESTART_RETRY_MS).unref();
        }
      } while (room.restart!.again && !room.closed);
    };
    room.restart = { running: Promise.resolve(), again: false };
    room.restart.running = run().finally(() => {
      room.restart = undefined;
    });
    return room.restart.running;
  }

  /**
   * The signaling connection dropped while in a room. The server keeps our
   * place (and our transports: the audio goes on where the path still works)
   * for its grace; the connection is tried again every RESUME_RETRY_MS
   * meanwhile; the room says `reconnecting` until the connection is back
   * and {@link resume} took the place back, and ends `signaling_lost` when
   * the grace (plus RESUME_MARGIN_MS) runs out first. Without a grace the
   * server has removed us already: the room ends at once.
   */
  private onSignalingLost(room: InRoom): void {
    if (room.away || !this.status) return;
    if (room.graceMs <= 0) {
      void this.close('ended', 'signaling_lost');
      return;
    }
    const since = Date.now();
    const timer = setTimeout(() => {
      void this.close('ended', 'signaling_lost', `the connection to the server was down for more than ${Math.round(room.graceMs / 1000)} s; the server gave our place in the room up`);
    }, room.graceMs + RESUME_MARGIN_MS);
    timer.unref();
    // Connect again every RESUME_RETRY_MS (not the back-off's growing waits) while the place is kept.
    const retry = setInterval(() => {
      if (this.signaling.state === 'offline') this.signaling.reconnectNow();
    }, RESUME_RETRY_MS);
    retry.unref();
    room.away = { since, timer, retry };
    this.status.state = 'reconnecting';
    this.status.reconnecting = { since, what: 'signaling' };
    this.publish();
  }

  /**
   * The signaling is back: takes our place in the room back (`room.resume`),
   * catches up with what changed meanwhile (who joined or left, their
   * producers, the speaker; our keys for the new membership), and restarts
   * ICE (the blip may have been a network change). A place the server gave
   * up (`not_found`) or a room that ended meanwhile ends the room here.
   * Never throws.
   */
  private async resume(room: InRoom): Promise<void> {
    let r;
    try {
      r = await this.signaling.request('room.resume', { roomId: room.roomId });
    } catch (e) {
      if (room.closed) return;
      if (e instanceof ParleyError && (e.reason === 'not_found' || e.reason === 'room_ended' || e.reason === 'invalid_state')) {
        const reason = e.reason === 'room_ended' ? (/\((\w+)\)$/.exec(e.message)?.[1] ?? 'ended') : 'signaling_lost';
        await this.close('ended', reason, e.message);
      }
      // Otherwise (the connection dropped again): the next `online` tries again, the grace timer still runs.
      return;
    }
    if (room.closed || !room.away || !this.status) return;
    clearTimeout(room.away.timer);
    clearInterval(room.away.retry);
    room.away = undefined;
    room.resumes++;
    // Catch up: the room as the server has it now.
    const now = new Map(r.participants.map((p) => [p.deviceId, p]));
    const producers = new Set(r.producers.map((p) => p.producerId));
    for (const [id, c] of [...room.consumed]) if (!producers.has(id) || !now.has(c.participant.deviceId)) this.unconsume(room, id);
    room.others = now;
    for (const id of [...room.awayOthers]) if (!now.has(id)) room.awayOthers.delete(id);
    if (r.speaker) this.status.speaker = { username: r.speaker.participant.username, deviceId: r.speaker.participant.deviceId };
    else delete this.status.speaker;
    if (room.down.size === 0) {
      this.status.state = 'joined';
      delete this.status.reconnecting;
    } else this.status.reconnecting = { since: Date.now(), what: 'media' };
    this.publish();
    void this.membershipChanged(room);
    for (const p of r.producers) void this.consume(room, p);
    // The blip may have been a network change: a fresh path to the SFU.
    void this.restartIce(room, 'the connection to the server came back');
  }

  private onAway(roomId: string, deviceId: string, away: boolean): void {
    const room = this.room;
    if (!room || room.roomId !== roomId) return;
    if (away) room.awayOthers.add(deviceId);
    else room.awayOthers.delete(deviceId);
    this.publish();
  }

  /** Consumes one producer of another participant into its own playout chain, then resumes it. Never throws. */
  private consume(room: InRoom, p: RoomProducer): Promise<void> {
    if (room.consumed.has(p.producerId) || room.consuming.has(p.producerId) || p.participant.deviceId === this.self.deviceId) return Promise.resolve();
    room.consuming.add(p.producerId);
    const run = async () => {
      if (room.closed || !room.recv) return;
      try {
        const r = await this.signaling.request('room.consume', {
          roomId: room.roomId,
          producerId: p.producerId,
          rtpCapabilities: room.device.rtpCapabilities as never,
        });
        if (room.closed) return;
        const consumer = await room.recv.consume({
          id: r.consumerId,
          producerId: r.producerId,
          kind: 'audio',
          rtpParameters: r.rtpParameters as msc.RtpParameters,
        });
        const stream = room.media.addStream(r.participant);
        const unsubscribe = onTrackRtp(consumer.track, (rtp) => stream.push(rtp));
        room.consumed.set(p.producerId, { consumer, stream, participant: r.participant, unsubscribe });
        room.others.set(r.participant.deviceId, r.participant);
        await this.signaling.request('room.consumer.resume', { roomId: room.roomId, consumerId: r.consumerId });
        this.publish();
      } catch (e) {
        // The producer went away meanwhile, or the room ended: nothing to play.
        if (!room.closed && this.status) this.status.error = `could not receive ${p.participant.username}: ${e instanceof Error ? e.message : String(e)}`;
      } finally {
        room.consuming.delete(p.producerId);
      }
    };
    const next = room.queue.then(run);
    room.queue = next.catch(() => {});
    return next;
  }

  private unconsume(room: InRoom, producerId: string): void {
    const c = room.consumed.get(producerId);
    if (!c) return;
    room.consumed.delete(producerId);
    c.unsubscribe();
    c.stream.remove();
    try {
      c.consumer.close();
    } catch {
      // already closed with its transport
    }
  }

  private onParticipant(roomId: string, participant: RoomParticipant, joined: boolean): void {
    const room = this.room;
    if (!room || room.roomId !== roomId || participant.deviceId === this.self.deviceId) return;
    if (joined) room.others.set(participant.deviceId, participant);
    else {
      // (the key rotation for a leave runs below, with the new list)
      room.others.delete(participant.deviceId);
      for (const [id, c] of room.consumed) if (c.participant.deviceId === participant.deviceId) this.unconsume(room, id);
      if (this.status?.speaker?.deviceId === participant.deviceId) delete this.status.speaker;
    }
    void this.membershipChanged(room);
    this.publish();
  }

  /**
   * Tells the room's keys who is in it now (a new sender key on every join and
   * leave, used after the grace) and relays the sealed key messages that come
   * out of it to their devices. Never throws: a message that cannot be
   * delivered (its device just left) is dropped.
   */
  private membershipChanged(room: InRoom): Promise<void> {
    // One after another, and each one's messages in order: a recipient refuses a key message
    // older than one it already has (its sequence number must rise), so two rotations' messages
    // overtaking each other would cost it the first rotation's key.
    const next = room.keyQueue.then(() => this.applyMembership(room));
    room.keyQueue = next.catch(() => {});
    return next;
  }

  private async applyMembership(room: InRoom): Promise<void> {
    const keys = room.keys;
    if (!keys || room.closed) return;
    try {
      await keys.onMembershipChanged([{ username: this.self.username, deviceId: this.self.deviceId }, ...[...room.others.values()].map((p) => ({ username: p.username, deviceId: p.deviceId }))]);
    } catch {
      // GroupKeys reports its own trouble as exclusions; a failed directory lookup is retried on the next change
    }
    for (const m of keys.outgoingKeyMessages()) {
      if (room.closed) return;
      await this.signaling.request('room.relay', { roomId: room.roomId, to: m.to.deviceId, envelope: m.envelope }).catch(() => {});
    }
    this.publish();
  }

  private onProducerAdded(p: SignalNotificationParams<'room.producer_added'>): void {
    const room = this.room;
    if (!room || room.roomId !== p.roomId) return;
    room.producerOwners.set(p.producer.producerId, p.producer.participant.deviceId);
    if (p.producer.paused) room.paused.set(p.producer.producerId, p.producer.participant.deviceId);
    if (!room.recv) return;
    void this.consume(room, p.producer);
  }

  private onProducerRemoved(roomId: string, producerId: string): void {
    const room = this.room;
    if (!room || room.roomId !== roomId) return;
    this.unconsume(room, producerId);
    room.paused.delete(producerId);
    room.producerOwners.delete(producerId);
    this.publish();
  }

  private onSpeaker(roomId: string, participant: RoomParticipant): void {
    if (!this.status || this.status.roomId !== roomId || !this.room) return;
    this.status.speaker = { username: participant.username, deviceId: participant.deviceId };
    this.emit('speaker', { roomId, username: participant.username, deviceId: participant.deviceId });
    this.publish();
  }

  /** Closes everything the room owns and moves to `left` / `ended`. Never throws. */
  private async close(state: 'left' | 'ended', endReason?: string, error?: string): Promise<void> {
    const room = this.room;
    if (!room || room.closed) return;
    room.closed = true;
    this.room = undefined;
    this.network.stop();
    clearTimeout(room.away?.timer);
    clearInterval(room.away?.retry);
    for (const t of room.down.values()) clearTimeout(t);
    // The last participants as they were, for the final status.
    const last = this.status ? this.snapshotOf(room) : undefined;
    room.media.stopSending();
    for (const id of [...room.consumed.keys()]) this.unconsume(room, id);
    for (const close of [() => room.producer?.close(), () => room.sendTrack?.stop(), () => room.send?.close(), () => room.recv?.close()]) {
      try {
        close();
      } catch {
        // closing what is already closed
      }
    }
    await room.media.close();
    if (this.status && last) {
      this.status = { ...last, state, ...(endReason ? { endReason } : {}), ...(error ? { error } : {}) };
      this.publish();
    }
  }

  private fail(roomId: string, e: unknown): void {
    this.status = {
      roomId,
      state: 'ended',
      endReason: 'failed',
      error: e instanceof Error ? e.message : String(e),
      micOpen: this.micOpen,
      participants: [this.selfMember()],
    };
    this.publish();
  }

  private selfMember(): RoomMember {
    return { username: this.self.username, deviceId: this.self.deviceId, self: true, muted: !this.micOpen };
  }

  private snapshot(): RoomStatus {
    const room = this.room;
    return room && this.status && room.roomId === this.status.roomId ? this.snapshotOf(room) : structuredClone(this.status!);
  }

  private snapshotOf(room: InRoom): RoomStatus {
    const members: RoomMember[] = [this.selfMember()];
    const paused = new Set(room.paused.values());
    for (const p of room.others.values()) {
      const c = [...room.consumed.values()].find((x) => x.participant.deviceId === p.deviceId);
      const s = c?.stream.stats();
      members.push({
        username: p.username,
        deviceId: p.deviceId,
        self: false,
        muted: paused.has(p.deviceId),
        ...(room.awayOthers.has(p.deviceId) ? { away: true } : {}),
        ...(c && s
          ? {
              audio: {
                playing: c.stream.playing,
                packetsReceived: s.packetsReceived,
                packetsLost: s.packetsLost,
                framesConcealed: s.framesConcealed,
                framesUndecryptable: s.framesUndecryptable,
                jitterBufferMs: s.bufferedMs,
                jitterTargetMs: s.targetMs,
                jitterMs: Math.round(s.jitterMs * 10) / 10,
              },
            }
          : {}),
      });
    }
    const keys = room.keys;
    const e2ee = keys
      ? (() => {
          const st = keys.stats();
          return {
            sframe: true,
            excluded: keys.excluded().map((x) => ({ username: x.username, deviceId: x.deviceId, reason: x.reason, message: x.message })),
            keysAccepted: st.keysAccepted,
            rotations: st.rotations,
          };
        })()
      : { sframe: room.media.hasTransform, excluded: [], keysAccepted: 0, rotations: 0 };
    return { ...structuredClone(this.status!), participants: members, e2ee, iceRestarts: room.iceRestarts, resumes: room.resumes };
  }

  private publish(): void {
    if (!this.status) return;
    this.emit('state', this.snapshot());
  }
}

/**
 * The one composition of group calls beside a CallEngine, shared by the
 * headless daemon (main/cli/parley.ts) and the desktop core
 * (main/core/softphone.ts): one call at a time (the engine refuses and turns
 * away calls while a room is joined, the room refuses a join during a 1:1
 * call), the engine's mic-open flag (mute, push-to-talk) and output gain
 * followed by the room, and rooms end-to-end encrypted with this device's
 * identity and the trust of 1:1 calls when `endToEnd` is given.
 */
export function roomClientBeside(
  engine: CallEngine,
  o: {
    signaling: SignalingClient;
    platform: MediaPlatform;
    config: RoomMediaConfig;
    self: { username: string; deviceId: string };
    endToEnd?: { identity: DeviceIdentity; directory: DeviceDirectory };
  },
): RoomClient {
  const rooms = new RoomClient(o.signaling, o.platform, o.config, o.self, () => engine.liveCallPeer());
  engine.busyWith = () => rooms.busyWith();
  if (o.endToEnd) rooms.endToEnd = o.endToEnd;
  engine.on('controls', (c) => {
    rooms.setMicOpen(c.micOpen);
    rooms.setOutputGain(c.outputGain);
  });
  return rooms;
}
