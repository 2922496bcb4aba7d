/**
 * Parley on a Linux desktop (issue 17): the incoming-call notification with
 * Accept and Decline on a real notification server (Debian's dunst on Xvfb,
 * on the same private session bus as the keychain), pressed through dunst's
 * own context menu, answering and declining real calls from a headless
 * client; the notification closed or replaced when the call stops ringing;
 * the desktop's do-not-disturb (dunst paused) followed into Parley's.
 *
 * The core runs as in `npm run dev:web` (scripts/dev-web.ts starts the same
 * Linux desktop integration as the Electron shell: main/app/linux/desktop.ts).
 * Screens of the page go to test-results/screens/, and the X screen with
 * dunst's notification too (`notification-incoming.png`).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startClient, type RunningClient } from '../harness/client';
import { startDunst, type Dunst } from '../harness/dunst';
import { startKeyring, type Keyring } from '../harness/keyring';
import { waitFor } from '../harness/process';
import { startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { DEFAULT_PASSWORD } from '../harness/signal-client';
import { SCREENS_DIR, startUi, type RunningUi } from '../harness/ui';

let pulse: Pulse;
let keyring: Keyring;
let dunst: Dunst;
let server: RunningServer;
let ui: RunningUi;
let bob: RunningClient;

beforeAll(async () => {
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  dunst = await startDunst(keyring.env);
  server = await startServer({ ringTimeoutSeconds: 20 });
  [ui, bob] = await Promise.all([
    startUi({
      env: { ...pulse.clientEnv('a'), ...keyring.env, ...dunst.env },
      label: 'alice-desktop',
    }),
    startClient({
      name: 'bob',
      server,
      env: { ...pulse.clientEnv('b'), ...keyring.env },
      input: 'b_mic',
      output: 'b_spk',
    }),
  ]);
  const p = ui.page;
  await p.getByRole('tab', { name: 'Create account' }).click();
  await p.getByLabel('Server address').fill(server.url);
  await p.getByLabel('Username').fill('alice');
  await p.getByLabel('Password', { exact: true }).fill(DEFAULT_PASSWORD);
  await p.getByLabel('Repeat password').fill(DEFAULT_PASSWORD);
  await p.getByRole('button', { name: 'Create account' }).last().click();
  await p.getByText('Online').waitFor({ timeout: 15_000 });
  await p.getByLabel('Search contacts or enter a username').fill('bob');
  await p.getByRole('button', { name: 'Add bob as a contact' }).click();
  await p.getByText('Request sent', { exact: true }).waitFor();
  await bob.request('accept_contact', { username: 'alice' });
  await p
    .getByRole('listitem')
    .filter({ hasText: 'bob' })
    .getByText('Online')
    .waitFor({ timeout: 10_000 });
  await p.getByLabel('Search contacts or enter a username').fill('');
});

afterAll(async () => {
  await Promise.allSettled([ui?.stop(), bob?.stop()]);
  await server?.stop();
  await dunst?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
});

/** Waits until dunst shows exactly `n` notifications. */
const untilDisplayed = (n: number) =>
  waitFor(
    `${n} notification(s) on screen`,
    async () => ((await dunst.displayed()) === n ? true : undefined),
    10_000,
    100,
  );

describe('the desktop notification server (dunst) on Linux', () => {
  it('Accept in the incoming-call notification answers the real call, and the notification goes away', async () => {
    expect(ui.log()).toContain('[desktop] notifications: dunst');
    const { callId } = await bob.request<{ callId: string }>('create_call', { to: 'alice' });
    await bob.waitForCall(callId, (s) => s.state === 'ringing', 15_000);
    await untilDisplayed(1);
    await dunst.screenshot(join(SCREENS_DIR, 'notification-incoming.png'));
    await dunst.press('Accept');
    expect(dunst.lastMenu().join('\n')).toMatch(/#Decline \(bob is calling\)/);
    const active = await bob.waitForCall(callId, (s) => s.state === 'active', 20_000);
    expect(active.state).toBe('active');
    await ui.page.getByRole('button', { name: /hang up/i }).waitFor({ timeout: 10_000 });
    await untilDisplayed(0);
    await bob.request('end_call', { callId });
    const ended = await bob.waitForCall(callId, (s) => s.state === 'ended');
    expect(ended.endReason).toBe('hangup');
  });

  it('Decline in the notification declines the real call for both sides', async () => {
    const { callId } = await bob.request<{ callId: string }>('create_call', { to: 'alice' });
    await bob.waitForCall(callId, (s) => s.state === 'ringing', 15_000);
    await untilDisplayed(1);
    await dunst.press('Decline');
    const ended = await bob.waitForCall(callId, (s) => s.state === 'ended');
    expect(ended.endReason).toBe('declined');
    await untilDisplayed(0);
  });

  it('a call the caller gives up: the notification loses its buttons and says "Missed call"', async () => {
    const { callId } = await bob.request<{ callId: string }>('create_call', { to: 'alice' });
    await bob.waitForCall(callId, (s) => s.state === 'ringing', 15_000);
    await untilDisplayed(1);
    await bob.request('end_call', { callId });
    await bob.waitForCall(callId, (s) => s.state === 'ended');
    // Replaced in place (same id): still one on screen, with no Accept any more.
    await waitFor(
      'the buttons gone',
      () =>
        dunst.press('Accept').then(
          () => undefined,
          () => true,
        ),
      10_000,
      200,
    );
    expect(await dunst.displayed()).toBe(1);
    await dunst.screenshot(join(SCREENS_DIR, 'notification-missed.png'));
  });

  it("follows the desktop's do-not-disturb (dunst paused): calls do not ring, are logged as missed; resuming ends it", async () => {
    const p = ui.page;
    const dnd = p.getByLabel('Do not disturb');
    expect(await dnd.isChecked()).toBe(false);
    await dunst.setPaused(true);
    await waitFor(
      'Parley in do-not-disturb',
      async () => ((await dnd.isChecked()) ? true : undefined),
      10_000,
      100,
    );
    const { callId } = await bob.request<{ callId: string }>('create_call', { to: 'alice' });
    const dialog = p.getByRole('alertdialog');
    await dialog.waitFor({ timeout: 15_000 });
    expect(await dialog.innerText()).toContain('not ringing');
    await ui.screen('incoming-desktop-do-not-disturb');
    await bob.request('end_call', { callId });
    await bob.waitForCall(callId, (s) => s.state === 'ended');
    await dunst.setPaused(false);
    await waitFor(
      'Parley out of do-not-disturb',
      async () => ((await dnd.isChecked()) ? undefined : true),
      10_000,
      100,
    );
    await p.getByRole('button', { name: /^History/ }).click();
    await p
      .getByText(/Incoming · Missed/)
      .first()
      .waitFor();
  });
});
