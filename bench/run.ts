/**
 * `npm run bench [-- --clicks 40] [-- --seconds 30] [-- --packets 20,10]
 * [-- --conditions defaults,no_processing,loaded] [-- --json] [-- --no-write] [-- --no-chromium]`:
 * a real call, Parley against Chromium measured the same way in the same run.
 *
 * For 20 ms and 10 ms packets and each condition, each engine makes a direct
 * call on loopback between two endpoints whose devices are a private PulseAudio's:
 * - Parley: two `parley` daemons (werift, Opus, our jitter buffer, naudiodon);
 * - Chromium: two headless Chromium pages (the browser's own WebRTC and NetEQ),
 *   on the same PulseAudio devices, picked by name.
 * Conditions, as users meet them: `defaults` (Parley's default voice
 * processing; Chromium's getUserMedia defaults: echoCancellation,
 * noiseSuppression, autoGainControl), `no_processing` (all off in both) and
 * `loaded` (the defaults beside a CPU hog at normal priority on every core,
 * `stress-ng --cpu N`, the same for both engines).
 * A train of clicks is played into Alice's microphone; one 4-channel recording
 * holds the microphone input and Bob's speaker output on one clock, so each
 * click's mouth-to-ear delay is the offset between its onsets on the two
 * channels (device to device, through PulseAudio both ways). The CPU time of
 * each endpoint (a daemon; a whole Chromium process tree) is read from
 * /proc/<pid>/stat over the same window. Then a sentence (espeak-ng) played
 * into Alice's microphone gives the speech similarity at Bob's speaker.
 * Parley's call set-up (invite → ringing, answer → first audio) is timed over
 * SETUPS calls first, the first call of freshly started daemons included.
 *
 * Prints median and p95 with Parley/Chromium ratios and writes the tables to
 * docs/BENCHMARKS.md; with `--json` the last line is
 * `{"runs":[{"packet_ms","condition","parley":{mouth_to_ear_p50_ms,
 * mouth_to_ear_p95_ms,cpu_percent,similarity},"chromium":{…}},…],"answer_to_audio_p95_ms"}`
 * (cpu_percent: the mean of the two endpoints, % of one core).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeClientContacts, startClient, type RunningClient } from '../test/harness/client';
import { startKeyring } from '../test/harness/keyring';
import { makeTempDir, removeTempDir } from '../test/harness/process';
import { startPulse, type Pulse } from '../test/harness/pulse';
import { startServer, type RunningServer } from '../test/harness/server';
import { renderSpeech } from '../test/harness/speech';
import { drawDelayPlot, type DelaySeries } from './plot';
import { chromiumPair, NO_VOICE_PROCESSING, clickRun, percentile, speechRun, type ClickResult } from './lib';
import { writeBenchSection } from './doc-section';

const { values: args } = parseArgs({
  options: {
    clicks: { type: 'string', default: '40' },
    seconds: { type: 'string', default: '30' },
    'no-write': { type: 'boolean', default: false },
    'no-chromium': { type: 'boolean', default: false },
    packets: { type: 'string', default: '20,10' },
    conditions: { type: 'string', default: 'defaults,no_processing,loaded' },
    json: { type: 'boolean', default: false },
  },
});
const CLICKS = Number(args.clicks);
const SECONDS = Number(args.seconds);
const SETUPS = 10;
const CONDITIONS = ['defaults', 'no_processing', 'loaded'] as const;
type Condition = (typeof CONDITIONS)[number];
const conditions = args.conditions.split(',').map((c) => {
  if (!(CONDITIONS as readonly string[]).includes(c)) throw new Error(`unknown condition "${c}" (one of ${CONDITIONS.join(', ')})`);
  return c as Condition;
});
const packets = args.packets.split(',').map((p) => {
  if (p !== '20' && p !== '10') throw new Error(`packets must be 20 or 10 ms, got "${p}"`);
  return Number(p) as 10 | 20;
});

interface Measured {
  clicks: ClickResult;
  similarity: number;
}
interface Result {
  frameMs: 10 | 20;
  condition: Condition;
  parley: Measured;
  chromium?: Measured;
  inviteToRinging: number[];
  answerToAudio: number[];
}

/**
 * A CPU hog at normal priority on every core for the `loaded` condition
 * (stress-ng from Debian); stopped with {@link stopHog}.
 */
