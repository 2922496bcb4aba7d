import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, diffConfig, parseConfig } from '../../server/config';
import { describePostgresError, describeStore, redactStoreUrl } from '../../server/db';

const cwd = '/srv/parley';

describe('server config', () => {
  it('starts from embedded defaults with no file and no environment', () => {
    expect(parseConfig(undefined, {}, 'config', cwd)).toEqual({
      listen: { host: '127.0.0.1', port: 8787 },
      dataDir: '/srv/parley/.parley/server',
      store: { url: undefined, poolSize: 10 },
      logLevel: 'info',
      ringTimeoutSeconds: 45,
      callGraceSeconds: 20,
      turn: {
        urls: [],
        secret: '',
        ttlSeconds: 600,
        provider: 'coturn',
        providerUrl: '',
        providerTimeoutMs: 3000,
        requestsPerMinute: 30,
        requestBurst: 10,
        experimentAccounts: [],
        experimentUrls: [],
        regions: [],
        defaultRegion: undefined,
      },
      stun: { urls: [] },
      audit: { retentionDays: 90, failureSummarySeconds: 300 },
      auth: {
        loginWindowSeconds: 900,
        loginFailuresPerUsername: 10,
        loginAttemptsPerIp: 100,
        registrationWindowSeconds: 3600,
        registrationsPerIp: 20,
        registrationAttemptsPerUsername: 5,
        maxConcurrentHashes: 0,
        hashQueue: 32,
      },
      admin: { socket: '/srv/parley/.parley/server/admin.sock' },
      limits: { messagesPerSecond: 50, messageBurst: 100, helloTimeoutSeconds: 10 },
      sessions: { tokenTtlSeconds: 2_592_000 },
      policy: {
        callsPerMinute: 10,
        callBurst: 20,
        maxCallsPerAccount: 5,
        maxCalls: 0,
        callLifetimeSeconds: 1800,
        maxCallLifetimeSeconds: 7200,
        lifetimeWarningSeconds: 300,
        onExpiry: 'terminate',
        callBudgetSeconds: 0,
        dailyBudgetSeconds: 0,
        budgetWarningPercent: 80,
        hardStop: true,
        firstCallApproval: false,
        approvalTimeoutSeconds: 300,
        allowedAccounts: [],
        blockedAccounts: [],
      },
      sfu: {
        workers: 0,
        workerBin: '',
        listenIp: '127.0.0.1',
        announcedAddress: '',
        rtcMinPort: 40000,
        rtcMaxPort: 49999,
        maxParticipants: 16,
        maxRoomsPerAccount: 3,
        roomLifetimeSeconds: 14400,
        reconnectGraceMs: 20_000,
      },
    });
  });

  it('reads [sfu]: workers, ports, listen and announced address, room size; the environment overrides; bad values name the key', () => {
    const toml = `
[sfu]
workers = 2
worker_bin = "bin/mediasoup-worker"
listen_ip = "0.0.0.0"
announced_address = "sfu.example.org"
rtc_min_port = 50000
rtc_max_port = 50999
max_participants = 8
max_rooms_per_account = 5
room_lifetime_seconds = 600
reconnect_grace_seconds = 5
`;
    expect(parseConfig(toml, {}, 'f.toml', cwd).sfu).toEqual({
      workers: 2,
      workerBin: '/srv/parley/bin/mediasoup-worker',
      listenIp: '0.0.0.0',
      announcedAddress: 'sfu.example.org',
      rtcMinPort: 50000,
      rtcMaxPort: 50999,
      maxParticipants: 8,
      maxRoomsPerAccount: 5,
      roomLifetimeSeconds: 600,
      reconnectGraceMs: 5000,
    });
    const env = {
      PARLEY_SFU_WORKERS: '1',
      PARLEY_SFU_ANNOUNCED_ADDRESS: '203.0.113.7',
      PARLEY_SFU_MAX_PARTICIPANTS: '4',
      PARLEY_SFU_MAX_ROOMS_PER_ACCOUNT: '0',
      PARLEY_SFU_ROOM_LIFETIME: '30',
      PARLEY_SFU_RECONNECT_GRACE: '0',
    };
    expect(parseConfig(toml, env, 'f.toml', cwd).sfu).toMatchObject({
      workers: 1,
      announcedAddress: '203.0.113.7',
      maxParticipants: 4,
      maxRoomsPerAccount: 0,
      roomLifetimeSeconds: 30,
      reconnectGraceMs: 0,
    });
    expect(() => parseConfig('[sfu]\nroom_lifetime_seconds = -1', {}, 'f.toml', cwd)).toThrow(/sfu\.room_lifetime_seconds/);
    expect(() => parseConfig('[sfu]\nreconnect_grace_seconds = -1', {}, 'f.toml', cwd)).toThrow(/sfu\.reconnect_grace_seconds/);
    expect(() => parseConfig('[sfu]\nlisten_ip = "localhost"', {}, 'f.toml', cwd)).toThrow(/sfu\.listen_ip/);
    expect(() => parseConfig('[sfu]\nrtc_min_port = 50000\nrtc_max_port = 40000', {}, 'f.toml', cwd)).toThrow(
      /sfu\.rtc_min_port: must not be above sfu\.rtc_max_port/,
    );
    expect(() => parseConfig('[sfu]\nmax_participants = 1', {}, 'f.toml', cwd)).toThrow(/sfu\.max_participants/);
    expect(() => parseConfig('[sfu]\nworkerz = 1', {}, 'f.toml', cwd)).toThrow(/unknown key "sfu\.workerz"/);
  });

  it('reads audit retention, the admin socket and message limits; PARLEY_ADMIN_SOCKET overrides', () => {
    const toml = `
[audit]
retention_days = 7
[admin]
socket = "run/admin.sock"
[limits]
messages_per_second = 5
message_burst = 10
`;
    const c = parseConfig(toml, {}, 'f.toml', cwd);
    expect(c.audit).toEqual({ retentionDays: 7, failureSummarySeconds: 300 });
    expect(c.admin).toEqual({ socket: '/srv/parley/run/admin.sock' });
    expect(c.limits).toEqual({ messagesPerSecond: 5, messageBurst: 10, helloTimeoutSeconds: 10 });
    expect(parseConfig(toml, { PARLEY_AUDIT_FAILURE_SUMMARY_SECONDS: '2' }, 'f.toml', cwd).audit.failureSummarySeconds).toBe(2);
    expect(parseConfig(toml, { PARLEY_HELLO_TIMEOUT: '2.5' }, 'f.toml', cwd).limits.helloTimeoutSeconds).toBe(2.5);
    expect(
      parseConfig(toml, { PARLEY_ADMIN_SOCKET: '/tmp/x.sock' }, 'f.toml', cwd).admin.socket,
    ).toBe('/tmp/x.sock');
    expect(() => parseConfig('[audit]\nretention_days = 0', {}, 'f.toml', cwd)).toThrow(
      /audit\.retention_days/,
    );
  });

  it('reads the [auth] front-door limits from TOML, each overridable from the environment', () => {
    const toml = `
[auth]
login_window_seconds = 60
login_failures_per_username = 3
login_attempts_per_ip = 0
registration_window_seconds = 120
registrations_per_ip = 4
registration_attempts_per_username = 2
max_concurrent_hashes = 2
hash_queue = 8
[audit]
failure_summary_seconds = 30
`;
    expect(parseConfig(toml, {}, 'f.toml', cwd).auth).toEqual({
      loginWindowSeconds: 60,
      loginFailuresPerUsername: 3,
      loginAttemptsPerIp: 0,
      registrationWindowSeconds: 120,
      registrationsPerIp: 4,
      registrationAttemptsPerUsername: 2,
      maxConcurrentHashes: 2,
      hashQueue: 8,
    });
    const env = {
      PARLEY_LOGIN_WINDOW: '5',
      PARLEY_LOGIN_FAILURES_PER_USERNAME: '6',
      PARLEY_LOGIN_ATTEMPTS_PER_IP: '7',
      PARLEY_REGISTRATION_WINDOW: '8',
      PARLEY_REGISTRATIONS_PER_IP: '9',
      PARLEY_REGISTRATION_ATTEMPTS_PER_USERNAME: '10',
      PARLEY_MAX_CONCURRENT_HASHES: '1',
      PARLEY_HASH_QUEUE: '0',
      PARLEY_AUDIT_FAILURE_SUMMARY_SECONDS: '2',
    };
    const c = parseConfig(toml, env, 'f.toml', cwd);
    expect(c.auth).toEqual({
      loginWindowSeconds: 5,
      loginFailuresPerUsername: 6,
      loginAttemptsPerIp: 7,
      registrationWindowSeconds: 8,
      registrationsPerIp: 9,
      registrationAttemptsPerUsername: 10,
      maxConcurrentHashes: 1,
      hashQueue: 0,
    });
    expect(c.audit.failureSummarySeconds).toBe(2);
    expect(() => parseConfig('[auth]\nlogin_window_seconds = 0', {}, 'f.toml', cwd)).toThrow(/auth\.login_window_seconds/);
    expect(() => parseConfig(undefined, { PARLEY_HASH_QUEUE: '-1' }, 'f.toml', cwd)).toThrow(/auth\.hash_queue \(from PARLEY_HASH_QUEUE\)/);
  });

  it('the shipped example file parses and equals the defaults', () => {
    const text = readFileSync(
      fileURLToPath(new URL('../../server/parley-server.example.toml', import.meta.url)),
      'utf8',
    );
    expect(parseConfig(text, {}, 'example', cwd)).toEqual(
      parseConfig(undefined, {}, 'config', cwd),
    );
  });

  it('reads a TOML file and lets the environment override it', () => {
    const toml = `
listen = "0.0.0.0:9000"
data_dir = "/var/lib/parley"
ring_timeout_seconds = 30
[turn]
urls = ["turn:a:3478"]
secret = "file-secret"
ttl_seconds = 900
[stun]
urls = ["stun:a:3478"]
`;
    const c = parseConfig(
      toml,
      {
        PARLEY_SERVER_LISTEN: '[::1]:0',
        PARLEY_TURN_URLS: 'turn:b:3478?transport=udp, turn:b:3478?transport=tcp',
        PARLEY_TURN_SECRET: 'env-secret',
        PARLEY_TURN_TTL: '120',
        PARLEY_RING_TIMEOUT: '1.5',
      },
      'f.toml',
      cwd,
    );
    expect(c.listen).toEqual({ host: '::1', port: 0 });
    expect(c.dataDir).toBe('/var/lib/parley');
    expect(c.ringTimeoutSeconds).toBe(1.5);
    expect(c.turn).toMatchObject({
      urls: ['turn:b:3478?transport=udp', 'turn:b:3478?transport=tcp'],
      secret: 'env-secret',
      ttlSeconds: 120,
    });
    expect(c.stun.urls).toEqual(['stun:a:3478']);
  });

  it.each([
    ['unknown top-level key', 'ring_timeout = 3', /unknown key "ring_timeout"/],
    ['unknown nested key', '[turn]\nttl = 3', /unknown key "turn.ttl"/],
    ['wrong type', 'ring_timeout_seconds = "45"', /ring_timeout_seconds: .*number/],
    ['bad listen address', 'listen = "localhost"', /listen: expected "host:port"/],
    ['port out of range', 'listen = "127.0.0.1:70000"', /listen: /],
    [
      'turn without secret',
      '[turn]\nurls = ["turn:x:3478"]',
      /turn.secret: required when turn.urls is set/,
    ],
    ['not a TURN url', '[turn]\nurls = ["http://x"]\nsecret = "s"', /turn.urls.0: /],
    ['TOML syntax', 'listen = ', /f.toml: not valid TOML \(line 1/],
  ])('rejects %s with a message naming it', (_name, toml, message) => {
    expect(() => parseConfig(toml, {}, 'f.toml', cwd)).toThrow(ConfigError);
    expect(() => parseConfig(toml, {}, 'f.toml', cwd)).toThrow(message);
  });

  it('names the environment variable behind a bad override', () => {
    expect(() => parseConfig(undefined, { PARLEY_TURN_TTL: 'ten' }, 'config', cwd)).toThrow(
      /turn.ttl_seconds \(from PARLEY_TURN_TTL\)/,
    );
  });

  it('never puts the TURN secret into an error message', () => {
    try {
      parseConfig('[turn]\nsecret = "s3cr3t-value"\nttl_seconds = 1', {}, 'f.toml', cwd);
      expect.unreachable();
    } catch (e) {
      expect((e as Error).message).toContain('turn.ttl_seconds');
      expect((e as Error).message).not.toContain('s3cr3t-value');
    }
  });

  it('takes the store from [store] url or PARLEY_STORE_URL; empty is SQLite in data_dir', () => {
    const url = 'postgres://parley:pw@db.internal:5433/parley';
    expect(parseConfig(`[store]\nurl = "${url}"\npool_size = 4`, {}, 'f.toml', cwd).store).toEqual({
      url,
      poolSize: 4,
    });
    expect(parseConfig(undefined, { PARLEY_STORE_URL: url }, 'config', cwd).store.url).toBe(url);
    expect(parseConfig('[store]\nurl = ""', {}, 'f.toml', cwd).store.url).toBeUndefined();
  });

  it('needs a restart for a new store, and names it without its value', () => {
    const a = parseConfig(undefined, {}, 'a', cwd);
    const b = parseConfig('[store]\nurl = "postgres://parley:s3cr3t-pw@db/parley"', {}, 'b', cwd);
    const diff = diffConfig(a, b);
    expect(diff).toEqual({ changed: ['store.url'], applicable: [], restartRequired: ['store.url'] });
    expect(JSON.stringify(diff)).not.toContain('s3cr3t-pw');
  });

  it.each([
    ['not a URL', 'host=db password=s3cr3t-pw', /: not a URL; expected/],
    ['another engine', 'mysql://parley:s3cr3t-pw@db/parley', /: only PostgreSQL is supported \("postgres:\/\/…", got "mysql:\/\/…"\)/],
    ['no database', 'postgres://parley:s3cr3t-pw@db:5432/', /: name the database/],
    ['no user', 'postgres://db:5432/parley', /: name the user/],
  ])('rejects a store URL that is %s, without repeating it', (_name, url, message) => {
    const attempt = () => parseConfig(undefined, { PARLEY_STORE_URL: url }, 'config', cwd);
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(message);
    expect(attempt).toThrow(/store.url \(from PARLEY_STORE_URL\)/);
    try {
      attempt();
    } catch (e) {
      expect((e as Error).message).not.toContain('s3cr3t-pw');
    }
  });
});

describe('store URLs in messages', () => {
  it('redacts the password wherever it sits', () => {
    expect(redactStoreUrl('postgres://parley:s3cr3t@127.0.0.1:5433/parley')).toBe(
      'postgres://parley:***@127.0.0.1:5433/parley',
    );
    expect(redactStoreUrl('postgres://parley@h/p?password=s3cr3t&sslmode=require')).toBe(
      'postgres://parley@h/p?password=***&sslmode=require',
    );
    expect(redactStoreUrl('postgres://parley:s3cr3t@[bad')).toBe('(invalid URL)');
    expect(describeStore('/var/lib/parley', undefined)).toBe('/var/lib/parley/parley.sqlite');
  });

  it('says in words why PostgreSQL could not be used, with host and port and no password', () => {
    const url = 'postgres://parley:s3cr3t@127.0.0.1:5433/parley';
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5433'), {
      code: 'ECONNREFUSED',
    });
    expect(describePostgresError(url, refused)).toBe(
      'cannot reach PostgreSQL at 127.0.0.1:5433: connection refused',
    );
    expect(describePostgresError(url, new AggregateError([refused]))).toBe(
      'cannot reach PostgreSQL at 127.0.0.1:5433: connection refused',
    );
    const login = Object.assign(new Error('password authentication failed for user "parley"'), {
      code: '28P01',
    });
    expect(describePostgresError(url, login)).toBe(
      'PostgreSQL at 127.0.0.1:5433 refused the login of "parley": password authentication failed for user "parley"',
    );
    const missing = Object.assign(new Error('database "parley" does not exist'), { code: '3D000' });
    expect(describePostgresError(url, missing)).toMatch(/has no database "parley": create it/);
    expect(describePostgresError(url, new Error(`boom at ${url}`))).not.toContain('s3cr3t');
  });
});
