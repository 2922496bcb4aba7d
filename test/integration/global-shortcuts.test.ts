/**
 * The GlobalShortcuts portal client (main/app/linux/global-shortcuts.ts) on a
 * real private D-Bus session bus (Debian's dbus-daemon), against a small
 * stand-in for the portal that speaks the portal's D-Bus contract
 * (org.freedesktop.portal.GlobalShortcuts: CreateSession / BindShortcuts
 * answered through org.freedesktop.portal.Request::Response on the
 * predictable request path; Activated / Deactivated; Session.Closed).
 *
 * Why a stand-in for the key events: xdg-desktop-portal 1.16 (Debian 12)
 * forwards GlobalShortcuts to a backend, and the only Debian backend that
 * implements it (KDE's 5.27) binds a new shortcut without a key (it opens
 * System Settings for the user to choose one) and delivers keys through a
 * Plasma session's kglobalaccel; no such session runs here. So the last test
 * runs the real xdg-desktop-portal with the real KDE backend (on Xvfb) and
 * checks that CreateSession and BindShortcuts succeed through the real
 * portal's Request/Response; Activated / Deactivated and the fail-safe are
 * checked against the stand-in.
 */
import dbus from '@particle/dbus-next';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PortalPushToTalk, PTT_SHORTCUT } from '../../main/app/linux/global-shortcuts';
import { existsSync } from 'node:fs';
import { makeTempDir, removeTempDir, run, startChild, type Child } from '../harness/process';
import { startXvfb } from '../harness/xvfb';

const PORTAL = 'org.freedesktop.portal.Desktop';
const PORTAL_PATH = '/org/freedesktop/portal/desktop';
const IFACE = 'org.freedesktop.portal.GlobalShortcuts';

let daemon: Child;
let address: string;
let dir: string;

