import { z } from 'zod';
import type { CallState } from '../call';
import { ParleyError, type ErrorReason } from '../errors';
import type { CallStatus } from './control';

/**
 * The call API of the ArmorClaw voice guide ("WebRTC Voice User Guide" v1.0.0,
 * `docs/guides/webrtc-voice-guide.md` of the ArmorClaw repository, sections
 * "API Reference" and "Examples"), served on the headless client's control
 * socket beside Parley's own names (`ControlRequests` in `./control`). Fields
 * are snake_case as in the guide; every method is mapped onto the same handler
 * as its Parley counterpart (main/cli/control-server.ts), never a second
 * implementation. docs/automation.md has the method table.
 *
 * Errors carry Parley's code and `data.reason` as always, plus the guide's
 * error name in `data.name` (`ErrCallNotFound`, `ErrInvalidState`, …; see
 * {@link guideError}).
 */

/** Longest SDP accepted in `offer_sdp` / `answer_sdp`, UTF-16 code units (a browser's audio offer is ~2–6 KB). */
export const MAX_SDP_LENGTH = 16 * 1024;

/**
 * A call id as a script may type it. Parley's ids are UUIDs, but an unknown id
 * of any shape (the guide's own `call-uuid-123`) must be answered
 * `ErrCallNotFound`, not as a type error.
 */
const CallRef = z.string().min(1).max(128);

/**
 * Whom to call: a Parley username, also written Matrix-style as the guide does
 * (`@alice` or `@alice:example.org` both name `alice`).
 */
export const UserRef = z
  .string()
  .min(1)
  .max(256)
  .transform((s) => (s.startsWith('@') ? s.slice(1).split(':')[0]! : s));

const Sdp = z.string().min(1).max(MAX_SDP_LENGTH, `an SDP has at most ${MAX_SDP_LENGTH} characters`);

/** One trickled ICE candidate (RTCIceCandidateInit, snake_case as in the guide). */
export const GuideCandidate = z.object({
  candidate: z.string().max(1024),
  sdp_mid: z.string().max(64).nullish(),
  sdp_mline_index: z.number().int().min(0).max(64).nullish(),
});
export type GuideCandidate = z.infer<typeof GuideCandidate>;

/** A duration as the guide writes it (Go's time.Duration text): `5m23s`, `30m`, `2h`, `0s`. */
export const GuideDuration = z.string().regex(/^(\d+h)?(\d+m)?(\d+s)?$/).refine((s) => s.length > 0);

/** One audit record (main/core/audit-log.ts). `ts` is Unix ms; no field ever holds a secret. */
export const AuditEntry = z.object({
  seq: z.number().int(),
  ts: z.number(),
  time: z.string(),
  event_type: z.string(),
  call_id: z.string().optional(),
  user_id: z.string().optional(),
  reason: z.string().optional(),
  details: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
});
export type AuditEntry = z.infer<typeof AuditEntry>;

const Success = z.object({ success: z.literal(true) });

