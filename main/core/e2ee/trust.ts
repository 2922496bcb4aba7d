import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { z } from 'zod';
import { ParleyError } from '../../../common/errors';
import type { TrustInfo } from '../../../common/protocol/control';
import { readJsonFile, writeJsonFile } from '../json-file';
import { unb64u } from './primitives';

/** A contact's device identity key as this device pinned it (public keys only). */
const PinnedDevice = z.object({
  ik: z.string(),
  firstSeen: z.number(),
  pending: z.object({ kind: z.enum(['changed', 'added']), ik: z.string(), seenAt: z.number() }).optional(),
  /** Pinned after the contact's first devices (a device added to their account later). */
  added: z.boolean().optional(),
});
const PinnedContact = z.object({
  verified: z.boolean(),
  verifiedAt: z.number().optional(),
  /** The contact's account key (it must sign each of their devices), and another one waiting for acceptance. */
  accountKey: z
    .object({ key: z.string(), firstSeen: z.number(), pending: z.object({ key: z.string(), seenAt: z.number() }).optional() })
    .optional(),
  devices: z.record(z.string(), PinnedDevice),
});
const TrustFile = z.object({ v: z.literal(1), contacts: z.record(z.string(), PinnedContact) });
type TrustFile = z.infer<typeof TrustFile>;
type PinnedContact = z.infer<typeof PinnedContact>;

/**
 * A key change event: `changed` (another key for a known device), `added` (a
 * new device) or `account_key_changed` (another account key; `deviceId` is empty).
 */
export interface KeyChange {
  username: string;
  deviceId: string;
  kind: 'changed' | 'added' | 'account_key_changed';
  /** Calls with this contact are refused until `acceptKeyChange`. */
  blocked: boolean;
}

/** What `check` decided for one device's identity key. */
export type TrustVerdict = 'trusted' | 'pinned_now' | 'blocked';

/** How long a contact's device added after the first ones counts as new in call status (`e2ee.newDevice`), ms. */
export const NEW_DEVICE_NOTICE_MS = 7 * 24 * 3600_000;

/**
 * Trust on first use of contacts' device identity keys, pinned in
 * `<dataDir>/trust.json` (public keys only; mode 0600). Rules (docs/SECURITY.md "Trust"):
 * - a device seen for the first time is pinned — unless its account is
 *   verified, then it waits as a pending `added` change (blocking calls);
 * - a known device with another identity key is a pending `changed` change
 *   (always blocking) and clears the verified mark;
 * - `acceptKeyChange` pins what is pending; `markVerified` sets the mark;
 * - the contact's account key is pinned on first use too; another one is a
 *   pending change (blocking, clears the mark). A new device that carries a
 *   valid certificate by the pinned account key (`certified`) is pinned
 *   without blocking even for a verified contact — the account key vouches for
 *   it and the safety number (over account keys) is unchanged — and is shown
 *   as new (`isNewDevice`) for NEW_DEVICE_NOTICE_MS.
 *
 * Emits `keyChange` (KeyChange). Reads are synchronous from memory (the call
 * engine checks keys while routing messages in order); writes are atomic.
 */
export class TrustStore extends EventEmitter<{ keyChange: [KeyChange] }> {
  private data: TrustFile = { v: 1, contacts: {} };
  private writing: Promise<void> = Promise.resolve();

  private constructor(private readonly path: string) {
    super();
  }

  /** Loads (or starts) the trust file in `dataDir`. A damaged file is reported through `onCorrupt` and starts empty. */
  static async open(dataDir: string, onCorrupt?: (why: string) => void): Promise<TrustStore> {
    const store = new TrustStore(join(dataDir, 'trust.json'));
    store.data = await readJsonFile(store.path, TrustFile, { v: 1, contacts: {} }, onCorrupt);
    return store;
  }

