/**
 * The media path's stages on their own (issue 13 item 5), each table-driven:
 * PlayoutChain on recorded frames (a 440 Hz tone through the real Opus
 * encoder, with FEC, then delivered in the orders and with the losses of each
 * row), the Mixer's summing and saturation, and the LivenessMonitor's stall,
 * resume, timeout and suspend on a fake clock, and the CaptureChain's echo
 * reference, device delay and bypass of the real APM when processing is off.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CaptureChain, newLevelMeter } from '../../main/media/capture-chain';
import { EchoGatedProcessor } from '../../main/media/echo-path';
import type { CaptureProcessor } from '../../main/media/media-session';
import { LivenessMonitor } from '../../main/media/liveness';
import { Mixer } from '../../main/media/mixer';
import { PlayoutChain } from '../../main/media/playout-chain';
import { createVoiceProcessor, type VoiceProcessor } from '../../native/apm';
import { createOpusDecoder, createOpusEncoder } from '../../native/opus';

const FRAME = 960; // 20 ms at 48 kHz

/** 50 frames (1 s) of a 440 Hz tone at −10 dBFS, encoded with in-band FEC: the recording every row replays. */
function recordTone(): Buffer[] {
  const enc = createOpusEncoder({ frameMs: 20, fec: true, expectedLossPercent: 20 });
  const packets: Buffer[] = [];
  for (let f = 0; f < 50; f++) {
    const pcm = new Int16Array(FRAME);
    for (let i = 0; i < FRAME; i++) pcm[i] = Math.round(10362 * Math.sin((2 * Math.PI * 440 * (f * FRAME + i)) / 48000));
    packets.push(enc.encode(pcm));
  }
  return packets;
}

function rms(x: Int16Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s / x.length);
}

describe('PlayoutChain on a recorded tone', () => {
  const tone = recordTone();
  const rows: { name: string; order: (i: number) => number | undefined; fec: number; plc: number; lost: number }[] = [
    { name: 'in order, nothing lost', order: (i) => i, fec: 0, plc: 0, lost: 0 },
    { name: 'every 10th packet lost: rebuilt from the next one’s FEC', order: (i) => (i % 10 === 5 ? undefined : i), fec: 5, plc: 0, lost: 5 },
    { name: 'two in a row lost: the first concealed (PLC), the second from FEC', order: (i) => (i === 20 || i === 21 ? undefined : i), fec: 1, plc: 1, lost: 2 },
    { name: 'neighbours swapped on the way: nothing lost, nothing concealed', order: (i) => (i % 2 === 0 ? i + 1 : i - 1), fec: 0, plc: 0, lost: 0 },
  ];
  for (const row of rows) {
    it(row.name, () => {
      let clock = 0;
      let first = 0;
      const chain = new PlayoutChain({ frameSamples: FRAME, decoder: createOpusDecoder(), jitterTargetMs: 60, now: () => clock, onFirstAudio: () => first++ });
      const out: Int16Array[] = [];
      for (let i = 0; i < tone.length; i++) {
        clock = i * 20;
        const k = row.order(i);
        if (k !== undefined && k < tone.length) chain.push({ header: { ssrc: 9, sequenceNumber: k, timestamp: k * FRAME }, payload: tone[k]! });
        out.push(chain.pull());
      }
      for (let i = 0; i < 10; i++) out.push(chain.pull()); // drain
      const s = chain.stats();
      expect(s.framesRecoveredByFec).toBe(row.fec);
      expect(s.framesConcealed).toBe(row.plc);
      expect(s.packetsLost).toBe(row.lost);
      // The tone plays on through every gap: no frame after the start is silent.
      const started = out.findIndex((f) => rms(f) > 1000);
      expect(started).toBeGreaterThanOrEqual(0);
      const tail = out.slice(started + 1, started + 40);
      expect(tail.every((f) => rms(f) > 1000)).toBe(true);
      expect(out.every((f) => f.length === FRAME)).toBe(true);
    });
  }

  it('says when the first packet reached the speaker, once', async () => {
    let first = 0;
    let clock = 0;
    const chain = new PlayoutChain({ frameSamples: FRAME, decoder: createOpusDecoder(), jitterTargetMs: 40, now: () => clock, onFirstAudio: () => first++ });
    expect(chain.pull().every((v) => v === 0)).toBe(true); // buffering: silence
    for (let i = 0; i < 5; i++) {
      clock = i * 20;
      chain.push({ header: { ssrc: 1, sequenceNumber: i, timestamp: i * FRAME }, payload: tone[i]! });
      chain.pull();
    }
    await Promise.resolve();
    expect(chain.playing).toBe(true);
    expect(first).toBe(1);
  });

  it('restarts its buffer for a new SSRC (RFC 3550 §8.2) instead of mixing two streams', () => {
    let clock = 0;
    const chain = new PlayoutChain({ frameSamples: FRAME, decoder: createOpusDecoder(), jitterTargetMs: 40, now: () => clock });
    for (let i = 0; i < 10; i++) {
      clock = i * 20;
      chain.push({ header: { ssrc: 1, sequenceNumber: 100 + i, timestamp: 1000 + i * FRAME }, payload: tone[i]! });
      chain.pull();
    }
    for (let i = 0; i < 10; i++) {
      clock = 200 + i * 20;
      chain.push({ header: { ssrc: 2, sequenceNumber: 7 + i, timestamp: 999_000 + i * FRAME }, payload: tone[i]! });
      chain.pull();
    }
    expect(chain.stats().packetsLost).toBe(0);
    expect(chain.stats().packetsReceived).toBe(20);
  });
});

