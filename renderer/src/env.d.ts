/// <reference types="vite/client" />
/// <reference types="svelte" />

/** `window.parley`, exposed by preload/index.ts (absent when the page runs in a plain browser). */
interface Window {
  readonly parley?: import('../../common/ipc/contract').ParleyApi;
}
