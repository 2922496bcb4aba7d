/** Measurement pieces shared by the benchmarks (bench/run.ts, bench/quality.ts). */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { launchChromium } from '../test/harness/chromium';
import { REPO_ROOT } from '../test/harness/server';
import { detectOnsets, speechSimilarity, type Pcm } from '../main/media/analysis';
import { PROBE_CHANNEL, type Pulse } from '../test/harness/pulse';
import { channel, readWav, writeWav } from '../test/harness/speech';

/**
 * Daemon flags for the comparisons with Chromium: its pages run with echo
 * cancellation, noise suppression and gain control off, so Parley's voice
 * processing (on by default since issue 7) is turned off too.
 */
export const NO_VOICE_PROCESSING = ['--no-echo-cancellation', '--no-noise-suppression', '--no-gain-control'];

const CLK_TCK = 100; // Linux USER_HZ for /proc/<pid>/stat

export interface ClickResult {
  m2e: number[];
  missed: number;
  /** % of one core over the click train, per endpoint. */
  cpu: { alice: number; bob: number };
}
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

/**
 * utime + stime in clock ticks (fields 14 and 15) of a /proc stat file: a
 * process's (`/proc/<pid>/stat`) or one thread's (`/proc/<pid>/task/<tid>/stat`).
 * @throws when the file cannot be read (the process or thread ended).
 */
export function statTicks(path: string): number {
  const stat = readFileSync(path, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** utime + stime of processes, in clock ticks; a process that ended counts 0. */
export function cpuTicks(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      sum += statTicks(`/proc/${pid}/stat`);
    } catch {
      // the process ended
    }
  }
  return sum;
}

/** A click train: 10 ms bursts of a 2 kHz tone at −6 dBFS every `periodMs`, 48 kHz mono. */
export function clickTrain(count: number, periodMs: number): Int16Array {
  const period = (48_000 * periodMs) / 1000;
  const out = new Int16Array(period * count + 48_000);
  for (let c = 0; c < count; c++) {
    for (let i = 0; i < 480; i++) {
      const env = Math.sin((Math.PI * i) / 480);
      out[c * period + 24_000 + i] = Math.round(16_000 * env * Math.sin((2 * Math.PI * 2000 * i) / 48_000));
    }
  }
  return out;
}

/** Plays the click train into Alice's mic during a connected call and measures delay and CPU. */
export async function clickRun(
  pulse: Pulse,
  dir: string,
  tag: string,
  count: number,
  seconds: number,
  pids: { alice: () => number[]; bob: () => number[] },
): Promise<ClickResult> {
  const periodMs = Math.max(500, Math.floor((seconds * 1000) / count));
  const clicks = join(dir, `clicks-${tag}.wav`);
  writeWav(clicks, clickTrain(count, periodMs));
  const probe = join(dir, `probe-${tag}.wav`);
  const rec = await pulse.record('probe.monitor', probe, 4);
  const [pa, pb] = [pids.alice(), pids.bob()];
  const t0 = performance.now();
  const c0 = { alice: cpuTicks(pa), bob: cpuTicks(pb) };
  await pulse.play('a_in', clicks);
  const elapsedS = (performance.now() - t0) / 1000;
  const c1 = { alice: cpuTicks(pa), bob: cpuTicks(pb) };
  await new Promise((r) => setTimeout(r, 500));
  await rec.stop();
  const wav = readWav(probe);
  const { m2e, missed, inOrder } = clickDelays(channel(wav, PROBE_CHANNEL.aliceMicInput - 1), channel(wav, PROBE_CHANNEL.bobSpeaker - 1), periodMs);
  const pct = (ticks: number) => (100 * ticks) / CLK_TCK / elapsedS;
  if (process.env.PARLEY_BENCH_TRACE) console.error(`[trace] ${tag}: clicks in order ${inOrder.map((x) => x.toFixed(0)).join(' ')}`);
  return { m2e, missed, cpu: { alice: pct(c1.alice - c0.alice), bob: pct(c1.bob - c0.bob) } };
}

/**
 * The bench's delay method: each click's onset in `input` (a microphone's
 * input) matched with the first onset in `output` (the far speaker) after it,
 * within the click period (less 50 ms) and at most 900 ms. Both 48 kHz mono
 * on one clock; delays in ms, sorted; `missed` counts clicks never heard.
 */
