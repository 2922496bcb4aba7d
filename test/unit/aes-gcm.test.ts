import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ProtectionProfileAeadAes128Gcm, RtcpRrPacket, RtcpReceiverInfo, RtpHeader, SrtcpSession, SrtpAuthenticationError, SrtpSession } from 'werift';
import { AesGcm, GcmAuthenticationError, installSrtpAead, WERIFT_SRTP_AEAD_HOOK } from '../../main/media/aes-gcm';
import { loadAeadAddon } from '../../native/aead';

/** OpenSSL's AES-128-GCM through node:crypto: the reference the AEAD must equal, byte for byte. */
const algorithm = (key: Buffer) => (key.length === 16 ? 'aes-128-gcm' : 'aes-256-gcm');

function opensslSeal(key: Buffer, iv: Buffer, aad: Buffer, plaintext: Buffer): Buffer {
  const c = createCipheriv(algorithm(key), key, iv);
  c.setAAD(aad);
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

function opensslOpen(key: Buffer, iv: Buffer, aad: Buffer, sealed: Buffer): Buffer {
  const d = createDecipheriv(algorithm(key), key, iv);
  d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  return Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]);
}

function seal(key: Buffer, iv: Buffer, aad: Buffer, plaintext: Buffer): Buffer {
  const out = Buffer.alloc(plaintext.length + 16);
  new AesGcm(key).sealInto(out, 0, iv, aad, plaintext);
  return out;
}

