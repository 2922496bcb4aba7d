import { EventEmitter } from 'node:events';
import type { HistoryEntry, RoomInvite, RoomLevels, UiRoom, UiRoomMember } from '../../common/ipc/contract';
import { ParleyError } from '../../common/errors';
import type { RoomRing, RoomStatus } from '../../common/protocol/control';
import type { RoomInviteEndReason } from '../../common/protocol/sfu';
import { groupHistoryEntry } from './history';
import type { RoomClient } from './room-client';

/** How often the group call's view is refreshed while joined (per-participant loss), ms. */
export const ROOM_REFRESH_MS = 1000;

/**
 * The longest someone we rang shows as ringing, ms: the server's default ring
 * timeout (`ring_timeout_seconds`, 45 s, as for 1:1 calls). The server says
 * when and how each ring ends (`room.invite_ended`); this only bounds a row
 * whose end was lost with the connection.
 */
export const INVITE_SHOWN_MS = 45_000;

/** How long a ring that ended unanswered shows as "Declined" / "No answer" before its row goes, ms. */
export const INVITE_END_SHOWN_MS = 5_000;

/** What the group call screen says of a ring that ended unanswered, by the server's reason. */
const INVITE_OUTCOME: Partial<Record<RoomInviteEndReason, 'declined' | 'no_answer' | 'cancelled'>> = {
  declined: 'declined',
  timeout: 'no_answer',
  cancelled: 'cancelled',
};