/**
 * A call's receive side against a speaker that pulls the next frame when it has played the last (frames
 * of any length last length / 48 ms): packets of `packets(k)` (Opus, the real codec) arrive every 20 ms at
 * `phaseMs` after the speaker's first pull, plus 0–`jitterMs`. Returns each decoded packet's wait from its
 * arrival to the pull that took it (ms), and the chain's stats.
 */
function alignedRun(packets: Buffer[], phaseMs: number, jitterMs: number, seconds: number) {
  let clock = 0;
  const arrivedAt = new Map<number, number>();
  const waits: { at: number; ms: number }[] = [];
  const opus = createOpusDecoder();
  let decoding = 0;
  const chain = new PlayoutChain({
    frameSamples: FRAME,
    decoder: {
      decode: (p) => {
        waits.push({ at: clock, ms: clock - arrivedAt.get(decoding)! });
        return opus.decode(p);
      },
      conceal: (n) => opus.conceal(n),
    },
    now: () => clock,
    alignPhase: true,
  });
  let seed = 11;
  const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const frameLengths = new Set<number>();
  let next = 0;
  let arrival = phaseMs;
  for (let played = 0; played / 48 < seconds * 1000; ) {
    const pullAt = played / 48;
    while (arrival <= pullAt && next < seconds * 50) {
      clock = arrival;
      arrivedAt.set(next, arrival);
      const seq = next;
      chain.push({ header: { ssrc: 3, sequenceNumber: seq, timestamp: seq * FRAME }, payload: packets[seq % packets.length]! });
      next++;
      arrival = next * 20 + phaseMs + random() * jitterMs;
    }
    clock = pullAt;
    // The chain decodes inside pull(): tell the decoder which packet it is (in order here, none lost).
    decoding = waits.length;
    const frame = chain.pull();
    frameLengths.add(frame.length);
    played += frame.length;
  }
  return { waits, stats: chain.stats(), frameLengths };
}

