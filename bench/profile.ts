/**
 * `npm run bench:profile [-- --seconds 20] [-- --top 25] [-- --no-processing] [-- --perf]`: where a
 * Parley daemon's CPU goes during a call, per thread — the main thread and the
 * media thread (main/media/worker/) — (issue 13 item 2: profile first).
 *
 * Two daemons on a private PulseAudio call each other with their default
 * settings (voice processing on); both talk at once for about `seconds`. The
 * caller runs under V8's sampling profiler (`node --cpu-prof`, written when it
 * exits); the profile is then summed by function (self time) and printed as a
 * share of the busy (non-idle) time, start-up included — which is what a
 * user's first call pays. Native work (PortAudio, libopus, the APM) shows as
 * the JavaScript function that called it.
 *
 * With `--perf`, the caller runs unprofiled (V8 only writes its `--perf-basic-prof`
 * symbol map) and Linux perf samples its media thread over `seconds` of the
 * call, from 2 s after the first audio: the thread's CPU by component and by
 * kind of code (bench/perf-breakdown.ts), native code and the kernel included.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeClientContacts, startClient } from '../test/harness/client';
import { startKeyring } from '../test/harness/keyring';
import { makeTempDir, removeTempDir } from '../test/harness/process';
import { startPulse } from '../test/harness/pulse';
import { REPO_ROOT, startServer } from '../test/harness/server';
import { renderSpeech } from '../test/harness/speech';
import { MEDIA_THREAD_NAME } from '../main/media/worker/contract';
import { NO_VOICE_PROCESSING } from './lib';
import { codeKind, MEDIA_COMPONENTS, perfSamples, shares, threadId, threadTicks, type Stack } from './perf-breakdown';


const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '20' },
    top: { type: 'string', default: '25' },
    'no-processing': { type: 'boolean', default: false },
    perf: { type: 'boolean', default: false },
  },
});

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function of a V8 CPU profile, µs, and the idle time. */
export function selfTimes(p: CpuProfile): { byFunction: Map<string, number>; totalUs: number; idleUs: number } {
  const perNode = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) perNode.set(p.samples[i]!, (perNode.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
  const byFunction = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const n of p.nodes) {
    const t = perNode.get(n.id) ?? 0;
    totalUs += t;
    const cf = n.callFrame;
    if (cf.functionName === '(idle)') {
      idleUs += t;
      continue;
    }
    const where = cf.url.replace(/.*node_modules\//, '').replace(`file://${REPO_ROOT}/`, '');
    const key = `${cf.functionName || '(anonymous)'}${where ? ` ${where}:${cf.lineNumber + 1}` : ''}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + t);
  }
  return { byFunction, totalUs, idleUs };
}

async function main(): Promise<void> {
  const dir = makeTempDir('bench-profile');
  const profDir = join(dir, 'prof');
  mkdirSync(profDir);
  const pulse = await startPulse();
  const keyring = await startKeyring();
  const server = await startServer();
  try {
    const wav = join(dir, 'speech.wav');
    await renderSpeech('The quick brown fox jumps over the lazy dog near the river bank, again and again.', 'en-us', wav);
    const extraArgs = args['no-processing'] ? NO_VOICE_PROCESSING : [];
    const mapsBefore = new Set(readdirSync('/tmp'));
    // The caller runs under the profiler from its start (its sign-in runs write small profiles of their own).
    const [profiled, bob] = await Promise.all([
      startClient({
        name: 'prof-alice',
        server,
        env: {
          ...pulse.clientEnv('a'),
          ...keyring.env,
          NODE_OPTIONS: args.perf ? '--perf-basic-prof' : `--cpu-prof --cpu-prof-dir=${profDir}`,
        },
        input: 'a_mic',
        output: 'a_spk',
        extraArgs,
      }),
      startClient({ name: 'prof-bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk', extraArgs }),
    ]);
    await makeClientContacts(profiled, bob);
    const { callId } = await profiled.request<{ callId: string }>('create_call', { to: bob.name });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('answer_call', { callId });
    await profiled.waitForCall(callId, (s) => !!s.firstAudioAt);
    const talk = async () => {
      const until = Date.now() + Number(args.seconds) * 1000;
      while (Date.now() < until) await Promise.all([pulse.play('a_in', wav), pulse.play('b_in', wav)]);
    };
    if (args.perf) {
      await new Promise((r) => setTimeout(r, 2000));
      const tid = threadId(profiled.pid, MEDIA_THREAD_NAME);
      const t0 = performance.now();
      const ticks0 = threadTicks(profiled.pid, tid);
      const stacks = await perfSamples(tid, join(dir, 'perf.data'), talk);
      const corePercent = (threadTicks(profiled.pid, tid) - ticks0) / ((performance.now() - t0) / 1000);
      await profiled.request('end_call', { callId });
      await Promise.all([profiled.stop(), bob.stop()]);
      printPerf(stacks, corePercent);
      // V8's symbol maps (--perf-basic-prof: the daemon and its sign-in runs), read by perf script: not left in /tmp.
      for (const f of readdirSync('/tmp')) if (/^perf-\d+\.map$/.test(f) && !mapsBefore.has(f)) rmSync(join('/tmp', f), { force: true });
      return;
    }
    await talk();
    await profiled.request('end_call', { callId });
    await Promise.all([profiled.stop(), bob.stop()]);
    // One profile per thread: `CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile`, thread 0 the main one,
    // the others workers (the media thread, main/media/worker/).
    const files = readdirSync(profDir).filter((f) => f.includes(`.${profiled.pid}.`) && f.endsWith('.cpuprofile'));
    if (files.length === 0) throw new Error('the daemon wrote no CPU profile (did it exit cleanly?)');
    const threadOf = (f: string) => Number(f.split('.').at(-3));
    for (const file of files.sort((a, b) => threadOf(a) - threadOf(b))) {
      const { byFunction, totalUs, idleUs } = selfTimes(JSON.parse(readFileSync(join(profDir, file), 'utf8')) as CpuProfile);
      const busy = totalUs - idleUs;
      const thread = threadOf(file) === 0 ? 'main thread' : `worker thread ${threadOf(file)} (the media thread)`;
      console.log(
        `\nParley daemon (caller), ${args['no-processing'] ? 'voice processing off' : 'default settings'}, ${thread}: ` +
          `${(totalUs / 1e6).toFixed(1)} s profiled, busy ${(busy / 1e6).toFixed(2)} s (${((100 * busy) / totalUs).toFixed(1)} % of one core)\n`,
      );
      console.log('| self time (% of busy) | function |\n|---|---|');
      for (const [k, v] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, Number(args.top)))
        console.log(`| ${((100 * v) / busy).toFixed(1)} % | \`${k}\` |`);
    }
  } finally {
    await server.stop();
    await keyring.stop();
    await pulse.stop();
    rmSync(profDir, { recursive: true, force: true });
    removeTempDir(dir);
  }
}

/** Prints the media thread's perf breakdown: by component, then by kind of code. */
function printPerf(stacks: Stack[], corePercent: number): void {
  console.log(
    `\nParley daemon (caller), ${args['no-processing'] ? 'voice processing off' : 'default settings'}, media thread ` +
      `(${MEDIA_THREAD_NAME}), ${args.seconds} s of a call from 2 s after the first audio: ${corePercent.toFixed(1)} % of one core ` +
      `(/proc), ${stacks.length} perf samples at 999 Hz\n`,
  );
  const table = (title: string, rows: [string, number][]) => {
    console.log(`| ${title} | share of the thread | % of one core |\n|---|---|---|`);
    for (const [k, v] of rows) console.log(`| ${k} | ${(100 * v).toFixed(1)} % | ${(corePercent * v).toFixed(2)} |`);
    console.log('');
  };
  table('component', shares(stacks, (s) => MEDIA_COMPONENTS.find((c) => c.test(s))?.name ?? 'other'));
  table('kind of code (the sample\'s leaf)', shares(stacks, (s) => codeKind(s[0]!)));
}

main().catch((e: unknown) => {
  console.error(`bench:profile failed: ${e instanceof Error ? e.stack : e}`);
  process.exit(1);
});
