import { EventEmitter } from 'node:events';
import type { HistoryEntry, RoomInvite, RoomLevels, UiRoom, UiRoomMember } from '../../common/ipc/contract';
import { ParleyError } from '../../common/errors';
import type { RoomStatus } from '../../common/protocol/control';
import { groupHistoryEntry } from './history';
import type { RoomClient } from './room-client';

/** How often the group call's view is refreshed while joined (per-participant loss), ms. */
export const ROOM_REFRESH_MS = 1000;

/** What the desktop knows about the group call beyond the RoomClient's status. */
interface Meta {
  roomId: string;
  direction: 'outgoing' | 'incoming';
  inviter?: string;
  /** Who we rang into it (ours, not the whole room's). */
  invited: Set<string>;
  /** Everyone else seen in it while we were in it. */
  seen: Set<string>;
  /** Unix ms: when we started, joined or were rung. */
  startedAt: number;
  /** Loss counters at the last refresh, by device id. */
  counters: Map<string, { received: number; lost: number }>;
  /** Loss over the last refresh interval, %, by device id. */
  loss: Map<string, number>;
  recorded: boolean;
}

/**
 * Group calls as the desktop app shows them, over the one RoomClient the
 * online stack builds (main/core/room-client.ts `roomClientBeside`): the
 * room's status with each participant's recent loss (refreshed every
 * {@link ROOM_REFRESH_MS}), who we rang, who is audible (the SFU's audio
 * levels) and one history entry per group call when it is over.
 *
 * Events: `room` (UiRoom) on every change and every refresh while joined;
 * `levels` (RoomLevels); `history` (HistoryEntry) once per group call that
 * is over. Methods throw the RoomClient's ParleyErrors.
 */
