/**
 * Builds the headless client (`main/cli/parley.ts`) into one JavaScript file,
 * `out/cli/parley.mjs`, with esbuild: npm packages and native addons stay
 * external (resolved from the repository's node_modules and native/ at run
 * time, as from source). The daemon then starts without a TypeScript loader
 * compiling its modules on the way to the first call (issue 13 item 4;
 * `npm run bench:profile` showed ~14 % of a fresh daemon's main-thread time in
 * the loader).
 *
 * `tsx scripts/build-cli.ts` builds; {@link ensureCliBuilt} builds when the
 * bundle is missing or older than any source it is made from. The bundle is
 * written to a temporary file and renamed, so a process starting the client
 * meanwhile never reads half a file.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** The built headless client, absolute path. */
export const CLI_BUNDLE = join(ROOT, 'out', 'cli', 'parley.mjs');
/** The media thread's code beside it (main/media/worker/host.ts starts it from there). */
export const MEDIA_WORKER_BUNDLE = join(ROOT, 'out', 'cli', 'media-worker.mjs');
const SOURCE_DIRS = ['main/cli', 'main/core', 'main/media', 'common', 'native'];

/**
 * The newest modification time of the TypeScript under `dirs` and of `files`
 * (repository-relative), ms since the epoch; `node_modules` and native build
 * folders are skipped. What decides whether a bundle made from them is stale.
 */
export function newestSourceMs(dirs: readonly string[] = SOURCE_DIRS, files: readonly string[] = []): number {
  let newest = 0;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name === 'node_modules' || e.name === 'build') continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of dirs) walk(join(ROOT, d));
  for (const f of files) newest = Math.max(newest, statSync(join(ROOT, f)).mtimeMs);
  return newest;
}

/**
 * Builds `out/cli/parley.mjs` from `main/cli/parley.ts` and, beside it,
 * `out/cli/media-worker.mjs` from `main/media/worker/media-worker.ts` (the
 * media thread, started by the client; the worker first, so that a client
 * never finds itself without it).
 * @throws Error with esbuild's messages when the sources do not build.
 */
export async function buildCli(): Promise<string> {
  await bundle(join(ROOT, 'main/media/worker/media-worker.ts'), MEDIA_WORKER_BUNDLE);
  return bundle(join(ROOT, 'main/cli/parley.ts'), CLI_BUNDLE);
}

async function bundle(entry: string, out: string): Promise<string> {
  mkdirSync(dirname(out), { recursive: true });
  const tmp = `${out}.${process.pid}-${randomUUID()}.tmp`;
  await build({
    entryPoints: [entry],
    outfile: tmp,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node22',
    packages: 'external',
    sourcemap: 'external',
    logLevel: 'warning',
  });
  renameSync(`${tmp}.map`, `${out}.map`);
  renameSync(tmp, out);
  return out;
}

let building: Promise<string> | undefined;

/**
 * The bundle's path, built first when it is missing or older than its
 * sources. Callers in one process share one build; builds in several
 * processes each write their own temporary file and rename it.
 */
export function ensureCliBuilt(): Promise<string> {
  const fresh = (f: string) => existsSync(f) && statSync(f).mtimeMs >= newestSourceMs();
  if (fresh(CLI_BUNDLE) && fresh(MEDIA_WORKER_BUNDLE)) return Promise.resolve(CLI_BUNDLE);
  building ??= buildCli().finally(() => (building = undefined));
  return building;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  ensureCliBuilt().catch((e: unknown) => {
    console.error(`build-cli: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
