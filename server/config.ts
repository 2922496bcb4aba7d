import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { z } from 'zod';

/**
 * Server configuration: embedded defaults, then a TOML file (`--config path`
 * or `PARLEY_SERVER_CONFIG`), then environment overrides. Every key is
 * validated; an unknown or wrong key is a `ConfigError` that names it.
 * See `server/parley-server.example.toml` for every key with its default.
 */

/** `host:port` (IPv6 hosts in brackets: `[::1]:8787`); port 0 picks a free port. */
const ListenAddress = z.string().transform((value, ctx) => {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    ctx.addIssue({
      code: 'custom',
      message: `expected "host:port" with a port 0–65535, got "${value}"`,
    });
    return z.NEVER;
  }
  return { host: (m[1] ?? m[2]) as string, port };
});

/**
 * `[store] url`: empty (SQLite in `data_dir`) or `postgres://user:password@host:port/database`.
 * A message about a bad URL never repeats it (it may hold a password).
 */
const StoreUrl = z.string().superRefine((value, ctx) => {
  if (value === '') return;
  const fail = (message: string) => ctx.addIssue({ code: 'custom', message });
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    fail('not a URL; expected "postgres://user:password@host:port/database" (empty: SQLite in data_dir)');
    return;
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
    fail(`only PostgreSQL is supported ("postgres://…", got "${u.protocol}//…"); leave it empty for SQLite in data_dir`);
    return;
  }
  if (!u.hostname) fail('name the host: "postgres://user:password@host:port/database"');
  else if (u.pathname.replace(/^\//, '') === '')
    fail('name the database: "postgres://user:password@host:port/database"');
  else if (!u.username) fail('name the user: "postgres://user:password@host:port/database"');
});

const LogLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

const FileConfig = z
  .object({
    /** Where HTTP and the WebSocket listen. */
    listen: ListenAddress.default({ host: '127.0.0.1', port: 8787 }),
    /** Folder of the SQLite file (and the default admin socket); relative paths are relative to the working directory. */
    data_dir: z.string().min(1).default('./.parley/server'),
    store: z
      .object({
        /** Empty: the SQLite file in `data_dir` (the default). `postgres://user:password@host:port/database`: PostgreSQL. */
        url: StoreUrl.default(''),
        /** Connections to PostgreSQL this server keeps at most. */
        pool_size: z.number().int().min(1).max(1000).default(10),
      })
      .strict()
      .default({ url: '', pool_size: 10 }),
    /**
     * Several nodes (docs/deploy.md): absent or empty `redis_url` is one
     * process, exactly as before. With `redis://…` this process is one node of
     * a cluster sharing that Redis (presence, cross-node delivery, call records,
     * shared limits) and the same PostgreSQL store; `node_id` names it
     * (default: host name and process id).
     */
    cluster: z
      .object({
        redis_url: z
          .string()
          .refine((v) => v === '' || /^rediss?:\/\//.test(v), 'expected "redis://[:password@]host:port[/db]" (empty: one node)')
          .default(''),
        node_id: z
          .string()
          .regex(/^[A-Za-z0-9_.-]{0,64}$/, 'letters, digits, "_", "." and "-" only')
          .default(''),
      })
      .strict()
      .default({ redis_url: '', node_id: '' }),
    /**
     * Addresses (or CIDR ranges) of the reverse proxies in front of this server
     * (nginx, docs/deploy.md) whose `X-Forwarded-For` names the client: the
     * per-address limits then count the client, not the proxy. Empty (the
     * default): the header is ignored.
     */
    trust_proxy: z.array(z.string().min(1)).default([]),
    log_level: LogLevel.default('info'),
    /** Seconds a call may ring before it ends with `no_answer`. */
    ring_timeout_seconds: z.number().positive().max(3600).default(45),
    /**
     * Seconds an answered call is held for a device whose signaling connection
     * dropped (its media runs peer to peer): back within it, the call goes on;
     * not, it ends `failed` for both. 0: the call ends at once.
     */
    call_grace_seconds: z.number().min(0).max(300).default(20),
    turn: z
      .object({
        /** TURN URLs, e.g. `turn:127.0.0.1:3478?transport=udp`. Empty: no relay is offered. */
        urls: z
          .array(z.string().regex(/^turns?:/, 'a TURN URL starts with "turn:" or "turns:"'))
          .default([]),
        /** coturn's `--static-auth-secret`. Required when `urls` is not empty. */
        secret: z.string().default(''),
        /** Lifetime of an issued relay credential, seconds. */
        ttl_seconds: z.number().int().min(60).max(86_400).default(600),
        /** Where credentials come from: `coturn` (the shared secret above) or `http` (an external credential API). */
        provider: z.enum(['coturn', 'http']).default('coturn'),
        /** With provider `http`: the credential API's URL (GET, `?accountId=…`; answers `{username, password, ttl, urls}`). */
        provider_url: z.string().default(''),
        /** With provider `http`: how long to wait for it, ms. */
        provider_timeout_ms: z.number().int().min(100).max(60_000).default(3000),
        /** Relay credential requests per account per minute (HTTP and socket together). */
        requests_per_minute: z.number().positive().max(100_000).default(30),
        /** … and at once above that rate. */
        request_burst: z.number().int().min(1).max(100_000).default(10),
        /** Experiment: these usernames get `experiment_urls` instead of `urls`. */
        experiment_accounts: z.array(z.string()).default([]),
        experiment_urls: z
          .array(z.string().regex(/^turns?:/, 'a TURN URL starts with "turn:" or "turns:"'))
          .default([]),
        /**
         * Relays per region (Signal's relays endpoint): `[[turn.regions]]` each
         * with a `name`, its coturn instances' `urls`, their `secret` (default:
         * `turn.secret`) and the client addresses it serves (`clients`, CIDR
         * ranges). A client gets the region whose range holds its address most
         * specifically (longest prefix); otherwise `default_region`, or else
         * `turn.urls`. Provider `coturn` only.
         */
        regions: z
          .array(
            z
              .object({
                name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'a region name is 1-32 of a-z, 0-9, "-" and "_"'),
                urls: z.array(z.string().regex(/^turns?:/, 'a TURN URL starts with "turn:" or "turns:"')).min(1),
                secret: z.string().default(''),
                clients: z.array(z.string().refine((v) => parseCidr(v) !== undefined, 'not a CIDR range such as "10.1.0.0/16" or "2001:db8::/32"')).default([]),
              })
              .strict(),
          )
          .default([]),
        /** The region of clients that no region's `clients` holds (empty: `turn.urls`). */
        default_region: z.string().default(''),
      })
      .strict()
      .default({
        urls: [],
        secret: '',
        ttl_seconds: 600,
        provider: 'coturn',
        provider_url: '',
        provider_timeout_ms: 3000,
        requests_per_minute: 30,
        request_burst: 10,
        experiment_accounts: [],
        experiment_urls: [],
        regions: [],
        default_region: '',
      }),
    stun: z
      .object({
        /** STUN URLs offered beside the relay, e.g. `stun:127.0.0.1:3478`. */
        urls: z
          .array(z.string().regex(/^stuns?:/, 'a STUN URL starts with "stun:" or "stuns:"'))
          .default([]),
      })
      .strict()
      .default({ urls: [] }),
    audit: z
      .object({
        /** Audit records older than this are deleted at start and once a day, days. */
        retention_days: z.number().int().min(1).max(36_500).default(90),
        /**
         * Repeated failures of one kind from one source (a login failing for the same
         * address and username, a refused `hello` from one address, one limit refusing one
         * key) get one row when they start and one summary row with a `count` after this
         * many seconds, not one row each.
         */
        failure_summary_seconds: z.number().positive().max(86_400).default(300),
      })
      .strict()
      .default({ retention_days: 90, failure_summary_seconds: 300 }),
    auth: z
      .object({
        /** Fixed window of the login limits, seconds. */
        login_window_seconds: z.number().int().min(1).max(86_400).default(900),
        /** Failed logins one username may have per window, from anywhere; 0: no limit. */
        login_failures_per_username: z.number().int().min(0).max(1_000_000).default(10),
        /** Login attempts (any outcome) one client address (IPv6: its /64) may make per window; 0: no limit. */
        login_attempts_per_ip: z.number().int().min(0).max(1_000_000).default(100),
        /** Fixed window of the registration limits, seconds. */
        registration_window_seconds: z.number().int().min(1).max(86_400).default(3600),
        /** Registration attempts one client address (IPv6: its /64) may make per window; 0: no limit. */
        registrations_per_ip: z.number().int().min(0).max(1_000_000).default(20),
        /** Registration attempts for one username per window; 0: no limit. */
        registration_attempts_per_username: z.number().int().min(0).max(1_000_000).default(5),
        /** argon2 hashes computed at once, server-wide; 0: half the CPU cores (at least 1). */
        max_concurrent_hashes: z.number().int().min(0).max(1024).default(0),
        /** Logins and registrations that may wait for a hash slot; more get 503 `unavailable`. */
        hash_queue: z.number().int().min(0).max(100_000).default(32),
      })
      .strict()
      .default({
        login_window_seconds: 900,
        login_failures_per_username: 10,
        login_attempts_per_ip: 100,
        registration_window_seconds: 3600,
        registrations_per_ip: 20,
        registration_attempts_per_username: 5,
        max_concurrent_hashes: 0,
        hash_queue: 32,
      }),
    admin: z
      .object({
        /** Unix socket of the admin API; empty: `<data_dir>/admin.sock`. */
        socket: z.string().default(''),
      })
      .strict()
      .default({ socket: '' }),
    policy: z
      .object({
        /** Calls an account may start per minute, sustained (token bucket rate). */
        calls_per_minute: z.number().positive().max(100_000).default(10),
        /** Calls an account may start at once above that rate (token bucket size). */
        call_burst: z.number().int().min(1).max(100_000).default(20),
        /** Calls (ringing or active) one account may be a party of at once; 0: no limit. */
        max_calls_per_account: z.number().int().min(0).max(100_000).default(5),
        /** Calls (ringing or active) on the whole server; 0: no limit. */
        max_calls: z.number().int().min(0).max(10_000_000).default(0),
        /** How long an answered call may last before `on_expiry` applies, seconds. */
        call_lifetime_seconds: z.number().int().min(1).max(604_800).default(1800),
        /** No call lasts longer than this, whatever `on_expiry` says, seconds. */
        max_call_lifetime_seconds: z.number().int().min(1).max(604_800).default(7200),
        /** Both parties get `call.warning` this long before a call is ended, seconds. */
        lifetime_warning_seconds: z.number().int().min(0).max(86_400).default(300),
        /** At the lifetime: `terminate` (end with ttl_expired), `warn` (warn, keep going until the maximum), `extend` (another lifetime, up to the maximum). */
        on_expiry: z.enum(['terminate', 'warn', 'extend']).default('terminate'),
        /** Duration budget of one call, seconds; 0: none. */
        call_budget_seconds: z.number().int().min(0).max(604_800).default(0),
        /** Call time an account may use per UTC day, seconds; 0: none. */
        daily_budget_seconds: z.number().int().min(0).max(86_400).default(0),
        /** Both parties are warned when this share of a budget is used, percent. */
        budget_warning_percent: z.number().min(1).max(100).default(80),
        /** End a call that exhausts a budget (budget_exceeded); off: warn and record the overrun only. */
        hard_stop: z.boolean().default(true),
        /** Callers who are not contacts must be approved once by the callee (who is asked), before their calls ring. */
        first_call_approval: z.boolean().default(false),
        /** How long such a request waits for the callee's answer, seconds. */
        approval_timeout_seconds: z.number().int().min(1).max(86_400).default(300),
        /** Usernames that may make and take calls; empty: every account. */
        allowed_accounts: z.array(z.string()).default([]),
        /** Usernames that may neither make nor take calls. */
        blocked_accounts: z.array(z.string()).default([]),
      })
      .strict()
      .default({
        calls_per_minute: 10,
        call_burst: 20,
        max_calls_per_account: 5,
        max_calls: 0,
        call_lifetime_seconds: 1800,
        max_call_lifetime_seconds: 7200,
        lifetime_warning_seconds: 300,
        on_expiry: 'terminate',
        call_budget_seconds: 0,
        daily_budget_seconds: 0,
        budget_warning_percent: 80,
        hard_stop: true,
        first_call_approval: false,
        approval_timeout_seconds: 300,
        allowed_accounts: [],
        blocked_accounts: [],
      }),
    sessions: z
      .object({
        /** Lifetime of a device token from login or its last `session.refresh`, seconds (default 30 days). */
        token_ttl_seconds: z.number().int().min(1).max(31_536_000).default(2_592_000),
      })
      .strict()
      .default({ token_ttl_seconds: 2_592_000 }),
    limits: z
      .object({
        /** Signaling messages a connection may send per second, sustained (token bucket rate). */
        messages_per_second: z.number().positive().max(100_000).default(50),
        /** Messages a connection may send at once above the sustained rate (token bucket size). */
        message_burst: z.number().int().min(1).max(100_000).default(100),
        /** A signaling connection that has not completed `hello` this long after connecting is closed (4004), seconds. */
        hello_timeout_seconds: z.number().positive().max(300).default(10),
      })
      .strict()
      .default({ messages_per_second: 50, message_burst: 100, hello_timeout_seconds: 10 }),
    sfu: z
      .object({
        /** mediasoup worker processes (one media thread each); 0: one per CPU core. */
        workers: z.number().int().min(0).max(256).default(0),
        /** The worker binary; empty: MEDIASOUP_WORKER_BIN (scripts/node-env.sh sets it to the one scripts/setup.sh built). */
        worker_bin: z.string().default(''),
        /** IP the SFU's WebRTC transports listen on (UDP). */
        listen_ip: z.union([z.ipv4(), z.ipv6()]).default('127.0.0.1'),
        /** Address (IP or host name) put in the SFU's ICE candidates instead of listen_ip, e.g. the public IP behind NAT; empty: listen_ip. */
        announced_address: z.string().max(253).default(''),
        /** First UDP port of the transports' range. */
        rtc_min_port: z.number().int().min(1024).max(65535).default(40000),
        /** Last UDP port of the transports' range (each participant takes two ports: send and recv). */
        rtc_max_port: z.number().int().min(1024).max(65535).default(49999),
        /** Participants per room, default and ceiling (`room.create` may ask for fewer). */
        max_participants: z.number().int().min(2).max(1000).default(16),
        /** Open rooms one account may have created at once (0: no limit). */
        max_rooms_per_account: z.number().int().min(0).max(1000).default(3),
        /** A room ends (`ttl_expired`) this long after it was created, seconds (0: never). */
        room_lifetime_seconds: z.number().int().min(0).max(7 * 86_400).default(4 * 3600),
        /**
         * A participant whose signaling connection dropped keeps its place (transports, producers,
         * consumers: its audio goes on) this long for its device to reconnect and resume, seconds; 0: removed at once.
         */
        reconnect_grace_seconds: z.number().min(0).max(300).default(20),
      })
      .strict()
      .default({
        workers: 0,
        worker_bin: '',
        listen_ip: '127.0.0.1',
        announced_address: '',
        rtc_min_port: 40000,
        rtc_max_port: 49999,
        reconnect_grace_seconds: 20,
        max_participants: 16,
        max_rooms_per_account: 3,
        room_lifetime_seconds: 4 * 3600,
      }),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.policy.call_lifetime_seconds > c.policy.max_call_lifetime_seconds) {
      ctx.addIssue({
        code: 'custom',
        path: ['policy', 'call_lifetime_seconds'],
        message: 'must not be longer than policy.max_call_lifetime_seconds',
      });
    }
    if (c.turn.provider === 'http' && !/^https?:\/\//.test(c.turn.provider_url)) {
      ctx.addIssue({
        code: 'custom',
        path: ['turn', 'provider_url'],
        message: 'an http(s) URL is required when turn.provider is "http"',
      });
    }
    if (c.sfu.rtc_min_port > c.sfu.rtc_max_port) {
      ctx.addIssue({
        code: 'custom',
        path: ['sfu', 'rtc_min_port'],
        message: 'must not be above sfu.rtc_max_port',
      });
    }
    const regionNames = new Set<string>();
    c.turn.regions.forEach((r, i) => {
      if (regionNames.has(r.name))
        ctx.addIssue({ code: 'custom', path: ['turn', 'regions', i, 'name'], message: `region "${r.name}" is named twice` });
      regionNames.add(r.name);
      if (c.turn.provider === 'coturn' && r.secret.length === 0 && c.turn.secret.length === 0)
        ctx.addIssue({ code: 'custom', path: ['turn', 'regions', i, 'secret'], message: 'required (or turn.secret)' });
    });
    if (c.turn.regions.length > 0 && c.turn.provider !== 'coturn')
      ctx.addIssue({ code: 'custom', path: ['turn', 'regions'], message: 'regions need turn.provider "coturn"' });
    if (c.turn.default_region !== '' && !regionNames.has(c.turn.default_region))
      ctx.addIssue({ code: 'custom', path: ['turn', 'default_region'], message: `no [[turn.regions]] is named "${c.turn.default_region}"` });
    if (c.turn.provider === 'coturn' && c.turn.urls.length > 0 && c.turn.secret.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['turn', 'secret'],
        message: 'required when turn.urls is set',
      });
    }
  });

