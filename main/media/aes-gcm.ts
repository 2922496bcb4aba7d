import { createCipheriv, timingSafeEqual, type Cipher } from 'node:crypto';

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

const BLOCK = 16;
/** R of NIST SP 800-38D §6.3: 11100001 ‖ 0^120, as the first big-endian word. */
const R0 = 0xe1000000 | 0;

/**
 * AEAD_AES_128_GCM and AEAD_AES_256_GCM (RFC 5116 §5.1–5.2; NIST SP 800-38D)
 * with a 96-bit IV and a 128-bit tag, built for per-packet sealing — SRTP
 * (RFC 7714) and SFrame's GCM suites (RFC 9605 §4.5): one key, a fresh IV for
 * every packet.
 *
 * Why not `crypto.createCipheriv('aes-128-gcm', key, iv)` per packet: with
 * OpenSSL 3 each call fetches the algorithm and sets up a new context. Run
 * once every 10 ms with cold caches, as in a call, sealing and opening a packet
 * that way costs 76–88 µs (median), and 26–27 µs with this class
 * (`npm run bench:srtp`, docs/BENCHMARKS.md "SRTP"); in a tight loop this
 * class is ~1.15× slower, as OpenSSL's GHASH has carry-less multiplication. So this class makes one
 * AES-ECB cipher per key and uses it for the two parts of GCM that need
 * the key (§7.1): the counter-mode keystream — E(K, inc32ⁱ(J0)) for i ≥ 1,
 * from J0 = IV ‖ 0³¹ ‖ 1 — and the tag mask E(K, J0); both are encrypted in one
 * `update` per packet. GHASH (§6.4) runs here over 32-bit words with the
 * multiples H·xⁱ (i = 0…127) precomputed per key and selected by masks, so no
 * branch and no memory address depends on secret data.
 *
 * Plaintext of any length up to 2³² − 2 blocks; AAD of any length.
 */
export class AesGcm {
  private readonly ecb: Cipher;
  /** H·xⁱ for i = 0…127 (§6.3's V_i for Y = H), four big-endian words each. */
  private readonly hPowers = new Int32Array(128 * 4);
  /** Counter blocks J0, inc32(J0), …; grown when a longer packet comes. */
  private counters = Buffer.alloc(BLOCK * 128);
  /** The GHASH state Y, four big-endian words. */
  private readonly y = new Int32Array(4);
  private readonly x = new Int32Array(4);
  private readonly tail = new Uint8Array(BLOCK);
  private readonly expectedTag = Buffer.alloc(GCM_TAG_BYTES);

  /** @param key 16 bytes (AES-128) or 32 (AES-256). @throws RangeError for another length. */
  constructor(key: Uint8Array) {
    if (key.length !== 16 && key.length !== 32) throw new RangeError(`AES-GCM needs a 16- or 32-byte key, not ${key.length} bytes`);
    this.ecb = createCipheriv(key.length === 16 ? 'aes-128-ecb' : 'aes-256-ecb', key, null);
    this.ecb.setAutoPadding(false);
    const h = this.ecb.update(Buffer.alloc(BLOCK)); // H = E(K, 0¹²⁸)
    let v0 = h.readInt32BE(0);
    let v1 = h.readInt32BE(4);
    let v2 = h.readInt32BE(8);
    let v3 = h.readInt32BE(12);
    h.fill(0);
    for (let i = 0; i < 128; i++) {
      const p = this.hPowers;
      p[4 * i] = v0;
      p[4 * i + 1] = v1;
      p[4 * i + 2] = v2;
      p[4 * i + 3] = v3;
      // V_{i+1} = V_i >> 1, ⊕ R when the bit shifted out was 1 (§6.3 Algorithm 1)
      const carry = -(v3 & 1);
      v3 = (v3 >>> 1) | (v2 << 31);
      v2 = (v2 >>> 1) | (v1 << 31);
      v1 = (v1 >>> 1) | (v0 << 31);
      v0 = (v0 >>> 1) ^ (R0 & carry);
    }
  }

  /**
   * Seals `plaintext`: writes the ciphertext (same length) and then the 16-byte
   * tag into `out` from `offset`. `out` may not overlap `plaintext` or `aad`.
   * @param iv the 12-byte nonce; never reuse one with the same key.
   * @throws RangeError when `iv` is not 12 bytes or `out` is too short.
   */
  sealInto(out: Uint8Array, offset: number, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): void {
    if (out.length < offset + plaintext.length + GCM_TAG_BYTES) throw new RangeError('AES-GCM: the output buffer is too short');
    const stream = this.keystream(iv, plaintext.length);
    for (let i = 0; i < plaintext.length; i++) out[offset + i] = plaintext[i]! ^ stream[BLOCK + i]!;
    this.tagInto(out, offset + plaintext.length, stream, aad, out.subarray(offset, offset + plaintext.length));
  }