beforeAll(async () => {
  dir = makeTempDir('portal-bus');
  daemon = await startChild(
    'dbus-daemon',
    ['--session', '--nofork', '--print-address=1', `--address=unix:path=${dir}/bus`],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  address = await new Promise<string>((resolve) => {
    let out = '';
    daemon.process.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
  });
});

afterAll(async () => {
  await daemon?.stop();
  if (dir) removeTempDir(dir);
});

/** A stand-in portal on its own connection: records calls, answers them, emits signals on demand. */
async function startFakePortal(answer: { code?: number; trigger?: string } = {}) {
  const bus = dbus.sessionBus({ busAddress: address });
  const calls: { member: string; body: unknown[]; sender: string }[] = [];
  let session = '';
  let client = '';
  bus.addMethodHandler((msg: dbus.Message) => {
    if (msg.path === PORTAL_PATH && msg.interface === IFACE) {
      calls.push({ member: msg.member, body: msg.body, sender: msg.sender });
      client = msg.sender;
      const options = (msg.member === 'CreateSession' ? msg.body[0] : msg.body[3]) as Record<
        string,
        dbus.Variant
      >;
      const token = options['handle_token']!.value as string;
      const request = `${PORTAL_PATH}/request/${msg.sender.slice(1).replace(/\./g, '_')}/${token}`;
      bus.send(dbus.Message.newMethodReturn(msg, 'o', [request]));
      let results: Record<string, dbus.Variant> = {};
      if (msg.member === 'CreateSession') {
        session = `${PORTAL_PATH}/session/${msg.sender.slice(1).replace(/\./g, '_')}/${options['session_handle_token']!.value as string}`;
        results = { session_handle: new dbus.Variant('s', session) };
      } else {
        const id = (msg.body[1] as [string, unknown][])[0]![0];
        results = {
          shortcuts: new dbus.Variant('a(sa{sv})', [
            [
              id,
              {
                description: new dbus.Variant('s', 'Push to talk (Parley)'),
                trigger_description: new dbus.Variant('s', answer.trigger ?? 'F8'),
              },
            ],
          ]),
        };
      }
      setTimeout(
        () =>
          bus.send(
            dbus.Message.newSignal(
              request,
              'org.freedesktop.portal.Request',
              'Response',
              'ua{sv}',
              [answer.code ?? 0, results],
            ),
          ),
        20,
      );
      return true;
    }
    if (msg.interface === 'org.freedesktop.portal.Session' && msg.member === 'Close') {
      calls.push({ member: 'Session.Close', body: [], sender: msg.sender });
      bus.send(dbus.Message.newMethodReturn(msg));
      return true;
    }
    return false;
  });
  await bus.requestName(PORTAL, 0);
  const signal = (member: 'Activated' | 'Deactivated', id = PTT_SHORTCUT, ofSession = session) => {
    void client;
    bus.send(
      dbus.Message.newSignal(PORTAL_PATH, IFACE, member, 'osta{sv}', [
        ofSession,
        id,
        BigInt(Date.now()),
        {},
      ]),
    );
  };
  return {
    calls,
    session: () => session,
    press: () => signal('Activated'),
    release: () => signal('Deactivated'),
    signal,
    closeSession: () =>
      bus.send(
        dbus.Message.newSignal(session, 'org.freedesktop.portal.Session', 'Closed', 'a{sv}', [{}]),
      ),
    stop: () => bus.disconnect(),
  };
}

const open: { stop(): void }[] = [];
afterEach(() => {
  for (const o of open.splice(0)) o.stop();
});

/** Waits until `check()` is true (10 ms steps, up to 3 s). */
async function until(check: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 3000;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('the GlobalShortcuts portal client (push-to-talk under Wayland)', () => {
  it('creates a session and binds push-to-talk with the preferred trigger; key down and up follow Activated / Deactivated', async () => {
    const portal = await startFakePortal({ trigger: 'F8' });
    open.push(portal);
    const bus = dbus.sessionBus({ busAddress: address });
    open.push({ stop: () => bus.disconnect() });
    const { client, trigger } = await PortalPushToTalk.start('F8', { bus, timeoutMs: 3000 });
    expect(trigger).toBe('F8');
    expect(portal.calls.map((c) => c.member)).toEqual(['CreateSession', 'BindShortcuts']);
    const bind = portal.calls[1]!.body as [
      string,
      [string, Record<string, dbus.Variant>][],
      string,
      unknown,
    ];
    expect(bind[0]).toBe(portal.session());
    expect(bind[1][0]![0]).toBe(PTT_SHORTCUT);
    expect(bind[1][0]![1]['preferred_trigger']!.value).toBe('F8');

    const keys: boolean[] = [];
    client.on('key', (p) => keys.push(p));
    portal.press();
    await until(() => keys.length === 1, 'key down');
    expect(client.isPressed).toBe(true);
    portal.release();
    await until(() => keys.length === 2, 'key up');
    expect(keys).toEqual([true, false]);
    // Another shortcut, or another session's, is not ours.
    portal.signal('Activated', 'something-else');
    portal.signal('Activated', PTT_SHORTCUT, '/org/freedesktop/portal/desktop/session/other/x');
    await new Promise((r) => setTimeout(r, 200));
    expect(keys).toEqual([true, false]);
    await client.close();
    await until(() => portal.calls.some((c) => c.member === 'Session.Close'), 'Session.Close');
  });

  it('treats the key as released when the desktop closes the session while it is held', async () => {
    const portal = await startFakePortal();
    open.push(portal);
    const bus = dbus.sessionBus({ busAddress: address });
    open.push({ stop: () => bus.disconnect() });
    const { client } = await PortalPushToTalk.start('F8', { bus, timeoutMs: 3000 });
    const lost: string[] = [];
    client.on('lost', (r) => lost.push(r));
    portal.press();
    await until(() => client.isPressed, 'key down');
    portal.closeSession();
    await until(() => lost.length === 1, 'lost');
    expect(client.isPressed).toBe(false);
    expect(lost[0]).toMatch(/closed/);
  });

  it('treats the key as released when the portal goes away while it is held', async () => {
    const portal = await startFakePortal();
    const bus = dbus.sessionBus({ busAddress: address });
    open.push({ stop: () => bus.disconnect() });
    const { client } = await PortalPushToTalk.start('F8', { bus, timeoutMs: 3000 });
    const lost: string[] = [];
    client.on('lost', (r) => lost.push(r));
    portal.press();
    await until(() => client.isPressed, 'key down');
    portal.stop();
    await until(() => lost.length === 1, 'lost');
    expect(client.isPressed).toBe(false);
    expect(lost[0]).toMatch(/went away/);
  });

  it('refused by the user: forbidden; no portal on the bus: unavailable', async () => {
    const portal = await startFakePortal({ code: 1 });
    open.push(portal);
    const bus = dbus.sessionBus({ busAddress: address });
    open.push({ stop: () => bus.disconnect() });
    await expect(PortalPushToTalk.start('F8', { bus, timeoutMs: 3000 })).rejects.toMatchObject({
      reason: 'forbidden',
    });
    portal.stop();
    open.splice(open.indexOf(portal), 1);
    await new Promise((r) => setTimeout(r, 100));
    await expect(PortalPushToTalk.start('F8', { bus, timeoutMs: 3000 })).rejects.toMatchObject({
      reason: 'unavailable',
    });
  });

  it.runIf(
    existsSync('/usr/libexec/xdg-desktop-portal') &&
      existsSync('/usr/share/xdg-desktop-portal/portals/kde.portal'),
  )(
    "binds push-to-talk through Debian's real xdg-desktop-portal 1.16 and its KDE backend (bus-activated, on Xvfb)",
    async () => {
      // A bus of its own (the stand-in above owns the portal name on the shared one), with the
      // standard session service files, so that the portal and its KDE backend are activated.
      const own = makeTempDir('portal-kde');
      const busDaemon = await startChild(
        'dbus-daemon',
        ['--session', '--nofork', '--print-address=1', `--address=unix:path=${own}/bus`],
        {
          stdio: ['ignore', 'pipe', 'ignore'],
        },
      );
      const xvfb = await startXvfb();
      try {
        const busAddress = await new Promise<string>((resolve) => {
          let out = '';
          busDaemon.process.stdout!.on('data', (d: Buffer) => {
            out += d.toString();
            if (out.includes('\n')) resolve(out.trim());
          });
        });
        const env = {
          ...process.env,
          DBUS_SESSION_BUS_ADDRESS: busAddress,
          DISPLAY: xvfb.display,
          XDG_CURRENT_DESKTOP: 'KDE',
          QT_QPA_PLATFORM: 'xcb',
          XDG_RUNTIME_DIR: own,
          HOME: own,
        };
        await run(
          'dbus-update-activation-environment',
          ['DISPLAY', 'XDG_CURRENT_DESKTOP', 'QT_QPA_PLATFORM', 'XDG_RUNTIME_DIR', 'HOME'],
          { env },
        );
        const bus = dbus.sessionBus({ busAddress });
        try {
          const { client } = await PortalPushToTalk.start('F8', { bus, timeoutMs: 30_000 });
          expect(client.isPressed).toBe(false);
          await client.close();
        } finally {
          bus.disconnect();
        }
      } finally {
        await busDaemon.stop();
        await xvfb.stop();
        removeTempDir(own);
      }
    },
    60_000,
  );
});