  /**
   * Checks (and on first use pins) a contact device's identity key.
   * @returns `trusted` (matches the pin), `pinned_now` (first use) or `blocked` (a change waits for acceptance).
   */
  check(username: string, deviceId: string, ik: string, certified = false): TrustVerdict {
    const contact = (this.data.contacts[username] ??= { verified: false, devices: {} });
    const pinned = contact.devices[deviceId];
    const now = Date.now();
    if (pinned) {
      if (pinned.ik !== ik && pinned.pending?.ik !== ik) {
        pinned.pending = { kind: 'changed', ik, seenAt: now };
        contact.verified = false;
        delete contact.verifiedAt;
        this.save();
        this.emit('keyChange', { username, deviceId, kind: 'changed', blocked: true });
      }
      return this.isBlocked(contact) ? 'blocked' : 'trusted';
    }
    const known = Object.keys(contact.devices).length > 0;
    if (contact.verified && !certified) {
      contact.devices[deviceId] = { ik, firstSeen: now, pending: { kind: 'added', ik, seenAt: now } };
      contact.verified = false;
      delete contact.verifiedAt;
      this.save();
      this.emit('keyChange', { username, deviceId, kind: 'added', blocked: true });
      return 'blocked';
    }
    contact.devices[deviceId] = { ik, firstSeen: now, ...(known ? { added: true } : {}) };
    this.save();
    if (known) this.emit('keyChange', { username, deviceId, kind: 'added', blocked: false });
    return this.isBlocked(contact) ? 'blocked' : 'pinned_now';
  }

  /**
   * Checks (and on first use pins) a contact's account key.
   * @returns `trusted`, `pinned_now` or `blocked` (another key waits for acceptance, or another change does).
   */
  checkAccountKey(username: string, key: string): TrustVerdict {
    const contact = (this.data.contacts[username] ??= { verified: false, devices: {} });
    const now = Date.now();
    if (!contact.accountKey) {
      contact.accountKey = { key, firstSeen: now };
      this.save();
      return this.isBlocked(contact) ? 'blocked' : 'pinned_now';
    }
    if (contact.accountKey.key !== key && contact.accountKey.pending?.key !== key) {
      contact.accountKey.pending = { key, seenAt: now };
      contact.verified = false;
      delete contact.verifiedAt;
      this.save();
      this.emit('keyChange', { username, deviceId: '', kind: 'account_key_changed', blocked: true });
    }
    return this.isBlocked(contact) ? 'blocked' : 'trusted';
  }

  /** The account key pinned for `username` (undefined: none pinned, e.g. an account from before account keys). */
  accountKeyOf(username: string): string | undefined {
    return this.data.contacts[username]?.accountKey?.key;
  }

  /** Whether a key is pinned for that device of `username`. */
  isPinned(username: string, deviceId: string): boolean {
    return !!this.data.contacts[username]?.devices[deviceId];
  }

  /** Whether that device of `username` was added to their account after the first ones, less than NEW_DEVICE_NOTICE_MS ago. */
  isNewDevice(username: string, deviceId: string, now = Date.now()): boolean {
    const d = this.data.contacts[username]?.devices[deviceId];
    return !!d?.added && now - d.firstSeen < NEW_DEVICE_NOTICE_MS;
  }

  /** True while a key change of `username` waits for `acceptKeyChange`. */
  blocked(username: string): boolean {
    const c = this.data.contacts[username];
    return !!c && this.isBlocked(c);
  }

  /**
   * Pins every pending change of `username`; the verified mark stays cleared.
   * @throws ParleyError `not_found` when nothing is pinned for them.
   */
  acceptKeyChange(username: string): TrustInfo {
    const c = this.require(username);
    if (c.accountKey?.pending) {
      c.accountKey = { key: c.accountKey.pending.key, firstSeen: c.accountKey.pending.seenAt };
    }
    for (const d of Object.values(c.devices)) {
      if (d.pending) {
        d.ik = d.pending.ik;
        d.firstSeen = d.pending.seenAt;
        delete d.pending;
      }
    }
    this.save();
    return this.info(username);
  }

  /**
   * Marks `username` verified (the user compared the safety number out of band).
   * @throws ParleyError `not_found` (nothing pinned), `key_changed` (accept the change first).
   */
  markVerified(username: string): TrustInfo {
    const c = this.require(username);
    if (this.isBlocked(c)) throw keyChangedError(username);
    c.verified = true;
    c.verifiedAt = Date.now();
    this.save();
    return this.info(username);
  }

  /** Whether the contact is marked verified. */
  isVerified(username: string): boolean {
    return this.data.contacts[username]?.verified ?? false;
  }

  /** What is pinned for `username`. @throws ParleyError `not_found`. */
  info(username: string): TrustInfo {
    const c = this.require(username);
    return {
      username,
      verified: c.verified,
      ...(c.verifiedAt !== undefined ? { verifiedAt: c.verifiedAt } : {}),
      blocked: this.isBlocked(c),
      ...(c.accountKey ? { accountKey: c.accountKey } : {}),
      devices: Object.entries(c.devices).map(([deviceId, d]) => ({
        deviceId,
        identityKey: d.ik,
        firstSeen: d.firstSeen,
        ...(d.pending ? { pending: { kind: d.pending.kind, identityKey: d.pending.ik, seenAt: d.pending.seenAt } } : {}),
      })),
    };
  }

