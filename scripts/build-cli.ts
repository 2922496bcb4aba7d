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
const SOURCE_DIRS = ['main/cli', 'main/core', 'main/media', 'common', 'native'];

function newestSourceMs(): number {
  let newest = 0;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name === 'node_modules' || e.name === 'build') continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of SOURCE_DIRS) walk(join(ROOT, d));
  return newest;
}

/**
 * Builds `out/cli/parley.mjs` from `main/cli/parley.ts`.
 * @throws Error with esbuild's messages when the sources do not build.
 */
export async function buildCli(): Promise<string> {
  mkdirSync(dirname(CLI_BUNDLE), { recursive: true });
  const tmp = `${CLI_BUNDLE}.${process.pid}-${randomUUID()}.tmp`;
  await build({
    entryPoints: [join(ROOT, 'main/cli/parley.ts')],
    outfile: tmp,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node22',
    packages: 'external',
    sourcemap: 'external',
    logLevel: 'warning',
  });
  renameSync(`${tmp}.map`, `${CLI_BUNDLE}.map`);
  renameSync(tmp, CLI_BUNDLE);
  return CLI_BUNDLE;
}

let building: Promise<string> | undefined;

/**
 * The bundle's path, built first when it is missing or older than its
 * sources. Callers in one process share one build; builds in several
 * processes each write their own temporary file and rename it.
 */
export function ensureCliBuilt(): Promise<string> {
  if (existsSync(CLI_BUNDLE) && statSync(CLI_BUNDLE).mtimeMs >= newestSourceMs()) return Promise.resolve(CLI_BUNDLE);
  building ??= buildCli().finally(() => (building = undefined));
  return building;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  ensureCliBuilt().catch((e: unknown) => {
    console.error(`build-cli: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
