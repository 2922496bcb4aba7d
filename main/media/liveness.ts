import { EventEmitter } from 'node:events';

/**
 * No RTP for this long and the media is reported as stalled ("reconnecting"),
 * ms; the call engine then restarts ICE. The far end sends at least every
 * DTX keep-alive (400 ms) even in silence and on hold, and two impaired legs
 * at 15 % loss each lose 50 packets in a row with probability ~1e-28, so a
 * stall this long is the path, not the talker; short enough to keep a relay
 * failover's audio gap under 2 s.
 */
export const STALL_MS = 1000;
/**
 * How often the watchdog looks, ms: the status says `reconnecting` at most
 * this long after STALL_MS without RTP (issue 18: never "connected" while no
 * audio has come for more than a second).
 */
export const WATCHDOG_TICK_MS = 100;
/**
 * A watchdog tick (every ≤ WATCHDOG_TICK_MS) that comes this late means the process was
 * stopped (SIGSTOP) or the machine slept, not that the event loop was busy, ms.
 */
export const SUSPEND_GAP_MS = 3000;

export interface LivenessOptions {
  /** With no RTP for this long `timeout` is emitted (once), ms. */
  timeoutMs: number;
  /** Monotonic clock, ms. */
  now: () => number;
}

/**
 * Watches one received stream for life, as one stage: with no RTP for
 * STALL_MS (or half the timeout, if shorter) it emits `stalled` (the UI says
 * "reconnecting"), when RTP comes back `resumed`, and after `timeoutMs`
 * without any `timeout` once (the peer crashed or the network is gone). A
 * tick that comes SUSPEND_GAP_MS late emits `suspended` with the gap, ms: the
 * process was stopped or the machine slept, so that silence was ours — the
 * timeout counts from the wake-up, and the stall is reported at once (a path
 * that survived the sleep resumes it with its next packet).
 */
export class LivenessMonitor extends EventEmitter<{ stalled: []; resumed: []; timeout: []; suspended: [number] }> {
  private lastHeardAt = 0;
  private isStalled = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: LivenessOptions) {
    super();
  }

  /** Whether no RTP has come for the stall time. */
  get stalled(): boolean {
    return this.isStalled;
  }

  /** Starts watching (counts from now). Calling it again restarts the watch. */
  start(): void {
    this.stop();
    const { timeoutMs, now } = this.options;
    this.lastHeardAt = now();
    const stallAfter = Math.min(STALL_MS, timeoutMs / 2);
    let lastTick = now();
    this.timer = setInterval(() => {
      const t = now();
      const slept = t - lastTick;
      lastTick = t;
      if (slept > SUSPEND_GAP_MS) {
        this.lastHeardAt = Math.max(this.lastHeardAt, t - stallAfter - 1);
        this.isStalled = false;
        this.emit('suspended', slept);
      }
      const silent = t - this.lastHeardAt;
      if (silent > timeoutMs) {
        this.stop();
        this.emit('timeout');
      } else if (silent > stallAfter && !this.isStalled) {
        this.isStalled = true;
        this.emit('stalled');
      }
    }, Math.min(WATCHDOG_TICK_MS, stallAfter / 2));
    this.timer.unref();
  }

  /** How long no packet has come, ms (since {@link start} if none came since). */
  silentMs(): number {
    return Math.max(0, this.options.now() - this.lastHeardAt);
  }

  /** A packet arrived. */
  heard(): void {
    this.lastHeardAt = this.options.now();
    if (this.isStalled) {
      this.isStalled = false;
      this.emit('resumed');
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
