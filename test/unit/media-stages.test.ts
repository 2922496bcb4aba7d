/**
 * The media path's stages on their own (issue 13 item 5), each table-driven:
 * PlayoutChain on recorded frames (a 440 Hz tone through the real Opus
 * encoder, with FEC, then delivered in the orders and with the losses of each
 * row), the Mixer's summing and saturation, and the LivenessMonitor's stall,
 * resume, timeout and suspend on a fake clock.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LivenessMonitor } from '../../main/media/liveness';
import { Mixer } from '../../main/media/mixer';
import { PlayoutChain } from '../../main/media/playout-chain';
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
  it('refuses an input of the wrong frame size with a clear error', () => {
    const mixer = new Mixer(4);
    mixer.add({ pull: () => new Int16Array(3) });
    expect(() => mixer.pull()).toThrow(/3 samples, the mixer's frame is 4/);
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
