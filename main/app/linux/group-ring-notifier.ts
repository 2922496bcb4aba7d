/**
 * The group-call ringing notification with Join and Decline on Linux, over the
 * desktop's notification server (./notifications.ts), beside the 1:1 call
 * notifier (./call-notifier.ts). No Electron: the Electron shell and the
 * development bridge both use it.
 */
import type { RoomInvite } from '../../../common/ipc/contract';
import type { DesktopNotifications } from './notifications';

/** What the notifier needs of the Softphone (main/core/softphone.ts). */
export interface GroupRingingPhone {
  on(event: 'roomInvites', listener: (e: { invites: RoomInvite[] }) => void): unknown;
  off(event: 'roomInvites', listener: (e: { invites: RoomInvite[] }) => void): unknown;
  joinRoom(roomId: string): Promise<unknown>;
  declineRoom(roomId: string): Promise<unknown>;
}

export interface GroupRingHooks {
  /** After Join in the notification (or a click on it): bring the main window up (it shows the group call or its ringing screen). */
  showMain?(): void;
  /** A join or decline from the notification failed (the ring may have ended meanwhile). */
  failed?(message: string): void;
}

/** Action keys (spec: Notify `actions`). */
export const JOIN = 'join';
export const DECLINE = 'decline';

/**
 * Shows a notification with Join / Decline for each group call that rings
 * here (not silenced), joins or declines it on `ActionInvoked`, and when it
 * stops ringing otherwise closes it — or, when it was never answered here,
 * replaces it with "Missed group call" (never a group call left "ringing" on
 * screen). Where the server has no `actions` capability it shows nothing:
 * the main window's ringing screen is the way to answer (`showMain`).
 */
export class GroupRingNotifier {
  /** Notification per ringing room, and the invite it shows. */
  private readonly shown = new Map<string, { id: number; invite: RoomInvite }>();
  private readonly pending = new Map<string, Promise<number | undefined>>();
  private readonly onInvites = (e: { invites: RoomInvite[] }) => void this.update(e.invites);
  private readonly onAction = (id: number, key: string) => void this.act(id, key);
  private readonly onClosed = (id: number) => {
    for (const [roomId, s] of this.shown) if (s.id === id) this.shown.delete(roomId);
  };

  constructor(
    private readonly phone: GroupRingingPhone,
    private readonly notifications: DesktopNotifications,
    private readonly hooks: GroupRingHooks = {},
  ) {
    phone.on('roomInvites', this.onInvites);
    notifications.on('action', this.onAction);
    notifications.on('closed', this.onClosed);
  }

  /** The notification id shown for a ringing room, if any (tests, diagnostics). */
  notificationOf(roomId: string): number | undefined {
    return this.shown.get(roomId)?.id;
  }

  /** Stops following the rings and closes what is still shown. */
  async stop(): Promise<void> {
    this.phone.off('roomInvites', this.onInvites);
    this.notifications.off('action', this.onAction);
    this.notifications.off('closed', this.onClosed);
    await Promise.all([...this.shown.values()].map((s) => this.notifications.close(s.id)));
    this.shown.clear();
  }

  private async update(invites: RoomInvite[]): Promise<void> {
    const ringing = new Set(invites.map((i) => i.roomId));
    for (const i of invites) {
      if (i.silenced || this.shown.has(i.roomId) || this.pending.has(i.roomId)) continue;
      if (!this.notifications.supportsActions) {
        this.hooks.showMain?.();
        continue;
      }
      const others = i.participants.filter((u) => u !== i.inviter);
      const showing = this.notifications
        .notify({
          summary: `${i.inviter} invites you to a group call`,
          body: others.length ? `Parley — already in: ${others.join(', ')}` : 'Parley — group call',
          icon: 'call-start',
          urgency: 'critical',
          category: 'call.incoming',
          timeoutMs: 0,
          actions: [
            { key: JOIN, label: 'Join' },
            { key: DECLINE, label: 'Decline' },
            { key: 'default', label: 'Open' },
          ],
        })
        .catch((e: unknown) => {
          this.hooks.failed?.((e as Error).message);
          this.hooks.showMain?.();
          return undefined;
        });
      this.pending.set(i.roomId, showing);
      const id = await showing;
      this.pending.delete(i.roomId);
      if (id !== undefined) this.shown.set(i.roomId, { id, invite: i });
    }
    // Rooms that stopped ringing: close, or say it was missed.
    for (const [roomId, entry] of [...this.shown]) {
      if (ringing.has(roomId)) continue;
      this.shown.delete(roomId);
      await this.notifications
        .notify({ summary: `Missed group call from ${entry.invite.inviter}`, body: 'Parley', icon: 'call-missed', category: 'call.missed', replacesId: entry.id })
        .catch(() => this.notifications.close(entry.id));
    }
  }

  private async act(id: number, key: string): Promise<void> {
    const entry = [...this.shown.values()].find((s) => s.id === id);
    if (!entry) return;
    const { roomId, inviter } = entry.invite;
    if (key !== JOIN && key !== DECLINE) {
      this.hooks.showMain?.();
      return;
    }
    // Answered here: the notification goes at once (joining takes a moment), never as "missed".
    this.shown.delete(roomId);
    await this.notifications.close(id);
    try {
      if (key === JOIN) {
        this.hooks.showMain?.();
        await this.phone.joinRoom(roomId);
      } else {
        await this.phone.declineRoom(roomId);
      }
    } catch (e) {
      this.hooks.failed?.(`Cannot ${key === JOIN ? 'join' : 'decline'} the group call from ${inviter}: ${(e as Error).message}`);
    }
  }
}
