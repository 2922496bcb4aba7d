/**
 * The candidates a Parley peer seals are not sent twice (main/core/call-engine.ts
 * `dropCandidatesInSdp`): werift writes the candidates it has gathered, and
 * `a=end-of-candidates` once gathering is complete, into the description it
 * returns (RFC 8839 §5.1, §5.2), and applies them from the far side's. On real
 * werift peers: what trickles is all in the SDP, and the far side connects with
 * nothing but the SDP.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { dropCandidatesInSdp } from '../../main/core/call-engine';
import { Peer, type CandidateInit } from '../../main/media/peer';

const peers: Peer[] = [];
afterEach(async () => {
  await Promise.all(peers.splice(0).map((p) => p.close()));
});

function peer(): { peer: Peer; trickled: (CandidateInit | null)[] } {
  const p = new Peer({ iceServers: [], iceTransportPolicy: 'all', loopbackOnly: true, ptimeMs: 20 });
  p.bindSrtpKeys(undefined);
  peers.push(p);
  const trickled: (CandidateInit | null)[] = [];
  p.onCandidate((c) => trickled.push(c ?? null));
  return { peer: p, trickled };
}

describe('candidates already in the sealed SDP', () => {
  it('everything werift trickles by the time it returns the offer and the answer is in them, end of candidates included', async () => {
    const a = peer();
    const b = peer();
    const offer = await a.peer.createOffer();
    const answer = await b.peer.acceptOffer(offer.sdp);
    for (const [side, sdp] of [[a, offer.sdp], [b, answer.sdp]] as const) {
      expect(side.trickled.filter((c) => c !== null).length).toBeGreaterThan(0);
      expect(side.trickled.at(-1)).toBeNull();
      const call = { localCandidates: [...side.trickled] };
      dropCandidatesInSdp(call, sdp);
      expect(call.localCandidates).toEqual([]);
    }
  });

  it('keeps, in order, what the SDP does not hold (a candidate gathered later), and the end of candidates when the SDP lacks it', () => {
    const sdp = 'v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 2116026367 127.0.0.1 40000 typ host generation 0\r\n';
    const host = { candidate: 'candidate:1 1 udp 2116026367 127.0.0.1 40000 typ host generation 0', sdpMid: '0', sdpMLineIndex: 0 };
    const relay = { candidate: 'candidate:2 1 udp 41885439 203.0.113.7 50000 typ relay raddr 0.0.0.0 rport 0 generation 0', sdpMid: '0', sdpMLineIndex: 0 };
    const call = { localCandidates: [host, relay, null] as (CandidateInit | null)[] };
    dropCandidatesInSdp(call, sdp);
    expect(call.localCandidates).toEqual([relay, null]);
  });

  it('the far side connects from the SDP alone: no candidate trickled either way', async () => {
    const a = peer();
    const b = peer();
    const offer = await a.peer.createOffer();
    const answer = await b.peer.acceptOffer(offer.sdp);
    await a.peer.acceptAnswer(answer.sdp);
    await Promise.all([a.peer.connected(10_000), b.peer.connected(10_000)]);
  });
});
