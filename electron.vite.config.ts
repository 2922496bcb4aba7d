import { readFileSync } from 'node:fs';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'electron-vite';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8')) as {
  version: string;
};

/**
 * Native npm modules: loaded by native/ at run time from node_modules
 * (app.asar.unpacked in a package), never bundled.
 */
const NATIVE_MODULES = [
  'naudiodon',
  '@discordjs/opus',
  '@github/keytar',
  'keytar',
  'uiohook-napi',
  'better-sqlite3',
];

export default defineConfig({
  // main/app/index.ts → out/main/index.js (ESM; Electron ≥ 28 loads ESM main), and beside it the media thread's
  // code, main/media/worker/media-worker.ts → out/main/media-worker.js (main/media/worker/host.ts starts it from
  // there; what both use goes into a shared chunk beside them).
  main: {
    build: {
      outDir: 'out/main',
      lib: { entry: { index: 'main/app/index.ts', 'media-worker': 'main/media/worker/media-worker.ts' }, formats: ['es'] },
      // Every "dependencies" entry stays external; the native ones are named
      // again so that moving one to devDependencies cannot bundle it.
      externalizeDeps: true,
      rolldownOptions: {
        external: [...NATIVE_MODULES.map((m) => new RegExp(`^${m}(/|$)`)), /\.node$/],
      },
    },
  },
  // preload/index.ts → out/preload/index.cjs. A sandboxed preload must be a
  // single CommonJS file: no ESM, no require() of npm modules at run time.
  preload: {
    define: { __PARLEY_VERSION__: JSON.stringify(pkg.version) },
    build: {
      outDir: 'out/preload',
      externalizeDeps: false,
      lib: { entry: 'preload/index.ts', formats: ['cjs'], fileName: () => 'index.cjs' },
    },
  },
  // renderer/index.html (Svelte 5) → out/renderer.
  renderer: {
    root: 'renderer',
    plugins: [svelte()],
    build: {
      outDir: 'out/renderer',
      rolldownOptions: { input: 'renderer/index.html' },
    },
  },
});
