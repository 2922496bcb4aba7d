import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { z } from 'zod';
import type { AccountDevicesStatus, DeviceAlarm } from '../../../common/protocol/control';
import { AccountKey, DeviceCertificate } from '../../../common/protocol/envelope';
import type { KeysGetResult } from '../../../common/protocol/signaling';
import { readJsonFile, writeJsonFile } from '../json-file';
import { certificateValid } from './account-key';

const OwnFile = z.object({
  v: z.literal(1),
  /** This account's key as this device pinned it: created here, or received when this device was linked. */
  accountKey: AccountKey.optional(),
  /** This device's certificate by that key (a linked device keeps the one it was given). */
  certificate: DeviceCertificate.optional(),
  /**
   * This device (this data folder) made the account key and holds it in the
   * keychain. The keychain entry is per account and server, and one OS user's
   * keychain may serve several profiles: only the profile that made the key uses it.
   */
  holder: z.boolean().optional(),
  /** The devices of the account this device approved (signed here, or seen with a valid certificate). */
  approved: z.record(z.string(), z.object({ ik: z.string(), approvedAt: z.number() })),
  /** Open alarms by key (`device:<id>` or `account`). */
  alarms: z.record(z.string(), z.object({ kind: z.enum(['device_uncertified', 'account_key_changed']), deviceId: z.string().optional(), identityKey: z.string().optional(), firstSeen: z.number() })),
});
type OwnFile = z.infer<typeof OwnFile>;

/**
 * This device's own list of its account's approved devices, kept in
 * `<dataDir>/account-devices.json` (public keys only, mode 0600), and the
 * alarms it raises (docs/SECURITY.md, "Account key and device certificates"):
 *
 * - `device_uncertified`: the server lists a device of this account that has
 *   no valid certificate by the account key this device pinned — a device
 *   nobody here linked (a server adding devices, or a sign-in by someone who
 *   has the password);
 * - `account_key_changed`: the server shows another account key than the
 *   pinned one (someone reset it with the password, or the server lies).
 *
 * An alarm stays until the device is gone from the server's list (revoked) or
 * validly certified (linked); it never removes a pin or a trust entry.
 * Emits `alarm` (DeviceAlarm) once per new alarm.
 */
export class AccountDevices extends EventEmitter<{ alarm: [DeviceAlarm] }> {
  private data: OwnFile = { v: 1, approved: {}, alarms: {} };
  private writing: Promise<void> = Promise.resolve();

  private constructor(private readonly path: string) {
    super();
  }

  /** Loads (or starts) the file in `dataDir`. A damaged file is reported through `onCorrupt` and starts empty. */
  static async open(dataDir: string, onCorrupt?: (why: string) => void): Promise<AccountDevices> {
    const store = new AccountDevices(join(dataDir, 'account-devices.json'));
    store.data = await readJsonFile(store.path, OwnFile, { v: 1, approved: {}, alarms: {} }, onCorrupt);
    return store;
  }

  /** The account key this device pinned (undefined: not linked yet). */
  get accountKey(): AccountKey | undefined {
    return this.data.accountKey;
  }

  /** This device's certificate, when it has one. */
  get certificate(): DeviceCertificate | undefined {
    return this.data.certificate;
  }

  /** Whether this data folder made (and so may use) the account key in the keychain whose public key is `key`. */
  holds(key: string): boolean {
    return !!this.data.holder && this.data.accountKey?.key === key;
  }

  /**
   * Pins the account key and this device's certificate (on the first device
   * at creation, or after a reset, with `holder`; on a new device once
   * linked). A different account key replaces the pin only here, by the
   * user's action (link, reset).
   */
  pin(accountKey: AccountKey, certificate: DeviceCertificate, holder = false): void {
    this.data.accountKey = accountKey;
    this.data.certificate = certificate;
    if (holder) this.data.holder = true;
    else delete this.data.holder;
    delete this.data.alarms.account;
    this.approve(certificate.deviceId, certificate.ik);
  }

  /** Records a device as approved by this device (it signed it, or linked through it). */
  approve(deviceId: string, ik: string): void {
    this.data.approved[deviceId] = { ik, approvedAt: Date.now() };
    delete this.data.alarms[`device:${deviceId}`];
    this.save();
  }

