import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { trackGcPauses } from '../../main/media/worker/gc-pauses';

/** A full (mark-compact) collection on demand: `gc` of a context made after --expose-gc is set. */
function forceMajorGc(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** Waits until `check` holds (perf_hooks delivers gc entries asynchronously). */
async function until(check: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
}

describe('trackGcPauses (the media thread\'s garbage-collection pauses in call.stats)', () => {
  it('counts a mark-compact and its length, only in trackers that were running, and stops counting when stopped', async () => {
    const early = trackGcPauses();
    forceMajorGc();
    await until(() => early.pauses.pauses >= 1);
    expect(early.pauses.pauses).toBeGreaterThanOrEqual(1);
    expect(early.pauses.longestMs).toBeGreaterThan(0);

    const late = trackGcPauses();
    expect(late.pauses).toEqual({ pauses: 0, longestMs: 0 }); // what came before it is not its
    const before = early.pauses.pauses;
    early.stop();
    forceMajorGc();
    await until(() => late.pauses.pauses >= 1);
    expect(late.pauses.pauses).toBeGreaterThanOrEqual(1);
    expect(early.pauses.pauses).toBe(before); // stopped
    late.stop();
  });

  it('leaves the young generation\'s scavenges out', async () => {
    const t = trackGcPauses();
    // Short-lived garbage only: some MB of small arrays, dropped at once (scavenges, no mark-compact).
    for (let i = 0; i < 100_000; i++) new Array(8).fill(i);
    await new Promise((r) => setTimeout(r, 100));
    t.stop();
    expect(t.pauses.pauses).toBe(0);
  });
});
