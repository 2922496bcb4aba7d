import { readFileSync, renameSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { SealError } from './seal';

/**
 * How far an invite's signed `sentAt` may lie from this device's clock, either
 * way, ms. Invites are delivered live (a callee that is offline is not rung
 * later), so a genuine one is seconds old; the width is for clocks that are
 * minutes apart. Inside the window a replay is caught by the persisted set of
 * seen call ids, outside it by the timestamp.
 */
export const INVITE_FRESHNESS_MS = 10 * 60_000;

/** Most call ids kept (a day of very busy use); the oldest go first. */
const MAX_ENTRIES = 10_000;

const SeenFile = z.object({ v: z.literal(1), seen: z.record(z.string(), z.number()) });

/**
 * The invites this device has already opened, by call id, kept in
 * `<dataDir>/seen-invites.json` (call ids and times only, mode 0600) for the
 * freshness window, so that a sealed invite recorded by the server and
 * delivered again — even after Parley restarts — never rings twice.
 */
export class SeenInvites {
  private seen = new Map<string, number>();

  private constructor(private readonly path: string) {}

  /** Reads the set (a missing or damaged file is an empty set, reported through `onCorrupt`). */
  static open(dataDir: string, onCorrupt?: (why: string) => void): SeenInvites {
    const store = new SeenInvites(join(dataDir, 'seen-invites.json'));
    try {
      const parsed = SeenFile.safeParse(JSON.parse(readFileSync(store.path, 'utf8')));
      if (parsed.success) store.seen = new Map(Object.entries(parsed.data.seen));
      else onCorrupt?.(`${store.path} does not have the expected shape; starting an empty set`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') onCorrupt?.(`cannot read ${store.path}: ${(e as Error).message}`);
    }
    return store;
  }

  /**
   * Admits an invite once: records its call id (on disk, before it returns).
   * @param sentAt the invite's signed time, Unix ms (undefined: refused).
   * @param now this device's clock, Unix ms.
   * @throws SealError `replayed` for a call id seen before, a time outside
   *   ±{@link INVITE_FRESHNESS_MS}, or no time at all.
   */
  admit(callId: string, sentAt: number | undefined, now = Date.now()): void {
    if (sentAt === undefined) throw new SealError('replayed', 'the invite carries no signed time, so it may be a recording');
    const skew = now - sentAt;
    if (Math.abs(skew) > INVITE_FRESHNESS_MS) {
      const minutes = Math.round(Math.abs(skew) / 60_000);
      throw new SealError(
        'replayed',
        skew > 0
          ? `the invite was sealed ${minutes} min ago: a recording played again, or the caller's clock is wrong`
          : `the invite is dated ${minutes} min in the future: the caller's clock (or this one) is wrong`,
      );
    }
    if (this.seen.has(callId)) throw new SealError('replayed', 'this invite was delivered before: a recording played again');
    for (const [id, t] of this.seen) if (now - t > INVITE_FRESHNESS_MS || this.seen.size >= MAX_ENTRIES) this.seen.delete(id);
    this.seen.set(callId, sentAt);
    this.save();
  }

  /** Atomic write (temporary file + rename), synchronous so a crash right after ringing cannot forget the call. */
  private save(): void {
    mkdirSync(join(this.path, '..'), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify({ v: 1, seen: Object.fromEntries(this.seen) }) + '\n', { mode: 0o600 });
    renameSync(tmp, this.path);
  }
}
