/**
 * Logic of the desktop shell that does not need Electron (main/app): tray
 * state from call state, push-to-talk key state, deep links; and the core's
 * microphone control and call history.
 */
import { describe, expect, it } from 'vitest';
import { HistoryEntry, type MicState, type SessionInfo, type UiCall, type UiRoom } from '../../common/ipc/contract';
import { rendererSource } from '../../main/app/renderer-url';
import { dispatch } from '../../main/app/ipc-handlers';
import { callConfirmation, confirmedCallee, deepLinkFromArgv, DeepLinkGate, parseDeepLink } from '../../main/app/deep-link';
import { PttKey } from '../../main/app/ptt-key';
import { trayState } from '../../main/app/tray-state';
import { groupHistoryEntry, historyEntryOf } from '../../main/core/history';
import { memberQuality, names, roomEndWords } from '../../renderer/src/lib/format';
import { MicControl } from '../../main/core/microphone';
import { uiohookKeyName } from '../../native/hotkeys';

const online: SessionInfo = { signedIn: true, username: 'alice', connection: 'online' };
const mic = (o: Partial<MicState> = {}): MicState => ({ muted: false, pushToTalk: false, talking: false, open: true, pttMechanism: 'window', ...o });
const call = (o: Partial<UiCall>): UiCall => ({
  callId: '7b0b4f2e-2a56-4c8e-9d59-2f3c5a1d9e01',
  direction: 'outgoing',
  peer: 'bob',
  state: 'active',
  createdAt: 1_000,
  ...o,
});

describe('tray state', () => {
  it('is idle when online with no call, offline when signed out or disconnected', () => {
    expect(trayState({ session: online, calls: [], mic: mic(), doNotDisturb: false })).toEqual({ image: 'idle', tooltip: 'Parley — alice online' });
    expect(trayState({ session: { signedIn: false, connection: 'offline' }, calls: [], mic: mic(), doNotDisturb: false }).image).toBe('offline');
    expect(trayState({ session: { ...online, connection: 'connecting' }, calls: [], mic: mic(), doNotDisturb: false }).tooltip).toContain('connecting');
  });
  it('shows ringing for an incoming call, and do-not-disturb for a silenced one', () => {
    expect(trayState({ session: online, calls: [call({ state: 'incoming', direction: 'incoming' })], mic: mic(), doNotDisturb: false })).toEqual({
      image: 'ringing',
      tooltip: 'Parley — bob is calling',
    });
    const silenced = trayState({ session: online, calls: [call({ state: 'incoming', silenced: true })], mic: mic(), doNotDisturb: true });
    expect(silenced.image).toBe('dnd');
    expect(silenced.tooltip).toContain('not ringing');
  });
  it('shows in call, muted, push-to-talk and hold', () => {
    expect(trayState({ session: online, calls: [call({})], mic: mic(), doNotDisturb: false })).toEqual({ image: 'in-call', tooltip: 'Parley — in call with bob' });
    expect(trayState({ session: online, calls: [call({})], mic: mic({ muted: true, open: false }), doNotDisturb: false })).toEqual({
      image: 'muted',
      tooltip: 'Parley — in call with bob (muted)',
    });
    expect(trayState({ session: online, calls: [call({})], mic: mic({ pushToTalk: true, open: false }), doNotDisturb: false }).tooltip).toContain('(push to talk)');
    expect(trayState({ session: online, calls: [call({ state: 'held' })], mic: mic(), doNotDisturb: false }).tooltip).toContain('on hold with bob');
  });
  it('never says "in call" while no audio comes (media reconnecting)', () => {
    const t = trayState({ session: online, calls: [call({ media: 'reconnecting', mediaSince: 2_000 })], mic: mic(), doNotDisturb: false });
    expect(t.tooltip).toBe('Parley — reconnecting to bob… (no audio)');
    expect(trayState({ session: online, calls: [call({ media: 'connected' })], mic: mic(), doNotDisturb: false }).tooltip).toBe('Parley — in call with bob');
  });
  it('ignores ended calls and shows do-not-disturb when idle', () => {
    expect(trayState({ session: online, calls: [call({ state: 'ended' })], mic: mic(), doNotDisturb: true }).image).toBe('dnd');
  });
});

