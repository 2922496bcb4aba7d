/**
 * The cryptographic primitives of Parley's end-to-end security, each a thin
 * wrapper over a maintained implementation — nothing here is hand-rolled:
 *
 * - Ed25519 signatures (RFC 8032) — node:crypto
 * - X25519 key agreement (RFC 7748) — node:crypto
 * - ML-KEM-768 key encapsulation (FIPS 203) — @noble/post-quantum
 * - HKDF-SHA256 (RFC 5869) — node:crypto
 * - AES-256-GCM (NIST SP 800-38D) — node:crypto
 *
 * Keys cross these functions as raw bytes (Uint8Array): Ed25519 and X25519
 * private keys are their 32-byte seeds/scalars, ML-KEM-768 private keys the
 * 64-byte FIPS 203 seed (d ‖ z) they are regenerated from. Errors never carry
 * key material.
 */
import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  sign as edSign,
  verify as edVerify,
  type KeyObject,
} from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';

/** base64url without padding (RFC 4648 §5). */
export const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');
/** Decodes base64url; throws on anything else. */
export function unb64u(s: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new Error('not base64url');
  return new Uint8Array(Buffer.from(s, 'base64url'));
}

// DER prefixes of the PKCS#8 / SPKI encodings of 32-byte Ed25519 and X25519 keys (RFC 8410 §7, §4).
const ED25519_PKCS8 = Buffer.from('302e020100300506032b657004220420', 'hex');
const ED25519_SPKI = Buffer.from('302a300506032b6570032100', 'hex');
const X25519_PKCS8 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const X25519_SPKI = Buffer.from('302a300506032b656e032100', 'hex');

function privateKey(prefix: Buffer, raw: Uint8Array, what: string): KeyObject {
  if (raw.length !== 32) throw new Error(`${what} private key must be 32 bytes`);
  return createPrivateKey({ key: Buffer.concat([prefix, raw]), format: 'der', type: 'pkcs8' });
}
function publicKey(prefix: Buffer, raw: Uint8Array, what: string): KeyObject {
  if (raw.length !== 32) throw new Error(`${what} public key must be 32 bytes`);
  return createPublicKey({ key: Buffer.concat([prefix, raw]), format: 'der', type: 'spki' });
}
function rawOf(key: KeyObject, kind: 'public' | 'private'): Uint8Array {
  const der = kind === 'public' ? key.export({ format: 'der', type: 'spki' }) : key.export({ format: 'der', type: 'pkcs8' });
  return new Uint8Array(der.subarray(der.length - 32));
}

/** A key pair as raw bytes (32-byte public and private keys for Ed25519 / X25519). */
export interface RawKeyPair {
  publicKey: Uint8Array;
  privateKey: Uint8Array;
}

/** A new Ed25519 key pair (RFC 8032 §5.1.5). */
export function ed25519Generate(): RawKeyPair {
  const { publicKey: pub, privateKey: priv } = generateKeyPairSync('ed25519');
  return { publicKey: rawOf(pub, 'public'), privateKey: rawOf(priv, 'private') };
}
/** The Ed25519 public key of a 32-byte private key. */
export function ed25519PublicOf(priv: Uint8Array): Uint8Array {
  return rawOf(createPublicKey(privateKey(ED25519_PKCS8, priv, 'Ed25519')), 'public');
}
/** Ed25519 signature (64 bytes) of `message` (RFC 8032 §5.1.6, pure Ed25519). */
export function ed25519Sign(priv: Uint8Array, message: Uint8Array): Uint8Array {
  return new Uint8Array(edSign(null, message, privateKey(ED25519_PKCS8, priv, 'Ed25519')));
}
/** Verifies an Ed25519 signature (RFC 8032 §5.1.7). False for any malformed input; never throws. */
export function ed25519Verify(pub: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    if (signature.length !== 64) return false;
    return edVerify(null, message, publicKey(ED25519_SPKI, pub, 'Ed25519'), signature);
  } catch {
    return false;
  }
}