export class GroupCalls extends EventEmitter<{
  room: [UiRoom];
  levels: [RoomLevels];
  history: [HistoryEntry];
}> {
  private meta: Meta | undefined;
  private last: UiRoom | undefined;
  private refresh: NodeJS.Timeout | undefined;

  constructor(
    private readonly rooms: RoomClient,
    private readonly self: { username: string },
  ) {
    super();
    rooms.on('state', (s) => this.onState(s));
    rooms.on('levels', (l) => this.emit('levels', l));
  }

  /**
   * Starts a group call: opens a room, joins it and rings `invite` (usernames).
   * @throws ParleyError as RoomClient.create and RoomClient.invite.
   */
  async create(invite: string[]): Promise<UiRoom> {
    this.meta = this.newMeta('', 'outgoing');
    const status = await this.rooms.create();
    const meta = this.metaFor(status.roomId, 'outgoing');
    // A refused invitation leaves us in the room: the user can add people again or leave.
    if (invite.length) await this.invite(invite);
    return this.view(meta, this.rooms.current());
  }

  /** Joins a group call by id (the ringing one, or one we know). @throws ParleyError as RoomClient.join. */
  async join(roomId: string, rung?: RoomInvite): Promise<UiRoom> {
    this.meta = this.newMeta(roomId, rung ? 'incoming' : 'outgoing', rung?.inviter);
    const status = await this.rooms.join(roomId);
    return this.view(this.metaFor(status.roomId, this.meta.direction), this.rooms.current());
  }

  /** Leaves the group call. @throws ParleyError `invalid_state` when in none. */
  async leave(): Promise<string> {
    return this.rooms.leave();
  }

  /**
   * Rings more people into the group call we are in.
   * @throws ParleyError `invalid_state` (in none), and the server's `forbidden`, `unknown_user`, `room_full`, `rate_limited`.
   */
  async invite(usernames: string[]): Promise<{ invited: string[] }> {
    const meta = this.meta;
    const status = this.last;
    if (!meta || !status || (status.state !== 'joined' && status.state !== 'joining')) throw new ParleyError('invalid_state', 'not in a group call');
    const r = await this.rooms.invite(meta.roomId, usernames);
    for (const u of r.invited) meta.invited.add(u);
    this.publish();
    return r;
  }

  /** The group call we are in, or were in last; null before the first. */
  current(): UiRoom | null {
    return this.last ?? null;
  }

  /** Stops the refresh timer (going offline). */
  close(): void {
    clearInterval(this.refresh);
    this.refresh = undefined;
  }

  // ---- internals -----------------------------------------------------------

  private newMeta(roomId: string, direction: Meta['direction'], inviter?: string): Meta {
    return {
      roomId,
      direction,
      ...(inviter ? { inviter } : {}),
      invited: new Set(),
      seen: new Set(),
      startedAt: Date.now(),
      counters: new Map(),
      loss: new Map(),
      recorded: false,
    };
  }

  /** The meta of `roomId` (the one being created or joined gets its id now). */
  private metaFor(roomId: string, direction: Meta['direction']): Meta {
    if (!this.meta || (this.meta.roomId && this.meta.roomId !== roomId)) this.meta = this.newMeta(roomId, direction);
    this.meta.roomId = roomId;
    return this.meta;
  }

  private onState(s: RoomStatus): void {
    const meta = this.metaFor(s.roomId, this.meta?.direction ?? 'outgoing');
    for (const p of s.participants) if (!p.self) meta.seen.add(p.username);
    const view = this.view(meta, s);
    this.last = view;
    this.emit('room', view);
    if (s.state === 'joined' && !this.refresh) {
      this.refresh = setInterval(() => this.tick(), ROOM_REFRESH_MS);
      this.refresh.unref();
    }
    if (s.state === 'left' || s.state === 'ended') {
      this.close();
      if (!meta.recorded) {
        meta.recorded = true;
        this.emit('history', groupHistoryEntry({
          roomId: s.roomId,
          self: this.self.username,
          direction: meta.direction,
          ...(meta.inviter ? { inviter: meta.inviter } : {}),
          participants: [...meta.seen],
          invited: [...meta.invited],
          startedAt: meta.startedAt,
          ...(s.joinedAt ? { joinedAt: s.joinedAt } : {}),
          endedAt: Date.now(),
          outcome: s.joinedAt ? 'answered' : 'failed',
          ...(s.state === 'ended' && s.endReason === 'failed' ? { endReason: 'failed' as const } : { endReason: 'hangup' as const }),
        }));
      }
    }
  }

  /** Once a second while joined: each participant's loss since the last tick. */
  private tick(): void {
    const meta = this.meta;
    let s: RoomStatus;
    try {
      s = this.rooms.current();
    } catch {
      return;
    }
    if (!meta || s.roomId !== meta.roomId || s.state !== 'joined') return;
    for (const p of s.participants) {
      if (!p.audio) continue;
      const before = meta.counters.get(p.deviceId);
      const now = { received: p.audio.packetsReceived, lost: p.audio.packetsLost };
      meta.counters.set(p.deviceId, now);
      if (!before) continue;
      const received = now.received - before.received;
      const lost = Math.max(0, now.lost - before.lost);
      // No packets at all in a second (muted with DTX, or the stream stalled) says nothing about loss.
      if (received + lost > 0) meta.loss.set(p.deviceId, (100 * lost) / (received + lost));
    }
    this.onState(s);
  }

  private view(meta: Meta, s: RoomStatus): UiRoom {
    const participants: UiRoomMember[] = s.participants.map((p) => {
      const loss = meta.loss.get(p.deviceId);
      return loss !== undefined && !p.self ? { ...p, lossPercent: Math.round(loss * 10) / 10 } : p;
    });
    const inRoom = new Set(s.participants.map((p) => p.username));
    return {
      ...s,
      participants,
      direction: meta.direction,
      ...(meta.inviter ? { inviter: meta.inviter } : {}),
      invited: [...meta.invited].filter((u) => !inRoom.has(u)),
    };
  }

  private publish(): void {
    try {
      this.onState(this.rooms.current());
    } catch {
      // not in a room
    }
  }
}
