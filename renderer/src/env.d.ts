/// <reference types="svelte" />

/** `window.parley`, exposed by preload/index.ts (absent when the page runs in a plain browser). */
interface ParleyBridge {
  /** Parley's version, e.g. "0.1.0". */
  readonly version: string;
}

interface Window {
  readonly parley?: ParleyBridge;
}
