import { describe, expect, it } from 'vitest';
import { CallState } from '../../common/call';
import {
  CALL_TRANSITIONS,
  IllegalTransitionError,
  nextCallState,
  type CallEvent,
} from '../../main/core/call-states';

const EVENTS: CallEvent[] = ['dial', 'invite', 'remote_ringing', 'answer', 'media_up', 'hold', 'resume', 'end'];

// The legal moves, written out independently of the table under test.
const LEGAL: [string, CallEvent, string][] = [
  ['idle', 'dial', 'outgoing'],
  ['idle', 'invite', 'incoming'],
  ['outgoing', 'remote_ringing', 'ringing'],
  ['outgoing', 'answer', 'connecting'],
  ['outgoing', 'end', 'ended'],
  ['ringing', 'answer', 'connecting'],
  ['ringing', 'end', 'ended'],
  ['incoming', 'answer', 'connecting'],
  ['incoming', 'end', 'ended'],
  ['connecting', 'media_up', 'active'],
  ['connecting', 'end', 'ended'],
  ['active', 'hold', 'held'],
  ['active', 'end', 'ended'],
  ['held', 'resume', 'active'],
  ['held', 'end', 'ended'],
];

describe('call state transitions', () => {
  it.each(LEGAL)('%s --%s--> %s', (from, event, to) => {
    expect(nextCallState(from as CallState, event)).toBe(to);
  });

  const legalKeys = new Set(LEGAL.map(([f, e]) => `${f}/${e}`));
  const illegal = CallState.options.flatMap((s) =>
    EVENTS.filter((e) => !legalKeys.has(`${s}/${e}`)).map((e) => [s, e] as [CallState, CallEvent]),
  );

  it.each(illegal)('%s refuses %s', (from, event) => {
    expect(() => nextCallState(from, event)).toThrow(IllegalTransitionError);
  });

  it('covers every state and event pair exactly once', () => {
    expect(LEGAL.length + illegal.length).toBe(CallState.options.length * EVENTS.length);
    const tableMoves = Object.entries(CALL_TRANSITIONS).flatMap(([f, m]) => Object.keys(m).map((e) => `${f}/${e}`));
    expect(new Set(tableMoves)).toEqual(legalKeys);
  });

  it('ended is final and every live state can end', () => {
    expect(CALL_TRANSITIONS.ended).toEqual({});
    for (const s of CallState.options) {
      if (s !== 'idle' && s !== 'ended') expect(nextCallState(s, 'end')).toBe('ended');
    }
  });
});
