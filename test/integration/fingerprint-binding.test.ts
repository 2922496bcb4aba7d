/**
 * Fingerprint binding (RFC 8827 §6.5, RFC 5763 §5) on real werift peers over
 * loopback, without signaling: the certificate DTLS presents is compared with
 * the `a=fingerprint` of the SDP that (in a call) arrived sealed.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { checkFingerprint, sdpFingerprints } from '../../main/core/e2ee';
import { Peer } from '../../main/media/peer';

const peers: Peer[] = [];
/** A fingerprint of no certificate any peer here has (werift uses one certificate per process). */
const FORGED = `a=fingerprint:sha-256 ${Array(32).fill('66').join(':')}`;
afterEach(async () => {
  await Promise.all(peers.splice(0).map((p) => p.close()));
});

function peer(): Peer {
  const p = new Peer({ iceServers: [], iceTransportPolicy: 'all', loopbackOnly: true, ptimeMs: 20 });
  p.bindSrtpKeys(undefined); // no sealed signaling here: DTLS-SRTP keys alone
  peers.push(p);
  return p;
}

/** Offer/answer and candidates straight between two peers; `rewriteOffer` plays a signaling MITM. */
async function connectPair(rewriteOffer: (sdp: string) => string = (s) => s) {
  const a = peer();
  const b = peer();
  a.onCandidate((c) => c && void b.addCandidate(c));
  b.onCandidate((c) => c && void a.addCandidate(c));
  const offer = await a.createOffer();
  const answer = await b.acceptOffer(rewriteOffer(offer.sdp));
  await a.acceptAnswer(answer.sdp);
  return { a, b, offer: offer.sdp, answer: answer.sdp };
}

describe('DTLS fingerprint binding', () => {
  it('the certificate each side sees matches the fingerprint of the SDP it was given, and no other', async () => {
    const { a, b, offer, answer } = await connectPair();
    await Promise.all([a.connected(10_000), b.connected(10_000)]);
    expect(sdpFingerprints(answer)[0]?.algorithm).toBe('sha-256');
    expect(checkFingerprint(a.remoteCertificate(), answer)).toBe('match');
    expect(checkFingerprint(b.remoteCertificate(), offer)).toBe('match');
    // Any other fingerprint (what a server in the middle would put in) does not match.
    expect(checkFingerprint(a.remoteCertificate(), answer.replace(/^a=fingerprint:.*$/m, FORGED))).toBe('mismatch');
  });

  it('onceAuthenticated: each side is told once, when DTLS is up with the certificate its SDP names (the media thread starts sending then)', async () => {
    const { a, b } = await connectPair();
    const told = { a: 0, b: 0 };
    a.onceAuthenticated(() => told.a++);
    b.onceAuthenticated(() => told.b++);
    await Promise.all([a.connected(10_000), b.connected(10_000)]);
    await new Promise((r) => setTimeout(r, 50));
    expect(told).toEqual({ a: 1, b: 1 });
    // Asked again once connected: at once, and only that listener.
    let late = 0;
    a.onceAuthenticated(() => late++);
    expect(late).toBe(1);
    expect(told.a).toBe(1);
  });

  it('a fingerprint rewritten in the SDP makes DTLS fail, and the check names it a mismatch', async () => {
    let forged = '';
    const { b } = await connectPair((sdp) => (forged = sdp.replace(/^a=fingerprint:.*$/m, FORGED)));
    let authenticated = 0;
    b.onceAuthenticated(() => authenticated++);
    await expect(b.connected(10_000)).rejects.toThrow();
    // The answerer never starts sending. (The offerer saw the answerer's real certificate, which its
    // own, untouched SDP names: from where it stands the peer is authentic, and its packets reach only that peer.)
    await new Promise((r) => setTimeout(r, 50));
    expect(authenticated).toBe(0);
    // The answerer got A's real certificate but was told to expect the forged fingerprint:
    // the engine reports this as `fingerprint_mismatch`.
    expect(b.remoteCertificate()).toBeDefined();
    expect(checkFingerprint(b.remoteCertificate(), forged)).toBe('mismatch');
  });
});
