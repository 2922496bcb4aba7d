/**
 * SFrame, RFC 9605: end-to-end encryption of media frames, so that an SFU
 * forwards what it cannot read. This module is the frame format and the
 * cryptography only (no key distribution: main/core/e2ee/group-keys.ts):
 *
 * - the SFrame header (§4.3): a config byte `|X|K(3)|Y|C(3)|` then the KID
 *   and CTR fields in their variable-length big-endian encodings;
 * - the key schedule (§4.4.2): HKDF-SHA256/512 extract of the base key with an
 *   empty salt, expanded with "SFrame 1.0 Secret key " / "SFrame 1.0 Secret
 *   salt " ‖ KID (8 bytes) ‖ cipher suite (2 bytes);
 * - nonce = sframe_salt XOR CTR (§4.4.3), AEAD with header ‖ metadata as AAD
 *   (§4.4.3);
 * - every cipher suite of §4.5 / §8.1: the AES-GCM ones
 *   (`AES_128_GCM_SHA256_128`, 0x0004, what group calls use; 0x0005) through
 *   {@link AesGcm} (main/media/aes-gcm.ts: one AES context per key, made when
 *   the key is derived, instead of a node:crypto cipher per frame) and the
 *   AES-CTR + HMAC ones with short tags (0x0001–0x0003, §4.5.1) through node:crypto;
 * - per sender: one key per KID and a monotonic counter ({@link SFrameSender});
 *   per receiver: keys by (owner, KID) and a replay window per key
 *   ({@link SFrameReceiver}, §7.2).
 *
 * KID and CTR are bigints (the fields are up to 64 bits). Nothing here logs or
 * returns key material; decryption never throws on what arrives from the
 * network: it returns a reason and counts it.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  hkdfSync,
  timingSafeEqual,
} from 'node:crypto';
import { AesGcm } from './aes-gcm';

/** Largest value of a KID or CTR field (64 bits, RFC 9605 §4.3). */
export const SFRAME_MAX_FIELD = (1n << 64n) - 1n;

/**
 * The SFrame cipher suites of RFC 9605 §4.5 (IANA registry §8.1), all
 * implemented. Group calls use `AES_128_GCM_SHA256_128`; the AES-CTR + HMAC
 * suites (§4.5.1) have short tags (10, 8, 4 bytes) for bandwidth-starved links.
 */
export const CipherSuite = {
  AES_128_CTR_HMAC_SHA256_80: 0x0001,
  AES_128_CTR_HMAC_SHA256_64: 0x0002,
  AES_128_CTR_HMAC_SHA256_32: 0x0003,
  AES_128_GCM_SHA256_128: 0x0004,
  AES_256_GCM_SHA512_128: 0x0005,
} as const;
export type CipherSuite = (typeof CipherSuite)[keyof typeof CipherSuite];

/** The parameters of a cipher suite (RFC 9605 §4.5 table): hash, AEAD, key/nonce/tag sizes in bytes. */
interface SuiteParams {
  hash: 'sha256' | 'sha512';
  /** AES-GCM, or AES-CTR then HMAC over the ciphertext (§4.5.1: the key is enc_key (Nka bytes) ‖ auth_key). */
  aead: 'aes-128-gcm' | 'aes-256-gcm' | 'aes-128-ctr-hmac';
  /** Key size Nk, bytes. */
  nk: number;
  /** Nonce size Nn, bytes. */
  nn: number;
  /** Tag size Nt, bytes. */
  nt: number;
}
const CTR_HMAC = { hash: 'sha256', aead: 'aes-128-ctr-hmac', nk: 48, nn: 12 } as const;
const SUITES: Record<CipherSuite, SuiteParams> = {
  [CipherSuite.AES_128_CTR_HMAC_SHA256_80]: { ...CTR_HMAC, nt: 10 },
  [CipherSuite.AES_128_CTR_HMAC_SHA256_64]: { ...CTR_HMAC, nt: 8 },
  [CipherSuite.AES_128_CTR_HMAC_SHA256_32]: { ...CTR_HMAC, nt: 4 },
  [CipherSuite.AES_128_GCM_SHA256_128]: {
    hash: 'sha256',
    aead: 'aes-128-gcm',
    nk: 16,
    nn: 12,
    nt: 16,
  },
  [CipherSuite.AES_256_GCM_SHA512_128]: {
    hash: 'sha512',
    aead: 'aes-256-gcm',
    nk: 32,
    nn: 12,
    nt: 16,
  },
};
/** AES-128's key size Nka in the AES-CTR + HMAC suites, bytes (RFC 9605 §4.5.1). */
const NKA = 16;

