import { Envelope } from './envelope';
import { z } from 'zod';
import { Username } from '../call';

/**
 * Group calls: the signaling of the server's SFU (mediasoup), as JSON-RPC
 * methods on the same `/v1/signal` socket as 1:1 calls (`SignalRequests`
 * spreads `RoomRequests`, `SignalNotifications` spreads `RoomNotifications`).
 *
 * A room is a mediasoup Router on one worker. A participant is one device
 * (one signaling connection) in one room; it has at most one WebRTC transport
 * per direction (`send` carries its Opus producer to the SFU, `recv` carries
 * one consumer per other participant's producer), and leaves when it says
 * `room.leave`, or its connection closes and it does not resume
 * (`room.resume` on a new connection) within the server's grace. The shapes of RTP capabilities and
 * parameters, ICE and DTLS parameters are mediasoup's (mediasoup-client's
 * `Device`, `Transport.on('connect' | 'produce')` produce and take them
 * unchanged); they are checked here for structure, and the SFU refuses what it
 * cannot use with `invalid_params`.
 *
 * Flow (client): `room.create` (or learn a room id) → `room.join` (router RTP
 * capabilities, who is there, their producers) → `Device.load` →
 * `room.transport.create` send and recv → on the transports' `connect`:
 * `room.transport.connect` → `room.produce` → for every producer (the join's
 * and each `room.producer_added`): `room.consume` (paused) →
 * `room.consumer.resume` once the consumer is set up.
 *
 * Errors: `not_found` (no such room, transport, producer or consumer),
 * `room_full` (the room has `maxParticipants` participants), `room_ended`
 * (the room is over: the message names why), `invalid_state` (not a
 * participant of the room, transport already connected, …), `unavailable`
 * (the SFU cannot start its workers), `invalid_params`.
 */

/**
 * A room id: a random UUID chosen by the server. Knowing it is not enough to
 * join: only the room's host (its creator), the accounts invited into it
 * (`room.create` `invite`, `room.invite`) and the accounts admitted through a
 * call link (`room.join` with `link`, `room.knock`) may join (docs/group-calls.md
 * "Who may join").
 */
export const RoomId = z.uuid();
export type RoomId = z.infer<typeof RoomId>;

/** A mediasoup object id (transport, producer, consumer): a UUID chosen by the SFU. */
export const SfuObjectId = z.uuid();

/**
 * Why a room ended. `sfu_failed`: its media worker died (the server keeps
 * running); `ttl_expired`: it reached the room lifetime of the server's policy;
 * `budget_exceeded`: its host used up the call-time budget (`[policy]`);
 * `node_lost`: several server nodes (server/cluster.ts), and the node carrying
 * the room stopped or was lost (its SFU went with it).
 */
export const RoomEndReason = z.enum(['sfu_failed', 'ended_by_admin', 'server_shutdown', 'empty', 'ttl_expired', 'budget_exceeded', 'node_lost']);
export type RoomEndReason = z.infer<typeof RoomEndReason>;

/** A participant: one device of one account. */
export const RoomParticipant = z.object({
  accountId: z.string(),
  username: Username,
  deviceId: z.uuid(),
});
export type RoomParticipant = z.infer<typeof RoomParticipant>;

const Params = z.record(z.string(), z.unknown());

/** An RTP codec capability (mediasoup `RtpCodecCapability`). */
export const RtpCodecCapability = z.looseObject({
  kind: z.enum(['audio', 'video']),
  mimeType: z.string().min(3).max(64),
  preferredPayloadType: z.number().int().min(0).max(127).optional(),
  clockRate: z.number().int().positive(),
  channels: z.number().int().min(1).max(8).optional(),
  parameters: Params.optional(),
  rtcpFeedback: z.array(z.looseObject({ type: z.string(), parameter: z.string().optional() })).max(32).optional(),
});
/** A header extension capability (mediasoup `RtpHeaderExtension`). */
export const RtpHeaderExtensionCapability = z.looseObject({
  kind: z.enum(['audio', 'video']),
  uri: z.string().min(1).max(256),
  preferredId: z.number().int().min(1).max(255),
  preferredEncrypt: z.boolean().optional(),
  direction: z.enum(['sendrecv', 'sendonly', 'recvonly', 'inactive']).optional(),
});
/** RTP capabilities (mediasoup `RtpCapabilities`: a router's, or a device's after `Device.load`). */
export const RtpCapabilities = z.looseObject({
  codecs: z.array(RtpCodecCapability).max(64).optional(),
  headerExtensions: z.array(RtpHeaderExtensionCapability).max(64).optional(),
});
export type RtpCapabilities = z.infer<typeof RtpCapabilities>;