describe('PlayoutChain aligned to the arrivals (a 1:1 call, alignPhase)', () => {
  // Talk spurts of 1 s (a tone) and pauses of 0.6 s (digital silence), as encoded by the real Opus encoder.
  const enc = createOpusEncoder({ frameMs: 20 });
  const talk: Buffer[] = [];
  for (let f = 0; f < 80; f++) {
    const pcm = new Int16Array(FRAME);
    if (f % 80 < 50) for (let i = 0; i < FRAME; i++) pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * 300 * (f * FRAME + i)) / 48000));
    talk.push(enc.encode(pcm));
  }
  const rows = [
    { name: 'packets just after a pull', phaseMs: 1, jitterMs: 0 },
    { name: 'a third of a packet after', phaseMs: 7, jitterMs: 0 },
    { name: 'two thirds after', phaseMs: 13, jitterMs: 0 },
    { name: 'just before the next pull', phaseMs: 19, jitterMs: 0 },
    { name: 'any phase, with 0–6 ms of jitter', phaseMs: 10, jitterMs: 6 },
  ];
  for (const row of rows) {
    it(`${row.name}: each packet waits its jitter plus about 5 ms, shifted in the pauses only`, () => {
      const { waits, stats, frameLengths } = alignedRun(talk, row.phaseMs, row.jitterMs, 20);
      const settled = waits.filter((w) => w.at > 5000).map((w) => w.ms);
      expect(settled.length).toBeGreaterThan(700);
      // Whole-packet steps alone leave the wait wherever the phase put it (up to 20 ms plus the margin).
      const median = [...settled].sort((a, b) => a - b)[settled.length >> 1]!;
      expect(median).toBeGreaterThanOrEqual(0);
      expect(median).toBeLessThanOrEqual(5 + row.jitterMs + 5);
      expect(stats.expandFrames).toBe(0);
      // Frames are whole 5 ms periods: 5 ms of silence a pull while buffering, then never shorter than half a
      // frame nor longer than one period more.
      for (const n of frameLengths) {
        expect(n % 240).toBe(0);
        expect(n === 240 || n >= FRAME / 2).toBe(true);
        expect(n).toBeLessThanOrEqual(FRAME + 240);
      }
    });
  }

  it('never shortens or lengthens a frame that is not quiet (no pauses: the phase stays)', () => {
    const tone = recordTone();
    const { stats, frameLengths } = alignedRun(tone, 13, 0, 10);
    expect(stats.alignedMs).toBe(0);
    expect([...frameLengths].filter((n) => n !== 240)).toEqual([FRAME]); // 5 ms of silence a pull while buffering
  });
});

