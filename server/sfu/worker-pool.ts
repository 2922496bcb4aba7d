import { availableParallelism } from 'node:os';
import * as mediasoup from 'mediasoup';
import type { types } from 'mediasoup';
import type { Logger } from 'pino';
import { ParleyError } from '../../common/errors';

/** What the pool needs to know to start workers. */
export interface WorkerPoolOptions {
  /** Workers to keep alive; 0 = one per CPU core (`os.availableParallelism()`). */
  workers: number;
  /** The worker binary; '' = MEDIASOUP_WORKER_BIN or mediasoup's default location. */
  workerBin: string;
  log: Logger;
  /** A worker died (its routers, and so its rooms, are gone); called before it is replaced. */
  onDied: (worker: types.Worker, error: Error) => void;
}

/** First wait before starting a replacement after a start failed, ms; doubles per failure up to the max. */
const RESPAWN_MIN_MS = 500;
const RESPAWN_MAX_MS = 30_000;

/**
 * The SFU's mediasoup workers: separate C++ processes, one media thread each,
 * so `workers` of them use that many cores. Started on first use (a server
 * that never hosts a room never spawns one). A worker that dies is reported
 * through `onDied` and replaced; a replacement that fails to start is retried
 * with a back-off. Rooms go to the worker carrying the fewest.
 */
export class WorkerPool {
  private readonly alive = new Set<types.Worker>();
  /** Rooms per worker (the pool's load measure). */
  private readonly load = new Map<types.Worker, number>();
  private starting: Promise<void> | undefined;
  private closed = false;
  private respawnDelay = RESPAWN_MIN_MS;
  private respawnTimer: NodeJS.Timeout | undefined;
  private deaths = 0;

  constructor(private readonly options: WorkerPoolOptions) {
    // mediasoup logs through the `debug` package (silent unless DEBUG is set):
    // its warnings and errors (the workers' among them) go to the server's log.
    const log = options.log;
    mediasoup.setLogEventListeners({
      onwarn: (namespace, text) => log.warn({ namespace }, `mediasoup: ${text}`),
      onerror: (namespace, text, err) => log.error({ namespace, err }, `mediasoup: ${text}`),
    });
  }

  /** How many workers the pool keeps. */
  get size(): number {
    return this.options.workers > 0 ? this.options.workers : Math.max(1, availableParallelism());
  }

  /** Workers alive now, and how many died since start. */
  get stats(): { alive: number; deaths: number } {
    return { alive: this.alive.size, deaths: this.deaths };
  }

  /**
   * The least-loaded live worker, starting the pool first if needed; the
   * caller counts a room on it with {@link retain} / {@link release}.
   * @throws ParleyError `unavailable` when no worker can be started (binary missing, …).
   */
  async pick(): Promise<types.Worker> {
    if (this.closed) throw new ParleyError('unavailable', 'the SFU is shutting down');
    if (this.alive.size < this.size) await this.fill();
    let best: types.Worker | undefined;
    for (const w of this.alive) {
      if (!best || (this.load.get(w) ?? 0) < (this.load.get(best) ?? 0)) best = w;
    }
    if (!best) throw new ParleyError('unavailable', 'the SFU has no media worker running');
    return best;
  }

  /** Counts one more room on `worker`. */
  retain(worker: types.Worker): void {
    this.load.set(worker, (this.load.get(worker) ?? 0) + 1);
  }

  /** Counts one room fewer on `worker`. */
  release(worker: types.Worker): void {
    const n = (this.load.get(worker) ?? 0) - 1;
    if (this.load.has(worker)) this.load.set(worker, Math.max(0, n));
  }

  /** Closes every worker (their processes exit). Idempotent. */
  close(): void {
    this.closed = true;
    clearTimeout(this.respawnTimer);
    for (const w of this.alive) w.close();
    this.alive.clear();
    this.load.clear();
  }

  /** Starts workers until `size` are alive (concurrent callers share one start). */
  private fill(): Promise<void> {
    this.starting ??= (async () => {
      try {
        const missing = this.size - this.alive.size;
        const results = await Promise.allSettled(
          Array.from({ length: missing }, () => this.startOne()),
        );
        const failed = results.filter((r) => r.status === 'rejected');
        for (const f of failed) this.options.log.warn({ err: (f as PromiseRejectedResult).reason as unknown }, 'SFU: a mediasoup worker did not start');
        if (failed.length > 0 && this.alive.size === 0) {
          const reason = (failed[0] as PromiseRejectedResult).reason as unknown;
          this.options.log.error({ err: reason }, 'SFU: no mediasoup worker could start');
          throw new ParleyError(
            'unavailable',
            'the SFU cannot start its media worker (see the server log; is the mediasoup worker built? scripts/setup.sh)',
          );
        }
      } finally {
        this.starting = undefined;
      }
    })();
    return this.starting;
  }

  private async startOne(): Promise<void> {
    const worker = await mediasoup.createWorker({
      logLevel: 'warn',
      ...(this.options.workerBin ? { workerBin: this.options.workerBin } : {}),
    });
    if (this.closed) {
      worker.close();
      return;
    }
    this.alive.add(worker);
    this.load.set(worker, 0);
    this.respawnDelay = RESPAWN_MIN_MS;
    this.options.log.info({ pid: worker.pid, workers: this.alive.size }, 'SFU: mediasoup worker started');
    worker.on('died', (error) => this.onDied(worker, error));
  }

  private onDied(worker: types.Worker, error: Error): void {
    this.alive.delete(worker);
    this.load.delete(worker);
    this.deaths += 1;
    this.options.log.error({ pid: worker.pid, err: error }, 'SFU: mediasoup worker died');
    try {
      this.options.onDied(worker, error);
    } catch (err) {
      this.options.log.error({ err }, 'SFU: ending the rooms of a dead worker failed');
    }
    if (!this.closed) this.scheduleRespawn(0);
  }

  private scheduleRespawn(delay: number): void {
    clearTimeout(this.respawnTimer);
    this.respawnTimer = setTimeout(() => {
      if (this.closed || this.alive.size >= this.size) return;
      this.fill().then(
        () => {
          if (this.alive.size < this.size) this.retryLater();
        },
        () => this.retryLater(),
      );
    }, delay);
    this.respawnTimer.unref();
  }

  private retryLater(): void {
    const delay = this.respawnDelay;
    this.respawnDelay = Math.min(RESPAWN_MAX_MS, this.respawnDelay * 2);
    this.options.log.warn({ retryInMs: delay }, 'SFU: replacing a mediasoup worker failed; retrying');
    this.scheduleRespawn(delay);
  }
}