describe('AesGcm (AEAD_AES_128_GCM and AEAD_AES_256_GCM, NIST SP 800-38D)', () => {
  it.each([
    // McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 1, 2, 13 and 14: K = 0, IV = 0⁹⁶
    ['test case 1: AES-128, empty plaintext', 16, '', '58e2fccefa7e3061367f1d57a4e7455a'],
    ['test case 2: AES-128, one zero block', 16, '00000000000000000000000000000000', '0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf'],
    ['test case 13: AES-256, empty plaintext', 32, '', '530f8afbc74536b9a963b4f1c4cb738b'],
    ['test case 14: AES-256, one zero block', 32, '00000000000000000000000000000000', 'cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919'],
  ])('%s gives the published ciphertext and tag', (_name, keyBytes, plaintextHex, sealedHex) => {
    expect(seal(Buffer.alloc(keyBytes), Buffer.alloc(12), Buffer.alloc(0), Buffer.from(plaintextHex, 'hex')).toString('hex')).toBe(sealedHex);
  });

  it('equals OpenSSL on 2 000 random 16- and 32-byte keys, IVs, AAD of 0–44 bytes and plaintexts of 0–300 bytes (whole and partial blocks), and each opens the other', () => {
    for (let t = 0; t < 2000; t++) {
      const key = randomBytes(t % 2 === 0 ? 16 : 32);
      const iv = randomBytes(12);
      const aad = randomBytes(t % 45);
      const plaintext = randomBytes((t * 7) % 301);
      const ours = seal(key, iv, aad, plaintext);
      const reference = opensslSeal(key, iv, aad, plaintext);
      expect(ours.equals(reference), `case ${t}: aad ${aad.length} B, plaintext ${plaintext.length} B`).toBe(true);
      expect(opensslOpen(key, iv, aad, ours).equals(plaintext)).toBe(true);
      const opened = Buffer.alloc(plaintext.length);
      new AesGcm(key).openInto(opened, 0, iv, aad, reference.subarray(0, plaintext.length), reference.subarray(plaintext.length));
      expect(opened.equals(plaintext)).toBe(true);
    }
  });

  it('one instance seals packet after packet with fresh IVs as OpenSSL does (the per-packet state is reset)', () => {
    const key = randomBytes(16);
    const gcm = new AesGcm(key);
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
    const gcm = new AesGcm(key);
    const tryOpen = (k: AesGcm, v: Buffer, a: Buffer, s: Buffer): Buffer => {
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
    tryOpen(new AesGcm(randomBytes(16)), iv, aad, sealed);
  });

  it('says what is wrong with a key, IV, tag or output buffer of the wrong size', () => {
    expect(() => new AesGcm(Buffer.alloc(24))).toThrow(/16- or 32-byte key/);
    const gcm = new AesGcm(Buffer.alloc(16));
    expect(() => gcm.sealInto(Buffer.alloc(40), 0, Buffer.alloc(16), Buffer.alloc(0), Buffer.alloc(8))).toThrow(/IV must be 12 bytes/);
    expect(() => gcm.sealInto(Buffer.alloc(20), 0, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(8))).toThrow(/too short/);
    expect(() => gcm.openInto(Buffer.alloc(8), 0, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(8), Buffer.alloc(10))).toThrow(/tag must be 16 bytes/);
    expect(() => gcm.sealInto(Buffer.alloc(40), 30, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(8))).toThrow(/too short/);
    expect(() => gcm.sealInto(Buffer.alloc(40), -1, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(8))).toThrow(RangeError);
    // Not bytes: a TypeError naming the argument, not a crash in native code.
    expect(() => gcm.sealInto(Buffer.alloc(40), 0, Buffer.alloc(12), 'aad' as unknown as Uint8Array, Buffer.alloc(8))).toThrow(/AAD must be a Uint8Array/);
    expect(() => gcm.sealInto(new Int16Array(20) as unknown as Uint8Array, 0, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(8))).toThrow(/out must be a Uint8Array/);
  });

  it('without its addon, says which command builds it', () => {
    expect(() => loadAeadAddon(['/nonexistent/parley_aead.node'])).toThrow(/AES-GCM addon is not built.*scripts\/setup\.sh.*libssl-dev/);
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
    expect(cipherOf(fast).srtpAead).toBeInstanceOf(AesGcm);
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

  /** The RTCP twin of {@link session}: SRTCP (RFC 7714 §9) with the same master keys. */
  const rtcpSession = (local: 'a' | 'b', withAead: boolean): SrtcpSession => {
    if (withAead) installSrtpAead();
    else delete hooks[WERIFT_SRTP_AEAD_HOOK];
    const remote = local === 'a' ? 'b' : 'a';
    return new SrtcpSession({
      profile: ProtectionProfileAeadAes128Gcm,
      keys: { localMasterKey: keys[local].key, localMasterSalt: keys[local].salt, remoteMasterKey: keys[remote].key, remoteMasterSalt: keys[remote].salt },
    });
  };
  /** A receiver report (RFC 3550 §6.4.2) with `blocks` report blocks, as a call sends about once a second. */
  const receiverReport = (blocks: number, n: number): Buffer =>
    new RtcpRrPacket({
      ssrc: 0x5eed0000 + n,
      reports: Array.from({ length: blocks }, (_, i) => new RtcpReceiverInfo({ ssrc: 0x1234abcd + i, fractionLost: n % 256, packetsLost: n, highestSequence: 1000 + n, jitter: 17 * n, lsr: n << 8, dlsr: 65536 })),
    }).serialize();

  it('seals and opens SRTCP through the AEAD too, interoperable with werift’s own path both ways, index after index', () => {
    const fast = rtcpSession('a', true);
    const plain = rtcpSession('b', false);
    const cipherOf = (s: SrtcpSession) => (s as unknown as { localContext: { cipher: { srtcpAead?: unknown } } }).localContext.cipher;
    expect(cipherOf(fast).srtcpAead).toBeInstanceOf(AesGcm);
    expect(cipherOf(plain).srtcpAead).toBeUndefined();
    for (let n = 0; n < 30; n++) {
      const rr = receiverReport(n % 3, n);
      const fromFast = fast.encrypt(rr);
      // Header and sender SSRC in the clear, the rest sealed, the 16-byte tag and the E-flagged SRTCP index after it.
      expect(fromFast.length).toBe(rr.length + 16 + 4);
      expect(fromFast.subarray(0, 8).equals(rr.subarray(0, 8))).toBe(true);
      expect(fromFast.readUInt32BE(fromFast.length - 4) >>> 31).toBe(1);
      expect(plain.decrypt(fromFast).equals(rr)).toBe(true);
      expect(fast.decrypt(plain.encrypt(rr)).equals(rr)).toBe(true);
    }
  });

  it('refuses an altered SRTCP packet (body, tag or index) with werift’s SrtpAuthenticationError', () => {
    const fast = rtcpSession('a', true);
    const sender = rtcpSession('b', true);
    for (const at of [9, -8, -1]) {
      const sealed = sender.encrypt(receiverReport(1, 5));
      sealed[at < 0 ? sealed.length + at : at]! ^= 0x01;
      expect(() => fast.decrypt(sealed)).toThrow(SrtpAuthenticationError);
    }
  });
});