describe('Mixer', () => {
  const frame = (v: number) => () => new Int16Array(4).fill(v);
  const rows: { name: string; inputs: number[]; out: number }[] = [
    { name: 'no input: silence', inputs: [], out: 0 },
    { name: 'one input passes through', inputs: [1234], out: 1234 },
    { name: 'two talkers add', inputs: [1000, -300], out: 700 },
    { name: 'loud talkers saturate, not wrap (positive)', inputs: [30000, 10000], out: 32767 },
    { name: 'loud talkers saturate, not wrap (negative)', inputs: [-30000, -10000, -5], out: -32768 },
  ];
  for (const row of rows) {
    it(row.name, () => {
      const mixer = new Mixer(4);
      for (const v of row.inputs) mixer.add({ pull: frame(v) });
      expect([...mixer.pull()]).toEqual([row.out, row.out, row.out, row.out]);
    });
  }
  it('an input can leave', () => {
    const mixer = new Mixer(4);
    mixer.add({ pull: frame(5) });
    const remove = mixer.add({ pull: frame(7) });
    remove();
    expect(mixer.size).toBe(1);
    expect(mixer.pull()[0]).toBe(5);
  });
  it('refuses an empty frame with a clear error', () => {
    const mixer = new Mixer(4);
    mixer.add({ pull: frame(1) });
    mixer.add({ pull: () => new Int16Array(0) });
    expect(() => mixer.pull()).toThrow(/empty frame/);
  });

  it('passes a lone input through at its own length (the shortened or lengthened frame of an aligned playout)', () => {
    const mixer = new Mixer(4);
    mixer.add({ pull: () => new Int16Array([1, 2]) });
    expect([...mixer.pull()]).toEqual([1, 2]);
  });

  /** An input giving frames of the listed lengths in turn, each filled with its index + `base` (so every sample says where it came from). */
  const frames = (base: number, lengths: number[]) => {
    let k = 0;
    return { pull: () => new Int16Array(lengths[k % lengths.length]!).fill(base + k++) };
  };
  const runs: { name: string; inputs: [number, number[]][]; pulls: number; out: number[][] }[] = [
    {
      name: 'two inputs of different phases: each pull ends where the first input runs out, and nothing is lost or repeated',
      inputs: [[100, [4, 4]], [200, [2, 4, 4]]],
      pulls: 4,
      // a: 100×4, 101×4, 102…  b: 200×2, 201×4, 202×4
      out: [[300, 300], [301, 301], [302, 302], [303, 303]],
    },
    {
      name: 'a shortened frame (a stream aligning its phase in a pause) moves only that stream\'s next pull',
      inputs: [[0, [4, 2, 4, 4]], [1000, [4, 4, 4]]],
      pulls: 4,
      out: [[1000, 1000, 1000, 1000], [1002, 1002], [1003, 1003], [1004, 1004]],
    },
    {
      name: 'a lengthened frame is played to its end while the other stream goes on',
      inputs: [[0, [6, 4]], [10, [4, 4]]],
      pulls: 3,
      out: [[10, 10, 10, 10], [11, 11], [12, 12]],
    },
  ];
  for (const run of runs) {
    it(run.name, () => {
      const mixer = new Mixer(4);
      for (const [base, lengths] of run.inputs) mixer.add(frames(base, lengths));
      const got = Array.from({ length: run.pulls }, () => [...mixer.pull()]);
      expect(got).toEqual(run.out);
      const total = got.reduce((a, f) => a + f.length, 0);
      expect(total).toBe(run.out.reduce((a, f) => a + f.length, 0));
    });
  }

  it('a stream that leaves takes only its unplayed rest with it; the one left is passed on from where it was', () => {
    const mixer = new Mixer(4);
    mixer.add(frames(0, [4]));
    const remove = mixer.add(frames(100, [2, 4]));
    expect([...mixer.pull()]).toEqual([100, 100]);
    remove();
    // The rest of the first input's frame (2 samples of 0), then its next frames whole.
    expect([...mixer.pull()]).toEqual([0, 0]);
    expect([...mixer.pull()]).toEqual([1, 1, 1, 1]);
  });
});

describe('LivenessMonitor', () => {
  afterEach(() => vi.useRealTimers());
  const rows: { name: string; timeline: [number, 'heard' | 'tick'][]; events: string[] }[] = [
    { name: 'steady packets: nothing to say', timeline: [[100, 'heard'], [600, 'heard'], [1100, 'heard'], [1600, 'heard'], [2000, 'tick']], events: [] },
    { name: 'silence past 1 s: stalled; a packet: resumed', timeline: [[1400, 'tick'], [1500, 'heard'], [1600, 'tick']], events: ['stalled', 'resumed'] },
    { name: 'silence past the timeout: stalled, then timeout once', timeline: [[1400, 'tick'], [5200, 'tick'], [9000, 'tick']], events: ['stalled', 'timeout'] },
  ];
  for (const row of rows) {
    it(row.name, () => {
      vi.useFakeTimers();
      let clock = 0;
      const m = new LivenessMonitor({ timeoutMs: 5000, now: () => clock });
      const events: string[] = [];
      for (const e of ['stalled', 'resumed', 'timeout'] as const) m.on(e, () => events.push(e));
      m.start();
      for (const [at, what] of row.timeline) {
        while (clock < at) {
          clock = Math.min(at, clock + 250);
          vi.advanceTimersByTime(250);
        }
        if (what === 'heard') m.heard();
      }
      m.stop();
      expect(events).toEqual(row.events);
    });
  }
  it('a tick that comes 30 s late is a suspend, not a timeout', () => {
    vi.useFakeTimers();
    let clock = 0;
    const m = new LivenessMonitor({ timeoutMs: 5000, now: () => clock });
    const events: string[] = [];
    m.on('suspended', (ms) => events.push(`suspended ${ms}`));
    m.on('timeout', () => events.push('timeout'));
    m.on('stalled', () => events.push('stalled'));
    m.start();
    clock = 30_000; // the process was stopped: the next tick sees the jump
    vi.advanceTimersByTime(250);
    m.stop();
    expect(events[0]).toBe('suspended 30000');
    expect(events).not.toContain('timeout');
  });
});

