/**
 * `npm run bench:recovery [-- --json] [-- --trials 3] [-- --no-suspend] [-- --scenarios a,b] [-- --no-write]`:
 * the audible gap when a call's path or signaling breaks, per scenario, over
 * repeated trials (issue 18). Two relay-only daemons through coturn, each
 * starting on its own user-space relay (Alice A, Bob B; C is the spare both
 * lists carry second), Alice's signaling through a TCP proxy. Each trial is a
 * fresh call with a steady 9 s tone from Alice's microphone; the gap is the
 * longest run of 10 ms windows below −45 dBFS at Bob's speaker (PulseAudio).
 *
 * Scenarios:
 * - `signaling_blip_5s`: Alice's signaling cut for 5 s (target 0 ms);
 * - `one_sided_path`: relay B drops everything towards Bob only (target p95 ≤ 3 s);
 * - `relay_loss`: relays A and B drop everything (both sides' relay gone);
 * - `suspend_30s`: Bob SIGSTOPped 30 s: the "gap" is from SIGCONT until both
 *   sides say `connected` (target ≤ 3 s), one trial unless `--trials` says more.
 * A trial counts as recovered when both sides say `connected` afterwards.
 * Network changes need network namespaces; they are measured by
 * test/integration/network-change.test.ts.
 *
 * `--json` prints one line: `{"scenarios":[{"name","gap_ms_p50","gap_ms_p95","recovered","trials"}]}`.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { makeClientContacts, startClient, type RunningClient } from '../test/harness/client';
import { startCoturn } from '../test/harness/coturn';
import { startImpairRelay, type ImpairRelay } from '../test/harness/impair';
import { startKeyring } from '../test/harness/keyring';
import { makeTempDir, removeTempDir } from '../test/harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../test/harness/pulse';
import { startServer } from '../test/harness/server';
import { channel, longestSilenceMs, readWav } from '../test/harness/speech';
import { startTcpProxy, type TcpProxy } from '../test/harness/tcp-proxy';
import { percentile } from './lib';
import { writeBenchSection } from './doc-section';

const args = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    trials: { type: 'string', default: '3' },
    'no-suspend': { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    /** Comma-separated scenario names to run (default: all). */
    scenarios: { type: 'string', default: '' },
  },
}).values;
const TRIALS = Math.max(1, Number(args.trials));
const out = args.json ? process.stderr : process.stdout;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Env {
  dir: string;
  pulse: Pulse;
  proxy: TcpProxy;
  relays: [ImpairRelay, ImpairRelay, ImpairRelay];
  alice: RunningClient;
  bob: RunningClient;
}

/** One scenario's figures (the keys of the `--json` line). */
interface ScenarioResult {
  name: string;
  gap_ms_p50: number;
  gap_ms_p95: number;
  recovered: boolean;
  trials: number;
}

const latest = (c: RunningClient, callId: string) => c.events.filter((e) => e.callId === callId).at(-1);

async function startCall(e: Env): Promise<string> {
  const { callId } = await e.alice.request<{ callId: string }>('create_call', { to: 'rbob' });
  await e.bob.waitForCall(callId, (s) => s.state === 'incoming');
  await e.bob.request('answer_call', { callId });
  await Promise.all([
    e.alice.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt, 15_000),
    e.bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt, 15_000),
  ]);
  return callId;
}

/** Waits until both sides say `connected` (true) or `ms` passes (false). */
async function bothConnected(e: Env, callId: string, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (latest(e.alice, callId)?.media === 'connected' && latest(e.bob, callId)?.media === 'connected') return true;
    await sleep(50);
  }
  return false;
}

/** For a trial that did not recover: what each side showed last (media, signaling, transport, when). */
function describeStuck(e: Env, callId: string): void {
  for (const c of [e.alice, e.bob]) {
    const last = c.events.filter((s) => s.callId === callId).slice(-4);
    out.write(`  ${c.name}: ${last.map((s) => `${s.state}/${s.media ?? '-'}/${s.signaling ?? '-'}/${s.transport ?? '-'}@${s.mediaSince ?? '-'}`).join(' → ')}\n`);
  }
}

async function endCall(e: Env, callId: string): Promise<void> {
  await e.alice.request('end_call', { callId }).catch(() => {});
  await e.bob.waitForCall(callId, (s) => s.state === 'ended', 5_000).catch(() => {});
  await sleep(500);
}