  /** Whether `deviceId` with identity key `ik` is on this device's approved list. */
  isApproved(deviceId: string, ik: string): boolean {
    return this.data.approved[deviceId]?.ik === ik;
  }

  /**
   * Compares the server's list of this account's devices with the approved
   * list: a device with a valid certificate by the pinned account key is
   * approved (and added); any other raises a `device_uncertified` alarm; a
   * different account key raises `account_key_changed`. Without a pinned
   * account key (this device is not linked) nothing can be judged.
   * @returns the open alarms after the review.
   */
  review(list: KeysGetResult, me: { deviceId: string }): DeviceAlarm[] {
    const pinned = this.data.accountKey;
    if (!pinned) return [];
    const now = Date.now();
    const raise = (key: string, alarm: Omit<DeviceAlarm, 'firstSeen' | 'message'>) => {
      const old = this.data.alarms[key];
      if (old && old.identityKey === alarm.identityKey) return;
      this.data.alarms[key] = { ...alarm, firstSeen: now };
      this.emit('alarm', withMessage({ ...alarm, firstSeen: now }));
    };
    if (list.accountKey && list.accountKey.key !== pinned.key) raise('account', { kind: 'account_key_changed', identityKey: list.accountKey.key });
    else if (!list.accountKey && list.devices.length > 0) raise('account', { kind: 'account_key_changed' }); // the server dropped it
    else delete this.data.alarms.account;
    const listed = new Set<string>();
    for (const d of list.devices) {
      if (d.deviceId === me.deviceId) continue;
      listed.add(d.deviceId);
      if (certificateValid(d.certificate, pinned.key, d.bundle)) {
        if (!this.isApproved(d.deviceId, d.bundle.ik)) this.data.approved[d.deviceId] = { ik: d.bundle.ik, approvedAt: now };
        delete this.data.alarms[`device:${d.deviceId}`];
      } else {
        raise(`device:${d.deviceId}`, { kind: 'device_uncertified', deviceId: d.deviceId, identityKey: d.bundle.ik });
      }
    }
    // A device the server no longer lists (revoked) has nothing left to alarm about.
    for (const [key, a] of Object.entries(this.data.alarms)) if (a.deviceId && !listed.has(a.deviceId)) delete this.data.alarms[key];
    this.save();
    return this.alarms();
  }

  /** The open alarms, oldest first. */
  alarms(): DeviceAlarm[] {
    return Object.values(this.data.alarms)
      .map((a) => withMessage(a))
      .sort((a, b) => a.firstSeen - b.firstSeen);
  }

  /** The status for `get_account_devices` (role: `holder` holds the account key, `linked`, or `unlinked`). */
  status(holdsAccountKey: boolean): AccountDevicesStatus {
    return {
      role: holdsAccountKey ? 'holder' : this.data.accountKey ? 'linked' : 'unlinked',
      ...(this.data.accountKey ? { accountKey: this.data.accountKey.key } : {}),
      approved: Object.entries(this.data.approved).map(([deviceId, d]) => ({ deviceId, identityKey: d.ik, approvedAt: d.approvedAt })),
      alarms: this.alarms(),
    };
  }

  /** Resolves when every change so far is on disk. */
  flush(): Promise<void> {
    return this.writing;
  }

  private save(): void {
    const snapshot = JSON.parse(JSON.stringify(this.data)) as OwnFile;
    this.writing = this.writing.then(() => writeJsonFile(this.path, snapshot)).catch(() => {});
  }
}

function withMessage(a: Omit<DeviceAlarm, 'message'>): DeviceAlarm {
  const message =
    a.kind === 'account_key_changed' && !a.identityKey
      ? 'the server shows no account key for your account any more: contacts who know it will refuse calls until it is back. Reconnect the device that holds it; if the server keeps dropping it, it is not behaving.'
      : a.kind === 'account_key_changed'
      ? 'the server shows another account key for your account than the one this device knows: someone reset it with your password, or the server is lying. Check your other devices; change your password if it was not you.'
      : `the server lists device ${a.deviceId} on your account, but none of your devices linked it (no valid signature by your account key). Contacts will not ring it. If it is not yours, revoke it ("parley devices revoke ${a.deviceId}") and change your password.`;
  return { ...a, message };
}