/** RTP send parameters of a producer (mediasoup `RtpParameters`, as `Transport.on('produce')` gives them). */
export const RtpParameters = z.looseObject({
  mid: z.string().max(64).optional(),
  codecs: z
    .array(
      z.looseObject({
        mimeType: z.string().min(3).max(64),
        payloadType: z.number().int().min(0).max(127),
        clockRate: z.number().int().positive(),
        channels: z.number().int().min(1).max(8).optional(),
        parameters: Params.optional(),
        rtcpFeedback: z.array(z.looseObject({ type: z.string(), parameter: z.string().optional() })).max(32).optional(),
      }),
    )
    .min(1)
    .max(16),
  headerExtensions: z
    .array(
      z.looseObject({
        uri: z.string().min(1).max(256),
        id: z.number().int().min(1).max(255),
        encrypt: z.boolean().optional(),
        parameters: Params.optional(),
      }),
    )
    .max(32)
    .optional(),
  encodings: z
    .array(
      z.looseObject({
        ssrc: z.number().int().min(0).max(0xffffffff).optional(),
        rid: z.string().max(32).optional(),
        codecPayloadType: z.number().int().min(0).max(127).optional(),
        dtx: z.boolean().optional(),
        maxBitrate: z.number().positive().optional(),
      }),
    )
    .max(4)
    .optional(),
  rtcp: z
    .looseObject({ cname: z.string().max(256).optional(), reducedSize: z.boolean().optional() })
    .optional(),
  msid: z.string().max(256).optional(),
});
export type RtpParameters = z.infer<typeof RtpParameters>;

/** DTLS parameters (RFC 8842 / mediasoup `DtlsParameters`): the role and the certificate fingerprints. */
export const DtlsParameters = z.looseObject({
  role: z.enum(['auto', 'client', 'server']).optional(),
  fingerprints: z
    .array(
      z.object({
        algorithm: z.enum(['sha-1', 'sha-224', 'sha-256', 'sha-384', 'sha-512']),
        value: z.string().regex(/^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+$/, 'a fingerprint is hex pairs separated by ":"'),
      }),
    )
    .min(1)
    .max(8),
});
export type DtlsParameters = z.infer<typeof DtlsParameters>;

/** ICE parameters of an ICE-lite SFU transport (RFC 8445 §5.3). */
export const IceParameters = z.object({
  usernameFragment: z.string(),
  password: z.string(),
  iceLite: z.boolean().optional(),
});
/** An ICE candidate of an SFU transport (mediasoup `IceCandidate`). */
export const IceCandidate = z.looseObject({
  foundation: z.string(),
  priority: z.number(),
  address: z.string(),
  protocol: z.enum(['udp', 'tcp']),
  port: z.number().int(),
  type: z.literal('host'),
  tcpType: z.literal('passive').optional(),
});

// ---- requests (client → server) ------------------------------------------------

export const RoomIdParams = z.object({ roomId: RoomId }).strict();
const Ok = z.object({ ok: z.literal(true) });

/** At most this many usernames in one `room.invite` / `room.create` `invite`. */
export const MAX_INVITEES = 64;

/**
 * Opens a room on the SFU (the caller is not in it until `room.join`); with
 * `invite`, rings every online device of those accounts into it as
 * `room.invite` does (a group call started from contacts in one step).
 * Errors: those of `room.invite` for the invitees (then no room is opened),
 * `policy` (rooms per account), `rate_limited`.
 */
