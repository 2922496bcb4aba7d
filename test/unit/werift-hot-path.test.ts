/**
 * werift's per-packet code as patched for the media thread's hot path
 * (patches/werift+0.25.2.patch, docs/BENCHMARKS.md "werift's per-packet
 * work"): RTP header fields read with bit arithmetic instead of strings of
 * binary digits, 32-bit sums without BigInts, RFC 2198 headers read and
 * written on bytes, the RED unwrapper's seen set, the RFC 7714 IV written in
 * place, and the sender report's NTP time made only when a report is sent.
 * Each is checked against the standard it implements, not against werift's
 * old code: hand-built packets (RFC 3550 §5.1, RFC 2198 §3) and an SRTP packet
 * opened by Node's OpenSSL with the IV RFC 7714 §8.1 defines. Also the DTLS
 * handshake's X25519 (RFC 7748), moved from tweetnacl's JavaScript to OpenSSL:
 * the RFC's §6.1 vectors through the functions the handshake calls.
 */
import { createDecipheriv, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import {
  getBit,
  ntpTimeToEpochMs,
  ProtectionProfileAeadAes128Gcm,
  RtcpSrPacket,
  Red,
  RedHandler,
  RtpHeader,
  RtpPacket,
  SrtpSession,
  uint32Add,
} from 'werift';
import * as werift from 'werift';
import { installSrtpAead, WERIFT_SRTP_AEAD_HOOK } from '../../main/media/aes-gcm';
import { Peer, type PeerOptions } from '../../main/media/peer';

/** Two `Peer`s on loopback (20 ms packets, no sealed secret); `connect` runs the offer/answer and waits for DTLS. */
function newPair(): { a: Peer; b: Peer } {
  const options: PeerOptions = { iceServers: [], iceTransportPolicy: 'all', loopbackOnly: true, ptimeMs: 20 };
  return { a: new Peer(options), b: new Peer(options) };
}

async function connect(a: Peer, b: Peer): Promise<void> {
  a.bindSrtpKeys(undefined);
  b.bindSrtpKeys(undefined);
  a.onCandidate((c) => void (c && b.addCandidate(c)));
  b.onCandidate((c) => void (c && a.addCandidate(c)));
  const offer = await a.createOffer();
  const answer = await b.acceptOffer(offer.sdp);
  await a.acceptAnswer(answer.sdp);
  await Promise.all([a.connected(10_000), b.connected(10_000)]);
}

describe('RTP header fields (RFC 3550 §5.1)', () => {
  it('getBit reads any run of bits of a byte, most significant first', () => {
    for (let byte = 0; byte < 256; byte++) {
      for (let start = 0; start < 8; start++) {
        for (let length = 1; start + length <= 8; length++) {
          const expected = Math.floor(byte / 2 ** (8 - start - length)) % 2 ** length;
          expect(getBit(byte, start, length)).toBe(expected);
        }
      }
    }
  });

  it('parses a hand-built packet with padding, CSRCs, an extension and the marker', () => {
    const packet = Buffer.from([
      0b1011_0010, // V=2, P=1, X=1, CC=2
      0b1000_0000 | 111, // M=1, PT=111
      0xab, 0xcd, // sequence number
      0x01, 0x02, 0x03, 0x04, // timestamp
      0xde, 0xad, 0xbe, 0xef, // SSRC
      0x11, 0x11, 0x11, 0x11, // CSRC 1
      0x22, 0x22, 0x22, 0x22, // CSRC 2
      0xbe, 0xde, 0x00, 0x01, // one-byte extensions (RFC 8285), one word
      0x10, 0x7f, 0x00, 0x00, // id 1, length 1: 0x7f, padding
      0xaa, 0xbb, // payload
      0x00, 0x02, // RTP padding: 2 bytes
    ]);
    const { header, payload } = RtpPacket.deSerialize(packet);
    expect(header).toMatchObject({
      version: 2,
      padding: true,
      extension: true,
      marker: true,
      payloadType: 111,
      sequenceNumber: 0xabcd,
      timestamp: 0x01020304,
      ssrc: 0xdeadbeef,
      csrc: [0x11111111, 0x22222222],
      payloadOffset: 28,
      paddingSize: 2,
    });
    expect(header.extensions).toEqual([{ id: 1, payload: Buffer.from([0x7f]) }]);
    expect(payload.equals(Buffer.from([0xaa, 0xbb]))).toBe(true);
  });

  it('reads a plain 12-byte header, and a packet too short for its CSRC count is an error', () => {
    const { header, payload } = RtpPacket.deSerialize(Buffer.from([0x80, 0x6f, 0, 1, 0, 0, 3, 0xc0, 0, 0, 0, 5, 9, 9]));
    expect(header).toMatchObject({ padding: false, extension: false, marker: false, payloadType: 111, sequenceNumber: 1, timestamp: 960, ssrc: 5, csrc: [] });
    expect([...payload]).toEqual([9, 9]);
    expect(() => RtpHeader.deSerialize(Buffer.from([0x8f, 0x6f, 0, 1, 0, 0, 3, 0xc0, 0, 0, 0, 5, 1, 2]))).toThrow(RangeError);
  });

  it('uint32Add wraps modulo 2^32 both ways', () => {
    expect(uint32Add(0xffffffff, 1)).toBe(0);
    expect(uint32Add(0xfffffc40, 960)).toBe(0);
    expect(uint32Add(0, -960)).toBe(0xfffffc40);
    expect(uint32Add(123456789, 987654321)).toBe(1111111110);
    expect(uint32Add(5, -(2 ** 32) + 1)).toBe(6);
  });
});

describe('RFC 2198 redundant audio', () => {
  // RFC 2198 §3: F=1, block PT 111, timestamp offset 960 (14 bits), block length 3 (10 bits); F=0, PT 111.
  const wire = Buffer.from([0x80 | 111, 960 >> 6, ((960 & 63) << 2) | (3 >> 8), 3, 111, 1, 2, 3, 4, 5]);

  it('writes and reads the block headers byte for byte', () => {
    const red = new Red();
    red.blocks.push({ block: Buffer.from([1, 2, 3]), blockPT: 111, timestampOffset: 960 });
    red.blocks.push({ block: Buffer.from([4, 5]), blockPT: 111 });
    expect(red.serialize().equals(wire)).toBe(true);
    const back = Red.deSerialize(wire);
    expect(back.header.fields).toEqual([
      { fBit: 1, blockPT: 111, timestampOffset: 960, blockLength: 3 },
      { fBit: 0, blockPT: 111 },
    ]);
    expect(back.blocks.map((b) => [...b.block])).toEqual([[1, 2, 3], [4, 5]]);
  });

  it('the largest offset and length fit their 14 and 10 bits', () => {
    const red = new Red();
    red.blocks.push({ block: Buffer.alloc(1023, 7), blockPT: 127, timestampOffset: 16383 });
    red.blocks.push({ block: Buffer.from([1]), blockPT: 0 });
    const back = Red.deSerialize(red.serialize());
    expect(back.header.fields[0]).toEqual({ fBit: 1, blockPT: 127, timestampOffset: 16383, blockLength: 1023 });
    expect(back.blocks[1]!.block.equals(Buffer.from([1]))).toBe(true);
  });

  it('a header cut short is an error, not a block of garbage', () => {
    expect(() => Red.deSerialize(Buffer.from([0x80 | 111, 0x0f]))).toThrow(/truncated/);
    expect(() => Red.deSerialize(Buffer.alloc(0))).toThrow(/truncated/);
  });

  it('the unwrapper passes each sequence number once and forgets the oldest beyond its 150', () => {
    const handler = new RedHandler();
    const push = (seq: number, blocks: number) => {
      const red = new Red();
      for (let k = blocks - 1; k >= 1; k--) red.blocks.push({ block: Buffer.from([(seq - k) & 255]), blockPT: 111, timestampOffset: 960 * k });
      red.blocks.push({ block: Buffer.from([seq & 255]), blockPT: 111 });
      const base = new RtpPacket(new RtpHeader({ sequenceNumber: seq & 0xffff, timestamp: seq * 960, ssrc: 7, payloadType: 63 }), Buffer.alloc(0));
      return handler.push(red, base).map((p) => [p.header.sequenceNumber, p.header.timestamp, p.payload[0]]);
    };
    expect(push(10, 3)).toEqual([[8, 7680, 8], [9, 8640, 9], [10, 9600, 10]]);
    expect(push(11, 3)).toEqual([[11, 10560, 11]]); // 9 and 10 seen
    expect(push(13, 3)).toEqual([[12, 11520, 12], [13, 12480, 13]]); // 12 only from redundancy
    expect(push(65536 + 1, 3)).toEqual([[65535, (65535 * 960) >>> 0, 255], [0, (65536 * 960) >>> 0, 0], [1, (65537 * 960) >>> 0, 1]]);
    for (let seq = 100; seq < 260; seq++) push(seq, 1);
    expect(push(8, 1)).toEqual([[8, 7680, 8]]); // forgotten after 151 newer ones
    expect(push(259, 1)).toEqual([]);
  });
});

describe('SRTP AEAD_AES_128_GCM packets as RFC 7714 §8.1 defines them', () => {
  const hooks = globalThis as Record<symbol, unknown>;
  const saved = hooks[WERIFT_SRTP_AEAD_HOOK];
  afterEach(() => {
    hooks[WERIFT_SRTP_AEAD_HOOK] = saved;
  });

  it('OpenSSL opens what werift seals with IV = (00 00 ‖ SSRC ‖ ROC ‖ SEQ) ⊕ salt and the header as AAD, across a rollover', () => {
    for (const withAead of [true, false]) {
      if (withAead) installSrtpAead();
      else delete hooks[WERIFT_SRTP_AEAD_HOOK];
      const keys = { localMasterKey: randomBytes(16), localMasterSalt: randomBytes(12), remoteMasterKey: randomBytes(16), remoteMasterSalt: randomBytes(12) };
      const session = new SrtpSession({ profile: ProtectionProfileAeadAes128Gcm, keys });
      const cipher = (session as unknown as { localContext: { cipher: { srtpSessionKey: Buffer; srtpSessionSalt: Buffer } } }).localContext.cipher;
      const ssrc = 0x89abcdef;
      let roc = 0;
      for (let n = 65533; n < 65533 + 6; n++) {
        const seq = n & 0xffff;
        if (seq === 0) roc++;
        const payload = randomBytes(37);
        const header = new RtpHeader({ payloadType: 111, sequenceNumber: seq, timestamp: n * 960, ssrc, marker: false });
        const sealed = session.encrypt(payload, header);
        const iv = Buffer.alloc(12);
        iv.writeUInt32BE(ssrc, 2);
        iv.writeUInt32BE(roc, 6);
        iv.writeUInt16BE(seq, 10);
        for (let i = 0; i < 12; i++) iv[i]! ^= cipher.srtpSessionSalt[i]!;
        const d = createDecipheriv('aes-128-gcm', cipher.srtpSessionKey, iv);
        d.setAAD(sealed.subarray(0, 12));
        d.setAuthTag(sealed.subarray(sealed.length - 16));
        const opened = Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
        expect(opened.equals(payload)).toBe(true);
      }
    }
  });
});

describe('the DTLS key exchange (X25519, RFC 7748) on OpenSSL', () => {
  // Exported by patches/werift+0.25.2.patch under Parley names: the functions werift's handshake calls.
  const dtls = werift as unknown as {
    PARLEY_DTLS_X25519(privateKey: Buffer, publicKey: Buffer): Buffer;
    PARLEY_DTLS_GENERATE_KEY_PAIR(curve: number): { curve: number; privateKey: Buffer; publicKey: Buffer };
  };
  const X25519_CURVE = 29; // RFC 8422 §5.1.1 NamedCurve x25519
  const hex = (h: string) => Buffer.from(h, 'hex');

  it('gives RFC 7748 §6.1 shared secret from both sides', () => {
    const alicePrivate = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
    const alicePublic = hex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
    const bobPrivate = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
    const bobPublic = hex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
    const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
    expect(dtls.PARLEY_DTLS_X25519(alicePrivate, bobPublic).toString('hex')).toBe(shared);
    expect(dtls.PARLEY_DTLS_X25519(bobPrivate, alicePublic).toString('hex')).toBe(shared);
  });

  it('makes fresh 32-byte key pairs whose public key is X25519(k, 9), and two of them agree', () => {
    const base = Buffer.alloc(32);
    base[0] = 9; // the u-coordinate of the base point (RFC 7748 §4.1), little-endian
    const a = dtls.PARLEY_DTLS_GENERATE_KEY_PAIR(X25519_CURVE);
    const b = dtls.PARLEY_DTLS_GENERATE_KEY_PAIR(X25519_CURVE);
    expect(a.curve).toBe(X25519_CURVE);
    expect([a.privateKey.length, a.publicKey.length]).toEqual([32, 32]);
    expect(a.privateKey.equals(b.privateKey)).toBe(false);
    expect(dtls.PARLEY_DTLS_X25519(a.privateKey, base).equals(a.publicKey)).toBe(true);
    expect(dtls.PARLEY_DTLS_X25519(a.privateKey, b.publicKey).equals(dtls.PARLEY_DTLS_X25519(b.privateKey, a.publicKey))).toBe(true);
  });

  it('refuses a key that is not 32 bytes (a malformed ClientKeyExchange) with an error, not a wrong secret', () => {
    const { privateKey } = dtls.PARLEY_DTLS_GENERATE_KEY_PAIR(X25519_CURVE);
    expect(() => dtls.PARLEY_DTLS_X25519(privateKey, Buffer.alloc(31))).toThrow(/32 bytes/);
  });
});

describe('the send path from Peer.sendRtp to the network', () => {
  it('delivers each packet once and in order with the sender\'s SSRC, its own header extensions sent sorted by id (RFC 8285)', async () => {
    const { a, b } = newPair();
    try {
      await connect(a, b);
      a.setRedundancy(0);

      const got: { seq: number; ssrc: number; payload: string }[] = [];
      b.onRemoteRtp((rtp) => got.push({ seq: rtp.header.sequenceNumber, ssrc: rtp.header.ssrc, payload: rtp.payload.toString('hex') }));
      // The header each packet is sealed with (the receiver's RED unwrapper rebuilds headers, so it is read here).
      const dtls = a.transceiver.dtlsTransport!;
      const sealAndSend = dtls.sendRtp.bind(dtls);
      const wireIds: number[][] = [];
      dtls.sendRtp = (payload, header) => (wireIds.push(header.extensions.map((e) => e.id)), sealAndSend(payload, header));
      const sent: string[] = [];
      for (let i = 0; i < 20; i++) {
        const payload = randomBytes(40 + i);
        sent.push(payload.toString('hex'));
        const header = new RtpHeader({ payloadType: 111, sequenceNumber: 500 + i, timestamp: 960 * i, marker: i === 0 });
        // Out of order on purpose: what goes on the wire is sorted by id.
        header.extensions = [{ id: 3, payload: Buffer.from([i]) }, { id: 1, payload: Buffer.from([0x80 | i]) }];
        a.sendRtp(new RtpPacket(header, payload));
        await new Promise((r) => setTimeout(r, 5));
      }
      await expect.poll(() => got.length, { timeout: 5000 }).toBe(20);
      expect(got.map((g) => g.payload)).toEqual(sent);
      const seqs = got.map((g) => g.seq);
      for (let i = 1; i < seqs.length; i++) expect((seqs[i]! - seqs[i - 1]! + 65536) % 65536).toBe(1);
      expect(new Set(got.map((g) => g.ssrc))).toEqual(new Set([a.transceiver.sender.ssrc]));
      expect(wireIds).toEqual(Array.from({ length: 20 }, () => [1, 3]));
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe("the sender report's NTP time (RFC 3550 §6.4.1)", () => {
  it("is the wall-clock time the packet with the report's RTP timestamp was sent, in a real call between two peers", async () => {
    const { a, b } = newPair();
    try {
      await connect(a, b);

      const reports: { ntpMs: number; rtpTimestamp: number }[] = [];
      b.transceiver.dtlsTransport!.onRtcp.subscribe((packet) => {
        if (packet instanceof RtcpSrPacket) {
          reports.push({ ntpMs: ntpTimeToEpochMs(packet.senderInfo.ntpTimestamp), rtpTimestamp: packet.senderInfo.rtpTimestamp });
        }
      });
      const sentAt = new Map<number, number>();
      for (let i = 0; i < 150 && reports.length < 2; i++) {
        const timestamp = (1_000_000 + i * 960) >>> 0;
        sentAt.set(timestamp, Date.now());
        a.sendRtp(new RtpPacket(new RtpHeader({ payloadType: 111, sequenceNumber: i, timestamp, marker: false }), randomBytes(60)));
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(reports.length).toBeGreaterThanOrEqual(1);
      for (const report of reports) {
        const sent = sentAt.get(report.rtpTimestamp);
        expect(sent).toBeDefined();
        expect(Math.abs(report.ntpMs - sent!)).toBeLessThan(15);
      }
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
