/**
 * What the tray icon shows, from the call and microphone state (pure; the
 * Electron tray in main/app/index.ts only renders it). Priority: a ringing
 * call, then a live call (muted or not), then a ringing group call, then a
 * group call, then do-not-disturb, then idle.
 */
import type { MicState, RoomInvite, SessionInfo, UiCall, UiRoom } from '../../common/ipc/contract';

export type TrayImage = 'idle' | 'offline' | 'ringing' | 'in-call' | 'muted' | 'dnd';

export interface TrayState {
  image: TrayImage;
  /** Tooltip text, e.g. "Parley — in call with bob (muted)". */
  tooltip: string;
}

export function trayState(input: {
  session: SessionInfo;
  calls: UiCall[];
  mic: MicState;
  doNotDisturb: boolean;
  /** The group call (any state; only joining / joined count). */
  room?: UiRoom | undefined;
  /** Group calls ringing here. */
  invites?: RoomInvite[];
}): TrayState {
  const live = input.calls.find((c) => c.state !== 'ended');
  const room =
    input.room &&
    (input.room.state === 'joining' ||
      input.room.state === 'joined' ||
      input.room.state === 'reconnecting')
      ? input.room
      : undefined;
  const ring = !live && !room ? input.invites?.[0] : undefined;
  if (ring) {
    return ring.silenced
      ? {
          image: 'dnd',
          tooltip: `Parley — ${ring.inviter} invites you to a group call (not ringing: do not disturb)`,
        }
      : { image: 'ringing', tooltip: `Parley — ${ring.inviter} invites you to a group call` };
  }
  if (room && !live) {
    const others = room.participants.filter((p) => !p.self).length;
    const why = input.mic.muted
      ? ' (muted)'
      : input.mic.pushToTalk && !input.mic.talking
        ? ' (push to talk)'
        : '';
    const what =
      room.state === 'joining'
        ? 'joining a group call…'
        : room.state === 'reconnecting'
          ? 'reconnecting to the group call…'
          : `in a group call with ${others} ${others === 1 ? 'other' : 'others'}`;
    return { image: input.mic.open ? 'in-call' : 'muted', tooltip: `Parley — ${what}${why}` };
  }
  if (live?.state === 'incoming') {
    return live.silenced
      ? { image: 'dnd', tooltip: `Parley — ${live.peer} is calling (not ringing: do not disturb)` }
      : { image: 'ringing', tooltip: `Parley — ${live.peer} is calling` };
  }
  if (live) {
    const muted = !input.mic.open;
    // Never "in call" while no audio comes from the peer (media `reconnecting`).
    const what =
      (live.state === 'held' || live.state === 'active') && live.media === 'reconnecting'
        ? `reconnecting to ${live.peer}… (no audio)`
        : live.state === 'held'
          ? `on hold with ${live.peer}`
          : live.state === 'active'
            ? `in call with ${live.peer}`
            : `calling ${live.peer}…`;
    const why = input.mic.muted
      ? ' (muted)'
      : input.mic.pushToTalk && !input.mic.talking
        ? ' (push to talk)'
        : '';
    return { image: muted ? 'muted' : 'in-call', tooltip: `Parley — ${what}${why}` };
  }
  if (!input.session.signedIn) return { image: 'offline', tooltip: 'Parley — not signed in' };
  if (input.session.connection !== 'online')
    return {
      image: 'offline',
      tooltip: `Parley — ${input.session.connection === 'connecting' ? 'connecting…' : 'offline'}`,
    };
  if (input.doNotDisturb) return { image: 'dnd', tooltip: 'Parley — do not disturb' };
  return { image: 'idle', tooltip: `Parley — ${input.session.username ?? ''} online` };
}