export const RoomCreateParams = z
  .object({
    /** At most this many participants; default and ceiling: the server's `sfu.max_participants` (16). */
    maxParticipants: z.number().int().min(2).max(1000).optional(),
    /** Accounts to ring into the room. */
    invite: z.array(Username).max(MAX_INVITEES).optional(),
  })
  .strict();
export const RoomCreateResult = z.object({
  roomId: RoomId,
  maxParticipants: z.number().int(),
  /** The accounts rung (present when `invite` was given). */
  invited: z.array(Username).optional(),
});

/**
 * Rings every online device of each named account into the room (delivered
 * per device like a 1:1 invite, on whichever node holds it): each gets
 * `room.ring`. Only a participant of the room may invite. The ringing stops
 * (`room.ring_cancelled`) when another device of the same account joins
 * (`answered_elsewhere`) or declines (`declined_elsewhere`), after the ring
 * timeout of 1:1 calls (`timeout`, config `ring_timeout_seconds`), or when
 * the room ends (`room_ended`), or when everyone in it left before the ring
 * was answered (`cancelled`: as a caller hanging up). Everyone in the room
 * hears how each ring ended (`room.invite_ended`). A device of the account
 * that comes online while the ring lasts rings too (same `expiresAt`), and a
 * ring lasts its timeout even with no device online. An invited account may join by room id
 * (every device of it) for as long as the room lasts.
 * Errors: `not_found` / `room_ended`, `invalid_state` (not a participant),
 * `unknown_user`, `forbidden` (a block list or the invitee's contacts-only
 * setting), `policy` (the server's allow/block lists), `room_full`
 * (the invitees would not fit), `rate_limited` (with `retryAfter`).
 */
export const RoomInviteParams = z
  .object({ roomId: RoomId, usernames: z.array(Username).min(1).max(MAX_INVITEES) })
  .strict();
/** The accounts rung now (an account already in the room or already ringing is left out). */
export const RoomInviteResult = z.object({ invited: z.array(Username) });

/** Why a device stopped ringing (`room.ring_cancelled`): the same rules as a 1:1 call's `answered_elsewhere`. */
export const RoomRingCancelReason = z.enum(['answered_elsewhere', 'declined_elsewhere', 'timeout', 'room_ended', 'cancelled']);
export type RoomRingCancelReason = z.infer<typeof RoomRingCancelReason>;

/**
 * How an invitation into a room ended (`room.invite_ended`), once the last
 * ringing device of the invited account stopped: `joined` (a device of it
 * joined), `declined` (a device of it declined: the others stop with it, the
 * 1:1 rule), `timeout` (nobody answered within the ring timeout), `cancelled`
 * (everyone left the room before it was answered), `room_ended` (the room
 * ended first).
 */
export const RoomInviteEndReason = z.enum(['joined', 'declined', 'timeout', 'cancelled', 'room_ended']);
export type RoomInviteEndReason = z.infer<typeof RoomInviteEndReason>;

/**
 * A call link (Signal's call links): `parley://room/<roomId>?t=<token>`. The
 * token (32 random bytes, base64url) is a secret: the server keeps only its
 * SHA-256 and never logs it. Only a participant may create one.
 */
export const RoomLinkCreateParams = z
  .object({
    roomId: RoomId,
    /** Seconds until the link stops working (default 86 400: a day; at most 30 days, never past the room's end). */
    expiresInSeconds: z.number().int().min(1).max(30 * 86_400).optional(),
    /** Whoever uses the link must be admitted by the host first (`room.knock`). Default false. */
    approval: z.boolean().optional(),
  })
  .strict();
export const RoomLinkCreateResult = z.object({
  linkId: z.uuid(),
  /** `parley://room/<roomId>?t=<token>`: give it only to those who may join. */
  url: z.string(),
  /** Unix ms. */
  expiresAt: z.number(),
  approval: z.boolean(),
});
export const RoomLinkRevokeParams = z.object({ roomId: RoomId, linkId: z.uuid() }).strict();
/** A link token as it appears in the URL (`t=`). */
export const RoomLinkToken = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'a call link token is 43 base64url characters');