/** A CIDR range (RFC 4632; IPv6 as RFC 4291 §2.3), parsed. */
export interface Cidr {
  /** As written, e.g. `10.1.0.0/16`. */
  text: string;
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

/** Parses `address/prefix`; undefined when it is not one (a bare address is a /32 or /128). */
export function parseCidr(text: string): Cidr | undefined {
  const [address = '', prefixText, extra] = text.trim().split('/');
  if (extra !== undefined) return undefined;
  const v = isIP(address);
  if (v === 0) return undefined;
  const max = v === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return undefined;
  return { text: text.trim(), address, prefix, family: v === 4 ? 'ipv4' : 'ipv6' };
}

/** One region's relays (config `[[turn.regions]]`). */
export interface TurnRegion {
  name: string;
  urls: string[];
  /** The static-auth-secret of this region's coturn instances (never logged). */
  secret: string;
  /** The client address ranges it serves. */
  clients: Cidr[];
}

/** The validated configuration the server runs with. */
export interface ServerConfig {
  listen: { host: string; port: number };
  /** Absolute path of the data folder. */
  dataDir: string;
  /**
   * The store: `url` undefined is SQLite in `dataDir`; a `postgres://` URL
   * (it may hold a password: log it only through redactStoreUrl) is PostgreSQL,
   * with at most `poolSize` connections.
   */
  store: { url: string | undefined; poolSize: number };
  /**
   * Several nodes: undefined is one process (the default); else the Redis this
   * node shares with the others (it may hold a password: never log it) and
   * this node's id.
   */
  cluster?: { redisUrl: string; nodeId: string } | undefined;
  /** Reverse proxies whose `X-Forwarded-For` is believed (addresses or CIDR ranges); undefined: none. */
  trustProxy?: string[] | undefined;
  logLevel: z.infer<typeof LogLevel>;
  /** Ring timeout in seconds. */
  ringTimeoutSeconds: number;
  /** How long an answered call is held for a device whose connection dropped, seconds (0: none). */
  callGraceSeconds: number;
  turn: {
    urls: string[];
    secret: string;
    ttlSeconds: number;
    provider: 'coturn' | 'http';
    providerUrl: string;
    providerTimeoutMs: number;
    requestsPerMinute: number;
    requestBurst: number;
    experimentAccounts: string[];
    experimentUrls: string[];
    /** Relays per region (server/relays.ts routes a client to one by its address). */
    regions: TurnRegion[];
    /** The region of clients no region's ranges hold; undefined: `urls`. */
    defaultRegion: string | undefined;
  };
  stun: { urls: string[] };
  /** Audit log retention, days; window of summarised repeated failures, seconds. */
  audit: { retentionDays: number; failureSummarySeconds: number };
  /** Login and registration limits and the password-hash cap (see `[auth]` in the example file). */
  auth: AuthConfig;
  /** Absolute path of the admin API's Unix socket. */
  admin: { socket: string };
  /**
   * Per-connection message rate limit: sustained messages/s and burst (messages);
   * and how long a connection may stay open without a successful `hello`, seconds.
   */
  limits: { messagesPerSecond: number; messageBurst: number; helloTimeoutSeconds: number };
  /** Device token lifetime, seconds. */
  sessions: { tokenTtlSeconds: number };
  /** Call policy (see `[policy]` in the example file). */
  policy: PolicyConfig;
  /** The SFU for group calls (see `[sfu]` in the example file). */
  sfu: SfuConfig;
}

/**
 * The SFU (`[sfu]`): mediasoup workers and where their WebRTC transports
 * listen. `workers` and `workerBin` apply at start; the rest is read each
 * time a room or transport is made.
 */
export interface SfuConfig {
  /** Worker processes; 0 = one per CPU core. */
  workers: number;
  /** Absolute path of the worker binary, or '' for MEDIASOUP_WORKER_BIN / mediasoup's default. */
  workerBin: string;
  listenIp: string;
  /** '' = announce listenIp. */
  announcedAddress: string;
  /** UDP port range of the transports, inclusive. */
  rtcMinPort: number;
  rtcMaxPort: number;
  /** Participants per room: default and ceiling. */
  maxParticipants: number;
  /** Open rooms one account may have created at once (0: no limit). */
  maxRoomsPerAccount: number;
  /** A room's lifetime from its creation, seconds (0: none). */
  roomLifetimeSeconds: number;
  /** How long a participant whose signaling connection dropped keeps its place in the room, ms (0: none). */
  reconnectGraceMs: number;
}

/**
 * The front doors (`[auth]`): fixed-window limits on login and registration per
 * client address and per username (0 = no limit), and the server-wide cap on
 * concurrent argon2 hashes with its bounded wait queue.
 */
export interface AuthConfig {
  /** Window of the login limits, seconds. */
  loginWindowSeconds: number;
  /** Failed logins per username per window. */
  loginFailuresPerUsername: number;
  /** Login attempts per client address (IPv6 /64) per window. */
  loginAttemptsPerIp: number;
  /** Window of the registration limits, seconds. */
  registrationWindowSeconds: number;
  /** Registration attempts per client address (IPv6 /64) per window. */
  registrationsPerIp: number;
  /** Registration attempts per username per window. */
  registrationAttemptsPerUsername: number;
  /** argon2 hashes at once; 0 = half the CPU cores, at least 1. */
  maxConcurrentHashes: number;
  /** Requests that may wait for a hash slot before 503. */
  hashQueue: number;
}

/** Call policy settings; durations in seconds, 0 = no limit where noted. */
export interface PolicyConfig {
  callsPerMinute: number;
  callBurst: number;
  maxCallsPerAccount: number;
  maxCalls: number;
  callLifetimeSeconds: number;
  maxCallLifetimeSeconds: number;
  lifetimeWarningSeconds: number;
  onExpiry: 'terminate' | 'warn' | 'extend';
  callBudgetSeconds: number;
  dailyBudgetSeconds: number;
  budgetWarningPercent: number;
  hardStop: boolean;
  firstCallApproval: boolean;
  approvalTimeoutSeconds: number;
  allowedAccounts: string[];
  blockedAccounts: string[];
}

/** A configuration problem; the message names the key (and its source) for a person. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Environment variables that override a config key: env name → [key path, kind]. */
const ENV_OVERRIDES: Record<string, [string[], 'string' | 'number' | 'list']> = {
  PARLEY_SERVER_LISTEN: [['listen'], 'string'],
  PARLEY_DATA_DIR: [['data_dir'], 'string'],
  PARLEY_STORE_URL: [['store', 'url'], 'string'],
  PARLEY_CLUSTER_REDIS_URL: [['cluster', 'redis_url'], 'string'],
  PARLEY_NODE_ID: [['cluster', 'node_id'], 'string'],
  PARLEY_LOG_LEVEL: [['log_level'], 'string'],
  PARLEY_TRUST_PROXY: [['trust_proxy'], 'list'],
  PARLEY_RING_TIMEOUT: [['ring_timeout_seconds'], 'number'],
  PARLEY_CALL_GRACE: [['call_grace_seconds'], 'number'],
  PARLEY_TURN_URLS: [['turn', 'urls'], 'list'],
  PARLEY_TURN_SECRET: [['turn', 'secret'], 'string'],
  PARLEY_TURN_TTL: [['turn', 'ttl_seconds'], 'number'],
  PARLEY_STUN_URLS: [['stun', 'urls'], 'list'],
  PARLEY_ADMIN_SOCKET: [['admin', 'socket'], 'string'],
  PARLEY_AUDIT_RETENTION_DAYS: [['audit', 'retention_days'], 'number'],
  PARLEY_TOKEN_TTL: [['sessions', 'token_ttl_seconds'], 'number'],
  PARLEY_HELLO_TIMEOUT: [['limits', 'hello_timeout_seconds'], 'number'],
  PARLEY_AUDIT_FAILURE_SUMMARY_SECONDS: [['audit', 'failure_summary_seconds'], 'number'],
  PARLEY_LOGIN_WINDOW: [['auth', 'login_window_seconds'], 'number'],
  PARLEY_LOGIN_FAILURES_PER_USERNAME: [['auth', 'login_failures_per_username'], 'number'],
  PARLEY_LOGIN_ATTEMPTS_PER_IP: [['auth', 'login_attempts_per_ip'], 'number'],
  PARLEY_REGISTRATION_WINDOW: [['auth', 'registration_window_seconds'], 'number'],
  PARLEY_REGISTRATIONS_PER_IP: [['auth', 'registrations_per_ip'], 'number'],
  PARLEY_REGISTRATION_ATTEMPTS_PER_USERNAME: [['auth', 'registration_attempts_per_username'], 'number'],
  PARLEY_MAX_CONCURRENT_HASHES: [['auth', 'max_concurrent_hashes'], 'number'],
  PARLEY_HASH_QUEUE: [['auth', 'hash_queue'], 'number'],
  PARLEY_SFU_WORKERS: [['sfu', 'workers'], 'number'],
  PARLEY_SFU_WORKER_BIN: [['sfu', 'worker_bin'], 'string'],
  PARLEY_SFU_LISTEN_IP: [['sfu', 'listen_ip'], 'string'],
  PARLEY_SFU_ANNOUNCED_ADDRESS: [['sfu', 'announced_address'], 'string'],
  PARLEY_SFU_MIN_PORT: [['sfu', 'rtc_min_port'], 'number'],
  PARLEY_SFU_MAX_PORT: [['sfu', 'rtc_max_port'], 'number'],
  PARLEY_SFU_MAX_PARTICIPANTS: [['sfu', 'max_participants'], 'number'],
  PARLEY_SFU_MAX_ROOMS_PER_ACCOUNT: [['sfu', 'max_rooms_per_account'], 'number'],
  PARLEY_SFU_ROOM_LIFETIME: [['sfu', 'room_lifetime_seconds'], 'number'],
  PARLEY_SFU_RECONNECT_GRACE: [['sfu', 'reconnect_grace_seconds'], 'number'],
};

/**
 * Builds the configuration from an optional TOML text and the environment.
 *
 * @param toml the config file's text, or undefined for defaults only.
 * @param env environment variables (`PARLEY_*` overrides, see ENV_OVERRIDES).
 * @param source file name used in error messages.
 * @param cwd base for a relative `data_dir`.
 * @throws ConfigError naming the bad key, e.g. `turn.ttl_seconds: expected number`.
 */
export function parseConfig(
  toml: string | undefined,
  env: NodeJS.ProcessEnv = {},
  source = 'config',
  cwd = process.cwd(),
): ServerConfig {
  let raw: Record<string, unknown> = {};
  if (toml !== undefined) {
    try {
      raw = parseToml(toml) as Record<string, unknown>;
    } catch (e) {
      const where = e instanceof TomlError ? ` (line ${e.line}, column ${e.column})` : '';
      const first = (e instanceof Error ? e.message : String(e)).split('\n')[0];
      throw new ConfigError(`${source}: not valid TOML${where}: ${first}`);
    }
  }

  const fromEnv = new Map<string, string>();
  for (const [name, [path, kind]] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    let parsed: unknown = value;
    if (kind === 'number') parsed = /^\s*-?\d+(\.\d+)?\s*$/.test(value) ? Number(value) : value;
    if (kind === 'list')
      parsed = value
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    setPath(raw, path, parsed);
    fromEnv.set(path.join('.'), name);
  }

  const result = FileConfig.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        const prefix = issue.path.length ? `${issue.path.join('.')}.` : '';
        return `unknown key ${issue.keys.map((k) => `"${prefix}${k}"`).join(', ')}`;
      }
      const key = issue.path.join('.') || '(root)';
      const env = fromEnv.get(key);
      return `${key}${env ? ` (from ${env})` : ''}: ${issue.message}`;
    });
    throw new ConfigError(`${source}: ${lines.join('; ')}`);
  }
  const c = result.data;
  const dataDir = resolve(cwd, c.data_dir);
  return {
    listen: c.listen,
    dataDir,
    store: { url: c.store.url || undefined, poolSize: c.store.pool_size },
    cluster: c.cluster.redis_url
      ? { redisUrl: c.cluster.redis_url, nodeId: c.cluster.node_id || `${hostname()}-${process.pid}` }
      : undefined,
    trustProxy: c.trust_proxy.length > 0 ? c.trust_proxy : undefined,
    logLevel: c.log_level,
    ringTimeoutSeconds: c.ring_timeout_seconds,
    callGraceSeconds: c.call_grace_seconds,
    turn: {
      urls: c.turn.urls,
      secret: c.turn.secret,
      ttlSeconds: c.turn.ttl_seconds,
      provider: c.turn.provider,
      providerUrl: c.turn.provider_url,
      providerTimeoutMs: c.turn.provider_timeout_ms,
      requestsPerMinute: c.turn.requests_per_minute,
      requestBurst: c.turn.request_burst,
      experimentAccounts: c.turn.experiment_accounts,
      experimentUrls: c.turn.experiment_urls,
      regions: c.turn.regions.map((r) => ({
        name: r.name,
        urls: r.urls,
        secret: r.secret || c.turn.secret,
        clients: r.clients.map((v) => parseCidr(v)!),
      })),
      defaultRegion: c.turn.default_region || undefined,
    },
    stun: { urls: c.stun.urls },
    audit: {
      retentionDays: c.audit.retention_days,
      failureSummarySeconds: c.audit.failure_summary_seconds,
    },
    auth: {
      loginWindowSeconds: c.auth.login_window_seconds,
      loginFailuresPerUsername: c.auth.login_failures_per_username,
      loginAttemptsPerIp: c.auth.login_attempts_per_ip,
      registrationWindowSeconds: c.auth.registration_window_seconds,
      registrationsPerIp: c.auth.registrations_per_ip,
      registrationAttemptsPerUsername: c.auth.registration_attempts_per_username,
      maxConcurrentHashes: c.auth.max_concurrent_hashes,
      hashQueue: c.auth.hash_queue,
    },
    admin: { socket: c.admin.socket ? resolve(cwd, c.admin.socket) : join(dataDir, 'admin.sock') },
    limits: {
      messagesPerSecond: c.limits.messages_per_second,
      messageBurst: c.limits.message_burst,
      helloTimeoutSeconds: c.limits.hello_timeout_seconds,
    },
    sessions: { tokenTtlSeconds: c.sessions.token_ttl_seconds },
    policy: {
      callsPerMinute: c.policy.calls_per_minute,
      callBurst: c.policy.call_burst,
      maxCallsPerAccount: c.policy.max_calls_per_account,
      maxCalls: c.policy.max_calls,
      callLifetimeSeconds: c.policy.call_lifetime_seconds,
      maxCallLifetimeSeconds: c.policy.max_call_lifetime_seconds,
      lifetimeWarningSeconds: c.policy.lifetime_warning_seconds,
      onExpiry: c.policy.on_expiry,
      callBudgetSeconds: c.policy.call_budget_seconds,
      dailyBudgetSeconds: c.policy.daily_budget_seconds,
      budgetWarningPercent: c.policy.budget_warning_percent,
      hardStop: c.policy.hard_stop,
      firstCallApproval: c.policy.first_call_approval,
      approvalTimeoutSeconds: c.policy.approval_timeout_seconds,
      allowedAccounts: c.policy.allowed_accounts,
      blockedAccounts: c.policy.blocked_accounts,
    },
    sfu: {
      workers: c.sfu.workers,
      workerBin: c.sfu.worker_bin ? resolve(cwd, c.sfu.worker_bin) : '',
      listenIp: c.sfu.listen_ip,
      announcedAddress: c.sfu.announced_address,
      rtcMinPort: c.sfu.rtc_min_port,
      rtcMaxPort: c.sfu.rtc_max_port,
      maxParticipants: c.sfu.max_participants,
      maxRoomsPerAccount: c.sfu.max_rooms_per_account,
      roomLifetimeSeconds: c.sfu.room_lifetime_seconds,
      reconnectGraceMs: c.sfu.reconnect_grace_seconds * 1000,
    },
  };
}