  /** Resolves when every change so far is on disk. */
  flush(): Promise<void> {
    return this.writing;
  }

  private isBlocked(c: PinnedContact): boolean {
    return !!c.accountKey?.pending || Object.values(c.devices).some((d) => d.pending);
  }

  private require(username: string): PinnedContact {
    const c = this.data.contacts[username];
    if (!c || (Object.keys(c.devices).length === 0 && !c.accountKey)) {
      throw new ParleyError('not_found', `no device keys of ${username} are known on this device yet; call them or ask for the safety number first`);
    }
    return c;
  }

  private save(): void {
    const snapshot = JSON.parse(JSON.stringify(this.data)) as TrustFile;
    this.writing = this.writing.then(() => writeJsonFile(this.path, snapshot)).catch(() => {});
  }
}

/** The error for a call or verification blocked by a pending key change. */
export function keyChangedError(username: string): ParleyError {
  return new ParleyError(
    'key_changed',
    `the security keys of ${username} changed: compare your safety number with them, then accept the change ("parley safety-number ${username}", "accept_key_change") before calling`,
  );
}

/**
 * Safety number format versions (the first 2 bytes hashed, as in Signal's
 * NumericFingerprintGenerator): 1 for an account with an account key (the
 * half covers that key), 0 for an account without one (the half covers all
 * its device identity keys, as before account keys).
 */
const SAFETY_VERSION_DEVICE_KEYS = 0;
const SAFETY_VERSION_ACCOUNT_KEY = 1;
/** SHA-512 iterations per half (Signal uses 5200). */
export const SAFETY_ITERATIONS = 5200;

/** One account's side of a safety number: its account key, or (no account key) its device identity keys. */
export interface SafetySide {
  username: string;
  /** The account key (Ed25519, base64url): when present, the half covers it alone. */
  accountKey?: string;
  /** The account's device identity keys (base64url), used when there is no account key. */
  identityKeys: string[];
}

/**
 * One account's half of a safety number: 30 digits.
 * hash₀ = SHA-512(version (2 bytes, big endian) ‖ key ‖ username (UTF-8));
 * hashᵢ = SHA-512(hashᵢ₋₁ ‖ key), 5200 times; the first 30 bytes of the last,
 * as six 5-byte big-endian integers, each mod 100 000 as 5 digits. `key` is
 * the account key (32 bytes, version 1) — as Signal's single identity key per
 * account, so linking a device does not change the number, and a device the
 * account key did not sign is refused rather than counted — or, for an account
 * without one, the concatenation of its device identity keys (32 bytes each,
 * sorted bytewise, version 0).
 * @throws ParleyError `not_found` when the side has no key at all.
 */
export function safetyHalf(side: SafetySide): string {
  const { username } = side;
  let key: Buffer;
  let v: number;
  if (side.accountKey) {
    key = Buffer.from(unb64u(side.accountKey));
    v = SAFETY_VERSION_ACCOUNT_KEY;
  } else {
    if (side.identityKeys.length === 0) throw new ParleyError('not_found', `${username} has no device keys`);
    key = Buffer.concat(side.identityKeys.map((k) => Buffer.from(unb64u(k))).sort(Buffer.compare));
    v = SAFETY_VERSION_DEVICE_KEYS;
  }
  const version = Buffer.alloc(2);
  version.writeUInt16BE(v);
  let hash = createHash('sha512').update(version).update(key).update(username, 'utf8').digest();
  for (let i = 0; i < SAFETY_ITERATIONS; i++) hash = createHash('sha512').update(hash).update(key).digest();
  let digits = '';
  for (let i = 0; i < 30; i += 5) digits += String(hash.readUIntBE(i, 5) % 100_000).padStart(5, '0');
  return digits;
}

/**
 * The safety number of two accounts: both 30-digit halves, the smaller first
 * (so both ends compute the same 60 digits), shown as 12 groups of 5.
 */
export function safetyNumber(a: SafetySide, b: SafetySide): { digits: string; grouped: string } {
  const halves = [safetyHalf(a), safetyHalf(b)].sort();
  const digits = halves.join('');
  return { digits, grouped: digits.match(/.{5}/g)!.join(' ') };
}
