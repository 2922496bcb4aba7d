import type { CallState } from '../../common/call';

/**
 * What can happen to a call. Each event names a fact, not a wish: `answer`
 * means an answer was sent or received, `media_up` that ICE and DTLS
 * connected, `end` that the call is over (with a reason carried alongside).
 */
export type CallEvent =
  | 'dial' // we invited someone
  | 'invite' // someone invited us
  | 'remote_ringing' // the callee's device rings
  | 'answer' // the call was answered (by us, or by the callee)
  | 'media_up' // ICE + DTLS-SRTP connected
  | 'hold'
  | 'resume'
  | 'end';

/**
 * The one transition table of DESIGN.md:
 * `idle → outgoing → ringing → connecting → active ⇄ held → ended` for the
 * caller and `idle → incoming → connecting → …` for the callee. A callee may
 * answer before its ringing notice reaches us, so `outgoing —answer→
 * connecting` is legal too. Every state but `ended` and `idle` can end.
 */
export const CALL_TRANSITIONS: Readonly<Record<CallState, Partial<Record<CallEvent, CallState>>>> = {
  idle: { dial: 'outgoing', invite: 'incoming' },
  outgoing: { remote_ringing: 'ringing', answer: 'connecting', end: 'ended' },
  ringing: { answer: 'connecting', end: 'ended' },
  incoming: { answer: 'connecting', end: 'ended' },
  connecting: { media_up: 'active', end: 'ended' },
  active: { hold: 'held', end: 'ended' },
  held: { resume: 'active', end: 'ended' },
  ended: {},
};

/** Thrown for a move the table does not allow. */
export class IllegalTransitionError extends Error {
  constructor(
    readonly from: CallState,
    readonly event: CallEvent,
  ) {
    super(`a call that is ${from} cannot take "${event}"`);
    this.name = 'IllegalTransitionError';
  }
}

/**
 * The state after `event` in state `from`.
 * @throws IllegalTransitionError when the table has no such move.
 */
export function nextCallState(from: CallState, event: CallEvent): CallState {
  const to = CALL_TRANSITIONS[from][event];
  if (!to) throw new IllegalTransitionError(from, event);
  return to;
}
