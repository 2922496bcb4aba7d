import { z } from 'zod';
import { CallId, CallState, EndReason, RejectReason, TransportKind, Username } from '../call';
import {
  ContactRequestResult,
  ContactsListResult,
  DevicesListResult,
  DeviceRevokeParams,
  PresenceSetParams,
  PresenceSetResult,
  Settings,
  SettingsSetParams,
  SignalNotifications,
  UsernameParams,
} from './signaling';
import { SecurityReason } from './envelope';
import { BudgetWarning } from './webrtc-api';
import { RoomLinkCreateResult } from './sfu';

/**
 * Control API of the headless client (DESIGN.md): JSON-RPC 2.0 over a Unix
 * socket (a named pipe on Windows), one JSON message per line (`\n`-delimited).
 * Methods below; the daemon also sends the notifications in
 * `ControlNotifications`: `call.state` whenever a call changes state,
 * `call.stats` every second, `audio.levels` 20 times a second during a call,
 * `audio.warning` (and `audio.warning_cleared` when its cause ends),
 * `devices.changed` and `devices.switched`; for group calls `room.state`
 * and `room.speaker` (`create_room`, `join_room`, … below; docs/automation.md).
 *
 * Contacts, presence, settings and devices mirror the signaling methods of the
 * same meaning (see `common/protocol/signaling` and `main/core/contacts.ts`,
 * `main/core/devices.ts`), with the same results and errors; the daemon
 * forwards the server's `contact.request`, `contact.updated`,
 * `presence.changed`, `session.ended`, `caller.approval_request` and
 * `caller.approval` notifications to every controller.
 * Device tokens never cross the control socket: `refresh_session` stores the
 * new one in the keychain and returns only its expiry.
 */
export const MAX_CONTROL_MESSAGE_BYTES = 64 * 1024;

/** Audio statistics of a call, from the media session. */
export const MediaStats = z.object({
  /** RTP packets sent / received. */
  packetsSent: z.number().int(),
  packetsReceived: z.number().int(),
  /** Packets never received by playout time (sequence gaps). */
  packetsLost: z.number().int(),
  /** Packets that arrived after their playout time and were dropped. */
  packetsLate: z.number().int(),
  /** Copies of packets already buffered (network duplicates), dropped (NetEQ-like counter). */
  packetsDuplicate: z.number().int().optional(),
  /** Packets dropped because the buffer held more than its ceiling (after a stall), NetEQ's "discarded". */
  packetsDiscarded: z.number().int().optional(),
  /** Earlier frames each packet we send repeats (RFC 2198 redundancy, 0–2; 0 when the peer did not negotiate `red`). */
  redundancy: z.number().int().optional(),
  /** Frame duration in ms (10 or 20). */
  ptimeMs: z.number(),
  /** Jitter buffer target delay (fixed, or the adaptive buffer's current one), ms. */
  jitterTargetMs: z.number(),
  /** Audio in the jitter buffer now, ms. */
  jitterBufferMs: z.number().optional(),
  /** Frames concealed because the buffer ran dry (NetEQ "expand"). */
  expandFrames: z.number().int().optional(),
  /** Frames dropped to shorten the delay (in pauses, or when far above target). */
  accelerateFrames: z.number().int().optional(),
  /** Frames inserted in pauses to lengthen the delay. */
  decelerateFrames: z.number().int().optional(),
  /** Audio inserted (> 0) or dropped (< 0) in pauses to align the speaker's pulls with the packets' arrivals, ms, net. */
  playoutAlignedMs: z.number().optional(),
  /** Round-trip time from RTCP (RFC 3550 §6.4.1), ms. */
  rttMs: z.number().optional(),
  /** Loss of our packets as the far end reports it (smoothed), %. */
  remoteLossPercent: z.number().optional(),
  /** Encoder bitrate now, b/s. */
  bitrate: z.number().int().optional(),
  /** RFC 3550 §6.4.1 interarrival jitter estimate, ms. */
  jitterMs: z.number(),
  /** Lost frames filled by Opus packet loss concealment. */
  framesConcealed: z.number().int(),
  /** Lost frames rebuilt from the next packet's in-band FEC. */
  framesRecoveredByFec: z.number().int(),
  /**
   * Packets whose own copy never arrived (or arrived after a later one) but a later packet's RFC 2198
   * redundancy carried them whole: losses the listener did not hear (neither FEC nor concealment).
   */
  packetsRecoveredByRed: z.number().int().optional(),
  /** Frames not sent because the VAD heard no voice (VAD-driven DTX, daemon `--dtx`). */
  vadSilentFrames: z.number().int().optional(),
  /** Speaker-to-microphone delay of the devices as PulseAudio measures it, given to the echo canceller, ms. */
  deviceDelayMs: z.number().optional(),
  /** The delay the echo canceller found itself (WebRTC APM delay metrics, median), ms. */
  echoDelayMs: z.number().optional(),
  /** The echo canceller's own ERLE estimate (ITU-T G.168 §3.4), dB. */
  echoErleDb: z.number().optional(),
  /**
   * Whether the far end is heard in the microphone (main/media/echo-path.ts):
   * `unknown` until 0.3 s of far-end speech, then `present` or `absent`; while
   * `absent` the echo canceller is given silence and leaves speech untouched.
   */
  echoPath: z.enum(['unknown', 'present', 'absent']).optional(),
  /**
   * Garbage-collection pauses of the media thread since the call's audio
   * began (mark-compact and incremental marking; not the young generation's
   * short scavenges): how many, and the longest, ms. Each one holds every
   * packet and frame of the call. Absent where the media runs on the main thread.
   */
  mediaThreadGc: z.object({ pauses: z.number().int(), longestMs: z.number() }).optional(),
});
export type MediaStats = z.infer<typeof MediaStats>;

