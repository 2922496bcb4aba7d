import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger } from 'fastify';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { ParleyError } from '../common/errors';
import { Accounts } from './accounts';
import { startAdminSocket, toAdminCall, type AdminSocket } from './admin';
import { AuditLog, DAY_MS, type AuditInput } from './audit';
import { ConfigError, diffConfig, type ServerConfig } from './config';
import { DeviceLinks } from './device-links';
import { CallerApprovals } from './approvals';
import { Contacts } from './contacts';
import { OpenCalls, type RecoveredCall } from './open-calls';
import { CallResumption } from './resume';
import { CallPolicy } from './policy';
import { RelayService } from './relays';
import { describeStore, openDatabase, storeConnections, type DB } from './db';
import { registerHttpRoutes } from './http';
import { Cluster, createLimitsClient, type GatherKind } from './cluster';
import { Hub, type HubEvent } from './hub';
import { createLogger } from './log';
import { ServerMetrics } from './metrics';
import { registerOpsRoutes } from './ops';
import { SIGNAL_MODULES, serveSignalSocket } from './signal/connection';
import type { SignalDeps } from './signal/module';
import { loadInterceptor } from './intercept';
import { FrontDoor, HashGate } from './front-door';
import { RoomProxy } from './sfu/room-proxy';
import { Sfu } from './sfu/sfu';
import { RoomInvitations } from './sfu/invitations';

/**
 * Largest WebSocket frame ws accepts before closing the connection (1009),
 * bytes. Well above MAX_MESSAGE_BYTES (64 KiB) so that moderately oversized
 * frames get a JSON-RPC `payload_too_large` and the connection stays up.
 */
export const WS_MAX_PAYLOAD = 1024 * 1024;

/** Interval between WebSocket pings; a client that misses one is dropped, ms. */
const HEARTBEAT_MS = 30_000;
/** How long a drain waits for its sockets to go before closing the rest, ms. */
const DRAIN_DEADLINE_MS = 30_000;
/**
 * A draining node answers `/readyz` 503 `draining` for at least this long
 * before it stops listening, ms: a health checker polling every second sees
 * why the node went (a refused connection reads as a crash).
 */
const DRAIN_NOTICE_MS = 1500;

/** A built, not yet listening, server. */
export interface ParleyServer {
  /** Starts listening on `config.listen`; resolves to the base URL (e.g. `http://127.0.0.1:41234`) and logs "listening". */
  listen(): Promise<string>;
  /**
   * Graceful shutdown: /readyz turns 503, every call ends with `failed` for
   * all its parties (audited with cause `server_shutdown`), every WebSocket
   * closes (1001) after those notifications, the admin socket goes, pending
   * audit records are written and the store closes. Idempotent.
   */
  close(): Promise<void>;
  /**
   * Drain for a rolling restart (several nodes; docs/deploy.md): `/readyz`
   * turns 503 `draining` and new signaling sockets are refused with 503 (so
   * nginx sends them to another node), this node's group rooms end
   * (`server_shutdown`: a room cannot move), another node takes its calls
   * over at once (server/cluster.ts handOver), and every socket is closed
   * with 1012 so that its client reconnects through the front address,
   * where its call resumes. Resolves once the sockets are gone (or
   * `deadlineMs` passed) and the server has closed, then runs
   * `options.onDrained`. With one node (no cluster) it is {@link close}.
   * Idempotent.
   */
  drain(deadlineMs?: number): Promise<void>;
  /** True once a drain began. */
  readonly draining: boolean;
  /** Base URL once listening, else undefined. */
  readonly url: string | undefined;
  readonly hub: Hub;
  readonly db: Kysely<DB>;
  readonly log: Logger;
  readonly audit: AuditLog;
  readonly metrics: ServerMetrics;
  /** The SFU for group calls (its workers start with the first room). */
  readonly sfu: Sfu;
  /** The running configuration (config.reload updates it in place). */
  readonly config: ServerConfig;
}