function startHog(): ChildProcess {
  return spawn('stress-ng', ['--cpu', String(cpus().length), '--quiet'], { stdio: 'ignore' });
}
async function stopHog(hog: ChildProcess | undefined): Promise<void> {
  if (!hog || hog.exitCode !== null) return;
  const done = new Promise((r) => hog.once('exit', r));
  hog.kill('SIGTERM');
  await done;
}

async function measureParley(
  frameMs: 10 | 20,
  condition: Condition,
  pulse: Pulse,
  server: RunningServer,
  keyringEnv: Record<string, string>,
  dir: string,
  speechWav: string,
) {
  const tag = `f${frameMs}-${condition}`;
  const extraArgs = condition === 'no_processing' ? NO_VOICE_PROCESSING : [];
  const [alice, bob]: RunningClient[] = await Promise.all([
    startClient({ name: `alice-${tag}`, server, frameMs, env: { ...pulse.clientEnv('a'), ...keyringEnv }, input: 'a_mic', output: 'a_spk', extraArgs }),
    startClient({ name: `bob-${tag}`, server, frameMs, env: { ...pulse.clientEnv('b'), ...keyringEnv }, input: 'b_mic', output: 'b_spk', extraArgs }),
  ]);
  try {
    await makeClientContacts(alice!, bob!);
    const inviteToRinging: number[] = [];
    const answerToAudio: number[] = [];
    for (let i = 0; i < SETUPS; i++) {
      const { callId } = await alice!.request<{ callId: string }>('create_call', { to: bob!.name });
      await bob!.waitForCall(callId, (s) => s.state === 'incoming');
      const ringing = await alice!.waitForCall(callId, (s) => !!s.ringingAt);
      await bob!.request('answer_call', { callId });
      const [a, b] = await Promise.all([
        alice!.waitForCall(callId, (s) => !!s.firstAudioAt),
        bob!.waitForCall(callId, (s) => !!s.firstAudioAt),
      ]);
      inviteToRinging.push(ringing.ringingAt! - ringing.createdAt);
      answerToAudio.push(Math.max(a.firstAudioAt!, b.firstAudioAt!) - b.answeredAt!);
      await alice!.request('end_call', { callId });
      await bob!.waitForCall(callId, (s) => s.state === 'ended');
    }
    const { callId } = await alice!.request<{ callId: string }>('create_call', { to: bob!.name });
    await bob!.waitForCall(callId, (s) => s.state === 'incoming');
    await bob!.request('answer_call', { callId });
    await Promise.all([
      alice!.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
      bob!.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
    ]);
    await new Promise((r) => setTimeout(r, 1000)); // settle
    const clicks = await clickRun(pulse, dir, `parley-${tag}`, CLICKS, SECONDS, { alice: () => [alice!.pid], bob: () => [bob!.pid] });
    const similarity = await speechRun(pulse, dir, `parley-${tag}`, speechWav);
    await alice!.request('end_call', { callId });
    return {
      clicks,
      similarity,
      inviteToRinging: inviteToRinging.sort((x, y) => x - y),
      answerToAudio: answerToAudio.sort((x, y) => x - y),
    };
  } finally {
    await Promise.allSettled([alice!.stop(), bob!.stop()]);
  }
}

async function measureChromium(frameMs: 10 | 20, condition: Condition, pulse: Pulse, dir: string, speechWav: string): Promise<Measured> {
  const pair = await chromiumPair(pulse, frameMs, { processing: condition !== 'no_processing' });
  try {
    await new Promise((r) => setTimeout(r, 2000)); // settle
    const tag = `chromium-f${frameMs}-${condition}`;
    const clicks = await clickRun(pulse, dir, tag, CLICKS, SECONDS, pair.pids);
    return { clicks, similarity: await speechRun(pulse, dir, tag, speechWav) };
  } finally {
    await pair.close();
  }
}

