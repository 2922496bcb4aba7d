import { z } from 'zod';
import { ParleyError } from '../../../common/errors';
import { KeyBundle, SEALED_VERSION, bundleSigningText } from '../../../common/protocol/envelope';
import type { SecretStore } from '../account';
import {
  b64u,
  ed25519Generate,
  ed25519PublicOf,
  ed25519Sign,
  ed25519Verify,
  mlkemKeyPair,
  mlkemSeed,
  unb64u,
  x25519Generate,
  x25519PublicOf,
} from './primitives';

/**
 * What the keychain entry of a device identity holds (JSON, base64url fields).
 * One entry per device, named by {@link identityKeyName}; never written to a
 * file or a log.
 */
const StoredIdentity = z
  .object({
    v: z.literal(1),
    deviceId: z.uuid(),
    username: z.string(),
    /** Ed25519 private key, 32 bytes (RFC 8032 §5.1.5 seed). */
    ed25519: z.string(),
    /** X25519 private key, 32 bytes (RFC 7748). */
    x25519: z.string(),
    /** ML-KEM-768 key generation seed d ‖ z, 64 bytes (FIPS 203 §7.1). */
    mlkem: z.string(),
    createdAt: z.number(),
  })
  .strict();

/** The keychain account name under which a device's private keys live. */
export function identityKeyName(p: { username: string; deviceId: string; serverHost: string }): string {
  return `identity:${p.username}:${p.deviceId}@${p.serverHost}`;
}

/**
 * This device's identity: an Ed25519 signing key (the identity key), an X25519
 * key and an ML-KEM-768 key. The private halves live only in memory here and
 * in one OS keychain entry; `bundle` is the signed public part published to
 * the server. `toJSON` and `inspect` never show private keys.
 */
export class DeviceIdentity {
  /** The signed public key bundle (what `keys.publish` sends). */
  readonly bundle: KeyBundle;
  readonly #ed: Uint8Array;
  readonly #x: Uint8Array;
  readonly #kemSecret: Uint8Array;

  private constructor(
    readonly username: string,
    readonly deviceId: string,
    keys: { ed25519: Uint8Array; x25519: Uint8Array; mlkemSeed: Uint8Array; createdAt: number },
  ) {
    this.#ed = keys.ed25519;
    this.#x = keys.x25519;
    const kem = mlkemKeyPair(keys.mlkemSeed);
    this.#kemSecret = kem.secretKey;
    const unsigned = {
      v: SEALED_VERSION,
      username,
      deviceId,
      ik: b64u(ed25519PublicOf(keys.ed25519)),
      x25519: b64u(x25519PublicOf(keys.x25519)),
      mlkem: b64u(kem.publicKey),
      createdAt: keys.createdAt,
    } as const;
    const sig = ed25519Sign(this.#ed, new TextEncoder().encode(bundleSigningText(unsigned)));
    this.bundle = { ...unsigned, sig: b64u(sig) };
  }

  /** The identity key (Ed25519 public key), base64url. */
  get identityKey(): string {
    return this.bundle.ik;
  }

  /**
   * Loads this device's identity from the keychain, creating it on first use
   * (first sign-in of the device).
   * @throws KeychainUnavailableError from the store (there is no fallback to a file).
   * @throws ParleyError `internal_error` when the keychain entry is damaged (its content is never shown).
   */
  static async loadOrCreate(
    secrets: SecretStore,
    who: { username: string; deviceId: string; serverHost: string },
  ): Promise<DeviceIdentity> {
    const name = identityKeyName(who);
    const stored = await secrets.get(name);
    if (stored) {
      let parsed: z.infer<typeof StoredIdentity>;
      try {
        parsed = StoredIdentity.parse(JSON.parse(stored));
      } catch {
        throw new ParleyError('internal_error', 'the device identity in the keychain is damaged; sign in again to create a new one');
      }
      if (parsed.deviceId !== who.deviceId || parsed.username !== who.username) {
        throw new ParleyError('internal_error', 'the device identity in the keychain belongs to another device');
      }
      return new DeviceIdentity(who.username, who.deviceId, {
        ed25519: unb64u(parsed.ed25519),
        x25519: unb64u(parsed.x25519),
        mlkemSeed: unb64u(parsed.mlkem),
        createdAt: parsed.createdAt,
      });
    }
    const ed = ed25519Generate();
    const x = x25519Generate();
    const seed = mlkemSeed();
    const createdAt = Date.now();
    const entry: z.infer<typeof StoredIdentity> = {
      v: 1,
      deviceId: who.deviceId,
      username: who.username,
      ed25519: b64u(ed.privateKey),
      x25519: b64u(x.privateKey),
      mlkem: b64u(seed),
      createdAt,
    };
    await secrets.set(name, JSON.stringify(entry));
    return new DeviceIdentity(who.username, who.deviceId, { ed25519: ed.privateKey, x25519: x.privateKey, mlkemSeed: seed, createdAt });
  }

  /** Creates an identity in memory only (tests and tools that must not touch a keychain). */
  static ephemeral(username: string, deviceId: string): DeviceIdentity {
    return new DeviceIdentity(username, deviceId, {
      ed25519: ed25519Generate().privateKey,
      x25519: x25519Generate().privateKey,
      mlkemSeed: mlkemSeed(),
      createdAt: Date.now(),
    });
  }

  /** Deletes a device's identity from the keychain (sign-out). @returns whether there was one. */
  static forget(secrets: SecretStore, who: { username: string; deviceId: string; serverHost: string }): Promise<boolean> {
    return secrets.delete(identityKeyName(who));
  }

  /** Ed25519 signature (64 bytes) by the identity key. */
  sign(message: Uint8Array): Uint8Array {
    return ed25519Sign(this.#ed, message);
  }

  /** The X25519 private key (for opening sealed envelopes; stays in this process). */
  x25519Private(): Uint8Array {
    return this.#x;
  }

  /** The ML-KEM-768 decapsulation key (for opening sealed envelopes; stays in this process). */
  mlkemSecret(): Uint8Array {
    return this.#kemSecret;
  }

  toJSON(): object {
    return { username: this.username, deviceId: this.deviceId, identityKey: this.identityKey };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `DeviceIdentity(${this.username}, ${this.deviceId}, ik=${this.identityKey})`;
  }
}

/**
 * Checks a key bundle: its schema and its signature by its own identity key
 * (RFC 8032 verification). This proves the X25519 and ML-KEM keys belong to
 * that identity key and to that username and device id; whether the identity
 * key itself is the right one is the trust store's question.
 * @throws ParleyError `security` for a malformed bundle or a bad signature.
 */
export function verifyBundle(raw: unknown, expect?: { username?: string; deviceId?: string }): KeyBundle {
  const parsed = KeyBundle.safeParse(raw);
  if (!parsed.success) throw new ParleyError('security', 'a device key bundle is malformed');
  const b = parsed.data;
  const { sig, ...unsigned } = b;
  let ok: boolean;
  try {
    ok = ed25519Verify(unb64u(b.ik), new TextEncoder().encode(bundleSigningText(unsigned)), unb64u(sig));
  } catch {
    ok = false;
  }
  if (!ok) throw new ParleyError('security', `the key bundle of a device of ${b.username} has an invalid signature`);
  if (expect?.username !== undefined && b.username !== expect.username) {
    throw new ParleyError('security', `a key bundle for ${expect.username} names another account`);
  }
  if (expect?.deviceId !== undefined && b.deviceId !== expect.deviceId) {
    throw new ParleyError('security', `a key bundle of ${b.username} names another device`);
  }
  return b;
}
