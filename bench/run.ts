/**
 * `npm run bench [-- --clicks 40] [-- --seconds 30] [-- --no-write] [-- --no-chromium]`:
 * a real call, Parley against Chromium measured the same way in the same run.
 *
 * For 20 ms and 10 ms packets, each engine makes a direct call on loopback
 * between two endpoints whose devices are a private PulseAudio's:
 * - Parley: two `parley` daemons (werift, Opus, our jitter buffer, naudiodon);
 * - Chromium: two headless Chromium pages (the browser's own WebRTC and NetEQ),
 *   on the same PulseAudio devices, picked by name, processing off.
 * A train of clicks is played into Alice's microphone; one 4-channel recording
 * holds the microphone input and Bob's speaker output on one clock, so each
 * click's mouth-to-ear delay is the offset between its onsets on the two
 * channels (device to device, through PulseAudio both ways). The CPU time of
 * each endpoint (a daemon; a whole Chromium process tree) is read from
 * /proc/<pid>/stat over the same window. Parley's call set-up (invite →
 * ringing, answer → first audio) is timed over SETUPS calls first.
 *
 * Prints median and p95 with Parley/Chromium ratios and writes the tables to
 * docs/BENCHMARKS.md.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { makeClientContacts, startClient, type RunningClient } from '../test/harness/client';
import { startKeyring } from '../test/harness/keyring';
import { makeTempDir, removeTempDir } from '../test/harness/process';
import { startPulse, type Pulse } from '../test/harness/pulse';
import { startServer, type RunningServer } from '../test/harness/server';
import { chromiumPair, NO_VOICE_PROCESSING, clickRun, percentile, type ClickResult } from './lib';

const { values: args } = parseArgs({
  options: {
    clicks: { type: 'string', default: '40' },
    seconds: { type: 'string', default: '30' },
    'no-write': { type: 'boolean', default: false },
    'no-chromium': { type: 'boolean', default: false },
  },
});
const CLICKS = Number(args.clicks);
const SECONDS = Number(args.seconds);
const SETUPS = 10;

interface Result {
  frameMs: 10 | 20;
  parley: ClickResult;
  chromium?: ClickResult;
  inviteToRinging: number[];
  answerToAudio: number[];
}

async function measureParley(frameMs: 10 | 20, pulse: Pulse, server: RunningServer, keyringEnv: Record<string, string>, dir: string) {
  const tag = `f${frameMs}`;
  const [alice, bob]: RunningClient[] = await Promise.all([
    startClient({ name: `alice-${tag}`, server, frameMs, env: { ...pulse.clientEnv('a'), ...keyringEnv }, input: 'a_mic', output: 'a_spk', extraArgs: NO_VOICE_PROCESSING }),
    startClient({ name: `bob-${tag}`, server, frameMs, env: { ...pulse.clientEnv('b'), ...keyringEnv }, input: 'b_mic', output: 'b_spk', extraArgs: NO_VOICE_PROCESSING }),
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
    await alice!.request('end_call', { callId });
    return {
      clicks,
      inviteToRinging: inviteToRinging.sort((x, y) => x - y),
      answerToAudio: answerToAudio.sort((x, y) => x - y),
    };
  } finally {
    await Promise.allSettled([alice!.stop(), bob!.stop()]);
  }
}

async function measureChromium(frameMs: 10 | 20, pulse: Pulse, dir: string): Promise<ClickResult> {
  const pair = await chromiumPair(pulse, frameMs);
  try {
    await new Promise((r) => setTimeout(r, 2000)); // settle
    return await clickRun(pulse, dir, `chromium-f${frameMs}`, CLICKS, SECONDS, pair.pids);
  } finally {
    await pair.close();
  }
}

async function main(): Promise<void> {
  const dir = makeTempDir('bench');
  const pulse = await startPulse();
  const keyring = await startKeyring();
  const server = await startServer();
  const results: Result[] = [];
  try {
    for (const frameMs of [20, 10] as const) {
      process.stderr.write(`Parley, ${frameMs} ms packets (${CLICKS} clicks over ~${SECONDS} s)…\n`);
      const p = await measureParley(frameMs, pulse, server, keyring.env, dir);
      let chromium: ClickResult | undefined;
      if (!args['no-chromium']) {
        process.stderr.write(`Chromium, ${frameMs} ms packets…\n`);
        chromium = await measureChromium(frameMs, pulse, dir);
      }
      results.push({ frameMs, parley: p.clicks, ...(chromium ? { chromium } : {}), inviteToRinging: p.inviteToRinging, answerToAudio: p.answerToAudio });
    }
  } finally {
    await server.stop();
    await keyring.stop();
    await pulse.stop();
    removeTempDir(dir);
  }

  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const machine = `${cpus().length} cores (${cpu}), Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
  const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');
  const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? (a / b).toFixed(2) : '–');
  const rows: string[] = [];
  for (const r of results) {
    const engines: [string, ClickResult | undefined][] = [
      ['Parley', r.parley],
      ['Chromium', r.chromium],
    ];
    for (const [name, c] of engines) {
      if (!c) continue;
      rows.push(
        `| ${r.frameMs} ms | ${name} | ${c.m2e.length} (${c.missed} missed) | ${f1(percentile(c.m2e, 50))} | ${f1(percentile(c.m2e, 95))} | ${f1(c.cpu.alice)} % | ${f1(c.cpu.bob)} % |`,
      );
    }
    if (r.chromium) {
      const p = r.parley;
      const c = r.chromium;
      rows.push(
        `| ${r.frameMs} ms | **ratio Parley / Chromium** | | **${ratio(percentile(p.m2e, 50), percentile(c.m2e, 50))}** | **${ratio(percentile(p.m2e, 95), percentile(c.m2e, 95))}** | **${ratio(p.cpu.alice, c.cpu.alice)}** | **${ratio(p.cpu.bob, c.cpu.bob)}** |`,
      );
    }
  }
  const setupRows = results.map(
    (r) =>
      `| ${r.frameMs} ms | ${r.inviteToRinging.length} | ${percentile(r.inviteToRinging, 50)} | ${percentile(r.inviteToRinging, 95)} | ${percentile(r.answerToAudio, 50)} | ${percentile(r.answerToAudio, 95)} |`,
  );
  const table = [
    '| packets | engine | clicks detected | mouth-to-ear p50 (ms) | p95 (ms) | CPU Alice (sender) | CPU Bob (receiver) |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
    '| packets | Parley call set-ups | invite → ringing p50 (ms) | p95 (ms) | answer → first audio p50 (ms) | p95 (ms) |',
    '|---|---|---|---|---|---|',
    ...setupRows,
  ].join('\n');
  console.log(`\nParley call benchmark — ${machine}\n\n${table}\n`);

  if (!args['no-write']) {
    const path = 'docs/BENCHMARKS.md';
    let doc = '';
    try {
      doc = readFileSync(path, 'utf8');
    } catch {
      /* new file */
    }
    const section = [
      '<!-- bench:call:start -->',
      '## Real call: mouth-to-ear, CPU and set-up, against Chromium (`npm run bench`)',
      '',
      `Command: \`npm run bench\` (${CLICKS} clicks over ~${SECONDS} s per engine and packet size). Machine: ${machine}.`,
      '',
      'Method: a direct call on loopback between two endpoints on one private PulseAudio — two `parley` daemons, then two',
      "headless Chromium pages (the browser's own WebRTC, NetEQ; devices picked by name, echo cancellation, noise",
      "suppression and gain control off). A click train (10 ms 2 kHz bursts, −6 dBFS) is played into Alice's microphone; one",
      "4-channel recording of the probe sink holds the microphone input and Bob's speaker output on one clock, and each",
      "click's delay is the onset offset between the two channels (device to device, through PulseAudio both ways). CPU is",
      'utime+stime over the click train, as % of one core: the daemon process for Parley, the whole process tree (browser,',
      'renderer, audio and network services) for Chromium. Ratios below 1 mean Parley is faster or lighter.',
      `Call set-up: ${SETUPS} Parley calls per packet size before the click train; invite → ringing on the caller's clock,`,
      "answer → first audio from the callee's answer to the later of the two sides' first played packet (one machine).",
      '',
      table,
      '<!-- bench:call:end -->',
    ].join('\n');
    const re = /<!-- bench:call:start -->[\s\S]*<!-- bench:call:end -->/;
    if (!doc) doc = '# Parley benchmarks\n\nFigures from `npm run bench` and friends; each section names its command and machine.\n\n';
    doc = re.test(doc) ? doc.replace(re, section) : `${doc.trimEnd()}\n\n${section}\n`;
    writeFileSync(path, doc);
    console.log(`written to ${path}`);
  }
}

main().catch((e: unknown) => {
  console.error(`bench failed: ${e instanceof Error ? e.stack : e}`);
  process.exit(1);
});