/**
 * After a crash, how long the two devices of an answered call have to say
 * hello again listing it before it ends `failed`, ms. Clients reconnect with
 * a 0.5 s back-off doubling per failure (main/core/signaling-client.ts), so a
 * server back within a few seconds sees both well inside 10 s.
 */
export const RESUME_GRACE_MS = 10_000;

/** The audit record for a hub event (call records are keyed by the device that acted). */
function auditOfHubEvent(e: HubEvent): AuditInput | undefined {
  switch (e.event) {
    case 'call.invited':
      return {
        event: 'call.created',
        accountId: e.caller.accountId,
        deviceId: e.caller.deviceId,
        callId: e.callId,
        detail: {
          callee: e.callee.username,
          calleeAccountId: e.callee.accountId,
          devices: e.devices,
        },
      };
    case 'call.busy':
      return {
        event: 'call.busy',
        accountId: e.caller.accountId,
        deviceId: e.caller.deviceId,
        callId: e.callId,
        detail: { callee: e.callee.username, calleeAccountId: e.callee.accountId },
      };
    case 'call.ringing':
      return undefined; // not security-relevant; measured by the set-up histogram
    case 'call.answered':
      return {
        event: 'call.answered',
        accountId: e.callee.accountId,
        deviceId: e.callee.deviceId,
        callId: e.callId,
        detail: { callerAccountId: e.caller.accountId, setupMs: e.setupMs },
      };
    case 'call.resumed':
      return {
        event: 'call.resumed',
        accountId: e.callee.accountId,
        deviceId: e.callee.deviceId,
        callId: e.callId,
        detail: { callerAccountId: e.caller.accountId, answeredAt: e.answeredAt },
      };
    case 'call.rejected':
      return {
        event: 'call.rejected',
        accountId: e.by.accountId,
        deviceId: e.by.deviceId,
        callId: e.callId,
        detail: { callerAccountId: e.caller.accountId, reason: e.reason },
      };
    case 'call.ended':
      return {
        event: 'call.ended',
        accountId: e.caller.accountId,
        deviceId: e.by,
        callId: e.callId,
        detail: {
          reason: e.reason,
          by: e.by ?? 'server',
          durationMs: e.durationMs,
          calleeAccountId: e.callee.accountId,
          ...(e.cause ? { cause: e.cause } : {}),
          ...(e.security ? { security: e.security } : {}),
        },
      };
  }
}
/** The server's version (package.json), shown by /healthz. */
export function serverVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Builds the signaling server: opens (and migrates) the store (SQLite in
 * `config.dataDir`, or PostgreSQL at `config.store.url`), prunes the audit log by `config.audit.retentionDays`,
 * wires HTTP routes (API, /healthz, /readyz, /metrics) and the `/v1/signal`
 * WebSocket. The admin socket opens in `listen()`.
 * @param options.logger logger to use (default: JSON to stdout at `config.logLevel`).
 * @param options.reloadConfig loads the configuration again for `config.reload`
 *   (default: the admin method answers `invalid_state`).
 * @param options.resumeGraceMs how long after start the two devices of an
 *   answered call a crash left open have to come back with it, ms (default
 *   {@link RESUME_GRACE_MS}; server/resume.ts).
 * @throws Error when the data folder or database cannot be opened (for PostgreSQL the
 *   message says why in words, with host and port, never the password).
 */
