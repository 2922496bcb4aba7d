/**
 * The patched werift's handshake checks (ServerKeyExchange and
 * CertificateVerify signatures, Finished; patches/werift+0.25.2.patch) against
 * an independent DTLS implementation: Chromium's (BoringSSL), in both DTLS
 * roles. A check that computed the signed bytes differently from the standard
 * would refuse every browser here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { Peer, type CandidateInit } from '../../main/media/peer';
import { launchChromium, type RunningChromium } from '../harness/chromium';

let chromium: RunningChromium;
let page: Page;

beforeAll(async () => {
  chromium = await launchChromium();
  page = await chromium.browser.newPage();
  await page.setContent('<title>dtls interop</title>');
});

afterAll(async () => {
  await chromium?.close();
});

/** The slice of the browser's WebRTC API the page functions use (this file is type-checked against Node's types, not the DOM's). */
interface BrowserPc {
  connectionState: string;
  iceGatheringState: string;
  localDescription: { sdp: string } | null;
  setRemoteDescription(d: { type: 'offer' | 'answer'; sdp: string }): Promise<void>;
  setLocalDescription(d?: unknown): Promise<void>;
  createOffer(): Promise<unknown>;
  createAnswer(): Promise<unknown>;
  addIceCandidate(c: unknown): Promise<void>;
  addTransceiver(kind: 'audio', init: { direction: 'sendrecv' }): unknown;
  addEventListener(type: string, listener: () => void): void;
}
type BrowserGlobal = { RTCPeerConnection: new () => BrowserPc; pc: BrowserPc };

const newPeer = () => {
  const p = new Peer({ iceServers: [], iceTransportPolicy: 'all', loopbackOnly: true, ptimeMs: 20 });
  p.bindSrtpKeys(undefined); // a browser sends no sealed share: DTLS-SRTP keys alone
  return p;
};

/** Local candidates of a werift peer until the end of gathering. */
function gathered(peer: Peer): Promise<CandidateInit[]> {
  return new Promise((resolve) => {
    const out: CandidateInit[] = [];
    peer.onCandidate((c) => (c ? out.push(c) : resolve(out)));
  });
}

/** werift's DTLS role on the selected transport, and the browser's connection state once settled. */
async function outcome(peer: Peer): Promise<{ role: string | undefined; browser: string }> {
  await peer.connected(15_000);
  const browser = await page.evaluate(async () => {
    const pc = (globalThis as unknown as BrowserGlobal).pc;
    for (let i = 0; i < 100 && pc.connectionState !== 'connected' && pc.connectionState !== 'failed'; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    return pc.connectionState;
  });
  return { role: peer.transceiver.dtlsTransport?.role, browser };
}

describe('DTLS handshake checks against Chromium', () => {
  it('werift as DTLS server verifies Chromium’s CertificateVerify and Finished (werift offers, the browser answers active)', async () => {
    const peer = newPeer();
    try {
      const candidates = gathered(peer);
      const offer = await peer.createOffer();
      const cands = await candidates;
      const answer = await page.evaluate(
        async ({ sdp, cands }) => {
          const pc = new (globalThis as unknown as BrowserGlobal).RTCPeerConnection();
          (globalThis as unknown as BrowserGlobal).pc = pc;
          await pc.setRemoteDescription({ type: 'offer', sdp });
          for (const c of cands) await pc.addIceCandidate(c);
          await pc.setLocalDescription(await pc.createAnswer());
          await new Promise<void>((r) => {
            if (pc.iceGatheringState === 'complete') r();
            pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && r());
          });
          return pc.localDescription!.sdp;
        },
        { sdp: offer.sdp, cands },
      );
      expect(answer).toMatch(/a=setup:active/);
      await peer.acceptAnswer(answer);
      const r = await outcome(peer);
      expect(r.role).toBe('server');
      expect(r.browser).toBe('connected');
      expect(peer.dtlsAuthFailure()).toBeUndefined();
    } finally {
      await peer.close();
    }
  });

  it('werift as DTLS client verifies Chromium’s ServerKeyExchange and Finished (the browser offers, werift answers active)', async () => {
    const peer = newPeer();
    try {
      const offer = await page.evaluate(async () => {
        const pc = new (globalThis as unknown as BrowserGlobal).RTCPeerConnection();
        (globalThis as unknown as BrowserGlobal).pc = pc;
        pc.addTransceiver('audio', { direction: 'sendrecv' });
        await pc.setLocalDescription(await pc.createOffer());
        await new Promise<void>((r) => {
          if (pc.iceGatheringState === 'complete') r();
          pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && r());
        });
        return pc.localDescription!.sdp;
      });
      const candidates = gathered(peer);
      const answer = await peer.acceptOffer(offer);
      const cands = await candidates;
      await page.evaluate(
        async ({ sdp, cands }) => {
          const pc = (globalThis as unknown as BrowserGlobal).pc;
          await pc.setRemoteDescription({ type: 'answer', sdp });
          for (const c of cands) await pc.addIceCandidate(c);
        },
        { sdp: answer.sdp, cands },
      );
      const r = await outcome(peer);
      expect(r.role).toBe('client');
      expect(r.browser).toBe('connected');
    } finally {
      await peer.close();
    }
  });
});