export function clickDelays(input: Pcm, output: Pcm, periodMs: number): { m2e: number[]; missed: number; inOrder: number[] } {
  const sent = detectOnsets(input, { thresholdDbfs: -30, minGapMs: 200 });
  const heard = detectOnsets(output, { thresholdDbfs: -30, minGapMs: 200 });
  const m2e: number[] = [];
  let missed = 0;
  for (const t of sent) {
    const hit = heard.find((o) => o >= t && o - t < Math.min(900, periodMs - 50));
    if (hit === undefined) missed++;
    else m2e.push(hit - t);
  }
  return { inOrder: [...m2e], m2e: m2e.sort((a, b) => a - b), missed };
}


/**
 * Plays `speechWav` (48 kHz mono) into Alice's microphone during a connected
 * call and returns how similar Bob's speaker output is to it
 * (docs/similarity.md; 0…1, ≥ 0.5 counts as understood), from the moment the
 * microphone hears it (same probe clock as {@link clickRun}).
 */
export async function speechRun(pulse: Pulse, dir: string, tag: string, speechWav: string): Promise<number> {
  const probe = join(dir, `speech-probe-${tag}.wav`);
  const rec = await pulse.record('probe.monitor', probe, 4);
  await pulse.play('a_in', speechWav);
  await new Promise((r) => setTimeout(r, 800));
  await rec.stop();
  const wav = readWav(probe);
  const mic = channel(wav, PROBE_CHANNEL.aliceMicInput - 1);
  let from = 0;
  while (from < mic.length && Math.abs(mic[from]!) < 300) from++;
  const heard = channel(wav, PROBE_CHANNEL.bobSpeaker - 1).subarray(Math.max(0, from - 4800));
  return speechSimilarity(readWav(speechWav).samples, heard).score;
}

export interface ChromiumPair {
  /** Alice's and Bob's pages (Alice offered). */
  call<T>(who: 'alice' | 'bob', fn: string, arg?: unknown): Promise<T>;
  pids: { alice: () => number[]; bob: () => number[] };
  close(): Promise<void>;
}

/**
 * Two headless Chromium instances on the Pulse harness's devices (Alice on a_mic/a_spk, Bob on b_mic/b_spk),
 * connected by a call the test drives (test/fixtures/chromium-device-peer.html), with `ptime` packets;
 * `ice.processing` opens the microphones with getUserMedia's default voice processing (all on), else all off.
 * @throws Error when a device is missing or the call does not connect within 10 s.
 */
export async function chromiumPair(
  pulse: Pulse,
  ptime: 10 | 20,
  ice: { iceServers?: { urls: string[]; username?: string; credential?: string }[]; relayOnly?: boolean; processing?: boolean } = {},
): Promise<ChromiumPair> {
  const html = readFileSync(join(REPO_ROOT, 'test/fixtures/chromium-device-peer.html'));
  const server = createServer((_q, r) => r.writeHead(200, { 'content-type': 'text/html' }).end(html));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/`;
  const [a, b] = await Promise.all([
    launchChromium({ fakeDevices: false, env: pulse.clientEnv('a') }),
    launchChromium({ fakeDevices: false, env: pulse.clientEnv('b') }),
  ]);
  const close = async () => {
    await Promise.allSettled([a.close(), b.close()]);
    server.close();
  };
  try {
    const [pa, pb] = await Promise.all([a.browser.newPage(), b.browser.newPage()]);
    await Promise.all([pa.goto(url), pb.goto(url)]);
    const call = <T>(who: 'alice' | 'bob', fn: string, arg?: unknown): Promise<T> =>
      (who === 'alice' ? pa : pb).evaluate(
        ([f, x]) => (globalThis as unknown as Record<string, (a: unknown) => Promise<T>>)[f as string]!(x),
        [fn, arg] as const,
      ) as Promise<T>;
    await call('alice', 'init', { mic: 'a_mic', speaker: 'a_spk', ...ice });
    await call('bob', 'init', { mic: 'b_mic', speaker: 'b_spk', ...ice });
    const offer = await call<string>('alice', 'makeOffer', ptime);
    const answer = await call<string>('bob', 'acceptOffer', [offer, ptime]);
    await call('alice', 'acceptAnswer', answer);
    for (let i = 0; !(await call<boolean>('alice', 'connected')); i++) {
      if (i > 100) throw new Error('Chromium peers did not connect in 10 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    return { call, pids: { alice: () => a.pids(), bob: () => b.pids() }, close };
  } catch (e) {
    await close();
    throw e;
  }
}
