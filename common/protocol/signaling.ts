import { z } from 'zod';
import { CallId, EndReason, RejectReason, Username } from '../call';
import { AccountKey, DeviceCertificate, Envelope, KeyBundle, LinkId, LinkReply, LinkRequest, MAX_SEALED_DEVICES, SecurityReason } from './envelope';
import { RoomNotifications, RoomRequests } from './sfu';

/**
 * Parley signaling protocol: JSON-RPC 2.0 over WebSocket at `/v1/signal`.
 *
 * The first message a client sends is `hello` (protocol version, device id,
 * device token); every other request before it is refused with
 * `unauthenticated`. Requests flow client → server and get a result or an
 * error; notifications flow both ways. Every inbound message is parsed with the
 * schema below at the boundary. A request that fails validation gets
 * `invalid_params` and the connection stays open.
 */
export const PROTOCOL_VERSION = 1;

/** Largest signaling text frame the server answers (bigger ones get `payload_too_large`). */
export const MAX_MESSAGE_BYTES = 64 * 1024;

export const DeviceId = z.uuid();

// ---- requests (client → server) ------------------------------------------------

export const HelloParams = z.object({
  protocol: z.number().int(),
  deviceId: DeviceId,
  token: z.string().min(1).max(512),
  /**
   * The answered calls this device still carries media for (on a reconnect).
   * After a server crash a call both devices list within the grace period
   * resumes; a listed call the server does not know gets `call.ended`
   * (`failed`). Optional: a client that omits it is treated as carrying none.
   */
  calls: z
    .array(
      z
        .object({
          callId: CallId,
          /**
           * How many `call.candidate` notifications of the call this device has
           * received (over every connection): the server sends again the ones
           * from that number on that it relayed and still keeps (a connection
           * that died with messages in flight loses none of the sealed sequence).
           */
          received: z.number().int().nonnegative().optional(),
        })
        .strict(),
    )
    .max(16)
    .optional(),
});
export const HelloResult = z.object({
  accountId: z.string(),
  username: Username,
  deviceId: DeviceId,
  serverTime: z.number(),
  /** Unix ms after which this device's token is refused; renew it before with `session.refresh`. */
  tokenExpiresAt: z.number(),
});

/**
 * Envelopes addressed one per device (device id → envelope): sealed envelopes
 * open only on the device they were sealed for, so the server hands each
 * device its own. At most MAX_SEALED_DEVICES (8).
 */
export const DeviceEnvelopes = z
  .record(z.uuid(), Envelope)
  .refine((r) => Object.keys(r).length <= MAX_SEALED_DEVICES, `at most ${MAX_SEALED_DEVICES} device envelopes`);

/**
 * Starts a call. `callId` is chosen by the caller; the offer travels in
 * `envelopes` (one sealed envelope per callee device: only those devices ring)
 * or, for routing tests, in one `envelope` for every device.
 */
export const InviteParams = z
  .object({
    callId: CallId,
    callee: Username,
    envelope: Envelope.optional(),
    envelopes: DeviceEnvelopes.optional(),
  })
  .refine((p) => !!p.envelope !== !!p.envelopes, 'give either envelope or envelopes');
export const InviteResult = z.object({ callId: CallId });

export const CallIdParams = z.object({ callId: CallId });
export const RingingParams = CallIdParams;
export const AnswerParams = z.object({ callId: CallId, envelope: Envelope });
export const RejectParams = z.object({ callId: CallId, reason: RejectReason });
export const CancelParams = CallIdParams;
/**
 * Ends a call; `reason: "failed"` when this side gives up on it (its media
 * timed out, its devices failed): the other side then gets `failed`, not
 * `hangup`, since nobody hung up.
 */
export const HangupParams = z.object({ callId: CallId, reason: z.literal('failed').optional() });
/** A trickled candidate: one `envelope`, or one per callee device in `envelopes` (the caller while ringing). */
export const CandidateParams = z
  .object({ callId: CallId, envelope: Envelope.optional(), envelopes: DeviceEnvelopes.optional() })
  .refine((p) => !!p.envelope !== !!p.envelopes, 'give either envelope or envelopes');
/**
 * A party's client found that the call failed an end-to-end check (docs/SECURITY.md):
 * the server audits it (`call.security_failure`) and ends the call with `failed`
 * for every party, passing `reason` on.
 */
export const SecurityEventParams = z.object({ callId: CallId, reason: SecurityReason }).strict();
export const OkResult = z.object({ ok: z.literal(true) });