/**
 * Asks to join through a link that needs the host's approval: the host's
 * devices in the room get `room.knock`; the answer comes as
 * `room.knock_answered`. Once admitted the account may `room.join`.
 * Errors: `forbidden` (the link is unknown, expired or revoked: the message
 * says which it was), `unavailable` (the host is not in the room), `rate_limited`.
 */
export const RoomKnockParams = z.object({ roomId: RoomId, link: RoomLinkToken }).strict();
export const RoomKnockResult = z.object({
  knockId: z.uuid(),
  /** `admitted` at once when the link needs no approval or the account may join anyway. */
  state: z.enum(['waiting', 'admitted']),
});
/** The host admits or denies a knock. Errors: `not_found` (no such knock, or it was answered), `forbidden` (not the host). */
export const RoomAdmitParams = z.object({ roomId: RoomId, knockId: z.uuid(), admit: z.boolean() }).strict();

/**
 * Joins this device to the room (see {@link RoomId} for who may). With
 * `link` (the token of a call link), an account that was not invited joins
 * through it. Errors: `not_found` (unknown room), `forbidden` (not invited;
 * the link is expired, revoked or unknown; the link needs approval and the
 * host has not admitted you: `room.knock`), `room_full`, `room_ended`,
 * `invalid_state` (this device is already in it).
 */
export const RoomJoinParams = z.object({ roomId: RoomId, link: RoomLinkToken.optional() }).strict();

/** A producer in the room: whose it is. */
export const RoomProducer = z.object({
  producerId: SfuObjectId,
  participant: RoomParticipant,
  kind: z.literal('audio'),
  paused: z.boolean(),
});
export type RoomProducer = z.infer<typeof RoomProducer>;

/** What `room.join` answers. */
export const RoomJoinResult = z.object({
  roomId: RoomId,
  /** Load mediasoup-client's `Device` with these (Opus only). */
  routerRtpCapabilities: RtpCapabilities,
  /** Everyone else in the room now. */
  participants: z.array(RoomParticipant),
  /** Their producers now; later ones arrive as `room.producer_added`. */
  producers: z.array(RoomProducer),
  /** The dominant speaker now (null: none yet); later changes arrive as `room.speaker`. */
  speaker: z.object({ participant: RoomParticipant, producerId: SfuObjectId }).nullable(),
  maxParticipants: z.number().int(),
  /**
   * How long this device keeps its place when its signaling connection drops, ms
   * (`room.resume` within it takes the place back; 0: none). Absent from older servers.
   */
  reconnectGraceMs: z.number().int().min(0).optional(),
});

export const TransportDirection = z.enum(['send', 'recv']);
export type TransportDirection = z.infer<typeof TransportDirection>;
/** Creates this participant's WebRTC transport for one direction (a second one for the same direction replaces the first). */
export const RoomTransportCreateParams = z
  .object({ roomId: RoomId, direction: TransportDirection })
  .strict();
/** What mediasoup-client's `Device.createSendTransport` / `createRecvTransport` take. */
export const RoomTransportCreateResult = z.object({
  transportId: SfuObjectId,
  iceParameters: IceParameters,
  iceCandidates: z.array(IceCandidate),
  dtlsParameters: DtlsParameters,
});
export const RoomTransportConnectParams = z
  .object({ roomId: RoomId, transportId: SfuObjectId, dtlsParameters: DtlsParameters })
  .strict();
/** A new ICE username and password for the transport (after the client's network changed). */
export const RoomTransportRestartIceParams = z
  .object({ roomId: RoomId, transportId: SfuObjectId })
  .strict();
export const RoomTransportRestartIceResult = z.object({ iceParameters: IceParameters });

