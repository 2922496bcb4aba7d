/**
 * The real renderer in Chromium against the real core, through the
 * development bridge (`scripts/dev-web.ts`, DESIGN.md: "the renderer is
 * tested in Chromium against the real core through a development bridge").
 *
 * The core runs in its own process, exactly as `npm run dev:web` runs it:
 * real signaling to the test server, real audio devices (PulseAudio harness),
 * real keychain. Chromium only renders the page — it never touches audio.
 */
import AxeBuilder from '@axe-core/playwright';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { launchChromium, type RunningChromium } from './chromium';
import { makeTempDir, removeTempDir, startChild, waitFor, type Child } from './process';
import { REPO_ROOT } from './server';

/** Where every UI test saves its screens (issue: "each screen is saved as a PNG"). */
export const SCREENS_DIR = join(REPO_ROOT, 'test-results/screens');

export interface RunningUi {
  readonly page: Page;
  /** The core's data folder (settings.json, history.json, profile.json). */
  readonly dataDir: string;
  /** Pid of the core process (dev bridge). */
  readonly pid: number;
  /** Saves a screenshot `test-results/screens/<name>.png`, and the same screen in the other colour scheme as `<name>-dark.png` (or `-light`). */
  screen(name: string): Promise<string>;
  /** Runs axe-core (WCAG 2 A/AA) on the page; returns serious and critical violations. */
  axe(): Promise<{ id: string; impact: string; help: string; nodes: string[] }[]>;
  /** The core's output so far. */
  log(): string;
  stop(): Promise<void>;
}

export interface StartUiOptions {
  /** Environment for the core: Pulse client env and keyring env merged. */
  env: Record<string, string>;
  /** Colour scheme Chromium reports to the page (default light). */
  colorScheme?: 'light' | 'dark';
  /** Reuse a browser (faster when a test file opens several pages). */
  chromium?: RunningChromium;
  label?: string;
}

/**
 * Starts the core with the development bridge, opens the page in Chromium
 * (420 × 720, like the app's window) and waits until the renderer has loaded.
 * @throws Error with the core's output when it does not start in time.
 */
export async function startUi(o: StartUiOptions): Promise<RunningUi> {
  const dataDir = makeTempDir(`ui-${o.label ?? 'core'}`);
  const logFile = join(dataDir, 'dev-web.log');
  const child: Child = await startChild(
    process.execPath,
    ['--import', 'tsx', join(REPO_ROOT, 'scripts/dev-web.ts'), '--json', '--loopback', '--data-dir', dataDir],
    { cwd: REPO_ROOT, env: { ...process.env, ...o.env, PARLEY_DATA_DIR: dataDir }, logFile },
  );
  const log = () => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  let url: string;
  try {
    url = await waitFor(
      'the dev bridge URL',
      async () => {
        if (child.hasExited()) throw new Error(`dev:web exited: ${log()}`);
        const line = log()
          .split('\n')
          .find((l) => l.startsWith('{"url":'));
        return line ? (JSON.parse(line) as { url: string }).url : undefined;
      },
      30_000,
    );
  } catch (e) {
    await child.stop('SIGKILL');
    removeTempDir(dataDir);
    throw e;
  }
  const ownBrowser = !o.chromium;
  const chromium = o.chromium ?? (await launchChromium({ fakeDevices: true }));
  const context = await chromium.browser.newContext({
    viewport: { width: 420, height: 720 },
    colorScheme: o.colorScheme ?? 'light',
    reducedMotion: 'reduce',
  });
  const page = await context.newPage();
  const consoleErrors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  await page.goto(url);
  // A function, not a string: the page's CSP (no 'unsafe-eval') refuses string evaluation.
  type Doc = { document: { querySelector(s: string): { textContent: string | null } | null } };
  await page.waitForFunction(
    () => {
      const root = (globalThis as unknown as Doc).document.querySelector('#app');
      const text = root?.textContent ?? '';
      return text.length > 0 && !text.includes('Starting Parley');
    },
    undefined,
    { timeout: 30_000 },
  );
  mkdirSync(SCREENS_DIR, { recursive: true });

  return {
    page,
    dataDir,
    pid: child.pid,
    async screen(name) {
      const path = join(SCREENS_DIR, `${name}.png`);
      await page.screenshot({ path });
      // The same screen in the other colour scheme, for the docs (scripts/docs-screens.ts).
      if (!name.endsWith('-dark') && !name.endsWith('-light')) {
        const other = (o.colorScheme ?? 'light') === 'light' ? 'dark' : 'light';
        await page.emulateMedia({ colorScheme: other });
        await page.screenshot({ path: join(SCREENS_DIR, `${name}-${other}.png`) });
        await page.emulateMedia({ colorScheme: o.colorScheme ?? 'light' });
      }
      return path;
    },
    async axe() {
      const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze();
      return result.violations
        .filter((v) => v.impact === 'serious' || v.impact === 'critical')
        .map((v) => ({ id: v.id, impact: v.impact ?? '', help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) }));
    },
    log: () => `${log()}${consoleErrors.length ? `\n[page errors]\n${consoleErrors.join('\n')}` : ''}`,
    async stop() {
      await context.close().catch(() => {});
      if (ownBrowser) await chromium.close().catch(() => {});
      await child.stop('SIGTERM', 5000);
      removeTempDir(dataDir);
    },
  };
}