/** What `get_call_status` and `list_calls` return for one call. */
export const CallStatus = z.object({
  callId: CallId,
  direction: z.enum(['outgoing', 'incoming']),
  peer: Username,
  state: CallState,
  endReason: EndReason.optional(),
  /** Unix ms of each step the call reached. */
  createdAt: z.number(),
  ringingAt: z.number().optional(),
  answeredAt: z.number().optional(),
  connectedAt: z.number().optional(),
  firstAudioAt: z.number().optional(),
  endedAt: z.number().optional(),
  transport: TransportKind.optional(),
  /**
   * Whether audio from the peer is flowing, once connected: `connected`, or
   * `reconnecting` as soon as no RTP has come for 1 s (never `connected`
   * after more than 1.1 s without any), while the path is repaired (ICE restart).
   */
  media: z.enum(['connected', 'reconnecting']).optional(),
  /** Since when `media` has its current value, Unix ms (how long it has been reconnecting). */
  mediaSince: z.number().optional(),
  /** When the last RTP packet from the peer arrived (or sending began, before any), Unix ms; live calls only. */
  lastAudioAt: z.number().optional(),
  /**
   * Signaling of a live call: `offline` (this device lost the server; media
   * goes on peer to peer), `peer_offline` (the other device lost it; the
   * server holds the call for it for a grace period), `online`. Absent until
   * the first change.
   */
  signaling: z.enum(['online', 'offline', 'peer_offline']).optional(),
  /** Since when `signaling` has its current value, Unix ms. */
  signalingSince: z.number().optional(),
  /** With `peer_offline`: when the server ends the call `failed` unless the peer is back, Unix ms. */
  signalingUntil: z.number().optional(),
  /** This device was suspended (process stopped, machine asleep) mid-call for this long, ms (the latest time). */
  suspendedMs: z.number().optional(),
  /** When the host's addresses last changed during the call (an ICE restart followed), Unix ms. */
  networkChangedAt: z.number().optional(),
  /** Human-readable detail for a `failed` end. */
  error: z.string().optional(),
  /**
   * A problem the call survives (e.g. a microphone that stopped, a policy
   * limit near), for the user to see: every current one, joined by "; ".
   * A device's part goes when its cause ends (the device returned).
   */
  warning: z.string().optional(),
  /** The device part of `warning` per direction, each present only while it holds. */
  audioWarnings: z.object({ input: z.string().optional(), output: z.string().optional() }).optional(),
  stats: MediaStats.optional(),
  /** Why the call failed its end-to-end security checks (with `endReason: failed`); see docs/SECURITY.md. */
  security: SecurityReason.optional(),
  /**
   * End-to-end protection of this call: `sealed` once the peer's offer/answer
   * arrived sealed and signed by its device identity; `fingerprintBound` once the
   * DTLS certificate matched the fingerprint in that sealed SDP; `peerDeviceId`
   * the peer device the call is bound to; `mediaKeysBound` once the SRTP keys in
   * use were mixed with the secret of the sealed offer and answer (false with a
   * peer that sent no share, e.g. a browser: DTLS-SRTP keys alone).
   */
  e2ee: z
    .object({
      sealed: z.boolean(),
      fingerprintBound: z.boolean(),
      mediaKeysBound: z.boolean().optional(),
      peerDeviceId: z.string().optional(),
      /**
       * A device of the peer account this call involves (the peer device, or
       * before the answer one of the devices rung) was added to that account
       * in the last 7 days — validly signed by their account key, but new:
       * worth a word with them (docs/SECURITY.md).
       */
      newDevice: z.boolean().optional(),
      /**
       * Devices the server listed for the callee that were not rung: they
       * carry no valid certificate by the callee's pinned account key
       * (security reason `device_uncertified`).
       */
      refusedDevices: z.array(z.string()).optional(),
    })
    .optional(),
});
export type CallStatus = z.infer<typeof CallStatus>;