/** What the desktop knows about the group call beyond the RoomClient's status. */
interface Meta {
  roomId: string;
  direction: 'outgoing' | 'incoming';
  inviter?: string;
  /** Who we rang into it (ours, not the whole room's), with when (Unix ms). */
  invited: Map<string, number>;
  /** Of those, whose ring is over (`room.invite_ended`), how and when (Unix ms); `outcome` undefined: joined or the room ended. */
  inviteEnded: Map<string, { outcome: 'declined' | 'no_answer' | 'cancelled' | undefined; at: number }>;
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
 * `levels` (RoomLevels); `invites` (the group calls ringing here, on every
 * change); `history` (HistoryEntry) once per group call that is over — also
 * one that rang here and was never joined (missed, or declined here or on
 * another of our devices). Methods throw the RoomClient's ParleyErrors.
 */
export class GroupCalls extends EventEmitter<{
  room: [UiRoom];
  levels: [RoomLevels];
  invites: [RoomInvite[]];
  history: [HistoryEntry];
}> {
  private meta: Meta | undefined;
  private last: UiRoom | undefined;
  private refresh: NodeJS.Timeout | undefined;
  /** When each ringing room first rang here, Unix ms. */
  private readonly rangAt = new Map<string, number>();

  constructor(
    private readonly rooms: RoomClient,
    private readonly self: { username: string },
    /** Whether a group call from this inviter rings here (false: do-not-disturb, or a contact set to "don't ring"). */
    private readonly shouldRing: (inviter: string) => boolean = () => true,
  ) {
    super();
    rooms.on('state', (s) => this.onState(s));
    rooms.on('levels', (l) => this.emit('levels', l));
    rooms.on('invite_ended', (e) => this.onInviteEnded(e.roomId, e.username, e.reason));
    rooms.on('ring', (r) => {
      if (!this.rangAt.has(r.roomId)) this.rangAt.set(r.roomId, Date.now());
      this.publishInvites();
    });
    rooms.on('ring_cancelled', (c) => {
      const ring = this.rooms.ringing().find((r) => r.roomId === c.roomId) ?? this.lastRings.get(c.roomId);
      if (ring) {
        const declined = c.reason === 'declined_elsewhere';
        this.recordRing(ring, declined ? 'declined' : 'missed', declined ? 'declined' : c.reason === 'timeout' ? 'no_answer' : c.reason === 'answered_elsewhere' ? 'answered_elsewhere' : 'hangup');
      }
      this.publishInvites();
    });
  }

  /** The group calls ringing here, oldest first. */
  invites(): RoomInvite[] {
    return this.rooms.ringing().map((r) => ({
      roomId: r.roomId,
      inviter: r.inviter.username,
      participants: [...new Set(r.participants)],
      expiresAt: r.expiresAt,
      ...(this.shouldRing(r.inviter.username) ? {} : { silenced: true }),
    }));
  }

  /** Declines a ringing group call (our other devices stop ringing too). @throws ParleyError `not_found`. */
  async decline(roomId: string): Promise<void> {
    const ring = this.rooms.ringing().find((r) => r.roomId === roomId);
    await this.rooms.decline(roomId);
    if (ring) this.recordRing(ring, 'declined', 'declined');
    this.publishInvites();
  }

  /**
   * Starts a group call: opens a room, joins it and rings `invite` (usernames).
   * @throws ParleyError as RoomClient.create and RoomClient.invite.
   */
  async create(invite: string[]): Promise<UiRoom> {
    // One step on the server (`room.create` with `invite`): a refused invitation opens no room.
    this.meta = this.newMeta('', 'outgoing');
    for (const u of invite) this.meta.invited.set(u, Date.now());
    const status = await this.rooms.create(undefined, invite);
    return this.view(this.metaFor(status.roomId, 'outgoing'), this.rooms.current());
  }

  /** Joins a group call by id (the ringing one, or one we were invited into). @throws ParleyError as RoomClient.join. */
  async join(roomId: string): Promise<UiRoom> {
    const rung = this.rooms.ringing().find((r) => r.roomId === roomId);
    this.meta = this.newMeta(roomId, rung ? 'incoming' : 'outgoing', rung?.inviter.username);
    if (rung) this.meta.startedAt = this.rangAt.get(roomId) ?? Date.now();
    this.rangAt.delete(roomId);
    try {
      const status = await this.rooms.join(roomId);
      return this.view(this.metaFor(status.roomId, this.meta.direction), this.rooms.current());
    } finally {
      this.publishInvites();
    }
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
    if (!meta || !status || (status.state !== 'joined' && status.state !== 'joining' && status.state !== 'reconnecting')) throw new ParleyError('invalid_state', 'not in a group call');
    const invited = await this.rooms.invite(meta.roomId, usernames);
    for (const u of invited) {
      meta.invited.set(u, Date.now());
      meta.inviteEnded.delete(u);
    }
    this.publish();
    return { invited };
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

  /** The rings as last published (a cancelled ring is gone from RoomClient.ringing() when its event fires). */
  private lastRings = new Map<string, RoomRing>();

  private publishInvites(): void {
    this.lastRings = new Map(this.rooms.ringing().map((r) => [r.roomId, r]));
    this.emit('invites', this.invites());
  }

  /** The history entry of a group call that rang here and was never joined here. */
  private recordRing(ring: RoomRing, outcome: 'missed' | 'declined', endReason: HistoryEntry['endReason']): void {
    const startedAt = this.rangAt.get(ring.roomId) ?? Date.now();
    this.rangAt.delete(ring.roomId);
    this.emit('history', groupHistoryEntry({
      roomId: ring.roomId,
      self: this.self.username,
      direction: 'incoming',
      inviter: ring.inviter.username,
      participants: ring.participants,
      invited: [],
      startedAt,
      endedAt: Date.now(),
      outcome,
      ...(endReason ? { endReason } : {}),
    }));
  }

  private newMeta(roomId: string, direction: Meta['direction'], inviter?: string): Meta {
    return {
      roomId,
      direction,
      ...(inviter ? { inviter } : {}),
      invited: new Map(),
      inviteEnded: new Map(),
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

  /**
   * The ring of someone rung into our room is over (`room.invite_ended`): if we
   * rang them, their "Ringing…" row says how for INVITE_END_SHOWN_MS, then goes
   * (joined: their participant row takes its place at once).
   */
  private onInviteEnded(roomId: string, username: string, reason: RoomInviteEndReason): void {
    const meta = this.meta;
    if (!meta || meta.roomId !== roomId || !meta.invited.has(username)) return;
    meta.inviteEnded.set(username, { outcome: INVITE_OUTCOME[reason], at: Date.now() });
    this.publishLive(meta);
    // The refresh tick re-renders while joined; this one also covers a room still being joined.
    setTimeout(() => this.publishLive(meta), INVITE_END_SHOWN_MS + 100).unref();
  }

  /**
   * Publishes the room of `meta` only while we are still in it: an invitation
   * that ends after we left (or its row's timer) must not put the left room
   * back on the screen over whatever the user went on to.
   */
  private publishLive(meta: Meta): void {
    if (this.meta !== meta) return;
    let s: RoomStatus;
    try {
      s = this.rooms.current();
    } catch {
      return;
    }
    if (s.roomId === meta.roomId && (s.state === 'joining' || s.state === 'joined' || s.state === 'reconnecting')) this.onState(s);
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
          invited: [...meta.invited.keys()],
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
    const now = Date.now();
    return {
      ...s,
      participants,
      direction: meta.direction,
      ...(meta.inviter ? { inviter: meta.inviter } : {}),
      // Ringing until the server says how the ring ended (at most as long as a ring lasts by default).
      invited: [...meta.invited].filter(([u, at]) => !inRoom.has(u) && !meta.inviteEnded.has(u) && now - at < INVITE_SHOWN_MS).map(([u]) => u),
      inviteEnded: [...meta.inviteEnded].flatMap(([username, e]) =>
        e.outcome && !inRoom.has(username) && now - e.at < INVITE_END_SHOWN_MS ? [{ username, outcome: e.outcome }] : [],
      ),
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
