import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { RejectReason } from '../common/call';
import { ParleyError, type ErrorReason } from '../common/errors';
import type { Envelope, SecurityReason } from '../common/protocol/envelope';
import type { PeerInfo, SignalNotification, SignalNotificationParams } from '../common/protocol/signaling';
import type { ClusterCallCounts, DeviceLink, Hub, HubEvent, Routed } from './hub';

/**
 * Several signaling nodes behind one address (issue 15 item 2), on one Redis
 * (ioredis) and one PostgreSQL store. Without `[cluster] redis_url` none of
 * this exists and the server is the single process it always was.
 *
 * **Presence and ownership.** The node holding a device's socket writes
 * `parley:device:<deviceId>` = {node, conn, since, peer} with a TTL
 * (PRESENCE_TTL_MS) it refreshes, and announces every change on the broadcast
 * channel `parley:cluster` (`up`, `down`). Every node mirrors the whole
 * cluster's presence in its own hub as *remote links* (DeviceLink with `node`
 * set) whose `notify` and `close` publish to the holding node, so the hub's
 * routing — invite to every device of the callee, answered-elsewhere, hangup,
 * candidates, presence of contacts — is unchanged code. A device that
 * connects on node B while its older socket is on node A displaces it (Signal's
 * CLIENT_CONNECTED): A's hub attaches B's newer link and closes the old socket
 * with CLOSE_REPLACED, exactly as for two sockets on one node (the newer
 * `since` wins when both announce at once).
 *
 * **Delivery: pub/sub, one channel per node** (`parley:node:<id>`), not one
 * per device: a node subscribes once at start instead of once per connection
 * (no SUBSCRIBE/UNSUBSCRIBE churn on every connect; the channel count is the
 * node count), and the messages for one device come in the order published.
 * Pub/sub is at-most-once: a message published while a node's subscriber is
 * cut from Redis is lost. What that costs: ringing and answers in flight
 * during the blip are lost (the caller times out `no_answer`, or retries); a
 * relayed candidate that is lost is recovered because the owner numbers every
 * `call.candidate` it relays per device (the hub's relay log) and a client
 * that notices a gap in its sealed-message sequence says `hello` again with
 * `calls[].received`, and the owner sends again everything from there.
 *
 * **Call state: the owner node.** A call lives in the hub of the node that took
 * its invite (the caller's node) — ringing timer, grace timers, relay log —
 * and is recorded in Redis (`parley:call:<id>` = {owner, devices, answeredAt},
 * member of `parley:node:<id>:calls`). A request about a call this node does
 * not own (`call.answer` from a callee on another node, …) is forwarded to the
 * owner as an RPC on its channel and answered with the owner's result or
 * error. Each node heartbeats into the sorted set `parley:nodes` every
 * HEARTBEAT_MS; a node silent for NODE_DEAD_MS is dead: every node drops its
 * remote links (the hubs then hold answered calls for the grace period, as for
 * a dropped socket), and the one node whose ZREM removes it claims its calls:
 * ringing ones end `failed`; answered ones go to this node's CallResumption
 * (server/resume.ts) and are adopted, owned here from then on, once both
 * devices are connected and still carry the call (their `hello` lists it, or
 * they never lost their socket).
 */
export interface ClusterOptions {
  /** `redis://…` (may hold a password: never logged). */
  redisUrl: string;
  nodeId: string;
  hub: Hub;
  log: Logger;
  hooks: {
    /** Another node's device said hello (after its `up`): run it through this node's crash resumption. */
    remoteHello(peer: PeerInfo, calls: ReadonlyArray<{ callId: string; received?: number }>): void;
    /** A dead node's ringing call: it is over. */
    lostRinging(call: ClusterCallRecord): void;
    /** A dead node's answered call: offer it for resumption here, with the devices known to be back. */
    lostAnswered(call: ClusterCallRecord, confirmed: PeerInfo[]): void;
  };
}

/** A call as recorded in Redis by its owner. */
export interface ClusterCallRecord {
  callId: string;
  owner: string;
  callerAccountId: string;
  calleeAccountId: string;
  /** Device ids, the caller's first; for an answered call exactly [caller, callee]. */
  devices: string[];
  /** Unix ms of the answer, or null while ringing. */
  answeredAt: number | null;
}

/** A request about a call, run by the node that owns it. */
export type CallOp =
  | { op: 'ringing'; from: PeerInfo; callId: string }
  | { op: 'answer'; from: PeerInfo; callId: string; envelope: Envelope }
  | { op: 'reject'; from: PeerInfo; callId: string; reason: RejectReason }
  | { op: 'cancel'; from: PeerInfo; callId: string }
  | { op: 'hangup'; from: PeerInfo; callId: string; failed?: 'failed' | undefined }
  | { op: 'candidate'; from: PeerInfo; callId: string; routed: Routed }
  | { op: 'security'; from: PeerInfo; callId: string; security: SecurityReason };

/** Runs a call request on this node's hub (the same methods the handlers call with one node). */
export function applyCallOp(hub: Hub, o: CallOp): void {
  switch (o.op) {
    case 'ringing':
      return hub.ringing(o.from, o.callId);
    case 'answer':
      return hub.answer(o.from, o.callId, o.envelope);
    case 'reject':
      return hub.reject(o.from, o.callId, o.reason);
    case 'cancel':
      return hub.cancel(o.from, o.callId);
    case 'hangup':
      return hub.hangup(o.from, o.callId, o.failed);
    case 'candidate':
      return hub.candidate(o.from, o.callId, o.routed);
    case 'security':
      return hub.securityFailure(o.from, o.callId, o.security);
  }
}

type Wire =
  | { t: 'up'; node: string; conn: string; since: number; peer: PeerInfo }
  | { t: 'down'; node: string; conn: string; deviceId: string }
  | { t: 'hello'; node: string; peer: PeerInfo; calls: Array<{ callId: string; received?: number }> }
  | { t: 'notify'; from: string; deviceId: string; method: string; params: unknown }
  | { t: 'close'; deviceId: string; conn: string; code: number; reason: string }
  | { t: 'rpc'; id: number; reply: string; call: CallOp }
  | { t: 'rpc-reply'; id: number; error?: { reason: ErrorReason; message: string } }
  /** Group-call room traffic between nodes (server/sfu/room-proxy.ts), opaque here. */
  | { t: 'room'; from: string; body: unknown }
  /** A node going away on purpose (drain, SIGTERM): take its calls over now rather than after NODE_DEAD_MS. */
  | { t: 'leaving'; node: string }
  /** The claimer of a dead node's calls tells the others (who may not have seen its heartbeat stop before the claim). */
  | { t: 'dead'; node: string }
  /** Cluster-wide admin: every node answers `reply` with its part (server/admin.ts). */
  | { t: 'gather'; id: number; reply: string; kind: GatherKind }
  | { t: 'gathered'; id: number; node: string; items: unknown[] };

