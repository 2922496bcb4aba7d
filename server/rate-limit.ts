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

/**
 * Token bucket in Redis (Lua, atomic; Redis's own clock), so that one
 * account's limit holds across several server nodes. Fields `t` (tokens) and
 * `l` (last refill, ms); the key expires once the bucket would be full again.
 * Returns {1} or {0, seconds until a token as a string}.
 */
const BUCKET_LUA = `local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens = tonumber(v[1]) or burst
local last = tonumber(v[2]) or ms
tokens = math.min(burst, tokens + math.max(0, ms - last) / 1000 * rate)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'l', tostring(ms))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
if ok == 1 then return {1} end
return {0, tostring((1 - tokens) / rate)}`;

/** How long a shared bucket waits for Redis before this node decides alone, ms. */
const SHARED_TIMEOUT_MS = 250;

/** The commands of an ioredis client a shared bucket needs. */
export interface BucketStore {
  eval(script: string, keys: number, ...args: (string | number)[]): Promise<unknown>;
}

/**
 * Token buckets keyed by account (or any key), shared by every node through
 * Redis when clustered (`store`), else in this process — the same numbers
 * either way. When Redis does not answer within SHARED_TIMEOUT_MS, this node's
 * own bucket for the key decides (the limit then holds per node, not across
 * them, until Redis is back): a Redis blip never blocks a call.
 */
export class TokenBuckets {
  private readonly local = new Map<string, TokenBucket>();
  private limits: { ratePerSecond: number; burst: number } | undefined;

  /**
   * @param prefix Redis key prefix, e.g. `parley:bucket:calls:`.
   * @param store the cluster's Redis client, or undefined (one process).
   */
  constructor(
    private readonly prefix: string,
    private readonly store?: BucketStore,
  ) {}

  /**
   * Takes one token of `key`'s bucket.
   * @param ratePerSecond refill, tokens per second; @param burst bucket size.
   */
  async take(key: string, ratePerSecond: number, burst: number): Promise<{ ok: true } | { ok: false; retryAfter: number }> {
    if (this.store) {
      try {
        const reply = (await Promise.race([
          this.store.eval(BUCKET_LUA, 1, this.prefix + key, ratePerSecond, burst),
          new Promise((_, reject) => setTimeout(() => reject(new Error('redis timeout')), SHARED_TIMEOUT_MS).unref()),
        ])) as [number, string?];
        if (reply[0] === 1) return { ok: true };
        return { ok: false, retryAfter: Math.ceil(Number(reply[1]) * 1000) / 1000 };
      } catch {
        // Redis away: decide here.
      }
    }
    return this.takeLocal(key, ratePerSecond, burst);
  }

  /** The in-process bucket (one process, or Redis away). */
  takeLocal(key: string, ratePerSecond: number, burst: number): { ok: true } | { ok: false; retryAfter: number } {
    if (this.limits?.ratePerSecond !== ratePerSecond || this.limits.burst !== burst) {
      this.limits = { ratePerSecond, burst };
      for (const b of this.local.values()) b.configure(ratePerSecond, burst);
    }
    let bucket = this.local.get(key);
    if (!bucket) this.local.set(key, (bucket = new TokenBucket(ratePerSecond, burst)));
    return bucket.take();
  }
}