/** Sends this participant's audio through its send transport (audio only: Opus). */
export const RoomProduceParams = z
  .object({
    roomId: RoomId,
    transportId: SfuObjectId,
    kind: z.literal('audio'),
    rtpParameters: RtpParameters,
    /** Start paused (muted). */
    paused: z.boolean().optional(),
  })
  .strict();
export const RoomProduceResult = z.object({ producerId: SfuObjectId });
export const RoomProducerParams = z.object({ roomId: RoomId, producerId: SfuObjectId }).strict();

/**
 * Receives one producer through this participant's recv transport. The
 * consumer starts paused: resume it with `room.consumer.resume` once the
 * client's consumer exists (so no packet arrives before it can be read).
 */
export const RoomConsumeParams = z
  .object({ roomId: RoomId, producerId: SfuObjectId, rtpCapabilities: RtpCapabilities })
  .strict();
/** What mediasoup-client's `Transport.consume` takes (plus whose producer it is). */
export const RoomConsumeResult = z.object({
  consumerId: SfuObjectId,
  producerId: SfuObjectId,
  kind: z.literal('audio'),
  rtpParameters: RtpParameters,
  participant: RoomParticipant,
});
export const RoomConsumerParams = z.object({ roomId: RoomId, consumerId: SfuObjectId }).strict();

/**
 * Sends one sealed message (an {@link Envelope}: the group's sender keys,
 * main/core/e2ee/group-keys.ts, docs/SECURITY.md "Group calls") to another
 * participant's device in the same room; the server routes it as
 * `room.message` and never opens it. Both devices must be in the room.
 */
export const RoomRelayParams = z.object({ roomId: RoomId, to: z.uuid(), envelope: Envelope }).strict();

/** Every room method with its params and result schema (spread into `SignalRequests`). */
export const RoomRequests = {
  'room.create': { params: RoomCreateParams, result: RoomCreateResult },
  'room.join': { params: RoomJoinParams, result: RoomJoinResult },
  'room.invite': { params: RoomInviteParams, result: RoomInviteResult },
  /** Stops this account's ringing for the room (its other devices get `declined_elsewhere`). Errors: `not_found` (not rung). */
  'room.decline': { params: RoomIdParams, result: Ok },
  'room.link.create': { params: RoomLinkCreateParams, result: RoomLinkCreateResult },
  /** Stops a link working (participants only). Errors: `not_found`. */
  'room.link.revoke': { params: RoomLinkRevokeParams, result: Ok },
  'room.knock': { params: RoomKnockParams, result: RoomKnockResult },
  'room.admit': { params: RoomAdmitParams, result: Ok },
  'room.leave': { params: RoomIdParams, result: Ok },
  /**
   * Takes this device's place in the room back on a new signaling connection
   * (after a blip, within the join result's `reconnectGraceMs`): its
   * transports, producer and consumers are as they were. The result is the
   * room now, shaped as `room.join`'s (what changed meanwhile is in it).
   * Errors: `not_found` (no place any more: the grace ran out; join again),
   * `room_ended`, `invalid_state` (already in on this connection).
   */
  'room.resume': { params: RoomIdParams, result: RoomJoinResult },
  'room.transport.create': { params: RoomTransportCreateParams, result: RoomTransportCreateResult },
  'room.transport.connect': { params: RoomTransportConnectParams, result: Ok },
  'room.transport.restart_ice': { params: RoomTransportRestartIceParams, result: RoomTransportRestartIceResult },
  'room.produce': { params: RoomProduceParams, result: RoomProduceResult },
  'room.producer.pause': { params: RoomProducerParams, result: Ok },
  'room.producer.resume': { params: RoomProducerParams, result: Ok },
  'room.producer.close': { params: RoomProducerParams, result: Ok },
  'room.consume': { params: RoomConsumeParams, result: RoomConsumeResult },
  'room.consumer.pause': { params: RoomConsumerParams, result: Ok },
  'room.consumer.resume': { params: RoomConsumerParams, result: Ok },
  'room.relay': { params: RoomRelayParams, result: Ok },
} as const;
export type RoomMethod = keyof typeof RoomRequests;

// ---- notifications (server → participants) -----------------------------------

