/**
 * vitest globalSetup of the integration and UI projects: builds the headless
 * client once (out/cli/parley.mjs, scripts/build-cli.ts) before any test
 * starts a daemon, so no test pays for the build or races another for it.
 */
import { buildCli } from '../../scripts/build-cli';

export default async function setup(): Promise<void> {
  await buildCli();
}