/**
 * Loads the configuration the way `npm run server` does: the file named by
 * `configPath` (or `PARLEY_SERVER_CONFIG`; none is fine), then env overrides.
 * @throws ConfigError when the file cannot be read or a key is invalid.
 */
export function loadConfig(
  configPath: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): ServerConfig {
  const path = configPath ?? (env.PARLEY_SERVER_CONFIG || undefined);
  let text: string | undefined;
  if (path !== undefined) {
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'error';
      throw new ConfigError(`cannot read config file ${path}: ${code}`);
    }
  }
  return parseConfig(text, env, path ?? 'config');
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = obj;
  for (const key of path.slice(0, -1)) {
    const next = cur[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) cur[key] = {};
    cur = cur[key] as Record<string, unknown>;
  }
  cur[path[path.length - 1] as string] = value;
}

/** Config keys (dotted TOML names) that take effect only after a restart; every other key applies at `config.reload`. */
export const RESTART_KEYS = ['listen', 'data_dir', 'store.url', 'store.pool_size', 'cluster.redis_url', 'cluster.node_id', 'trust_proxy', 'admin.socket', 'sfu.workers', 'sfu.worker_bin'] as const;

/** Each config key (dotted TOML name) with how to read it from a ServerConfig. */
const KEYS: Record<string, (c: ServerConfig) => unknown> = {
  listen: (c) => c.listen,
  data_dir: (c) => c.dataDir,
  'store.url': (c) => c.store.url,
  'store.pool_size': (c) => c.store.poolSize,
  'cluster.redis_url': (c) => c.cluster?.redisUrl,
  'cluster.node_id': (c) => c.cluster?.nodeId,
  trust_proxy: (c) => c.trustProxy,
  log_level: (c) => c.logLevel,
  ring_timeout_seconds: (c) => c.ringTimeoutSeconds,
  call_grace_seconds: (c) => c.callGraceSeconds,
  'turn.urls': (c) => c.turn.urls,
  'turn.secret': (c) => c.turn.secret,
  'turn.ttl_seconds': (c) => c.turn.ttlSeconds,
  'turn.provider': (c) => c.turn.provider,
  'turn.provider_url': (c) => c.turn.providerUrl,
  'turn.provider_timeout_ms': (c) => c.turn.providerTimeoutMs,
  'turn.requests_per_minute': (c) => c.turn.requestsPerMinute,
  'turn.request_burst': (c) => c.turn.requestBurst,
  'turn.experiment_accounts': (c) => c.turn.experimentAccounts,
  'turn.experiment_urls': (c) => c.turn.experimentUrls,
  'turn.regions': (c) => c.turn.regions,
  'turn.default_region': (c) => c.turn.defaultRegion,
  'stun.urls': (c) => c.stun.urls,
  'audit.retention_days': (c) => c.audit.retentionDays,
  'audit.failure_summary_seconds': (c) => c.audit.failureSummarySeconds,
  'auth.login_window_seconds': (c) => c.auth.loginWindowSeconds,
  'auth.login_failures_per_username': (c) => c.auth.loginFailuresPerUsername,
  'auth.login_attempts_per_ip': (c) => c.auth.loginAttemptsPerIp,
  'auth.registration_window_seconds': (c) => c.auth.registrationWindowSeconds,
  'auth.registrations_per_ip': (c) => c.auth.registrationsPerIp,
  'auth.registration_attempts_per_username': (c) => c.auth.registrationAttemptsPerUsername,
  'auth.max_concurrent_hashes': (c) => c.auth.maxConcurrentHashes,
  'auth.hash_queue': (c) => c.auth.hashQueue,
  'admin.socket': (c) => c.admin.socket,
  'limits.messages_per_second': (c) => c.limits.messagesPerSecond,
  'limits.message_burst': (c) => c.limits.messageBurst,
  'limits.hello_timeout_seconds': (c) => c.limits.helloTimeoutSeconds,
  'sessions.token_ttl_seconds': (c) => c.sessions.tokenTtlSeconds,
  'policy.calls_per_minute': (c) => c.policy.callsPerMinute,
  'policy.call_burst': (c) => c.policy.callBurst,
  'policy.max_calls_per_account': (c) => c.policy.maxCallsPerAccount,
  'policy.max_calls': (c) => c.policy.maxCalls,
  'policy.call_lifetime_seconds': (c) => c.policy.callLifetimeSeconds,
  'policy.max_call_lifetime_seconds': (c) => c.policy.maxCallLifetimeSeconds,
  'policy.lifetime_warning_seconds': (c) => c.policy.lifetimeWarningSeconds,
  'policy.on_expiry': (c) => c.policy.onExpiry,
  'policy.call_budget_seconds': (c) => c.policy.callBudgetSeconds,
  'policy.daily_budget_seconds': (c) => c.policy.dailyBudgetSeconds,
  'policy.budget_warning_percent': (c) => c.policy.budgetWarningPercent,
  'policy.hard_stop': (c) => c.policy.hardStop,
  'policy.first_call_approval': (c) => c.policy.firstCallApproval,
  'policy.approval_timeout_seconds': (c) => c.policy.approvalTimeoutSeconds,
  'policy.allowed_accounts': (c) => c.policy.allowedAccounts,
  'policy.blocked_accounts': (c) => c.policy.blockedAccounts,
  'sfu.workers': (c) => c.sfu.workers,
  'sfu.worker_bin': (c) => c.sfu.workerBin,
  'sfu.listen_ip': (c) => c.sfu.listenIp,
  'sfu.announced_address': (c) => c.sfu.announcedAddress,
  'sfu.rtc_min_port': (c) => c.sfu.rtcMinPort,
  'sfu.rtc_max_port': (c) => c.sfu.rtcMaxPort,
  'sfu.max_participants': (c) => c.sfu.maxParticipants,
  'sfu.max_rooms_per_account': (c) => c.sfu.maxRoomsPerAccount,
  'sfu.room_lifetime_seconds': (c) => c.sfu.roomLifetimeSeconds,
  'sfu.reconnect_grace_seconds': (c) => c.sfu.reconnectGraceMs / 1000,
};

/**
 * Which keys differ between the running configuration and a newly loaded one,
 * split into those that can apply now and those that need a restart.
 * Values are never returned (a key such as `turn.secret` is only named).
 */
export function diffConfig(
  running: ServerConfig,
  next: ServerConfig,
): { changed: string[]; applicable: string[]; restartRequired: string[] } {
  const changed = Object.entries(KEYS)
    .filter(([, get]) => JSON.stringify(get(running)) !== JSON.stringify(get(next)))
    .map(([key]) => key);
  const restart = new Set<string>(RESTART_KEYS);
  return {
    changed,
    applicable: changed.filter((k) => !restart.has(k)),
    restartRequired: changed.filter((k) => restart.has(k)),
  };
}
