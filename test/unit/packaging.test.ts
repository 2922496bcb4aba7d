/**
 * The packaged app's Electron fuses (electron-builder.yml `electronFuses`),
 * read and schema-validated by electron-builder's own configuration loader
 * (app-builder-lib), so the test sees what `npm run dist` will flip.
 * Flipping them needs the Electron binary (not on this machine); the names
 * and meanings are electron/docs/tutorial/fuses.md.
 */
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

type Config = { electronFuses?: Record<string, boolean> | null; asar?: unknown };
const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(import.meta.url);
const { getConfig, validateConfiguration } = require('app-builder-lib/out/util/config/config') as {
  getConfig(projectDir: string, configPath: string | null, fromOptions: null): Promise<Config>;
  validateConfiguration(config: Config, logger: unknown): Promise<void>;
};
const { DebugLogger } = require('builder-util') as { DebugLogger: new (enabled: boolean) => unknown };

describe('packaging (electron-builder.yml)', () => {
  it('turns off RunAsNode, NODE_OPTIONS and --inspect, and loads only an integrity-checked app.asar', async () => {
    const config = await getConfig(REPO_ROOT, null, null);
    await validateConfiguration(config, new DebugLogger(false)); // a misspelt fuse fails electron-builder's schema
    expect(config.asar).toBe(true);
    expect(config.electronFuses).toMatchObject({
      runAsNode: false,
      enableNodeOptionsEnvironmentVariable: false,
      enableNodeCliInspectArguments: false,
      enableEmbeddedAsarIntegrityValidation: true,
      onlyLoadAppFromAsar: true,
    });
  });
});
