import { describe, expect, it } from 'vitest';
import {
  DueQueue,
  GilbertElliott,
  gilbertFor,
  ImpairmentModel,
  meanLossBurst,
  meanLossRate,
  PROFILES,
  validateProfile,
  xoshiro128ss,
  type ImpairmentProfile,
  type LossModel,
  type Verdict,
} from '../harness/impair';

const N = 200_000;

/** Loss decisions of `n` datagrams: loss rate and mean length of runs of consecutive losses. */
function lossPattern(lose: () => boolean, n = N): { rate: number; meanBurst: number } {
  let lost = 0;
  let bursts = 0;
  let previous = false;
  for (let i = 0; i < n; i++) {
    const now = lose();
    if (now) lost++;
    if (now && !previous) bursts++;
    previous = now;
  }
  return { rate: lost / n, meanBurst: lost / bursts };
}

/** `n` datagrams of `bytes` every `intervalMs` through a model; the verdicts in order. */
function run(model: ImpairmentModel, n: number, intervalMs: number, bytes = 160): Verdict[] {
  const verdicts: Verdict[] = [];
  for (let i = 0; i < n; i++) verdicts.push(model.admit(i * intervalMs, bytes));
  return verdicts;
}

/** Mean, standard deviation, minimum and maximum. */
function summary(values: readonly number[]): {
  mean: number;
  sd: number;
  min: number;
  max: number;
} {
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    sum += v;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const mean = sum / values.length;
  const sd = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / values.length);
  return { mean, sd, min, max };
}

/** Delivery times of the first copy of each delivered datagram, with the sending time. */
function deliveries(verdicts: Verdict[], intervalMs: number): { sentAt: number; at: number }[] {
  return verdicts.flatMap((v, i) =>
    v.dropped ? [] : [{ sentAt: i * intervalMs, at: v.deliverAt[0]! }],
  );
}

describe('xoshiro128** PRNG', () => {
  it('gives the same sequence for the same seed and another for another seed', () => {
    const take = (seed: number) => Array.from({ length: 1000 }, xoshiro128ss(seed));
    expect(take(42)).toEqual(take(42));
    expect(take(43)).not.toEqual(take(42));
    expect(take(0).every((x) => x >= 0 && x < 1)).toBe(true);
  });

  it('is uniform in [0, 1): mean 1/2, variance 1/12', () => {
    const random = xoshiro128ss(7);
    let sum = 0;
    let squares = 0;
    for (let i = 0; i < N; i++) {
      const x = random();
      sum += x;
      squares += x * x;
    }
    const mean = sum / N;
    expect(mean).toBeCloseTo(0.5, 2);
    expect(squares / N - mean * mean).toBeCloseTo(1 / 12, 3);
  });
});

describe('loss models', () => {
  it('Bernoulli loses its rate of datagrams in runs of mean 1/(1 − rate)', () => {
    const loss: LossModel = { model: 'bernoulli', rate: 0.15 };
    const model = new ImpairmentModel({ loss }, 3);
    const measured = lossPattern(() => model.admit(0, 100).dropped === 'loss');
    // σ of the rate is √(0.15·0.85/200k) ≈ 0.0008
    expect(Math.abs(measured.rate - 0.15)).toBeLessThan(0.004);
    expect(measured.meanBurst).toBeCloseTo(meanLossBurst(loss)!, 1);
  });

  it.each([
    ['simple Gilbert (mobile profile: 5 %, bursts of 3)', PROFILES.mobile.loss],
    [
      'Gilbert with partial loss in the bad state',
      { model: 'gilbert-elliott', p: 0.02, r: 0.25, k: 0, h: 0.7 },
    ],
    [
      'Gilbert–Elliott with loss in both states',
      { model: 'gilbert-elliott', p: 0.01, r: 0.1, k: 0.005, h: 0.5 },
    ],
  ] as [string, LossModel & { model: 'gilbert-elliott' }][])(
    '%s matches its long-run loss rate and mean burst formulas',
    (_label, loss) => {
      const chain = new GilbertElliott(loss, xoshiro128ss(2024));
      const measured = lossPattern(() => chain.lose());
      const rate = meanLossRate(loss);
      expect(Math.abs(measured.rate - rate) / rate).toBeLessThan(0.06);
      const burst = meanLossBurst(loss);
      if (burst !== undefined)
        expect(Math.abs(measured.meanBurst - burst) / burst).toBeLessThan(0.05);
      else expect(measured.meanBurst).toBeGreaterThan(1); // k > 0: no closed form, but bursty
    },
  );

  it('derives Gilbert parameters from a loss rate and a burst length', () => {
    const loss = gilbertFor(0.05, 3);
    expect(meanLossRate(loss)).toBeCloseTo(0.05, 12);
    expect(meanLossBurst(loss)).toBeCloseTo(3, 12);
  });
});