export const WebrtcRequests = {
  /**
   * With `user_id`: calls that Parley user (sealed end to end, as `create_call`).
   * With `offer_sdp`: answers a standard WebRTC offer from the controller's own
   * peer (a browser page, a bot, a gateway) with `answer_sdp`; that call is not
   * end-to-end verified. `room_id` is kept as a label.
   */
  'webrtc.create_call': {
    params: z
      .object({
        user_id: UserRef.optional(),
        offer_sdp: Sdp.optional(),
        room_id: z.string().max(256).optional(),
      })
      .refine((p) => p.user_id !== undefined || p.offer_sdp !== undefined, {
        message: 'give user_id (the Parley user to call) or offer_sdp (a standard WebRTC offer to answer)',
      }),
    result: z.object({
      call_id: z.string(),
      /** How long the call may last (the daemon's `default_lifetime`), e.g. `30m`. */
      ttl: z.string(),
      state: z.string(),
      answer_sdp: z.string().optional(),
      room_id: z.string().optional(),
    }),
  },
  /** Answers the ringing call (`call_id` optional, as `answer_call`). */
  'webrtc.answer_call': {
    params: z.object({ call_id: CallRef.optional(), answer_sdp: Sdp.optional() }),
    result: Success,
  },
  /** Declines a ringing call; a `reason` containing "busy" refuses it as busy. */
  'webrtc.reject_call': {
    params: z.object({ call_id: CallRef.optional(), reason: z.string().max(200).optional() }),
    result: Success,
  },
  /** Ends a call in any live state; `reason` is recorded in the audit log. */
  'webrtc.end_call': {
    params: z.object({ call_id: CallRef.optional(), reason: z.string().max(200).optional() }),
    result: Success,
  },
  /** Trickled ICE candidates of a standard WebRTC peer's call (created with `offer_sdp`). */
  'webrtc.send_candidates': {
    params: z.object({ call_id: CallRef, candidates: z.array(GuideCandidate).max(64) }),
    result: Success,
  },
  'webrtc.get_call_status': {
    params: z.object({ call_id: CallRef }),
    result: z.object({
      call_id: z.string(),
      state: z.string(),
      duration: z.string(),
      tokens_used: z.number().int(),
      budget_remaining: z.number().int(),
    }).loose(),
  },
  /** The calls that are not over yet. */
  'webrtc.list': {
    params: z.object({}).loose().nullish().transform(() => ({})),
    result: z.object({ calls: z.array(z.object({ call_id: z.string(), state: z.string(), duration: z.string(), tokens_used: z.number() }).loose()) }),
  },
  /**
   * The local audit log, newest first: `limit` (1–1000, default 100) entries
   * after skipping `offset`; filters `event_type` (one or several), `call_id`,
   * `since` / `until` (Unix ms or ISO 8601).
   */
  'webrtc.get_audit_log': {
    params: z
      .object({
        limit: z.number().int().min(1).max(1000).default(100),
        offset: z.number().int().min(0).default(0),
        event_type: z.union([z.string().max(64), z.array(z.string().max(64)).max(32)]).optional(),
        call_id: CallRef.optional(),
        since: z.union([z.number(), z.iso.datetime({ offset: true })]).optional(),
        until: z.union([z.number(), z.iso.datetime({ offset: true })]).optional(),
      })
      .nullish()
      .transform((p) => p ?? { limit: 100, offset: 0 }),
    result: z.object({ entries: z.array(AuditEntry), total: z.number().int(), next_offset: z.number().int().optional() }),
  },
} as const;
export type WebrtcMethod = keyof typeof WebrtcRequests;

/** The guide's `budget_warning` notification (tokens ≈ seconds of call). */
export const BudgetWarning = z.object({
  warning: z.literal('budget_warning'),
  call_id: z.string(),
  tokens_used: z.number().int(),
  tokens_remaining: z.number().int(),
  /** 0–1, as the guide writes it (0.8 = 80 %). */
  percentage_used: z.number(),
});
export type BudgetWarning = z.infer<typeof BudgetWarning>;

/** The guide's error names (and Parley's own for what the guide does not name). */
export type GuideErrorName =
  | 'ErrMaxConcurrentCallsExceeded'
  | 'ErrSecurityPolicyViolation'
  | 'ErrBudgetExceeded'
  | 'ErrCallNotFound'
  | 'ErrInvalidState'
  | 'ErrRateLimitExceeded'
  | 'ErrInvalidParams'
  | 'ErrInvalidRequest'
  | 'ErrPayloadTooLarge'
  | 'ErrUserNotFound'
  | 'ErrUnavailable'
  | 'ErrInternal';

