/**
 * A token bucket (the classic traffic-shaping algorithm, e.g. RFC 2697's
 * committed burst): `burst` tokens at most, refilled at `ratePerSecond`;
 * each message takes one. Used per signaling connection.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  /**
   * @param ratePerSecond sustained refill rate, tokens per second (> 0).
   * @param burst bucket size, tokens (≥ 1); the bucket starts full.
   * @param now monotonic clock in ms (injectable for tests).
   */
  constructor(
    private ratePerSecond: number,
    private burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Changes rate and size (config.reload); tokens above the new size are dropped. */
  configure(ratePerSecond: number, burst: number): void {
    this.refill();
    this.ratePerSecond = ratePerSecond;
    this.burst = burst;
    this.tokens = Math.min(this.tokens, burst);
  }

  /**
   * Takes one token.
   * @returns `{ok:true}`, or `{ok:false, retryAfter}` with the seconds until a token is available.
   */
  take(): { ok: true } | { ok: false; retryAfter: number } {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return { ok: true };
    }
    const seconds = (1 - this.tokens) / this.ratePerSecond;
    return { ok: false, retryAfter: Math.ceil(seconds * 1000) / 1000 };
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.ratePerSecond);
    this.last = t;
  }
}

/**
 * Counts events in a fixed window and says when there were more than `max`
 * of them in one window (sustained abuse after rate limiting).
 */
export class WindowCounter {
  private start: number;
  private count = 0;

  /**
   * @param windowMs window length, ms.
   * @param now monotonic clock in ms.
   */
  constructor(
    private readonly windowMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.start = now();
  }

  /** Adds one event; true when the current window now holds more than `max`. */
  add(max: number): boolean {
    const t = this.now();
    if (t - this.start >= this.windowMs) {
      this.start = t;
      this.count = 0;
    }
    return ++this.count > max;
  }
}
