/**
 * `tsx bench/jitter-sim.ts [--profiles clean,wifi,mobile,bad] [--seeds 5] [--frame-ms 20]`:
 * the receive path of a call, offline and deterministic, to find where
 * quality is lost under impairment without the noise of a real call.
 *
 * Speech (espeak-ng) is encoded by the real Opus encoder with the daemon's
 * settings (main/media/platform.ts DEFAULT_OPUS, with the loss hint and
 * bitrate the rate controller settles on for the profile's loss), sent one
 * packet per frame on an ideal clock, carried through two legs of the
 * impairment model (test/harness/impair.ts: caller → coturn and coturn →
 * callee, as in a relay-only call) with the RFC 2198 redundancy the rate
 * controller settles on (`SIM_RED=n` overrides), and received by the real MediaSession
 * (adaptive jitter buffer, libopus decoder addon with PLC and FEC) whose
 * speaker is pulled every frame on the receiver's clock. Printed per profile:
 * speech similarity of the played audio (docs/similarity.md), playout delay
 * p50/p95 of the played packets (send → speaker pull, ms; a real call adds
 * the devices' and the network stack's delay) and the playout counters.
 */
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createOpusDecoder, createOpusEncoder } from '../native/opus';
import { AdaptiveJitterBuffer } from '../main/media/adaptive-jitter-buffer';
import { speechSimilarity } from '../main/media/analysis';
import { MediaSession, type AudioSink, type AudioSource } from '../main/media/media-session';
import type { RtpTransport } from '../main/media/rtp-transport';
import { ImpairmentModel, meanLossRate, type ImpairmentProfile, mixSeed, PROFILES, type ProfileName } from '../test/harness/impair';
import { makeTempDir, removeTempDir } from '../test/harness/process';
import { readWav, renderSpeech } from '../test/harness/speech';

const { values: args } = parseArgs({
  options: {
    profiles: { type: 'string', default: 'clean,wifi,mobile,bad' },
    seeds: { type: 'string', default: '5' },
    'frame-ms': { type: 'string', default: '20' },
  },
});

const SENTENCES: [string, string][] = [
  ['en-us', 'The quick brown fox jumps over the lazy dog near the river bank.'],
  ['en-gb', 'She sells sea shells by the sea shore every sunny morning.'],
  ['en-us', 'Please call me back tomorrow after lunch about the new budget.'],
];

/** What one simulated call measured. */
export interface SimResult {
  similarity: number;
  delays: number[];
  stats: ReturnType<MediaSession['stats']>;
}

/**
 * One simulated call: `speech` (48 kHz mono) sent through two impaired legs
 * into a MediaSession; returns what its speaker played, scored.
 */
