/**
 * SRTP and SRTCP replay protection and ROC estimation on receive (werift
 * patch, patches/werift+0.25.2.patch; RFC 3711 §3.3.1, §3.3.2, §3.4). werift
 * kept no replay list, so a relay on the path could play any authentic packet
 * again, and it stepped its rollover counter back for any authentic packet
 * numbered near 65535 that came while the highest sequence number was below
 * 100: one such packet replayed just after a wrap left the ROC wrong and every
 * later packet of the call failing authentication. Real SRTP sessions (werift's,
 * through Parley's AEAD where it applies), both protection profiles a call can
 * negotiate.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  ProtectionProfileAeadAes128Gcm,
  ProtectionProfileAes128CmHmacSha1_80,
  RtcpRrPacket,
  RtcpReceiverInfo,
  RtpHeader,
  SrtcpSession,
  SrtpAuthenticationError,
  SrtpSession,
} from 'werift';
import { installSrtpAead } from '../../main/media/aes-gcm';

installSrtpAead();

const PROFILES = [
  ['AEAD_AES_128_GCM', ProtectionProfileAeadAes128Gcm],
  ['AES_CM_128_HMAC_SHA1_80', ProtectionProfileAes128CmHmacSha1_80],
] as const;

/** A sending and a receiving session sharing one direction's keys. */
function pair<T>(make: (config: ConstructorParameters<typeof SrtpSession>[0]) => T, profile: number): { tx: T; rx: T } {
  const a = { key: randomBytes(16), salt: randomBytes(12) };
  const b = { key: randomBytes(16), salt: randomBytes(12) };
  return {
    tx: make({ profile, keys: { localMasterKey: a.key, localMasterSalt: a.salt, remoteMasterKey: b.key, remoteMasterSalt: b.salt } }),
    rx: make({ profile, keys: { localMasterKey: b.key, localMasterSalt: b.salt, remoteMasterKey: a.key, remoteMasterSalt: a.salt } }),
  };
}

describe.each(PROFILES)('SRTP receive, %s', (_name, profile) => {
  const ssrc = 0x5eed1234;
  /** Seals packet number `n` (sequence number n mod 2^16, ROC n >> 16) the way a sender does, in order. */
  const sender = () => {
    const { tx, rx } = pair((c) => new SrtpSession(c), profile);
    const sealed = new Map<number, Buffer>();
    let next = 0;
    const sealUpTo = (n: number) => {
      for (; next <= n; next++) {
        const payload = Buffer.alloc(20, next & 255);
        sealed.set(next, tx.encrypt(payload, new RtpHeader({ payloadType: 111, sequenceNumber: next & 0xffff, timestamp: (next * 960) >>> 0, ssrc, marker: false })));
      }
    };
    const open = (n: number): number => {
      sealUpTo(n);
      return rx.decrypt(sealed.get(n)!).subarray(12)[0]!;
    };
    return { open, sealUpTo, start: (n: number) => (next = n) };
  };

  it('opens each packet once and refuses the same packet again', () => {
    const s = sender();
    expect(s.open(0)).toBe(0);
    expect(s.open(1)).toBe(1);
    expect(() => s.open(1)).toThrow(SrtpAuthenticationError);
    expect(() => s.open(0)).toThrow(/replayed/);
    expect(s.open(2)).toBe(2);
  });

  it('guesses the ROC across the 65535 → 0 wrap with packets reordered on both sides of it', () => {
    const s = sender();
    s.start(65500);
    const order = [65500, 65530, 65534, 65533, 65536 + 1, 65535, 65536, 65536 + 3, 65532, 65536 + 2, 65536 + 40];
    for (const n of order) expect(s.open(n)).toBe(n & 255);
  });

  it('a packet from before the wrap replayed just after it is refused, and the call goes on', () => {
    const s = sender();
    s.start(65500);
    for (let n = 65500; n < 65536 + 99; n++) s.open(n);
    // The highest is now 99 with ROC 1: werift stepped its ROC back to 0 for this authentic old packet.
    expect(() => s.open(65530)).toThrow(SrtpAuthenticationError);
    for (let n = 65536 + 99; n < 65536 + 140; n++) expect(s.open(n)).toBe(n & 255);
  });

  it('a late packet never received before still opens when within 128 of the highest, and not beyond', () => {
    const s = sender();
    s.sealUpTo(400);
    for (let n = 0; n <= 400; n++) if (n !== 300 && n !== 250) s.open(n);
    expect(s.open(300)).toBe(300 & 255); // 100 behind
    expect(() => s.open(250)).toThrow(/too old/); // 150 behind
    expect(s.open(401)).toBe(401 & 255);
  });
});

describe.each(PROFILES)('SRTCP receive, %s', (_name, profile) => {
  it('opens each index once and refuses one replayed', () => {
    const { tx, rx } = pair((c) => new SrtcpSession(c), profile);
    const rr = () => new RtcpRrPacket({ ssrc: 42, reports: [new RtcpReceiverInfo({ ssrc: 7, fractionLost: 0, packetsLost: 0, highestSequence: 1, jitter: 0, lsr: 0, dlsr: 0 })] }).serialize();
    const first = tx.encrypt(rr());
    const second = tx.encrypt(rr());
    expect(rx.decrypt(first).readUInt32BE(4)).toBe(42);
    expect(rx.decrypt(second).readUInt32BE(4)).toBe(42);
    expect(() => rx.decrypt(first)).toThrow(SrtpAuthenticationError);
    expect(() => rx.decrypt(second)).toThrow(/replayed/);
    expect(rx.decrypt(tx.encrypt(rr())).readUInt32BE(4)).toBe(42);
  });
});