/** Plays the tone, breaks something 2.5 s in (`breakIt`, `repair` after it), returns the gap at Bob's speaker. */
async function toneTrial(e: Env, breakIt: () => void | Promise<void>, repair: () => void | Promise<void>): Promise<{ gap: number; recovered: boolean }> {
  const callId = await startCall(e);
  const tone = join(e.dir, 'tone.wav');
  const probe = join(e.dir, 'probe.wav');
  const rec = await e.pulse.record('probe.monitor', probe, 4);
  const playing = e.pulse.play('a_in', tone);
  await sleep(2500);
  await breakIt();
  await playing;
  await rec.stop();
  const recovered = await bothConnected(e, callId, 8_000);
  if (!recovered) describeStuck(e, callId);
  await repair();
  const wav = readWav(probe);
  const mic = channel(wav, PROBE_CHANNEL.aliceMicInput - 1);
  const heard = channel(wav, PROBE_CHANNEL.bobSpeaker - 1);
  let start = 0;
  while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
  const startMs = start / 48;
  const gap = longestSilenceMs(heard, startMs + 500, startMs + 8500);
  await endCall(e, callId);
  return { gap, recovered };
}

async function suspendTrial(e: Env): Promise<{ gap: number; recovered: boolean }> {
  const callId = await startCall(e);
  e.bob.kill('SIGSTOP');
  await sleep(30_000);
  const wokeAt = Date.now();
  e.bob.kill('SIGCONT');
  // Bob's "connected" from before the sleep is stale: count from the status that says it noticed the jump.
  const noticed = await e.bob.waitForCall(callId, (s) => (s.suspendedMs ?? 0) > 25_000, 5_000).catch(() => undefined);
  const from = noticed ? e.bob.events.lastIndexOf(noticed) : e.bob.events.length;
  let recovered = false;
  while (Date.now() - wokeAt < 15_000) {
    const bobLater = e.bob.events.slice(from + 1).filter((s) => s.callId === callId);
    const bobOk = bobLater.length > 0 ? bobLater.at(-1)!.media === 'connected' : Date.now() - wokeAt > 1500 && latest(e.bob, callId)?.media === 'connected';
    if (bobOk && latest(e.alice, callId)?.media === 'connected') {
      recovered = true;
      break;
    }
    await sleep(20);
  }
  const gap = recovered ? Date.now() - wokeAt : NaN;
  if (!recovered) describeStuck(e, callId);
  await endCall(e, callId);
  return { gap: recovered ? gap : NaN, recovered };
}

function summarise(name: string, runs: { gap: number; recovered: boolean }[]): ScenarioResult {
  const gaps = runs.map((r) => r.gap).filter((g) => Number.isFinite(g)).sort((a, b) => a - b);
  return {
    name,
    gap_ms_p50: Math.round(percentile(gaps, 50)),
    gap_ms_p95: Math.round(percentile(gaps, 95)),
    recovered: runs.every((r) => r.recovered),
    trials: runs.length,
  };
}

