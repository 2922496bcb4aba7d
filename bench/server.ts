/**
 * `npm run bench:server [-- --connections 20000] [-- --pairs 10] [-- --seconds 15] [-- --json]`:
 * how much signaling load the real server holds on this machine.
 *
 * 1. Seeds the store of a fresh data folder with `connections` accounts, each
 *    with one device and a known token (straight into SQLite through the
 *    server's own migrations: 20,000 argon2 logins would take minutes and
 *    measure password hashing, not signaling), plus `pairs` caller/callee
 *    accounts that are contacts.
 * 2. Starts the real server (`test/harness/server.ts`) on loopback and opens
 *    one WebSocket per idle device, each authenticated with `hello`; counts
 *    those still open after a settle pause: **connections held**.
 * 3. With all of them connected, `pairs` callers call their callees in a loop
 *    for `seconds`: invite → incoming → ringing → answer → answered → hangup.
 *    **Call set-ups per second** = answered calls / elapsed time;
 *    **p99 invite-to-ringing** = from sending `call.invite` to the caller
 *    receiving `call.ringing` (both on this process's clock).
 *
 * The per-connection and per-account limits are raised for the run (policy and
 * message rates), because the benchmark measures capacity, not the limits.
 * The open-file limit must allow two sockets per connection (client and server
 * side); `npm run bench:server` raises it with `ulimit -n` where allowed, and the
 * run is capped (and says so) where it is not.
 *
 * With `--json` the last line is exactly
 * `{"connections_held":…,"call_setups_per_s":…,"invite_to_ringing_p99_ms":…}`.
 *
 * `--nodes 3`: the same against three server processes on one PostgreSQL and
 * one Redis (see runCluster), printing
 * `{"nodes":3,"connections_held":…,"call_setups_per_s":…,"single_node_call_setups_per_s":…,"invite_to_ringing_p99_ms":…,"cross_node_share":…}`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { execSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { PROTOCOL_VERSION } from '../common/protocol/signaling';
import { plainEnvelope } from '../common/protocol/envelope';
import { hashToken } from '../server/accounts';
import { openDatabase } from '../server/db';
import { makeTempDir, removeTempDir } from '../test/harness/process';
import { adminRequest, startServer, type RunningServer } from '../test/harness/server';
import { SignalClient } from '../test/harness/signal-client';
import { percentile } from './lib';

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '20000' },
    pairs: { type: 'string', default: '10' },
    seconds: { type: 'string', default: '15' },
    json: { type: 'boolean', default: false },
    nodes: { type: 'string', default: '1' },
  },
});
const NODES = Number(args.nodes);
const PAIRS = Number(args.pairs);
const SECONDS = Number(args.seconds);
const log = (m: string) => process.stderr.write(`[bench:server] ${m}\n`);

/** The soft open-file limit of this process (inherited by the server child). */
function fdLimit(): number {
  try {
    return Number(execSync('ulimit -n', { shell: '/bin/sh' }).toString().trim()) || 1024;
  } catch {
    return 1024;
  }
}

interface Device {
  username: string;
  accountId: string;
  deviceId: string;
  token: string;
}

/** Accounts with one device each, written straight into the store; `contacts` pairs become contacts. */
async function seed(
  dataDir: string,
  idle: number,
  pairs: number,
  storeUrl?: string,
): Promise<{ idle: Device[]; pairs: [Device, Device][] }> {
  const db = await openDatabase(dataDir, storeUrl ? { url: storeUrl } : {});
  const now = Date.now();
  const make = (username: string): Device => ({
    username,
    accountId: randomUUID(),
    deviceId: randomUUID(),
    token: randomBytes(32).toString('base64url'),
  });
  const idleDevices = Array.from({ length: idle }, (_, i) => make(`idle${i}`));
  const pairDevices = Array.from(
    { length: pairs },
    (_, i) => [make(`caller${i}`), make(`callee${i}`)] as [Device, Device],
  );
  const all = [...idleDevices, ...pairDevices.flat()];
  await db.transaction().execute(async (tx) => {
    for (let i = 0; i < all.length; i += 500) {
      const chunk = all.slice(i, i + 500);
      await tx
        .insertInto('accounts')
        // Not an argon2 hash: these accounts never log in with a password.
        .values(
          chunk.map((d) => ({
            id: d.accountId,
            username: d.username,
            password_hash: 'bench-no-password',
            created_at: now,
          })),
        )
        .execute();
      await tx
        .insertInto('devices')
        .values(
          chunk.map((d) => ({
            id: d.deviceId,
            account_id: d.accountId,
            name: 'bench',
            token_hash: hashToken(d.token),
            created_at: now,
            last_seen_at: null,
            expires_at: now + 86_400_000,
          })),
        )
        .execute();
    }
    for (const [a, b] of pairDevices) {
      await tx
        .insertInto('contacts')
        .values([
          { account_id: a.accountId, contact_id: b.accountId, created_at: now },
          { account_id: b.accountId, contact_id: a.accountId, created_at: now },
        ])
        .execute();
    }
  });
  await db.destroy();
  return { idle: idleDevices, pairs: pairDevices };
}