export const RelayCredentialsParams = z.object({}).strict();
/** An RTCIceServer (W3C webrtc-pc §4.2.1) with coturn REST-API credentials. */
export const IceServer = z.object({
  urls: z.array(z.string()),
  username: z.string().optional(),
  credential: z.string().optional(),
});
export type IceServer = z.infer<typeof IceServer>;
export const RelayCredentialsResult = z.object({
  iceServers: z.array(IceServer),
  /** Unix time in seconds after which the credential is refused. */
  expiresAt: z.number().int(),
  ttlSeconds: z.number().int(),
});
export type RelayCredentialsResult = z.infer<typeof RelayCredentialsResult>;

// ---- devices and sessions -------------------------------------------------------

/** One signed-in device of the account. Times are Unix ms. */
export const DeviceInfo = z.object({
  deviceId: DeviceId,
  /** The name given at login (e.g. "laptop"). */
  name: z.string(),
  createdAt: z.number(),
  lastSeenAt: z.number().nullable(),
  /** When its token stops working unless refreshed. */
  expiresAt: z.number(),
  /** Has a live signaling connection now. */
  online: z.boolean(),
  /** The device that asked. */
  current: z.boolean(),
});
export type DeviceInfo = z.infer<typeof DeviceInfo>;
export const Empty = z.object({}).strict();
export const DevicesListResult = z.object({ devices: z.array(DeviceInfo) });
export const DeviceRevokeParams = z.object({ deviceId: DeviceId }).strict();
/** A new token for this device; the old one stops working at once. */
export const SessionRefreshResult = z.object({
  token: z.string(),
  /** Unix ms. */
  expiresAt: z.number(),
});
export type SessionRefreshResult = z.infer<typeof SessionRefreshResult>;

// ---- device keys (end-to-end security) ----------------------------------------

/**
 * Publishes this device's signed public key bundle (replaces an earlier one).
 * Its username and device id must be this device's. With them, the account
 * key (self-signed; it replaces the account's stored one: a new account key
 * after the first device was lost) and this device's certificate by it; the
 * server checks both signatures and names but cannot make either.
 */
export const KeysPublishParams = z
  .object({ bundle: KeyBundle, accountKey: AccountKey.optional(), certificate: DeviceCertificate.optional() })
  .strict();
/** One device of an account with its published key bundle and, when it has one, its certificate by the account key. */
export const DeviceKeys = z.object({ deviceId: DeviceId, online: z.boolean(), bundle: KeyBundle, certificate: DeviceCertificate.optional() });
export type DeviceKeys = z.infer<typeof DeviceKeys>;
/**
 * The key bundles of every device of `username` that published one (oldest
 * device first), and the account key when one was published. Only for my own
 * account, or an account I may call; a blocked caller gets an empty list
 * (what an account without devices gives).
 */
export const KeysGetResult = z.object({ accountKey: AccountKey.optional(), devices: z.array(DeviceKeys) });
export type KeysGetResult = z.infer<typeof KeysGetResult>;

// ---- device linking (a rendezvous the server routes but cannot forge) --------

/**
 * The existing device opens a link rendezvous under `linkId` (derived from the
 * one-time code it shows) for at most LINK_TTL_MS. Only devices of the same
 * account can reach it. Replaces an earlier one of this device.
 */
export const LinkOpenParams = z.object({ linkId: LinkId }).strict();
/** How long a link rendezvous stays open on the server, ms (the code shown is valid as long). */
export const LINK_TTL_MS = 10 * 60_000;
/** The new device sends its MAC-ed bundle to the device that opened `linkId`. Errors: `not_found` (no such open link on this account). */
export const LinkRequestParams = z.object({ linkId: LinkId, request: LinkRequest }).strict();
/** The existing device answers the new device `deviceId` (the account key and its certificate); the rendezvous closes. Errors: `not_found`. */
export const LinkReplyParams = z.object({ linkId: LinkId, deviceId: DeviceId, reply: LinkReply }).strict();

// ---- contacts, presence, settings -------------------------------------------

/**
 * What contacts see of an account. `in_call` is set by the server while the
 * account is in an answered call; `offline` when no device is connected. A
 * blocked account always sees `offline`.
 */
export const Presence = z.enum(['online', 'away', 'in_call', 'dnd', 'offline']);
export type Presence = z.infer<typeof Presence>;
/** What a user may choose; `in_call` and `offline` are the server's to say. */
export const PresenceStatus = z.enum(['online', 'away', 'dnd']);
export type PresenceStatus = z.infer<typeof PresenceStatus>;

