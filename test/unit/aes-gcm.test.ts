import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ProtectionProfileAeadAes128Gcm, RtpHeader, SrtpAuthenticationError, SrtpSession } from 'werift';
import { AesGcm128, GcmAuthenticationError, installSrtpAead, WERIFT_SRTP_AEAD_HOOK } from '../../main/media/aes-gcm';

/** OpenSSL's AES-128-GCM through node:crypto: the reference the AEAD must equal, byte for byte. */
function opensslSeal(key: Buffer, iv: Buffer, aad: Buffer, plaintext: Buffer): Buffer {
  const c = createCipheriv('aes-128-gcm', key, iv);
  c.setAAD(aad);
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

function opensslOpen(key: Buffer, iv: Buffer, aad: Buffer, sealed: Buffer): Buffer {
  const d = createDecipheriv('aes-128-gcm', key, iv);
  d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  return Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]);
}

function seal(key: Buffer, iv: Buffer, aad: Buffer, plaintext: Buffer): Buffer {
  const out = Buffer.alloc(plaintext.length + 16);
  new AesGcm128(key).sealInto(out, 0, iv, aad, plaintext);
  return out;
}

describe('AesGcm128 (AEAD_AES_128_GCM, NIST SP 800-38D)', () => {
  it.each([
    // McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 1 and 2: K = 0¹²⁸, IV = 0⁹⁶
    ['test case 1: empty plaintext', '', '58e2fccefa7e3061367f1d57a4e7455a'],
    ['test case 2: one zero block', '00000000000000000000000000000000', '0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf'],
  ])('%s gives the published ciphertext and tag', (_name, plaintextHex, sealedHex) => {
    expect(seal(Buffer.alloc(16), Buffer.alloc(12), Buffer.alloc(0), Buffer.from(plaintextHex, 'hex')).toString('hex')).toBe(sealedHex);
  });

  it('equals OpenSSL on 2 000 random keys, IVs, AAD of 0–44 bytes and plaintexts of 0–300 bytes (whole and partial blocks), and each opens the other', () => {
    for (let t = 0; t < 2000; t++) {
      const key = randomBytes(16);
      const iv = randomBytes(12);
      const aad = randomBytes(t % 45);
      const plaintext = randomBytes((t * 7) % 301);
      const ours = seal(key, iv, aad, plaintext);
      const reference = opensslSeal(key, iv, aad, plaintext);
      expect(ours.equals(reference), `case ${t}: aad ${aad.length} B, plaintext ${plaintext.length} B`).toBe(true);
      expect(opensslOpen(key, iv, aad, ours).equals(plaintext)).toBe(true);
      const opened = Buffer.alloc(plaintext.length);
      new AesGcm128(key).openInto(opened, 0, iv, aad, reference.subarray(0, plaintext.length), reference.subarray(plaintext.length));
      expect(opened.equals(plaintext)).toBe(true);
    }
  });

  it('one instance seals packet after packet with fresh IVs as OpenSSL does (the per-packet state is reset)', () => {
    const key = randomBytes(16);
    const gcm = new AesGcm128(key);
    for (let t = 0; t < 200; t++) {
      const iv = randomBytes(12);
      const aad = randomBytes(12);
      const plaintext = randomBytes(20 + (t % 160));
      const out = Buffer.alloc(plaintext.length + 16 + 5).fill(0xaa);
      gcm.sealInto(out, 5, iv, aad, plaintext);
      expect(out.subarray(0, 5).equals(Buffer.alloc(5, 0xaa)), 'bytes before the offset untouched').toBe(true);
      expect(out.subarray(5).equals(opensslSeal(key, iv, aad, plaintext))).toBe(true);
    }
  });

  it('refuses any altered bit of AAD, ciphertext or tag, a wrong IV or a wrong key, and writes nothing then', () => {
    const key = randomBytes(16);
    const iv = randomBytes(12);
    const aad = randomBytes(12);
    const plaintext = randomBytes(61);
    const sealed = seal(key, iv, aad, plaintext);
    const gcm = new AesGcm128(key);
    const tryOpen = (k: AesGcm128, v: Buffer, a: Buffer, s: Buffer): Buffer => {
      const out = Buffer.alloc(plaintext.length, 0x55);
      expect(() => k.openInto(out, 0, v, a, s.subarray(0, plaintext.length), s.subarray(plaintext.length))).toThrow(GcmAuthenticationError);
      return out;
    };
    for (let bit = 0; bit < sealed.length * 8; bit += 3) {
      const s = Buffer.from(sealed);
      s[bit >> 3]! ^= 1 << (bit & 7);
      expect(tryOpen(gcm, iv, aad, s).equals(Buffer.alloc(plaintext.length, 0x55))).toBe(true);
    }
    for (let bit = 0; bit < aad.length * 8; bit++) {
      const a = Buffer.from(aad);
      a[bit >> 3]! ^= 1 << (bit & 7);
      tryOpen(gcm, iv, a, sealed);
    }
    const otherIv = Buffer.from(iv);
    otherIv[11]! ^= 1;
    tryOpen(gcm, otherIv, aad, sealed);
    tryOpen(new AesGcm128(randomBytes(16)), iv, aad, sealed);
  });

  it('says what is wrong with a key, IV, tag or output buffer of the wrong size', () => {
    expect(() => new AesGcm128(Buffer.alloc(32))).toThrow(/16-byte key/);
    const gcm = new AesGcm128(Buffer.alloc(16));
    expect(() => gcm.sealInto(Buffer.alloc(40), 0, Buffer.alloc(16), Buffer.alloc(0), Buffer.alloc(8))).toThrow(/IV must be 12 bytes/);
    expect(() => gcm.sealInto(Buffer.alloc(20), 0, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(8))).toThrow(/too short/);
    expect(() => gcm.openInto(Buffer.alloc(8), 0, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(8), Buffer.alloc(10))).toThrow(/tag must be 16 bytes/);
  });
});