/** Opens one idle authenticated connection; resolves with the socket once `hello` succeeded. */
function openIdle(wsUrl: string, d: Device): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    const fail = (e: Error) => {
      ws.terminate();
      reject(e);
    };
    ws.once('error', fail);
    ws.once('open', () =>
      ws.send(
        JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'hello',
          params: { protocol: PROTOCOL_VERSION, deviceId: d.deviceId, token: d.token },
        }),
      ),
    );
    ws.once('message', (data) => {
      const reply = JSON.parse(data.toString()) as {
        result?: unknown;
        error?: { message: string };
      };
      if (reply.result) {
        ws.off('error', fail);
        ws.on('error', () => {});
        resolve(ws);
      } else fail(new Error(reply.error?.message ?? 'hello failed'));
    });
  });
}

async function holdConnections(
  servers: RunningServer | RunningServer[],
  devices: Device[],
): Promise<{ sockets: WebSocket[]; failed: number; firstError?: string; ms: number }> {
  const list = Array.isArray(servers) ? servers : [servers];
  const sockets: WebSocket[] = [];
  let failed = 0;
  let firstError: string | undefined;
  const started = performance.now();
  const BATCH = 250;
  for (let i = 0; i < devices.length; i += BATCH) {
    const results = await Promise.allSettled(
      devices.slice(i, i + BATCH).map((d, j) => openIdle(list[(i + j) % list.length]!.wsUrl, d)),
    );
    for (const r of results) {
      if (r.status === 'fulfilled') sockets.push(r.value);
      else {
        failed++;
        firstError ??= (r.reason as Error).message;
      }
    }
    if ((i / BATCH) % 20 === 0) log(`${sockets.length} connected…`);
  }
  return { sockets, failed, firstError, ms: performance.now() - started };
}

/** Callers call their callees in a loop until `untilMs`; returns set-ups and invite → ringing times. */
async function callLoop(
  servers: RunningServer | RunningServer[],
  pairs: [Device, Device][],
  untilMs: number,
): Promise<{ setups: number; ringingMs: number[]; errors: number; crossNode: number }> {
  const list = Array.isArray(servers) ? servers : [servers];
  let crossNode = 0;
  const offer = plainEnvelope({ type: 'offer', sdp: 'v=0 bench-offer' });
  const answer = plainEnvelope({ type: 'answer', sdp: 'v=0 bench-answer' });
  const ringingMs: number[] = [];
  let setups = 0;
  let errors = 0;
  await Promise.all(
    pairs.map(async ([a, b], i) => {
      // With several nodes: caller and callee of a pair on different nodes (2i, 2i+1 round robin).
      const callerNode = list[(2 * i) % list.length]!;
      const calleeNode = list[(2 * i + 1) % list.length]!;
      const cross = callerNode !== calleeNode;
      const caller = await SignalClient.connect(callerNode.wsUrl);
      const callee = await SignalClient.connect(calleeNode.wsUrl);
      await caller.hello(a);
      await callee.hello(b);
      while (performance.now() < untilMs) {
        const callId = randomUUID();
        try {
          const t0 = performance.now();
          await caller.request('call.invite', { callId, callee: b.username, envelope: offer });
          await callee.nextNotification('call.incoming', { callId });
          await callee.request('call.ringing', { callId });
          await caller.nextNotification('call.ringing', { callId });
          ringingMs.push(performance.now() - t0);
          await callee.request('call.answer', { callId, envelope: answer });
          await caller.nextNotification('call.answered', { callId });
          setups++;
          if (cross) crossNode++;
          await caller.request('call.hangup', { callId });
          await callee.nextNotification('call.ended', { callId });
        } catch {
          errors++;
        }
      }
      await Promise.all([caller.close(), callee.close()]);
    }),
  );
  return { setups, ringingMs, errors, crossNode };
}

