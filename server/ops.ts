import type { FastifyInstance } from 'fastify';
import { sql, type Kysely } from 'kysely';
import type { DB } from './db';
import type { ServerMetrics } from './metrics';

/** How long /readyz waits for the store, ms. */
const DB_PROBE_TIMEOUT_MS = 1000;

/**
 * Registers the operator endpoints on `app`:
 * - `GET /readyz` → 200 `{ready:true}` when listening and the store answers a query;
 *   503 `{ready:false, reason}` otherwise (reason: `draining` (a rolling restart: take the node out), `shutting down`, `not listening`, `database unreachable`,
 *   and with several nodes `redis unreachable`: this node cannot reach the cluster's Redis).
 * - `GET /metrics` → Prometheus text exposition format (see ServerMetrics).
 * @param state.closing true once shutdown began; `draining` once a drain began.
 */
export function registerOpsRoutes(
  app: FastifyInstance,
  deps: { db: Kysely<DB>; metrics: ServerMetrics; state: { closing: boolean; draining?: boolean }; cluster?: { readonly connected: boolean } | undefined },
): void {
  app.get('/readyz', async (_req, reply) => {
    const notReady = (reason: string) => reply.status(503).send({ ready: false, reason });
    if (deps.state.draining) return notReady('draining');
    if (deps.state.closing) return notReady('shutting down');
    if (!app.server.listening) return notReady('not listening');
    try {
      await withTimeout(sql`select 1`.execute(deps.db), DB_PROBE_TIMEOUT_MS);
    } catch {
      return notReady('database unreachable');
    }
    if (deps.cluster && !deps.cluster.connected) return notReady('redis unreachable');
    return { ready: true };
  });

  app.get('/metrics', async (_req, reply) => {
    const text = await deps.metrics.registry.metrics();
    return reply.type(deps.metrics.registry.contentType).send(text);
  });
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timeout')), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
