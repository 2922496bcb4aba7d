/**
 * Garbage-collection pauses of the thread this runs on (the media thread), from
 * V8 through `perf_hooks` (`gc` performance entries): mark-compact, incremental
 * marking and weak-callback pauses. The young generation's scavenges (1–3 ms
 * every few seconds in a call) are left out: they are how a JavaScript thread
 * frees its per-packet garbage, and too short to delay a packet.
 *
 * Why it is watched: each such pause holds every packet and frame of the call
 * (measured: two or three of them 15–16 s into most calls, 30–50 ms of capture
 * delayed at both ends, until V8's memory reducer was turned off for the media
 * thread; worker/host.ts and docs/audio.md).
 */
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';

/** Pauses since a tracker began: how many, and the longest, ms. */
export interface GcPauses {
  pauses: number;
  longestMs: number;
}

const trackers = new Set<GcPauses>();
let observer: PerformanceObserver | undefined;

function onEntry(entry: PerformanceEntry): void {
  const kind = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
  if (kind === constants.NODE_PERFORMANCE_GC_MINOR) return;
  for (const t of trackers) {
    t.pauses++;
    t.longestMs = Math.max(t.longestMs, Math.round(entry.duration * 10) / 10);
  }
}

/**
 * Starts counting this thread's pauses (one observer for all trackers, made
 * on first use). @returns the live counts and `stop`, which ends this
 * tracker (the observer goes with the last one).
 */
export function trackGcPauses(): { readonly pauses: GcPauses; stop(): void } {
  const pauses: GcPauses = { pauses: 0, longestMs: 0 };
  trackers.add(pauses);
  if (!observer) {
    observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) onEntry(e);
    });
    observer.observe({ entryTypes: ['gc'] });
  }
  return {
    pauses,
    stop() {
      trackers.delete(pauses);
      if (trackers.size === 0) {
        observer?.disconnect();
        observer = undefined;
      }
    },
  };
}
