/**
 * SFrame (RFC 9605): header encoding, key schedule, nonce and AEAD against the
 * RFC's Appendix C test vectors, then the sender/receiver state: counters,
 * keys by owner and KID, the replay window, tampering and wrong keys.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CipherSuite,
  SFRAME_KEY_LABEL,
  SFRAME_SALT_LABEL,
  SFrameReceiver,
  SFrameSender,
  aeadDecrypt,
  aeadEncrypt,
  decodeHeader,
  deriveKeySalt,
  encodeHeader,
  overhead,
  sframeEncrypt,
  sframeLabel,
  sframeNonce,
} from '../../main/media/sframe';

const hex = (s: string) => Buffer.from(s, 'hex');
const big = (s: string) => BigInt(`0x${s}`);

const headerVectors = JSON.parse(
  readFileSync(join(__dirname, '../fixtures/sframe-rfc9605-headers.json'), 'utf8'),
) as {
  vectors: [string, string, string][];
};

describe('SFrame header (RFC 9605 §4.3, Appendix C.1 vectors)', () => {
  it('encodes every vector KID/CTR pair to the RFC bytes', () => {
    expect(headerVectors.vectors.length).toBe(107);
    for (const [kid, ctr, header] of headerVectors.vectors) {
      expect(encodeHeader(big(kid), big(ctr)).toString('hex'), `kid ${kid} ctr ${ctr}`).toBe(
        header,
      );
    }
  });

  it('decodes every vector header to its KID, CTR and length, also with a payload after it', () => {
    for (const [kid, ctr, header] of headerVectors.vectors) {
      const bytes = hex(header);
      expect(decodeHeader(bytes)).toEqual({ kid: big(kid), ctr: big(ctr), length: bytes.length });
      expect(decodeHeader(Buffer.concat([bytes, hex('deadbeef')]))).toEqual({
        kid: big(kid),
        ctr: big(ctr),
        length: bytes.length,
      });
    }
  });

  it.each([
    [0n, 0n, '00'],
    [7n, 7n, '77'],
    [8n, 8n, '880808'],
    [7n, 8n, '7808'],
    [8n, 7n, '8708'],
    [255n, 255n, '88ffff'],
    [256n, 256n, '9901000100'],
    [1n << 56n, 1n << 56n, 'ff01000000000000000100000000000000'],
  ])('boundary KID %s CTR %s is %s and decodes back', (kid, ctr, h) => {
    expect(encodeHeader(kid, ctr).toString('hex')).toBe(h);
    expect(decodeHeader(hex(h))).toEqual({ kid, ctr, length: h.length / 2 });
  });

  it('reports a truncated header as undefined instead of throwing', () => {
    expect(decodeHeader(Buffer.alloc(0))).toBeUndefined();
    expect(decodeHeader(hex('88ff'))).toBeUndefined(); // announces 1 + 1 + 1 bytes
    expect(decodeHeader(hex('ff0100000000000000ffffffffffffff'))).toBeUndefined(); // one byte short
  });

  it('refuses out-of-range values on encode (a local error)', () => {
    expect(() => encodeHeader(-1n, 0n)).toThrow(RangeError);
    expect(() => encodeHeader(0n, 1n << 64n)).toThrow(RangeError);
  });
});

/** RFC 9605 Appendix C.2, verbatim: AEAD encryption with the AES-CTR + HMAC suites (§4.5.1). */
const C2_COMMON = {
  key: hex(
    '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f',
  ),
  nonce: hex('101112131415161718191a1b'),
  aad: hex('4945544620534672616d65205747'),
  pt: hex('64726166742d696574662d736672616d652d656e63'),
};
const C2 = [
  {
    suite: CipherSuite.AES_128_CTR_HMAC_SHA256_80,
    ct: '6339af04ada1d064688a442b8dc69d5b6bfa40f4bef0583e8081069cc60705',
  },
  {
    suite: CipherSuite.AES_128_CTR_HMAC_SHA256_64,
    ct: '6339af04ada1d064688a442b8dc69d5b6bfa40f4be6e93b7da076927bb',
  },
  {
    suite: CipherSuite.AES_128_CTR_HMAC_SHA256_32,
    ct: '6339af04ada1d064688a442b8dc69d5b6bfa40f4be09480509',
  },
];