/**
 * What this device knows and trusts about a contact's device identities
 * (main/core/e2ee/trust.ts): the pinned identity keys (trust on first use), a
 * pending change that blocks calls until accepted, and the verified mark.
 */
export const TrustInfo = z.object({
  username: Username,
  /** The user compared the safety number and marked the contact verified (cleared by any key change). */
  verified: z.boolean(),
  /** Unix ms of the verification, when verified. */
  verifiedAt: z.number().optional(),
  /** A key change waits for `accept_key_change`; calls with this contact are refused (`key_changed`) until then. */
  blocked: z.boolean(),
  /**
   * The contact's pinned account key (Ed25519, base64url), which must sign each
   * of their devices; `pending` another one shown since (a reset with their
   * password, or a lying server), blocking calls until accepted.
   */
  accountKey: z
    .object({ key: z.string(), firstSeen: z.number(), pending: z.object({ key: z.string(), seenAt: z.number() }).optional() })
    .optional(),
  devices: z.array(
    z.object({
      deviceId: z.string(),
      /** Pinned Ed25519 identity key, base64url. */
      identityKey: z.string(),
      /** Unix ms first seen. */
      firstSeen: z.number(),
      /** A different key (`changed`) or a new device of a verified contact (`added`) waiting for acceptance. */
      pending: z.object({ kind: z.enum(['changed', 'added']), identityKey: z.string(), seenAt: z.number() }).optional(),
    }),
  ),
});
export type TrustInfo = z.infer<typeof TrustInfo>;

/**
 * A safety number: 60 digits in 12 groups of 5 (docs/SECURITY.md "Safety
 * numbers"), the same on both ends when both see the same identity keys.
 */
export const SafetyNumberResult = z.object({
  username: Username,
  /** "12345 67890 …": 12 groups of 5 digits separated by single spaces. */
  safetyNumber: z.string(),
  /** The 60 digits without spaces (for a QR code). */
  digits: z.string(),
  verified: z.boolean(),
});
export type SafetyNumberResult = z.infer<typeof SafetyNumberResult>;

/**
 * An alarm about this account's own devices (main/core/e2ee/account-devices.ts):
 * `device_uncertified` — the server lists a device no device of mine linked
 * (no valid signature by my account key); `account_key_changed` — the server
 * shows another account key than the one this device pinned. Kept until the
 * device is revoked or linked; never deletes trust data.
 */
export const DeviceAlarm = z.object({
  kind: z.enum(['device_uncertified', 'account_key_changed']),
  deviceId: z.string().optional(),
  /** The device's identity key, or the other account key (base64url). */
  identityKey: z.string().optional(),
  /** Unix ms the alarm was first raised. */
  firstSeen: z.number(),
  /** What it means and what to do, for the user. */
  message: z.string(),
});
export type DeviceAlarm = z.infer<typeof DeviceAlarm>;

/**
 * This device's view of its own account's devices: `role` `holder` (this
 * device holds the account key and links new devices), `linked` (linked by
 * the holder), `unlinked` (not linked yet: contacts do not ring it);
 * `approved` the devices this device accepts as the account's; `alarms` as above.
 */
