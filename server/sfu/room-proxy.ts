import type { Logger } from 'pino';
import type { z } from 'zod';
import { ParleyError } from '../../common/errors';
import { RpcPeer } from '../../common/protocol/rpc';
import { MAX_MESSAGE_BYTES, type PeerInfo } from '../../common/protocol/signaling';
import { RoomEndReason } from '../../common/protocol/sfu';
import type { Cluster } from '../cluster';
import type { Ctx, SignalConnection, SignalDeps, SignalModule } from '../signal/module';
import { roomEnded } from './room';

/**
 * Group-call rooms across cluster nodes (issue 15 item 4), LiveKit's model: a
 * room lives on the SFU of one node — the node whose client created it — and
 * Redis records where (`parley:room:<id>`, server/cluster.ts). A client on
 * any other node reaches it through this proxy:
 *
 * - **Requests.** Every `room.*` request whose `roomId` names a room that
 *   another node carries is sent, as the client's own JSON-RPC frame, to that
 *   node, which runs it on a *remote connection* standing in for the client's
 *   socket: an RpcPeer with every handler module's `room.*` methods
 *   (SIGNAL_MODULES, so a room method added there is proxied with no change
 *   here). The owner's reply and its notifications to the participant
 *   (`room.producer_added`, `room.speaker`, `room.message`, …) come back on the
 *   client node's channel and are written to the socket as they are. Frames
 *   stay in order: the client node waits for the owner to finish a request
 *   (at most PROXY_TIMEOUT_MS, then `unavailable`) before the next frame.
 * - **Media** never crosses nodes: the transports the owner creates carry its
 *   own `[sfu] announced_address`, so the client's WebRTC connects straight
 *   to the owning node's SFU.
 * - **Leaving.** When the client's socket closes, the owner closes the remote
 *   connection, which leaves its rooms like a socket closing there would.
 * - **A node lost** (dead, or leaving on purpose): its rooms end `node_lost`
 *   for every participant elsewhere (a `room.ended` notification, and requests
 *   in flight answered `room_ended`); the remote connections its clients had
 *   on other nodes are closed (they leave their rooms).
 *
 * Transport: the cluster's per-node pub/sub channel (at-most-once). A request
 * lost in a Redis blip is answered `unavailable` after PROXY_TIMEOUT_MS; a
 * lost notification is lost (as for 1:1 relays in a blip).
 */
export class RoomProxy {
  /** Client connections on this node, by connection id. */
  private readonly clients = new Map<string, ProxiedConnection>();
  /** Remote connections this node runs for clients of other nodes, by `${node} ${conn}`. */
  private readonly remotes = new Map<string, RemoteConnection>();
  private connSeq = 0;

  /**
   * @param deps the server's handler dependencies (the remote connections run the handler modules with them).
   * @param modules the handler modules; their `room.*` methods serve remote clients.
   */
  constructor(
    private readonly cluster: Cluster,
    private readonly deps: SignalDeps,
    private readonly modules: readonly SignalModule[],
    private readonly log: Logger,
  ) {
    cluster.setRoomTraffic({
      message: (from, body) => this.receive(from, body as Wire),
      nodeLost: (node) => this.nodeLost(node),
      steppedDown: () => this.steppedDown(),
    });
  }

  /** This node's id. */
  get nodeId(): string {
    return this.cluster.nodeId;
  }

  /**
   * A new client socket on this node: returns its part of the proxy.
   * @param send writes one text frame to the socket.
   * @param me the authenticated device (throws before hello or after the token's end).
   */
  attach(send: (text: string) => void, me: () => PeerInfo): ProxiedConnection {
    const c = new ProxiedConnection(`${this.cluster.nodeId}/${++this.connSeq}`, send, me, this);
    this.clients.set(c.id, c);
    return c;
  }

  /** Whether device `deviceId` shares a room carried by another node with a device of `accountId` (keys.get). */
  async sharesRemoteRoom(deviceId: string, accountId: string): Promise<boolean> {
    for (const c of this.clients.values()) {
      const peer = c.peerOrUndefined();
      if (peer?.deviceId !== deviceId) continue;
      for (const [roomId, node] of c.rooms) {
        if (await c.ask(node, { k: 'shares', roomId, deviceId, accountId })) return true;
      }
    }
    return false;
  }

