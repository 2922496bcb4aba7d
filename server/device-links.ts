import { LINK_TTL_MS } from '../common/protocol/signaling';

/** Most link rendezvous open at once on one server (each is a few dozen bytes; the oldest go first). */
const MAX_OPEN_LINKS = 10_000;

/** One open rendezvous: the device that opened it and when it closes (Unix ms). */
interface OpenLink {
  accountId: string;
  deviceId: string;
  expiresAt: number;
}

/**
 * Device-linking rendezvous (issue 12 item 3, docs/SECURITY.md "Linking a
 * device"): the device holding the account key opens one under a link id
 * derived from the one-time code it shows; a new device of the same account
 * sends its MAC-ed bundle there, and the answer goes back to that device. The
 * server only routes: it never sees the code, and the messages are
 * authenticated with a key derived from it. In memory (a restart closes every
 * open link; the user shows a new code), one per opening device, LINK_TTL_MS each.
 */
export class DeviceLinks {
  private readonly open = new Map<string, OpenLink>();

  /** Opens (or replaces) the rendezvous `linkId` for a device; an earlier one of the same device is closed. */
  openLink(linkId: string, owner: { accountId: string; deviceId: string }, now = Date.now()): void {
    this.sweep(now);
    for (const [id, l] of this.open) if (l.deviceId === owner.deviceId) this.open.delete(id);
    if (this.open.size >= MAX_OPEN_LINKS) this.open.delete(this.open.keys().next().value!);
    this.open.set(linkId, { accountId: owner.accountId, deviceId: owner.deviceId, expiresAt: now + LINK_TTL_MS });
  }

  /** The device that opened `linkId` on this account, if it is still open. */
  find(linkId: string, accountId: string, now = Date.now()): OpenLink | undefined {
    const l = this.open.get(linkId);
    if (!l || l.accountId !== accountId || l.expiresAt < now) return undefined;
    return l;
  }

  /** Closes a rendezvous (answered). */
  close(linkId: string): void {
    this.open.delete(linkId);
  }

  private sweep(now: number): void {
    for (const [id, l] of this.open) if (l.expiresAt < now) this.open.delete(id);
  }
}