describe('tray state in group calls', () => {
  const roomId = '0e6c1b8e-54a4-4c3e-8d7a-1b2c3d4e5f60';
  const room = (o: Partial<UiRoom> = {}): UiRoom => ({
    roomId,
    state: 'joined',
    micOpen: true,
    direction: 'outgoing',
    invited: [],
    participants: [
      { username: 'alice', deviceId: 'a', self: true },
      { username: 'bob', deviceId: 'b', self: false },
      { username: 'carol', deviceId: 'c', self: false },
    ],
    ...o,
  });
  const invite = { roomId, inviter: 'bob', participants: ['bob', 'carol'], expiresAt: 9e12 };

  it('rings for a group call, or shows do-not-disturb when it does not ring', () => {
    expect(trayState({ session: online, calls: [], mic: mic(), doNotDisturb: false, invites: [invite] })).toEqual({
      image: 'ringing',
      tooltip: 'Parley — bob invites you to a group call',
    });
    expect(trayState({ session: online, calls: [], mic: mic(), doNotDisturb: true, invites: [{ ...invite, silenced: true }] }).image).toBe('dnd');
  });

  it('shows in a group call with how many others, muted and push-to-talk; a room that is over counts for nothing', () => {
    expect(trayState({ session: online, calls: [], mic: mic(), doNotDisturb: false, room: room() })).toEqual({
      image: 'in-call',
      tooltip: 'Parley — in a group call with 2 others',
    });
    expect(trayState({ session: online, calls: [], mic: mic({ muted: true, open: false }), doNotDisturb: false, room: room() })).toEqual({
      image: 'muted',
      tooltip: 'Parley — in a group call with 2 others (muted)',
    });
    expect(trayState({ session: online, calls: [], mic: mic(), doNotDisturb: false, room: room({ state: 'left' }) }).image).toBe('idle');
    // A signaling blip or an ICE restart to the SFU keeps the call (the server keeps our place): say so, do not drop it.
    expect(
      trayState({ session: online, calls: [], mic: mic(), doNotDisturb: false, room: room({ state: 'reconnecting', reconnecting: { since: 1, what: 'signaling' } }) }),
    ).toEqual({ image: 'in-call', tooltip: 'Parley — reconnecting to the group call…' });
    // In a group call, another group call ringing does not take over the icon.
    expect(trayState({ session: online, calls: [], mic: mic(), doNotDisturb: false, room: room(), invites: [invite] }).image).toBe('in-call');
  });
});

describe('push-to-talk key', () => {
  const F8 = 66;
  const setup = () => {
    let t = 0;
    const changes: boolean[] = [];
    const key = new PttKey({ keycodeOf: (c) => (c === 'F8' ? F8 : undefined), onChange: (p) => changes.push(p), now: () => t });
    key.setKey('F8');
    return { key, changes, advance: (ms: number) => (t += ms) };
  };
  it('presses on keydown and releases on keyup, once, ignoring other keys and auto-repeat', () => {
    const { key, changes } = setup();
    key.keydown(30);
    key.keydown(F8);
    key.keydown(F8);
    key.keydown(F8);
    key.keyup(30);
    expect(changes).toEqual([true]);
    key.keyup(F8);
    expect(changes).toEqual([true, false]);
  });
  it('fails safe: a missed release after auto-repeat stops closes the microphone', () => {
    const { key, changes, advance } = setup();
    key.keydown(F8);
    advance(30);
    key.keydown(F8); // auto-repeat seen
    advance(900);
    key.tick();
    expect(key.isPressed()).toBe(true);
    advance(200);
    key.tick();
    expect(changes).toEqual([true, false]);
  });
  it('keeps a key held without auto-repeat (some keys never repeat)', () => {
    const { key, advance } = setup();
    key.keydown(F8);
    advance(60_000);
    key.tick();
    expect(key.isPressed()).toBe(true);
  });
  it('releases when the hook is lost or the key changes', () => {
    const { key, changes } = setup();
    key.keydown(F8);
    key.hookLost();
    expect(changes).toEqual([true, false]);
    key.keydown(F8);
    key.setKey('F8');
    expect(changes).toEqual([true, false, true, false]);
  });
  it('refuses a key the hook cannot see', () => {
    const { key } = setup();
    expect(() => key.setKey('MediaPlayPause')).toThrow(/cannot use the key "MediaPlayPause"/);
  });
  it('maps KeyboardEvent.code names to uiohook names', () => {
    expect(uiohookKeyName('KeyA')).toBe('A');
    expect(uiohookKeyName('Digit7')).toBe('7');
    expect(uiohookKeyName('ControlRight')).toBe('CtrlRight');
    expect(uiohookKeyName('ControlLeft')).toBe('Ctrl');
    expect(uiohookKeyName('F8')).toBe('F8');
  });
});

