import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Hub } from './hub';
import type { ClusterStats } from './cluster';
import type { SfuStats } from './sfu/sfu';

/**
 * The server's Prometheus metrics (prom-client), served at `GET /metrics` in
 * the text exposition format. Each server has its own registry, so two
 * servers in one process (tests) never share counters.
 *
 * | name | type | labels | meaning |
 * |---|---|---|---|
 * | `parley_connected_devices` | gauge | | authenticated signaling connections |
 * | `parley_active_calls` | gauge | `state` = ringing, active | calls in progress |
 * | `parley_call_setup_seconds` | histogram | `stage` = ringing, answered | invite → first ringing / answer, seconds |
 * | `parley_errors_total` | counter | `code` (error reason, e.g. `rate_limited`) | errors sent to clients (signaling and HTTP) |
 * | `parley_calls_ended_total` | counter | `reason` (EndReason) | calls ended |
 * | `parley_relay_credentials_issued_total` | counter | | relay credentials handed out |
 * | `parley_relay_provider_errors_total` | counter | | external relay credential API failures |
 * | `parley_audit_write_failures_total` | counter | | audit records that could not be written |
 * | `parley_hello_timeouts_total` | counter | | signaling connections closed for not completing `hello` in time |
 * | `parley_auth_throttled_total` | counter | `scope` = login_ip, login_username, registration_ip, registration_username | logins and registrations refused by a limit (429) |
 * | `parley_password_hashes` | gauge | `state` = running, waiting | argon2 hashes running and requests waiting for a slot |
 * | `parley_password_hash_refused_total` | counter | | logins and registrations refused because the hash queue was full (503) |
 * | `parley_store_connections` | gauge | `state` = busy, idle, waiting | PostgreSQL pool: connections in use, idle, and queries waiting for one (absent with SQLite) |
 * | `parley_sfu_rooms` | gauge | | group-call rooms open on the SFU |
 * | `parley_sfu_participants` | gauge | | participants in those rooms |
 * | `parley_sfu_workers` | gauge | | mediasoup workers alive |
 * | `parley_sfu_worker_deaths_total` | counter | | mediasoup workers that died (their rooms ended `sfu_failed`) |
 * | `parley_sfu_rooms_ended_total` | counter | `reason` (RoomEndReason) | rooms ended |
 * | `parley_process_*`, `parley_nodejs_*` | | | prom-client's default process metrics |
 */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly errors: Counter<'code'>;
  readonly callsEnded: Counter<'reason'>;
  readonly relayCredentialsIssued: Counter;
  readonly relayProviderErrors: Counter;
  readonly auditWriteFailures: Counter;
  readonly helloTimeouts: Counter;
  readonly authThrottled: Counter<'scope'>;
  readonly hashRefused: Counter;
  readonly callSetup: Histogram<'stage'>;
  readonly sfuWorkerDeaths: Counter;
  readonly sfuRoomsEnded: Counter<'reason'>;

  /**
   * @param getHub gives the hub, read at scrape time for the gauges.
   * @param getHashes gives the password-hash cap's state, read at scrape time.
   * @param getStore gives the PostgreSQL pool's state at scrape time (undefined: SQLite, no gauge).
   * @param getSfu gives the SFU's counts, read at scrape time.
   */
  constructor(
    getHub: () => Hub,
    getHashes: () => { running: number; waiting: number } = () => ({ running: 0, waiting: 0 }),
    getStore: () => { busy: number; idle: number; waiting: number } | undefined = () => undefined,
    getSfu: () => SfuStats = () => ({ rooms: 0, participants: 0, workersAlive: 0, workerDeaths: 0 }),
  ) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'parley_' });
    new Gauge({
      name: 'parley_connected_devices',
      help: 'Authenticated signaling connections (devices online).',
      registers,
      collect() {
        this.set(getHub().stats.devices);
      },
    });
    new Gauge({
      name: 'parley_active_calls',
      help: 'Calls in progress, by state (ringing, active).',
      labelNames: ['state'],
      registers,
      collect() {
        const by = getHub().callsByState();
        this.set({ state: 'ringing' }, by.ringing);
        this.set({ state: 'active' }, by.active);
      },
    });
    this.callSetup = new Histogram({
      name: 'parley_call_setup_seconds',
      help: 'Call set-up latency from the invite to the first ringing (stage=ringing) or to the answer (stage=answered), seconds.',
      labelNames: ['stage'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.errors = new Counter({
      name: 'parley_errors_total',
      help: 'Errors sent to clients (signaling JSON-RPC and HTTP), by error code (reason).',
      labelNames: ['code'],
      registers,
    });
    this.callsEnded = new Counter({
      name: 'parley_calls_ended_total',
      help: 'Calls ended, by end reason.',
      labelNames: ['reason'],
      registers,
    });
    this.relayCredentialsIssued = new Counter({
      name: 'parley_relay_credentials_issued_total',
      help: 'Relay (TURN) credentials issued.',
      registers,
    });
    this.relayProviderErrors = new Counter({
      name: 'parley_relay_provider_errors_total',
      help: 'Failures of the external relay credential provider (turn.provider = "http").',
      registers,
    });
    this.auditWriteFailures = new Counter({
      name: 'parley_audit_write_failures_total',
      help: 'Audit records that could not be written.',
      registers,
    });
    this.authThrottled = new Counter({
      name: 'parley_auth_throttled_total',
      help: 'Logins and registrations refused with 429 by a front-door limit, by limit (scope).',
      labelNames: ['scope'],
      registers,
    });
    this.hashRefused = new Counter({
      name: 'parley_password_hash_refused_total',
      help: 'Logins and registrations refused with 503 because every argon2 slot was busy and the queue full.',
      registers,
    });
    new Gauge({
      name: 'parley_password_hashes',
      help: 'argon2 password hashes running now (state=running) and requests waiting for a slot (state=waiting).',
      labelNames: ['state'],
      registers,
      collect() {
        const h = getHashes();
        this.set({ state: 'running' }, h.running);
        this.set({ state: 'waiting' }, h.waiting);
      },
    });
    new Gauge({
      name: 'parley_store_connections',
      help: 'PostgreSQL pool: connections running a query (state=busy), idle ones, and queries waiting for a connection (state=waiting).',
      labelNames: ['state'],
      registers,
      collect() {
        const c = getStore();
        if (!c) return;
        this.set({ state: 'busy' }, c.busy);
        this.set({ state: 'idle' }, c.idle);
        this.set({ state: 'waiting' }, c.waiting);
      },
    });
    new Gauge({
      name: 'parley_sfu_rooms',
      help: 'Group-call rooms open on the SFU.',
      registers,
      collect() {
        this.set(getSfu().rooms);
      },
    });
    new Gauge({
      name: 'parley_sfu_participants',
      help: 'Participants in the rooms open on the SFU.',
      registers,
      collect() {
        this.set(getSfu().participants);
      },
    });
    new Gauge({
      name: 'parley_sfu_workers',
      help: 'mediasoup workers alive (they start with the first room).',
      registers,
      collect() {
        this.set(getSfu().workersAlive);
      },
    });
    this.sfuWorkerDeaths = new Counter({
      name: 'parley_sfu_worker_deaths_total',
      help: 'mediasoup workers that died; their rooms ended with sfu_failed and each was replaced.',
      registers,
    });
    this.sfuRoomsEnded = new Counter({
      name: 'parley_sfu_rooms_ended_total',
      help: 'Group-call rooms ended, by reason (sfu_failed, ended_by_admin, server_shutdown, empty).',
      labelNames: ['reason'],
      registers,
    });
    this.helloTimeouts = new Counter({
      name: 'parley_hello_timeouts_total',
      help: 'Signaling connections closed (4004) because they did not complete hello within limits.hello_timeout_seconds.',
      registers,
    });
  }

  /**
   * Several nodes: gauges summed over the cluster's live nodes, from the counts
   * each node writes to Redis with its heartbeat (≤ 1 s old). Any node's
   * `/metrics` gives them; absent when Redis cannot be read at scrape time.
   *
   * | name | type | labels | meaning |
   * |---|---|---|---|
   * | `parley_cluster_nodes` | gauge | | live nodes (heartbeat within 3 s) |
   * | `parley_cluster_connected_devices` | gauge | | signaling connections on all nodes |
   * | `parley_cluster_active_calls` | gauge | `state` = ringing, active | calls in progress on all nodes |
   * | `parley_cluster_sfu_rooms` | gauge | | group-call rooms on all nodes' SFUs |
   * | `parley_cluster_sfu_participants` | gauge | | participants in those rooms |
   */
  addClusterGauges(get: () => Promise<ClusterStats | undefined>): void {
    const registers = [this.registry];
    // One Redis read per scrape, shared by the five gauges.
    let scrape: Promise<ClusterStats | undefined> | undefined;
    const read = (): Promise<ClusterStats | undefined> => {
      scrape ??= get().finally(() => setTimeout(() => (scrape = undefined), 100).unref());
      return scrape;
    };
    const gauge = (name: string, help: string, pick: (s: ClusterStats) => number) =>
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          const s = await read();
          if (s) this.set(pick(s));
          else this.reset();
        },
      });
    gauge('parley_cluster_nodes', 'Live cluster nodes (heartbeat within 3 s).', (s) => s.nodes);
    gauge('parley_cluster_connected_devices', 'Signaling connections on all live nodes.', (s) => s.devices);
    gauge('parley_cluster_sfu_rooms', 'Group-call rooms on all live nodes.', (s) => s.rooms);
    gauge('parley_cluster_sfu_participants', 'Participants in the rooms of all live nodes.', (s) => s.participants);
    new Gauge({
      name: 'parley_cluster_active_calls',
      help: 'Calls in progress on all live nodes, by state (ringing, active).',
      labelNames: ['state'],
      registers,
      async collect() {
        const s = await read();
        if (!s) return this.reset();
        this.set({ state: 'ringing' }, s.ringing);
        this.set({ state: 'active' }, s.active);
      },
    });
  }

  /**
   * Counts the error in an outbound JSON-RPC frame, if it is an error reply.
   * Cheap for other frames: only text containing `"error":{` is parsed.
   */
  countOutbound(text: string): void {
    if (!text.includes('"error":{')) return;
    try {
      const frame = JSON.parse(text) as { error?: { data?: { reason?: unknown } } };
      const reason = frame.error?.data?.reason;
      if (frame.error) this.errors.inc({ code: typeof reason === 'string' ? reason : 'unknown' });
    } catch {
      // not ours to judge
    }
  }
}
