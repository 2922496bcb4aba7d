import { createHmac, randomInt, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { ParleyError } from '../../../common/errors';
import {
  ACCOUNT_KEY_VERSION,
  AccountKey,
  DeviceCertificate,
  LinkReply,
  LinkRequest,
  accountKeySigningText,
  deviceCertificateSigningText,
  linkReplyText,
  linkRequestText,
  type KeyBundle,
} from '../../../common/protocol/envelope';
import type { SecretStore } from '../account';
import { b64u, ed25519Generate, ed25519PublicOf, ed25519Sign, ed25519Verify, hkdfSha256, unb64u } from './primitives';

/** What the keychain entry of an account key holds (JSON); never written to a file or a log. */
const StoredAccountKey = z
  .object({
    v: z.literal(1),
    username: z.string(),
    /** Ed25519 private key, 32 bytes (RFC 8032 §5.1.5 seed), base64url. */
    ed25519: z.string(),
    createdAt: z.number(),
  })
  .strict();

/** The keychain account name under which an account's identity key lives (on the device that holds it). */
export function accountKeyName(p: { username: string; serverHost: string }): string {
  return `account:${p.username}@${p.serverHost}`;
}

const te = new TextEncoder();

/**
 * An account's identity key (Ed25519, RFC 8032): created on the account's
 * first device, its private half only in that device's OS keychain (entry
 * {@link accountKeyName}) and in memory here. It signs a
 * {@link DeviceCertificate} for each device of the account (docs/SECURITY.md,
 * "Account key and device certificates"). `toJSON` and `inspect` never show
 * the private key.
 */
export class AccountIdentity {
  /** The self-signed public record (published with `keys.publish`). */
  readonly record: AccountKey;
  readonly #ed: Uint8Array;

  private constructor(username: string, ed: Uint8Array, createdAt: number) {
    this.#ed = ed;
    const unsigned = { v: ACCOUNT_KEY_VERSION, username, key: b64u(ed25519PublicOf(ed)), createdAt } as const;
    this.record = { ...unsigned, sig: b64u(ed25519Sign(ed, te.encode(accountKeySigningText(unsigned)))) };
  }

  /** The account key (Ed25519 public key), base64url. */
  get publicKey(): string {
    return this.record.key;
  }

  /**
   * The account key held in this device's keychain, if this device holds it.
   * @throws KeychainUnavailableError from the store; ParleyError `internal_error` for a damaged entry.
   */
  static async load(secrets: SecretStore, who: { username: string; serverHost: string }): Promise<AccountIdentity | undefined> {
    const stored = await secrets.get(accountKeyName(who));
    if (!stored) return undefined;
    let parsed: z.infer<typeof StoredAccountKey>;
    try {
      parsed = StoredAccountKey.parse(JSON.parse(stored));
    } catch {
      throw new ParleyError('internal_error', 'the account key in the keychain is damaged');
    }
    if (parsed.username !== who.username) throw new ParleyError('internal_error', 'the account key in the keychain belongs to another account');
    return new AccountIdentity(who.username, unb64u(parsed.ed25519), parsed.createdAt);
  }

  /**
   * Creates a new account key and keeps it in the keychain (replacing any
   * earlier one of this account on this device).
   * @throws KeychainUnavailableError from the store (there is no fallback to a file).
   */
  static async create(secrets: SecretStore, who: { username: string; serverHost: string }): Promise<AccountIdentity> {
    const ed = ed25519Generate();
    const createdAt = Date.now();
    const entry: z.infer<typeof StoredAccountKey> = { v: 1, username: who.username, ed25519: b64u(ed.privateKey), createdAt };
    await secrets.set(accountKeyName(who), JSON.stringify(entry));
    return new AccountIdentity(who.username, ed.privateKey, createdAt);
  }

  /** An account key in memory only (tests, and the malicious-server fixture's impostor). */
  static ephemeral(username: string): AccountIdentity {
    return new AccountIdentity(username, ed25519Generate().privateKey, Date.now());
  }

  /** Deletes an account key from the keychain. @returns whether there was one. */
  static forget(secrets: SecretStore, who: { username: string; serverHost: string }): Promise<boolean> {
    return secrets.delete(accountKeyName(who));
  }

  /**
   * Signs a device certificate for one device identity key of this account.
   * @throws ParleyError `invalid_params` for a device of another account.
   */
  certify(device: { username: string; deviceId: string; ik: string }, signedAt = Date.now()): DeviceCertificate {
    if (device.username !== this.record.username) throw new ParleyError('invalid_params', 'an account key certifies only devices of its own account');
    const unsigned = {
      v: ACCOUNT_KEY_VERSION,
      username: device.username,
      deviceId: device.deviceId,
      ik: device.ik,
      accountKey: this.publicKey,
      signedAt,
    } as const;
    return { ...unsigned, sig: b64u(ed25519Sign(this.#ed, te.encode(deviceCertificateSigningText(unsigned)))) };
  }

  toJSON(): object {
    return { username: this.record.username, accountKey: this.publicKey };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `AccountIdentity(${this.record.username}, key=${this.publicKey})`;
  }
}

/**
 * Checks an account key record: its schema, its account name and its
 * self-signature (RFC 8032 verification).
 * @throws ParleyError `security` for a malformed record, another account's, or a bad signature.
 */
export function verifyAccountKey(raw: unknown, username: string): AccountKey {
  const parsed = AccountKey.safeParse(raw);
  if (!parsed.success) throw new ParleyError('security', `the account key of ${username} is malformed`);
  const { sig, ...unsigned } = parsed.data;
  if (unsigned.username !== username) throw new ParleyError('security', `the account key given for ${username} names another account`);
  if (!verifyEd25519(unsigned.key, accountKeySigningText(unsigned), sig)) {
    throw new ParleyError('security', `the account key of ${username} has an invalid signature`);
  }
  return parsed.data;
}

/**
 * Whether `certificate` is a valid certificate, by `accountKey`, of exactly
 * the device in `bundle` (same account, device id and identity key).
 * Never throws: anything malformed is simply not valid.
 */
export function certificateValid(certificate: unknown, accountKey: string, bundle: Pick<KeyBundle, 'username' | 'deviceId' | 'ik'>): boolean {
  const parsed = DeviceCertificate.safeParse(certificate);
  if (!parsed.success) return false;
  const { sig, ...unsigned } = parsed.data;
  if (unsigned.accountKey !== accountKey || unsigned.username !== bundle.username || unsigned.deviceId !== bundle.deviceId || unsigned.ik !== bundle.ik) {
    return false;
  }
  return verifyEd25519(accountKey, deviceCertificateSigningText(unsigned), sig);
}

function verifyEd25519(publicKey: string, text: string, sig: string): boolean {
  try {
    return ed25519Verify(unb64u(publicKey), te.encode(text), unb64u(sig));
  } catch {
    return false;
  }
}

// ---- link codes --------------------------------------------------------------

/** Crockford's base32 alphabet (no I, L, O, U): what a user reads and types. */
const CODE_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
/** Characters of a link code: 20 × 5 bits = 100 bits of entropy. */
export const LINK_CODE_CHARS = 20;

/**
 * A new one-time link code: 20 random characters of Crockford base32 (100
 * bits), shown as four groups of five ("7KD2M-…"). 100 bits make offline
 * guessing from what the server sees (the MACs) out of reach, so no PAKE is
 * needed; a shorter, typeable code would need one (CPace, RFC 9382's SPAKE2).
 */
export function newLinkCode(): string {
  let code = '';
  for (let i = 0; i < LINK_CODE_CHARS; i++) code += CODE_ALPHABET[randomInt(CODE_ALPHABET.length)];
  return code.match(/.{5}/g)!.join('-');
}

/**
 * Normalises a typed link code: upper case, separators dropped, O→0 and I/L→1
 * (Crockford's decoding rules).
 * @throws ParleyError `invalid_params` for a code of the wrong length or alphabet.
 */
export function normaliseLinkCode(typed: string): string {
  const code = typed.toUpperCase().replace(/[\s-]/g, '').replace(/O/g, '0').replace(/[IL]/g, '1');
  if (code.length !== LINK_CODE_CHARS || [...code].some((c) => !CODE_ALPHABET.includes(c))) {
    throw new ParleyError('invalid_params', `a link code is ${LINK_CODE_CHARS} letters and digits, as "parley devices link" shows them`);
  }
  return code;
}

/**
 * What a link code gives both devices (HKDF-SHA256, RFC 5869, over the
 * normalised code): the rendezvous id the server sees (16 bytes, base64url)
 * and the HMAC-SHA256 key (32 bytes) that authenticates both link messages.
 * @throws ParleyError `invalid_params` for a malformed code.
 */
export function linkSecrets(code: string): { linkId: string; macKey: Uint8Array } {
  const ikm = te.encode(normaliseLinkCode(code));
  const salt = te.encode('parley-link-code-v1');
  return { linkId: b64u(hkdfSha256(ikm, salt, 'parley link rendezvous id', 16)), macKey: hkdfSha256(ikm, salt, 'parley link mac key', 32) };
}

function hmac(key: Uint8Array, text: string): Buffer {
  return createHmac('sha256', key).update(text, 'utf8').digest();
}

function macEqual(mac: string, expected: Buffer): boolean {
  const got = Buffer.from(mac, 'base64url');
  return got.length === expected.length && timingSafeEqual(got, expected);
}

/** The new device's link request: its bundle, MAC-ed under the code's key. */
export function makeLinkRequest(code: string, bundle: KeyBundle): { linkId: string; request: LinkRequest } {
  const { linkId, macKey } = linkSecrets(code);
  return { linkId, request: { v: ACCOUNT_KEY_VERSION, bundle, mac: b64u(hmac(macKey, linkRequestText(linkId, bundle))) } };
}

/**
 * Checks a link request on the existing device: the MAC under the code's key
 * (only someone who saw the code can make it), a valid bundle of this account
 * naming the device the server says sent it.
 * @throws ParleyError `security` when anything does not check out.
 */
export function checkLinkRequest(
  secrets: { linkId: string; macKey: Uint8Array },
  request: LinkRequest,
  expect: { username: string; deviceId: string },
): KeyBundle {
  if (!macEqual(request.mac, hmac(secrets.macKey, linkRequestText(secrets.linkId, request.bundle)))) {
    throw new ParleyError('security', 'a link request does not carry the code shown on this device (someone else tried to link)');
  }
  if (request.bundle.username !== expect.username || request.bundle.deviceId !== expect.deviceId) {
    throw new ParleyError('security', 'a link request names another account or device than the one that sent it');
  }
  return request.bundle;
}

/** The existing device's reply: the account key and the new device's certificate, MAC-ed under the code's key. */
export function makeLinkReply(secrets: { linkId: string; macKey: Uint8Array }, accountKey: AccountKey, certificate: DeviceCertificate): LinkReply {
  return {
    v: ACCOUNT_KEY_VERSION,
    accountKey,
    certificate,
    mac: b64u(hmac(secrets.macKey, linkReplyText(secrets.linkId, accountKey, certificate))),
  };
}

/**
 * Checks a link reply on the new device: the MAC under the code's key, the
 * account key's self-signature, and a certificate by it for exactly this device.
 * @throws ParleyError `security` when anything does not check out.
 */
export function checkLinkReply(
  secrets: { linkId: string; macKey: Uint8Array },
  reply: LinkReply,
  me: Pick<KeyBundle, 'username' | 'deviceId' | 'ik'>,
): { accountKey: AccountKey; certificate: DeviceCertificate } {
  if (!macEqual(reply.mac, hmac(secrets.macKey, linkReplyText(secrets.linkId, reply.accountKey, reply.certificate)))) {
    throw new ParleyError('security', 'the link reply was not made with the code you entered (the server or someone else answered)');
  }
  const accountKey = verifyAccountKey(reply.accountKey, me.username);
  if (!certificateValid(reply.certificate, accountKey.key, me)) {
    throw new ParleyError('security', "the link reply's certificate is not a valid one for this device");
  }
  return { accountKey, certificate: reply.certificate };
}
