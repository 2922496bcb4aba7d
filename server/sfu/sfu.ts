import { randomUUID } from 'node:crypto';
import type { types } from 'mediasoup';
import type { Logger } from 'pino';
import { ParleyError } from '../../common/errors';
import type { RoomEndReason, RoomId } from '../../common/protocol/sfu';
import type { SfuConfig } from '../config';
import { ROOM_MEDIA_CODECS } from './codecs';
import { Room, roomEnded, type RoomSnapshot } from './room';
import { WorkerPool } from './worker-pool';

/** A room nobody is in ends after this long, ms (a room created and never joined, or everyone dropped). */
export const EMPTY_ROOM_TIMEOUT_MS = 60_000;
/** How many ended rooms are remembered, so that a late join hears why (`room_ended`) rather than `not_found`. */
const ENDED_ROOMS_KEPT = 1000;

/** What the server learns from the SFU (metrics, audit). */
export interface SfuHooks {
  /** A room opened; its id is handed out once this settles (several nodes: its node is recorded first). */
  onRoomOpened?(room: Room): void | Promise<void>;
  /** `participants`: how many were in it when it ended. */
  onRoomEnded?(room: Room, reason: RoomEndReason, participants: number): void;
  onWorkerDied?(pid: number): void;
}

/** Counts for /metrics. */
export interface SfuStats {
  rooms: number;
  participants: number;
  workersAlive: number;
  workerDeaths: number;
}

/**
 * The server's SFU: a pool of mediasoup workers (worker-pool.ts) and the
 * rooms on them (room.ts). A room lives on one worker; when that worker dies
 * its rooms end with `sfu_failed` (every participant gets `room.ended`), the
 * worker is replaced, and the signaling server goes on. A room nobody is in
 * for EMPTY_ROOM_TIMEOUT_MS ends (`empty`).
 */
export class Sfu {
  private readonly rooms = new Map<RoomId, Room>();
  private readonly ended = new Map<RoomId, RoomEndReason>();
  private readonly emptyTimers = new Map<RoomId, NodeJS.Timeout>();
  private readonly pool: WorkerPool;
  private closed = false;

  /**
   * @param getConfig the live `[sfu]` configuration (read when a room or transport is made;
   *   `workers` and `workerBin` only here, at construction).
   */
  constructor(
    private readonly getConfig: () => SfuConfig,
    private readonly log: Logger,
    private readonly hooks: SfuHooks = {},
  ) {
    const c = getConfig();
    this.pool = new WorkerPool({
      workers: c.workers,
      workerBin: c.workerBin,
      log,
      onDied: (worker) => this.onWorkerDied(worker),
    });
  }

  /** Where new transports listen (the live config). */
  get listen(): SfuConfig {
    return this.getConfig();
  }

  get stats(): SfuStats {
    let participants = 0;
    for (const r of this.rooms.values()) participants += r.size;
    const pool = this.pool.stats;
    return { rooms: this.rooms.size, participants, workersAlive: pool.alive, workerDeaths: pool.deaths };
  }

  /**
   * Opens a room on the least-loaded worker (starting the workers on first use).
   * @param maxParticipants at most `sfu.max_participants` (the default).
   * @throws ParleyError `unavailable` (no worker could start, or shutting down), `invalid_params` (too many participants asked).
   */
  async createRoom(maxParticipants?: number): Promise<Room> {
    const ceiling = this.getConfig().maxParticipants;
    if (maxParticipants !== undefined && maxParticipants > ceiling)
      throw new ParleyError('invalid_params', `a room holds at most ${ceiling} participants on this server`);
    const worker = await this.pool.pick();
    const id = randomUUID();
    let room: Room;
    try {
      room = await Room.open(
        id,
        worker,
        ROOM_MEDIA_CODECS,
        maxParticipants ?? ceiling,
        {
          onEnded: (r, reason, participants) => this.onRoomEnded(r, reason, participants),
          onEmptyChanged: (r, empty) => this.onEmptyChanged(r, empty),
        },
        this.log,
      );
    } catch (err) {
      this.log.error({ err, pid: worker.pid }, 'SFU: could not open a room');
      throw new ParleyError('unavailable', 'the SFU could not open a room; try again');
    }
    if (this.closed) {
      room.end('server_shutdown');
      throw new ParleyError('unavailable', 'the SFU is shutting down');
    }
    if (room.endReason) throw new ParleyError('unavailable', 'the SFU could not open a room; try again');
    this.pool.retain(worker);
    this.rooms.set(id, room);
    this.onEmptyChanged(room, true);
    await this.hooks.onRoomOpened?.(room);
    return room;
  }

  /**
   * The open room `roomId`.
   * @throws ParleyError `room_ended` (naming why) or `not_found`.
   */
  room(roomId: RoomId): Room {
    const room = this.rooms.get(roomId);
    if (room) return room;
    const reason = this.ended.get(roomId);
    if (reason) throw roomEnded(roomId, reason);
    throw new ParleyError('not_found', `no room ${roomId}`);
  }

  /** Every open room, for the admin API. */
  /**
   * Whether device `deviceId` shares an open room with a device of account
   * `accountId` (then it may fetch that account's device keys, to seal the
   * room's sender keys to them, whatever their call settings: server/signal/keys.ts).
   */
  sharesRoom(deviceId: string, accountId: string): boolean {
    for (const room of this.rooms.values()) if (room.hasBoth(deviceId, accountId)) return true;
    return false;
  }

  list(): RoomSnapshot[] {
    return [...this.rooms.values()].map((r) => r.snapshot());
  }

  /**
   * Ends a room for everyone in it.
   * @throws ParleyError `not_found` / `room_ended`.
   */
  end(roomId: RoomId, reason: RoomEndReason): void {
    this.room(roomId).end(reason);
  }

  /** Ends every room (`server_shutdown`) and stops the workers. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const r of [...this.rooms.values()]) r.end('server_shutdown');
    this.pool.close();
  }

  private onWorkerDied(worker: types.Worker): void {
    this.hooks.onWorkerDied?.(worker.pid);
    for (const r of [...this.rooms.values()]) if (r.worker === worker) r.end('sfu_failed');
  }

  private onRoomEnded(room: Room, reason: RoomEndReason, participants: number): void {
    clearTimeout(this.emptyTimers.get(room.id));
    this.emptyTimers.delete(room.id);
    if (!this.rooms.delete(room.id)) return;
    this.pool.release(room.worker);
    this.ended.set(room.id, reason);
    if (this.ended.size > ENDED_ROOMS_KEPT) {
      const oldest = this.ended.keys().next().value;
      if (oldest !== undefined) this.ended.delete(oldest);
    }
    this.hooks.onRoomEnded?.(room, reason, participants);
  }

  private onEmptyChanged(room: Room, empty: boolean): void {
    clearTimeout(this.emptyTimers.get(room.id));
    this.emptyTimers.delete(room.id);
    if (!empty) return;
    const timer = setTimeout(() => room.end('empty'), EMPTY_ROOM_TIMEOUT_MS);
    timer.unref();
    this.emptyTimers.set(room.id, timer);
  }
}