  /** Records the rooms this node's SFU opens (await before the room id is handed out). */
  roomOpened(roomId: string): Promise<void> {
    return this.cluster.roomOpened(roomId).catch((err: unknown) => {
      this.log.warn({ err: { message: (err as Error).message }, roomId }, 'room not recorded in Redis; clients on other nodes cannot reach it');
    });
  }

  /** Records that a room of this node ended (its creator's account `hostAccountId`, for the per-account room count). */
  roomEnded(roomId: string, reason: RoomEndReason, hostAccountId?: string): void {
    this.cluster.roomEnded(roomId, reason, hostAccountId);
  }

  /** @internal */
  send(node: string, body: Wire): void {
    this.cluster.sendRoom(node, body);
  }

  /** @internal */
  forget(c: ProxiedConnection): void {
    this.clients.delete(c.id);
  }

  /** @internal Where a room other than this node's is: its node, or why it ended. */
  async locate(roomId: string): Promise<{ node: string } | { ended: RoomEndReason } | undefined> {
    const where = await this.cluster.roomLocation(roomId);
    if (!where) return undefined;
    if ('node' in where) {
      if (where.node === this.cluster.nodeId) return undefined;
      if (this.cluster.isDead(where.node)) return { ended: 'node_lost' };
      return where;
    }
    const reason = RoomEndReason.safeParse(where.ended);
    return { ended: reason.success ? reason.data : 'node_lost' };
  }

  /** @internal */
  isLocal(roomId: string): boolean {
    try {
      this.deps.sfu.room(roomId);
      return true;
    } catch {
      return false;
    }
  }

  private receive(from: string, m: Wire): void {
    switch (m.k) {
      case 'req': {
        const key = `${from} ${m.conn}`;
        let r = this.remotes.get(key);
        if (!r) {
          r = new RemoteConnection(from, m.conn, m.peer, this.deps, this.modules, this.log, (text) => this.send(from, { k: 'out', conn: m.conn, text }));
          this.remotes.set(key, r);
        }
        r.request(m.peer, m.text, () => this.send(from, { k: 'done', conn: m.conn, seq: m.seq }));
        return;
      }
      case 'closed': {
        const key = `${from} ${m.conn}`;
        this.remotes.get(key)?.close();
        this.remotes.delete(key);
        return;
      }
      case 'ask': {
        let answer = false;
        try {
          answer = this.deps.sfu.room(m.q.roomId).hasBoth(m.q.deviceId, m.q.accountId);
        } catch {
          // an ended room shares nothing
        }
        this.send(from, { k: 'answer', conn: m.conn, seq: m.seq, answer });
        return;
      }
      case 'out':
      case 'done':
      case 'answer':
        this.clients.get(m.conn)?.receive(m);
        return;
    }
  }

  /** The others took this node for dead and told its rooms' remote participants `node_lost`: its rooms end here too. */
  private steppedDown(): void {
    for (const r of this.remotes.values()) r.close();
    this.remotes.clear();
    const rooms = this.deps.sfu.list();
    for (const room of rooms) {
      try {
        this.deps.sfu.end(room.roomId, 'node_lost');
      } catch {
        // ended meanwhile
      }
    }
    if (rooms.length > 0) this.log.warn({ rooms: rooms.length }, 'rooms of this node ended (node_lost): it was taken for dead');
  }

  private nodeLost(node: string): void {
    for (const [key, r] of this.remotes) {
      if (r.node !== node) continue;
      r.close();
      this.remotes.delete(key);
    }
    let told = 0;
    for (const c of this.clients.values()) told += c.nodeLost(node);
    if (told > 0) this.log.warn({ deadNode: node, participants: told }, 'rooms of a lost node ended (node_lost)');
  }
}

/** How long a proxied room request may take on its node before the client is answered `unavailable`, ms. */
export const PROXY_TIMEOUT_MS = 10_000;

/** What nodes send each other about rooms (inside the cluster's `room` message). */
type Wire =
  /** Client node → owner: one JSON-RPC frame of client connection `conn`. */
  | { k: 'req'; conn: string; seq: number; peer: PeerInfo; text: string }
  /** Owner → client node: a frame for the client (a reply or a notification). */
  | { k: 'out'; conn: string; text: string }
  /** Owner → client node: request `seq` is done (its reply, if any, was sent before). */
  | { k: 'done'; conn: string; seq: number }
  /** Client node → owner: the client's socket closed. */
  | { k: 'closed'; conn: string }
  /** A yes/no question about a room (does it hold both?), and its answer. */
  | { k: 'ask'; conn: string; seq: number; q: { k: 'shares'; roomId: string; deviceId: string; accountId: string } }
  | { k: 'answer'; conn: string; seq: number; answer: boolean };

