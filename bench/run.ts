/**
 * `npm run bench [-- --clicks 40] [-- --seconds 30] [-- --no-write]`: first benchmark of a real call.
 *
 * For 20 ms and 10 ms frames: two headless clients in a direct call over
 * loopback, devices on a private PulseAudio. A train of clicks is played into
 * Alice's microphone; one 4-channel recording holds the microphone input and
 * Bob's speaker output on one clock, so each click's mouth-to-ear delay is the
 * offset between its onset on the two channels (device to device, through
 * PulseAudio both ways). Meanwhile the CPU time of each client process is read
 * from /proc/<pid>/stat over the same window. Before that, SETUPS calls are set
 * up and torn down to time invite → ringing and answer → first audio.
 *
 * Prints median and p95 and writes the table to docs/BENCHMARKS.md.
 */
import { cpus } from 'node:os';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { detectOnsets } from '../main/media/analysis';
import { startClient, type RunningClient } from '../test/harness/client';
import { startKeyring } from '../test/harness/keyring';
import { makeTempDir, removeTempDir } from '../test/harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../test/harness/pulse';
import { startServer, type RunningServer } from '../test/harness/server';
import { channel, readWav, writeWav } from '../test/harness/speech';

const { values: args } = parseArgs({
  options: {
    clicks: { type: 'string', default: '40' },
    seconds: { type: 'string', default: '30' },
    'no-write': { type: 'boolean', default: false },
  },
});
const CLICKS = Number(args.clicks);
const SECONDS = Number(args.seconds);
const CLK_TCK = 100; // Linux USER_HZ for /proc/<pid>/stat

interface Result {
  frameMs: 10 | 20;
  m2e: number[];
  missed: number;
  cpu: { alice: number; bob: number };
  /** Per call set-up: invite → remote ringing (caller's clock) and answer → first audio on both sides, ms. */
  inviteToRinging: number[];
  answerToAudio: number[];
}

const SETUPS = 10;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