async function main(): Promise<void> {
  const dir = makeTempDir('bench');
  const keyring = await startKeyring();
  const server = await startServer();
  const speechWav = join(dir, 'speech.wav');
  await renderSpeech('The quick brown fox jumps over the lazy dog near the river bank.', 'en-us', speechWav);
  const results: Result[] = [];
  let hog: ChildProcess | undefined;
  try {
    for (const frameMs of packets) {
      for (const condition of conditions) {
        // A fresh PulseAudio per run: one instance carrying a dozen calls' streams
        // in a row aborted here (null-sink queue overruns, then a failed assertion).
        const pulse = await startPulse();
        let p: Awaited<ReturnType<typeof measureParley>>;
        let chromium: Measured | undefined;
        try {
          hog = condition === 'loaded' ? startHog() : undefined;
          process.stderr.write(`Parley, ${frameMs} ms packets, ${condition} (${CLICKS} clicks over ~${SECONDS} s)…\n`);
          p = await measureParley(frameMs, condition, pulse, server, keyring.env, dir, speechWav);
          if (!args['no-chromium']) {
            process.stderr.write(`Chromium, ${frameMs} ms packets, ${condition}…\n`);
            chromium = await measureChromium(frameMs, condition, pulse, dir, speechWav);
          }
        } finally {
          await stopHog(hog);
          await pulse.stop();
        }
        results.push({
          frameMs,
          condition,
          parley: { clicks: p.clicks, similarity: p.similarity },
          ...(chromium ? { chromium } : {}),
          inviteToRinging: p.inviteToRinging,
          answerToAudio: p.answerToAudio,
        });
      }
    }
  } finally {
    await stopHog(hog);
    await server.stop();
    await keyring.stop();
    removeTempDir(dir);
  }

  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const machine = `${cpus().length} cores (${cpu}), Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
  const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');
  const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? (a / b).toFixed(2) : '–');
  const rows: string[] = [];
  const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '–');
  for (const r of results) {
    const engines: [string, Measured | undefined][] = [
      ['Parley', r.parley],
      ['Chromium', r.chromium],
    ];
    for (const [name, m] of engines) {
      if (!m) continue;
      const c = m.clicks;
      rows.push(
        `| ${r.frameMs} ms | ${r.condition} | ${name} | ${c.m2e.length} (${c.missed} missed) | ${f1(percentile(c.m2e, 50))} | ${f1(percentile(c.m2e, 95))} | ${f1(c.cpu.alice)} % | ${f1(c.cpu.bob)} % | ${f2(m.similarity)} |`,
      );
    }
    if (r.chromium) {
      const p = r.parley.clicks;
      const c = r.chromium.clicks;
      rows.push(
        `| ${r.frameMs} ms | ${r.condition} | **ratio Parley / Chromium** | | **${ratio(percentile(p.m2e, 50), percentile(c.m2e, 50))}** | **${ratio(percentile(p.m2e, 95), percentile(c.m2e, 95))}** | **${ratio(p.cpu.alice, c.cpu.alice)}** | **${ratio(p.cpu.bob, c.cpu.bob)}** | |`,
      );
    }
  }
  const setupRows = results.map(
    (r) =>
      `| ${r.frameMs} ms | ${r.condition} | ${r.inviteToRinging.length} | ${percentile(r.inviteToRinging, 50)} | ${percentile(r.inviteToRinging, 95)} | ${percentile(r.answerToAudio, 50)} | ${percentile(r.answerToAudio, 95)} |`,
  );
  const table = [
    '| packets | condition | engine | clicks detected | mouth-to-ear p50 (ms) | p95 (ms) | CPU Alice (sender) | CPU Bob (receiver) | speech similarity |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    '| packets | condition | Parley call set-ups | invite → ringing p50 (ms) | p95 (ms) | answer → first audio p50 (ms) | p95 (ms) |',
    '|---|---|---|---|---|---|---|',
    ...setupRows,
  ].join('\n');
  const allAnswerToAudio = results.flatMap((r) => r.answerToAudio).sort((x, y) => x - y);
  const engineJson = (m: Measured) => ({
    mouth_to_ear_p50_ms: percentile(m.clicks.m2e, 50),
    mouth_to_ear_p95_ms: percentile(m.clicks.m2e, 95),
    cpu_percent: Math.round(((m.clicks.cpu.alice + m.clicks.cpu.bob) / 2) * 10) / 10,
    similarity: Math.round(m.similarity * 1000) / 1000,
  });
  const json = {
    runs: results.map((r) => ({
      packet_ms: r.frameMs,
      condition: r.condition,
      parley: engineJson(r.parley),
      ...(r.chromium ? { chromium: engineJson(r.chromium) } : {}),
    })),
    answer_to_audio_p95_ms: percentile(allAnswerToAudio, 95),
  };
  console.log(`\nParley call benchmark — ${machine}\n\n${table}\n`);

  if (!args['no-write']) {
    // The raw delays beside the doc, and their plot drawn from them (`npx tsx bench/plot.ts` redraws it).
    const series: DelaySeries[] = results.flatMap((r) =>
      (
        [
          ['Parley', r.parley],
          ['Chromium', r.chromium],
        ] as const
      ).flatMap(([engine, m]) => (m ? [{ engine, condition: r.condition, packetMs: r.frameMs, delaysMs: m.clicks.m2e }] : [])),
    );
    mkdirSync('docs/bench', { recursive: true });
    writeFileSync('docs/bench/call-delays.json', `${JSON.stringify(series)}\n`);
    let plotLine = '';
    try {
      await drawDelayPlot(series, 'docs/bench/call-delay.png', `Mouth-to-ear per click, Parley and Chromium (${new Date().toISOString().slice(0, 10)})`);
      plotLine = '![Mouth-to-ear delay per click, per engine, packet size and condition](bench/call-delay.png)\n\nBox: p25–p75 with the median; whiskers: min–max; ticks: single clicks. Raw delays: `docs/bench/call-delays.json`.';
    } catch (e) {
      process.stderr.write(`the delay plot was not drawn: ${e instanceof Error ? e.message : String(e)}\n`);
    }
    const written = writeBenchSection('call', [
      '## Real call: mouth-to-ear, CPU and set-up, against Chromium (`npm run bench`)',
      '',
      `Command: \`npm run bench -- --packets ${packets.join(',')} --conditions ${conditions.join(',')}\` (${CLICKS} clicks over ~${SECONDS} s per engine, packet size and condition). Machine: ${machine}.`,
      '',
      'Method: a direct call on loopback between two endpoints on one private PulseAudio — two `parley` daemons, then two',
      "headless Chromium pages (the browser's own WebRTC, NetEQ; devices picked by name). Conditions: `defaults` (Parley's",
      "default voice processing; Chromium's getUserMedia defaults, echo cancellation, noise suppression and gain control on),",
      '`no_processing` (all off in both), `loaded` (the defaults beside `stress-ng --cpu <cores>` at normal priority, the same',
      "for both engines). A click train (10 ms 2 kHz bursts, −6 dBFS) is played into Alice's microphone; one",
      "4-channel recording of the probe sink holds the microphone input and Bob's speaker output on one clock, and each",
      "click's delay is the onset offset between the two channels (device to device, through PulseAudio both ways). CPU is",
      'utime+stime over the click train, as % of one core: the daemon process for Parley, the whole process tree (browser,',
      'renderer, audio and network services) for Chromium. Ratios below 1 mean Parley is faster or lighter. Speech',
      "similarity: one espeak-ng sentence into Alice's microphone, Bob's speaker compared with it (docs/similarity.md).",
      `Call set-up: ${SETUPS} Parley calls per packet size before the click train; invite → ringing on the caller's clock,`,
      "answer → first audio from the callee's answer to the later of the two sides' first played packet (one machine).",
      '',
      table,
      ...(plotLine ? ['', plotLine] : []),
    ]);
    console.log(`written to ${written}`);
  }
  if (args.json) console.log(JSON.stringify(json));
}

main().catch((e: unknown) => {
  console.error(`bench failed: ${e instanceof Error ? e.stack : e}`);
  process.exit(1);
});