describe.each(C2)(
  'AEAD AES-CTR + HMAC, suite $suite (RFC 9605 §4.5.1, Appendix C.2 vector)',
  (v) => {
    const { key, nonce, aad, pt } = C2_COMMON;
    it('encrypts to the RFC ciphertext and tag, and decrypts it back', () => {
      expect(aeadEncrypt(v.suite, key, nonce, aad, pt).toString('hex')).toBe(v.ct);
      expect(aeadDecrypt(v.suite, key, nonce, aad, hex(v.ct))?.equals(pt)).toBe(true);
    });
    it('refuses a changed tag, ciphertext or AAD', () => {
      const ct = hex(v.ct);
      for (const i of [0, ct.length - 1]) {
        const bad = Buffer.from(ct);
        bad[i]! ^= 1;
        expect(aeadDecrypt(v.suite, key, nonce, aad, bad)).toBeUndefined();
      }
      expect(aeadDecrypt(v.suite, key, nonce, hex('00'), ct)).toBeUndefined();
      expect(aeadDecrypt(v.suite, key, nonce, aad, ct.subarray(0, 3))).toBeUndefined();
    });
  },
);

/** RFC 9605 Appendix C.3, verbatim: every cipher suite. */
const C3 = [
  {
    suite: CipherSuite.AES_128_CTR_HMAC_SHA256_80,
    sframeKeyLabel: '534672616d6520312e3020536563726574206b65792000000000000001230001',
    sframeSaltLabel: '534672616d6520312e30205365637265742073616c742000000000000001230001',
    sframeKey:
      '3f7d9a7c83ae8e1c8a11ae695ab59314b367e359fadac7b9c46b2bc6f81f46e16b96f0811868d59402b7e870102720b3',
    sframeSalt: '50b29329a04dc0f184ac3168',
    nonce: '50b29329a04dc0f184ac740f',
    ct: '9901234567449408b6f490086165b9d6f62b24ae1a59a56486b4ae8ed036b88912e24f11',
  },
  {
    suite: CipherSuite.AES_128_CTR_HMAC_SHA256_64,
    sframeKeyLabel: '534672616d6520312e3020536563726574206b65792000000000000001230002',
    sframeSaltLabel: '534672616d6520312e30205365637265742073616c742000000000000001230002',
    sframeKey:
      'e2ec5c797540310483b16bf6e7a570d2a27d192fe869c7ccd8584a8d9dab91549fbe553f5113461ec6aa83bf3865553e',
    sframeSalt: 'e68ac8dd3d02fbcd368c5577',
    nonce: 'e68ac8dd3d02fbcd368c1010',
    ct: '99012345673f31438db4d09434e43afa0f8a2f00867a2be085046a9f5cb4f101d607',
  },
  {
    suite: CipherSuite.AES_128_CTR_HMAC_SHA256_32,
    sframeKeyLabel: '534672616d6520312e3020536563726574206b65792000000000000001230003',
    sframeSaltLabel: '534672616d6520312e30205365637265742073616c742000000000000001230003',
    sframeKey:
      '2c5703089cbb8c583475e4fc461d97d18809df79b6d550f78eb6d50ffa80d89211d57909934f46f5405e38cd583c69fe',
    sframeSalt: '38c16e4f5159700c00c7f350',
    nonce: '38c16e4f5159700c00c7b637',
    ct: '990123456717fc8af28a5a695afcfc6c8df6358a17e26b2fcb3bae32e443',
  },
  {
    suite: CipherSuite.AES_128_GCM_SHA256_128,
    sframeKeyLabel: '534672616d6520312e3020536563726574206b65792000000000000001230004',
    sframeSaltLabel: '534672616d6520312e30205365637265742073616c742000000000000001230004',
    sframeKey: 'd34f547f4ca4f9a7447006fe7fcbf768',
    sframeSalt: '75234edefe07819026751816',
    nonce: '75234edefe07819026755d71',
    ct: '9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0b091c07018ce4adb34eb',
  },
  {
    suite: CipherSuite.AES_256_GCM_SHA512_128,
    sframeKeyLabel: '534672616d6520312e3020536563726574206b65792000000000000001230005',
    sframeSaltLabel: '534672616d6520312e30205365637265742073616c742000000000000001230005',
    sframeKey: 'd3e27b0d4a5ae9e55df01a70e6d4d28d969b246e2936f4b7a5d9b494da6b9633',
    sframeSalt: '84991c167b8cd23c93708ec7',
    nonce: '84991c167b8cd23c9370cba0',
    ct: '990123456794f509d36e9beacb0e261d99c7d1e972f1fed787d4049f17ca21353c1cc24d56ceabced279',
  },
];
const C3_COMMON = {
  kid: 0x123n,
  ctr: 0x4567n,
  baseKey: hex('000102030405060708090a0b0c0d0e0f'),
  metadata: hex('4945544620534672616d65205747'), // "IETF SFrame WG"
  pt: hex('64726166742d696574662d736672616d652d656e63'), // "draft-ietf-sframe-enc"
};