describe('the named profiles', () => {
  it('are data with the promised loss and jitter', () => {
    const table = Object.entries(PROFILES).map(([name, p]: [string, ImpairmentProfile]) => [
      name,
      meanLossRate(p.loss),
      p.jitterMs ?? 0,
    ]);
    expect(table).toEqual([
      ['clean', 0, 0],
      ['wifi', 0.01, 20],
      ['mobile', expect.closeTo(0.05, 12), 40],
      ['bad', 0.15, 60],
    ]);
    expect(meanLossBurst(PROFILES.mobile.loss)).toBeCloseTo(3, 12);
    for (const p of Object.values(PROFILES)) expect(() => validateProfile(p)).not.toThrow();
  });

  it('clean forwards every datagram at once', () => {
    const verdicts = run(new ImpairmentModel('clean', 1), 1000, 20);
    expect(verdicts.every((v, i) => !v.dropped && v.deliverAt.join() === String(i * 20))).toBe(
      true,
    );
  });

  it('rejects numbers out of range', () => {
    expect(() => new ImpairmentModel({ loss: { model: 'bernoulli', rate: 1.5 } }, 1)).toThrow(
      /loss.rate/,
    );
    expect(() => new ImpairmentModel({ delayMs: -1 }, 1)).toThrow(/delayMs/);
    expect(() => new ImpairmentModel({ rateCap: { bytesPerSecond: 0 } }, 1)).toThrow(/rateCap/);
  });
});

describe('determinism', () => {
  const profile: ImpairmentProfile = {
    ...PROFILES.mobile,
    reorder: true,
    duplicateProbability: 0.02,
    reorderProbability: 0.02,
    rateCap: { bytesPerSecond: 8000, queueBytes: 2000 },
  };
  const decide = (seed: number) => run(new ImpairmentModel(profile, seed), 5000, 20);

  it('the same seed reproduces the same decisions; another seed does not', () => {
    expect(decide(99)).toEqual(decide(99));
    expect(decide(100)).not.toEqual(decide(99));
  });

  it('a profile’s loss pattern does not depend on its delay settings', () => {
    const lost = (p: ImpairmentProfile) =>
      run(new ImpairmentModel(p, 5), 5000, 20).map((v) => v.dropped === 'loss');
    expect(lost(PROFILES.bad)).toEqual(lost({ loss: PROFILES.bad.loss }));
  });
});

