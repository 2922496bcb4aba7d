/**
 * Group calls in the desktop UI (issue 14 item 5): the real renderer in
 * Chromium driving the real core through the development bridge
 * (test/harness/ui.ts) as Alice, with two headless daemons (Bob and Carol),
 * on the real signaling server with its SFU (a real mediasoup worker), each
 * with its own PulseAudio microphone and speaker (four-client layout).
 *
 * Start a group call from contacts (multi-select), the others are rung by the
 * server and join; Bob's real speech lights his speaking indicator on Alice's
 * screen and reaches her speaker; mute shows on the others' side; leave ends
 * it for Alice and leaves a history entry; a group call that rings Alice is
 * joined, declined or missed from the ringing screen; someone Alice rang who
 * declines shows as "Declined" for a few seconds. Every screen is saved
 * under test-results/screens/ and checked with axe-core.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomStatus } from '../../common/protocol/control';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir, waitFor } from '../harness/process';
import { DEVICES, PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { DEFAULT_PASSWORD } from '../harness/signal-client';
import { channel, readWav, renderSpeech, rms } from '../harness/speech';
import { startUi, type RunningUi } from '../harness/ui';

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let ui: RunningUi;
let bob: RunningClient;
let carol: RunningClient;
let dir: string;
/** Bob's sentence, played into his microphone. */
let speech: string;

const page = () => ui.page;
const RING_TIMEOUT_S = 12;

beforeAll(async () => {
  dir = makeTempDir('ui-group');
  [pulse, keyring] = await Promise.all([startPulse({ clients: 4 }), startKeyring()]);
  // Group calls ring as long as 1:1 calls (ring_timeout_seconds): short here, for the missed one.
  server = await startServer({ ringTimeoutSeconds: RING_TIMEOUT_S, env: { PARLEY_SFU_WORKERS: '1' } });
  speech = join(dir, 'bob.wav');
  await renderSpeech('Hello everyone, this is Bob speaking in the group call. Can you all hear me?', 'en-gb', speech);
  [ui, bob, carol] = await Promise.all([
    startUi({ env: { ...pulse.clientEnv('a'), ...keyring.env }, label: 'alice-group' }),
    startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: DEVICES.b.mic, output: DEVICES.b.speaker }),
    startClient({ name: 'carol', server, env: { ...pulse.clientEnv('c'), ...keyring.env }, input: DEVICES.c.mic, output: DEVICES.c.speaker }),
  ]);
  await makeClientContacts(bob, carol);
}, 180_000);

