/**
 * Parley on a Linux desktop session: the notification server's buttons for
 * incoming calls and the desktop's do-not-disturb, over the session bus.
 * No Electron: the Electron shell (main/app/index.ts) and the development
 * bridge (scripts/dev-web.ts) both start it.
 */
import dbus from '@particle/dbus-next';
import type { Settings } from '../../../common/ipc/contract';
import type { CallStatus } from '../../../common/protocol/control';
import { CallNotifier, type CallNotifierHooks, type RingingPhone } from './call-notifier';
import { GroupRingNotifier, type GroupRingHooks, type GroupRingingPhone } from './group-ring-notifier';
import { gnomeDoNotDisturb, isGnomeSession, watchGnomeDoNotDisturb } from './gnome-banners';
import { MediaPlayers } from './mpris';
import { DesktopNotifications } from './notifications';

/** What the desktop integration needs of the Softphone. */
export type DesktopPhone = RingingPhone &
  GroupRingingPhone & {
    settings(): Settings;
    updateSettings(patch: Partial<Settings>): Promise<Settings>;
  };

/**
 * Follows the desktop's do-not-disturb (any of its sources: the notification
 * server's, GNOME's show-banners) into Parley's own (settings
 * `doNotDisturb`: calls arrive silenced, contacts see "do not disturb", the
 * history logs them as missed). When the desktop's DND ends, Parley's ends
 * too — but only if the desktop turned it on; a DND the user set in Parley
 * stays.
 */
export class DoNotDisturbFollower {
  /** Each desktop source's do-not-disturb (notification server, GNOME's show-banners). */
  private readonly sources = new Map<string, boolean>();
  /** Parley's DND is on because the desktop's is. */
  private fromDesktop = false;

  constructor(private readonly phone: DesktopPhone) {}

  /** The desktop's DND as `source` sees it is now `on` (`undefined`: unknown, nothing changes). */
  async desktopChanged(on: boolean | undefined, source = 'notifications'): Promise<void> {
    if (on === undefined) return;
    this.sources.set(source, on);
    const desktop = [...this.sources.values()].some((v) => v);
    const current = this.phone.settings().doNotDisturb;
    if (desktop && !current) {
      this.fromDesktop = true;
      await this.phone.updateSettings({ doNotDisturb: true });
    } else if (!desktop && current && this.fromDesktop) {
      this.fromDesktop = false;
      await this.phone.updateSettings({ doNotDisturb: false });
    } else if (!desktop) {
      this.fromDesktop = false;
    }
  }
}

/**
 * Pauses the desktop's media players (MPRIS) while a call is connected
 * (`connecting`, `active`, `held`) and resumes those it paused when the last
 * call ends; only with the setting `pauseMedia` on.
 */
export class PauseMediaDuringCalls {
  private readonly inCall = new Set<string>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly phone: DesktopPhone,
    private readonly players: MediaPlayers,
  ) {}

  /** Feed every `call` event here. @returns a promise settled once the players were told. */
  onCall(c: CallStatus): Promise<unknown> {
    const before = this.inCall.size;
    if (c.state === 'connecting' || c.state === 'active' || c.state === 'held')
      this.inCall.add(c.callId);
    else this.inCall.delete(c.callId);
    if (before === 0 && this.inCall.size > 0 && this.phone.settings().pauseMedia) {
      this.queue = this.queue.then(() => this.players.pauseAll());
    } else if (before > 0 && this.inCall.size === 0) {
      this.queue = this.queue.then(() => this.players.resumePaused());
    }
    return this.queue;
  }
}

/** The running integration; `notifications` is undefined where the session has no notification server. */
export interface LinuxDesktop {
  readonly notifications: DesktopNotifications | undefined;
  readonly notifier: CallNotifier | undefined;
  /** Group calls ringing here: Join / Decline in the notification. */
  readonly groupNotifier: GroupRingNotifier | undefined;
  readonly players: MediaPlayers | undefined;
  stop(): Promise<void>;
}

/**
 * Connects to the session bus (`DBUS_SESSION_BUS_ADDRESS`) and starts the
 * call notifier and the do-not-disturb follower (where a notification server
 * answers) and the media-player pause during calls. Never throws: without a
 * session bus or a notification server, `notifications` is undefined and the
 * caller keeps its own call window (`hooks.showCallWindow`) as the way to answer.
 */
export async function startLinuxDesktop(
  phone: DesktopPhone,
  hooks: CallNotifierHooks & GroupRingHooks & { warn?(message: string): void } = {},
): Promise<LinuxDesktop> {
  let bus: dbus.MessageBus;
  try {
    bus = dbus.sessionBus();
  } catch (e) {
    hooks.warn?.(`no session bus: ${(e as Error).message}`);
    return {
      notifications: undefined,
      notifier: undefined,
      groupNotifier: undefined,
      players: undefined,
      stop: async () => {},
    };
  }
  bus.on('error', (e: unknown) => hooks.warn?.(`session bus: ${(e as Error).message}`));
  const players = new MediaPlayers(bus);
  const media = new PauseMediaDuringCalls(phone, players);
  const onCall = (c: CallStatus) => void media.onCall(c);
  phone.on('call', onCall);

  const dnd = new DoNotDisturbFollower(phone);
  const follow = (source: string) => (on: boolean | undefined) =>
    void dnd.desktopChanged(on, source).catch((e: unknown) => hooks.warn?.((e as Error).message));
  // GNOME keeps its do-not-disturb in GSettings (show-banners), not in the notification server.
  let stopGnome: (() => void) | undefined;
  if (isGnomeSession()) {
    follow('gnome')(await gnomeDoNotDisturb());
    stopGnome = watchGnomeDoNotDisturb(follow('gnome'));
  }

  let notifications: DesktopNotifications | undefined;
  let notifier: CallNotifier | undefined;
  let groupNotifier: GroupRingNotifier | undefined;
  try {
    notifications = await DesktopNotifications.connect({ bus });
    notifier = new CallNotifier(phone, notifications, hooks);
    groupNotifier = new GroupRingNotifier(phone, notifications, hooks);
    notifications.on('doNotDisturb', follow('notifications'));
    follow('notifications')(await notifications.doNotDisturb());
  } catch (e) {
    hooks.warn?.((e as Error).message);
  }
  return {
    notifications,
    notifier,
    groupNotifier,
    players,
    stop: async () => {
      phone.off('call', onCall);
      stopGnome?.();
      await notifier?.stop();
      await groupNotifier?.stop();
      notifications?.disconnect();
      bus.disconnect();
    },
  };
}