describe.each(C3)('SFrame encryption, suite $suite (RFC 9605 §4.4, Appendix C.3 vector)', (v) => {
  const { kid, ctr, baseKey, metadata, pt } = C3_COMMON;

  it('builds the key and salt labels', () => {
    expect(sframeLabel(SFRAME_KEY_LABEL, kid, v.suite).toString('hex')).toBe(v.sframeKeyLabel);
    expect(sframeLabel(SFRAME_SALT_LABEL, kid, v.suite).toString('hex')).toBe(v.sframeSaltLabel);
  });

  it('derives sframe_key and sframe_salt from the base key (§4.4.2)', () => {
    const m = deriveKeySalt(v.suite, kid, baseKey);
    expect(m.key.toString('hex')).toBe(v.sframeKey);
    expect(m.salt.toString('hex')).toBe(v.sframeSalt);
  });

  it('forms the nonce as salt XOR CTR (§4.4.3)', () => {
    expect(sframeNonce(hex(v.sframeSalt), ctr).toString('hex')).toBe(v.nonce);
  });

  it('encrypts to the RFC ciphertext with header ‖ metadata as AAD', () => {
    expect(
      sframeEncrypt(v.suite, deriveKeySalt(v.suite, kid, baseKey), kid, ctr, pt, metadata).toString(
        'hex',
      ),
    ).toBe(v.ct);
  });

  it('decrypts the RFC ciphertext with a receiver holding the base key under that KID', () => {
    const rx = new SFrameReceiver(v.suite);
    rx.addKey('rfc', kid, baseKey);
    const r = rx.decrypt(hex(v.ct), 'rfc', metadata);
    expect(r).toMatchObject({ ok: true, kid, ctr, owner: 'rfc' });
    expect(r.ok && r.plaintext.equals(pt)).toBe(true);
    // Without the metadata the AAD differs: authentication fails.
    const rx2 = new SFrameReceiver(v.suite);
    rx2.addKey('rfc', kid, baseKey);
    expect(rx2.decrypt(hex(v.ct), 'rfc')).toEqual({ ok: false, reason: 'auth_failed', kid });
  });
});