/** One producer's audio level: `volume` in dBov, −127 (silence) to 0 (loudest), from RFC 6464 levels the sender puts in its RTP. */
export const AudioLevel = z.object({
  participant: RoomParticipant,
  producerId: SfuObjectId,
  volume: z.number(),
});

/** Every room notification (spread into `SignalNotifications`). */
export const RoomNotifications = {
  /** Someone joined the room (to everyone else in it). */
  'room.participant_joined': z.object({ roomId: RoomId, participant: RoomParticipant }),
  /** Someone left (said `room.leave` or lost their connection); their producers are gone. */
  'room.participant_left': z.object({ roomId: RoomId, participant: RoomParticipant }),
  /** A participant started sending: consume it with `room.consume`. */
  'room.producer_added': z.object({ roomId: RoomId, producer: RoomProducer }),
  /**
   * A participant's signaling connection dropped (`away: true`; its audio goes
   * on, and it has the server's grace to come back) or it came back (`false`).
   * If it does not come back, `room.participant_left` follows.
   */
  'room.participant_away': z.object({ roomId: RoomId, participant: RoomParticipant, away: z.boolean() }),
  /** A producer closed (its consumers on the SFU are closed with it). */
  'room.producer_removed': z.object({ roomId: RoomId, producerId: SfuObjectId, participant: RoomParticipant }),
  /** A producer was paused (muted) or resumed. */
  'room.producer_paused': z.object({ roomId: RoomId, producerId: SfuObjectId, paused: z.boolean() }),
  /** The dominant speaker changed (mediasoup's ActiveSpeakerObserver, the dominant speaker identification of Volfin & Cohen). */
  'room.speaker': z.object({ roomId: RoomId, participant: RoomParticipant, producerId: SfuObjectId }),
  /**
   * The loudest producers above the threshold, loudest first, every
   * AUDIO_LEVEL_INTERVAL_MS (mediasoup's AudioLevelObserver); an empty list
   * once everyone went silent.
   */
  'room.audio_levels': z.object({ roomId: RoomId, levels: z.array(AudioLevel) }),
  /** A sealed message from another participant's device (`room.relay`): the server routed it unopened. */
  'room.message': z.object({ roomId: RoomId, from: RoomParticipant, envelope: Envelope }),
  /** To every online device of an invited account: ring (until `expiresAt`, Unix ms). Join with `room.join`, or `room.decline`. */
  'room.ring': z.object({
    roomId: RoomId,
    inviter: RoomParticipant,
    /** Who is in the room now. */
    participants: z.array(Username),
    expiresAt: z.number(),
  }),
  /** Stop ringing for this room, and why. */
  'room.ring_cancelled': z.object({ roomId: RoomId, reason: RoomRingCancelReason }),
  /**
   * To everyone in the room (the invitee's own devices left out): the ring of
   * invited account `username` is over, and why — so that the inviter's
   * "Ringing…" row can say "Declined" or "No answer", or become the
   * participant (`joined`). Sent once per ring, when its last ringing device
   * stops (`room.ring_cancelled` on the invitee's side).
   */
  'room.invite_ended': z.object({ roomId: RoomId, username: Username, reason: RoomInviteEndReason }),
  /** To the host's devices in the room: someone asks to join through a link that needs approval (`room.admit`). */
  'room.knock': z.object({ roomId: RoomId, knockId: z.uuid(), from: RoomParticipant }),
  /** To the knocking device: the host's answer (or `admitted: false` when the room ended or the knock expired). */
  'room.knock_answered': z.object({ roomId: RoomId, knockId: z.uuid(), admitted: z.boolean() }),
  /** The room is over for everyone in it; `reason` says why (e.g. `sfu_failed`: the SFU's media worker died). */
  'room.ended': z.object({ roomId: RoomId, reason: RoomEndReason }),
} as const;
export type RoomNotification = keyof typeof RoomNotifications;
export type RoomNotificationParams<N extends RoomNotification> = z.infer<(typeof RoomNotifications)[N]>;
