/**
 * A transport asks only the STUN and TURN servers it was given (werift patch,
 * patches/werift+0.25.2.patch): werift's ICE agent asked stun.l.google.com:19302
 * whenever no STUN server was configured, so every call without one told Google
 * the user's address, and gathering waited for its answer. Real werift peers;
 * what they try is read from werift's own ICE trace (the `debug` channel).
 */
import { createRequire } from 'node:module';
import { format } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { Peer } from '../../main/media/peer';

/** werift's own copy of `debug` (it ships one in node_modules/werift/node_modules). */
type DebugModule = { log: (...args: unknown[]) => void; enable(ns: string): void; disable(): string };
const Debug = createRequire(createRequire(import.meta.url).resolve('werift'))('debug') as DebugModule;

const peers: Peer[] = [];
afterEach(async () => {
  await Promise.all(peers.splice(0).map((p) => p.close()));
  Debug.disable();
});

/** werift's ICE trace while `run` runs. */
async function iceTrace(run: () => Promise<void>): Promise<string[]> {
  const lines: string[] = [];
  const log = Debug.log;
  Debug.log = (...args: unknown[]) => lines.push(format(...args));
  Debug.enable('werift-ice*');
  try {
    await run();
  } finally {
    Debug.log = log;
  }
  return lines;
}

describe('no STUN server unless configured', () => {
  for (const loopbackOnly of [false, true]) {
    it(`a peer with no ICE servers asks none while it gathers (${loopbackOnly ? 'loopback only' : 'every interface'})`, async () => {
      const trace = await iceTrace(async () => {
        const p = new Peer({ iceServers: [], iceTransportPolicy: 'all', loopbackOnly, ptimeMs: 20 });
        peers.push(p);
        p.bindSrtpKeys(undefined);
        const offer = await p.createOffer();
        expect(offer.sdp).toMatch(/^a=candidate:.* typ host/m);
        expect(offer.sdp).not.toMatch(/ typ srflx/);
      });
      // The trace did record the gathering (its host sockets)…
      expect(trace.some((l) => /protocol/.test(l))).toBe(true);
      // …and no server-reflexive request, to Google or anyone.
      expect(trace.filter((l) => /google|serverReflexive/i.test(l))).toEqual([]);
    });
  }
});