describe('microphone control', () => {
  it('combines mute and push-to-talk; uncertainty closes the microphone', () => {
    const seen: boolean[] = [];
    const m = new MicControl((s) => seen.push(s.open));
    expect(m.state().open).toBe(true);
    m.setMuted(true);
    expect(m.state()).toMatchObject({ muted: true, open: false });
    m.setMuted(false);
    m.setPushToTalk(true);
    expect(m.state()).toMatchObject({ pushToTalk: true, talking: false, open: false });
    m.setPressed(true);
    expect(m.state()).toMatchObject({ talking: true, open: true });
    m.releaseUncertain();
    expect(m.state().open).toBe(false);
    m.setPressed(true);
    m.setMuted(true);
    expect(m.state()).toMatchObject({ talking: true, open: false });
    expect(seen).toEqual([false, true, false, true, false, true, false]);
  });
  it('ignores the key while push-to-talk is off', () => {
    const m = new MicControl(() => {});
    m.setPressed(true);
    expect(m.state()).toMatchObject({ talking: false, open: true });
  });
});

describe('deep links', () => {
  it('parses parley://call/<user> and refuses anything else', () => {
    expect(parseDeepLink('parley://call/bob')).toEqual({ action: 'call', username: 'bob' });
    expect(parseDeepLink('parley://call/Bob.Smith')).toEqual({ action: 'call', username: 'bob.smith' });
    for (const bad of ['parley://call/', 'parley://call/a', 'parley://hangup/bob', 'https://call/bob', 'parley://call/bob/x', 'parley://call/bob?x=1', 'parley://call/b%20b', 'not a url', `parley://call/${'a'.repeat(300)}`]) {
      expect(parseDeepLink(bad), bad).toBeUndefined();
    }
  });
  it('finds a link among command-line arguments', () => {
    expect(deepLinkFromArgv(['/usr/bin/parley', '--flag', 'parley://call/carol'])).toEqual({ action: 'call', username: 'carol' });
    expect(deepLinkFromArgv(['/usr/bin/parley'])).toBeUndefined();
  });
  it('asks before calling: names the callee, Cancel is the default and the dismiss answer', () => {
    const link = parseDeepLink('parley://call/Bob')!;
    const ask = callConfirmation(link);
    expect(ask.message).toBe('Call bob?');
    expect(ask.buttons).toEqual(['Cancel', 'Call bob']);
    expect(ask.buttons[ask.defaultId]).toBe('Cancel');
    expect(ask.buttons[ask.cancelId]).toBe('Cancel');
    expect(ask.detail).toContain('bob');
  });
  it('calls only when "Call <user>" was chosen', () => {
    const link = { action: 'call' as const, username: 'bob' };
    expect(confirmedCallee(link, 1)).toBe('bob');
    for (const response of [0, 2, -1, Number.NaN]) expect(confirmedCallee(link, response), String(response)).toBeUndefined();
  });
  it('asks one question at a time: links arriving while a dialog is open are dropped', () => {
    const gate = new DeepLinkGate();
    const bob = { action: 'call' as const, username: 'bob' };
    expect(gate.offer(undefined)).toBe(false);
    expect(gate.offer(bob)).toBe(true);
    expect(gate.offer(bob)).toBe(false);
    expect(gate.offer({ action: 'call', username: 'mallory' })).toBe(false);
    gate.settle();
    expect(gate.offer(bob)).toBe(true);
  });
});