afterAll(async () => {
  await Promise.allSettled([ui?.stop(), bob?.stop(), carol?.stop()]);
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

async function expectNoSeriousA11yViolations(screen: string) {
  const violations = await ui.axe();
  expect(violations, `${screen}: ${JSON.stringify(violations, null, 1)}`).toEqual([]);
}

/** RMS (fraction of full scale) of what Alice's client plays on her speaker, over `seconds`. */
async function aliceHears(seconds = 1.2): Promise<number> {
  const path = join(dir, `probe-${Date.now()}.wav`);
  const rec = await pulse.record('probe.monitor', path, 4);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  await rec.stop();
  const heard = channel(readWav(path), PROBE_CHANNEL.aliceSpeaker - 1);
  return rms(heard.subarray(Math.floor(heard.length * 0.2)));
}

/** RMS (fraction of full scale) of what Bob's daemon plays on his speaker, over `seconds`. */
async function bobHears(seconds = 1.2): Promise<number> {
  const path = join(dir, `probe-bob-${Date.now()}.wav`);
  const rec = await pulse.record('probe.monitor', path, 4);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  await rec.stop();
  const heard = channel(readWav(path), PROBE_CHANNEL.bobSpeaker - 1);
  return rms(heard.subarray(Math.floor(heard.length * 0.2)));
}

/** The daemon waits until `roomId` rings it (the server's `room.ring`), then joins. */
async function joinWhenRung(client: RunningClient, roomId: string): Promise<RoomStatus> {
  await client.waitForNotification<{ roomId: string }>('room.ringing', (r) => r.roomId === roomId, 15_000);
  return client.request<RoomStatus>('join_room', { roomId });
}

/** Waits until Alice's screen shows audio arriving from each of `who` (quality words in place of "Connecting…"). */
async function untilHeardOnScreen(who: string[], timeoutMs = 20_000): Promise<void> {
  for (const u of who) {
    try {
      await row(u).getByText(/connection/).waitFor({ timeout: timeoutMs });
    } catch (e) {
      const screen = await page().getByTestId('group-call').innerText().catch(() => '(no group call screen)');
      throw new Error(`${(e as Error).message}\nscreen: ${screen}\ncore log (tail): ${ui.log().slice(-3000)}`, { cause: e });
    }
  }
}

/** A participant's row on Alice's group call screen. */
const row = (username: string) => page().locator(`[data-testid="participant"][data-username="${username}"]`);

describe('group calls in the desktop UI', () => {
  let roomId: string;

  it('signs Alice up and makes Bob and Carol her contacts', async () => {
    const p = page();
    await p.getByRole('tab', { name: 'Create account' }).click();
    await p.getByLabel('Server address').fill(server.url);
    await p.getByLabel('Username').fill('alice');
    await p.getByLabel('Password', { exact: true }).fill(DEFAULT_PASSWORD);
    await p.getByLabel('Repeat password').fill(DEFAULT_PASSWORD);
    await p.getByRole('button', { name: 'Create account' }).last().click();
    await p.getByText('Online').waitFor({ timeout: 15_000 });
    // Alice's own microphone and speaker (PulseAudio's default sink here is another client's).
    await p.getByRole('button', { name: 'Settings' }).click();
    await p.locator('#s-in option[value="a_mic"]').waitFor({ state: 'attached' });
    await p.getByLabel('Microphone', { exact: true }).selectOption('a_mic');
    await p.getByLabel('Speaker', { exact: true }).selectOption('a_spk');
    await p.getByRole('button', { name: 'Contacts' }).click();
    for (const who of [bob, carol]) {
      await p.getByLabel('Search contacts or enter a username').fill(who.name);
      await p.getByRole('button', { name: `Add ${who.name} as a contact` }).click();
      await p.getByText(`Contact request sent to ${who.name}.`).waitFor();
      await who.request('accept_contact', { username: 'alice' });
    }
    await p.getByLabel('Search contacts or enter a username').fill('');
    await p.getByRole('button', { name: 'Dismiss' }).click({ timeout: 2000 }).catch(() => {});
    for (const who of [bob, carol]) await p.getByRole('listitem').filter({ hasText: who.name }).getByText('Online').waitFor({ timeout: 10_000 });
  });

  it('starts a group call from contacts: Bob and Carol are rung, join, and Alice hears them', async () => {
    const p = page();
    await p.getByRole('button', { name: 'Group call' }).click();
    const picker = p.getByRole('form', { name: 'Start a group call' });
    await picker.getByRole('checkbox', { name: /bob/ }).check();
    await picker.getByRole('checkbox', { name: /carol/ }).check();
    await ui.screen('contacts-group-select');
    await expectNoSeriousA11yViolations('contacts, choosing people for a group call');
    await picker.getByRole('button', { name: 'Call 2 people' }).click();

    await p.getByRole('heading', { name: 'Group call' }).waitFor({ timeout: 20_000 });
    roomId = (await p.getByTestId('group-call').getAttribute('data-room-id'))!;
    expect(roomId).toMatch(/^[0-9a-f-]{36}$/);
    // Until they join, Bob and Carol show as ringing.
    await p.locator('[data-testid="invited"][data-username="bob"]').waitFor();
    await p.getByTestId('room-status').filter({ hasText: 'Waiting for others to join' }).waitFor({ timeout: 20_000 });
    await ui.screen('group-call-ringing-others');

    const [b, c] = await Promise.all([joinWhenRung(bob, roomId), joinWhenRung(carol, roomId)]);
    expect(b.state).toBe('joined');
    expect(c.state).toBe('joined');
    // Each row shows that audio arrives from that participant (the quality words replace "Connecting…").
    await untilHeardOnScreen(['bob', 'carol']);
    expect(await p.locator('[data-testid="invited"]').count()).toBe(0);
    await p.getByTestId('room-e2ee').filter({ hasText: 'End-to-end encrypted' }).waitFor();
    await p.getByTestId('room-status').filter({ hasText: 'In group call' }).waitFor();
    await ui.screen('group-call');
    await expectNoSeriousA11yViolations('group call');
    // The safety number with a participant, from their row: the same one their daemon computes.
    await p.getByRole('button', { name: 'Verify safety number with bob' }).click();
    const dialog = p.getByRole('dialog', { name: 'Safety number with bob' });
    const shown = (await dialog.getByTestId('safety-number').getAttribute('aria-label'))?.replace('Safety number: ', '');
    expect(shown).toMatch(/^(\d{5} ){11}\d{5}$/);
    expect(shown).toBe((await bob.request<{ safetyNumber: string }>('get_safety_number', { username: 'alice' })).safetyNumber);
    await dialog.getByRole('button', { name: 'Close' }).click();
    await dialog.waitFor({ state: 'detached' });
  });

  it('lights Bob’s speaking indicator from his real speech, which Alice’s speaker plays', async () => {
    expect(await row('bob').getAttribute('data-speaking')).toBe('false');
    const quiet = await aliceHears(1);
    const playing = pulse.play(DEVICES.b.input, speech);
    try {
      await waitFor('bob speaking on Alice’s screen', async () => ((await row('bob').getAttribute('data-speaking')) === 'true' ? true : undefined), 10_000);
      await row('bob').getByText('Speaking').waitFor();
      expect(await row('carol').getAttribute('data-speaking')).toBe('false');
      await ui.screen('group-call-speaking');
      const loud = await aliceHears(1.5);
      expect(loud).toBeGreaterThan(0.01);
      expect(loud).toBeGreaterThan(quiet * 5);
    } finally {
      await playing;
    }
    expect(await row('alice').getAttribute('data-speaking'), 'Alice’s microphone heard nothing').toBe('false');
    // Silence again: the indicator goes out.
    await waitFor('bob quiet again', async () => ((await row('bob').getAttribute('data-speaking')) === 'false' ? true : undefined), 10_000);
  });

  it('mute on Alice’s screen shows her muted on her own row and on the others’ side (her producer paused on the SFU); unmute clears it', async () => {
    const p = page();
    await p.getByRole('button', { name: 'Mute' }).click();
    await p.getByRole('button', { name: 'Unmute' }).waitFor();
    await row('alice').getByText('Muted').waitFor();
    await waitFor('bob sees alice muted', async () => {
      const s = await bob.request<RoomStatus>('list_participants');
      return s.participants.find((x) => x.username === 'alice')?.muted === true ? true : undefined;
    }, 10_000);
    await ui.screen('group-call-muted');
    await expectNoSeriousA11yViolations('group call, muted');
    await p.getByRole('button', { name: 'Unmute' }).click();
    await waitFor('bob sees alice unmuted', async () => {
      const s = await bob.request<RoomStatus>('list_participants');
      return s.participants.find((x) => x.username === 'alice')?.muted === false ? true : undefined;
    }, 10_000);
  });

  it('leaves: the others stay in the room, and the history shows the group call with who was in it', async () => {
    const p = page();
    await p.getByRole('button', { name: 'Leave the group call' }).click();
    await p.getByTestId('room-status').filter({ hasText: 'You left the group call' }).waitFor();
    await waitFor('bob sees alice gone', async () => {
      const s = await bob.request<RoomStatus>('list_participants');
      return s.participants.some((x) => x.username === 'alice') ? undefined : true;
    }, 10_000);
    await p.getByRole('button', { name: 'Close' }).click();
    await p.getByRole('button', { name: /^History/ }).click();
    const entry = p.getByTestId('history-group').first();
    await entry.waitFor();
    const text = await entry.innerText();
    expect(text).toContain('Group call with bob and carol');
    expect(text).toMatch(/Started by you · \d:\d\d/);
    await ui.screen('history-group');
    await expectNoSeriousA11yViolations('history with a group call');
    await Promise.all([bob.request('leave_room'), carol.request('leave_room')]);
  });

  it('rings Alice into Bob’s group call: who invites and who is in it, then Join', async () => {
    const p = page();
    // Bob rings Carol first; once she is in, he adds Alice (the ring names who is in the room then).
    const created = await bob.request<RoomStatus>('create_room', { invite: [carol.name] });
    await joinWhenRung(carol, created.roomId);
    await bob.request('invite_to_room', { to: 'alice' });
    const dialog = p.getByRole('alertdialog', { name: 'bob' });
    await dialog.waitFor({ timeout: 15_000 });
    expect(await dialog.innerText()).toContain('invites you to a group call');
    await waitFor('carol listed as already in', async () => ((await p.getByTestId('ring-participants').innerText()).includes('carol') ? true : undefined), 10_000);
    await ui.screen('group-ringing');
    await expectNoSeriousA11yViolations('group call ringing');
    await p.getByRole('button', { name: 'Join group call from bob' }).click();
    await p.getByTestId('room-status').filter({ hasText: 'In group call' }).waitFor({ timeout: 20_000 });
    await untilHeardOnScreen(['bob', 'carol']);
    await waitFor('bob hears alice', async () => {
      const s = await bob.request<RoomStatus>('list_participants');
      return s.participants.find((x) => x.username === 'alice')?.audio?.playing ? true : undefined;
    }, 15_000);
    await p.getByRole('button', { name: 'Leave the group call' }).click();
    await p.getByRole('button', { name: 'Close' }).click();
    await Promise.all([bob.request('leave_room'), carol.request('leave_room')]);
  });

  it('declines a group call from the ringing screen, and one that stops ringing is a missed group call', async () => {
    const p = page();
    // (Nobody is left in a room by a test that failed before.)
    await Promise.allSettled([bob.request('leave_room'), carol.request('leave_room'), p.getByRole('button', { name: 'Leave the group call' }).click({ timeout: 1000 })]);
    await p.getByRole('button', { name: 'Close' }).click({ timeout: 5000 }).catch(() => {});
    const declined = await carol.request<RoomStatus>('create_room', { invite: ['alice'] });
    await p.getByRole('alertdialog', { name: 'carol' }).waitFor({ timeout: 15_000 });
    await p.getByRole('button', { name: 'Decline group call from carol' }).click();
    await p.getByRole('alertdialog').waitFor({ state: 'detached' });
    await carol.request('leave_room', { roomId: declined.roomId });

    // Bob rings Alice, who does not answer: after the ring timeout the ringing stops.
    await bob.request<RoomStatus>('create_room', { invite: ['alice'] });
    await p.getByRole('alertdialog', { name: 'bob' }).waitFor({ timeout: 15_000 });
    await p.getByRole('alertdialog').waitFor({ state: 'detached', timeout: (RING_TIMEOUT_S + 10) * 1000 });
    await bob.request('leave_room');

    await p.getByRole('button', { name: /^History/ }).click();
    const entries = p.getByTestId('history-group');
    await waitFor('two more group entries', async () => ((await entries.count()) >= 4 ? true : undefined), 10_000);
    expect(await entries.nth(0).innerText()).toMatch(/From bob · Missed group call/);
    expect(await entries.nth(1).innerText()).toMatch(/From carol · Declined/);
    await ui.screen('history-group-missed');
    await expectNoSeriousA11yViolations('history with a missed group call');
  });
  it('push-to-talk in a group call: the others see Alice muted and hear nothing until the key is held; every control is reachable by keyboard; Alice adds Carol', async () => {
    const p = page();
    await p.getByRole('button', { name: 'Settings' }).click();
    await p.getByLabel(/Use push to talk/).check();
    await p.getByRole('button', { name: 'Contacts' }).click();

    const created = await bob.request<RoomStatus>('create_room', { invite: ['alice'] });
    await p.getByRole('button', { name: 'Join group call from bob' }).click({ timeout: 15_000 });
    await p.getByTestId('room-status').filter({ hasText: /In group call|Waiting/ }).waitFor({ timeout: 20_000 });
    const indicator = p.getByTestId('ptt-indicator');
    await indicator.filter({ hasText: 'Not talking' }).waitFor();
    const aliceOnBobsSide = async () => (await bob.request<RoomStatus>('list_participants')).participants.find((x) => x.username === 'alice');
    await waitFor('bob sees alice muted (key up)', async () => ((await aliceOnBobsSide())?.muted === true ? true : undefined), 10_000);
    await waitFor('bob receives alice', async () => ((await aliceOnBobsSide())?.audio ? true : undefined), 15_000);

    // Alice's microphone hears speech the whole time; Bob's speaker tells whether it reaches him.
    let feeding = true;
    const feed = (async () => {
      while (feeding) await pulse.play(DEVICES.a.input, speech).catch(() => new Promise((r) => setTimeout(r, 200)));
    })();
    try {
      await new Promise((r) => setTimeout(r, 800));
      const released = await bobHears();
      await p.locator('body').click({ position: { x: 5, y: 600 } });
      await p.keyboard.down('F8');
      await indicator.filter({ hasText: /^Talking$/ }).waitFor();
      await waitFor('bob sees alice unmuted (key held)', async () => ((await aliceOnBobsSide())?.muted === false ? true : undefined), 10_000);
      let held = 0;
      await waitFor('bob hears alice', async () => ((held = await bobHears()) > 0.02 ? true : undefined), 15_000).catch(() => {});
      await ui.screen('group-call-push-to-talk');
      await p.keyboard.up('F8');
      await indicator.filter({ hasText: 'Not talking' }).waitFor();
      await waitFor('bob sees alice muted again', async () => ((await aliceOnBobsSide())?.muted === true ? true : undefined), 10_000);
      await new Promise((r) => setTimeout(r, 500));
      const releasedAgain = await bobHears();
      expect(held).toBeGreaterThan(0.02);
      expect(released).toBeLessThan(held / 20);
      expect(releasedAgain).toBeLessThan(held / 20);
    } finally {
      feeding = false;
      await feed;
    }

    // Keyboard: every control of the group call screen, each with a name and a visible focus ring.
    const seen: string[] = [];
    for (let i = 0; i < 12; i++) {
      await p.keyboard.press('Tab');
      const focused = (await p.evaluate(`(() => {
        const el = document.activeElement;
        if (!el || el === document.body) return null;
        const style = getComputedStyle(el);
        const name = el.getAttribute('aria-label') || el.labels?.[0]?.innerText || el.innerText || '';
        return { tag: el.tagName, name: name.trim(), outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2 };
      })()`)) as { tag: string; name: string; outline: boolean } | null;
      if (!focused) continue;
      expect(focused.name, `${focused.tag} has an accessible name`).not.toBe('');
      expect(focused.outline, `"${focused.name}" shows focus`).toBe(true);
      seen.push(focused.name);
    }
    for (const control of ['Verify safety number with bob', 'Mute', 'Add people', 'Leave the group call']) {
      expect(seen, `${control} reachable by Tab`).toContain(control);
    }

    // Add people: Alice rings Carol into Bob's room from the group call screen.
    await p.getByRole('button', { name: 'Add people' }).click();
    const picker = p.getByRole('form', { name: 'Add people' });
    await picker.getByRole('checkbox', { name: /carol/ }).check();
    expect(await picker.getByRole('checkbox', { name: /bob/ }).count(), 'someone in the room is not offered').toBe(0);
    await ui.screen('group-call-add-people');
    await expectNoSeriousA11yViolations('group call, adding people');
    await picker.getByRole('button', { name: 'Ring 1 person' }).click();
    await picker.waitFor({ state: 'detached' });
    await p.locator('[data-testid="invited"][data-username="carol"]').waitFor();
    await joinWhenRung(carol, created.roomId);
    await untilHeardOnScreen(['carol']);
    expect(await p.locator('[data-testid="invited"]').count()).toBe(0);

    await p.getByRole('button', { name: 'Leave the group call' }).click();
    await p.getByRole('button', { name: 'Close' }).click();
    await Promise.all([bob.request('leave_room', { roomId: created.roomId }), carol.request('leave_room', { roomId: created.roomId })]);
    await p.getByRole('button', { name: 'Settings' }).click();
    await p.getByLabel(/Use push to talk/).uncheck();
    await p.getByRole('button', { name: 'Contacts' }).click();
  });

  it('someone Alice rang who declines shows as "Declined" on her group call screen for a few seconds, then goes', async () => {
    const p = page();
    await p.getByRole('button', { name: 'Group call' }).click();
    const picker = p.getByRole('form', { name: 'Start a group call' });
    await picker.getByRole('checkbox', { name: /bob/ }).check();
    await picker.getByRole('button', { name: 'Call 1 person' }).click();
    await p.getByRole('heading', { name: 'Group call' }).waitFor({ timeout: 20_000 });
    const roomId = (await p.getByTestId('group-call').getAttribute('data-room-id'))!;
    const bobRow = p.locator('[data-testid="invited"][data-username="bob"]');
    try {
      await bobRow.filter({ hasText: 'Ringing…' }).waitFor();
      await bob.waitForNotification<{ roomId: string }>('room.ringing', (r) => r.roomId === roomId, 15_000);
      await bob.request('decline_room', { roomId });
      // The server's room.invite_ended (declined) turns the row, well before any ring timeout.
      await bobRow.filter({ hasText: 'Declined' }).waitFor({ timeout: 5000 });
      // Timed from when the row was seen to turn (the screenshot and the accessibility scan below take seconds
      // under load: a CI-like run once measured 6 ms from after them).
      const shown = Date.now();
      expect(await bobRow.getAttribute('data-outcome')).toBe('declined');
      expect(await bobRow.innerText()).not.toContain('Ringing');
      await ui.screen('group-call-declined');
      await expectNoSeriousA11yViolations('group call, an invitation declined');
      // After about 5 s the row goes.
      await bobRow.waitFor({ state: 'detached', timeout: 10_000 });
      expect(Date.now() - shown).toBeGreaterThan(2000);
    } finally {
      await p.getByRole('button', { name: 'Leave the group call' }).click({ timeout: 5000 }).catch(() => {});
      await p.getByRole('button', { name: 'Close' }).click({ timeout: 5000 }).catch(() => {});
    }
  });
});
