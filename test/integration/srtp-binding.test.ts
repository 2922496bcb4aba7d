/**
 * SRTP keys bound to the sealed channel, on real werift transports over
 * loopback (ICE, DTLS-SRTP): two peers that share the sealed secret hear each
 * other; a peer that completed the very same DTLS handshake — it holds every
 * DTLS-SRTP key, as a relay that broke or joined DTLS would — but lacks the
 * sealed secret decrypts nothing.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Peer } from '../../main/media/peer';
import { OpusPacketizer } from '../../main/media/rtp-opus';
import type { SrtpKeyBinding } from '../../main/media/srtp-binding';

const newPeer = () => new Peer({ iceServers: [], iceTransportPolicy: 'all', loopbackOnly: true, ptimeMs: 20 });
const binding = (secret: Buffer): SrtpKeyBinding => ({ secret, context: Buffer.from('parley-srtp-binding-v1\ntest-call\n') });

/** Connects a (offerer) and b over loopback with trickled candidates. */
async function connect(a: Peer, b: Peer): Promise<void> {
  a.onCandidate((c) => c && void b.addCandidate(c));
  b.onCandidate((c) => c && void a.addCandidate(c));
  const offer = await a.createOffer();
  const answer = await b.acceptOffer(offer.sdp);
  await a.acceptAnswer(answer.sdp);
  await Promise.all([a.connected(10_000), b.connected(10_000)]);
}

/** Packets b receives while a sends `n` Opus-sized packets, one every 20 ms. */
async function received(a: Peer, b: Peer, n = 25): Promise<number> {
  let got = 0;
  b.onRemoteRtp(() => got++);
  const packetizer = new OpusPacketizer();
  for (let i = 0; i < n; i++) {
    a.track.writeRtp(packetizer.packetize(randomBytes(60), 960));
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 200));
  return got;
}

describe('SRTP keys bound to the sealed secret, on werift transports', () => {
  it('peers with the same sealed secret hear each other, and say the keys are bound', async () => {
    const secret = randomBytes(32);
    const [a, b] = [newPeer(), newPeer()];
    try {
      a.bindSrtpKeys(binding(secret));
      b.bindSrtpKeys(binding(secret));
      await connect(a, b);
      expect(await received(a, b)).toBeGreaterThan(20);
      expect(await received(b, a)).toBeGreaterThan(20);
      expect(a.srtpKeysBound && b.srtpKeysBound).toBe(true);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('a peer holding every DTLS-SRTP key of the handshake but not the sealed secret decrypts nothing', async () => {
    const [a, b] = [newPeer(), newPeer()];
    try {
      a.bindSrtpKeys(binding(randomBytes(32)));
      b.bindSrtpKeys(undefined); // DTLS keys alone: what breaking or joining the DTLS handshake gives
      await connect(a, b);
      expect(b.remoteCertificate()).toBeDefined(); // the DTLS handshake itself succeeded
      expect(await received(a, b)).toBe(0);
      expect(await received(b, a)).toBe(0);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('fails closed: a transport whose keys are needed before the sealed answer bound them never carries media', async () => {
    const [a, b] = [newPeer(), newPeer()];
    try {
      b.bindSrtpKeys(undefined);
      // a never says whether it has a binding
      await expect(connect(a, b)).rejects.toThrow();
      expect(await received(b, a, 5)).toBe(0);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
