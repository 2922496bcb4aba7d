/**
 * What the in-call screen says about a call's link (renderer/src/lib/format.ts,
 * issue 18 "honest status"): never "In call" while no audio has come for more
 * than a second; how long it has been reconnecting; where signaling stands.
 */
import { describe, expect, it } from 'vitest';
import { callLinkStatus } from '../../renderer/src/lib/format';

const NOW = 1_000_000;
const base = { state: 'active', direction: 'outgoing' as const, peer: 'bob', media: 'connected' as const, mediaSince: NOW - 60_000 };

describe('in-call link status', () => {
  it.each([
    ['audio flowing', base, undefined, { words: 'In call', interrupted: false, details: [] }],
    [
      'reconnecting for 4 s, 5 s after the last packet',
      { ...base, media: 'reconnecting' as const, mediaSince: NOW - 4_200, lastAudioAt: NOW - 5_300 },
      undefined,
      { words: 'Reconnecting… 4 s', interrupted: true, details: ['No audio from bob for 5 s'] },
    ],
    [
      'reconnecting without a last-audio time: counted from the stall, 1 s after the last packet',
      { ...base, media: 'reconnecting' as const, mediaSince: NOW - 2_000 },
      undefined,
      { words: 'Reconnecting… 2 s', interrupted: true, details: ['No audio from bob for 3 s'] },
    ],
    [
      'connected by the last event, but the latest stats tick saw 2.5 s without audio',
      base,
      { silentMs: 2_500, at: NOW - 400 },
      { words: 'No audio from bob for 2 s', interrupted: true, details: [] },
    ],
    ['a stats tick within the second is no interruption', base, { silentMs: 600, at: NOW - 100 }, { words: 'In call', interrupted: false, details: [] }],
    [
      'our signaling offline while audio flows: the call goes on',
      { ...base, signaling: 'offline' as const, signalingSince: NOW - 7_000 },
      undefined,
      { words: 'In call', interrupted: false, details: ['Offline — the call goes on peer to peer; reconnecting to the server (7 s)'] },
    ],
    [
      'our signaling offline and no audio: interrupted, not "reconnecting" (no new path can be agreed offline)',
      { ...base, media: 'reconnecting' as const, mediaSince: NOW - 3_000, lastAudioAt: NOW - 4_000, signaling: 'offline' as const, signalingSince: NOW - 2_000 },
      undefined,
      {
        words: 'Connection interrupted',
        interrupted: true,
        details: ['No audio from bob for 4 s', 'Offline — the call goes on peer to peer; reconnecting to the server (2 s)'],
      },
    ],
    [
      'just offline: no "0 s"',
      { ...base, signaling: 'offline' as const, signalingSince: NOW - 300 },
      undefined,
      { words: 'In call', interrupted: false, details: ['Offline — the call goes on peer to peer; reconnecting to the server'] },
    ],
    [
      'the peer lost the server: how long the server still holds the call',
      { ...base, signaling: 'peer_offline' as const, signalingSince: NOW - 3_000, signalingUntil: NOW + 11_500 },
      undefined,
      { words: 'In call', interrupted: false, details: ['bob’s device lost the server; the call goes on peer to peer (the server waits 12 s more for it)'] },
    ],
    ['on hold, connected', { ...base, state: 'held' }, undefined, { words: 'On hold', interrupted: false, details: [] }],
    [
      'ended: how it ended, nothing else',
      { ...base, state: 'ended', endReason: 'failed', media: 'reconnecting' as const, signaling: 'offline' as const },
      undefined,
      { words: 'Call failed', interrupted: false, details: [] },
    ],
    ['connecting: no media verdict yet', { state: 'connecting', direction: 'incoming' as const, peer: 'bob' }, undefined, { words: 'Connecting…', interrupted: false, details: [] }],
  ])('%s', (_name, call, tick, expected) => {
    expect(callLinkStatus(call, NOW, tick)).toEqual(expected);
  });
});
