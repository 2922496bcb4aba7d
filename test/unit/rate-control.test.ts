import { describe, expect, it } from 'vitest';
import { SendRateController } from '../../main/media/rate-control';

function setup() {
  const calls: string[] = [];
  let t = 0;
  const c = new SendRateController(
    {
      setBitrate: (b) => calls.push(`bitrate ${b}`),
      setExpectedLossPercent: (p) => calls.push(`loss ${p}`),
      setRedundancy: (n) => calls.push(`red ${n}`),
    },
    { baseBitrate: 32_000, minLossHint: 2, now: () => t },
  );
  return { c, calls, advance: (ms: number) => (t += ms) };
}
const block = (lossFraction: number) => ({ fractionLost: Math.round(lossFraction * 256), jitter: 480 });

describe('SendRateController', () => {
  it('raises the FEC loss hint with the loss the far end reports', () => {
    const { c, calls } = setup();
    for (let i = 0; i < 10; i++) c.onReport(block(0.08));
    expect(c.view().lossHintPercent).toBe(12); // 1.5 × 8 %
    expect(calls.filter((x) => x.startsWith('loss')).length).toBeGreaterThan(0);
    expect(c.view().bitrate).toBe(32_000);
    expect(c.view().remoteJitterMs).toBe(10);
  });

  it('steps the bitrate down under heavy loss and back up after a calm 10 s', () => {
    const { c, calls, advance } = setup();
    for (let i = 0; i < 10; i++) c.onReport(block(0.3));
    expect(c.view().bitrate).toBe(16_000);
    expect(c.view().lossHintPercent).toBe(30);
    for (let i = 0; i < 30; i++) {
      advance(1000);
      c.onReport(block(0));
    }
    expect(c.view().bitrate).toBe(32_000);
    expect(calls).toContain('bitrate 16000');
    expect(calls).toContain('bitrate 24000');
    expect(calls.at(-1)).toMatch(/bitrate 32000|loss 2/);
  });

  it('repeats one frame per packet from the start, two under bursty loss, none after a calm 10 s', () => {
    const { c, calls, advance } = setup();
    expect(calls).toEqual(['red 1']);
    for (let i = 0; i < 3; i++) c.onReport(block(0.1));
    expect(c.view().redundancy).toBe(2);
    for (let i = 0; i < 5; i++) {
      advance(1000);
      c.onReport(block(0));
    }
    expect(c.view().redundancy).toBe(2); // not before 10 s of lower loss
    for (let i = 0; i < 30; i++) {
      advance(1000);
      c.onReport(block(0));
    }
    expect(c.view().redundancy).toBe(0);
    expect(calls.filter((x) => x.startsWith('red'))).toEqual(['red 1', 'red 2', 'red 0']);
    c.onReport(block(0.05));
    expect(c.view().redundancy).toBeGreaterThan(0);
  });

  it('with redundancy negotiated, keeps the loss hint low and the bitrate up (RFC 2198 repairs the losses)', () => {
    const { c, calls } = setup();
    c.setRedundancyNegotiated(true);
    expect(c.view().lossHintPercent).toBe(0); // no floor: a clean path gets the whole bitrate
    expect(calls).toContain('loss 0');
    for (let i = 0; i < 10; i++) c.onReport(block(0.025)); // 6/256 = 2.3 % a report, smoothed to 2.28 %
    expect(c.view().lossHintPercent).toBe(3); // follows the loss, 1:1 (ceil)
    for (let i = 0; i < 10; i++) c.onReport(block(0.15));
    expect(c.view().lossHintPercent).toBe(5); // capped
    expect(c.view().bitrate).toBe(32_000); // no step at 10–20 %
    for (let i = 0; i < 10; i++) c.onReport(block(0.3));
    expect(c.view().bitrate).toBe(24_000); // one step above 20 %, never 16 kb/s
    expect(calls).not.toContain('bitrate 16000');
    expect(c.view().redundancy).toBe(2);
    c.setRedundancyNegotiated(false); // e.g. a renegotiation without `red`: the FEC ladder again
    expect(c.view().lossHintPercent).toBe(30);
  });

  it('reports the round-trip time it is given, and ignores nonsense', () => {
    const { c } = setup();
    c.onReport(block(0), 120);
    expect(c.view().rttMs).toBe(120);
    c.onReport(block(0), -5);
    expect(c.view().rttMs).toBe(120);
  });
});

describe('estimateMos (simplified E-model, ITU-T G.107)', async () => {
  const { estimateMos } = await import('../../main/media/quality');
  it('is about 4.4 for a short clean path and falls with delay and loss', () => {
    expect(estimateMos(50, 0)).toBeGreaterThan(4.3);
    expect(estimateMos(50, 0)).toBeLessThan(4.5);
    expect(estimateMos(300, 0)).toBeLessThan(estimateMos(150, 0));
    expect(estimateMos(50, 5)).toBeLessThan(estimateMos(50, 1));
    expect(estimateMos(50, 20)).toBeLessThan(3.2);
    // By hand: R = 93.2 − 0.024·100 = 90.8 → 1 + 3.178 + 7e-6·90.8·30.8·9.2 = 4.358.
    expect(estimateMos(100, 0)).toBeCloseTo(4.358, 3);
  });
});
