/**
 * The renderer's handle on the main process: `window.parley` from the preload
 * in Electron, or — in a plain browser (`npm run dev:web`, the UI tests) — the
 * same contract over the development bridge's WebSocket, whose token arrives
 * in the page URL's fragment (`#bridge=<token>`).
 *
 * Only types come from common/ipc; nothing here touches Node.
 */
import type { IpcError, IpcEvent, IpcEventName, IpcRequestName, ParleyApi } from '../../../common/ipc/contract';
import { z } from 'zod';
import { RpcPeer } from '../../../common/protocol/rpc';

const BridgeEvent = z.object({ name: z.string(), payload: z.unknown() });

/** An error a request rejected with, in words for the user. */
export class RequestError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

function asRequestError(e: unknown): RequestError {
  if (e && typeof e === 'object' && 'reason' in e && 'message' in e) {
    const err = e as IpcError;
    return new RequestError(err.reason, err.message);
  }
  // Electron wraps errors thrown by a handler: "Error invoking remote method 'x': Error: <json>".
  const text = e instanceof Error ? e.message : String(e);
  const json = text.match(/\{.*\}$/)?.[0];
  if (json) {
    try {
      const err = JSON.parse(json) as IpcError;
      return new RequestError(err.reason, err.message);
    } catch {
      /* fall through */
    }
  }
  return new RequestError('internal_error', text);
}

/** Calls one request; rejects with a RequestError. */
export async function request<M extends IpcRequestName>(
  api: ParleyApi,
  method: M,
  params?: Parameters<ParleyApi['request'][M]>[0],
): Promise<Awaited<ReturnType<ParleyApi['request'][M]>>> {
  try {
    return (await api.request[method](params as never)) as Awaited<ReturnType<ParleyApi['request'][M]>>;
  } catch (e) {
    throw asRequestError(e);
  }
}

/** Connects to the development bridge named in the page URL. */
function bridgeApi(token: string): Promise<ParleyApi> {
  const listeners = new Map<string, Set<(p: unknown) => void>>();
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/bridge`;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, [`parley-bridge.${token}`]);
    const rpc = new RpcPeer((text) => ws.send(text), { maxMessageBytes: 4 * 1024 * 1024, requestTimeoutMs: 60_000 });
    rpc.handle('event', BridgeEvent, (p) => {
      for (const l of listeners.get(p.name) ?? []) l(p.payload);
    });
    ws.onmessage = (m) => void rpc.receive(String(m.data), undefined);
    ws.onerror = () => reject(new Error('cannot reach the Parley core (development bridge)'));
    ws.onclose = () => {
      for (const l of listeners.get('session') ?? []) l({ signedIn: false, connection: 'offline', detail: 'bridge closed' });
    };
    ws.onopen = () => {
      const requestFns = new Proxy({} as ParleyApi['request'], {
        get: (_t, method: string) => async (params?: unknown) => {
          try {
            return await rpc.request(method, (params ?? {}) as object);
          } catch (e) {
            const err = e as { reason?: string; message?: string };
            throw { code: 0, reason: err.reason ?? 'internal_error', message: err.message ?? String(e) } satisfies IpcError;
          }
        },
      });
      resolve({
        version: 'dev',
        request: requestFns,
        subscribe<E extends IpcEventName>(event: E, listener: (payload: IpcEvent<E>) => void) {
          const set = listeners.get(event) ?? new Set();
          set.add(listener as (p: unknown) => void);
          listeners.set(event, set);
          return () => set.delete(listener as (p: unknown) => void);
        },
      });
    };
  });
}

/** The API of this page: the preload's in Electron, else the development bridge's. */
export async function connectApi(): Promise<ParleyApi> {
  if (window.parley) return window.parley;
  const token = new URLSearchParams(location.hash.slice(1)).get('bridge');
  if (!token) throw new Error('Parley runs inside its desktop app, or through "npm run dev:web"');
  return bridgeApi(token);
}