export const Contact = z.object({
  accountId: z.string(),
  username: Username,
  presence: Presence,
  /** Unix ms the contact was accepted. */
  since: z.number(),
});
export type Contact = z.infer<typeof Contact>;
/** A pending contact request (incoming or outgoing), or a block entry. `at` is Unix ms. */
export const ContactRef = z.object({ accountId: z.string(), username: Username, at: z.number() });
export type ContactRef = z.infer<typeof ContactRef>;
export const ContactsListResult = z.object({
  contacts: z.array(Contact),
  /** Requests others sent to me, waiting for accept or decline. */
  incoming: z.array(ContactRef),
  /** Requests I sent, not yet answered. */
  outgoing: z.array(ContactRef),
  /** Accounts I blocked. */
  blocked: z.array(ContactRef),
});
export type ContactsListResult = z.infer<typeof ContactsListResult>;
export const UsernameParams = z.object({ username: Username }).strict();
/** `requested`: waiting for the other side; `contact`: they had asked me already, so we are contacts now. */
export const ContactRequestResult = z.object({ status: z.enum(['requested', 'contact']) });
export const PresenceSetParams = z.object({ status: PresenceStatus }).strict();
export const PresenceSetResult = z.object({ presence: Presence });
/** Per-account settings. */
export const Settings = z.object({
  /** Only contacts may call me (default true); others get `not_contact`. */
  contactsOnly: z.boolean(),
});
export type Settings = z.infer<typeof Settings>;
export const SettingsSetParams = z.object({ contactsOnly: z.boolean().optional() }).strict();

/** Every request method with its params and result schema. */
export const SignalRequests = {
  hello: { params: HelloParams, result: HelloResult },
  'call.invite': { params: InviteParams, result: InviteResult },
  'call.ringing': { params: RingingParams, result: OkResult },
  'call.answer': { params: AnswerParams, result: OkResult },
  'call.reject': { params: RejectParams, result: OkResult },
  'call.cancel': { params: CancelParams, result: OkResult },
  'call.hangup': { params: HangupParams, result: OkResult },
  'call.candidate': { params: CandidateParams, result: OkResult },
  'call.security': { params: SecurityEventParams, result: OkResult },
  'keys.publish': { params: KeysPublishParams, result: OkResult },
  'keys.get': { params: UsernameParams, result: KeysGetResult },
  'link.open': { params: LinkOpenParams, result: OkResult },
  'link.request': { params: LinkRequestParams, result: OkResult },
  'link.reply': { params: LinkReplyParams, result: OkResult },
  'relay.credentials': { params: RelayCredentialsParams, result: RelayCredentialsResult },
  'devices.list': { params: Empty, result: DevicesListResult },
  'devices.revoke': { params: DeviceRevokeParams, result: OkResult },
  'session.refresh': { params: Empty, result: SessionRefreshResult },
  'session.logout': { params: Empty, result: OkResult },
  'contacts.list': { params: Empty, result: ContactsListResult },
  'contacts.request': { params: UsernameParams, result: ContactRequestResult },
  'contacts.accept': { params: UsernameParams, result: OkResult },
  'contacts.decline': { params: UsernameParams, result: OkResult },
  'contacts.remove': { params: UsernameParams, result: OkResult },
  'contacts.block': { params: UsernameParams, result: OkResult },
  'contacts.unblock': { params: UsernameParams, result: OkResult },
  'presence.set': { params: PresenceSetParams, result: PresenceSetResult },
  'settings.get': { params: Empty, result: Settings },
  'settings.set': { params: SettingsSetParams, result: Settings },
  'callers.approve': { params: UsernameParams, result: OkResult },
  'callers.refuse': { params: UsernameParams, result: OkResult },
  /** Group calls on the server's SFU (common/protocol/sfu.ts). */
  ...RoomRequests,
} as const;
export type SignalMethod = keyof typeof SignalRequests;
export type SignalParams<M extends SignalMethod> = z.infer<(typeof SignalRequests)[M]['params']>;
export type SignalResult<M extends SignalMethod> = z.infer<(typeof SignalRequests)[M]['result']>;

// ---- notifications (server → client) -----------------------------------------

export const PeerInfo = z.object({ accountId: z.string(), username: Username, deviceId: DeviceId });
export type PeerInfo = z.infer<typeof PeerInfo>;