describe('SFrame sender and receiver', () => {
  const key = (b: number) => Buffer.alloc(16, b);
  const opus = (i: number) => Buffer.from(`opus frame ${i} `.repeat(4));

  function pair(window?: number) {
    const tx = new SFrameSender();
    tx.setKey(42n, key(1));
    const rx = new SFrameReceiver(CipherSuite.AES_128_GCM_SHA256_128, window);
    rx.addKey('alice', 42n, key(1));
    return { tx, rx };
  }

  it('round-trips frames with a counter that starts at 0 and goes up by one per frame', () => {
    const { tx, rx } = pair();
    for (let i = 0; i < 300; i++) {
      const wire = tx.encrypt(opus(i));
      expect(decodeHeader(wire)).toMatchObject({ kid: 42n, ctr: BigInt(i) });
      expect(wire.length).toBe(
        opus(i).length + overhead(CipherSuite.AES_128_GCM_SHA256_128, 42n, BigInt(i)),
      );
      const r = rx.decrypt(wire, 'alice');
      expect(r.ok && r.plaintext.equals(opus(i))).toBe(true);
    }
    expect(rx.stats.accepted).toBe(300);
  });

  it('never shows the plaintext on the wire', () => {
    const { tx } = pair();
    const wire = tx.encrypt(opus(1));
    expect(wire.includes(Buffer.from('opus frame'))).toBe(false);
  });

  it('restarts the counter at 0 for a new KID, and ignores setting the same KID again', () => {
    const { tx } = pair();
    tx.encrypt(opus(0));
    tx.encrypt(opus(1));
    tx.setKey(42n, key(1));
    expect(tx.nextCounter).toBe(2n);
    tx.setKey(43n, key(2));
    expect(tx.currentKid).toBe(43n);
    expect(decodeHeader(tx.encrypt(opus(2)))).toMatchObject({ kid: 43n, ctr: 0n });
  });

  it('drops any single flipped bit (header, ciphertext or tag) as auth_failed or unknown_kid, never throwing', () => {
    const { tx, rx } = pair();
    const wire = tx.encrypt(opus(7));
    for (let i = 0; i < wire.length; i++) {
      for (const bit of [0x01, 0x80]) {
        const bad = Buffer.from(wire);
        bad[i]! ^= bit;
        const r = rx.decrypt(bad, 'alice');
        expect(r.ok, `byte ${i}`).toBe(false);
      }
    }
    expect(rx.stats.accepted).toBe(0);
    expect(rx.stats.auth_failed + rx.stats.unknown_kid + rx.stats.malformed).toBe(wire.length * 2);
    // The genuine frame still opens: the forgeries did not move the replay window.
    expect(rx.decrypt(wire, 'alice').ok).toBe(true);
  });

  it('drops a frame under the wrong key as auth_failed, an unknown KID as unknown_kid, garbage as malformed', () => {
    const { tx } = pair();
    const wire = tx.encrypt(opus(1));
    const wrong = new SFrameReceiver();
    wrong.addKey('alice', 42n, key(9));
    expect(wrong.decrypt(wire, 'alice')).toEqual({ ok: false, reason: 'auth_failed', kid: 42n });
    const none = new SFrameReceiver();
    expect(none.decrypt(wire, 'alice')).toEqual({ ok: false, reason: 'unknown_kid', kid: 42n });
    expect(none.decrypt(Buffer.alloc(0))).toEqual({ ok: false, reason: 'malformed' });
    expect(none.decrypt(hex('00'))).toEqual({ ok: false, reason: 'malformed' });
    expect(none.decrypt(hex('ff01'))).toEqual({ ok: false, reason: 'malformed' });
    expect(none.stats).toMatchObject({ unknown_kid: 1, malformed: 3 });
  });

  it("keeps keys per owner: a frame under Alice's KID is not opened as Bob's", () => {
    const { tx, rx } = pair();
    rx.addKey('bob', 42n, key(2)); // the same KID chosen by another sender
    const wire = tx.encrypt(opus(1));
    expect(rx.decrypt(wire, 'bob')).toEqual({ ok: false, reason: 'auth_failed', kid: 42n });
    const anyOwner = rx.decrypt(wire);
    expect(anyOwner.ok && anyOwner.owner).toBe('alice');
  });

  it('drops a replayed frame (RFC 9605 §7.2) and accepts reordered ones inside the window', () => {
    const { tx, rx } = pair(16);
    const frames = Array.from({ length: 40 }, (_, i) => tx.encrypt(opus(i)));
    expect(rx.decrypt(frames[5]!, 'alice').ok).toBe(true);
    expect(rx.decrypt(frames[5]!, 'alice')).toEqual({ ok: false, reason: 'replayed', kid: 42n });
    expect(rx.decrypt(frames[3]!, 'alice').ok).toBe(true); // late but inside the window
    expect(rx.decrypt(frames[3]!, 'alice')).toEqual({ ok: false, reason: 'replayed', kid: 42n });
    expect(rx.decrypt(frames[30]!, 'alice').ok).toBe(true); // jump ahead by 25 > window
    expect(rx.decrypt(frames[5]!, 'alice')).toEqual({ ok: false, reason: 'too_old', kid: 42n });
    expect(rx.decrypt(frames[14]!, 'alice')).toEqual({ ok: false, reason: 'too_old', kid: 42n }); // 30 - 14 = 16 = window
    expect(rx.decrypt(frames[15]!, 'alice').ok).toBe(true); // 30 - 15 = 15 < window
    expect(rx.decrypt(frames[29]!, 'alice').ok).toBe(true);
    expect(rx.decrypt(frames[29]!, 'alice')).toEqual({ ok: false, reason: 'replayed', kid: 42n });
    expect(rx.stats).toMatchObject({ accepted: 5, replayed: 3, too_old: 2 });
  });

  it('starts a fresh replay window when a key is replaced, and drops frames of a removed key', () => {
    const { tx, rx } = pair();
    const w0 = tx.encrypt(opus(0));
    expect(rx.decrypt(w0, 'alice').ok).toBe(true);
    rx.addKey('alice', 42n, key(1));
    expect(rx.decrypt(w0, 'alice').ok).toBe(true);
    expect(rx.removeKey('alice', 42n)).toBe(true);
    expect(rx.decrypt(w0, 'alice')).toEqual({ ok: false, reason: 'unknown_kid', kid: 42n });
  });

  it('refuses to encrypt without a key and refuses short base keys', () => {
    expect(() => new SFrameSender().encrypt(opus(0))).toThrow(/no key/);
    expect(() => new SFrameSender().setKey(1n, Buffer.alloc(8))).toThrow(RangeError);
    expect(() => new SFrameReceiver().addKey('x', 1n, Buffer.alloc(8))).toThrow(RangeError);
    expect(() => new SFrameSender(0x0009 as CipherSuite)).toThrow(/not implemented/);
  });

  it('never throws on random input: 20 000 random frames of 0-64 bytes, each dropped with a reason', () => {
    const rx = new SFrameReceiver();
    rx.addKey('alice', 1n, key(1));
    rx.addKey('alice', 0x123456n, key(2));
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000;
    for (let i = 0; i < 20_000; i++) {
      const frame = Buffer.from(
        Array.from({ length: Math.floor(rand() * 65) }, () => Math.floor(rand() * 256)),
      );
      if (i % 3 === 0 && frame.length > 0) frame[0] = 0x10; // KID 1, CTR 0: reaches the AEAD
      const r = rx.decrypt(frame, i % 2 ? 'alice' : undefined);
      expect(r.ok).toBe(false);
    }
    const { accepted, ...dropped } = rx.stats;
    expect(accepted).toBe(0);
    expect(Object.values(dropped).reduce((a, b) => a + b, 0)).toBe(20_000);
    expect(rx.stats.auth_failed).toBeGreaterThan(1000);
  });

  it.each(Object.entries(CipherSuite))(
    'round-trips and detects tampering with %s',
    (_name, suite) => {
      const tx = new SFrameSender(suite);
      tx.setKey(9n, Buffer.alloc(32, 3));
      const rx = new SFrameReceiver(suite);
      rx.addKey('a', 9n, Buffer.alloc(32, 3));
      const wire = tx.encrypt(opus(1));
      expect(wire.length).toBe(opus(1).length + overhead(suite, 9n, 0n));
      const bad = Buffer.from(wire);
      bad[bad.length - 1]! ^= 1;
      expect(rx.decrypt(bad, 'a')).toEqual({ ok: false, reason: 'auth_failed', kid: 9n });
      const r = rx.decrypt(wire, 'a');
      expect(r.ok && r.plaintext.equals(opus(1))).toBe(true);
    },
  );
});