export async function buildServer(
  config: ServerConfig,
  options: { logger?: Logger; reloadConfig?: () => ServerConfig; resumeGraceMs?: number; onDrained?: () => void } = {},
): Promise<ParleyServer> {
  const log = options.logger ?? createLogger(config.logLevel);
  const db = await openDatabase(config.dataDir, {
    url: config.store.url,
    poolSize: config.store.poolSize,
    onPoolError: (err) => log.warn({ err: { message: err.message } }, 'store connection lost'),
  });
  // TEST ONLY: a malicious-server hook, from the environment alone, announced at fatal level.
  const intercept = await loadInterceptor(process.env, log);
  // The gauges read the hub and the hash cap at scrape time; both exist by then.
  const metrics: ServerMetrics = new ServerMetrics(
    () => hub,
    () => hashes.stats,
    () => storeConnections(db),
    () => sfu.stats,
  );
  const audit = new AuditLog(
    db,
    (err, event) => {
      metrics.auditWriteFailures.inc();
      log.error({ err, event }, 'audit write failed');
    },
    Date.now,
    { windowMs: () => config.audit.failureSummarySeconds * 1000 },
  );
  const hashes = new HashGate(config.auth.maxConcurrentHashes, config.auth.hashQueue, () =>
    metrics.hashRefused.inc(),
  );
  // Several nodes: login, registration, call and relay rates are counted in Redis, across nodes.
  const limitsStore = config.cluster
    ? createLimitsClient(config.cluster.redisUrl, config.cluster.nodeId, log)
    : undefined;
  const frontDoor = new FrontDoor(config.auth, { audit, metrics, log, store: limitsStore });
  const accounts = new Accounts(
    db,
    audit,
    () => config.sessions.tokenTtlSeconds * 1000,
    hashes,
  );
  // Several nodes (server/cluster.ts), only with `[cluster] redis_url`.
  let cluster: Cluster | undefined;
  const hub = new Hub({
    ringTimeoutMs: config.ringTimeoutSeconds * 1000,
    graceMs: config.callGraceSeconds * 1000,
    onLink: (change, link) => cluster?.onLink(change, link),
    onEvent: (e) => {
      const { event, ...facts } = e;
      log.info({ call: facts }, event);
      cluster?.onHubEvent(e);
      if (e.event === 'call.ringing')
        metrics.callSetup.observe({ stage: 'ringing' }, e.setupMs / 1000);
      if (e.event === 'call.answered')
        metrics.callSetup.observe({ stage: 'answered' }, e.setupMs / 1000);
      if (e.event === 'call.ended') metrics.callsEnded.inc({ reason: e.reason });
      if (e.event === 'call.invited')
        openCalls.set(
          e.callId,
          e.caller.accountId,
          [e.caller.deviceId, ...e.deviceIds],
          Date.now(),
        );
      if (e.event === 'call.answered' || e.event === 'call.resumed')
        openCalls.set(
          e.callId,
          e.caller.accountId,
          [e.caller.deviceId, e.callee.deviceId],
          Date.now(),
          e.event === 'call.resumed' ? e.answeredAt : Date.now(),
        );
      if (e.event === 'call.ended') openCalls.delete(e.callId);
      if (e.event === 'call.answered')
        void policy.onAnswered(e.callId, e.caller, e.callee, Date.now());
      // A resumed call gets its policy timers again, counted from the original answer.
      if (e.event === 'call.resumed')
        void policy.onAnswered(e.callId, e.caller, e.callee, e.answeredAt);
      if (e.event === 'call.ended')
        void policy.onEnded([e.caller.accountId, e.callee.accountId], e.durationMs);
      if (e.event === 'call.answered' || e.event === 'call.resumed' || e.event === 'call.ended') {
        void contacts.presenceMayHaveChanged(e.caller);
        void contacts.presenceMayHaveChanged(e.callee);
      }
      const record = auditOfHubEvent(e);
      if (record) void audit.record(record);
    },
  });
  const openCalls = new OpenCalls(db);
  const crashEnded = (c: RecoveredCall): void => {
    metrics.callsEnded.inc({ reason: 'failed' });
    void audit.record({
      event: 'call.ended',
      accountId: c.callerAccountId,
      callId: c.callId,
      detail: { reason: 'failed', by: 'server', durationMs: null, cause: 'server_restart' },
    });
  };
  // Calls a previous run left open: ringing ones were ended by its crash (record
  // that once; their devices learn it, call.ended failed, when they say hello
  // again); answered ones may resume if both devices come back with them
  // within the grace period (server/resume.ts).
  // With several nodes the table is shared and the others' calls are live:
  // a dead node's calls are taken over from Redis instead (server/cluster.ts).
  const recovered = config.cluster ? [] : await openCalls.recover();
  for (const c of recovered) if (c.answeredAt === null) crashEnded(c);
  const resumption = new CallResumption(recovered, options.resumeGraceMs ?? RESUME_GRACE_MS, {
    resume: (c, caller, callee) => {
      try {
        hub.adopt(c.callId, caller, callee, c.answeredAt ?? Date.now());
        log.info({ callId: c.callId }, 'call resumed after restart');
      } catch (err) {
        log.warn({ err, callId: c.callId }, 'call could not resume');
        cluster?.forgetCall(c.callId);
        crashEnded(c);
        for (const d of c.devices) hub.tellEnded(d, c.callId, 'failed');
      }
    },
    end: (c, tellNow, untold) => {
      cluster?.forgetCall(c.callId);
      crashEnded(c);
      for (const d of tellNow) hub.tellEnded(d, c.callId, 'failed');
      openCalls.markEnded(c.callId, untold);
    },
  });
  /** The open room `roomId` this node carries, or undefined. */
  const openRoom = (roomId: string) => {
    try {
      return sfu.room(roomId);
    } catch {
      return undefined;
    }
  };
  // Before the cluster: its hello hook rings devices for this node's rooms.
  const roomInvitations = new RoomInvitations({
    hub,
    ringTimeoutMs: () => config.ringTimeoutSeconds * 1000,
    // Through the room's members: participants on other nodes hear it as they hear room.participant_* (room-proxy.ts).
    inviteEnded: (roomId, invitee, reason) =>
      openRoom(roomId)?.announce('room.invite_ended', { roomId, username: invitee.username, reason }, invitee.accountId),
    participantsOf: (roomId) => openRoom(roomId)?.snapshot().participants.map((p) => p.username) ?? [],
    log,
  });
  if (config.cluster) {
    const resumeGraceMs = options.resumeGraceMs ?? RESUME_GRACE_MS;
    cluster = new Cluster({
      redisUrl: config.cluster.redisUrl,
      nodeId: config.cluster.nodeId,
      hub,
      log,
      hooks: {
        remoteHello: (peer, calls) => {
          for (const callId of resumption.onHello(peer, calls.map((c) => c.callId), () => true))
            hub.tellEnded(peer.deviceId, callId, 'failed');
          // A room this node carries that rings for the device's account rings it too.
          roomInvitations.deviceOnline(peer);
        },
        lostRinging: (c) => {
          crashEnded(c);
          for (const d of c.devices) hub.tellEnded(d, c.callId, 'failed');
        },
        lostAnswered: (c, confirmed) => {
          log.info({ callId: c.callId, deadNode: c.owner, devicesBack: confirmed.length }, 'call of a dead node waits for its devices');
          resumption.add(c, resumeGraceMs, confirmed);
        },
      },
    });
    await cluster.start();
  }
  const contacts = new Contacts(db, hub, audit);
  const policy = new CallPolicy(config, hub, db, audit, limitsStore);
  const approvals = new CallerApprovals(config, db, hub, contacts, audit);
  const links = new DeviceLinks();
  const relays = new RelayService(config, audit, metrics, limitsStore);
  let roomProxy: RoomProxy | undefined;
  const sfu = new Sfu(() => config.sfu, log, {
    onRoomOpened: (room) => roomProxy?.roomOpened(room.id),
    onRoomEnded: (room, reason, participants) => {
      const host = roomInvitations.hostOf(room.id);
      roomInvitations.ended(room.id);
      metrics.sfuRoomsEnded.inc({ reason });
      roomProxy?.roomEnded(room.id, reason, host?.accountId);
      void audit.record({ event: 'room.ended', detail: { roomId: room.id, reason, participants } });
    },
    onWorkerDied: () => metrics.sfuWorkerDeaths.inc(),
  });
  const hubLimits = () => ({
    maxCallsPerAccount: config.policy.maxCallsPerAccount,
    maxCalls: config.policy.maxCalls,
  });
  hub.setLimits(hubLimits());
  const state = { closing: false, draining: false };

  const prune = () =>
    audit.prune(config.audit.retentionDays).then(
      (n) => {
        if (n > 0)
          log.info({ deleted: n, retentionDays: config.audit.retentionDays }, 'audit log pruned');
      },
      (err: unknown) => log.error({ err }, 'audit prune failed'),
    );
  await prune();
  const pruneTimer = setInterval(() => void prune(), DAY_MS);
  pruneTimer.unref();

  /** config.reload: what changed, applied in place; restart-only keys are reported, not applied. */
  const reloadConfig = () => {
    if (!options.reloadConfig)
      throw new ParleyError('invalid_state', 'this server was started without a reloadable config');
    let next: ServerConfig;
    try {
      next = options.reloadConfig();
    } catch (e) {
      if (e instanceof ConfigError)
        throw new ParleyError(
          'invalid_state',
          `${e.message}; the running configuration is unchanged`,
        );
      throw e;
    }
    const diff = diffConfig(config, next);
    const retentionChanged = next.audit.retentionDays !== config.audit.retentionDays;
    config.logLevel = next.logLevel;
    config.ringTimeoutSeconds = next.ringTimeoutSeconds;
    config.callGraceSeconds = next.callGraceSeconds;
    config.turn = next.turn;
    config.stun = next.stun;
    config.audit = next.audit;
    config.auth = next.auth;
    frontDoor.configure(next.auth);
    hashes.configure(next.auth.maxConcurrentHashes, next.auth.hashQueue);
    config.limits = next.limits;
    config.sessions = next.sessions;
    config.policy = next.policy;
    config.sfu = { ...next.sfu, workers: config.sfu.workers, workerBin: config.sfu.workerBin };
    hub.setLimits(hubLimits());
    log.level = next.logLevel;
    hub.setRingTimeout(next.ringTimeoutSeconds * 1000);
    hub.setGrace(next.callGraceSeconds * 1000);
    if (retentionChanged) void prune();
    log.info({ changed: diff.changed, restartRequired: diff.restartRequired }, 'config reloaded');
    void audit.record({
      event: 'config.reloaded',
      detail: { changed: diff.changed, restartRequired: diff.restartRequired },
    });
    return {
      changed: diff.changed,
      applied: diff.applicable,
      restartRequired: diff.restartRequired,
    };
  };

  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    bodyLimit: 64 * 1024,
    // Behind nginx (several nodes): the client's address from X-Forwarded-For, only from these proxies.
    ...(config.trustProxy ? { trustProxy: config.trustProxy } : {}),
  });
  await app.register(websocket, { options: { maxPayload: WS_MAX_PAYLOAD } });
  registerHttpRoutes(app, accounts, relays, frontDoor, serverVersion(), (code) =>
    metrics.errors.inc({ code }),
  );
  registerOpsRoutes(app, { db, metrics, state, cluster });

  const signalDeps: SignalDeps = {
    accounts,
    contacts,
    policy,
    relays,
    openCalls,
    resumption,
    approvals,
    links,
    hub,
    config,
    log,
    audit,
    metrics,
    sfu,
    roomInvitations,
    intercept,
    cluster,
  };
  // Several nodes: this node's counts for the cluster-wide gauges, and its part of cluster-wide admin lists.
  if (cluster) {
    const c = cluster;
    c.setSources(
      () => ({ devices: c.localDevices, ...hub.callsByState(), rooms: sfu.stats.rooms, participants: sfu.stats.participants }),
      (kind) => (kind === 'calls' ? hub.list().map(toAdminCall) : sfu.list()),
    );
    metrics.addClusterGauges(() => c.clusterStats());
  }
  // Several nodes: rooms other nodes carry are reached through them (server/sfu/room-proxy.ts).
  if (cluster) roomProxy = signalDeps.roomProxy = new RoomProxy(cluster, signalDeps, SIGNAL_MODULES, log);

  const alive = new WeakMap<WebSocket, boolean>();
  app.register(async (scope) => {
    // Draining: no new sockets here (503 before the upgrade; nginx's proxy_next_upstream http_503 tries another node).
    scope.addHook('onRequest', async (_req, reply) => {
      if (state.draining)
        return reply.status(503).header('retry-after', '1').send({ error: 'this server node is draining; connect again' });
    });
    scope.get('/v1/signal', { websocket: true }, (socket, req) => {
      alive.set(socket, true);
      socket.on('pong', () => alive.set(socket, true));
      serveSignalSocket(socket, req.ip, signalDeps);
    });
  });

  let url: string | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  let closing: Promise<void> | undefined;
  let admin: AdminSocket | undefined;
  let draining: Promise<void> | undefined;

  const server: ParleyServer = {
    hub,
    db,
    log,
    audit,
    metrics,
    sfu,
    config,
    get url() {
      return url;
    },
    get draining() {
      return draining !== undefined;
    },
    drain(deadlineMs = DRAIN_DEADLINE_MS) {
      draining ??= (async () => {
        if (!cluster) return server.close();
        state.draining = true;
        const sockets = app.websocketServer?.clients ?? new Set();
        const noticeUntil = Date.now() + DRAIN_NOTICE_MS;
        log.warn({ sockets: sockets.size, calls: hub.stats.calls, rooms: sfu.stats.rooms }, 'draining');
        sfu.close();
        // No other node took the calls (a cluster of one): shut down as one node does (calls end, told).
        if (!(await cluster.handOver())) {
          await server.close();
          options.onDrained?.();
          return;
        }
        for (const ws of sockets) ws.close(1012, 'server node draining; reconnect');
        const deadline = Date.now() + deadlineMs;
        while (sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        if (sockets.size > 0) log.warn({ sockets: sockets.size }, 'drain deadline passed; closing the rest');
        while (Date.now() < noticeUntil) await new Promise((r) => setTimeout(r, 50));
        await server.close();
        options.onDrained?.();
      })();
      return draining;
    },
    async listen() {
      await app.listen({ host: config.listen.host, port: config.listen.port });
      const addr = app.server.address() as AddressInfo;
      const host =
        addr.family === 'IPv6' || addr.address.includes(':') ? `[${addr.address}]` : addr.address;
      url = `http://${host}:${addr.port}`;
      heartbeat = setInterval(() => {
        for (const ws of app.websocketServer.clients) {
          if (alive.get(ws) === false) {
            ws.terminate();
            continue;
          }
          alive.set(ws, false);
          ws.ping();
        }
      }, HEARTBEAT_MS);
      heartbeat.unref();
      const c = cluster;
      const gather = c ? (kind: GatherKind) => c.gather(kind) : undefined;
      admin = await startAdminSocket(config.admin.socket, {
        hub,
        sfu,
        audit,
        log,
        reloadConfig,
        drain: () => void server.drain(),
        ...(gather ? { gather } : {}),
      });
      log.info(
        {
          url,
          dataDir: config.dataDir,
          store: describeStore(config.dataDir, config.store.url),
          adminSocket: admin.path,
          turn: config.turn.urls.length > 0,
        },
        'listening',
      );
      return url;
    },
    close() {
      closing ??= (async () => {
        state.closing = true;
        if (heartbeat) clearInterval(heartbeat);
        clearInterval(pruneTimer);
        const calls = hub.stats.calls;
        hub.shutdown();
        hub.close();
        sfu.close();
        resumption.close();
        approvals.close();
        if (calls > 0) log.info({ calls }, 'calls ended for shutdown');
        // ws sends queued frames (the call.ended notifications) before the close frame.
        for (const ws of app.websocketServer?.clients ?? []) ws.close(1001, 'server shutting down');
        await admin?.close();
        await app.close();
        await cluster?.close();
        limitsStore?.disconnect();
        await openCalls.flush();
        audit.closeSummaries();
        await audit.flush();
        await db.destroy();
        log.info('closed');
      })();
      return closing;
    },
  };
  return server;
}
