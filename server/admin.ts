import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { ParleyError } from '../common/errors';
import { RpcPeer } from '../common/protocol/rpc';
import {
  ADMIN_MAX_MESSAGE,
  AdminRequests,
  type AdminCall,
  type AdminRoom,
  type ConfigReloadResult,
} from './admin-schema';
import type { AuditLog } from './audit';
import type { GatherKind } from './cluster';
import type { CallSnapshot, Hub } from './hub';
import type { Sfu } from './sfu/sfu';

/** What the admin API acts on. */
export interface AdminDeps {
  hub: Hub;
  sfu: Sfu;
  audit: AuditLog;
  log: Logger;
  /**
   * Re-reads the config file and applies what can change at run time.
   * @throws ParleyError when the file is unreadable or invalid (the running config stays).
   */
  reloadConfig(): z.infer<typeof ConfigReloadResult>;
  /** Starts a drain (server/app.ts ParleyServer.drain); the process exits when it is done. */
  drain?: () => void;
  /** Several nodes: every live node's part of a list (server/cluster.ts gather). */
  gather?: (kind: GatherKind) => Promise<{ parts: { node: string; items: unknown[] }[]; missing: string[] }>;
}

/** A listening admin socket. */
export interface AdminSocket {
  readonly path: string;
  /** Stops listening, ends open admin connections and removes the socket file. Idempotent. */
  close(): Promise<void>;
}

/** A hub's call as the admin API shows it. */
export function toAdminCall(c: CallSnapshot): AdminCall {
  const { budgetSeconds, ...rest } = c;
  return {
    ...rest,
    budgetUsedSeconds: budgetSeconds === null ? null : c.durationSeconds,
    budgetRemainingSeconds:
      budgetSeconds === null ? null : Math.max(0, budgetSeconds - c.durationSeconds),
  };
}

/** Registers the admin methods of `AdminRequests` on one connection's peer. */
function registerMethods(peer: RpcPeer, deps: AdminDeps): void {
  const { hub, audit, log } = deps;
  peer.handle('calls.list', AdminRequests['calls.list'].params, async (p) => {
    if (!p.cluster || !deps.gather) return { calls: hub.list().map(toAdminCall) };
    const { parts, missing } = await deps.gather('calls');
    return { calls: parts.flatMap(({ node, items }) => (items as AdminCall[]).map((c) => ({ ...c, node }))), missing };
  });
  peer.handle('calls.get_status', AdminRequests['calls.get_status'].params, (p) => {
    const call = hub.get(p.callId);
    if (!call) throw new ParleyError('call_not_found', `no call ${p.callId}`);
    return toAdminCall(call);
  });
  peer.handle('calls.end', AdminRequests['calls.end'].params, (p) => {
    if (!hub.endCall(p.callId, 'policy', 'admin'))
      throw new ParleyError('call_not_found', `no call ${p.callId}`);
    log.warn({ callId: p.callId }, 'call ended by the admin API');
    return { ok: true as const, reason: 'policy' as const };
  });
  peer.handle('audit.query', AdminRequests['audit.query'].params, (p) => {
    const { event, ...rest } = p;
    return audit.query({ ...rest, events: event === undefined ? undefined : [event].flat() });
  });
  peer.handle('config.reload', AdminRequests['config.reload'].params, () => deps.reloadConfig());
  peer.handle('server.drain', AdminRequests['server.drain'].params, () => {
    if (!deps.drain) throw new ParleyError('invalid_state', 'this server cannot drain');
    log.warn('drain requested by the admin API');
    deps.drain();
    return { ok: true as const, draining: true as const };
  });
  peer.handle('rooms.list', AdminRequests['rooms.list'].params, async (p) => {
    if (!p.cluster || !deps.gather) return { rooms: deps.sfu.list() };
    const { parts, missing } = await deps.gather('rooms');
    return { rooms: parts.flatMap(({ node, items }) => (items as AdminRoom[]).map((r) => ({ ...r, node }))), missing };
  });
  peer.handle('rooms.end', AdminRequests['rooms.end'].params, (p) => {
    deps.sfu.end(p.roomId, 'ended_by_admin');
    log.warn({ roomId: p.roomId }, 'room ended by the admin API');
    return { ok: true as const, reason: 'ended_by_admin' as const };
  });
}

/** Serves one admin connection: newline-delimited JSON-RPC 2.0 through RpcPeer. */
function serveConnection(socket: Socket, deps: AdminDeps): void {
  const peer = new RpcPeer(
    (text) => {
      if (!socket.destroyed) socket.write(`${text}\n`);
    },
    {
      maxMessageBytes: ADMIN_MAX_MESSAGE,
      onInternalError: (method, err) => deps.log.error({ err, method }, 'admin handler failed'),
    },
  );
  registerMethods(peer, deps);
  let buffered = '';
  let queue = Promise.resolve();
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    if (buffered.length > ADMIN_MAX_MESSAGE) {
      const e = new ParleyError(
        'payload_too_large',
        `line longer than ${ADMIN_MAX_MESSAGE} characters`,
      );
      socket.end(`${JSON.stringify({ jsonrpc: '2.0', id: null, error: e.toJsonRpc() })}\n`);
      buffered = '';
      return;
    }
    for (const line of lines) {
      if (line.trim() === '') continue;
      queue = queue.then(() => peer.receive(line, undefined));
    }
  });
  socket.on('error', () => socket.destroy());
  socket.on('close', () => peer.close());
}

/** True when something accepts connections on the Unix socket `path`. */
function socketIsLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/**
 * Listens for admin connections on the Unix socket `path` (mode 0600: only
 * the server's own user may connect). A stale socket file left by a crashed
 * server is removed first.
 * @throws Error when another live server already listens there, or the path cannot be bound.
 */
export async function startAdminSocket(path: string, deps: AdminDeps): Promise<AdminSocket> {
  if (existsSync(path)) {
    if (await socketIsLive(path))
      throw new Error(`another server is already listening on the admin socket ${path}`);
    unlinkSync(path);
  }
  const open = new Set<Socket>();
  const server: Server = createServer((socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    serveConnection(socket, deps);
  });
  // Create the socket file without group/other permissions, then make sure of it.
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(umask);
  }
  chmodSync(path, 0o600);
  let closing: Promise<void> | undefined;
  return {
    path,
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      });
      return closing;
    },
  };
}