export const AccountDevicesStatus = z.object({
  role: z.enum(['holder', 'linked', 'unlinked']),
  accountKey: z.string().optional(),
  approved: z.array(z.object({ deviceId: z.string(), identityKey: z.string(), approvedAt: z.number() })),
  alarms: z.array(DeviceAlarm),
});
export type AccountDevicesStatus = z.infer<typeof AccountDevicesStatus>;

/** One audio device as PulseAudio names it: `name` is its stable identity. */
export const AudioDevice = z.object({
  name: z.string(),
  description: z.string(),
  /** The OS default for its direction. */
  isDefault: z.boolean(),
});

/** A device choice: `default` (follow the OS default) or a PulseAudio device name (`pulse:` prefix allowed). */
export const DeviceName = z.string().min(1).max(512);

/** The audio devices and what is chosen and in use (`devices.list`, `devices.set`, `devices.changed`). */
export const DeviceList = z.object({
  /** False when PulseAudio cannot be asked: names then go to PortAudio and nothing is followed. */
  pulse: z.boolean(),
  inputs: z.array(AudioDevice),
  outputs: z.array(AudioDevice),
  /** The user's choice per direction: `default` or a device name; remembered across restarts. */
  chosen: z.object({ input: z.string(), output: z.string() }),
  /** The device each open stream uses now (absent outside calls). */
  active: z.object({ input: z.string().optional(), output: z.string().optional() }),
});
export type DeviceList = z.infer<typeof DeviceList>;

/** Which voice processing components run (WebRTC APM, native/apm). */
export const VoiceProcessing = z.object({
  echoCancellation: z.boolean(),
  noiseSuppression: z.boolean(),
  gainControl: z.boolean(),
});

/** One participant of the room this client is in, as this client sees it. */
export const RoomMember = z.object({
  username: Username,
  deviceId: z.string(),
  /** This client. */
  self: z.boolean(),
  /** Its microphone is closed (muted, or push-to-talk up): its producer is paused on the SFU. */
  muted: z.boolean().optional(),
  /** Its connection to the server dropped and it has not come back yet (the server keeps its place for a grace; its audio may go on). */
  away: z.boolean().optional(),
  /** What this client receives from that participant (absent for itself and before its producer is consumed). */
  audio: z
    .object({
      /** Its first packet reached our speaker. */
      playing: z.boolean(),
      packetsReceived: z.number().int(),
      packetsLost: z.number().int(),
      framesConcealed: z.number().int(),
      /** Frames the end-to-end transform could not decrypt (dropped, concealed). */
      framesUndecryptable: z.number().int(),
      jitterBufferMs: z.number(),
      /** The jitter buffer's target delay now (the adaptive buffer's, or the fixed one), ms. */
      jitterTargetMs: z.number().optional(),
      /** Interarrival jitter of its packets (RFC 3550 §6.4.1 estimate), ms. */
      jitterMs: z.number().optional(),
    })
    .optional(),
});
export type RoomMember = z.infer<typeof RoomMember>;

/** A group call ringing this device (the server's `room.ring`). */
export const RoomRing = SignalNotifications['room.ring'];
export type RoomRing = z.infer<typeof RoomRing>;