  /**
   * Opens a sealed packet: checks `tag` over `aad` and `ciphertext` (in
   * constant time) and only then writes the plaintext into `out` from `offset`.
   * @throws GcmAuthenticationError when the tag does not match (nothing is written).
   * @throws RangeError when `iv` is not 12 bytes, `tag` is not 16 bytes or `out` is too short.
   */
  openInto(out: Uint8Array, offset: number, iv: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array): void {
    if (tag.length !== GCM_TAG_BYTES) throw new RangeError(`AES-GCM: the tag must be 16 bytes, not ${tag.length}`);
    if (out.length < offset + ciphertext.length) throw new RangeError('AES-GCM: the output buffer is too short');
    const stream = this.keystream(iv, ciphertext.length);
    this.tagInto(this.expectedTag, 0, stream, aad, ciphertext);
    if (!timingSafeEqual(this.expectedTag, tag)) throw new GcmAuthenticationError();
    for (let i = 0; i < ciphertext.length; i++) out[offset + i] = ciphertext[i]! ^ stream[BLOCK + i]!;
  }

  /** E(K, J0) ‖ E(K, inc32(J0)) ‖ … covering `length` bytes of keystream after the tag mask. */
  private keystream(iv: Uint8Array, length: number): Buffer {
    if (iv.length !== GCM_IV_BYTES) throw new RangeError(`AES-GCM: the IV must be 12 bytes, not ${iv.length}`);
    const blocks = 1 + Math.ceil(length / BLOCK);
    if (blocks > 0xfffffffe) throw new RangeError('AES-GCM: plaintext too long');
    if (this.counters.length < blocks * BLOCK) this.counters = Buffer.alloc(blocks * BLOCK * 2);
    const c = this.counters;
    for (let b = 0; b < blocks; b++) {
      const at = b * BLOCK;
      c.set(iv, at);
      c.writeUInt32BE(b + 1, at + GCM_IV_BYTES); // J0 has counter 1 (§7.1 step 2)
    }
    return this.ecb.update(c.subarray(0, blocks * BLOCK));
  }

  /** T = E(K, J0) ⊕ GHASH_H(A ‖ 0ᵛ ‖ C ‖ 0ᵘ ‖ [len(A)]₆₄ ‖ [len(C)]₆₄) (§7.1 steps 5–6), into `out` at `at`. */
  private tagInto(out: Uint8Array, at: number, stream: Buffer, aad: Uint8Array, ciphertext: Uint8Array): void {
    const y = this.y;
    y.fill(0);
    this.absorb(aad);
    this.absorb(ciphertext);
    // The length block: bit lengths as two 64-bit big-endian numbers (lengths here stay below 2^32 bits' high word for any real packet).
    const aBits = aad.length * 8;
    const cBits = ciphertext.length * 8;
    this.multiply(Math.floor(aBits / 0x100000000) | 0, aBits | 0, Math.floor(cBits / 0x100000000) | 0, cBits | 0);
    for (let w = 0; w < 4; w++) {
      const v = y[w]!;
      out[at + 4 * w] = (v >>> 24) ^ stream[4 * w]!;
      out[at + 4 * w + 1] = ((v >>> 16) & 0xff) ^ stream[4 * w + 1]!;
      out[at + 4 * w + 2] = ((v >>> 8) & 0xff) ^ stream[4 * w + 2]!;
      out[at + 4 * w + 3] = (v & 0xff) ^ stream[4 * w + 3]!;
    }
  }

  /** GHASH over `data` zero-padded to whole blocks. */
  private absorb(data: Uint8Array): void {
    const whole = data.length - (data.length % BLOCK);
    for (let i = 0; i < whole; i += BLOCK) {
      this.multiply(word(data, i), word(data, i + 4), word(data, i + 8), word(data, i + 12));
    }
    if (whole < data.length) {
      const t = this.tail;
      t.fill(0);
      t.set(data.subarray(whole));
      this.multiply(word(t, 0), word(t, 4), word(t, 8), word(t, 12));
    }
  }

  /** Y = (Y ⊕ X) • H (§6.4), X given as four big-endian words; the bits of Y ⊕ X choose multiples of H by mask, not by branch. */
  private multiply(x0: number, x1: number, x2: number, x3: number): void {
    const y = this.y;
    const p = this.hPowers;
    let z0 = 0;
    let z1 = 0;
    let z2 = 0;
    let z3 = 0;
    const xs = this.x;
    xs[0] = y[0]! ^ x0;
    xs[1] = y[1]! ^ x1;
    xs[2] = y[2]! ^ x2;
    xs[3] = y[3]! ^ x3;
    for (let w = 0; w < 4; w++) {
      const x = xs[w]!;
      for (let b = 0; b < 32; b++) {
        const m = -((x >>> (31 - b)) & 1);
        const k = (w * 32 + b) * 4;
        z0 ^= p[k]! & m;
        z1 ^= p[k + 1]! & m;
        z2 ^= p[k + 2]! & m;
        z3 ^= p[k + 3]! & m;
      }
    }
    y[0] = z0;
    y[1] = z1;
    y[2] = z2;
    y[3] = z3;
  }
}

function word(b: Uint8Array, i: number): number {
  return (b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!;
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
