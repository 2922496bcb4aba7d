/**
 * Parley on a Linux desktop session: the notification server's buttons for
 * incoming calls and the desktop's do-not-disturb, over the session bus.
 * No Electron: the Electron shell (main/app/index.ts) and the development
 * bridge (scripts/dev-web.ts) both start it.
 */
import type { Settings } from '../../../common/ipc/contract';
import { CallNotifier, type CallNotifierHooks, type RingingPhone } from './call-notifier';
import { DesktopNotifications } from './notifications';

/** What the desktop integration needs of the Softphone. */
export interface DesktopPhone extends RingingPhone {
  settings(): Settings;
  updateSettings(patch: Partial<Settings>): Promise<Settings>;
}

/**
 * Follows the desktop's do-not-disturb into Parley's own (settings
 * `doNotDisturb`: calls arrive silenced, contacts see "do not disturb", the
 * history logs them as missed). When the desktop's DND ends, Parley's ends
 * too — but only if the desktop turned it on; a DND the user set in Parley
 * stays.
 */
export class DoNotDisturbFollower {
  /** Parley's DND is on because the desktop's is. */
  private fromDesktop = false;

  constructor(private readonly phone: DesktopPhone) {}

  /** The desktop's DND is now `on` (`undefined`: unknown, nothing changes). */
  async desktopChanged(on: boolean | undefined): Promise<void> {
    if (on === undefined) return;
    const current = this.phone.settings().doNotDisturb;
    if (on && !current) {
      this.fromDesktop = true;
      await this.phone.updateSettings({ doNotDisturb: true });
    } else if (!on && current && this.fromDesktop) {
      this.fromDesktop = false;
      await this.phone.updateSettings({ doNotDisturb: false });
    } else if (!on) {
      this.fromDesktop = false;
    }
  }
}

/** The running integration; `notifications` is undefined where the session has no notification server. */
export interface LinuxDesktop {
  readonly notifications: DesktopNotifications | undefined;
  readonly notifier: CallNotifier | undefined;
  stop(): Promise<void>;
}

/**
 * Connects to the session bus's notification server and starts the call
 * notifier and the do-not-disturb follower. Never throws: without a session
 * bus or a notification server, `notifications` is undefined and the caller
 * keeps its own call window (`hooks.showCallWindow`) as the way to answer.
 */
export async function startLinuxDesktop(
  phone: DesktopPhone,
  hooks: CallNotifierHooks & { warn?(message: string): void } = {},
): Promise<LinuxDesktop> {
  let notifications: DesktopNotifications | undefined;
  try {
    notifications = await DesktopNotifications.connect();
  } catch (e) {
    hooks.warn?.((e as Error).message);
    return { notifications: undefined, notifier: undefined, stop: async () => {} };
  }
  const n = notifications;
  const notifier = new CallNotifier(phone, n, hooks);
  const dnd = new DoNotDisturbFollower(phone);
  const follow = (on: boolean | undefined) =>
    void dnd.desktopChanged(on).catch((e: unknown) => hooks.warn?.((e as Error).message));
  n.on('doNotDisturb', follow);
  follow(await n.doNotDisturb());
  return {
    notifications: n,
    notifier,
    stop: async () => {
      await notifier.stop();
      n.disconnect();
    },
  };
}
