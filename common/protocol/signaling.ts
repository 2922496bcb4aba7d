import { z } from 'zod';
import { CallId, EndReason, RejectReason, Username } from '../call';
import { Envelope } from './envelope';

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
});
export const HelloResult = z.object({
  accountId: z.string(),
  username: Username,
  deviceId: DeviceId,
  serverTime: z.number(),
});

/** Starts a call. `callId` is chosen by the caller; the offer travels in `envelope`. */
export const InviteParams = z.object({
  callId: CallId,
  callee: Username,
  envelope: Envelope,
});
export const InviteResult = z.object({ callId: CallId });

export const CallIdParams = z.object({ callId: CallId });
export const RingingParams = CallIdParams;
export const AnswerParams = z.object({ callId: CallId, envelope: Envelope });
export const RejectParams = z.object({ callId: CallId, reason: RejectReason });
export const CancelParams = CallIdParams;
export const HangupParams = CallIdParams;
export const CandidateParams = z.object({ callId: CallId, envelope: Envelope });
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
  'relay.credentials': { params: RelayCredentialsParams, result: RelayCredentialsResult },
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
  /** The call is over for this device. */
  'call.ended': z.object({ callId: CallId, reason: EndReason }),
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