/** Resident memory of a process, MiB (from /proc). */
function rssMiB(pid: number): number {
  try {
    const status = execSync(`grep VmRSS /proc/${pid}/status`).toString();
    return Math.round(Number(/(\d+)/.exec(status)?.[1] ?? 0) / 1024);
  } catch {
    return NaN;
  }
}

/** The config of a benchmark server: limits raised (capacity is measured, not the limits). */
const benchToml = (level: string) =>
  [
    `log_level = "${level}"`,
    '[limits]',
    'messages_per_second = 100000',
    'message_burst = 100000',
    '[policy]',
    'calls_per_minute = 100000',
    'call_burst = 100000',
  ].join('\n');

/** Starts one server (quietened to warnings once listening: config.reload applies log_level live). */
async function startQuiet(env: Record<string, string>): Promise<RunningServer> {
  const server = await startServer({ configToml: benchToml('info'), env });
  writeFileSync(server.configFile!, benchToml('warn'));
  await adminRequest(server.adminSocket, 'config.reload');
  return server;
}

/** One calling phase against `servers`: set-ups per second, p99 invite → ringing, share across nodes. */
async function measureCalls(servers: RunningServer[], pairs: [Device, Device][]) {
  const t0 = performance.now();
  const calls = await callLoop(servers, pairs, t0 + SECONDS * 1000);
  const elapsed = (performance.now() - t0) / 1000;
  const sorted = [...calls.ringingMs].sort((x, y) => x - y);
  log(
    `${servers.length} node(s): ${calls.setups} set-ups in ${elapsed.toFixed(1)} s (${calls.errors} errors); invite → ringing p50 ${percentile(sorted, 50).toFixed(1)} ms, p99 ${percentile(sorted, 99).toFixed(1)} ms; RSS ${servers.map((s) => rssMiB(s.pid)).join('/')} MiB`,
  );
  return {
    perSecond: Math.round((calls.setups / elapsed) * 10) / 10,
    p99: Math.round(percentile(sorted, 99) * 10) / 10,
    crossShare: calls.setups > 0 ? Math.round((calls.crossNode / calls.setups) * 100) / 100 : 0,
  };
}

/**
 * `--nodes N` (N > 1): one PostgreSQL and one Redis started here (test/harness),
 * the store seeded once; first ONE server process on that store without Redis
 * (the single-node figure, same run, same store), then N nodes sharing the
 * store and Redis, idle connections spread round robin and each calling pair
 * split across two nodes.
 */
async function runCluster(): Promise<void> {
  const limit = fdLimit();
  const wanted = Number(args.connections);
  const connections = Math.min(wanted, limit - 300 - 4 * PAIRS * 2);
  if (connections < wanted) log(`open-file limit is ${limit}; holding ${connections} connections instead of ${wanted}`);
  const { startPostgres } = await import('../test/harness/postgres');
  const { startRedis } = await import('../test/harness/redis');
  const pg = await startPostgres();
  const redis = await startRedis();
  const dir = makeTempDir('bench-cluster');
  const servers: RunningServer[] = [];
  try {
    const storeUrl = await pg.createDatabase('parley_bench');
    log(`seeding ${connections} idle devices and ${PAIRS} calling pairs into PostgreSQL…`);
    const seeded = await seed(dir, connections, PAIRS, storeUrl);

    log('single node (same store, no Redis)…');
    const single = await startQuiet({ PARLEY_STORE_URL: storeUrl });
    const one = await measureCalls([single], seeded.pairs);
    await single.stop(15_000);

    log(`${NODES} nodes on one PostgreSQL and one Redis…`);
    servers.push(
      await startQuiet({ PARLEY_STORE_URL: storeUrl, PARLEY_CLUSTER_REDIS_URL: redis.url, PARLEY_NODE_ID: 'n1' }),
    );
    for (let i = 2; i <= NODES; i++)
      servers.push(
        await startQuiet({ PARLEY_STORE_URL: storeUrl, PARLEY_CLUSTER_REDIS_URL: redis.url, PARLEY_NODE_ID: `n${i}` }),
      );
    const held = await holdConnections(servers, seeded.idle);
    await new Promise((r) => setTimeout(r, 2000));
    const open = held.sockets.filter((s) => s.readyState === WebSocket.OPEN).length;
    log(`${open} connections held across ${NODES} nodes (${held.failed} failed${held.firstError ? `, first: ${held.firstError}` : ''}) after ${(held.ms / 1000).toFixed(1)} s`);
    const many = await measureCalls(servers, seeded.pairs);
    const stillOpen = held.sockets.filter((s) => s.readyState === WebSocket.OPEN).length;
    for (const s of held.sockets) s.terminate();
    log(
      `machine: ${cpus().length} cores (${cpus()[0]?.model.trim()}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, open-file limit ${limit}`,
    );
    const result = {
      nodes: NODES,
      connections_held: Math.min(open, stillOpen),
      call_setups_per_s: many.perSecond,
      single_node_call_setups_per_s: one.perSecond,
      invite_to_ringing_p99_ms: many.p99,
      cross_node_share: many.crossShare,
    };
    if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else
      process.stdout.write(
        `${NODES} nodes: connections held ${result.connections_held}, call set-ups ${result.call_setups_per_s}/s (one node ${result.single_node_call_setups_per_s}/s), invite→ringing p99 ${result.invite_to_ringing_p99_ms} ms, ${Math.round(result.cross_node_share * 100)} % across nodes\n`,
      );
  } finally {
    await Promise.all(servers.map((s) => s.stop(15_000)));
    await redis.stop();
    await pg.stop();
    removeTempDir(dir);
  }
}

