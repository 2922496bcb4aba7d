import { availableParallelism } from 'node:os';
import { isIPv4, isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { ParleyError } from '../common/errors';
import type { AuditLog } from './audit';
import type { AuthConfig } from './config';
import type { ServerMetrics } from './metrics';

/**
 * The front doors of the HTTP API: login (`POST /v1/sessions`) and
 * registration (`POST /v1/accounts`), the only requests an anonymous client
 * can make that cost the server an argon2id hash.
 *
 * Throttling, not lockout (OWASP Authentication Cheat Sheet, "Login
 * Throttling" / "Account Lockout"): every limit is a fixed window
 * (rate-limiter-flexible), so a refused owner can sign in again as soon as the
 * window that refused them is over, whatever an attacker did meanwhile.
 *
 * - login, per client address (IPv6: its /64): attempts of any outcome,
 *   `auth.login_attempts_per_ip` per `auth.login_window_seconds`;
 * - login, per username: failed attempts, `auth.login_failures_per_username`
 *   per window, counted the same way for names that exist and names that do
 *   not (an attempt takes a point before the password is checked and gets it
 *   back only when the password was right), so the limit says nothing about
 *   which names exist;
 * - registration, per client address and per requested username: attempts,
 *   `auth.registrations_per_ip` / `auth.registration_attempts_per_username`
 *   per `auth.registration_window_seconds`.
 *
 * A refused request is HTTP 429 `rate_limited` with `retryAfter` (seconds) and
 * a `Retry-After` header, is never hashed, is counted in
 * `parley_auth_throttled_total{scope}` and audited as `rate_limited` (sampled:
 * server/audit.ts `recordSampled`).
 */

/** Which limit refused a request (metrics label, audit `scope`). */
export type ThrottleScope = 'login_ip' | 'login_username' | 'registration_ip' | 'registration_username';

/**
 * The one place limiters are built. One process: memory store, counts live in
 * this process. Several nodes (`store`, the cluster's Redis): a
 * `RateLimiterRedis` with the same options, so a limit holds across every
 * node behind the load balancer, and a RateLimiterMemory as its
 * `insuranceLimiter` for when Redis is away (the limit then holds per node).
 * @param points events allowed per window (> 0).
 * @param durationSeconds fixed window, seconds.
 */
export function createLimiter(
  scope: ThrottleScope,
  points: number,
  durationSeconds: number,
  store?: Redis,
): RateLimiterAbstract {
  const options = { keyPrefix: `parley:${scope}`, points, duration: durationSeconds };
  if (!store) return new RateLimiterMemory(options);
  return new RateLimiterRedis({ ...options, storeClient: store, insuranceLimiter: new RateLimiterMemory(options) });
}

/**
 * The address a client is counted under: IPv4 as it is (an IPv4-mapped IPv6
 * address as its IPv4), IPv6 as its /64 prefix (one subscriber usually holds a
 * whole /64, RFC 6177), anything else as given.
 */
export function clientKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1] as string;
  if (isIPv4(ip) || !isIPv6(ip)) return ip;
  const bare = ip.split('%')[0] as string;
  const [head = '', tail] = bare.split('::');
  const headParts = head ? head.split(':') : [];
  const tailParts = tail ? tail.split(':') : [];
  const missing = tail === undefined ? 0 : 8 - headParts.length - tailParts.length;
  const groups = [...headParts, ...Array<string>(Math.max(0, missing)).fill('0'), ...tailParts];
  return `${groups
    .slice(0, 4)
    .map((g) => (parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}

/** The limiters of one `[auth]` configuration; a limit of 0 has none. */
interface Limiters {
  loginIp?: RateLimiterAbstract;
  loginUsername?: RateLimiterAbstract;
  registrationIp?: RateLimiterAbstract;
  registrationUsername?: RateLimiterAbstract;
}

function buildLimiters(c: AuthConfig, store: Redis | undefined): Limiters {
  const make = (scope: ThrottleScope, points: number, seconds: number) =>
    points > 0 ? createLimiter(scope, points, seconds, store) : undefined;
  const l: Limiters = {};
  const loginIp = make('login_ip', c.loginAttemptsPerIp, c.loginWindowSeconds);
  const loginUsername = make('login_username', c.loginFailuresPerUsername, c.loginWindowSeconds);
  const registrationIp = make('registration_ip', c.registrationsPerIp, c.registrationWindowSeconds);
  const registrationUsername = make(
    'registration_username',
    c.registrationAttemptsPerUsername,
    c.registrationWindowSeconds,
  );
  if (loginIp) l.loginIp = loginIp;
  if (loginUsername) l.loginUsername = loginUsername;
  if (registrationIp) l.registrationIp = registrationIp;
  if (registrationUsername) l.registrationUsername = registrationUsername;
  return l;
}

/** Login and registration limits (see the comment at the top of this file). */
export class FrontDoor {
  private limiters: Limiters;
  private config: AuthConfig;

  /**
   * @param config the `[auth]` settings; `configure` replaces them at config.reload.
   * @param deps.audit where refusals are recorded (sampled).
   * @param deps.store several nodes: the cluster's Redis, where the counts are shared.
   */
  constructor(
    config: AuthConfig,
    private readonly deps: { audit: AuditLog; metrics: ServerMetrics; log: Logger; store?: Redis | undefined },
  ) {
    this.config = config;
    this.limiters = buildLimiters(config, deps.store);
  }

  /**
   * Applies new `[auth]` limits (config.reload). Limiters whose numbers changed
   * start counting afresh; the others keep their counts.
   */
  configure(next: AuthConfig): void {
    const fresh = buildLimiters(next, this.deps.store);
    const same = (a: number, b: number, c: number, d: number) => a === c && b === d;
    const p = this.config;
    if (same(p.loginAttemptsPerIp, p.loginWindowSeconds, next.loginAttemptsPerIp, next.loginWindowSeconds))
      fresh.loginIp = this.limiters.loginIp;
    if (same(p.loginFailuresPerUsername, p.loginWindowSeconds, next.loginFailuresPerUsername, next.loginWindowSeconds))
      fresh.loginUsername = this.limiters.loginUsername;
    if (same(p.registrationsPerIp, p.registrationWindowSeconds, next.registrationsPerIp, next.registrationWindowSeconds))
      fresh.registrationIp = this.limiters.registrationIp;
    if (
      same(
        p.registrationAttemptsPerUsername,
        p.registrationWindowSeconds,
        next.registrationAttemptsPerUsername,
        next.registrationWindowSeconds,
      )
    )
      fresh.registrationUsername = this.limiters.registrationUsername;
    this.limiters = fresh;
    this.config = next;
  }

  /**
   * Runs one login attempt behind the login limits.
   * @param remote the client's address (`req.ip`).
   * @param attempt checks the password; a ParleyError `bad_credentials` from it is a failure.
   * @returns what `attempt` returns.
   * @throws ParleyError `rate_limited` (with `retryAfter`, seconds) before `attempt` runs when a
   *   limit refuses; otherwise whatever `attempt` throws.
   */
  async login<T>(remote: string, username: string, attempt: () => Promise<T>): Promise<T> {
    const { loginIp, loginUsername } = this.limiters;
    const address = clientKey(remote);
    await this.take(loginIp, 'login_ip', address, { remote, username });
    await this.take(loginUsername, 'login_username', username, { remote, username });
    try {
      const result = await attempt();
      // The right password: this attempt was no failure of the name.
      await giveBack(loginUsername, username);
      return result;
    } catch (e) {
      // No verdict on the password (the server was busy, or broke): not a failure either.
      if (!(e instanceof ParleyError && e.reason === 'bad_credentials'))
        await giveBack(loginUsername, username);
      throw e;
    }
  }

  /**
   * Runs one registration attempt behind the registration limits.
   * @throws ParleyError `rate_limited` (with `retryAfter`, seconds) before `attempt` runs when a
   *   limit refuses; otherwise whatever `attempt` throws.
   */
  async register<T>(remote: string, username: string, attempt: () => Promise<T>): Promise<T> {
    const { registrationIp, registrationUsername } = this.limiters;
    await this.take(registrationIp, 'registration_ip', clientKey(remote), { remote, username });
    await this.take(registrationUsername, 'registration_username', username, { remote, username });
    return attempt();
  }

  /** Takes one point of `limiter` for `key`, or refuses the request. */
  private async take(
    limiter: RateLimiterAbstract | undefined,
    scope: ThrottleScope,
    key: string,
    who: { remote: string; username: string },
  ): Promise<void> {
    if (!limiter) return;
    try {
      await limiter.consume(key);
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) throw rejection; // a store error (Redis), not a verdict
      const retryAfter = Math.max(1, Math.ceil(rejection.msBeforeNext / 1000));
      this.deps.metrics.authThrottled.inc({ scope });
      // One warning per key and window (the first refusal), not one per refused request.
      if (rejection.consumedPoints === limiter.points + 1)
        this.deps.log.warn({ scope, remote: who.remote, retryAfter }, 'front door limit hit');
      void this.deps.audit.recordSampled(`rate_limited:${scope}:${key}`, {
        event: 'rate_limited',
        detail: { scope, remote: who.remote, username: who.username, retryAfter },
      });
      const what = scope.startsWith('login') ? 'sign-in' : 'sign-up';
      throw new ParleyError('rate_limited', `too many ${what} attempts; try again in ${retryAfter} s`, {
        retryAfter,
      });
    }
  }
}

/**
 * Returns the point an attempt took. When the window ended meanwhile, the
 * reward would start the next window below zero (a free extra attempt), so
 * that key is deleted instead.
 */
async function giveBack(limiter: RateLimiterAbstract | undefined, key: string): Promise<void> {
  if (!limiter) return;
  const res = await limiter.reward(key).catch(() => undefined);
  if (res && res.consumedPoints < 0) await limiter.delete(key).catch(() => false);
}

/**
 * A server-wide cap on concurrent argon2id hashes, so that a flood of logins
 * cannot take every core (argon2id at OWASP's 19 MiB, t=2 costs tens of ms of
 * CPU and 19 MiB each). At most `max` hashes run at once; up to `queue` more
 * requests wait in arrival order for a slot; beyond that a request is refused
 * at once with 503 `unavailable` and `retryAfter` 1 s.
 *
 * Why a bounded queue and then 503, not one or the other: a short burst (an
 * office signing in at nine) is absorbed by waiting a few hash-times, which
 * nobody notices; a flood meets a cheap, immediate refusal instead of an
 * unbounded queue whose memory and latency grow until every request times out.
 * The queue bounds the worst wait to about `queue / max` hash-times.
 */
export class HashGate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private max: number;
  private queue: number;

  /**
   * @param max hashes at once (0: half the CPU cores, at least 1).
   * @param queue requests that may wait for a slot.
   * @param onRefused sees each refused request (metrics); must not throw.
   */
  constructor(max: number, queue: number, private readonly onRefused: () => void = () => {}) {
    this.max = HashGate.slots(max);
    this.queue = queue;
  }

  /** The number of slots `max` stands for (0: half the cores, at least 1). */
  static slots(max: number): number {
    return max > 0 ? max : Math.max(1, Math.floor(availableParallelism() / 2));
  }

  /** Hashes running now and requests waiting for a slot. */
  get stats(): { running: number; waiting: number; max: number } {
    return { running: this.running, waiting: this.waiting.length, max: this.max };
  }

  /** Changes the cap and the queue length (config.reload); waiters get freed slots at once. */
  configure(max: number, queue: number): void {
    this.max = HashGate.slots(max);
    this.queue = queue;
    while (this.running < this.max && this.waiting.length > 0) {
      this.running++;
      this.waiting.shift()?.();
    }
  }

  /**
   * Runs `hash` when a slot is free.
   * @throws ParleyError `unavailable` (with `retryAfter` 1 s) when every slot is
   *   busy and the queue is full; otherwise whatever `hash` throws.
   */
  async run<T>(hash: () => Promise<T>): Promise<T> {
    if (this.running < this.max) this.running++;
    else if (this.waiting.length < this.queue) await new Promise<void>((r) => this.waiting.push(r));
    else {
      this.onRefused();
      throw new ParleyError('unavailable', 'the server is busy; try again in a moment', { retryAfter: 1 });
    }
    try {
      return await hash();
    } finally {
      // Hand the slot to the next waiter (it was counted for us), or free it.
      if (this.running <= this.max && this.waiting.length > 0) this.waiting.shift()?.();
      else this.running--;
    }
  }
}
