/**
 * The desktop's do-not-disturb followed into Parley's (main/app/linux/desktop.ts
 * DoNotDisturbFollower): GNOME's `org.gnome.desktop.notifications show-banners`
 * through GLib's gsettings on a real dconf (Debian's dconf-service, activated
 * on a private session bus, with a temporary XDG_CONFIG_HOME), set the way
 * GNOME Settings sets it. The phone is a stand-in holding the settings (the
 * real core's silenced, missed calls under desktop DND are in
 * test/ui/desktop.test.ts, with dunst).
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SETTINGS, type Settings } from '../../common/ipc/contract';
import { DoNotDisturbFollower } from '../../main/app/linux/desktop';
import {
  gnomeDoNotDisturb,
  isGnomeSession,
  watchGnomeDoNotDisturb,
} from '../../main/app/linux/gnome-banners';
import { makeTempDir, removeTempDir, startChild, waitFor, type Child } from '../harness/process';

let dir: string;
let daemon: Child;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  dir = makeTempDir('gnome-dnd');
  daemon = await startChild(
    'dbus-daemon',
    ['--session', '--nofork', '--print-address=1', `--address=unix:path=${dir}/bus`],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  const address = await new Promise<string>((resolve) => {
    let out = '';
    daemon.process.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
  });
  env = {
    ...process.env,
    DBUS_SESSION_BUS_ADDRESS: address,
    HOME: dir,
    XDG_CONFIG_HOME: `${dir}/config`,
    XDG_RUNTIME_DIR: dir,
    XDG_CURRENT_DESKTOP: 'ubuntu:GNOME',
  };
  delete env['GSETTINGS_BACKEND'];
  // dconf-service is started by the bus: it must write where this "session" reads.
  execFileSync('dbus-update-activation-environment', ['HOME', 'XDG_CONFIG_HOME', 'XDG_RUNTIME_DIR'], { env });
});

afterAll(async () => {
  await daemon?.stop();
  if (dir) removeTempDir(dir);
});

/** What GNOME Settings' "Do Not Disturb" switch does. */
const setGnomeDnd = (on: boolean) =>
  execFileSync(
    'gsettings',
    ['set', 'org.gnome.desktop.notifications', 'show-banners', String(!on)],
    { env },
  );

class StandInPhone {
  current: Settings = structuredClone(DEFAULT_SETTINGS);
  settings() {
    return structuredClone(this.current);
  }
  async updateSettings(patch: Partial<Settings>) {
    this.current = { ...this.current, ...patch };
    return this.settings();
  }
  on() {}
  off() {}
  async answer() {}
  async decline() {}
  async joinRoom() {}
  async declineRoom() {}
}

describe("the desktop's do-not-disturb", () => {
  it('reads and follows GNOME’s show-banners (dconf), and turns Parley’s DND off only if the desktop turned it on', async () => {
    expect(isGnomeSession(env)).toBe(true);
    expect(await gnomeDoNotDisturb(env)).toBe(false);
    const phone = new StandInPhone();
    const follower = new DoNotDisturbFollower(phone);
    const stop = watchGnomeDoNotDisturb((on) => void follower.desktopChanged(on, 'gnome'), env);
    try {
      await new Promise((r) => setTimeout(r, 500)); // gsettings monitor subscribes
      setGnomeDnd(true);
      await waitFor('Parley in DND', () => (phone.current.doNotDisturb ? true : undefined), 5000);
      expect(await gnomeDoNotDisturb(env)).toBe(true);
      setGnomeDnd(false);
      await waitFor(
        'Parley out of DND',
        () => (phone.current.doNotDisturb ? undefined : true),
        5000,
      );

      // A DND the user set in Parley stays when the desktop's ends.
      await phone.updateSettings({ doNotDisturb: true });
      setGnomeDnd(true);
      await new Promise((r) => setTimeout(r, 300));
      setGnomeDnd(false);
      await new Promise((r) => setTimeout(r, 500));
      expect(phone.current.doNotDisturb).toBe(true);
    } finally {
      stop();
    }
  });

  it('needs every source off: the notification server still in DND keeps Parley in DND when GNOME’s ends', async () => {
    const phone = new StandInPhone();
    const follower = new DoNotDisturbFollower(phone);
    await follower.desktopChanged(true, 'notifications');
    await follower.desktopChanged(true, 'gnome');
    await follower.desktopChanged(false, 'gnome');
    expect(phone.current.doNotDisturb).toBe(true);
    await follower.desktopChanged(false, 'notifications');
    expect(phone.current.doNotDisturb).toBe(false);
  });
});
