import { EventEmitter } from 'node:events';
import type { DeviceInfo } from '../../common/protocol/signaling';
import type { SignalingClient } from './signaling-client';

/** Why the server ended this device's session. */
export type SessionEndReason = 'revoked' | 'logged_out' | 'expired';

/** Events of a DeviceSessions. */
export interface DeviceSessionsEvents {
  /**
   * A new device token (after `refresh`, manual or automatic). Store it where
   * the old one was (the OS keychain); the old one no longer works. `expiresAt` is Unix ms.
   */
  token: [{ token: string; expiresAt: number }];
  /** The server ended this device's session; sign in again with the password. */
  ended: [SessionEndReason];
}

/**
 * The account's devices and this device's session, over the signaling
 * connection: list and revoke devices, renew the device token, log out.
 *
 * Shapes: `DeviceInfo` = `{deviceId, name, createdAt, lastSeenAt|null, expiresAt, online, current}`
 * (times Unix ms; `current` is this device).
 *
 * Methods throw `ParleyError`: `unavailable` when not connected, `not_found`
 * (no such device on this account), `token_expired` (too late to refresh: sign in again).
 *
 * ```ts
 * const sessions = new DeviceSessions(signaling);
 * sessions.on('token', ({ token }) => keychain.set(key, token));
 * sessions.on('ended', (why) => showSignIn(why));
 * sessions.startAutoRefresh();
 * ```
 */
export class DeviceSessions extends EventEmitter<DeviceSessionsEvents> {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly signaling: SignalingClient) {
    super();
    signaling.on('session.ended', ({ reason }) => {
      this.stopAutoRefresh();
      this.emit('ended', reason);
    });
  }

  /** Every device signed in to this account, oldest first. */
  async list(): Promise<DeviceInfo[]> {
    return (await this.signaling.request('devices.list', {})).devices;
  }

  /**
   * Signs a device out for good: its token stops working and, if online, it is
   * disconnected. Revoking this device is the same as `logout`.
   */
  async revoke(deviceId: string): Promise<void> {
    await this.signaling.request('devices.revoke', { deviceId });
  }

  /**
   * Renews this device's token (a fresh lifetime); the signaling client uses
   * the new one from now on and `token` is emitted for storage.
   * @returns the new expiry, Unix ms.
   */
  async refresh(): Promise<number> {
    const fresh = await this.signaling.request('session.refresh', {});
    this.signaling.setToken(fresh.token, fresh.expiresAt);
    this.emit('token', fresh);
    return fresh.expiresAt;
  }

  /** Logs this device out: the server deletes its token and closes the connection (`ended` follows). */
  async logout(): Promise<void> {
    await this.signaling.request('session.logout', {});
  }

  /**
   * Renews the token whenever less than half of its lifetime is left
   * (checked every `checkMs`, default 1 h, and whenever signaling comes online).
   * Failures are retried at the next check.
   */
  startAutoRefresh(checkMs = 3_600_000): void {
    this.stopAutoRefresh();
    let lifetime: number | undefined;
    const check = () => {
      const expiresAt = this.signaling.tokenExpiresAt;
      if (expiresAt === undefined || this.signaling.state !== 'online') return;
      const left = expiresAt - Date.now();
      lifetime = Math.max(lifetime ?? 0, left);
      if (left < lifetime / 2) {
        lifetime = undefined;
        void this.refresh().catch(() => {});
      }
    };
    this.timer = setInterval(check, checkMs);
    this.timer.unref();
    this.signaling.on('state', check);
    this.stopCheck = () => this.signaling.off('state', check);
    check();
  }

  /** Stops `startAutoRefresh`. */
  stopAutoRefresh(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.stopCheck?.();
    this.stopCheck = undefined;
  }

  private stopCheck: (() => void) | undefined;
}