/** The group call this client is in, or was in last (`room.state`). */
export const RoomStatus = z.object({
  roomId: z.uuid(),
  /**
   * `joining` → `joined` → `left` (we left) or `ended` (the room ended or the connection to it was lost: see `endReason`);
   * `joined` ⇄ `reconnecting` while the connection to the server is down (the server keeps our place for its grace,
   * `reconnectGraceMs`; the audio goes on where the media path still works) or an ICE restart to the SFU is under way.
   */
  state: z.enum(['joining', 'joined', 'reconnecting', 'left', 'ended']),
  /** Since when (Unix ms) we are `reconnecting`, and what we wait for: the server (`signaling`) or the media path (`media`). */
  reconnecting: z.object({ since: z.number(), what: z.enum(['signaling', 'media']) }).optional(),
  /** ICE restarts to the SFU so far (after a transport failed, the network changed, or the signaling came back). */
  iceRestarts: z.number().int().optional(),
  /** Signaling blips survived in this room (the place resumed with `room.resume`). */
  resumes: z.number().int().optional(),
  /** Why it ended: the server's `room.ended` reason (`sfu_failed`, `ended_by_admin`, `server_shutdown`, `empty`, `ttl_expired`, `budget_exceeded`, `node_lost`), `signaling_lost` or `failed`. */
  endReason: z.string().optional(),
  /** What went wrong, for people (a failed join, a device error). */
  error: z.string().optional(),
  maxParticipants: z.number().int().optional(),
  /** Unix ms. */
  joinedAt: z.number().optional(),
  /** From `join_room` to both transports, the producer and every consumer set up, ms. */
  joinMs: z.number().optional(),
  /** Our microphone as the others hear it: false while muted or push-to-talk is up. */
  micOpen: z.boolean(),
  /** Everyone in the room, this client first. */
  participants: z.array(RoomMember),
  /** The dominant speaker, as the SFU last named it. */
  speaker: z.object({ username: Username, deviceId: z.string() }).optional(),
  /**
   * End-to-end encryption of the room's frames (SFrame, RFC 9605, with sender
   * keys sealed per device: docs/SECURITY.md "Group calls"). `sframe` false:
   * the SFU forwards readable Opus (no keys on this client).
   */
  e2ee: z
    .object({
      sframe: z.boolean(),
      /** Devices that get no key from us and whose keys we refuse, with why (a changed key, no certificate…). */
      excluded: z.array(z.object({ username: Username, deviceId: z.string(), reason: z.string(), message: z.string() })),
      keysAccepted: z.number().int(),
      rotations: z.number().int(),
    })
    .optional(),
});
export type RoomStatus = z.infer<typeof RoomStatus>;

