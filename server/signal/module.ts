import type { Logger } from 'pino';
import type { RpcPeer } from '../../common/protocol/rpc';
import type { PeerInfo } from '../../common/protocol/signaling';
import type { Accounts } from '../accounts';
import type { CallerApprovals } from '../approvals';
import type { AuditLog } from '../audit';
import type { ServerConfig } from '../config';
import type { Contacts } from '../contacts';
import type { DeviceLinks } from '../device-links';
import type { Cluster } from '../cluster';
import type { DeviceLink, Hub } from '../hub';
import type { Interceptor } from '../intercept';
import type { ServerMetrics } from '../metrics';
import type { OpenCalls } from '../open-calls';
import type { CallPolicy } from '../policy';
import type { RelayService } from '../relays';
import type { CallResumption } from '../resume';
import type { RoomProxy } from '../sfu/room-proxy';
import type { Sfu } from '../sfu/sfu';
import type { RoomInvitations } from '../sfu/invitations';

/** Per-message context: work to run once the request's reply has been sent. */
export interface Ctx {
  afterReply: (fn: () => void) => void;
}

/** What the signaling handlers use; built once per server (server/app.ts). */
export interface SignalDeps {
  accounts: Accounts;
  contacts: Contacts;
  policy: CallPolicy;
  relays: RelayService;
  openCalls: OpenCalls;
  /** Answered calls a crash left open, waiting for their devices (server/resume.ts). */
  resumption: CallResumption;
  approvals: CallerApprovals;
  /** Device-linking rendezvous (server/device-links.ts). */
  links: DeviceLinks;
  hub: Hub;
  /** The live configuration (config.reload replaces its fields; read at use). */
  config: ServerConfig;
  log: Logger;
  audit: AuditLog;
  metrics: ServerMetrics;
  /** The SFU for group calls (server/sfu/). */
  sfu: Sfu;
  /** Group ringing, call links and knocks of this node's rooms (server/sfu/invitations.ts). */
  roomInvitations: RoomInvitations;
  /** Several nodes (server/cluster.ts); undefined for one process (no `[cluster] redis_url`). */
  cluster?: Cluster | undefined;
  /** Several nodes: `room.*` requests about rooms other nodes carry go there (server/sfu/room-proxy.ts). */
  roomProxy?: RoomProxy | undefined;
  /** TEST ONLY (server/intercept.ts): rewrites outbound messages; absent in production. */
  intercept?: Interceptor | undefined;
}

/**
 * One signaling WebSocket as the handler modules see it (server/signal/connection.ts
 * owns framing, rate limits, the hello deadline and token expiry).
 */
export interface SignalConnection {
  /** Register handlers here: `conn.peer.handle(method, SignalRequests[method].params, fn)`. */
  readonly peer: RpcPeer<Ctx>;
  /** The client's address as the front door saw it (server/front-door.ts). */
  readonly remote: string;
  /** The connection's logger; after hello it carries accountId and deviceId. */
  readonly log: Logger;
  /** The device bound by hello, or undefined before it. */
  readonly link: DeviceLink | undefined;
  /**
   * The authenticated device.
   * @throws ParleyError `unauthenticated` before hello, `token_expired` once the token has expired.
   */
  me(): PeerInfo;
  /** True once the socket has closed (handlers that awaited must check before acting). */
  isClosed(): boolean;
  /**
   * Binds the device after a successful hello: attaches it to the hub, stops the hello deadline,
   * arms the token-expiry close.
   * @param tokenExpiresAt Unix ms.
   * @throws ParleyError `invalid_state` when a device is already bound; `unavailable` when closed.
   */
  bind(peer: PeerInfo, tokenExpiresAt: number): DeviceLink;
  /** A refreshed token's expiry, Unix ms (re-arms the expiry close). */
  setTokenExpiry(tokenExpiresAt: number): void;
  /** Runs `fn` when the socket closes, after the device has been detached from the hub. */
  onClose(fn: () => void): void;
}

/** A group of handlers, registered on every new connection (the list is in connection.ts). */
export type SignalModule = (conn: SignalConnection, deps: SignalDeps) => void;
