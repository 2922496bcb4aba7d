import { loadAeadAddon, type NativeGcm } from '../../native/aead';

/** Bytes of a GCM nonce (IV) and of a GCM tag (RFC 5116 §5.1–5.2: AEAD_AES_128_GCM, AEAD_AES_256_GCM). */
export const GCM_IV_BYTES = 12;
export const GCM_TAG_BYTES = 16;

/** Thrown by {@link AesGcm.openInto} when the tag does not match: the packet was altered, or sealed with another key or IV. */
export class GcmAuthenticationError extends Error {
  constructor() {
    super('AES-GCM authentication failed: the packet was altered or sealed with another key');
    this.name = 'GcmAuthenticationError';
  }
}

/** The addon, loaded with the first key. */
let addon: ReturnType<typeof loadAeadAddon> | undefined;

/**
 * AEAD_AES_128_GCM and AEAD_AES_256_GCM (RFC 5116 §5.1–5.2; NIST SP 800-38D)
 * with a 96-bit IV and a 128-bit tag, built for per-packet sealing — SRTP
 * (RFC 7714) and SFrame's GCM suites (RFC 9605 §4.5): one key, a fresh IV for
 * every packet.
 *
 * Backed by native/aead: OpenSSL's EVP AES-GCM (AES-NI and carry-less
 * multiplication where the CPU has them), with one context per key and
 * direction, keyed once; each packet only sets its IV.
 *
 * Why not `crypto.createCipheriv('aes-128-gcm', key, iv)` per packet: with
 * OpenSSL 3 each call fetches the algorithm and sets up a new context: 160–200
 * µs per packet sealed and opened at a call's cadence, against 27–57 µs here,
 * and 10 against 5 µs back to back (`npm run bench:srtp`, docs/BENCHMARKS.md
 * "SRTP"). An earlier version of this class kept one AES-ECB cipher per key
 * and computed GHASH in JavaScript: as fast at a call's cadence (27 µs, most
 * of it werift's SRTP code around the cipher and cold caches), 2.5× slower
 * back to back, and a constant-time GHASH of our own where OpenSSL's is the
 * one everybody reviews.
 *
 * Plaintext and AAD of any length below 2³¹ bytes.
 */
export class AesGcm {
  private readonly native: NativeGcm;

  /**
   * @param key 16 bytes (AES-128) or 32 (AES-256).
   * @throws RangeError for another length.
   * @throws NativeModuleLoadError when the addon is not built or OpenSSL's libcrypto is missing.
   */
  constructor(key: Uint8Array) {
    if (key.length !== 16 && key.length !== 32) throw new RangeError(`AES-GCM needs a 16- or 32-byte key, not ${key.length} bytes`);
    addon ??= loadAeadAddon();
    this.native = new addon.Gcm(key);
  }

  /**
   * Seals `plaintext`: writes the ciphertext followed by the 16-byte tag into
   * `out` from `offset`. `out` may not overlap `plaintext` or `aad`.
   * @param iv the 12-byte nonce; never reuse one with the same key.
   * @throws RangeError when `iv` is not 12 bytes or `out` is too short.
   */
  sealInto(out: Uint8Array, offset: number, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): void {
    this.native.seal(out, offset, iv, aad, plaintext);
  }

  /**
   * Opens a sealed packet: checks `tag` over `aad` and `ciphertext` (in
   * constant time) and only then writes the plaintext into `out` from `offset`.
   * @throws GcmAuthenticationError when the tag does not match (nothing is written).
   * @throws RangeError when `iv` is not 12 bytes, `tag` is not 16 bytes or `out` is too short.
   */
  openInto(out: Uint8Array, offset: number, iv: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array): void {
    if (!this.native.open(out, offset, iv, aad, ciphertext, tag)) throw new GcmAuthenticationError();
  }
}

/**
 * Where patches/werift+0.25.2.patch looks, when werift makes the SRTP cipher of
 * an AEAD_AES_128_GCM session (RFC 7714), for a function `(sessionKey) => AEAD`
 * with {@link AesGcm}'s `sealInto`/`openInto`: werift then seals and opens
 * RTP (RFC 7714 §8) and RTCP (§9, with the SRTCP session key) through it.
 */
export const WERIFT_SRTP_AEAD_HOOK = Symbol.for('parley.werift.srtpAeadAes128Gcm');

/**
 * Makes werift's SRTP (in this thread) seal and open RTP and RTCP with
 * {@link AesGcm}: one AES context per session key instead of a crypto cipher
 * per packet.
 * Idempotent; affects only sessions keyed after the call.
 */
export function installSrtpAead(): void {
  (globalThis as Record<symbol, unknown>)[WERIFT_SRTP_AEAD_HOOK] = (sessionKey: Uint8Array) => new AesGcm(sessionKey);
}