export const ControlRequests = {
  /**
   * Opens a group-call room on the server's SFU and joins it (one call at a
   * time: `invalid_state` during a 1:1 call or in another room); with
   * `invite`, rings those contacts' devices into it (`room.ringing` on theirs).
   * Errors: `unavailable` (no SFU), `invalid_params`, `device_error`, and the
   * server's invite errors (`unknown_user`, `forbidden`, `policy`, `rate_limited`).
   */
  create_room: {
    params: z
      .object({ maxParticipants: z.number().int().min(2).max(1000).optional(), invite: z.array(Username).max(64).optional() })
      .strict()
      .default({}),
    result: RoomStatus,
  },
  /**
   * Joins a room; resolves once audio is set up both ways. `roomId`: a room
   * this account was invited to (or created); `link`: a call link
   * (`parley://room/<id>?t=…`) — when it needs the host's approval this knocks
   * and waits for the answer (up to the server's ring timeout); neither: the
   * one room ringing now. Errors: `not_found`, `forbidden` (not invited; the
   * link expired, was revoked or is unknown; the host denied you), `room_full`,
   * `room_ended` (the message says why), `invalid_state`, `device_error`, `invalid_params` (a malformed link).
   */
  join_room: {
    params: z.object({ roomId: z.uuid().optional(), link: z.string().max(512).optional() }).strict().default({}),
    result: RoomStatus,
  },
  /** Leaves the room (closes the devices and the transports). Errors: `invalid_state` when in none. */
  leave_room: { params: z.object({ roomId: z.uuid().optional() }).strict().default({}), result: z.object({ roomId: z.uuid() }) },
  /**
   * Rings contacts' devices into the room we are in (or `roomId`).
   * Errors: `invalid_state` (in no room), the server's `unknown_user`, `forbidden`, `policy`, `room_full`, `rate_limited`.
   */
  invite_to_room: {
    params: z.object({ roomId: z.uuid().optional(), to: z.union([Username, z.array(Username).min(1).max(64)]) }).strict(),
    result: z.object({ invited: z.array(Username) }),
  },
  /** Stops a room ringing on this account's devices (`roomId`, or the one ringing). Errors: `not_found` (nothing rings). */
  decline_room: { params: z.object({ roomId: z.uuid().optional() }).strict().default({}), result: z.object({ roomId: z.uuid() }) },
  /** Rooms ringing on this device now (`room.ringing` payloads). */
  list_room_rings: { params: z.object({}).strict().default({}), result: z.array(RoomRing) },
  /**
   * Creates a call link for the room we are in (or `roomId`, as a participant).
   * The URL carries a secret: share it only with those who may join.
   */
  create_room_link: {
    params: z
      .object({
        roomId: z.uuid().optional(),
        expiresInSeconds: z.number().int().min(1).max(30 * 86_400).optional(),
        approval: z.boolean().optional(),
      })
      .strict()
      .default({}),
    result: RoomLinkCreateResult,
  },
  /** Stops a call link working. Errors: `not_found`. */
  revoke_room_link: { params: z.object({ roomId: z.uuid().optional(), linkId: z.uuid() }).strict(), result: z.object({ ok: z.literal(true) }) },
  /** Answers a knock (`room.knock`) as the host. Errors: `not_found` (no such knock), `forbidden` (not the host). */
  admit_to_room: {
    params: z.object({ roomId: z.uuid().optional(), knockId: z.uuid(), admit: z.boolean().default(true) }).strict(),
    result: z.object({ ok: z.literal(true) }),
  },
  /** Who is in the room and what we receive from each. Errors: `invalid_state` when in none. */
  list_participants: { params: z.object({}).strict().default({}), result: RoomStatus },
  create_call: {
    params: z.object({ to: Username }),
    result: z.object({ callId: CallId }),
  },
  answer_call: {
    /** Without `callId`, answers the one ringing call. */
    params: z.object({ callId: CallId.optional() }),
    result: z.object({ callId: CallId }),
  },
  reject_call: {
    params: z.object({ callId: CallId.optional(), reason: RejectReason.default('declined') }),
    result: z.object({ callId: CallId }),
  },
  end_call: {
    params: z.object({ callId: CallId.optional() }),
    result: z.object({ callId: CallId }),
  },
  hold_call: {
    params: z.object({ callId: CallId.optional() }),
    result: z.object({ callId: CallId }),
  },
  resume_call: {
    params: z.object({ callId: CallId.optional() }),
    result: z.object({ callId: CallId }),
  },
  get_call_status: {
    params: z.object({ callId: CallId }),
    result: CallStatus,
  },
  list_calls: {
    params: z.object({}).strict().default({}),
    result: z.object({ calls: z.array(CallStatus) }),
  },
  /** The contact book: `{contacts, incoming, outgoing, blocked}`. */
  list_contacts: { params: z.object({}).strict().default({}), result: ContactsListResult },
  /** Asks `username` to be a contact: `{status: 'requested' | 'contact'}`. */
  request_contact: { params: UsernameParams, result: ContactRequestResult },
  accept_contact: { params: UsernameParams, result: z.object({ ok: z.literal(true) }) },
  decline_contact: { params: UsernameParams, result: z.object({ ok: z.literal(true) }) },
  /** Removes a contact or withdraws my request. */
  remove_contact: { params: UsernameParams, result: z.object({ ok: z.literal(true) }) },
  block_contact: { params: UsernameParams, result: z.object({ ok: z.literal(true) }) },
  unblock_contact: { params: UsernameParams, result: z.object({ ok: z.literal(true) }) },
  /** First-time caller approval: let a waiting caller's calls ring from now on. */
  approve_caller: { params: UsernameParams, result: z.object({ ok: z.literal(true) }) },
  refuse_caller: { params: UsernameParams, result: z.object({ ok: z.literal(true) }) },
  /** `{status: 'online' | 'away' | 'dnd'}` → `{presence}` as contacts now see it. */
  set_presence: { params: PresenceSetParams, result: PresenceSetResult },
  get_settings: { params: z.object({}).strict().default({}), result: Settings },
  set_settings: { params: SettingsSetParams, result: Settings },
  /** The account's signed-in devices. */
  list_devices: { params: z.object({}).strict().default({}), result: DevicesListResult },
  revoke_device: { params: DeviceRevokeParams, result: z.object({ ok: z.literal(true) }) },
  /** Renews this device's token (kept in the keychain); returns only the new expiry (Unix ms). */
  refresh_session: {
    params: z.object({}).strict().default({}),
    result: z.object({ expiresAt: z.number() }),
  },
  /** Logs this device out: the server forgets its token, the keychain entry is deleted, signaling goes offline. */
  logout: { params: z.object({}).strict().default({}), result: z.object({ ok: z.literal(true) }) },
  get_status: {
    params: z.object({}).strict().default({}),
    result: z.object({
      username: Username,
      deviceId: z.string(),
      signaling: z.enum(['connecting', 'online', 'offline']),
      autoAnswer: z.boolean(),
    }),
  },
  /** The audio devices PulseAudio has, the choice and the devices in use. */
  'devices.list': {
    params: z.object({}).strict().default({}),
    result: DeviceList,
  },
  /**
   * Chooses the microphone and/or speaker (`default` or a device name). A live
   * call moves to them at once (a gap of a few tens of ms); the choice is
   * remembered and used again whenever the device is present.
   * Errors: `device_error` naming the available devices when a name is unknown.
   */
  'devices.set': {
    params: z.object({ input: DeviceName.optional(), output: DeviceName.optional() }).strict(),
    result: DeviceList,
  },
  'audio.get_processing': {
    params: z.object({}).strict().default({}),
    result: VoiceProcessing,
  },
  /** Turns echo cancellation, noise suppression and gain control on or off, for the live call too. */
  'audio.set_processing': {
    params: VoiceProcessing.partial().strict(),
    result: VoiceProcessing,
  },
  /**
   * The safety number with a contact (fetches both accounts' device keys from
   * the server and checks them against the pins first).
   * Errors: `key_changed` while a key change waits for acceptance; `not_contact`, `unknown_user`.
   */
  get_safety_number: { params: UsernameParams, result: SafetyNumberResult },
  /** Marks a contact verified (the user compared the safety number). Errors: `key_changed`, `not_found` (no pinned keys yet). */
  mark_verified: { params: UsernameParams, result: TrustInfo },
  /** Accepts a pending key change (new keys pinned, verified mark stays cleared): calls work again. Errors: `not_found`. */
  accept_key_change: { params: UsernameParams, result: TrustInfo },
  /** What is pinned for a contact. Errors: `not_found` when nothing is pinned. */
  get_trust: { params: UsernameParams, result: TrustInfo },
  /**
   * Asks the server for this account's devices now and compares them with this
   * device's approved list (raising `account.device_alarm` for new alarms).
   */
  get_account_devices: { params: z.object({}).strict().default({}), result: AccountDevicesStatus },
  /**
   * On the device that holds the account key: shows a one-time link code
   * (20 characters, valid `expiresAt`, Unix ms) for a new device of this
   * account to enter (`link_device`). The link completes in the background
   * (`account.device_linked`). Errors: `forbidden` when this device does not
   * hold the account key; `unavailable` offline.
   */
  start_device_link: { params: z.object({}).strict().default({}), result: z.object({ code: z.string(), expiresAt: z.number() }) },
  /**
   * On a new device: links it with the code shown on the device that holds the
   * account key; resolves once this device holds a valid certificate (and has
   * published it). Errors: `invalid_params` (malformed code), `not_found` (no
   * open link for that code), `security` (the reply was not made with the
   * code), `unavailable` (no answer in 25 s).
   */
  link_device: { params: z.object({ code: z.string().min(1).max(64) }).strict(), result: z.object({ accountKey: z.string(), deviceId: z.string() }) },
  /**
   * Recovery when no device holds the account key any more: makes a new
   * account key on this device and signs this device with it. Every contact
   * then sees an account-key change that blocks calls until they accept it
   * (as a key change), and the account's other devices raise an alarm and
   * must be linked again. `confirm` must be true.
   */
  reset_account_key: { params: z.object({ confirm: z.literal(true) }).strict(), result: z.object({ accountKey: z.string() }) },
} as const;
export type ControlMethod = keyof typeof ControlRequests;