/** A new X25519 key pair (RFC 7748 §6.1). */
export function x25519Generate(): RawKeyPair {
  const { publicKey: pub, privateKey: priv } = generateKeyPairSync('x25519');
  return { publicKey: rawOf(pub, 'public'), privateKey: rawOf(priv, 'private') };
}
/** The X25519 public key of a 32-byte private key. */
export function x25519PublicOf(priv: Uint8Array): Uint8Array {
  return rawOf(createPublicKey(privateKey(X25519_PKCS8, priv, 'X25519')), 'public');
}
/**
 * X25519 shared secret (32 bytes, RFC 7748 §6.1).
 * @throws Error when the result is all zeros (a low-order public key, RFC 7748 §6.1 "check").
 */
export function x25519(priv: Uint8Array, peerPublic: Uint8Array): Uint8Array {
  const secret = new Uint8Array(
    diffieHellman({ privateKey: privateKey(X25519_PKCS8, priv, 'X25519'), publicKey: publicKey(X25519_SPKI, peerPublic, 'X25519') }),
  );
  if (secret.every((b) => b === 0)) throw new Error('X25519 produced an all-zero secret (invalid public key)');
  return secret;
}

/** ML-KEM-768 sizes in bytes (FIPS 203 §8, table 3). */
export const MLKEM768 = { publicKey: 1184, cipherText: 1088, seed: 64, sharedSecret: 32 } as const;

/** A new ML-KEM-768 seed (d ‖ z, FIPS 203 §7.1): what the keychain keeps. */
export function mlkemSeed(): Uint8Array {
  return new Uint8Array(randomBytes(MLKEM768.seed));
}
/** The ML-KEM-768 key pair of a 64-byte seed (FIPS 203 ML-KEM.KeyGen_internal). */
export function mlkemKeyPair(seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array } {
  if (seed.length !== MLKEM768.seed) throw new Error('ML-KEM-768 seed must be 64 bytes');
  return ml_kem768.keygen(seed);
}
/**
 * Encapsulates a fresh 32-byte shared secret to an ML-KEM-768 public key (FIPS 203 ML-KEM.Encaps).
 * @throws Error when the public key is malformed (FIPS 203 §7.2 input checks).
 */
export function mlkemEncapsulate(pub: Uint8Array): { cipherText: Uint8Array; sharedSecret: Uint8Array } {
  if (pub.length !== MLKEM768.publicKey) throw new Error('ML-KEM-768 public key must be 1184 bytes');
  return ml_kem768.encapsulate(pub);
}
/** Decapsulates (FIPS 203 ML-KEM.Decaps; implicit rejection: a bad ciphertext yields an unrelated secret). */
export function mlkemDecapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array {
  if (cipherText.length !== MLKEM768.cipherText) throw new Error('ML-KEM-768 ciphertext must be 1088 bytes');
  return ml_kem768.decapsulate(cipherText, secretKey);
}

/** HKDF-SHA256 (RFC 5869): `length` bytes from `ikm` with `salt` and `info`. */
export function hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: string, length: number): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', ikm, salt, Buffer.from(info, 'utf8'), length));
}

/** AES-256-GCM encryption (NIST SP 800-38D): ciphertext ‖ 16-byte tag. `key` 32 bytes, `iv` 12 bytes. */
export function aesGcmSeal(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(aad);
  return new Uint8Array(Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]));
}
/**
 * AES-256-GCM decryption.
 * @throws Error `authentication failed` when the tag does not verify (nothing else is said).
 */
export function aesGcmOpen(key: Uint8Array, iv: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array {
  if (sealed.length < 16) throw new Error('authentication failed');
  try {
    const d = createDecipheriv('aes-256-gcm', key, iv);
    d.setAAD(aad);
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    return new Uint8Array(Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]));
  } catch {
    throw new Error('authentication failed');
  }
}

/** `n` random bytes (node:crypto CSPRNG). */
export const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