describe('renderer source', () => {
  const dev = { ELECTRON_RENDERER_URL: 'http://localhost:5173' };
  it('a packaged app ignores ELECTRON_RENDERER_URL and says so', () => {
    expect(rendererSource(dev, true)).toEqual({ kind: 'files', ignored: 'ELECTRON_RENDERER_URL is ignored in a packaged app' });
    expect(rendererSource({ ELECTRON_RENDERER_URL: 'https://evil.example/' }, true)).toMatchObject({ kind: 'files' });
    expect(rendererSource({}, true)).toEqual({ kind: 'files' });
  });
  it('development follows a loopback http(s) dev server only', () => {
    expect(rendererSource(dev, false)).toEqual({ kind: 'dev-server', url: 'http://localhost:5173' });
    expect(rendererSource({ ELECTRON_RENDERER_URL: 'http://[::1]:5173/' }, false)).toMatchObject({ kind: 'dev-server' });
    expect(rendererSource({}, false)).toEqual({ kind: 'files' });
    for (const bad of ['https://evil.example/', 'http://127.0.0.1.evil.example/', 'http://a@localhost:5173/', 'file:///etc/passwd', 'javascript:alert(1)', 'nonsense']) {
      expect(rendererSource({ ELECTRON_RENDERER_URL: bad }, false), bad).toMatchObject({ kind: 'files', ignored: expect.any(String) });
    }
  });
});

describe('call history entries', () => {
  it('classifies answered, missed, declined, unanswered and failed calls with talk time', () => {
    const base = { callId: '7b0b4f2e-2a56-4c8e-9d59-2f3c5a1d9e01', peer: 'bob', createdAt: 1_000 } as const;
    expect(historyEntryOf({ ...base, direction: 'outgoing', state: 'ended', endReason: 'hangup', connectedAt: 3_000, endedAt: 65_400 })).toMatchObject({
      outcome: 'answered',
      durationS: 62,
    });
    expect(historyEntryOf({ ...base, direction: 'incoming', state: 'ended', endReason: 'no_answer', endedAt: 9_000 })).toMatchObject({ outcome: 'missed', durationS: 0 });
    expect(historyEntryOf({ ...base, direction: 'incoming', state: 'ended', endReason: 'hangup', endedAt: 9_000 }).outcome).toBe('missed');
    expect(historyEntryOf({ ...base, direction: 'incoming', state: 'ended', endReason: 'declined', endedAt: 9_000 }).outcome).toBe('declined');
    expect(historyEntryOf({ ...base, direction: 'outgoing', state: 'ended', endReason: 'no_answer', endedAt: 9_000 }).outcome).toBe('unanswered');
    expect(historyEntryOf({ ...base, direction: 'outgoing', state: 'ended', endReason: 'failed', endedAt: 9_000 }).outcome).toBe('failed');
  });
});