describe("werift's SRTP (RFC 7714 AEAD_AES_128_GCM) through the AEAD (patches/werift+0.25.2.patch)", () => {
  const hooks = globalThis as Record<symbol, unknown>;
  const saved = hooks[WERIFT_SRTP_AEAD_HOOK];
  afterEach(() => {
    hooks[WERIFT_SRTP_AEAD_HOOK] = saved;
  });

  const keys = { a: { key: randomBytes(16), salt: randomBytes(12) }, b: { key: randomBytes(16), salt: randomBytes(12) } };
  /** One end's session: sends with `a`'s keys and receives with `b`'s (or the other way round). */
  const session = (local: 'a' | 'b', withAead: boolean): SrtpSession => {
    if (withAead) installSrtpAead();
    else delete hooks[WERIFT_SRTP_AEAD_HOOK];
    const remote = local === 'a' ? 'b' : 'a';
    return new SrtpSession({
      profile: ProtectionProfileAeadAes128Gcm,
      keys: { localMasterKey: keys[local].key, localMasterSalt: keys[local].salt, remoteMasterKey: keys[remote].key, remoteMasterSalt: keys[remote].salt },
    });
  };
  const header = (seq: number) => new RtpHeader({ payloadType: 111, sequenceNumber: seq, timestamp: seq * 960, ssrc: 0x1234abcd, marker: false });

  it('uses the AEAD when installed, and what it seals opens with werift’s own path and the other way round, packet after packet', () => {
    const fast = session('a', true);
    const plain = session('b', false);
    const cipherOf = (s: SrtpSession) => (s as unknown as { localContext: { cipher: { srtpAead?: unknown } } }).localContext.cipher;
    expect(cipherOf(fast).srtpAead).toBeInstanceOf(AesGcm128);
    expect(cipherOf(plain).srtpAead).toBeUndefined();
    for (let seq = 65530; seq < 65530 + 40; seq++) {
      const payload = randomBytes(40 + (seq % 90));
      const h = header(seq & 0xffff);
      const fromFast = fast.encrypt(payload, h);
      expect(plain.decrypt(fromFast).subarray(h.serializeSize).equals(payload)).toBe(true);
      const fromPlain = plain.encrypt(payload, h);
      expect(fast.decrypt(fromPlain).subarray(h.serializeSize).equals(payload)).toBe(true);
    }
  });

  it('refuses an altered packet with werift’s SrtpAuthenticationError', () => {
    const fast = session('a', true);
    const sender = session('b', true);
    const sealed = sender.encrypt(randomBytes(80), header(7));
    sealed[sealed.length - 20]! ^= 0x01;
    expect(() => fast.decrypt(sealed)).toThrow(SrtpAuthenticationError);
  });
});
