/**
 * Preload (sandboxed, built to out/preload/index.cjs): exposes one object,
 * `window.parley` (type `ParleyApi`, common/ipc), to the renderer — one
 * function per request of the contract and `subscribe` for its event names.
 * Nothing generic crosses the bridge: no raw `ipcRenderer.send`/`on`, no
 * channel names chosen by the page.
 */
import { contextBridge, ipcRenderer } from 'electron';
import {
  IPC_EVENT_CHANNEL,
  IPC_EVENT_NAMES,
  IPC_REQUEST_NAMES,
  ipcChannel,
  type IpcEventName,
  type ParleyApi,
} from '../common/ipc/contract';

/** Replaced at build time with package.json's version (electron.vite.config.ts). */
declare const __PARLEY_VERSION__: string;

const listeners = new Map<IpcEventName, Set<(payload: unknown) => void>>();
ipcRenderer.on(IPC_EVENT_CHANNEL, (_event, name: IpcEventName, payload: unknown) => {
  for (const l of listeners.get(name) ?? []) l(payload);
});

const request = Object.freeze(
  Object.fromEntries(IPC_REQUEST_NAMES.map((m) => [m, (params?: unknown) => ipcRenderer.invoke(ipcChannel(m), params)])),
) as ParleyApi['request'];

const api: ParleyApi = Object.freeze({
  version: __PARLEY_VERSION__,
  request,
  subscribe(event, listener) {
    if (!IPC_EVENT_NAMES.includes(event)) throw new Error(`unknown event "${String(event)}"`);
    const set = listeners.get(event) ?? new Set();
    set.add(listener as (payload: unknown) => void);
    listeners.set(event, set);
    return () => void set.delete(listener as (payload: unknown) => void);
  },
});

contextBridge.exposeInMainWorld('parley', api);