export function simulate(speech: Int16Array, profile: ProfileName, seed: number, frameMs: 10 | 20): SimResult {
  const frame = 48 * frameMs;
  const loss = 1 - (1 - meanLossRate((PROFILES[profile] as ImpairmentProfile).loss)) ** 2;
  // The rate controller's steady state for this loss (main/media/rate-control.ts).
  // With redundancy negotiated (as between Parley peers): hint min(5, L%), 24 kb/s above 20 % loss.
  // SIM_HINT / SIM_BITRATE / SIM_FEC=0 override them.
  const hint = Number(process.env.SIM_HINT ?? Math.min(5, Math.ceil(loss * 100)));
  const bitrate = Number(process.env.SIM_BITRATE ?? (loss * 100 > 20 ? 24_000 : 32_000));
  const encoder = createOpusEncoder({ frameMs, bitrate, fec: process.env.SIM_FEC !== '0', expectedLossPercent: hint, complexity: 9 });
  const decoder = createOpusDecoder();
  const sendTime = new Map<Buffer, number>();
  let clock = 0;
  const delays: number[] = [];
  let listener: ((rtp: { header: { ssrc: number; sequenceNumber: number; timestamp: number }; payload: Buffer }) => void) | undefined;
  const peer: RtpTransport = {
    sendRtp: () => undefined,
    onRtp: (l) => void (listener = l),
    onReceiverReport: () => undefined,
  };
  const source = Object.assign(new EventEmitter(), { start: () => undefined, close: async () => undefined }) as unknown as AudioSource;
  let pull: (() => Int16Array) | undefined;
  const sink = Object.assign(new EventEmitter(), {
    start: (p: () => Int16Array) => (pull = p),
    close: async () => undefined,
  }) as unknown as AudioSink;
  const trace: string[] = [];
  const session = new MediaSession(peer, {
    frameMs,
    source,
    sink,
    encoder: { encode: () => Buffer.alloc(0) },
    decoder: {
      decode: (p) => {
        const at = sendTime.get(p);
        if (at !== undefined) delays.push(clock - at);
        return decoder.decode(p);
      },
      conceal: (n) => decoder.conceal(n),
      decodeFec: (next, n) => decoder.decodeFec(next, n),
    },
    now: () => clock,
  });
  if (process.env.SIM_JB) {
    // Buffer options under test, e.g. SIM_JB='{"windowMs":5000,"quantile":0.99}'.
    (session as unknown as { jitter: AdaptiveJitterBuffer }).jitter = new AdaptiveJitterBuffer({
      packetSamples: frame,
      ...(JSON.parse(process.env.SIM_JB) as object),
    });
  }
  session.start();
  if (process.env.SIM_TRACE) {
    const jb = (session as unknown as { jitter: { pop: (q: boolean, now?: number) => { kind: string }; stats: () => { bufferedMs: number; targetMs: number } } }).jitter;
    const pop = jb.pop.bind(jb);
    jb.pop = (q: boolean, now?: number) => {
      const item = pop(q, now);
      const st = jb.stats();
      trace.push(`${clock} ${item.kind} q=${q ? 1 : 0} buf=${st.bufferedMs} tgt=${st.targetMs} acc=${(st as { accelerateFrames?: number }).accelerateFrames} d=${delays[delays.length - 1] ?? ""}`);
      return item;
    };
  }

  // Sender: 1 s of silence, the speech, 1.5 s of silence.
  const padded = new Int16Array(48_000 + speech.length + 72_000);
  padded.set(speech, 48_000);
  const frames = Math.floor(padded.length / frame);
  const legs = [new ImpairmentModel(profile, mixSeed(seed, 0)), new ImpairmentModel(profile, mixSeed(seed, 1))];
  const arrivals: { at: number; seq: number; ts: number; payload: Buffer }[] = [];
  /** RFC 2198 redundancy: each packet also carries the previous `red` frames (werift's RED sender). */
  const red = Number(process.env.SIM_RED ?? (loss > 0.03 ? 2 : loss > 0.005 ? 1 : 0));
  const payloads: Buffer[] = [];
  for (let k = 0; k < frames; k++) {
    const payload = encoder.encode(padded.slice(k * frame, (k + 1) * frame));
    const sent = k * frameMs;
    sendTime.set(payload, sent);
    let at = sent;
    let lost = false;
    for (const leg of legs) {
      const v = leg.admit(at, payload.length + 40);
      if (v.dropped) {
        lost = true;
        break;
      }
      at = v.deliverAt[0]!;
    }
    payloads.push(payload);
    if (lost) continue;
    for (let r = Math.min(red, k); r >= 1; r--) {
      arrivals.push({ at, seq: (k - r) & 0xffff, ts: ((k - r) * frame) >>> 0, payload: payloads[k - r]! });
    }
    arrivals.push({ at, seq: k & 0xffff, ts: (k * frame) >>> 0, payload });
  }
  arrivals.sort((a, b) => a.at - b.at);
  const delivered = new Set<number>();

  // Receiver: the speaker pulls the next frame when it has played the last (frameMs, or 5 ms shorter or longer
  // when the 1:1 playout aligns its phase in a pause), starting 7 ms after the sender's first tick.
  const out = new Int16Array(frames * frame + 48_000);
  let next = 0;
  for (let played = 0; played + 2 * frame <= out.length; ) {
    const pullAt = 7 + played / 48;
    while (next < arrivals.length && arrivals[next]!.at <= pullAt) {
      const a = arrivals[next++]!;
      if (delivered.has(a.seq)) continue; // werift's RedHandler drops blocks it has seen
      delivered.add(a.seq);
      clock = a.at; // timestamped on arrival, between pulls
      listener?.({ header: { ssrc: 1, sequenceNumber: a.seq, timestamp: a.ts }, payload: a.payload });
    }
    clock = pullAt;
    const pulled = pull!();
    out.set(pulled, played);
    played += pulled.length;
  }
  const stats = session.stats();
  void session.close();
  const similarity = speechSimilarity(speech, out, { maxLagMs: 3000 }).score;
  if (process.env.SIM_TRACE) console.log(trace.join('\n'));
  return { similarity, delays: delays.sort((a, b) => a - b), stats };
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

async function main(): Promise<void> {
  const dir = makeTempDir('jitter-sim');
  const speech: Int16Array[] = [];
  try {
    for (const [i, [voice, text]] of SENTENCES.entries()) {
      const path = join(dir, `s${i}.wav`);
      await renderSpeech(text, voice, path);
      speech.push(readWav(path).samples);
    }
  } finally {
    removeTempDir(dir);
  }
  const frameMs = (args['frame-ms'] === '10' ? 10 : 20) as 10 | 20;
  for (const profile of args.profiles.split(',') as ProfileName[]) {
    const sims: number[] = [];
    const delays: number[] = [];
    const c = { expand: 0, accel: 0, decel: 0, late: 0, lost: 0, fec: 0, plc: 0, target: 0 };
    const seeds = Number(args.seeds);
    for (let s = 0; s < seeds; s++) {
      if (process.env.SIM_SEED !== undefined && Number(process.env.SIM_SEED) !== s) continue;
      const r = simulate(speech[s % speech.length]!, profile, 1000 + s, frameMs);
      sims.push(r.similarity);
      delays.push(...r.delays.slice(Math.floor(r.delays.length * 0.2)));
      c.expand += r.stats.expandFrames ?? 0;
      c.accel += r.stats.accelerateFrames ?? 0;
      c.decel += r.stats.decelerateFrames ?? 0;
      c.late += r.stats.packetsLate;
      c.lost += r.stats.packetsLost;
      c.fec += r.stats.framesRecoveredByFec;
      c.plc += r.stats.framesConcealed;
      c.target += r.stats.jitterTargetMs / seeds;
    }
    delays.sort((a, b) => a - b);
    const mean = sims.reduce((a, b) => a + b, 0) / sims.length;
    console.log(
      `${profile.padEnd(7)} similarity median ${pct([...sims].sort((a, b) => a - b), 50).toFixed(3)} mean ${mean.toFixed(3)} (${sims.map((x) => x.toFixed(3)).join(' ')}) ` +
        `delay p50 ${pct(delays, 50).toFixed(0)} p95 ${pct(delays, 95).toFixed(0)} ms; target ${c.target.toFixed(0)} ms; ` +
        `lost ${c.lost} late ${c.late} fec ${c.fec} plc ${c.plc} expand ${c.expand} accel ${c.accel} decel ${c.decel}`,
    );
  }
}

if (process.argv[1]?.endsWith('jitter-sim.ts')) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