async function main(): Promise<void> {
  if (NODES > 1) return runCluster();
  const limit = fdLimit();
  // Each connection costs one descriptor here and one in the server; keep ~300 for everything else.
  const wanted = Number(args.connections);
  const connections = Math.min(wanted, limit - 300 - 4 * PAIRS);
  if (connections < wanted) {
    log(
      `open-file limit is ${limit} (ulimit -n); holding ${connections} connections instead of ${wanted}`,
    );
  }
  const dir = makeTempDir('bench-server');
  let server: RunningServer | undefined;
  try {
    log(`seeding ${connections} idle devices and ${PAIRS} calling pairs…`);
    const seeded = await seed(dir, connections, PAIRS);
    const toml = (level: string) =>
      [
        `log_level = "${level}"`,
        '[limits]',
        'messages_per_second = 100000',
        'message_burst = 100000',
        '[policy]',
        'calls_per_minute = 100000',
        'call_burst = 100000',
      ].join('\n');
    server = await startServer({ dataDir: dir, configToml: toml('info') });
    // Two info lines per connection would make this process parse 40,000 log lines:
    // from here on the server logs warnings only (config.reload applies log_level live).
    writeFileSync(server.configFile!, toml('warn'));
    await adminRequest(server.adminSocket, 'config.reload');
    log(`server pid ${server.pid} at ${server.url}; opening ${connections} idle connections…`);
    const held = await holdConnections(server, seeded.idle);
    await new Promise((r) => setTimeout(r, 2000));
    const open = held.sockets.filter((s) => s.readyState === WebSocket.OPEN).length;
    log(
      `${open} connections held (${held.failed} failed${held.firstError ? `, first: ${held.firstError}` : ''}) after ${(held.ms / 1000).toFixed(1)} s; server RSS ${rssMiB(server.pid)} MiB`,
    );

    log(`${PAIRS} pairs calling for ${SECONDS} s with those connections open…`);
    const t0 = performance.now();
    const calls = await callLoop(server, seeded.pairs, t0 + SECONDS * 1000);
    const elapsed = (performance.now() - t0) / 1000;
    const sorted = [...calls.ringingMs].sort((x, y) => x - y);
    const stillOpen = held.sockets.filter((s) => s.readyState === WebSocket.OPEN).length;
    const result = {
      connections_held: Math.min(open, stillOpen),
      call_setups_per_s: Math.round((calls.setups / elapsed) * 10) / 10,
      invite_to_ringing_p99_ms: Math.round(percentile(sorted, 99) * 10) / 10,
    };
    log(
      `${calls.setups} set-ups in ${elapsed.toFixed(1)} s (${calls.errors} errors); invite → ringing p50 ${percentile(sorted, 50).toFixed(1)} ms, p99 ${result.invite_to_ringing_p99_ms} ms; idle connections still open: ${stillOpen}; server RSS ${rssMiB(server.pid)} MiB`,
    );
    log(
      `machine: ${cpus().length} cores (${cpus()[0]?.model.trim()}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, open-file limit ${limit}`,
    );
    for (const s of held.sockets) s.terminate();
    if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else
      process.stdout.write(
        `connections held ${result.connections_held}, call set-ups ${result.call_setups_per_s}/s, invite→ringing p99 ${result.invite_to_ringing_p99_ms} ms\n`,
      );
  } finally {
    await server?.stop(15_000);
    removeTempDir(dir);
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    log(`failed: ${e instanceof Error ? e.stack : String(e)}`);
    process.exit(1);
  },
);
