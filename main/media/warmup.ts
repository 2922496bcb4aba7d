import { randomBytes } from 'node:crypto';
import { RtpHeader, RtpPacket } from 'werift';
import { Peer } from './peer';
import { OPUS_PAYLOAD_TYPE } from './rtp-opus';

/** What one warm-up took, for the log. */
export interface WarmUpReport {
  /** From start to the first SRTP packet decrypted on the far side, ms. */
  ms: number;
}

/**
 * Runs the media path's code once before the first call (issue 13 item 4,
 * "fast start"): two {@link Peer}s on 127.0.0.1 go through an offer and an
 * answer, ICE (RFC 8445) connectivity checks, a DTLS 1.2 handshake with the
 * SRTP key binding (RFC 5764; main/media/srtp-binding.ts) and one SRTP
 * packet each way, then close. Nothing leaves the host: only loopback host
 * candidates are gathered and no ICE server is used.
 *
 * Why: V8 compiles JavaScript lazily, so the first call of a fresh process
 * used to spend ~250 ms (measured: answer → connected 441 ms on the first
 * call against 160–240 ms on the next ones) compiling werift's ICE, DTLS,
 * SRTP and RTP code on the call path. `encode` runs the codec once too (it
 * loads the native Opus module and its first-use tables).
 *
 * @param timeoutMs give up (and close) after this long, ms.
 * @throws Error when the loopback connection does not come up in time; the
 *   caller logs it and carries on (a call then simply pays the warm-up itself).
 */
export async function warmUpMediaPath(options: { ptimeMs: 10 | 20; timeoutMs?: number; encode?: () => void }): Promise<WarmUpReport> {
  const started = performance.now();
  options.encode?.();
  const make = () => new Peer({ iceServers: [], iceTransportPolicy: 'all', loopbackOnly: true, ptimeMs: options.ptimeMs });
  const a = make();
  const b = make();
  // The same code path as a sealed call: SRTP keys mixed with a (throw-away) sealed secret.
  const binding = { secret: randomBytes(32), context: randomBytes(16) };
  a.bindSrtpKeys(binding);
  b.bindSrtpKeys(binding);
  const timeoutMs = options.timeoutMs ?? 5000;
  try {
    a.onCandidate((c) => c && void b.addCandidate(c).catch(() => {}));
    b.onCandidate((c) => c && void a.addCandidate(c).catch(() => {}));
    const offer = await a.createOffer();
    const answer = await b.acceptOffer(offer.sdp);
    await a.acceptAnswer(answer.sdp);
    await Promise.all([a.connected(timeoutMs), b.connected(timeoutMs)]);
    // One packet each way through SRTP, RED (when negotiated) and the RTP parser.
    const heard = Promise.all([a, b].map((p) => new Promise<void>((resolve) => p.onRemoteRtp(() => resolve()))));
    const payload = Buffer.from([0xf8, 0xff, 0xfe]); // an Opus DTX frame (TOC + silence)
    const timer = setInterval(() => {
      for (const p of [a, b]) {
        p.sendRtp(
          new RtpPacket(
            new RtpHeader({ payloadType: OPUS_PAYLOAD_TYPE, sequenceNumber: Math.floor(Math.random() * 65535), timestamp: 0, marker: true }),
            payload,
          ),
        );
      }
    }, 10);
    try {
      await withTimeout(heard, timeoutMs, 'no RTP crossed the loopback warm-up call');
    } finally {
      clearInterval(timer);
    }
    return { ms: Math.round(performance.now() - started) };
  } finally {
    await Promise.allSettled([a.close(), b.close()]);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e: unknown) => (clearTimeout(t), reject(e instanceof Error ? e : new Error(String(e)))),
    );
  });
}
