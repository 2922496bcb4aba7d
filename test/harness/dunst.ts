/**
 * A real desktop notification server for tests: Debian's dunst (1.9) on a
 * private X display (Xvfb) and a given private session bus (e.g. the
 * keyring's, test/harness/keyring.ts), so that the app under test and dunst
 * share one bus.
 *
 * Buttons are pressed the way dunst's own users press them without a mouse:
 * `dunstctl context` opens dunst's context menu, which dunst hands to its
 * `dmenu` program; ours answers with the line of the wanted button, and dunst
 * then emits `ActionInvoked` like for a click.
 */
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, removeTempDir, run, startChild, waitFor } from './process';
import { startXvfb } from './xvfb';

export interface Dunst {
  /** What a process needs to reach this dunst: `DBUS_SESSION_BUS_ADDRESS` (the given bus) and `DISPLAY`. */
  readonly env: Record<string, string>;
  /**
   * Invokes the button labelled `label` (e.g. "Accept") of the newest
   * notification that has it, through dunst's context menu.
   * @throws Error when no shown notification has such a button.
   */
  press(label: string): Promise<void>;
  /** The lines dunst offered in its last context menu (`#Accept (bob is calling) [2,accept]`). */
  lastMenu(): string[];
  /** Closes every notification on screen (`dunstctl close-all`). */
  closeAll(): Promise<void>;
  /** Pauses (dunst's do-not-disturb) or resumes notifications: `dunstctl set-paused`. */
  setPaused(paused: boolean): Promise<void>;
  /** Number of notifications on screen (`org.dunstproject.cmd0.displayedLength`). */
  displayed(): Promise<number>;
  /** Saves the notification corner of the X screen (top right, 440 × 180 px) as a PNG (xwd + ImageMagick). */
  screenshot(path: string): Promise<void>;
  stop(): Promise<void>;
}

const DUNSTRC = (dmenu: string) => `[global]
    font = DejaVu Sans 11
    width = 360
    height = 140
    origin = top-right
    offset = 10x10
    frame_width = 2
    frame_color = "#3b6fd4"
    padding = 10
    horizontal_padding = 12
    show_indicators = yes
    dmenu = ${dmenu}
    mouse_left_click = do_action
[urgency_critical]
    background = "#ffffff"
    foreground = "#1b1f24"
    frame_color = "#3b6fd4"
    timeout = 0
[urgency_normal]
    background = "#ffffff"
    foreground = "#1b1f24"
    timeout = 0
`;

/**
 * Starts Xvfb and dunst on the bus at `busEnv.DBUS_SESSION_BUS_ADDRESS`, and
 * waits until `org.freedesktop.Notifications` answers.
 * @throws Error when Xvfb or dunst (Debian packages `xvfb`, `dunst`) are missing or do not start.
 */
export async function startDunst(busEnv: Record<string, string>): Promise<Dunst> {
  const bus = busEnv['DBUS_SESSION_BUS_ADDRESS'];
  if (!bus) throw new Error('startDunst needs a DBUS_SESSION_BUS_ADDRESS');
  const dir = makeTempDir('dunst');
  const choice = join(dir, 'choice');
  const menu = join(dir, 'menu');
  const picker = join(dir, 'pick.sh');
  writeFileSync(picker, `#!/bin/sh\ncat > '${menu}'\ngrep -m1 -F "$(cat '${choice}')" '${menu}'\n`);
  chmodSync(picker, 0o755);
  writeFileSync(join(dir, 'dunstrc'), DUNSTRC(picker));
  const xvfb = await startXvfb();
  const display = xvfb.display;
  const env = { DBUS_SESSION_BUS_ADDRESS: bus, DISPLAY: display };
  const childEnv = { ...process.env, ...busEnv, ...env };
  const dunst = await startChild('dunst', ['-conf', join(dir, 'dunstrc')], {
    env: childEnv,
    logFile: join(dir, 'dunst.log'),
  });
  const dunstctl = (...args: string[]) => run('dunstctl', args, { env: childEnv });
  await waitFor(
    'dunst on the bus',
    () =>
      dunstctl('is-paused').then(
        (o) => o.trim() !== '',
        () => undefined,
      ),
    10_000,
    100,
  );
  const lastMenu = () =>
    readFileSync(menu, 'utf8')
      .split('\n')
      .filter((l) => l);
  return {
    env,
    lastMenu,
    async press(label) {
      writeFileSync(choice, `#${label} (`);
      writeFileSync(menu, '');
      await dunstctl('context');
      // dunst runs its menu program after dunstctl returns.
      await waitFor(
        "dunst's context menu",
        () => (lastMenu().length ? true : undefined),
        3000,
        50,
      ).catch(() => {});
      if (!lastMenu().some((l) => l.startsWith(`#${label} (`))) {
        throw new Error(
          `no notification offers "${label}"; dunst offered: ${JSON.stringify(lastMenu())}`,
        );
      }
    },
    async closeAll() {
      await dunstctl('close-all');
    },
    async setPaused(paused) {
      await dunstctl('set-paused', String(paused));
    },
    async displayed() {
      const out = await run(
        'gdbus',
        [
          'call',
          '--session',
          '-d',
          'org.freedesktop.Notifications',
          '-o',
          '/org/freedesktop/Notifications',
          '-m',
          'org.freedesktop.DBus.Properties.Get',
          'org.dunstproject.cmd0',
          'displayedLength',
        ],
        { env: childEnv },
      );
      return Number(/uint32 (\d+)/.exec(out)?.[1] ?? 'NaN');
    },
    async screenshot(path) {
      const xwd = join(dir, 'screen.xwd');
      await run('xwd', ['-root', '-silent', '-out', xwd], { env: childEnv });
      await run('/usr/bin/convert', [`xwd:${xwd}`, '-crop', '440x180+584+0', '+repage', path]);
    },
    async stop() {
      await dunst.stop();
      await xvfb.stop();
      removeTempDir(dir);
    },
  };
}
