/**
 * Parley on a Linux desktop (issue 17): the incoming-call notification with
 * Accept and Decline on a real notification server (Debian's dunst on Xvfb,
 * on the same private session bus as the keychain), pressed through dunst's
 * own context menu, answering and declining real calls from a headless
 * client; the notification closed or replaced when the call stops ringing;
 * the desktop's do-not-disturb (dunst paused) followed into Parley's; a group
 * call that rings, joined and declined from its notification.
 *
 * The core runs as in `npm run dev:web` (scripts/dev-web.ts starts the same
 * Linux desktop integration as the Electron shell: main/app/linux/desktop.ts).
 * Screens of the page go to test-results/screens/, and the X screen with
 * dunst's notification too (`notification-incoming.png`).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomStatus } from '../../common/protocol/control';
import { startClient, type RunningClient } from '../harness/client';
import { startDunst, type Dunst } from '../harness/dunst';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir, startChild, waitFor, type Child } from '../harness/process';
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
let dir: string;

beforeAll(async () => {
  dir = makeTempDir('desktop-test');
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
  if (dir) removeTempDir(dir);
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

  it('a group call rings with Join / Decline in the notification: Join joins the real room, Decline declines it', async () => {
    const p = ui.page;
    const first = await bob.request<RoomStatus>('create_room', { invite: ['alice'] });
    await untilDisplayed(1);
    await dunst.screenshot(join(SCREENS_DIR, 'notification-group-ring.png'));
    await dunst.press('Join');
    expect(dunst.lastMenu().join('\n')).toMatch(/#Decline \(bob invites you to a group call\)/);
    await waitFor(
      'alice in bob’s room',
      async () => ((await bob.request<RoomStatus>('list_participants')).participants.some((x) => x.username === 'alice') ? true : undefined),
      20_000,
    );
    await untilDisplayed(0);
    await p.getByRole('button', { name: 'Leave the group call' }).click();
    await p.getByRole('button', { name: 'Close' }).click();
    await bob.request('leave_room', { roomId: first.roomId });

    const second = await bob.request<RoomStatus>('create_room', { invite: ['alice'] });
    await untilDisplayed(1);
    await p.getByRole('alertdialog', { name: 'bob' }).waitFor();
    await dunst.press('Decline');
    await untilDisplayed(0);
    // Declined in the core: the ringing screen goes, and the history says so.
    await p.getByRole('alertdialog').waitFor({ state: 'detached', timeout: 10_000 });
    await p.getByRole('button', { name: /^History/ }).click();
    await p.getByTestId('history-group').filter({ hasText: 'Declined' }).first().waitFor({ timeout: 10_000 });
    await p.getByRole('button', { name: 'Contacts' }).click();
    await bob.request('leave_room', { roomId: second.roomId });
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
    await dunst.closeAll();
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

describe('other audio during calls', () => {
  /**
   * Each sink input of the test PulseAudio: its application, media role and whether the
   * sound server has silenced it. module-role-cork silences a stream by muting it and
   * asking its client to cork (PA_STREAM_EVENT_REQUEST_CORK), and undoes both when the
   * last `phone` stream goes; whether the client corks is the client's business (paplay
   * counts the requests and stayed corked here after a ringtone and a call), so the test
   * reads the server's own action, the mute.
   */
  async function sinkInputs(): Promise<{ app: string; role: string; silenced: boolean }[]> {
    const out = await pulse.pactl('list', 'sink-inputs');
    return out
      .split(/^Sink Input #/m)
      .slice(1)
      .map((block) => ({
        app: /application\.name = "([^"]*)"/.exec(block)?.[1] ?? '',
        role: /media\.role = "([^"]*)"/.exec(block)?.[1] ?? '',
        silenced: /Mute: yes/.test(block),
      }));
  }
  /** MPRIS PlaybackStatus of mpv, read with gdbus on the private bus. */
  function mpvStatus(): string {
    const out = execFileSync(
      'gdbus',
      [
        'call',
        '--session',
        '-d',
        'org.mpris.MediaPlayer2.mpv',
        '-o',
        '/org/mpris/MediaPlayer2',
        '-m',
        'org.freedesktop.DBus.Properties.Get',
        'org.mpris.MediaPlayer2.Player',
        'PlaybackStatus',
      ],
      { env: { ...process.env, ...keyring.env }, encoding: 'utf8' },
    );
    return /'(\w+)'/.exec(out)?.[1] ?? out;
  }

  it('a call silences the music stream (media role phone, module-role-cork) and pauses the MPRIS player; both come back after', async () => {
    await pulse.pactl(
      'load-module',
      'module-role-cork',
      'trigger_roles=phone',
      'cork_roles=music,video,game,animation,production',
      // Across sinks: music on the speakers is silenced by a call on the headset too.
      'global=true',
    );
    const tone = join(dir, 'music.wav');
    execFileSync('sox', [
      '-n',
      '-r',
      '48000',
      '-c',
      '1',
      tone,
      'synth',
      '120',
      'sine',
      '330',
      'vol',
      '0.1',
    ]);
    // Music: a plain PulseAudio stream with role "music" (no remote control: only the sound server can stop it),
    // and a real MPRIS player (Debian's mpv with mpv-mpris) on the desktop's session bus.
    const music: Child = await startChild(
      'paplay',
      ['--property=media.role=music', '-d', 'a_spk', tone],
      { env: { ...process.env, ...pulse.env } },
    );
    const mpv: Child = await startChild(
      'mpv',
      [
        '--no-config',
        '--no-video',
        '--ao=null',
        '--loop=inf',
        '--script=/usr/lib/mpv-mpris/mpris.so',
        tone,
      ],
      { env: { ...process.env, ...keyring.env }, stdio: 'ignore' },
    );
    try {
      await waitFor(
        'music playing',
        async () =>
          (await sinkInputs()).some((i) => i.role === 'music' && !i.silenced) ? true : undefined,
        10_000,
        100,
      );
      await waitFor(
        'mpv playing',
        () => {
          try {
            return mpvStatus() === 'Playing' ? true : undefined;
          } catch {
            return undefined;
          }
        },
        10_000,
        100,
      );

      const { callId } = await bob.request<{ callId: string }>('create_call', { to: 'alice' });
      await bob.waitForCall(callId, (s) => s.state === 'ringing', 15_000);
      await untilDisplayed(1);
      await dunst.press('Accept');
      await bob.waitForCall(callId, (s) => s.state === 'active', 20_000);
      await waitFor(
        'the music silenced',
        async () =>
          (await sinkInputs()).some((i) => i.role === 'music' && i.silenced) ? true : undefined,
        10_000,
        100,
      );
      expect((await sinkInputs()).filter((i) => i.role === 'phone').length).toBeGreaterThan(0);
      await waitFor('mpv paused', () => (mpvStatus() === 'Paused' ? true : undefined), 10_000, 100);

      await bob.request('end_call', { callId });
      await bob.waitForCall(callId, (s) => s.state === 'ended');
      await waitFor(
        'the music back',
        async () =>
          (await sinkInputs()).some((i) => i.role === 'music' && !i.silenced) ? true : undefined,
        10_000,
        100,
      );
      await waitFor(
        'mpv playing again',
        () => (mpvStatus() === 'Playing' ? true : undefined),
        10_000,
        100,
      );
    } finally {
      await Promise.allSettled([music.stop(), mpv.stop()]);
    }
  });

  it('with both switches off in settings, a call leaves the music and the player alone', async () => {
    const p = ui.page;
    await p.getByRole('button', { name: 'Settings' }).click();
    const role = p.getByLabel(
      'Lower other sounds during calls (the sound server sees a phone call)',
    );
    const pause = p.getByLabel('Pause music and videos during calls, and resume them after');
    expect(await role.isChecked()).toBe(true);
    expect(await pause.isChecked()).toBe(true);
    await role.scrollIntoViewIfNeeded();
    await ui.screen('settings-other-audio');
    await role.uncheck();
    await pause.uncheck();
    const tone = join(dir, 'music.wav');
    const music: Child = await startChild(
      'paplay',
      ['--property=media.role=music', '-d', 'a_spk', tone],
      { env: { ...process.env, ...pulse.env } },
    );
    const mpv: Child = await startChild(
      'mpv',
      [
        '--no-config',
        '--no-video',
        '--ao=null',
        '--loop=inf',
        '--script=/usr/lib/mpv-mpris/mpris.so',
        tone,
      ],
      { env: { ...process.env, ...keyring.env }, stdio: 'ignore' },
    );
    try {
      await waitFor(
        'mpv playing',
        () => {
          try {
            return mpvStatus() === 'Playing' ? true : undefined;
          } catch {
            return undefined;
          }
        },
        10_000,
        100,
      );
      const { callId } = await bob.request<{ callId: string }>('create_call', { to: 'alice' });
      await bob.waitForCall(callId, (s) => s.state === 'ringing', 15_000);
      await untilDisplayed(1);
      await dunst.press('Accept');
      await bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt, 20_000);
      await new Promise((r) => setTimeout(r, 1500));
      const inputs = await sinkInputs();
      expect(inputs.filter((i) => i.role === 'phone')).toEqual([]);
      expect(inputs.some((i) => i.role === 'music' && !i.silenced)).toBe(true);
      expect(mpvStatus()).toBe('Playing');
      await bob.request('end_call', { callId });
      await bob.waitForCall(callId, (s) => s.state === 'ended');
    } finally {
      await Promise.allSettled([music.stop(), mpv.stop()]);
      await role.check();
      await pause.check();
    }
  });
});