/** Sent every second for each connected call. */
export const CallStatsNotification = z.object({
  callId: CallId,
  /** The call's `media` and `mediaSince` (see CallStatus) at this tick. */
  media: z.enum(['connected', 'reconnecting']).optional(),
  mediaSince: z.number().optional(),
  /** How long no RTP has come from the peer at this tick, ms. */
  silentMs: z.number().optional(),
  /** The call's `signaling` (see CallStatus) at this tick, once it has one. */
  signaling: z.enum(['online', 'offline', 'peer_offline']).optional(),
  stats: MediaStats,
  /** Share of played frames that were concealed or rebuilt (PLC, FEC, expand) in the last second, 0–1. */
  concealmentRate: z.number(),
  /** Loss of the packets we receive in the last second, %. */
  lossPercent: z.number(),
  /** E-model estimate (ITU-T G.107, simplified; main/media/quality.ts), 1–4.5. */
  mos: z.number(),
});
export type CallStatsNotification = z.infer<typeof CallStatsNotification>;

/** 20 times a second during a call: levels in dBFS (−100 = digital silence) and the talking flag. */
export const AudioLevelsNotification = z.object({
  callId: CallId,
  /** The microphone before processing. */
  inputDbfs: z.number(),
  /** What is sent, after echo cancellation, noise suppression and gain control. */
  sentDbfs: z.number(),
  /** What the speaker plays. */
  outputDbfs: z.number(),
  /** The user is talking (VAD with a 200 ms hang-over). */
  talking: z.boolean(),
});