export const SignalNotifications = {
  /** A call for this device; the offer is in `envelope`. */
  'call.incoming': z.object({ callId: CallId, caller: PeerInfo, envelope: Envelope }),
  /** The callee's device is ringing. */
  'call.ringing': z.object({ callId: CallId }),
  /** The callee answered; the answer is in `envelope`. */
  'call.answered': z.object({ callId: CallId, callee: PeerInfo, envelope: Envelope }),
  /** A trickled ICE candidate from the other side. */
  'call.candidate': z.object({ callId: CallId, envelope: Envelope }),
  /** The call is over for this device; `security` when a party reported a failed end-to-end check. */
  'call.ended': z.object({ callId: CallId, reason: EndReason, security: SecurityReason.optional() }),
  /**
   * The other party's signaling connection of an answered call dropped
   * (`reconnecting`: the server holds the call for it until `until`, Unix ms,
   * then ends it `failed`; `since` is when it dropped) or is back (`online`).
   * Media runs peer to peer and may go on meanwhile.
   */
  'call.link': z.object({
    callId: CallId,
    peer: z.enum(['reconnecting', 'online']),
    since: z.number().optional(),
    until: z.number().optional(),
  }),
  /**
   * A policy limit is near for a call (both parties get it): `lifetime` (the
   * call's maximum length) or `budget` (duration budget). `endsAt` is Unix ms;
   * `action` says what happens then.
   */
  'call.warning': z.object({
    callId: CallId,
    kind: z.enum(['lifetime', 'budget']),
    endsAt: z.number(),
    action: z.enum(['terminate', 'warn', 'extend']),
    message: z.string(),
  }),
  /** Someone asked to become my contact (every device of mine gets it). */
  'contact.request': ContactRef,
  /**
   * My relation with an account changed (sent to every device of both sides):
   * `contact` (with their presence), `incoming` / `outgoing` (a pending request),
   * `none` (declined or removed). `blocked` is present only for my own devices.
   */
  'contact.updated': z.object({
    accountId: z.string(),
    username: Username,
    relation: z.enum(['contact', 'incoming', 'outgoing', 'none']),
    presence: Presence.optional(),
    blocked: z.boolean().optional(),
  }),
  /** A contact's presence changed. */
  'presence.changed': z.object({ accountId: z.string(), username: Username, presence: Presence }),
  /**
   * First-time caller approval: `username` tried to call me; answer with
   * `callers.approve` or `callers.refuse` before `expiresAt` (Unix ms).
   */
  'caller.approval_request': z.object({
    accountId: z.string(),
    username: Username,
    expiresAt: z.number(),
  }),
  /** The answer to my first call to `username`: `approved` (call again now), `refused` or `expired`. */
  'caller.approval': z.object({
    accountId: z.string(),
    username: Username,
    result: z.enum(['approved', 'refused', 'expired']),
  }),
  /** To the device that opened `linkId`: a device of this account asks to be linked (its MAC-ed bundle). */
  'link.request': z.object({ linkId: LinkId, deviceId: DeviceId, request: LinkRequest }),
  /** To the device that asked: the linking device's answer (account key and certificate, MAC-ed). */
  'link.reply': z.object({ linkId: LinkId, reply: LinkReply }),
  /** This device was revoked or logged out; the server closes the connection after this. */
  'session.ended': z.object({ reason: z.enum(['revoked', 'logged_out', 'expired']) }),
  /** Group calls on the server's SFU (common/protocol/sfu.ts). */
  ...RoomNotifications,
} as const;
export type SignalNotification = keyof typeof SignalNotifications;
export type SignalNotificationParams<N extends SignalNotification> = z.infer<
  (typeof SignalNotifications)[N]
>;

// ---- HTTP (accounts and sessions) ---------------------------------------------

/** A password: 8–256 characters. */
export const Password = z
  .string()
  .min(8, 'a password has at least 8 characters')
  .max(256, 'a password has at most 256 characters');

export const RegisterBody = z.object({ username: Username, password: Password });
export const RegisterReply = z.object({ accountId: z.string(), username: Username });

export const LoginBody = z.object({
  username: Username,
  password: z.string().min(1).max(256),
  deviceName: z.string().min(1).max(64).default('parley'),
});
/** A device token is returned once, at login; the server keeps only its hash. */
export const LoginReply = z.object({
  accountId: z.string(),
  username: Username,
  deviceId: DeviceId,
  token: z.string(),
});
export type LoginReply = z.infer<typeof LoginReply>;

/** Body of every HTTP error reply. */
export const HttpError = z.object({
  error: z.object({ code: z.number(), message: z.string(), data: z.object({ reason: z.string() }).passthrough() }),
});