describe('delay and jitter', () => {
  it('uniform jitter stays within delay ± jitter with mean delay and σ = jitter/√3', () => {
    const verdicts = run(
      new ImpairmentModel({ delayMs: 80, jitterMs: 60, reorder: true }, 8),
      N,
      20,
    );
    const { mean, sd, min, max } = summary(deliveries(verdicts, 20).map((d) => d.at - d.sentAt));
    expect(min).toBeGreaterThanOrEqual(20);
    expect(max).toBeLessThanOrEqual(140);
    expect(mean).toBeCloseTo(80, 0);
    expect(sd).toBeCloseTo(60 / Math.sqrt(3), 0);
  });

  it('normal jitter has σ = jitter', () => {
    const profile: ImpairmentProfile = {
      delayMs: 100,
      jitterMs: 10,
      jitterDistribution: 'normal',
      reorder: true,
    };
    const { mean, sd } = summary(
      deliveries(run(new ImpairmentModel(profile, 8), N, 20), 20).map((d) => d.at - d.sentAt),
    );
    expect(mean).toBeCloseTo(100, 0);
    expect(sd).toBeCloseTo(10, 0);
  });

  it('without reordering never lets a datagram overtake another', () => {
    const model = new ImpairmentModel({ delayMs: 50, jitterMs: 40 }, 11);
    const times = deliveries(run(model, 20_000, 10), 10).map((d) => d.at);
    expect(times.every((t, i) => i === 0 || t >= times[i - 1]!)).toBe(true);
    expect(model.stats.reordered).toBe(0);
  });

  it('with reordering lets jitter reorder, and counts each datagram that overtakes', () => {
    const model = new ImpairmentModel({ delayMs: 50, jitterMs: 40, reorder: true }, 11);
    const times = deliveries(run(model, 20_000, 10), 10).map((d) => d.at);
    let overtaking = 0;
    let latest = -Infinity;
    for (const t of times) {
      if (t < latest) overtaking++;
      latest = Math.max(latest, t);
    }
    expect(overtaking).toBeGreaterThan(1000);
    expect(model.stats.reordered).toBe(overtaking);
  });

  it('explicit reordering sends the chosen datagrams at once, ahead of delayed ones', () => {
    const model = new ImpairmentModel({ delayMs: 50, reorderProbability: 0.05 }, 12);
    const verdicts = run(model, N, 10);
    const immediate = deliveries(verdicts, 10).filter((d) => d.at === d.sentAt).length;
    expect(immediate / N).toBeCloseTo(0.05, 2);
    expect(model.stats.reordered).toBe(immediate);
  });

  it('duplicates datagrams with the given probability', () => {
    const model = new ImpairmentModel({ duplicateProbability: 0.03 }, 13);
    const copies = run(model, N, 10).filter((v) => !v.dropped && v.deliverAt.length === 2).length;
    expect(copies / N).toBeCloseTo(0.03, 2);
    expect(model.stats.duplicated).toBe(copies);
  });
});

describe('rate cap (token bucket)', () => {
  it('delivers at the cap when offered twice as much, and tail-drops what the queue cannot hold', () => {
    const cap = { bytesPerSecond: 16_000, burstBytes: 1500, queueBytes: 8000 };
    const model = new ImpairmentModel({ rateCap: cap }, 14);
    const bytes = 320; // 32 kB/s offered: 320 B every 10 ms
    const verdicts = run(model, 3000, 10, bytes); // 30 s
    const times = deliveries(verdicts, 10);
    const span = times.at(-1)!.at - times[0]!.at;
    const throughput = ((times.length - 1) * bytes) / (span / 1000);
    expect(Math.abs(throughput - 16_000) / 16_000).toBeLessThan(0.01);
    expect(model.stats.droppedRate / 3000).toBeCloseTo(0.5, 1);
    // The queue bounds the waiting time: at most queueBytes / rate (+ one datagram).
    const maxWait = summary(times.map((d) => d.at - d.sentAt)).max;
    expect(maxWait).toBeLessThanOrEqual(((cap.queueBytes + bytes) / cap.bytesPerSecond) * 1000);
  });

  it('lets traffic under the cap through undelayed', () => {
    const model = new ImpairmentModel({ rateCap: { bytesPerSecond: 64_000 } }, 15);
    const verdicts = run(model, 1000, 20, 160); // 8 kB/s
    expect(deliveries(verdicts, 20).every((d) => d.at === d.sentAt)).toBe(true);
    expect(model.stats.droppedRate).toBe(0);
  });

  it('lets a burst of up to burstBytes through at once, then spaces datagrams at the rate', () => {
    const model = new ImpairmentModel(
      { rateCap: { bytesPerSecond: 10_000, burstBytes: 1000 } },
      16,
    );
    const at = Array.from({ length: 6 }, () => model.admit(0, 250)).map((v) =>
      v.dropped ? NaN : v.deliverAt[0],
    );
    expect(at).toEqual([0, 0, 0, 0, 25, 50]);
  });
});

describe('DueQueue', () => {
  it('pops by due time, ties in insertion order', () => {
    const queue = new DueQueue<string>();
    const random = xoshiro128ss(17);
    const pushed = Array.from({ length: 500 }, (_, i) => ({ due: Math.floor(random() * 50), i }));
    for (const { due, i } of pushed) queue.push(due, String(i));
    const popped: string[] = [];
    while (queue.size) popped.push(queue.pop()!.item);
    const expected = [...pushed].sort((a, b) => a.due - b.due || a.i - b.i).map((p) => String(p.i));
    expect(popped).toEqual(expected);
  });
});
