/**
 * Preload (sandboxed, built to out/preload/index.cjs): exposes one object,
 * `window.parley`, to the renderer. Nothing else crosses the bridge — no raw
 * `ipcRenderer.send`/`on`. When the typed IPC contract lands in `common/ipc`,
 * the bridge is built from it and its type moves there.
 */
import { contextBridge } from 'electron';

/** Replaced at build time with package.json's version (electron.vite.config.ts). */
declare const __PARLEY_VERSION__: string;

/** What the renderer sees as `window.parley`. Mirrored in renderer/src/env.d.ts. */
export interface ParleyBridge {
  /** Parley's version, e.g. "0.1.0". */
  readonly version: string;
}

const bridge: ParleyBridge = Object.freeze({ version: __PARLEY_VERSION__ });

contextBridge.exposeInMainWorld('parley', bridge);
