import { z } from 'zod';
import { CallId } from '../common/call';
import { RoomId, RoomParticipant } from '../common/protocol/sfu';
import { PeerInfo } from '../common/protocol/signaling';

/**
 * The admin API: JSON-RPC 2.0 over a Unix socket (`<data dir>/admin.sock`,
 * mode 0600), one JSON message per line. Server-only: the desktop app never
 * speaks it. Every method's params and result are declared here once; the
 * server parses params with these schemas and the CLI prints the results.
 */

/** Largest admin message the server reads, characters (a longer line gets `payload_too_large`). */
export const ADMIN_MAX_MESSAGE = 64 * 1024;

const NoParams = z.object({}).strict();

/** A call as the admin API shows it. Times are Unix ms; durations seconds. */
export const AdminCall = z.object({
  callId: CallId,
  caller: PeerInfo,
  callee: z.object({
    accountId: z.string(),
    username: z.string(),
    /** The device that answered; null while ringing. */
    deviceId: z.string().nullable(),
  }),
  state: z.enum(['ringing', 'active']),
  createdAt: z.number(),
  answeredAt: z.number().nullable(),
  /** Seconds since the answer (0 while ringing). */
  durationSeconds: z.number(),
  ringingDevices: z.number().int(),
  /** Duration budget of the call used / remaining, seconds; null when no budget applies (see policy.*budget*). */
  budgetUsedSeconds: z.number().nullable(),
  budgetRemainingSeconds: z.number().nullable(),
  /** With `cluster: true`: the node that owns the call. */
  node: z.string().optional(),
});
export type AdminCall = z.infer<typeof AdminCall>;

/**
 * `cluster: true` (several nodes): every live node's list, each entry naming
 * its `node`; `missing` names nodes that did not answer within 2 s. Without
 * it (or with one node): this node's.
 */
export const ClusterListParams = z.object({ cluster: z.boolean().optional() }).strict();
export const CallsListResult = z.object({ calls: z.array(AdminCall), missing: z.array(z.string()).optional() });
export const CallsGetStatusParams = z.object({ callId: CallId }).strict();
export const CallsEndParams = z.object({ callId: CallId }).strict();
export const CallsEndResult = z.object({ ok: z.literal(true), reason: z.literal('policy') });

/** One audit record (see server/audit.ts for the event names and their details). */
export const AuditEvent = z.object({
  id: z.number().int(),
  at: z.number(),
  event: z.string(),
  accountId: z.string().nullable(),
  deviceId: z.string().nullable(),
  callId: z.string().nullable(),
  detail: z.record(z.string(), z.unknown()).nullable(),
});

export const AuditQueryParams = z
  .object({
    /** One event name or several. */
    event: z
      .union([z.string().min(1).max(64), z.array(z.string().min(1).max(64)).max(50)])
      .optional(),
    accountId: z.string().min(1).max(128).optional(),
    deviceId: z.string().min(1).max(128).optional(),
    callId: z.string().min(1).max(128).optional(),
    /** From this time (inclusive), Unix ms. */
    since: z.number().int().nonnegative().optional(),
    /** Up to this time (exclusive), Unix ms. */
    until: z.number().int().nonnegative().optional(),
    /** Page size, default 100. */
    limit: z.number().int().min(1).max(1000).optional(),
    /** `next` from the previous page. */
    cursor: z.string().min(1).max(64).optional(),
  })
  .strict();
/** Newest first; `next` is null on the last page. */
export const AuditQueryResult = z.object({
  events: z.array(AuditEvent),
  next: z.string().nullable(),
});

export const ConfigReloadResult = z.object({
  /** Config keys whose value differs from the running configuration (dotted TOML names). */
  changed: z.array(z.string()),
  /** Of those, the keys now in effect. */
  applied: z.array(z.string()),
  /** Of those, the keys that take effect only after a restart. */
  restartRequired: z.array(z.string()),
});

/** A group-call room on the SFU as the admin API shows it. Times are Unix ms. */
export const AdminRoom = z.object({
  roomId: RoomId,
  createdAt: z.number(),
  maxParticipants: z.number().int(),
  /** The mediasoup worker process carrying the room. */
  workerPid: z.number().int(),
  participants: z.array(
    RoomParticipant.extend({
      joinedAt: z.number(),
      /** Its producers (0 or 1: its microphone) and consumers (one per other producer it receives). */
      producers: z.number().int(),
      consumers: z.number().int(),
      /** Its signaling connection dropped and the SFU keeps its place for the grace (`[sfu] reconnect_grace_seconds`). */
      away: z.boolean(),
      /**
       * Where each of its transports' media comes from: the ICE-selected remote
       * address (`ip:port`; a TURN relay's address when it is relayed), null before ICE completes.
       */
      paths: z.array(z.object({ direction: z.enum(['send', 'recv']), remote: z.string().nullable() })),
    }),
  ),
  /** With `cluster: true`: the node whose SFU carries the room. */
  node: z.string().optional(),
});
export type AdminRoom = z.infer<typeof AdminRoom>;
export const RoomsListResult = z.object({ rooms: z.array(AdminRoom), missing: z.array(z.string()).optional() });
/** Ends a room for everyone in it: they get `room.ended` with reason `ended_by_admin`. */
export const RoomsEndParams = z.object({ roomId: RoomId }).strict();
export const RoomsEndResult = z.object({ ok: z.literal(true), reason: z.literal('ended_by_admin') });

/** Every admin method with its params and result schema. */
export const ServerDrainResult = z.object({ ok: z.literal(true), draining: z.literal(true) });

export const AdminRequests = {
  'calls.list': { params: ClusterListParams, result: CallsListResult },
  'calls.get_status': { params: CallsGetStatusParams, result: AdminCall },
  'calls.end': { params: CallsEndParams, result: CallsEndResult },
  'audit.query': { params: AuditQueryParams, result: AuditQueryResult },
  'config.reload': { params: NoParams, result: ConfigReloadResult },
  'rooms.list': { params: ClusterListParams, result: RoomsListResult },
  'rooms.end': { params: RoomsEndParams, result: RoomsEndResult },
  /**
   * Drains this node for a rolling restart (docs/deploy.md): readiness fails,
   * its calls move to another node, its clients reconnect elsewhere, and the
   * process exits once they are gone. Answers at once.
   */
  'server.drain': { params: NoParams, result: ServerDrainResult },
} as const;
export type AdminMethod = keyof typeof AdminRequests;
export type AdminResult<M extends AdminMethod> = z.infer<(typeof AdminRequests)[M]['result']>;