/** Size of a suite's base key and its AEAD key, bytes (RFC 9605 §4.5: Nk). */
export function keySize(suite: CipherSuite): number {
  return suiteParams(suite).nk;
}

function suiteParams(suite: CipherSuite): SuiteParams {
  const p = SUITES[suite];
  if (!p)
    throw new RangeError(
      `SFrame cipher suite 0x${Number(suite).toString(16).padStart(4, '0')} is not implemented`,
    );
  return p;
}

// ---- header (RFC 9605 §4.3) ------------------------------------------------------

/** A decoded SFrame header: KID, CTR and the header's length in bytes. */
export interface SFrameHeader {
  kid: bigint;
  ctr: bigint;
  /** Bytes the header occupies at the start of the frame (1 to 17). */
  length: number;
}

/** Bytes needed for `v` in big-endian, at least 1 (RFC 9605 §4.3: the minimum number of bytes). */
function byteLength(v: bigint): number {
  let n = 1;
  while (v > 0xffn) {
    v >>= 8n;
    n++;
  }
  return n;
}

function writeBE(out: Buffer, offset: number, v: bigint, len: number): void {
  for (let i = len - 1; i >= 0; i--) {
    out[offset + i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

function readBE(buf: Uint8Array, offset: number, len: number): bigint {
  let v = 0n;
  for (let i = 0; i < len; i++) v = (v << 8n) | BigInt(buf[offset + i]!);
  return v;
}

function checkField(v: bigint, what: string): void {
  if (typeof v !== 'bigint' || v < 0n || v > SFRAME_MAX_FIELD)
    throw new RangeError(`SFrame ${what} must be a bigint in 0 … 2^64-1`);
}

/**
 * Encodes an SFrame header (RFC 9605 §4.3): config byte `X|K|Y|C`; a KID of
 * 0–7 sits in K (X = 0), a larger one follows in K+1 bytes (X = 1, minimal
 * length), then likewise the CTR in C / Y.
 * @param kid key id, 0 … 2^64-1. @param ctr counter, 0 … 2^64-1.
 * @returns 1 to 17 bytes.
 * @throws RangeError for a value out of range (a local programming error).
 */
export function encodeHeader(kid: bigint, ctr: bigint): Buffer {
  checkField(kid, 'KID');
  checkField(ctr, 'CTR');
  const kLen = kid < 8n ? 0 : byteLength(kid);
  const cLen = ctr < 8n ? 0 : byteLength(ctr);
  const out = Buffer.alloc(1 + kLen + cLen);
  const k = kLen === 0 ? Number(kid) : 0x8 | (kLen - 1);
  const c = cLen === 0 ? Number(ctr) : 0x8 | (cLen - 1);
  out[0] = (k << 4) | c;
  if (kLen) writeBE(out, 1, kid, kLen);
  if (cLen) writeBE(out, 1 + kLen, ctr, cLen);
  return out;
}

/**
 * Decodes the SFrame header at the start of `frame` (RFC 9605 §4.3).
 * Non-minimal encodings are read as written (the header is authenticated as
 * AAD, so a rewritten header fails decryption anyway).
 * @returns the header, or undefined when `frame` is too short for the lengths its config byte announces. Never throws.
 */
export function decodeHeader(frame: Uint8Array): SFrameHeader | undefined {
  if (frame.length < 1) return undefined;
  const config = frame[0]!;
  const k = config >> 4;
  const c = config & 0x0f;
  const kLen = k & 0x8 ? (k & 0x7) + 1 : 0;
  const cLen = c & 0x8 ? (c & 0x7) + 1 : 0;
  const length = 1 + kLen + cLen;
  if (frame.length < length) return undefined;
  const kid = kLen ? readBE(frame, 1, kLen) : BigInt(k);
  const ctr = cLen ? readBE(frame, 1 + kLen, cLen) : BigInt(c);
  return { kid, ctr, length };
}

// ---- key schedule and nonce (RFC 9605 §4.4.2, §4.4.3) ---------------------------

/** The HKDF-Expand label prefixes of RFC 9605 §4.4.2 (the trailing space is part of each). */
export const SFRAME_KEY_LABEL = 'SFrame 1.0 Secret key ';
export const SFRAME_SALT_LABEL = 'SFrame 1.0 Secret salt ';

/** `prefix ‖ KID (8 bytes, big-endian) ‖ cipher suite (2 bytes, big-endian)` (RFC 9605 §4.4.2). */
export function sframeLabel(prefix: string, kid: bigint, suite: CipherSuite): Buffer {
  const p = Buffer.from(prefix, 'ascii');
  const out = Buffer.alloc(p.length + 10);
  p.copy(out);
  writeBE(out, p.length, kid, 8);
  out.writeUInt16BE(suite, p.length + 8);
  return out;
}

/** The AEAD key (Nk bytes) and nonce salt (Nn bytes) of one KID. Secret: never log. */
export interface SFrameKeyMaterial {
  key: Buffer;
  salt: Buffer;
  /** The GCM suites' AEAD under `key`, made once with the key (absent for the AES-CTR + HMAC suites). */
  gcm?: AesGcm;
}

/**
 * derive_key_salt (RFC 9605 §4.4.2): `sframe_secret = HKDF-Extract("", base_key)`,
 * `sframe_key = HKDF-Expand(sframe_secret, key label, Nk)`,
 * `sframe_salt = HKDF-Expand(sframe_secret, salt label, Nn)`, with the suite's hash.
 * @param baseKey the base key (any length; our group keys are Nk random bytes).
 * @throws RangeError for an unimplemented suite or a KID out of range.
 */
export function deriveKeySalt(
  suite: CipherSuite,
  kid: bigint,
  baseKey: Uint8Array,
): SFrameKeyMaterial {
  const p = suiteParams(suite);
  checkField(kid, 'KID');
  const empty = Buffer.alloc(0);
  const key = Buffer.from(
    hkdfSync(p.hash, baseKey, empty, sframeLabel(SFRAME_KEY_LABEL, kid, suite), p.nk),
  );
  const salt = Buffer.from(
    hkdfSync(p.hash, baseKey, empty, sframeLabel(SFRAME_SALT_LABEL, kid, suite), p.nn),
  );
  return p.aead === 'aes-128-ctr-hmac' ? { key, salt } : { key, salt, gcm: new AesGcm(key) };
}

/** nonce = sframe_salt XOR CTR, the CTR as an Nn-byte big-endian integer (RFC 9605 §4.4.3). */
export function sframeNonce(salt: Uint8Array, ctr: bigint): Buffer {
  const nonce = Buffer.from(salt);
  let v = ctr;
  for (let i = nonce.length - 1; i >= 0 && v > 0n; i--) {
    nonce[i]! ^= Number(v & 0xffn);
    v >>= 8n;
  }
  return nonce;
}

/**
 * Shortest base key accepted, bytes. RFC 9605 puts no bound on it (its C.3
 * vectors use 16 bytes for every suite); 16 bytes is 128 bits of entropy.
 */
export const MIN_BASE_KEY_BYTES = 16;

function checkBaseKey(baseKey: Uint8Array): void {
  if (baseKey.length < MIN_BASE_KEY_BYTES)
    throw new RangeError(`an SFrame base key is at least ${MIN_BASE_KEY_BYTES} bytes`);
}

// ---- AEAD (RFC 9605 §4.5) ---------------------------------------------------------

const EMPTY = Buffer.alloc(0);

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

/** compute_tag of RFC 9605 §4.5.1: HMAC over len(aad) ‖ len(ct) ‖ Nt ‖ nonce ‖ aad ‖ ct (lengths 8 bytes), truncated to Nt. */
function ctrHmacTag(
  p: SuiteParams,
  authKey: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  ct: Uint8Array,
): Buffer {
  const h = createHmac(p.hash, authKey);
  for (const part of [u64(aad.length), u64(ct.length), u64(p.nt), nonce, aad, ct]) h.update(part);
  return h.digest().subarray(0, p.nt);
}

function aesCtr(key: Uint8Array, nonce: Uint8Array, data: Uint8Array): Buffer {
  // The initial counter block is the nonce followed by four zero bytes (§4.5.1).
  const c = createCipheriv('aes-128-ctr', key, Buffer.concat([nonce, Buffer.alloc(4)]));
  return Buffer.concat([c.update(data), c.final()]);
}

/**
 * AEAD.Encrypt of a suite (RFC 9605 §4.5): ciphertext ‖ Nt-byte tag.
 * @param key Nk bytes (the derived sframe_key). @param nonce Nn = 12 bytes.
 * @param gcm for the GCM suites, the AEAD already made under `key` (faster); otherwise node:crypto's.
 */
export function aeadEncrypt(
  suite: CipherSuite,
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
  gcm?: AesGcm,
): Buffer {
  const p = suiteParams(suite);
  if (p.aead === 'aes-128-ctr-hmac') {
    const ct = aesCtr(key.subarray(0, NKA), nonce, plaintext);
    return Buffer.concat([ct, ctrHmacTag(p, key.subarray(NKA), nonce, aad, ct)]);
  }
  if (gcm) {
    const sealed = Buffer.allocUnsafe(plaintext.length + p.nt);
    gcm.sealInto(sealed, 0, nonce, aad, plaintext);
    return sealed;
  }
  const c = createCipheriv(p.aead, key, nonce, { authTagLength: p.nt });
  c.setAAD(aad);
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

/**
 * AEAD.Decrypt of a suite (RFC 9605 §4.5), the tag compared in constant time.
 * @param gcm as for {@link aeadEncrypt}.
 * @returns the plaintext, or undefined when authentication fails. Never throws.
 */
export function aeadDecrypt(
  suite: CipherSuite,
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  sealed: Uint8Array,
  gcm?: AesGcm,
): Buffer | undefined {
  const p = suiteParams(suite);
  if (sealed.length < p.nt) return undefined;
  const ct = sealed.subarray(0, sealed.length - p.nt);
  const tag = sealed.subarray(sealed.length - p.nt);
  try {
    if (p.aead === 'aes-128-ctr-hmac') {
      if (!timingSafeEqual(ctrHmacTag(p, key.subarray(NKA), nonce, aad, ct), tag)) return undefined;
      return aesCtr(key.subarray(0, NKA), nonce, ct);
    }
    if (gcm) {
      const plaintext = Buffer.allocUnsafe(ct.length);
      gcm.openInto(plaintext, 0, nonce, aad, ct, tag);
      return plaintext;
    }
    const d = createDecipheriv(p.aead, key, nonce, { authTagLength: p.nt });
    d.setAAD(aad);
    d.setAuthTag(tag);
    return Buffer.concat([d.update(ct), d.final()]);
  } catch {
    return undefined;
  }
}

// ---- encrypt / decrypt (RFC 9605 §4.4.3, §4.4.4) -----------------------------------

/**
 * SFrame encrypt (RFC 9605 §4.4.3) with a given CTR: header ‖ AEAD.Encrypt(key,
 * nonce, header ‖ metadata, plaintext) (ciphertext and Nt-byte tag).
 * Prefer {@link SFrameSender}, which never reuses a CTR; this is the building
 * block (and the test-vector entry point).
 */
export function sframeEncrypt(
  suite: CipherSuite,
  material: SFrameKeyMaterial,
  kid: bigint,
  ctr: bigint,
  plaintext: Uint8Array,
  metadata: Uint8Array = EMPTY,
): Buffer {
  const header = encodeHeader(kid, ctr);
  return Buffer.concat([
    header,
    aeadEncrypt(
      suite,
      material.key,
      sframeNonce(material.salt, ctr),
      Buffer.concat([header, metadata]),
      plaintext,
      material.gcm,
    ),
  ]);
}

/**
 * SFrame decrypt of a frame whose header is already parsed (RFC 9605 §4.4.4).
 * @returns the plaintext, or undefined when authentication fails. Never throws.
 */
export function sframeOpen(
  suite: CipherSuite,
  material: SFrameKeyMaterial,
  header: SFrameHeader,
  frame: Uint8Array,
  metadata: Uint8Array = EMPTY,
): Buffer | undefined {
  if (frame.length < header.length + suiteParams(suite).nt) return undefined;
  const aad = Buffer.concat([frame.subarray(0, header.length), metadata]);
  return aeadDecrypt(
    suite,
    material.key,
    sframeNonce(material.salt, header.ctr),
    aad,
    frame.subarray(header.length),
    material.gcm,
  );
}

/** Bytes SFrame adds to a frame with this KID and CTR: the header and the tag. */
export function overhead(suite: CipherSuite, kid: bigint, ctr: bigint): number {
  return encodeHeader(kid, ctr).length + suiteParams(suite).nt;
}

// ---- sender ----------------------------------------------------------------------

/**
 * One sender's SFrame state (RFC 9605 §4.4.3, §9.1): the current KID, its
 * derived key and salt, and a counter that starts at 0 for each new key and
 * only goes up, so a (key, nonce) pair is never used twice.
 */
export class SFrameSender {
  private kid: bigint | undefined;
  private material: SFrameKeyMaterial | undefined;
  private ctr = 0n;

  constructor(readonly suite: CipherSuite = CipherSuite.AES_128_GCM_SHA256_128) {
    suiteParams(suite);
  }

  /**
   * Switches to a new key (a new KID): later frames use it, its counter starts at 0.
   * Setting the KID already in use is a no-op (the counter continues).
   * @throws RangeError for a KID out of range or a base key shorter than MIN_BASE_KEY_BYTES.
   */
  setKey(kid: bigint, baseKey: Uint8Array): void {
    if (kid === this.kid) return;
    checkBaseKey(baseKey);
    this.material = deriveKeySalt(this.suite, kid, baseKey);
    this.kid = kid;
    this.ctr = 0n;
  }

  /** The KID frames are encrypted under now (undefined before the first key). */
  get currentKid(): bigint | undefined {
    return this.kid;
  }

  /** The CTR the next frame will carry. */
  get nextCounter(): bigint {
    return this.ctr;
  }

  /**
   * Encrypts one frame (an Opus packet: 1–1275 bytes) with the current key and
   * the next counter value.
   * @param metadata authenticated but not encrypted nor carried (RFC 9605 §4.4.3); the receiver must pass the same.
   * @returns header ‖ ciphertext ‖ Nt-byte tag (16 bytes for the GCM suites).
   * @throws Error when no key is set, or when the counter is exhausted (2^64 frames: set a new key).
   */
  encrypt(frame: Uint8Array, metadata?: Uint8Array): Buffer {
    if (!this.material || this.kid === undefined) throw new Error('SFrame sender has no key yet');
    if (this.ctr > SFRAME_MAX_FIELD)
      throw new Error('SFrame counter exhausted for this key: rotate the key');
    const out = sframeEncrypt(this.suite, this.material, this.kid, this.ctr, frame, metadata);
    this.ctr++;
    return out;
  }
}

// ---- receiver --------------------------------------------------------------------

/** Why a frame was dropped. */
export type SFrameDropReason =
  /** Shorter than its header announces plus a tag. */
  | 'malformed'
  /** No key for its KID (not yet received, or already dropped). */
  | 'unknown_kid'
  /** The AEAD tag did not verify (tampered, wrong key, or not SFrame). */
  | 'auth_failed'
  /** Its CTR was already accepted under this key (RFC 9605 §7.2). */
  | 'replayed'
  /** Its CTR is older than the replay window (RFC 9605 §7.2). */
  | 'too_old';

/** The result of decrypting one frame. */
export type SFrameOpenResult =
  | { ok: true; plaintext: Buffer; kid: bigint; ctr: bigint; owner: string }
  | { ok: false; reason: SFrameDropReason; kid?: bigint };

/** Counters of accepted and dropped frames, by reason. */
export type SFrameStats = Record<'accepted' | SFrameDropReason, number>;

/** Default replay window, frames (RFC 9605 §7.2 leaves it to the application; SRTP's default is 64, RFC 3711 §3.3.2). */
export const DEFAULT_REPLAY_WINDOW = 128;

interface ReceiveKey {
  owner: string;
  kid: bigint;
  material: SFrameKeyMaterial;
  /** Highest CTR accepted so far (-1: none). */
  top: bigint;
  /** Bit i set: CTR `top - i` was accepted (bit 0 is `top`). */
  seen: bigint;
}

/**
 * A receiver's SFrame state: keys by (owner, KID) — owner is whatever names
 * the sender (a device id) — and, per key, a sliding replay window (RFC 9605
 * §7.2, the SRTP scheme of RFC 3711 §3.3.2): a frame whose CTR was already
 * accepted under that key is dropped as `replayed`, one older than the window
 * as `too_old`; frames may arrive out of order within the window. The window
 * moves only after a frame authenticates, so forged frames cannot push it.
 *
 * `decrypt` never throws: every dropped frame is counted in `stats` with its
 * reason. A frame whose KID has no key is dropped, not buffered (§4.4.4 allows
 * either): a late key only serves the frames after it. Timing differs between
 * an unknown KID and a failed tag (§4.4.4 asks for uniform timing); both are
 * local outcomes the sender learns nothing from over an SFU.
 */
export class SFrameReceiver {
  private readonly keys = new Map<string, ReceiveKey>();
  private readonly window: bigint;
  private readonly mask: bigint;
  readonly stats: SFrameStats = {
    accepted: 0,
    malformed: 0,
    unknown_kid: 0,
    auth_failed: 0,
    replayed: 0,
    too_old: 0,
  };

  /**
   * @param replayWindow how many CTR values behind the highest accepted one may still arrive (frames; ≥ 1).
   */
  constructor(
    readonly suite: CipherSuite = CipherSuite.AES_128_GCM_SHA256_128,
    replayWindow = DEFAULT_REPLAY_WINDOW,
  ) {
    suiteParams(suite);
    if (!Number.isInteger(replayWindow) || replayWindow < 1)
      throw new RangeError('replay window must be a positive integer');
    this.window = BigInt(replayWindow);
    this.mask = (1n << this.window) - 1n;
  }

  private static id(owner: string, kid: bigint): string {
    return `${owner}\n${kid}`;
  }

  /**
   * Adds (or replaces) the key of `owner` under `kid`. A replaced key starts a fresh replay window.
   * @throws RangeError for a KID out of range or a base key shorter than MIN_BASE_KEY_BYTES.
   */
  addKey(owner: string, kid: bigint, baseKey: Uint8Array): void {
    checkBaseKey(baseKey);
    this.keys.set(SFrameReceiver.id(owner, kid), {
      owner,
      kid,
      material: deriveKeySalt(this.suite, kid, baseKey),
      top: -1n,
      seen: 0n,
    });
  }

  /** Forgets the key of `owner` under `kid`. @returns whether it was there. */
  removeKey(owner: string, kid: bigint): boolean {
    return this.keys.delete(SFrameReceiver.id(owner, kid));
  }

  /** Whether a key of `owner` under `kid` is held. */
  hasKey(owner: string, kid: bigint): boolean {
    return this.keys.has(SFrameReceiver.id(owner, kid));
  }

  /**
   * Decrypts one SFrame frame (RFC 9605 §4.4.4) and checks its CTR against the
   * key's replay window.
   * @param owner the sender the transport says the frame is from (a device id);
   *   undefined: any sender holding a key under the frame's KID (tried in turn).
   * @param metadata the same metadata the sender authenticated (default none).
   * @returns the plaintext, KID, CTR and owner; or the drop reason. Never throws.
   */
  decrypt(frame: Uint8Array, owner?: string, metadata?: Uint8Array): SFrameOpenResult {
    const header = decodeHeader(frame);
    if (!header || frame.length < header.length + suiteParams(this.suite).nt)
      return this.drop('malformed');
    const candidates: ReceiveKey[] = [];
    if (owner !== undefined) {
      const k = this.keys.get(SFrameReceiver.id(owner, header.kid));
      if (k) candidates.push(k);
    } else {
      for (const k of this.keys.values()) if (k.kid === header.kid) candidates.push(k);
    }
    if (candidates.length === 0) return this.drop('unknown_kid', header.kid);
    for (const k of candidates) {
      const plaintext = sframeOpen(this.suite, k.material, header, frame, metadata);
      if (!plaintext) continue;
      const verdict = this.admit(k, header.ctr);
      if (verdict) return this.drop(verdict, header.kid);
      this.stats.accepted++;
      return { ok: true, plaintext, kid: header.kid, ctr: header.ctr, owner: k.owner };
    }
    return this.drop('auth_failed', header.kid);
  }

  /** Records an authenticated CTR in the key's window; returns why it must be dropped, if it must. */
  private admit(k: ReceiveKey, ctr: bigint): 'replayed' | 'too_old' | undefined {
    if (ctr > k.top) {
      const shift = ctr - k.top;
      k.seen = shift >= this.window ? 1n : ((k.seen << shift) | 1n) & this.mask;
      k.top = ctr;
      return undefined;
    }
    const age = k.top - ctr;
    if (age >= this.window) return 'too_old';
    const bit = 1n << age;
    if (k.seen & bit) return 'replayed';
    k.seen |= bit;
    return undefined;
  }

  private drop(reason: SFrameDropReason, kid?: bigint): SFrameOpenResult {
    this.stats[reason]++;
    return kid === undefined ? { ok: false, reason } : { ok: false, reason, kid };
  }
}