/** What a cluster-wide admin request collects from every node. */
export type GatherKind = 'calls' | 'rooms';

/** One node's counts, written with its heartbeat (for the cluster-wide gauges). */
export interface NodeStats {
  devices: number;
  ringing: number;
  active: number;
  rooms: number;
  participants: number;
}

/** The live nodes' counts summed (every node within NODE_DEAD_MS of its last heartbeat). */
export interface ClusterStats extends NodeStats {
  nodes: number;
}

/** What the room proxy (server/sfu/room-proxy.ts) hears from the cluster. */
export interface RoomTraffic {
  /** A `room` message another node sent this one. */
  message(from: string, body: unknown): void;
  /** Node `node` was found dead (or left): its rooms are gone, and so are its connections. Once per death. */
  nodeLost(node: string): void;
  /** This node was taken for dead by the others (they told its rooms' participants `node_lost`): end them here too. */
  steppedDown(): void;
}

/** Where a room is, as recorded in Redis: on a live node, or ended (and why). */
export type RoomLocation = { node: string } | { ended: string };

/** How often a node writes its heartbeat into `parley:nodes`, ms. */
const HEARTBEAT_MS = 1000;
/** A node whose heartbeat is older than this is dead, ms (3 missed beats). */
export const NODE_DEAD_MS = 3000;
/** TTL of a device's presence key; the holding node refreshes it every PRESENCE_REFRESH_MS. */
const PRESENCE_TTL_MS = 30_000;
const PRESENCE_REFRESH_MS = 10_000;
/** How long a forwarded call request waits for the owner's answer, ms. */
const RPC_TIMEOUT_MS = 5000;
/** Call owners remembered per node (a cache of `parley:call:<id>`.owner). */
const OWNER_CACHE_MAX = 50_000;
/** A device's hello that listed a call another node owns: the device, and when (Unix ms). */
type HelloNote = PeerInfo & { at: number };

/** How long a hello's "I still carry call X" is kept for a claimer of X's dead owner, s. */
const HELLO_NOTE_TTL_S = 300;

const K = {
  broadcast: 'parley:cluster',
  node: (id: string) => `parley:node:${id}`,
  nodeCalls: (id: string) => `parley:node:${id}:calls`,
  nodes: 'parley:nodes',
  /** Set by the node that took a dead node's calls over; that node, if it comes back, steps down. */
  nodeDead: (id: string) => `parley:node:${id}:dead`,
  device: (id: string) => `parley:device:${id}`,
  call: (id: string) => `parley:call:${id}`,
  /** Every call in the cluster (set of ids), for `policy.max_calls`. */
  calls: 'parley:calls',
  /** The calls an account is a party of (set of ids), for `policy.max_calls_per_account`. */
  accountCalls: (id: string) => `parley:account:${id}:calls`,
  /** The call a device is a party of (its id). */
  busy: (id: string) => `parley:busy:${id}`,
  callHello: (id: string) => `parley:call:${id}:hello`,
  /** The node whose SFU carries a group-call room (JSON RoomLocation). */
  room: (id: string) => `parley:room:${id}`,
  /** Each node's NodeStats (hash: node id → JSON), written with its heartbeat. */
  nodeStats: 'parley:node-stats',
  /** The rooms a node carries (set of ids). */
  nodeRooms: (id: string) => `parley:node:${id}:rooms`,
  /**
   * The rooms an account created (set of ids), for `sfu.max_rooms_per_account`
   * across nodes; ids of rooms that ended are dropped when next counted.
   */
  accountRooms: (id: string) => `parley:account:${id}:rooms`,
};

/** How long an ended room's record stays, so that a late request hears why it ended, s. */
const ENDED_ROOM_TTL_S = 600;

