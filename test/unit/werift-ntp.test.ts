/**
 * werift's NTP timestamps (werift patch, patches/werift+0.25.2.patch): the
 * 64-bit NTP format of RTCP sender reports (RFC 3550 §4, §6.4.1) holds the
 * seconds since 1900 in its high 32 bits and the binary fraction of a second
 * in its low 32. werift wrote the decimal digits of the fraction there as an
 * integer (".5234" → 5234, about a microsecond) and read them back as
 * milliseconds, so what a standard peer read from our sender reports (its
 * remote-outbound-rtp remoteTimestamp, lip sync) was off by up to a second,
 * and a standard peer's reports read wrong here.
 */
import { describe, expect, it } from 'vitest';
import { compactNtp, ntpTime, ntpTime2Sec, ntpTimeToEpochMs, RtcpSenderInfo, RtcpSrPacket } from 'werift';

/** 1970-01-01T00:00:00Z in NTP seconds (RFC 868: 2 208 988 800). */
const UNIX_EPOCH_NTP = 0x83aa7e80n;

describe("werift's NTP timestamps", () => {
  it.each([
    ['83aa7e80.00000000', 0, UNIX_EPOCH_NTP << 32n, 2208988800],
    ['83aa7e80.80000000', 500, (UNIX_EPOCH_NTP << 32n) | 0x80000000n, 2208988800.5],
    ['83aa7e80.40000000', 250, (UNIX_EPOCH_NTP << 32n) | 0x40000000n, 2208988800.25],
    ['83aa7e81.00418937', 1001, ((UNIX_EPOCH_NTP + 1n) << 32n) | 0x00418937n, 2208988801.001],
  ])('%s is %s ms after the Unix epoch', (_label, epochMs, ntp, seconds) => {
    expect(ntpTimeToEpochMs(ntp)).toBeCloseTo(epochMs, 3);
    expect(ntpTime2Sec(ntp)).toBeCloseTo(seconds, 6);
  });

  it('ntpTime() is now, with the fraction of the second in binary', () => {
    for (let i = 0; i < 20; i++) {
      const before = Date.now();
      const ntp = ntpTime();
      const after = Date.now();
      const ms = ntpTimeToEpochMs(ntp);
      expect(ms).toBeGreaterThanOrEqual(before - 2);
      expect(ms).toBeLessThanOrEqual(after + 2);
      // The low 32 bits alone give the milliseconds within the second.
      const withinSecond = (Number(ntp & 0xffffffffn) / 2 ** 32) * 1000;
      expect(Math.abs(withinSecond - (((ms % 1000) + 1000) % 1000))).toBeLessThan(0.01);
    }
  });

  it('a sender report carries it through serialisation, and its compact form (LSR) is the middle 32 bits', () => {
    const ntp = ntpTime();
    const sr = new RtcpSrPacket({
      ssrc: 1234,
      senderInfo: new RtcpSenderInfo({ ntpTimestamp: ntp, rtpTimestamp: 960, packetCount: 10, octetCount: 1000 }),
    });
    const back = RtcpSrPacket.deSerialize(sr.serialize().subarray(4), 0);
    expect(back.senderInfo.ntpTimestamp).toBe(ntp);
    expect(Math.abs(ntpTimeToEpochMs(back.senderInfo.ntpTimestamp) - Date.now())).toBeLessThan(50);
    expect(compactNtp(ntp)).toBe(Number((ntp >> 16n) & 0xffffffffn));
  });
});