/**
 * One client socket's part of the proxy, on the node holding the socket
 * (server/signal/connection.ts calls {@link intercept} for every frame and
 * {@link close} when the socket closes).
 */
export class ProxiedConnection {
  /** Rooms on other nodes this connection sent requests to, with their node. */
  readonly rooms = new Map<string, string>();
  private seq = 0;
  private readonly waiting = new Map<number, { node: string; done: (answer?: boolean) => void; timer: NodeJS.Timeout }>();
  private closed = false;

  constructor(
    readonly id: string,
    private readonly sendToClient: (text: string) => void,
    private readonly me: () => PeerInfo,
    private readonly proxy: RoomProxy,
  ) {}

  /** The authenticated device, or undefined (before hello, after the token's end). */
  peerOrUndefined(): PeerInfo | undefined {
    try {
      return this.me();
    } catch {
      return undefined;
    }
  }

  /**
   * Takes one inbound frame: a `room.*` request about a room another node
   * carries goes there (and this resolves once that node has handled it); a
   * request about a room that ended on a lost node is answered `room_ended`
   * here. Everything else is left to this node's handlers.
   * @returns true when the frame was handled here (do not handle it again).
   */
  async intercept(text: string): Promise<boolean> {
    if (this.closed || !text.includes('"room.') || text.length > MAX_MESSAGE_BYTES) return false;
    let frame: { method?: unknown; id?: unknown; params?: unknown };
    try {
      frame = JSON.parse(text) as typeof frame;
    } catch {
      return false;
    }
    if (!frame || typeof frame !== 'object' || typeof frame.method !== 'string' || !frame.method.startsWith('room.')) return false;
    const roomId = (frame.params as { roomId?: unknown } | null | undefined)?.roomId;
    if (typeof roomId !== 'string' || this.proxy.isLocal(roomId)) return false;
    // Before hello (or with an expired token) this node's handler gives the right error.
    const peer = this.peerOrUndefined();
    if (!peer) return false;
    const id = typeof frame.id === 'string' || typeof frame.id === 'number' ? frame.id : undefined;
    let where: Awaited<ReturnType<RoomProxy['locate']>>;
    try {
      const known = this.rooms.get(roomId);
      where = known !== undefined ? { node: known } : await this.proxy.locate(roomId);
    } catch (e) {
      this.answerError(id, e instanceof ParleyError ? e : new ParleyError('unavailable', 'try again shortly'));
      return true;
    }
    if (!where) return false; // no node has it: this node answers not_found
    if ('ended' in where) {
      this.answerError(id, roomEnded(roomId, where.ended));
      return true;
    }
    this.rooms.set(roomId, where.node);
    const seq = ++this.seq;
    const done = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(seq);
        this.answerError(id, new ParleyError('unavailable', 'the server node carrying this room did not answer in time; try again'));
        resolve();
      }, PROXY_TIMEOUT_MS);
      this.waiting.set(seq, { node: where.node, done: () => resolve(), timer });
    });
    this.proxy.send(where.node, { k: 'req', conn: this.id, seq, peer, text });
    await done;
    return true;
  }

  /** Asks the owner of a room a yes/no question (false when it does not answer in time). @internal */
  ask(node: string, q: Extract<Wire, { k: 'ask' }>['q']): Promise<boolean> {
    const seq = ++this.seq;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(seq);
        resolve(false);
      }, 2000);
      this.waiting.set(seq, { node, done: (answer) => resolve(answer === true), timer });
      this.proxy.send(node, { k: 'ask', conn: this.id, seq, q });
    });
  }

  /** @internal A message from an owner for this connection. */
  receive(m: Extract<Wire, { k: 'out' | 'done' | 'answer' }>): void {
    if (m.k === 'out') {
      if (!this.closed) this.sendToClient(m.text);
      return;
    }
    const w = this.waiting.get(m.seq);
    if (!w) return;
    this.waiting.delete(m.seq);
    clearTimeout(w.timer);
    w.done(m.k === 'answer' ? m.answer : undefined);
  }

  /**
   * Node `node` is lost: its rooms end `node_lost` for this client (a
   * `room.ended` for each room it reached there); requests waiting on it are
   * answered now. @returns how many rooms ended. @internal
   */
  nodeLost(node: string): number {
    let n = 0;
    for (const [roomId, owner] of [...this.rooms]) {
      if (owner !== node) continue;
      this.rooms.delete(roomId);
      n++;
      // Should the node only have been frozen, it closes this participant's place when it wakes (it steps down anyway).
      this.proxy.send(node, { k: 'closed', conn: this.id });
      if (!this.closed) this.sendToClient(JSON.stringify({ jsonrpc: '2.0', method: 'room.ended', params: { roomId, reason: 'node_lost' } }));
    }
    for (const [seq, w] of [...this.waiting]) {
      if (w.node !== node) continue;
      this.waiting.delete(seq);
      clearTimeout(w.timer);
      w.done();
    }
    return n;
  }

  /** The socket closed: the owners close their remote connections (their rooms see this device leave). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const node of new Set(this.rooms.values())) this.proxy.send(node, { k: 'closed', conn: this.id });
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.done();
    }
    this.waiting.clear();
    this.proxy.forget(this);
  }

  private answerError(id: string | number | undefined, e: ParleyError): void {
    if (id === undefined || this.closed) return;
    this.sendToClient(JSON.stringify({ jsonrpc: '2.0', id, error: e.toJsonRpc() }));
  }
}

/** An RpcPeer that takes only `room.*` methods (a remote connection serves nothing else). */
class RoomMethodsPeer extends RpcPeer<Ctx> {
  override handle<S extends z.ZodType, R>(
    method: string,
    schema: S,
    handler: (params: z.infer<S>, ctx: Ctx) => R | Promise<R>,
    mapError?: (error: ParleyError) => ParleyError,
  ): void {
    if (method.startsWith('room.')) super.handle(method, schema, handler, mapError);
  }
}