describe('CaptureChain echo reference (render)', () => {
  it('hands the echo canceller whole 10 ms frames, in order, whatever lengths the speaker plays', () => {
    const seen: number[] = [];
    const sizes: number[] = [];
    const chain = new CaptureChain({
      frameSamples: FRAME,
      encoder: { encode: () => Buffer.alloc(0) },
      processor: {
        processRender: (f: Int16Array) => {
          sizes.push(f.length);
          seen.push(...f);
        },
      } as unknown as CaptureProcessor,
      now: () => 0,
      send: () => undefined,
      onError: () => undefined,
      meter: newLevelMeter(),
    });
    let next = 0;
    // Whole frames, an aligned playout's 15 ms and 25 ms frames, and a lone 5 ms while buffering.
    for (const n of [960, 720, 1200, 240, 960, 480, 720]) {
      const f = new Int16Array(n);
      for (let i = 0; i < n; i++) f[i] = next++ % 30000;
      chain.render(f);
    }
    expect(sizes.every((s) => s === 480)).toBe(true);
    expect(seen.length).toBe(Math.floor(next / 480) * 480);
    expect(seen.every((v, i) => v === i % 30000)).toBe(true);
  });
});

describe('CaptureChain device delay for the echo canceller', () => {
  afterEach(() => vi.useRealTimers());

  function chainWith(delays: (number | undefined)[]) {
    const given: number[] = [];
    const asked: number[] = [];
    const chain = new CaptureChain({
      frameSamples: FRAME,
      encoder: { encode: () => Buffer.alloc(0) },
      processor: { setStreamDelayMs: (ms: number) => given.push(ms) } as unknown as CaptureProcessor,
      now: () => 0,
      send: () => undefined,
      onError: () => undefined,
      meter: newLevelMeter(),
    });
    const query = async () => {
      asked.push(Date.now());
      return delays.shift();
    };
    return { chain, given, asked, query };
  }

  // Each row: what the platform answers at each ask; when (ms after start) it is asked; what the canceller is given.
  const rows: { name: string; answers: (number | undefined)[]; askedAt: number[]; given: number[] }[] = [
    { name: 'known at once', answers: [42.4], askedAt: [300], given: [42] },
    { name: 'no timing update yet, then known', answers: [undefined, 57], askedAt: [300, 1000], given: [57] },
    { name: 'never known: three asks, then nothing', answers: [undefined, undefined, undefined, 10], askedAt: [300, 1000, 2000], given: [] },
    { name: 'clamped to 500 ms', answers: [900], askedAt: [300], given: [500] },
  ];
  for (const row of rows) {
    it(row.name, async () => {
      vi.useFakeTimers({ now: 0 });
      const { chain, given, asked, query } = chainWith([...row.answers]);
      const done = chain.updateDeviceDelay(query);
      await vi.advanceTimersByTimeAsync(5000);
      await done;
      expect(asked).toEqual(row.askedAt);
      expect(given).toEqual(row.given);
    });
  }

  it('a chain closed before the first ask never asks (a call ended early: not during the next call)', async () => {
    vi.useFakeTimers({ now: 0 });
    const { chain, given, asked, query } = chainWith([undefined, 30]);
    const done = chain.updateDeviceDelay(query);
    await vi.advanceTimersByTimeAsync(100);
    chain.close();
    await vi.advanceTimersByTimeAsync(5000);
    await done;
    expect(asked).toEqual([]);
    expect(given).toEqual([]);
  });
});

