/**
 * The packaged shell in a real Electron (Playwright `_electron`): launch,
 * tray state, the incoming-call window and notification, push-to-talk, a
 * deep link (confirmed, and cancelled), and quitting during a call. They run wherever the Electron
 * binary exists (`npm ci` without ELECTRON_SKIP_BINARY_DOWNLOAD); on machines
 * without it (this project's CI) they are reported as skipped.
 *
 * Needs `npm run build` first (out/main, out/preload, out/renderer); the test
 * builds when out/ is missing.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { _electron, type ElectronApplication, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir, run, waitFor } from '../harness/process';
import { startPulse, type Pulse } from '../harness/pulse';
import { REPO_ROOT, startServer, type RunningServer } from '../harness/server';
import { DEFAULT_PASSWORD } from '../harness/signal-client';

function electronBinary(): string | undefined {
  try {
    const path = createRequire(import.meta.url)('electron') as unknown;
    return typeof path === 'string' && existsSync(path) ? path : undefined;
  } catch {
    return undefined;
  }
}

const binary = electronBinary();
if (!binary) console.log('skipped: no Electron binary');

type E2E = { tray: () => { image: string; tooltip: string }; notifications: () => string[] };

describe.skipIf(!binary)('the Electron app', () => {
  let pulse: Pulse;
  let keyring: Keyring;
  let server: RunningServer;
  let bob: RunningClient;
  let electronApp: ElectronApplication;
  let page: Page;
  let dir: string;

  const launch = async (args: string[] = []) => {
    const env = { ...process.env, ...pulse.clientEnv('a'), ...keyring.env, PARLEY_E2E: '1' } as Record<string, string>;
    return _electron.launch({
      executablePath: binary!,
      args: [join(REPO_ROOT, 'out/main/index.js'), `--user-data-dir=${dir}`, ...args],
      env,
    });
  };
  const tray = () => electronApp.evaluate(() => (globalThis as unknown as { parleyE2E: E2E }).parleyE2E.tray());

  beforeAll(async () => {
    if (!existsSync(join(REPO_ROOT, 'out/main/index.js'))) await run('npm', ['run', 'build'], { cwd: REPO_ROOT, timeoutMs: 120_000 });
    dir = makeTempDir('electron-e2e');
    [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
    server = await startServer({ ringTimeoutSeconds: 20 });
    bob = await startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' });
    electronApp = await launch();
    page = await electronApp.firstWindow();
  });
  afterAll(async () => {
    await electronApp?.close().catch(() => {});
    await bob?.stop();
    await server?.stop();
    await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
    if (dir) removeTempDir(dir);
  });

  it('launches one sandboxed window showing the sign-in screen; the tray says not signed in', async () => {
    await page.getByRole('heading', { name: 'Parley' }).waitFor();
    // Sandboxed, isolated, no Node: the page sees neither require nor process, only window.parley.
    expect(await page.evaluate('[typeof require, typeof process, typeof window.parley.request["call.start"]]')).toEqual(['undefined', 'undefined', 'function']);
    expect(await electronApp.evaluate(({ BrowserWindow }) => BrowserWindow.getAllWindows().length)).toBe(1);
    expect((await tray()).image).toBe('offline');
  });

  it('rings an incoming call in its own always-on-top window, with a notification and the tray ringing', async () => {
    await page.getByRole('tab', { name: 'Create account' }).click();
    await page.getByLabel('Server address').fill(server.url);
    await page.getByLabel('Username').fill('alice');
    await page.getByLabel('Password', { exact: true }).fill(DEFAULT_PASSWORD);
    await page.getByLabel('Repeat password').fill(DEFAULT_PASSWORD);
    await page.getByRole('button', { name: 'Create account' }).last().click();
    await page.getByText('Online').waitFor({ timeout: 15_000 });
    expect((await tray()).image).toBe('idle');

    const { callId } = await bob.request<{ callId: string }>('create_call', { to: 'alice' });
    const callWindow = await electronApp.waitForEvent('window');
    await callWindow.getByRole('alertdialog').waitFor();
    expect(await electronApp.evaluate(({ BrowserWindow }) => BrowserWindow.getAllWindows().some((w) => w.isAlwaysOnTop()))).toBe(true);
    expect(await tray()).toEqual({ image: 'ringing', tooltip: 'Parley — bob is calling' });
    expect(await electronApp.evaluate(() => (globalThis as unknown as { parleyE2E: E2E }).parleyE2E.notifications())).toContain('bob is calling');
    await callWindow.getByRole('button', { name: 'Accept call from bob' }).click();
    await bob.waitForCall(callId, (s) => s.state === 'active');
    await waitFor('tray in call', async () => ((await tray()).image === 'in-call' ? true : undefined), 10_000);
    await page.getByRole('button', { name: 'Mute' }).click();
    await waitFor('tray muted', async () => ((await tray()).image === 'muted' ? true : undefined), 10_000);
    await page.getByRole('button', { name: 'Unmute' }).click();
    await page.getByRole('button', { name: 'Hang up' }).click();
    await bob.waitForCall(callId, (s) => s.state === 'ended');
  });

  it('push-to-talk opens the microphone only while the key is held', async () => {
    await page.getByRole('button', { name: 'Settings' }).click();
    await page.getByLabel(/Use push to talk/).check();
    const mic = () => page.evaluate("window.parley.request['mic.get']()") as Promise<{ open: boolean }>;
    expect(await mic()).toMatchObject({ pushToTalk: true, open: false });
    await page.keyboard.down('F8');
    await waitFor('mic open', async () => ((await mic()).open ? true : undefined), 5_000);
    await page.keyboard.up('F8');
    await waitFor('mic closed', async () => (!(await mic()).open ? true : undefined), 5_000);
    await page.getByLabel(/Use push to talk/).uncheck();
  });

  /**
   * Answers Electron's next `dialog.showMessageBox` calls with `response`
   * (Playwright cannot click a native message box) and records the options
   * each was shown with, so the test sees exactly what the user would be asked.
   */
  const answerDialogs = (response: number) =>
    electronApp.evaluate(({ dialog }, r) => {
      const g = globalThis as unknown as { parleyDialogs?: unknown[] };
      g.parleyDialogs = [];
      const record = async (...args: unknown[]) => {
        g.parleyDialogs!.push(args.find((a) => a && typeof a === 'object' && 'buttons' in a));
        return { response: r, checkboxChecked: false };
      };
      (dialog as unknown as { showMessageBox: unknown }).showMessageBox = record;
    }, response);
  const dialogsShown = () =>
    electronApp.evaluate(() => (globalThis as unknown as { parleyDialogs: { message: string; buttons: string[]; defaultId: number; cancelId: number }[] }).parleyDialogs);

  it('a parley://call/<user> link asks first, naming the callee with Cancel as default; Cancel calls nobody', async () => {
    await answerDialogs(0); // the user presses Enter / Escape: Cancel
    const callsBefore = bob.events.length;
    const second = await launch(['parley://call/bob']);
    await second.waitForEvent('close').catch(() => {});
    await waitFor('confirmation shown', async () => ((await dialogsShown()).length > 0 ? true : undefined), 10_000);
    const [ask] = await dialogsShown();
    expect(ask!.message).toBe('Call bob?');
    expect(ask!.buttons[ask!.defaultId]).toBe('Cancel');
    expect(ask!.buttons[ask!.cancelId]).toBe('Cancel');
    expect(ask!.buttons).toContain('Call bob');
    await new Promise((r) => setTimeout(r, 2000));
    expect(bob.events.slice(callsBefore).filter((e) => e.state === 'incoming')).toEqual([]);
  });

  it('follows a confirmed parley://call/<user> link from a second instance, and quitting during the call hangs up', async () => {
    await answerDialogs(1); // "Call bob"
    const second = await launch(['parley://call/bob']);
    await second.waitForEvent('close').catch(() => {});
    const incoming = await bob.waitForCall(undefined, (s) => s.state === 'incoming' && !bob.events.some((e) => e.callId === s.callId && e.state === 'ended'));
    expect((await dialogsShown()).map((d) => d.message)).toEqual(['Call bob?']);
    await bob.request('answer_call', { callId: incoming.callId });
    await bob.waitForCall(incoming.callId, (s) => s.state === 'active');
    await electronApp.evaluate(({ app }) => app.quit());
    const ended = await bob.waitForCall(incoming.callId, (s) => s.state === 'ended');
    expect(ended.endReason).toBe('hangup');
  });
});
