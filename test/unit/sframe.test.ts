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

const headerVectors = JSON.parse(readFileSync(join(__dirname, '../fixtures/sframe-rfc9605-headers.json'), 'utf8')) as {
  vectors: [string, string, string][];
};

describe('SFrame header (RFC 9605 §4.3, Appendix C.1 vectors)', () => {
  it('encodes every vector KID/CTR pair to the RFC bytes', () => {
    expect(headerVectors.vectors.length).toBe(107);
    for (const [kid, ctr, header] of headerVectors.vectors) {
      expect(encodeHeader(big(kid), big(ctr)).toString('hex'), `kid ${kid} ctr ${ctr}`).toBe(header);
    }
  });

  it('decodes every vector header to its KID, CTR and length, also with a payload after it', () => {
    for (const [kid, ctr, header] of headerVectors.vectors) {
      const bytes = hex(header);
      expect(decodeHeader(bytes)).toEqual({ kid: big(kid), ctr: big(ctr), length: bytes.length });
      expect(decodeHeader(Buffer.concat([bytes, hex('deadbeef')]))).toEqual({ kid: big(kid), ctr: big(ctr), length: bytes.length });
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

/** RFC 9605 Appendix C.3, verbatim (cipher suites 0x0004 and 0x0005; 0x0001–0x0003 are the AES-CTR-HMAC suites, not implemented). */
const C3 = [
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
    expect(sframeEncrypt(v.suite, deriveKeySalt(v.suite, kid, baseKey), kid, ctr, pt, metadata).toString('hex')).toBe(v.ct);
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
      expect(wire.length).toBe(opus(i).length + overhead(CipherSuite.AES_128_GCM_SHA256_128, 42n, BigInt(i)));
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
    expect(() => new SFrameSender(0x0001 as CipherSuite)).toThrow(/not implemented/);
  });

  it('never throws on random input: 20 000 random frames of 0-64 bytes, each dropped with a reason', () => {
    const rx = new SFrameReceiver();
    rx.addKey('alice', 1n, key(1));
    rx.addKey('alice', 0x123456n, key(2));
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000;
    for (let i = 0; i < 20_000; i++) {
      const frame = Buffer.from(Array.from({ length: Math.floor(rand() * 65) }, () => Math.floor(rand() * 256)));
      if (i % 3 === 0 && frame.length > 0) frame[0] = 0x10; // KID 1, CTR 0: reaches the AEAD
      const r = rx.decrypt(frame, i % 2 ? 'alice' : undefined);
      expect(r.ok).toBe(false);
    }
    const { accepted, ...dropped } = rx.stats;
    expect(accepted).toBe(0);
    expect(Object.values(dropped).reduce((a, b) => a + b, 0)).toBe(20_000);
    expect(rx.stats.auth_failed).toBeGreaterThan(1000);
  });

  it('works with AES_256_GCM_SHA512_128 (0x0005) too', () => {
    const tx = new SFrameSender(CipherSuite.AES_256_GCM_SHA512_128);
    tx.setKey(9n, Buffer.alloc(32, 3));
    const rx = new SFrameReceiver(CipherSuite.AES_256_GCM_SHA512_128);
    rx.addKey('a', 9n, Buffer.alloc(32, 3));
    const r = rx.decrypt(tx.encrypt(opus(1)), 'a');
    expect(r.ok && r.plaintext.equals(opus(1))).toBe(true);
  });
});