describe('group call history entries', () => {
  const roomId = '0e6c1b8e-54a4-4c3e-8d7a-1b2c3d4e5f60';
  const base = { roomId, self: 'alice', startedAt: 1_000, endedAt: 70_000 } as const;

  it('records who was in it and the talk time from our join; one we started names ourselves', () => {
    const e = groupHistoryEntry({ ...base, direction: 'outgoing', participants: ['carol', 'bob', 'bob', 'alice'], invited: ['bob', 'dave'], joinedAt: 2_500, outcome: 'answered', endReason: 'hangup' });
    expect(e).toEqual({
      callId: roomId,
      peer: 'alice',
      direction: 'outgoing',
      outcome: 'answered',
      endReason: 'hangup',
      startedAt: 1_000,
      endedAt: 70_000,
      durationS: 68,
      group: { participants: ['bob', 'carol'], invited: ['bob', 'dave'] },
    });
    expect(HistoryEntry.safeParse(e).success).toBe(true);
  });

  it('a group call that rang and was never joined is missed (or declined), from its inviter, with no talk time', () => {
    const missed = groupHistoryEntry({ ...base, direction: 'incoming', inviter: 'bob', participants: ['bob', 'carol'], invited: [], outcome: 'missed', endReason: 'no_answer' });
    expect(missed).toMatchObject({ peer: 'bob', direction: 'incoming', outcome: 'missed', durationS: 0, group: { participants: ['bob', 'carol'] } });
    expect(HistoryEntry.safeParse(missed).success).toBe(true);
  });
});

describe('group call screen words', () => {
  it('rates a participant’s connection from recent loss and jitter buffer, and says when audio has not come', () => {
    const audio = (jitterBufferMs: number) => ({ playing: true, jitterBufferMs });
    expect(memberQuality({ self: true })).toBeUndefined();
    expect(memberQuality({ self: false })?.words).toBe('Connecting…');
    expect(memberQuality({ self: false, audio: { playing: false, jitterBufferMs: 60 } })?.words).toBe('No audio yet');
    const table: [number, number, number][] = [
      [0, 60, 3],
      [2, 60, 2],
      [0, 150, 2],
      [5, 60, 1],
      [0, 250, 1],
      [12, 60, 0],
      [0, 500, 0],
    ];
    for (const [loss, buffer, level] of table) expect(memberQuality({ self: false, lossPercent: loss, audio: audio(buffer) })?.level, `${loss} % ${buffer} ms`).toBe(level);
  });

  it('names how a group call ended and lists people', () => {
    expect(roomEndWords('left', undefined)).toBe('You left the group call');
    expect(roomEndWords('ended', 'sfu_failed')).toMatch(/media relay failed/);
    expect(roomEndWords('ended', 'failed')).toBe('Could not join the group call');
    expect(names(['bob'])).toBe('bob');
    expect(names(['bob', 'carol'])).toBe('bob and carol');
    expect(names(['bob', 'carol', 'dave'])).toBe('bob, carol and dave');
    expect(names(['a1', 'b2', 'c3', 'd4', 'e5'])).toBe('a1, b2 and 3 others');
  });
});

describe('IPC requests of group calls', () => {
  /** Handlers that record what reached them: only params the contract accepts get there. */
  const reached: unknown[] = [];
  const handlers = new Proxy({}, { get: () => (p: unknown) => (reached.push(p), { ok: true }) }) as never;

  it('refuses too many people, a malformed username or room id, in words for the user; nothing reaches the core', async () => {
    const many = Array.from({ length: 16 }, (_, i) => `user${i}`);
    await expect(dispatch(handlers, 'room.create', { invite: many })).rejects.toMatchObject({ reason: 'invalid_params', message: 'invite: at most 15 people at once' });
    await expect(dispatch(handlers, 'room.invite', { usernames: [] })).rejects.toMatchObject({ reason: 'invalid_params', message: 'usernames: choose someone to add' });
    await expect(dispatch(handlers, 'room.invite', { usernames: ['Not A Name!'] })).rejects.toMatchObject({ reason: 'invalid_params' });
    await expect(dispatch(handlers, 'room.join', { roomId: 'kitchen' })).rejects.toMatchObject({ reason: 'invalid_params' });
    expect(reached).toEqual([]);
  });

  it('passes valid ones on, with defaults', async () => {
    await dispatch(handlers, 'room.create', undefined);
    await dispatch(handlers, 'room.create', { invite: ['bob', 'carol'] });
    expect(reached).toEqual([{ invite: [] }, { invite: ['bob', 'carol'] }]);
  });
});