async function main(): Promise<void> {
  const started = Date.now();
  const dir = makeTempDir('bench-recovery');
  const [pulse, keyring, coturn] = await Promise.all([startPulse(), startKeyring(), startCoturn({ relayPortCount: 400 })]);
  const relays = (await Promise.all(
    [1, 2, 3].map((seed) => startImpairRelay({ upstream: { host: coturn.host, port: coturn.port }, profile: 'clean', seed })),
  )) as [ImpairRelay, ImpairRelay, ImpairRelay];
  const [a, b, c] = relays.map((r) => JSON.stringify(r.url()));
  const server = await startServer({
    configToml: ['[turn]', `urls = [${a}, ${c}]`, `secret = ${JSON.stringify(coturn.secret)}`, 'experiment_accounts = ["rbob"]', `experiment_urls = [${b}, ${c}]`].join('\n'),
  });
  const proxy = await startTcpProxy(server.url);
  const [alice, bob] = await Promise.all([
    startClient({ name: 'ralice', server: proxy, relay: true, mediaTimeoutS: 60, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'rbob', server, relay: true, mediaTimeoutS: 60, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
  await promisify(execFile)('sox', ['-R', '-n', '-r', '48000', '-c', '1', '-b', '16', join(dir, 'tone.wav'), 'synth', '9', 'sine', '440', 'vol', '0.3']);
  const e: Env = { dir, pulse, proxy, relays, alice, bob };
  const [relayA, relayB] = relays;
  const dead = { name: 'dead', loss: { model: 'bernoulli' as const, rate: 1 } };
  const results: ScenarioResult[] = [];
  let failedTrials = 0;
  try {
    const scenarios: [string, () => Promise<{ gap: number; recovered: boolean }>, number][] = [
      ['signaling_blip_5s', () => toneTrial(e, async () => { proxy.cut(); await sleep(5000); proxy.restore(); }, () => {}), TRIALS],
      ['one_sided_path', () => toneTrial(e, () => relayB.setProfile(dead, 'toClient'), () => relayB.setProfile('clean')), TRIALS],
      ['relay_loss', () => toneTrial(e, () => { relayA.setProfile(dead); relayB.setProfile(dead); }, () => { relayA.setProfile('clean'); relayB.setProfile('clean'); }), TRIALS],
    ];
    if (!args['no-suspend']) scenarios.push(['suspend_30s', () => suspendTrial(e), Number(args.trials) > 3 ? TRIALS : 1]);
    const only = args.scenarios ? new Set(args.scenarios.split(',')) : undefined;
    for (const [name, trial, n] of scenarios.filter(([name]) => !only || only.has(name))) {
      const runs: { gap: number; recovered: boolean }[] = [];
      for (let t = 0; t < n; t++) {
        const r = await trial().catch(async (err: unknown) => {
          // A trial that could not even set its call up counts as not recovered; the run goes on.
          out.write(`  ${name} trial ${t + 1} failed: ${err instanceof Error ? err.message.slice(0, 300) : String(err)}\n`);
          const open = latest(e.alice, e.alice.events.at(-1)?.callId ?? '')?.callId;
          if (open) await endCall(e, open);
          return { gap: NaN, recovered: false };
        });
        if (!r.recovered) failedTrials++;
        out.write(`${name} trial ${t + 1}/${n}: gap ${r.gap} ms, ${r.recovered ? 'recovered' : 'NOT recovered'}\n`);
        runs.push(r);
      }
      results.push(summarise(name, runs));
    }
  } finally {
    bob.kill('SIGCONT');
    await Promise.allSettled([alice.stop(), bob.stop()]);
    if (failedTrials > 0) {
      // Keep what the daemons said: a trial that did not recover is diagnosed from these.
      const keep = join(tmpdir(), `parley-bench-recovery-${new Date().toISOString().replace(/[:.]/g, '-')}`);
      mkdirSync(keep, { recursive: true });
      writeFileSync(join(keep, 'alice.log'), alice.log());
      writeFileSync(join(keep, 'bob.log'), bob.log());
      out.write(`${failedTrials} trial(s) did not recover; the daemons' logs are in ${keep}\n`);
    }
    await proxy.close();
    await server.stop();
    await Promise.allSettled(relays.map((r) => r.stop()));
    await Promise.allSettled([coturn.stop(), keyring.stop(), pulse.stop()]);
    removeTempDir(dir);
  }

  const minutes = (Date.now() - started) / 60_000;
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
  const table = [
    '| scenario | gap p50 (ms) | gap p95 (ms) | recovered | trials |',
    '|---|---|---|---|---|',
    ...results.map((r) => `| ${r.name} | ${r.gap_ms_p50} | ${r.gap_ms_p95} | ${r.recovered ? 'yes' : 'no'} | ${r.trials} |`),
  ].join('\n');
  out.write(`\nCall recovery — ${machine}, ${minutes.toFixed(1)} min\n\n${table}\n\n`);
  if (!args['no-write']) {
    const written = writeBenchSection('recovery', [
      '## Call recovery (`npm run bench:recovery`)',
      '',
      `Command: \`npm run bench:recovery\` (${TRIALS} trials per scenario, suspend ${Number(args.trials) > 3 ? TRIALS : 1}; ${minutes.toFixed(1)} min). Machine: ${machine}; load average ${loadavg().map((x) => x.toFixed(1)).join(' / ')} at the end.`,
      '',
      'Method (bench/recovery.ts): two relay-only daemons through coturn behind user-space relays (Alice on A, Bob on B,',
      'spare C), Alice\'s signaling through a TCP proxy; each trial is a fresh call with a steady tone from Alice; the gap',
      'is the longest silence (10 ms windows below −45 dBFS) at Bob\'s speaker through PulseAudio. `suspend_30s`: the',
      'time from SIGCONT until both sides say `connected`. Targets (issue 18): blip 0 ms, one-sided p95 ≤ 3 s, suspend ≤ 3 s.',
      'Network changes (address change, link moved) need namespaces and are measured by',
      '`test/integration/network-change.test.ts`: gaps of 300–620 ms at the far speaker over four runs.',
      '',
      table,
    ]);
    out.write(`written to ${written}\n`);
  }
  if (args.json) console.log(JSON.stringify({ scenarios: results }));
}

main().catch((e: unknown) => {
  console.error(`bench:recovery failed: ${e instanceof Error ? e.stack : e}`);
  process.exit(1);
});