/**
 * The stand-in, on a room's node, for a client socket held by another node:
 * the handler modules' `room.*` methods registered on it as on a socket, its
 * frames handled one at a time in order, its output sent back to the
 * client's node.
 */
class RemoteConnection {
  private peerInfo: PeerInfo;
  private readonly rpc: RoomMethodsPeer;
  private readonly closeHooks: (() => void)[] = [];
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    readonly node: string,
    conn: string,
    peer: PeerInfo,
    deps: SignalDeps,
    modules: readonly SignalModule[],
    log: Logger,
    send: (text: string) => void,
  ) {
    this.peerInfo = peer;
    const connLog = log.child({ remoteNode: node, remoteConn: conn, accountId: peer.accountId, deviceId: peer.deviceId });
    this.rpc = new RoomMethodsPeer((text) => {
      if (!this.closed) send(text);
    }, {
      maxMessageBytes: MAX_MESSAGE_BYTES,
      onInternalError: (method, err) => connLog.error({ err, method }, 'proxied room handler failed'),
    });
    const sc: SignalConnection = {
      peer: this.rpc,
      remote: `node ${node}`,
      log: connLog,
      link: undefined,
      me: () => this.peerInfo,
      isClosed: () => this.closed,
      bind: () => {
        throw new ParleyError('invalid_state', 'hello is not proxied');
      },
      setTokenExpiry: () => {},
      onClose: (fn) => {
        this.closeHooks.push(fn);
      },
    };
    for (const register of modules) register(sc, deps);
  }

  /** Handles one frame after the ones before it; `done` runs once its reply (if any) is sent. */
  request(peer: PeerInfo, text: string, done: () => void): void {
    this.peerInfo = peer;
    this.queue = this.queue
      .then(async () => {
        const deferred: (() => void)[] = [];
        if (!this.closed) await this.rpc.receive(text, { afterReply: (fn) => deferred.push(fn) });
        for (const fn of deferred) fn();
      })
      .catch(() => {})
      .finally(done);
  }

  /** The client's socket closed (or its node was lost): leave its rooms. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.rpc.close();
    for (const fn of this.closeHooks) {
      try {
        fn();
      } catch {
        // a hook's failure must not stop the others
      }
    }
  }
}
