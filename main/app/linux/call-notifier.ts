/**
 * The incoming-call notification with Accept and Decline on Linux, over the
 * desktop's notification server (./notifications.ts). No Electron: the
 * Electron shell and the development bridge both use it.
 */
import type { CallStatus } from '../../../common/protocol/control';
import type { DesktopNotifications } from './notifications';

/** What the notifier needs of the Softphone (main/core/softphone.ts). */
export interface RingingPhone {
  on(event: 'call', listener: (c: CallStatus & { silenced?: boolean }) => void): unknown;
  off(event: 'call', listener: (c: CallStatus & { silenced?: boolean }) => void): unknown;
  answer(callId: string): Promise<unknown>;
  decline(callId: string): Promise<unknown>;
}

/** Where the notifier sends the user when the notification cannot do it. */
export interface CallNotifierHooks {
  /** Parley's own call window (Accept / Decline): when the server has no buttons, on a click on the bubble, or when the user dismissed it while it still rings. */
  showCallWindow?(c: CallStatus): void;
  /** After Accept in the notification: bring the main window up. */
  answered?(c: CallStatus): void;
  /** An answer or decline from the notification failed (the call may have ended meanwhile). */
  failed?(message: string): void;
}

/** Action keys Parley offers (spec: Notify `actions`). */
export const ACCEPT = 'accept';
export const DECLINE = 'decline';

/**
 * Shows a notification with Accept / Decline for each incoming call that
 * rings (not silenced), answers or declines the call on `ActionInvoked`, and
 * when the call stops ringing for any other reason closes it (answered here
 * or elsewhere, declined) or replaces it with a "Missed call" notice (caller
 * gave up, no answer) — never leaving a call "still ringing" on screen
 * (Signal-Desktop#6954). Where the server has no `actions` capability, it
 * calls `showCallWindow` instead of showing buttons.
 */
export class CallNotifier {
  /** Notification id per ringing call. */
  private readonly shown = new Map<string, { id: number; call: CallStatus }>();
  private readonly onCall = (c: CallStatus & { silenced?: boolean }) => void this.update(c);
  private readonly onAction = (id: number, key: string) => void this.act(id, key);
  private readonly onClosed = (id: number, reason: string) => {
    const entry = this.byId(id);
    if (!entry) return;
    this.shown.delete(entry.call.callId);
    if (reason === 'dismissed') this.hooks.showCallWindow?.(entry.call);
  };
  /** Calls whose notification is being shown (Notify in flight), so that an end meanwhile still closes it. */
  private readonly pending = new Map<string, Promise<number | undefined>>();

  constructor(
    private readonly phone: RingingPhone,
    private readonly notifications: DesktopNotifications,
    private readonly hooks: CallNotifierHooks = {},
  ) {
    phone.on('call', this.onCall);
    notifications.on('action', this.onAction);
    notifications.on('closed', this.onClosed);
  }

  /** The notification id shown for a ringing call, if any (for tests and diagnostics). */
  notificationOf(callId: string): number | undefined {
    return this.shown.get(callId)?.id;
  }

  /** Stops following calls and closes what is still shown. */
  async stop(): Promise<void> {
    this.phone.off('call', this.onCall);
    this.notifications.off('action', this.onAction);
    this.notifications.off('closed', this.onClosed);
    await Promise.all([...this.shown.values()].map((s) => this.notifications.close(s.id)));
    this.shown.clear();
  }

  private byId(id: number) {
    for (const s of this.shown.values()) if (s.id === id) return s;
    return undefined;
  }

  private async update(c: CallStatus & { silenced?: boolean }): Promise<void> {
    if (c.direction !== 'incoming') return;
    if (c.state === 'incoming') {
      if (c.silenced || this.shown.has(c.callId) || this.pending.has(c.callId)) return;
      if (!this.notifications.supportsActions) {
        this.hooks.showCallWindow?.(c);
        return;
      }
      const showing = this.notifications
        .notify({
          summary: `${c.peer} is calling`,
          body: 'Parley — incoming call',
          icon: 'call-start',
          urgency: 'critical',
          category: 'call.incoming',
          timeoutMs: 0,
          actions: [
            { key: ACCEPT, label: 'Accept' },
            { key: DECLINE, label: 'Decline' },
            { key: 'default', label: 'Open' },
          ],
        })
        .catch((e: unknown) => {
          this.hooks.failed?.((e as Error).message);
          this.hooks.showCallWindow?.(c);
          return undefined;
        });
      this.pending.set(c.callId, showing);
      const id = await showing;
      this.pending.delete(c.callId);
      if (id !== undefined) this.shown.set(c.callId, { id, call: c });
      return;
    }
    // The call stopped ringing: wait for a Notify still in flight, then close or replace.
    await this.pending.get(c.callId);
    const entry = this.shown.get(c.callId);
    if (!entry) return;
    this.shown.delete(c.callId);
    const missed =
      c.state === 'ended' &&
      (c.endReason === 'no_answer' || c.endReason === 'hangup' || c.endReason === 'ttl_expired');
    if (missed && !c.answeredAt) {
      await this.notifications
        .notify({
          summary: `Missed call from ${c.peer}`,
          body: 'Parley',
          icon: 'call-missed',
          category: 'call.missed',
          replacesId: entry.id,
        })
        .catch(() => this.notifications.close(entry.id));
    } else {
      await this.notifications.close(entry.id);
    }
  }

  private async act(id: number, key: string): Promise<void> {
    const entry = this.byId(id);
    if (!entry) return;
    const { call } = entry;
    try {
      if (key === ACCEPT) {
        await this.phone.answer(call.callId);
        this.hooks.answered?.(call);
      } else if (key === DECLINE) {
        await this.phone.decline(call.callId);
      } else {
        this.hooks.showCallWindow?.(call);
      }
    } catch (e) {
      this.hooks.failed?.(
        `Cannot ${key === ACCEPT ? 'answer' : 'decline'} the call from ${call.peer}: ${(e as Error).message}`,
      );
    }
  }
}
