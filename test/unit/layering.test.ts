/**
 * The layer rules of DESIGN.md ("Layout") are enforced by dependency-cruiser
 * with .dependency-cruiser.cjs. These tests run that very config on small
 * fixture trees (test/fixtures/layering/{bad,good}) shaped like the repo, and
 * on the repo itself.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cruise, type ICruiseOptions, type IViolation } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';
import { beforeAll, describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const fixtures = fileURLToPath(new URL('../fixtures/layering/', import.meta.url));
const LAYERS = ['common', 'native', 'main', 'preload', 'renderer', 'server'];

let options: ICruiseOptions;

beforeAll(async () => {
  options = await extractDepcruiseOptions(`${repoRoot}.dependency-cruiser.cjs`);
});

/** Cruises the layer folders of `baseDir` with the repo's rules; returns "rule: from → to" lines. */
async function violationsIn(baseDir: string): Promise<string[]> {
  const present = LAYERS.filter((layer) => existsSync(`${baseDir}/${layer}`));
  const { output } = await cruise(present, { ...options, baseDir });
  if (typeof output === 'string') throw new Error('expected a JSON cruise result');
  const violations: IViolation[] = output.summary.violations;
  return violations
    .map((v) => `${v.rule.name}: ${v.from} → ${v.to.replace(/^(\.\.\/)+node_modules\//, '')}`)
    .sort();
}

describe('layer rules (.dependency-cruiser.cjs)', () => {
  it('reports every forbidden import in the fixture tree, and nothing else', async () => {
    const violations = await violationsIn(`${fixtures}bad`);
    expect(violations).toEqual(
      [
        // common/: npm packages only, no Node, no Electron, no other folder of ours
        'common-no-electron-or-native: common/uses-electron-type.ts → electron/index.js',
        'common-no-node-builtins: common/uses-node-fs.ts → fs',
        'common-only-common: common/uses-server.ts → server/store.ts',
        // native/: common/ only
        'native-no-electron: native/uses-electron.ts → electron/index.js',
        'native-only-common: native/uses-main.ts → main/core/engine.ts',
        // main/core, main/media: no electron, nothing above them
        'core-media-no-electron: main/core/engine.ts → electron/index.js',
        'core-media-not-upwards: main/media/uses-app.ts → main/app/window.ts',
        'native-modules-only-in-native: main/core/uses-opus.ts → @discordjs/opus/lib/index.js',
        'server-only-deps: main/core/uses-fastify.ts → fastify/fastify.js',
        'not-to-dev-dep: main/core/uses-dev-dep.ts → vite/dist/node/index.js',
        'not-to-unresolvable: main/core/typo.ts → ./does-not-exist',
        // main/cli: core, media, common — no electron, no direct native/
        'cli-no-electron: main/cli/uses-electron.ts → electron/index.js',
        'cli-only-core-media-common: main/cli/uses-native.ts → native/ok.ts',
        // main/app: not into the other programs
        'app-not-into-other-programs: main/app/uses-renderer.ts → renderer/src/view.ts',
        // preload/: common + electron, sandboxed
        'preload-no-node-builtins: preload/uses-node-fs.ts → fs',
        'preload-only-common-electron: preload/uses-main.ts → main/core/engine.ts',
        // renderer/: common only
        'renderer-no-electron: renderer/src/uses-electron.ts → electron/index.js',
        'renderer-no-node-builtins: renderer/src/uses-node-fs.ts → fs',
        'renderer-only-common: renderer/src/uses-preload.ts → preload/bridge.ts',
        // server/: common only; better-sqlite3 is its one native module
        'server-native-modules-only-sqlite: server/uses-naudiodon.ts → naudiodon/index.js',
        'server-only-common: server/uses-native.ts → native/ok.ts',
      ].sort(),
    );
  });

  it('allows every import the layer table allows', async () => {
    expect(await violationsIn(`${fixtures}good`)).toEqual([]);
  });

  it('finds no violation in the repository itself', async () => {
    expect(await violationsIn(repoRoot.replace(/\/$/, ''))).toEqual([]);
  });
});
