/**
 * Stable error codes shared by the server, the clients and the control socket.
 *
 * Transport-level codes are the JSON-RPC 2.0 reserved ones (JSON-RPC 2.0 §5.1);
 * application codes live in the -32000…-32099 "server error" range the spec
 * reserves for implementations, so any JSON-RPC peer can at least tell them apart.
 * The `reason` string is what programs switch on; the message is for people and
 * never carries a secret, a stack trace or another account's private data.
 */
export const ErrorCode = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,

  UNAUTHENTICATED: -32001,
  PROTOCOL_VERSION: -32002,
  UNKNOWN_USER: -32003,
  CALLEE_OFFLINE: -32004,
  CALL_NOT_FOUND: -32005,
  INVALID_STATE: -32006,
  PAYLOAD_TOO_LARGE: -32007,
  RATE_LIMITED: -32008,
  FORBIDDEN: -32009,
  ALREADY_EXISTS: -32010,
  BAD_CREDENTIALS: -32011,
  UNAVAILABLE: -32012,
  DEVICE_ERROR: -32013,
  NOT_CONTACT: -32014,
  NOT_FOUND: -32015,
  POLICY: -32016,
  TOKEN_EXPIRED: -32017,
  APPROVAL_REQUIRED: -32018,
  KEY_CHANGED: -32019,
  SECURITY: -32020,
  ROOM_FULL: -32021,
  ROOM_ENDED: -32022,
} as const;

export type ErrorReason =
  | 'parse_error'
  | 'invalid_request'
  | 'method_not_found'
  | 'invalid_params'
  | 'internal_error'
  | 'unauthenticated'
  | 'protocol_version'
  | 'unknown_user'
  | 'callee_offline'
  | 'call_not_found'
  | 'invalid_state'
  | 'payload_too_large'
  | 'rate_limited'
  | 'forbidden'
  | 'already_exists'
  | 'bad_credentials'
  | 'unavailable'
  | 'device_error'
  /** The callee takes calls from contacts only and the caller is not one. */
  | 'not_contact'
  /** The thing named (device, contact request, contact) does not exist for this account. */
  | 'not_found'
  /** A server policy refuses the request (server-wide block list, concurrency, budget). */
  | 'policy'
  /** The device token's lifetime is over; sign in again. */
  | 'token_expired'
  /** The callee must first approve this caller (first-time caller approval); they have been asked. */
  | 'approval_required'
  /**
   * A contact's device identity key is not the one pinned on this device (or a
   * verified contact has a new device): calls to and from them are blocked
   * until the user accepts the change (`accept_key_change`). See docs/SECURITY.md.
   */
  | 'key_changed'
  /**
   * An end-to-end security check failed: a sealed envelope did not open or
   * verify, a replay or reordering, a bad key bundle, a DTLS fingerprint that
   * is not the one delivered sealed. The call ends `failed`.
   */
  | 'security'
  /** A group call's room already has its maximum number of participants. */
  | 'room_full'
  /** A group call's room is over (the message names why: its SFU worker failed, an admin ended it, …). */
  | 'room_ended';

const reasonByCode: Record<number, ErrorReason> = {
  [ErrorCode.PARSE_ERROR]: 'parse_error',
  [ErrorCode.INVALID_REQUEST]: 'invalid_request',
  [ErrorCode.METHOD_NOT_FOUND]: 'method_not_found',
  [ErrorCode.INVALID_PARAMS]: 'invalid_params',
  [ErrorCode.INTERNAL_ERROR]: 'internal_error',
  [ErrorCode.UNAUTHENTICATED]: 'unauthenticated',
  [ErrorCode.PROTOCOL_VERSION]: 'protocol_version',
  [ErrorCode.UNKNOWN_USER]: 'unknown_user',
  [ErrorCode.CALLEE_OFFLINE]: 'callee_offline',
  [ErrorCode.CALL_NOT_FOUND]: 'call_not_found',
  [ErrorCode.INVALID_STATE]: 'invalid_state',
  [ErrorCode.PAYLOAD_TOO_LARGE]: 'payload_too_large',
  [ErrorCode.RATE_LIMITED]: 'rate_limited',
  [ErrorCode.FORBIDDEN]: 'forbidden',
  [ErrorCode.ALREADY_EXISTS]: 'already_exists',
  [ErrorCode.BAD_CREDENTIALS]: 'bad_credentials',
  [ErrorCode.UNAVAILABLE]: 'unavailable',
  [ErrorCode.DEVICE_ERROR]: 'device_error',
  [ErrorCode.NOT_CONTACT]: 'not_contact',
  [ErrorCode.NOT_FOUND]: 'not_found',
  [ErrorCode.POLICY]: 'policy',
  [ErrorCode.TOKEN_EXPIRED]: 'token_expired',
  [ErrorCode.APPROVAL_REQUIRED]: 'approval_required',
  [ErrorCode.KEY_CHANGED]: 'key_changed',
  [ErrorCode.SECURITY]: 'security',
  [ErrorCode.ROOM_FULL]: 'room_full',
  [ErrorCode.ROOM_ENDED]: 'room_ended',
};

const codeByReason = Object.fromEntries(
  Object.entries(reasonByCode).map(([code, reason]) => [reason, Number(code)]),
) as Record<ErrorReason, number>;

/** The `error.data` every Parley JSON-RPC error carries. */
export interface ParleyErrorData {
  reason: ErrorReason;
  /** Seconds to wait before retrying, with `rate_limited`. */
  retryAfter?: number;
  /** The same seconds under the name the call-policy specification uses (issue 4: `rate_limited` with `retry_after`). */
  retry_after?: number;
  /** Which field was wrong, with `invalid_params`. */
  issues?: { path: string; message: string }[];
  /**
   * A stable upper-case name where an API defines finer errors than the reason
   * (the relay API: `CALL_RELAY_UNAUTHORIZED`, `CALL_RELAY_RATE_LIMITED`, `CALL_RELAY_PROVIDER_ERROR`).
   */
  name?: string;
}

/**
 * An error with a stable code, safe to send to the other side as a JSON-RPC
 * error object. `message` must be written for a person and contain no secret.
 */
export class ParleyError extends Error {
  readonly code: number;
  readonly reason: ErrorReason;
  readonly data: ParleyErrorData;

  constructor(reason: ErrorReason, message: string, extra: Omit<ParleyErrorData, 'reason'> = {}) {
    super(message);
    this.name = 'ParleyError';
    this.reason = reason;
    this.code = codeByReason[reason];
    this.data = { reason, ...extra };
    if (extra.retryAfter !== undefined) this.data.retry_after = extra.retryAfter;
  }

  /** The JSON-RPC 2.0 error object (§5.1) for this error. */
  toJsonRpc(): { code: number; message: string; data: ParleyErrorData } {
    return { code: this.code, message: this.message, data: this.data };
  }

  /**
   * Rebuilds a ParleyError from a JSON-RPC error object received from a peer.
   * Unknown codes become `internal_error` with the peer's message kept.
   */
  static fromJsonRpc(err: { code: number; message: string; data?: unknown }): ParleyError {
    const data = (err.data ?? {}) as Partial<ParleyErrorData>;
    const reason: ErrorReason =
      data.reason && data.reason in codeByReason ? data.reason : (reasonByCode[err.code] ?? 'internal_error');
    const { reason: _r, ...extra } = data;
    return new ParleyError(reason, err.message, extra);
  }
}

/** Code for a reason, for peers that build error objects by hand. */
export function errorCodeOf(reason: ErrorReason): number {
  return codeByReason[reason];
}
