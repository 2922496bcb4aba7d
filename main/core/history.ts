import { join } from 'node:path';
import { z } from 'zod';
import { HistoryEntry } from '../../common/ipc/contract';
import type { CallStatus } from '../../common/protocol/control';
import { readJsonFile, writeJsonFile } from './json-file';

/** How many calls the history keeps (oldest dropped first). */
export const HISTORY_LIMIT = 500;

const HistoryFile = z.object({ version: z.literal(1), entries: z.array(HistoryEntry) });

/**
 * What the history shows for a call that ended: answered calls are
 * `answered` whatever the direction; an incoming call never answered here is
 * `missed` (also when it rang nowhere because of do-not-disturb), one we
 * declined is `declined`; an outgoing call the callee never took is
 * `unanswered`; a call that broke before or during set-up is `failed`.
 */
export function historyEntryOf(s: CallStatus): HistoryEntry {
  const endedAt = s.endedAt ?? Date.now();
  let outcome: HistoryEntry['outcome'];
  if (s.connectedAt) outcome = 'answered';
  else if (s.endReason === 'failed') outcome = 'failed';
  else if (s.direction === 'incoming') outcome = s.endReason === 'declined' ? 'declined' : 'missed';
  else outcome = 'unanswered';
  return {
    callId: s.callId,
    peer: s.peer,
    direction: s.direction,
    outcome,
    ...(s.endReason ? { endReason: s.endReason } : {}),
    startedAt: s.createdAt,
    endedAt,
    durationS: s.connectedAt ? Math.max(0, Math.round((endedAt - s.connectedAt) / 1000)) : 0,
  };
}

/**
 * The history entry of a group call (callId = its room id): `answered` once
 * we were in it (duration from our join to our leave), `missed` when it rang
 * here and we never joined (also when it stopped ringing because the room
 * ended or the ring timed out), `declined` when we declined it here (or on
 * another device of ours), `failed` when our join failed. `peer` is who rang
 * us, or ourselves for one we started; `participants` everyone else seen in
 * it (missed: who was in it when it rang).
 */
export function groupHistoryEntry(g: {
  roomId: string;
  self: string;
  direction: 'outgoing' | 'incoming';
  inviter?: string;
  participants: string[];
  invited: string[];
  /** Unix ms: started, or first rang here. */
  startedAt: number;
  joinedAt?: number;
  endedAt: number;
  outcome: HistoryEntry['outcome'];
  endReason?: HistoryEntry['endReason'];
}): HistoryEntry {
  const others = (list: string[]) => [...new Set(list)].filter((u) => u !== g.self).sort();
  return {
    callId: g.roomId,
    peer: g.inviter ?? g.self,
    direction: g.direction,
    outcome: g.outcome,
    ...(g.endReason ? { endReason: g.endReason } : {}),
    startedAt: g.startedAt,
    endedAt: g.endedAt,
    durationS: g.joinedAt ? Math.max(0, Math.round((g.endedAt - g.joinedAt) / 1000)) : 0,
    group: { participants: others(g.participants), invited: others(g.invited) },
  };
}

/**
 * The call history of this device, `<dataDir>/history.json` (usernames and
 * times only — never media, keys or tokens). Newest first.
 */
export class HistoryStore {
  private entries: HistoryEntry[] = [];
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly path: string) {}

  static at(dataDir: string): HistoryStore {
    return new HistoryStore(join(dataDir, 'history.json'));
  }

  async load(onCorrupt?: (why: string) => void): Promise<void> {
    this.entries = (await readJsonFile(this.path, HistoryFile, { version: 1, entries: [] }, onCorrupt)).entries;
  }

  list(limit = 100): HistoryEntry[] {
    return this.entries.slice(0, limit);
  }

  /** Records an ended call (once per call id). */
  async add(entry: HistoryEntry): Promise<void> {
    if (this.entries.some((e) => e.callId === entry.callId)) return;
    this.entries.unshift(entry);
    this.entries.length = Math.min(this.entries.length, HISTORY_LIMIT);
    await this.save();
  }

  async clear(): Promise<void> {
    this.entries = [];
    await this.save();
  }

  private save(): Promise<void> {
    const snapshot = { version: 1 as const, entries: this.entries.slice() };
    this.writing = this.writing.then(() => writeJsonFile(this.path, snapshot)).catch(() => {});
    return this.writing;
  }
}