/** A device problem the call survives (a device disappeared and the default took over, a device failed). */
export const AudioWarningNotification = z.object({
  direction: z.enum(['input', 'output']),
  device: z.string().optional(),
  message: z.string(),
});

/** A device warning no longer holds: the direction carries audio again on the device the user wants. */
export const AudioWarningClearedNotification = z.object({
  direction: z.enum(['input', 'output']),
  /** The device in use now (a PulseAudio name, or `default`). */
  device: z.string(),
  message: z.string(),
});

/** A stream moved to another device, and how long no audio flowed, ms. */
export const DeviceSwitchedNotification = z.object({
  direction: z.enum(['input', 'output']),
  from: z.string().optional(),
  to: z.string(),
  gapMs: z.number(),
  reason: z.enum(['requested', 'default_changed', 'fell_back', 'returned', 'recovered']),
});

export const ControlNotifications = {
  /** The room's state, participants or speaker changed. */
  'room.state': RoomStatus,
  /** The SFU named a new dominant speaker. */
  'room.speaker': z.object({ roomId: z.uuid(), username: Username, deviceId: z.string() }),
  /** A group call rings this device: `join_room` to answer, `decline_room` to refuse. */
  'room.ringing': RoomRing,
  /** A group call stopped ringing (`answered_elsewhere`, `declined_elsewhere`, `timeout`, `room_ended`, `cancelled`). */
  'room.ring_cancelled': SignalNotifications['room.ring_cancelled'],
  /**
   * In a group call: the ring of someone rung into it is over, and why
   * (`joined`, `declined`, `timeout`, `cancelled`, `room_ended`): the
   * server's `room.invite_ended`, for the room this client is in.
   */
  'room.invite_ended': SignalNotifications['room.invite_ended'],
  /** As the host: someone asks to join through a call link; answer with `admit_to_room`. */
  'room.knock': z.object({ roomId: z.uuid(), knockId: z.uuid(), username: Username, deviceId: z.string() }),
  'call.state': CallStatus,
  'call.stats': CallStatsNotification,
  'audio.levels': AudioLevelsNotification,
  'audio.warning': AudioWarningNotification,
  'audio.warning_cleared': AudioWarningClearedNotification,
  'devices.changed': DeviceList,
  'devices.switched': DeviceSwitchedNotification,
  'signaling.state': z.object({ state: z.enum(['connecting', 'online', 'offline']), detail: z.string().optional() }),
  'contact.request': SignalNotifications['contact.request'],
  'contact.updated': SignalNotifications['contact.updated'],
  'presence.changed': SignalNotifications['presence.changed'],
  'session.ended': SignalNotifications['session.ended'],
  'caller.approval_request': SignalNotifications['caller.approval_request'],
  'caller.approval': SignalNotifications['caller.approval'],
  /** A contact's device identity changed or a device was added (TrustInfo after the change). */
  'trust.key_changed': z.object({ username: Username, kind: z.enum(['changed', 'added', 'account_key_changed']), deviceId: z.string(), blocked: z.boolean() }),
  /** A device the server listed for a contact was refused: no valid certificate by their pinned account key (`reason` `device_uncertified`). */
  'trust.device_refused': z.object({ username: Username, deviceId: z.string(), reason: SecurityReason, message: z.string() }),
  /** An alarm about this account's own devices. */
  'account.device_alarm': DeviceAlarm,
  /** This device linked a new device of the account (it holds a certificate by the account key now). */
  'account.device_linked': z.object({ deviceId: z.string(), identityKey: z.string() }),
  /** The ArmorClaw voice guide's budget warning (`common/protocol/webrtc-api`): a call nears its lifetime or the server's budget. */
  budget_warning: BudgetWarning,
} as const;