/** Deletes a presence key only when it still names this connection (a newer one may have replaced it). */
const DEL_IF_CONN = `local v = redis.call('GET', KEYS[1])
if v and string.find(v, ARGV[1], 1, true) then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * A Redis client for the shared limits (server/rate-limit.ts, front-door.ts):
 * no offline queue, so that while Redis is away a limit check fails at once
 * and the in-process fallback decides. Errors are logged without the URL.
 */
export function createLimitsClient(redisUrl: string, nodeId: string, log: Logger): Redis {
  const client = new Redis(redisUrl, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (n: number) => Math.min(50 * n, 1000),
    connectionName: `parley-${nodeId}-limits`,
  });
  client.on('error', (err: Error) => log.warn({ err: { message: err.message } }, 'redis (limits) error'));
  return client;
}

/** A device whose socket another node holds. */
class RemoteLink implements DeviceLink {
  constructor(
    readonly peer: PeerInfo,
    readonly node: string,
    readonly conn: string,
    readonly since: number,
    private readonly cluster: Cluster,
  ) {}
  notify<N extends SignalNotification>(method: N, params: SignalNotificationParams<N>): void {
    this.cluster.publishTo(this.node, { t: 'notify', from: this.cluster.nodeId, deviceId: this.peer.deviceId, method, params });
  }
  close(code: number, reason: string): void {
    this.cluster.publishTo(this.node, { t: 'close', deviceId: this.peer.deviceId, conn: this.conn, code, reason });
  }
}

/** This node's part of the cluster; see the file comment. */
export class Cluster {
  readonly nodeId: string;
  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly hub: Hub;
  private readonly log: Logger;
  /** Sockets this node holds, by device id. */
  private readonly local = new Map<string, { link: DeviceLink; conn: string; since: number }>();
  /** Remote links this node mirrors, by device id. */
  private readonly remotes = new Map<string, RemoteLink>();
  /** This node's `up` announcements still in flight, by device id (hello waits for its own). */
  private readonly announcing = new Map<string, Promise<void>>();
  /** Nodes found dead (no heartbeat for NODE_DEAD_MS); one that beats again is alive again. */
  private readonly dead = new Set<string>();
  /** The owner of calls with parties here that other nodes own, by call id (a cache; Redis has the truth). */
  private readonly owners = new Map<string, string>();
  /** The party devices of each call this node owns (to free them in Redis when it ends). */
  private readonly parties = new Map<string, string[]>();
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private rpcSeq = 0;
  /** Heartbeats written so far. */
  private beats = 0;
  private connSeq = 0;
  private timers: NodeJS.Timeout[] = [];
  /** When the subscriber last (re)connected, Unix ms. */
  private readySince = 0;
  private closed = false;
  private roomTraffic: RoomTraffic | undefined;
  /** Draining: this node stopped heartbeating and asked the others to take its calls. */
  private leaving = false;
  private statsSource: (() => NodeStats) | undefined;
  private gatherSource: ((kind: GatherKind) => unknown[]) | undefined;
  private readonly gathering = new Map<number, { add: (node: string, items: unknown[]) => void }>();

  constructor(private readonly options: ClusterOptions) {
    this.nodeId = options.nodeId;
    this.hub = options.hub;
    this.log = options.log.child({ node: this.nodeId });
    const redisOptions = { maxRetriesPerRequest: null, retryStrategy: (n: number) => Math.min(50 * n, 1000) } as const;
    // Commands queue while Redis is away (a blip), but a request never waits more than 2 s for one.
    this.cmd = new Redis(options.redisUrl, {
      ...redisOptions,
      lazyConnect: true,
      commandTimeout: 2000,
      connectionName: `parley-${this.nodeId}`,
    });
    this.sub = new Redis(options.redisUrl, { ...redisOptions, lazyConnect: true, connectionName: `parley-${this.nodeId}-sub` });
    // Never log the URL or ioredis's error objects whole (they can carry the URL).
    this.cmd.on('error', (err: Error) => this.log.warn({ err: { message: err.message } }, 'redis error'));
    this.sub.on('error', (err: Error) => this.log.warn({ err: { message: err.message } }, 'redis subscriber error'));
    this.sub.on('messageBuffer', (_channel: Buffer, message: Buffer) => this.receive(message.toString('utf8')));
  }

  /**
   * Connects both Redis connections, subscribes, loads the cluster's presence.
   * @throws Error when Redis cannot be reached (the message names no URL).
   */
  async start(): Promise<void> {
    try {
      await Promise.all([this.cmd.connect(), this.sub.connect()]);
    } catch (e) {
      throw new Error(`cannot reach Redis ([cluster] redis_url): ${(e as Error).message}`, { cause: e });
    }
    await this.sub.subscribe(K.broadcast, K.node(this.nodeId));
    this.readySince = Date.now();
    // After a reconnect (a Redis restart or blip): announce again what this node holds.
    this.sub.on('ready', () => {
      this.readySince = Date.now();
      this.log.warn('redis reconnected; announcing this node again');
      void this.reannounce();
    });
    await this.cmd.del(K.nodeDead(this.nodeId)); // a mark from a previous life of this id
    await this.heartbeat();
    await this.loadPresence();
    // A previous life of this node id left rooms: they went with its SFU (a late request hears `node_lost`).
    const staleRooms = await this.cmd.smembers(K.nodeRooms(this.nodeId));
    if (staleRooms.length > 0) {
      const m = this.cmd.multi().del(K.nodeRooms(this.nodeId));
      for (const roomId of staleRooms) m.set(K.room(roomId), JSON.stringify({ ended: 'node_lost' } satisfies RoomLocation), 'EX', ENDED_ROOM_TTL_S);
      await m.exec();
    }
    // A previous life of this node id (it crashed and came back before anyone
    // found it dead) left calls: take them over like a dead node's.
    if ((await this.cmd.scard(K.nodeCalls(this.nodeId))) > 0) await this.claim(this.nodeId, new Set());
    this.timers.push(setInterval(() => void this.heartbeat().then(() => this.sweep()), HEARTBEAT_MS));
    this.timers.push(setInterval(() => void this.refreshPresence(), PRESENCE_REFRESH_MS));
    for (const t of this.timers) t.unref();
    this.log.info('cluster node started');
  }

  /**
   * Drain (a rolling restart): this node stops heartbeating and tells the
   * others it is leaving; one of them takes its calls over at once, as it
   * would a dead node's after NODE_DEAD_MS (ringing ones end `failed`,
   * answered ones resume there once both devices say hello again). When
   * that node has claimed them, this node forgets them without a word (its
   * hub is emptied) so that closing its sockets next ends nothing.
   * @param timeoutMs how long to wait for a claimer (none: a cluster of one).
   * @returns true when another node took the calls; false when none did in time
   *   (this node still owns them, and a shutdown ends them).
   */
  async handOver(timeoutMs = NODE_DEAD_MS): Promise<boolean> {
    this.leaving = true;
    this.publish(K.broadcast, { t: 'leaving', node: this.nodeId });
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const claimed = await this.cmd.exists(K.nodeDead(this.nodeId)).catch(() => 0);
      if (claimed === 1) {
        this.log.info({ calls: this.hub.stats.calls }, 'draining: another node took this node’s calls');
        this.hub.close();
        this.parties.clear();
        return true;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    this.log.warn('draining: no other node took this node’s calls in time');
    return false;
  }

  /** Stops the timers and closes both connections; this node's presence is withdrawn. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    for (const p of this.pending.values()) clearTimeout(p.timer);
    try {
      const m = this.cmd.multi();
      for (const [deviceId, l] of this.local) {
        m.eval(DEL_IF_CONN, 1, K.device(deviceId), l.conn);
        m.publish(K.broadcast, JSON.stringify({ t: 'down', node: this.nodeId, conn: l.conn, deviceId } satisfies Wire));
      }
      m.zrem(K.nodes, this.nodeId).hdel(K.nodeStats, this.nodeId);
      await m.exec();
    } catch {
      // Redis gone: the keys expire.
    }
    this.sub.disconnect();
    this.cmd.disconnect();
  }

  /** Hub `onLink`: a device's current link changed. */
  onLink(change: 'attached' | 'detached', link: DeviceLink): void {
    const deviceId = link.peer.deviceId;
    if (link instanceof RemoteLink) {
      if (change === 'attached') {
        this.local.delete(deviceId);
        this.remotes.set(deviceId, link);
      } else if (this.remotes.get(deviceId) === link) this.remotes.delete(deviceId);
      return;
    }
    if (change === 'attached') {
      this.remotes.delete(deviceId);
      const entry = { link, conn: `${this.nodeId}/${++this.connSeq}`, since: Date.now() };
      this.local.set(deviceId, entry);
      const up: Wire = { t: 'up', node: this.nodeId, conn: entry.conn, since: entry.since, peer: link.peer };
      const announced = this.cmd
        .multi()
        .set(K.device(deviceId), JSON.stringify(up), 'PX', PRESENCE_TTL_MS)
        .publish(K.broadcast, JSON.stringify(up))
        .exec()
        .then(
          () => undefined,
          () => undefined,
        );
      this.announcing.set(deviceId, announced);
      void announced.then(() => {
        if (this.announcing.get(deviceId) === announced) this.announcing.delete(deviceId);
      });
    } else {
      const entry = this.local.get(deviceId);
      if (entry?.link !== link) return;
      this.local.delete(deviceId);
      void this.cmd
        .multi()
        .eval(DEL_IF_CONN, 1, K.device(deviceId), entry.conn)
        .publish(K.broadcast, JSON.stringify({ t: 'down', node: this.nodeId, conn: entry.conn, deviceId } satisfies Wire))
        .exec()
        .catch(() => {});
    }
  }

  /** Hub `onEvent`: keeps this node's call records, the cluster's call sets and busy devices in Redis. */
  onHubEvent(e: HubEvent): void {
    if (e.event !== 'call.invited' && e.event !== 'call.answered' && e.event !== 'call.resumed' && e.event !== 'call.ended') return;
    const m = this.cmd.multi();
    const calleeAccountId = e.callee.accountId;
    if (e.event === 'call.ended') {
      const devices = this.parties.get(e.callId) ?? [];
      this.parties.delete(e.callId);
      m.del(K.call(e.callId), K.callHello(e.callId))
        .srem(K.nodeCalls(this.nodeId), e.callId)
        .srem(K.calls, e.callId)
        .srem(K.accountCalls(e.caller.accountId), e.callId)
        .srem(K.accountCalls(calleeAccountId), e.callId);
      for (const d of devices) m.eval(DEL_IF_CONN, 1, K.busy(d), e.callId);
    } else {
      const answered = e.event !== 'call.invited';
      const devices = answered ? [e.caller.deviceId, e.callee.deviceId] : [e.caller.deviceId, ...e.deviceIds];
      const record: ClusterCallRecord = {
        callId: e.callId,
        owner: this.nodeId,
        callerAccountId: e.caller.accountId,
        calleeAccountId,
        devices,
        answeredAt: e.event === 'call.resumed' ? e.answeredAt : answered ? Date.now() : null,
      };
      // Devices invited that did not answer are free again.
      for (const d of this.parties.get(e.callId) ?? []) if (!devices.includes(d)) m.eval(DEL_IF_CONN, 1, K.busy(d), e.callId);
      this.parties.set(e.callId, devices);
      m.set(K.call(e.callId), JSON.stringify(record))
        .sadd(K.nodeCalls(this.nodeId), e.callId)
        .sadd(K.calls, e.callId)
        .sadd(K.accountCalls(e.caller.accountId), e.callId)
        .sadd(K.accountCalls(calleeAccountId), e.callId);
      for (const d of devices) m.set(K.busy(d), e.callId);
    }
    void m.exec().catch(() => {});
  }

  /**
   * What the rest of the cluster adds to an invite's checks: devices of the
   * caller and callee in calls elsewhere, and the call counts. Best effort: the
   * counts are read, not reserved, so two invites on two nodes at the same
   * moment can both pass a limit by one; with Redis away, this node's own view.
   */
  async inviteCounts(caller: PeerInfo, calleeAccountId: string): Promise<ClusterCallCounts | undefined> {
    const devices = [caller.deviceId, ...this.hub.devicesOf(calleeAccountId)];
    try {
      const r = await this.cmd
        .multi()
        .scard(K.calls)
        .scard(K.accountCalls(caller.accountId))
        .scard(K.accountCalls(calleeAccountId))
        .mget(...devices.map((d) => K.busy(d)))
        .exec();
      if (!r) return undefined;
      const busyValues = r[3]![1] as (string | null)[];
      return {
        totalCalls: Number(r[0]![1]),
        callerCalls: Number(r[1]![1]),
        calleeCalls: Number(r[2]![1]),
        busy: new Set(devices.filter((_, i) => busyValues[i])),
      };
    } catch {
      return undefined;
    }
  }

  /**
   * Runs a call request where the call lives: here when this hub has it (or
   * no node has it: the hub then refuses with `call_not_found`), else on its owner.
   * @throws ParleyError from the owner's hub, or `unavailable` when the owner does not answer.
   */
  async route(o: CallOp): Promise<void> {
    if (this.hub.hasCall(o.callId)) return applyCallOp(this.hub, o);
    const cached = this.owners.get(o.callId);
    if (cached !== undefined && !this.dead.has(cached)) {
      try {
        return await this.forward(cached, o);
      } catch (e) {
        // The owner died or gave the call up: ask Redis where it is now.
        this.owners.delete(o.callId);
        if (!(e instanceof ParleyError) || (e.reason !== 'unavailable' && e.reason !== 'call_not_found')) throw e;
      }
    }
    let record: ClusterCallRecord | undefined;
    try {
      record = await this.record(o.callId);
    } catch {
      throw new ParleyError('unavailable', 'the server cannot reach its cluster store right now; try again shortly', {
        retryAfter: 1,
      });
    }
    if (!record || record.owner === this.nodeId) return applyCallOp(this.hub, o);
    if (this.dead.has(record.owner))
      throw new ParleyError('unavailable', 'the server node holding this call is gone; its call comes back shortly', {
        retryAfter: 1,
      });
    this.rememberOwner(o.callId, record.owner);
    return this.forward(record.owner, o);
  }

  /** Remembers which node owns a call (bounded: the oldest entries go first). */
  private rememberOwner(callId: string, node: string): void {
    this.owners.delete(callId);
    this.owners.set(callId, node);
    if (this.owners.size > OWNER_CACHE_MAX) this.owners.delete(this.owners.keys().next().value as string);
  }

  /** Sends a call request to its owner and waits for the result (RPC_TIMEOUT_MS at most). */
  private forward(owner: string, o: CallOp): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const id = ++this.rpcSeq;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ParleyError('unavailable', 'the server node holding this call did not answer; try again shortly'));
      }, RPC_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.publishTo(owner, { t: 'rpc', id, reply: this.nodeId, call: o });
    });
  }

  /**
   * A device said hello on this node: notes the calls it lists that other
   * nodes own (or owned: a claimer of a dead owner's calls reads the notes).
   * Call {@link announceHello} after the hello reply.
   * @returns the listed calls some node has a record of (not "unknown").
   */
  async hello(peer: PeerInfo, calls: ReadonlyArray<{ callId: string }>): Promise<Set<string>> {
    // The reply waits until Redis has passed this device's `up` on to the other
    // nodes (PUBLISH returns after queueing it to every subscriber), so that a
    // request another client makes right after it finds the device online.
    await this.announcing.get(peer.deviceId);
    const known = new Set<string>();
    const remote = calls.filter((c) => !this.hub.hasCall(c.callId));
    if (remote.length === 0) return known;
    try {
      const values = await this.cmd.mget(...remote.map((c) => K.call(c.callId)));
      const m = this.cmd.multi();
      values.forEach((v, i) => {
        if (!v) return;
        const callId = remote[i]!.callId;
        known.add(callId);
        const note: HelloNote = { ...peer, at: Date.now() };
        m.hset(K.callHello(callId), peer.deviceId, JSON.stringify(note)).expire(K.callHello(callId), HELLO_NOTE_TTL_S);
      });
      await m.exec();
    } catch (err) {
      this.log.warn({ err: { message: (err as Error).message } }, 'redis unavailable at hello');
    }
    return known;
  }

  /**
   * After a hello's reply: the other nodes run their side of it — held calls
   * they own resume (missed relays are sent again, from `received`), the ones
   * it came back without end, and their crash resumption sees it — and send
   * what they tell the device after its reply, as one node would.
   */
  announceHello(peer: PeerInfo, calls: ReadonlyArray<{ callId: string; received?: number | undefined }>): void {
    const list = calls.map((c) => (c.received === undefined ? { callId: c.callId } : { callId: c.callId, received: c.received }));
    this.publish(K.broadcast, { t: 'hello', node: this.nodeId, peer, calls: list });
  }

  /** True while both Redis connections (commands and subscriber) are up (`/readyz`). */
  get connected(): boolean {
    return this.cmd.status === 'ready' && this.sub.status === 'ready';
  }

  /** A taken-over call that did not resume (server/resume.ts gave up on it): its record goes. */
  forgetCall(callId: string): void {
    void this.cmd
      .multi()
      .del(K.call(callId), K.callHello(callId))
      .srem(K.nodeCalls(this.nodeId), callId)
      .exec()
      .catch(() => {});
  }

  /** Number of devices connected to this node (the rest of the hub's links are remote). */
  get localDevices(): number {
    return this.local.size;
  }

  /** Publishes to one node's channel (delivery is at-most-once; see the file comment). */
  publishTo(node: string, message: Wire): void {
    this.publish(K.node(node), message);
  }

  /** Where this node's counts come from (written with each heartbeat) and its part of cluster-wide admin lists. */
  setSources(stats: () => NodeStats, gather: (kind: GatherKind) => unknown[]): void {
    this.statsSource = stats;
    this.gatherSource = gather;
  }

  /**
   * The live nodes' counts summed (each node's as of its last heartbeat, ≤ 1 s old).
   * @returns undefined when Redis cannot be read.
   */
  async clusterStats(): Promise<ClusterStats | undefined> {
    try {
      const [[, beats], [, stats]] = (await this.cmd.multi().zrange(K.nodes, 0, -1, 'WITHSCORES').hgetall(K.nodeStats).exec()) as [
        [unknown, string[]],
        [unknown, Record<string, string>],
      ];
      const sum: ClusterStats = { nodes: 0, devices: 0, ringing: 0, active: 0, rooms: 0, participants: 0 };
      const now = Date.now();
      for (let i = 0; i + 1 < beats.length; i += 2) {
        if (now - Number(beats[i + 1]) > NODE_DEAD_MS) continue;
        sum.nodes++;
        const v = stats[beats[i]!];
        if (!v) continue;
        const s = JSON.parse(v) as NodeStats;
        sum.devices += s.devices;
        sum.ringing += s.ringing;
        sum.active += s.active;
        sum.rooms += s.rooms;
        sum.participants += s.participants;
      }
      return sum;
    } catch {
      return undefined;
    }
  }

  /**
   * Asks every live node for its part of a cluster-wide admin list and waits
   * for all of them (at most `timeoutMs`; a node that does not answer in time
   * is named in `missing`).
   * @throws ParleyError `unavailable` when Redis cannot be read.
   */
  async gather(kind: GatherKind, timeoutMs = 2000): Promise<{ parts: { node: string; items: unknown[] }[]; missing: string[] }> {
    let nodes: string[];
    try {
      const beats = await this.cmd.zrange(K.nodes, 0, -1, 'WITHSCORES');
      nodes = [];
      for (let i = 0; i + 1 < beats.length; i += 2) if (Date.now() - Number(beats[i + 1]) <= NODE_DEAD_MS) nodes.push(beats[i]!);
    } catch {
      throw new ParleyError('unavailable', 'the server cannot reach its cluster store right now; try again shortly');
    }
    if (!nodes.includes(this.nodeId)) nodes.push(this.nodeId);
    const id = ++this.rpcSeq;
    const parts = new Map<string, unknown[]>();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.gathering.set(id, {
        add: (node, items) => {
          parts.set(node, items);
          if (nodes.every((n) => parts.has(n))) {
            clearTimeout(timer);
            resolve();
          }
        },
      });
      this.publish(K.broadcast, { t: 'gather', id, reply: this.nodeId, kind });
    });
    this.gathering.delete(id);
    return {
      parts: [...parts].map(([node, items]) => ({ node, items })).sort((a, b) => a.node.localeCompare(b.node)),
      missing: nodes.filter((n) => !parts.has(n)),
    };
  }

  /** The room proxy's link to the other nodes (set once, at start; server/sfu/room-proxy.ts). */
  setRoomTraffic(traffic: RoomTraffic): void {
    this.roomTraffic = traffic;
  }

  /** Sends room traffic to node `node` (pub/sub: at-most-once, in order). */
  sendRoom(node: string, body: unknown): void {
    this.publishTo(node, { t: 'room', from: this.nodeId, body });
  }

  /** True when node `node` is known dead here (its heartbeat stopped, or it left). */
  isDead(node: string): boolean {
    return this.dead.has(node);
  }

  /**
   * Records that this node's SFU carries room `roomId` (before its id is handed out).
   * @throws Error when Redis cannot be reached within its command timeout (2 s).
   */
  async roomOpened(roomId: string): Promise<void> {
    await this.cmd
      .multi()
      .set(K.room(roomId), JSON.stringify({ node: this.nodeId } satisfies RoomLocation))
      .sadd(K.nodeRooms(this.nodeId), roomId)
      .exec();
  }

  /**
   * Records that `accountId` created room `roomId` (on this node), for
   * `sfu.max_rooms_per_account` across nodes ({@link roomsHostedBy}). Best
   * effort: with Redis away the limit is this node's own count.
   */
  async roomHosted(roomId: string, accountId: string): Promise<void> {
    await this.cmd.sadd(K.accountRooms(accountId), roomId).catch(() => {});
  }

  /**
   * Records that room `roomId` of this node ended, and why (kept ENDED_ROOM_TTL_S). Best effort.
   * @param hostAccountId its creator's account (its room count goes down).
   */
  roomEnded(roomId: string, reason: string, hostAccountId?: string): void {
    const m = this.cmd
      .multi()
      .set(K.room(roomId), JSON.stringify({ ended: reason } satisfies RoomLocation), 'EX', ENDED_ROOM_TTL_S)
      .srem(K.nodeRooms(this.nodeId), roomId);
    if (hostAccountId !== undefined) m.srem(K.accountRooms(hostAccountId), roomId);
    void m.exec().catch(() => {});
  }

  /**
   * How many open rooms, on any node, account `accountId` created (the
   * `sfu.max_rooms_per_account` limit). A room counts while Redis says a live
   * node carries it; ids of ended rooms and of rooms of dead nodes are dropped
   * here. Read, not reserved (like the call counts of {@link inviteCounts}):
   * two creates on two nodes at the same moment can both pass by one.
   * @returns the count, or undefined when Redis cannot be reached.
   */
  async roomsHostedBy(accountId: string): Promise<number | undefined> {
    try {
      const ids = await this.cmd.smembers(K.accountRooms(accountId));
      if (ids.length === 0) return 0;
      const where = await this.cmd.mget(...ids.map((id) => K.room(id)));
      let open = 0;
      const gone: string[] = [];
      ids.forEach((id, i) => {
        const v = where[i];
        const loc = v ? (JSON.parse(v) as RoomLocation) : undefined;
        if (loc && 'node' in loc && !this.dead.has(loc.node)) open++;
        else gone.push(id);
      });
      if (gone.length > 0) void this.cmd.srem(K.accountRooms(accountId), ...gone).catch(() => {});
      return open;
    } catch {
      return undefined;
    }
  }

  /**
   * Where room `roomId` is: on a node (maybe this one), ended, or unknown (undefined).
   * @throws ParleyError `unavailable` when Redis cannot be reached.
   */
  async roomLocation(roomId: string): Promise<RoomLocation | undefined> {
    let v: string | null;
    try {
      v = await this.cmd.get(K.room(roomId));
    } catch {
      throw new ParleyError('unavailable', 'the server cannot reach its cluster store right now; try again shortly', { retryAfter: 1 });
    }
    return v ? (JSON.parse(v) as RoomLocation) : undefined;
  }

  // ---- internals ----------------------------------------------------------------

  private publish(channel: string, message: Wire): void {
    this.cmd.publish(channel, JSON.stringify(message)).catch(() => {});
  }

  private async record(callId: string): Promise<ClusterCallRecord | undefined> {
    const v = await this.cmd.get(K.call(callId));
    return v ? (JSON.parse(v) as ClusterCallRecord) : undefined;
  }

  private receive(text: string): void {
    let m: Wire;
    try {
      m = JSON.parse(text) as Wire;
    } catch {
      return;
    }
    try {
      this.handle(m);
    } catch (err) {
      this.log.error({ err, t: m.t }, 'cluster message failed');
    }
  }

  private handle(m: Wire): void {
    switch (m.t) {
      case 'up':
        if (m.node !== this.nodeId) this.remoteUp(m);
        return;
      case 'down': {
        if (m.node === this.nodeId) return;
        const link = this.remotes.get(m.deviceId);
        if (link && link.conn === m.conn) this.hub.detach(link);
        return;
      }
      case 'hello': {
        if (m.node === this.nodeId) return;
        for (const { callId, reason } of this.hub.reconnected(m.peer, m.calls))
          this.hub.tellEnded(m.peer.deviceId, callId, reason);
        this.options.hooks.remoteHello(m.peer, m.calls);
        return;
      }
      case 'notify': {
        // The node that sends a device a call's messages owns the call: remember it (saves a lookup per request).
        const callId = (m.params as { callId?: unknown } | null)?.callId;
        if (typeof callId === 'string') {
          if (m.method === 'call.ended') this.owners.delete(callId);
          else if (m.method === 'call.incoming' || m.method === 'call.answered') this.rememberOwner(callId, m.from);
        }
        this.local.get(m.deviceId)?.link.notify(m.method as SignalNotification, m.params as never);
        return;
      }
      case 'close': {
        const entry = this.local.get(m.deviceId);
        if (entry?.conn === m.conn) entry.link.close(m.code, m.reason);
        return;
      }
      case 'rpc': {
        let error: { reason: ErrorReason; message: string } | undefined;
        try {
          applyCallOp(this.hub, m.call);
        } catch (e) {
          error =
            e instanceof ParleyError
              ? { reason: e.reason, message: e.message }
              : { reason: 'internal_error', message: 'the server failed to handle this request' };
          if (!(e instanceof ParleyError)) this.log.error({ err: e, op: m.call.op }, 'forwarded call request failed');
        }
        this.publishTo(m.reply, { t: 'rpc-reply', id: m.id, ...(error ? { error } : {}) });
        return;
      }
      case 'room':
        if (m.from !== this.nodeId) this.roomTraffic?.message(m.from, m.body);
        return;
      case 'leaving':
        if (m.node !== this.nodeId) void this.sweep(m.node);
        return;
      case 'gather': {
        let items: unknown[] = [];
        try {
          items = this.gatherSource?.(m.kind) ?? [];
        } catch (err) {
          this.log.error({ err, kind: m.kind }, 'cluster-wide admin request failed here');
        }
        this.publishTo(m.reply, { t: 'gathered', id: m.id, node: this.nodeId, items });
        return;
      }
      case 'gathered':
        this.gathering.get(m.id)?.add(m.node, m.items);
        return;
      case 'dead':
        if (m.node !== this.nodeId && !this.dead.has(m.node)) {
          this.dead.add(m.node);
          this.nodeLost(m.node);
        }
        return;
      case 'rpc-reply': {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.error) p.reject(new ParleyError(m.error.reason, m.error.message));
        else p.resolve();
        return;
      }
    }
  }

  /** Another node holds a socket of this device now; the newer of two sockets wins. */
  private remoteUp(m: Extract<Wire, { t: 'up' }>): void {
    const deviceId = m.peer.deviceId;
    const current = this.hub.linkOf(deviceId);
    if (current) {
      const mine = this.local.get(deviceId);
      if (mine?.link === current && mine.since > m.since) return;
      if (current instanceof RemoteLink && (current.conn === m.conn || current.since > m.since)) return;
    }
    this.hub.attach(new RemoteLink(m.peer, m.node, m.conn, m.since, this));
  }

  private async heartbeat(): Promise<void> {
    if (this.leaving) return;
    try {
      if (this.statsSource) void this.cmd.hset(K.nodeStats, this.nodeId, JSON.stringify(this.statsSource())).catch(() => {});
      const added = await this.cmd.zadd(K.nodes, Date.now(), this.nodeId);
      // Back in the set: after a Redis restart (empty), or because another node
      // took this one for dead (frozen, or cut off from Redis) and took its calls.
      if (added === 1 && this.beats++ > 0 && (await this.cmd.del(K.nodeDead(this.nodeId))) === 1) this.stepDown();
    } catch {
      // Redis down: the sweep waits for it.
    }
  }

  /**
   * This node was taken for dead and its calls were taken over: it forgets
   * them without a word (their new owner routes them) and closes its sockets
   * (1012), so that its devices say hello again and their calls resume there.
   */
  private stepDown(): void {
    this.log.warn({ devices: this.local.size }, 'this node was taken for dead and its calls taken over; closing its sockets');
    this.hub.close();
    this.parties.clear();
    try {
      this.roomTraffic?.steppedDown();
    } catch (err) {
      this.log.error({ err }, 'ending the rooms of a node taken for dead failed');
    }
    for (const { link } of [...this.local.values()]) link.close(1012, 'server node restarting; reconnect');
  }

  /** A node was found dead here (once per death): the room proxy ends its rooms. */
  private nodeLost(node: string): void {
    try {
      this.roomTraffic?.nodeLost(node);
    } catch (err) {
      this.log.error({ err, deadNode: node }, 'room clean-up after a dead node failed');
    }
  }

  /**
   * Finds dead nodes: drops their links here; the node that removes one from
   * `parley:nodes` claims its calls.
   * @param leaving a node that said it is leaving (drain): dead now, whatever its last heartbeat.
   */
  private async sweep(leaving?: string): Promise<void> {
    if (this.closed || this.cmd.status !== 'ready') return;
    let entries: string[];
    try {
      entries = await this.cmd.zrange(K.nodes, 0, -1, 'WITHSCORES');
    } catch {
      return;
    }
    const now = Date.now();
    const alive = new Map<string, number>();
    for (let i = 0; i + 1 < entries.length; i += 2) alive.set(entries[i]!, Number(entries[i + 1]));
    // Just after a Redis restart the set is empty until every node beats again.
    const settled = now - this.readySince > 2 * NODE_DEAD_MS;
    const dead = new Set<string>();
    for (const [node, at] of alive) if (node !== this.nodeId && now - at > NODE_DEAD_MS) dead.add(node);
    if (leaving !== undefined && alive.has(leaving)) dead.add(leaving);
    for (const node of this.dead) if (node !== leaving && now - (alive.get(node) ?? 0) <= NODE_DEAD_MS) this.dead.delete(node);
    if (settled) for (const link of this.remotes.values()) if (!alive.has(link.node)) dead.add(link.node);
    const newly = [...dead].filter((n) => !this.dead.has(n));
    for (const node of dead) this.dead.add(node);
    for (const node of newly) this.nodeLost(node);
    if (dead.size === 0) return;
    /** Devices whose socket was on a dead node (they must say hello again to resume a call). */
    const lost = new Set<string>();
    for (const link of [...this.remotes.values()]) {
      if (!dead.has(link.node)) continue;
      lost.add(link.peer.deviceId);
      if (this.hub.linkOf(link.peer.deviceId) === link) this.hub.detach(link);
      this.remotes.delete(link.peer.deviceId);
    }
    for (const node of dead) {
      if (!alive.has(node)) continue;
      try {
        if ((await this.cmd.zrem(K.nodes, node)) === 1) await this.claim(node, lost, alive.get(node)!);
      } catch (err) {
        this.log.warn({ err: { message: (err as Error).message }, deadNode: node }, 'claiming a dead node failed');
      }
    }
  }

  /** Takes over the calls of a dead node (see the file comment). */
  /**
   * @param lost devices whose socket was on the dead node.
   * @param lastBeat the dead node's last heartbeat, Unix ms: a lost device's
   *   hello note older than that was written before it lost its socket (a
   *   reconnect earlier in the call) and proves nothing now.
   */
  private async claim(node: string, lost: ReadonlySet<string>, lastBeat = 0): Promise<void> {
    // Should it come back (it was frozen or cut off, not dead), it steps down (see heartbeat).
    if (node !== this.nodeId) {
      await this.cmd.set(K.nodeDead(node), '1', 'EX', 3600);
      this.publish(K.broadcast, { t: 'dead', node });
    }
    // Its group-call rooms went with its SFU: a late request for one hears `node_lost`.
    const rooms = node === this.nodeId ? [] : await this.cmd.smembers(K.nodeRooms(node));
    if (rooms.length > 0) {
      const m = this.cmd.multi().del(K.nodeRooms(node));
      for (const roomId of rooms) m.set(K.room(roomId), JSON.stringify({ ended: 'node_lost' } satisfies RoomLocation), 'EX', ENDED_ROOM_TTL_S);
      await m.exec();
    }
    const ids = await this.cmd.smembers(K.nodeCalls(node));
    this.log.warn({ deadNode: node, calls: ids.length, rooms: rooms.length }, 'node is dead; taking over its calls');
    await this.cmd.del(K.nodeCalls(node));
    // (Taking over one's own previous life: the answered calls are added back below, as the taker's.)
    for (const callId of ids) {
      const [[, v], [, notes]] = (await this.cmd.multi().get(K.call(callId)).hgetall(K.callHello(callId)).exec()) as [
        [unknown, string | null],
        [unknown, Record<string, string>],
      ];
      if (!v) continue;
      const record = JSON.parse(v) as ClusterCallRecord;
      if (record.answeredAt === null) await this.cmd.del(K.call(callId), K.callHello(callId));
      // An answered one is this node's now, waiting for its devices: a hello that lists it elsewhere finds it known.
      else
        await this.cmd
          .multi()
          .set(K.call(callId), JSON.stringify({ ...record, owner: this.nodeId }))
          .sadd(K.nodeCalls(this.nodeId), callId)
          .exec();
      // Out of the cluster's counts (a resumed call comes back in through its `call.resumed`).
      const m = this.cmd.multi().srem(K.calls, callId).srem(K.accountCalls(record.callerAccountId), callId).srem(K.accountCalls(record.calleeAccountId), callId);
      for (const d of record.devices) m.eval(DEL_IF_CONN, 1, K.busy(d), callId);
      await m.exec();
      if (record.answeredAt === null) {
        this.options.hooks.lostRinging(record);
        continue;
      }
      const confirmed = new Map<string, PeerInfo>();
      for (const p of Object.values(notes ?? {})) {
        const { at, ...peer } = JSON.parse(p) as HelloNote;
        if (lost.has(peer.deviceId) && !(at > lastBeat)) continue;
        confirmed.set(peer.deviceId, peer);
      }
      // A device that never lost its socket (it was on a live node) still carries the call.
      for (const d of record.devices) {
        const link = this.hub.linkOf(d);
        if (link && !lost.has(d) && !confirmed.has(d)) confirmed.set(d, link.peer);
      }
      this.options.hooks.lostAnswered(record, [...confirmed.values()]);
    }
  }

  /** Writes this node's presence keys again (their TTL), and drops mirrored devices whose key is gone. */
  private async refreshPresence(): Promise<void> {
    if (this.cmd.status !== 'ready') return;
    try {
      const m = this.cmd.multi();
      for (const [deviceId, l] of this.local) {
        const up: Wire = { t: 'up', node: this.nodeId, conn: l.conn, since: l.since, peer: l.link.peer };
        m.set(K.device(deviceId), JSON.stringify(up), 'PX', PRESENCE_TTL_MS);
      }
      await m.exec();
      // Down messages lost in a blip: once every node has written its keys again, a mirrored device without one is gone.
      if (Date.now() - this.readySince < 2 * PRESENCE_REFRESH_MS) return;
      const remotes = [...this.remotes.values()];
      for (let i = 0; i < remotes.length; i += 500) {
        const chunk = remotes.slice(i, i + 500);
        const values = await this.cmd.mget(...chunk.map((l) => K.device(l.peer.deviceId)));
        values.forEach((v, j) => {
          const link = chunk[j]!;
          if (!v && this.hub.linkOf(link.peer.deviceId) === link) this.hub.detach(link);
        });
      }
    } catch {
      // Next round.
    }
  }

  /** Reads every presence key (at start): the devices other nodes hold. */
  private async loadPresence(): Promise<void> {
    let cursor = '0';
    do {
      const [next, keys] = await this.cmd.scan(cursor, 'MATCH', 'parley:device:*', 'COUNT', 1000);
      cursor = next;
      if (keys.length === 0) continue;
      for (const v of await this.cmd.mget(...keys)) {
        if (!v) continue;
        const up = JSON.parse(v) as Extract<Wire, { t: 'up' }>;
        if (up.node !== this.nodeId) this.remoteUp(up);
      }
    } while (cursor !== '0');
  }

  /** After a Redis reconnect: presence keys, `up` for every local socket, and this node's call records again. */
  private async reannounce(): Promise<void> {
    try {
      const m = this.cmd.multi();
      m.zadd(K.nodes, Date.now(), this.nodeId);
      for (const [deviceId, l] of this.local) {
        const up: Wire = { t: 'up', node: this.nodeId, conn: l.conn, since: l.since, peer: l.link.peer };
        m.set(K.device(deviceId), JSON.stringify(up), 'PX', PRESENCE_TTL_MS);
        m.publish(K.broadcast, JSON.stringify(up));
      }
      for (const c of this.hub.list()) {
        const record: ClusterCallRecord = {
          callId: c.callId,
          owner: this.nodeId,
          callerAccountId: c.caller.accountId,
          calleeAccountId: c.callee.accountId,
          devices: c.callee.deviceId ? [c.caller.deviceId, c.callee.deviceId] : [c.caller.deviceId],
          answeredAt: c.answeredAt,
        };
        m.set(K.call(c.callId), JSON.stringify(record))
          .sadd(K.nodeCalls(this.nodeId), c.callId)
          .sadd(K.calls, c.callId)
          .sadd(K.accountCalls(c.caller.accountId), c.callId)
          .sadd(K.accountCalls(c.callee.accountId), c.callId);
        for (const d of this.parties.get(c.callId) ?? []) m.set(K.busy(d), c.callId);
      }
      await m.exec();
      await this.loadPresence();
    } catch (err) {
      this.log.warn({ err: { message: (err as Error).message } }, 'announcing again after a Redis reconnect failed');
    }
  }
}