function cpuTicks(pid: number): number {
  // Fields 14 and 15 (utime, stime) after the parenthesised command name.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** A click train: 10 ms bursts of a 2 kHz tone at −6 dBFS every `periodMs`, 48 kHz mono. */
function clickTrain(count: number, periodMs: number): Int16Array {
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

async function measure(frameMs: 10 | 20, pulse: Pulse, server: RunningServer, keyringEnv: Record<string, string>, dir: string): Promise<Result> {
  const tag = `f${frameMs}`;
  const [alice, bob]: RunningClient[] = await Promise.all([
    startClient({ name: `alice-${tag}`, server, frameMs, env: { ...pulse.clientEnv('a'), ...keyringEnv }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: `bob-${tag}`, server, frameMs, env: { ...pulse.clientEnv('b'), ...keyringEnv }, input: 'b_mic', output: 'b_spk' }),
  ]);
  try {
    // Call set-up, SETUPS times: invite → ringing, answer → first audio (both sides).
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

    const periodMs = Math.max(500, Math.floor((SECONDS * 1000) / CLICKS));
    const clicks = join(dir, `clicks-${tag}.wav`);
    writeWav(clicks, clickTrain(CLICKS, periodMs));
    const probe = join(dir, `probe-${tag}.wav`);
    const rec = await pulse.record('probe.monitor', probe, 4);
    const t0 = performance.now();
    const c0 = { alice: cpuTicks(alice!.pid), bob: cpuTicks(bob!.pid) };
    await pulse.play('a_in', clicks);
    const elapsedS = (performance.now() - t0) / 1000;
    const c1 = { alice: cpuTicks(alice!.pid), bob: cpuTicks(bob!.pid) };
    await new Promise((r) => setTimeout(r, 500));
    await rec.stop();
    await alice!.request('end_call', { callId });

    const wav = readWav(probe);
    const input = detectOnsets(channel(wav, PROBE_CHANNEL.aliceMicInput - 1), { thresholdDbfs: -30, minGapMs: 200 });
    const output = detectOnsets(channel(wav, PROBE_CHANNEL.bobSpeaker - 1), { thresholdDbfs: -30, minGapMs: 200 });
    const m2e: number[] = [];
    let missed = 0;
    for (const t of input) {
      const hit = output.find((o) => o >= t && o - t < 400);
      if (hit === undefined) missed++;
      else m2e.push(hit - t);
    }
    const pct = (ticks: number) => (100 * ticks) / CLK_TCK / elapsedS;
    return {
      frameMs,
      m2e: m2e.sort((a, b) => a - b),
      missed,
      cpu: { alice: pct(c1.alice - c0.alice), bob: pct(c1.bob - c0.bob) },
      inviteToRinging: inviteToRinging.sort((x, y) => x - y),
      answerToAudio: answerToAudio.sort((x, y) => x - y),
    };
  } finally {
    await Promise.allSettled([alice!.stop(), bob!.stop()]);
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
      process.stderr.write(`measuring ${frameMs} ms frames (${CLICKS} clicks over ~${SECONDS} s)…\n`);
      results.push(await measure(frameMs, pulse, server, keyring.env, dir));
    }
  } finally {
    await server.stop();
    await keyring.stop();
    await pulse.stop();
    removeTempDir(dir);
  }

  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const machine = `${cpus().length} cores (${cpu}), Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
  const rows = results.map((r) => {
    const p50 = percentile(r.m2e, 50);
    const p95 = percentile(r.m2e, 95);
    return `| ${r.frameMs} ms | ${r.m2e.length} (${r.missed} missed) | ${p50.toFixed(1)} | ${p95.toFixed(1)} | ${r.cpu.alice.toFixed(1)} % | ${r.cpu.bob.toFixed(1)} % |`;
  });
  const setupRows = results.map(
    (r) =>
      `| ${r.frameMs} ms | ${r.inviteToRinging.length} | ${percentile(r.inviteToRinging, 50)} | ${percentile(r.inviteToRinging, 95)} | ${percentile(r.answerToAudio, 50)} | ${percentile(r.answerToAudio, 95)} |`,
  );
  const table = [
    '| frames | clicks detected | mouth-to-ear p50 (ms) | p95 (ms) | CPU Alice (sender) | CPU Bob (receiver) |',
    '|---|---|---|---|---|---|',
    ...rows,
    '',
    '| frames | call set-ups | invite → ringing p50 (ms) | p95 (ms) | answer → first audio p50 (ms) | p95 (ms) |',
    '|---|---|---|---|---|---|',
    ...setupRows,
  ].join('\n');
  console.log(`\nParley call benchmark — ${machine}\n\n${table}\n`);
  console.log('Reference (DESIGN.md, same method on this machine): Chromium ↔ Chromium through a PulseAudio sink ≈ 105 ms; Chromium endpoint CPU ≈ 13–18 % of a core.');

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
      '## Real call: mouth-to-ear and CPU (`npm run bench`)',
      '',
      `Command: \`npm run bench\` (${CLICKS} clicks over ~${SECONDS} s per frame size). Machine: ${machine}.`,
      '',
      'Method: two `parley` daemons in a direct call on loopback; a click train (10 ms 2 kHz bursts, −6 dBFS) is played into',
      "Alice's PulseAudio microphone; one 4-channel recording of the probe sink holds the microphone input and Bob's speaker",
      'output on one clock, and each click\'s delay is the onset offset between the two channels (device to device, through',
      'PulseAudio both ways). CPU is utime+stime of each daemon process from /proc over the click train, as % of one core.',
      `Call set-up: ${SETUPS} calls per frame size before the click train; invite → ringing on the caller's clock, answer →`,
      "first audio from the callee's answer to the later of the two sides' first played packet (one machine, one clock).",
      '',
      table,
      '',
      'Peer reference from DESIGN.md (measured the same way on this machine): Chromium ↔ Chromium through a PulseAudio sink',
      '≈ 105 ms; one Chromium endpoint ≈ 13–18 % of a core. A Chromium peer in the same run comes with the call-quality work.',
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