const nameByReason: Partial<Record<ErrorReason, GuideErrorName>> = {
  call_not_found: 'ErrCallNotFound',
  invalid_state: 'ErrInvalidState',
  rate_limited: 'ErrRateLimitExceeded',
  invalid_params: 'ErrInvalidParams',
  parse_error: 'ErrInvalidRequest',
  invalid_request: 'ErrInvalidRequest',
  method_not_found: 'ErrInvalidRequest',
  payload_too_large: 'ErrPayloadTooLarge',
  forbidden: 'ErrSecurityPolicyViolation',
  not_contact: 'ErrSecurityPolicyViolation',
  approval_required: 'ErrSecurityPolicyViolation',
  key_changed: 'ErrSecurityPolicyViolation',
  security: 'ErrSecurityPolicyViolation',
  policy: 'ErrSecurityPolicyViolation',
  unknown_user: 'ErrUserNotFound',
  callee_offline: 'ErrUnavailable',
  unavailable: 'ErrUnavailable',
  unauthenticated: 'ErrUnavailable',
  token_expired: 'ErrUnavailable',
  device_error: 'ErrUnavailable',
  internal_error: 'ErrInternal',
};

/**
 * Adds the guide's error name to a Parley error (`data.name`), keeping its
 * code, reason and message. `policy` errors are told apart by their message
 * (the server's budget and concurrency refusals); `retry_after` stays as is.
 * Errors already named (e.g. the relay API's) are left alone.
 */
export function guideError(error: ParleyError, context: { creating?: boolean } = {}): ParleyError {
  if (error.data.name) return error;
  let name = nameByReason[error.reason] ?? 'ErrInternal';
  if (error.reason === 'policy' && /budget|call time/i.test(error.message)) name = 'ErrBudgetExceeded';
  else if (error.reason === 'policy' && /concurren|simultaneous|at a time/i.test(error.message)) name = 'ErrMaxConcurrentCallsExceeded';
  else if (context.creating && error.reason === 'invalid_state' && /already in a call|another call/i.test(error.message)) name = 'ErrMaxConcurrentCallsExceeded';
  const { reason, ...extra } = error.data;
  return new ParleyError(reason, error.message, { ...extra, name });
}

/**
 * Seconds as Go's time.Duration prints them, as the guide's `duration` does:
 * `5m23s`, `1h0m5s`, `0s`; `compact` leaves zero parts out as the guide's
 * config and `ttl` values are written: `30m`, `2h`, `1h30m`.
 */
export function formatDuration(seconds: number, compact = false): string {
  let s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (compact) return (h ? `${h}h` : '') + (m ? `${m}m` : '') + (s || (!h && !m) ? `${s}s` : '');
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/**
 * Parses a duration the guide's way (`30m`, `2h`, `1h30m`, `90s`) into seconds.
 * @throws ParleyError `invalid_params` for anything else.
 */
export function parseDuration(text: string): number {
  const m = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text.trim());
  if (!m || text.trim() === '') throw new ParleyError('invalid_params', `"${text}" is not a duration like 30m, 2h, 1h30m or 90s`);
  return Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
}

/**
 * Parley's call state in the guide's words (`active` is the guide's
 * `connected`), with one word of Parley's own: an active call that has had
 * no audio from the peer for a second (media `reconnecting`, the path being
 * repaired) is `reconnecting`, never `connected`.
 */
export function guideState(state: CallState, media?: 'connected' | 'reconnecting'): string {
  if (state !== 'active') return state;
  return media === 'reconnecting' ? 'reconnecting' : 'connected';
}

/**
 * Tokens of a call as the guide counts them: 1 token ≈ 1 second of audio,
 * counted from the moment media connected. `budget` is the call's token
 * budget (its lifetime in seconds).
 */
export function callTokens(status: CallStatus, budget: number, now = Date.now()): { used: number; remaining: number; duration: string } {
  const from = status.connectedAt ?? status.answeredAt;
  const to = status.endedAt ?? now;
  const used = from ? Math.max(0, Math.floor((to - from) / 1000)) : 0;
  return { used, remaining: Math.max(0, budget - used), duration: formatDuration(from ? (to - from) / 1000 : 0) };
}
