/**
 * The IPC contract (common/ipc) on Electron's ipcMain: one `handle` per
 * request, each checking that the sender is the top frame of our own page and
 * validating the params with the contract's schema (ipc-handlers.ts); events go
 * to every window of ours with `webContents.send(IPC_EVENT_CHANNEL, name, payload)`.
 */
import { ipcMain, type BrowserWindow, type IpcMainInvokeEvent } from 'electron';
import { ParleyError } from '../../common/errors';
import { IPC_EVENT_CHANNEL, IPC_EVENT_NAMES, IPC_REQUEST_NAMES, ipcChannel } from '../../common/ipc/contract';
import type { Softphone } from '../core/softphone';
import { createHandlers, dispatch, toIpcError } from './ipc-handlers';

export function registerIpc(
  phone: Softphone,
  isTrustedSender: (e: IpcMainInvokeEvent) => boolean,
  windows: () => BrowserWindow[],
): () => void {
  const handlers = createHandlers(phone);
  for (const m of IPC_REQUEST_NAMES) {
    ipcMain.handle(ipcChannel(m), async (event, params: unknown) => {
      try {
        if (!isTrustedSender(event)) throw new ParleyError('forbidden', 'request from a page that is not Parley’s');
        return await dispatch(handlers, m, params);
      } catch (e) {
        // Electron passes only the message across; the renderer parses this JSON back (renderer/src/lib/api.ts).
        throw new Error(JSON.stringify(toIpcError(e)), { cause: e });
      }
    });
  }
  const unsubscribe: (() => void)[] = [];
  for (const name of IPC_EVENT_NAMES) {
    const listener = (payload: unknown) => {
      for (const w of windows()) if (!w.isDestroyed()) w.webContents.send(IPC_EVENT_CHANNEL, name, payload);
    };
    phone.on(name, listener as never);
    unsubscribe.push(() => phone.off(name, listener as never));
  }
  return () => {
    for (const m of IPC_REQUEST_NAMES) ipcMain.removeHandler(ipcChannel(m));
    for (const u of unsubscribe) u();
  };
}
