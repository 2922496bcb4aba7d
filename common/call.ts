import { z } from 'zod';

/**
 * Call states of DESIGN.md. `idle → outgoing → ringing → connecting → active ⇄ held → ended`
 * for the caller, `idle → incoming → connecting → …` for the callee. The legal moves
 * between them are one table in `main/core/call-states.ts`.
 */
export const CallState = z.enum([
  'idle',
  'outgoing',
  'ringing',
  'incoming',
  'connecting',
  'active',
  'held',
  'ended',
]);
export type CallState = z.infer<typeof CallState>;

/** Why a call ended. Every end carries exactly one. */
export const EndReason = z.enum([
  'hangup',
  'declined',
  'busy',
  'no_answer',
  'answered_elsewhere',
  'ttl_expired',
  'budget_exceeded',
  'policy',
  'failed',
]);
export type EndReason = z.infer<typeof EndReason>;

/** Reasons a callee may give when refusing a call. */
export const RejectReason = z.enum(['declined', 'busy']);
export type RejectReason = z.infer<typeof RejectReason>;

/** Which kind of ICE candidate pair carries the media (RFC 8445 §5.1.1). */
export const TransportKind = z.enum(['host', 'srflx', 'prflx', 'relay']);
export type TransportKind = z.infer<typeof TransportKind>;

/** Opaque call id: a UUID chosen by the caller. */
export const CallId = z.uuid();

/** An account name: 3–32 characters, lower-case letters, digits, `.`, `_`, `-`. */
export const Username = z
  .string()
  .min(3, 'a username has at least 3 characters')
  .max(32, 'a username has at most 32 characters')
  .regex(/^[a-z0-9][a-z0-9._-]*$/, 'a username uses lower-case letters, digits, ".", "_" and "-"');