describe('CaptureChain with voice processing off (the processor bypassed)', () => {
  /** The real APM behind the call's echo gate, its calls counted (the chain's decision to call it is the subject). */
  function setup(settings: { echoCancellation: boolean; noiseSuppression: boolean; gainControl: boolean }, dtx: boolean) {
    const apm = createVoiceProcessor(settings);
    const calls = { capture: 0, render: 0 };
    const counted: VoiceProcessor = Object.create(apm, {
      processCaptureInPlace: { value: (f: Int16Array) => (calls.capture++, apm.processCaptureInPlace(f)) },
      processRender: { value: (f: Int16Array) => (calls.render++, apm.processRender(f)) },
    }) as VoiceProcessor;
    const encoded: Int16Array[] = [];
    const chain = new CaptureChain({
      frameSamples: FRAME,
      encoder: { encode: (f: Int16Array) => (encoded.push(f.slice()), Buffer.from([0xf8, 0xff, 0xfe, 1])) },
      processor: new EchoGatedProcessor(counted),
      dtx,
      now: () => 0,
      send: () => undefined,
      onError: (e) => {
        throw e;
      },
      meter: newLevelMeter(),
    });
    chain.sending = true;
    return { apm, calls, encoded, chain };
  }
  /** 20 ms of a 100 Hz hum on a DC offset: what the APM's high-pass filter changes at once. */
  function hum(f: number): Int16Array {
    const x = new Int16Array(FRAME);
    for (let i = 0; i < FRAME; i++) x[i] = 3000 + Math.round(6000 * Math.sin((2 * Math.PI * 100 * (f * FRAME + i)) / 48000));
    return x;
  }
  const OFF = { echoCancellation: false, noiseSuppression: false, gainControl: false };

  it('all three off: the microphone reaches the encoder bit for bit, and neither it nor the speaker goes through the APM', () => {
    const { calls, encoded, chain } = setup(OFF, false);
    for (let f = 0; f < 20; f++) {
      chain.push(hum(f));
      chain.render(hum(f));
    }
    expect(calls).toEqual({ capture: 0, render: 0 });
    expect(encoded.length).toBe(20);
    encoded.forEach((e, f) => expect(e).toEqual(hum(f)));
    expect(chain.talking()).toBe(false);
  });

  it('all three off but DTX on: the VAD still runs (it decides which frames go out)', () => {
    const { calls, chain } = setup(OFF, true);
    for (let f = 0; f < 10; f++) {
      chain.push(hum(f));
      chain.render(hum(f));
    }
    expect(calls.capture).toBe(20); // 10 ms at a time
    expect(calls.render).toBe(20);
  });

  it('turned on mid-call, the processing starts with the next frame; turned off, it stops again', () => {
    const { apm, calls, encoded, chain } = setup(OFF, false);
    for (let f = 0; f < 5; f++) chain.push(hum(f));
    apm.configure({ noiseSuppression: true });
    for (let f = 5; f < 10; f++) {
      chain.push(hum(f));
      chain.render(hum(f));
    }
    expect(calls).toEqual({ capture: 10, render: 10 });
    expect(encoded[9]).not.toEqual(hum(9)); // high-passed and suppressed
    apm.configure({ noiseSuppression: false });
    chain.push(hum(10));
    expect(calls.capture).toBe(10);
    expect(encoded[10]).toEqual(hum(10));
  });

  it('any one of the three on: every frame goes through the APM, as before', () => {
    for (const on of ['echoCancellation', 'noiseSuppression', 'gainControl'] as const) {
      const { calls, encoded, chain } = setup({ ...OFF, [on]: true }, false);
      for (let f = 0; f < 5; f++) {
        chain.push(hum(f));
        chain.render(hum(f));
      }
      expect({ on, ...calls }).toEqual({ on, capture: 10, render: 10 });
      expect(encoded[4]).not.toEqual(hum(4));
    }
  });
});
