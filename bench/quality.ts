/**
 * `npm run bench:quality [-- --json] [-- --profiles clean,wifi,mobile,bad] [-- --no-write]`:
 * Parley against Chromium through the same network impairments, in one run.
 *
 * Every call is relay-only (ICE transport policy `relay`) through coturn
 * behind the user-space impairment relay (test/harness/impair.ts), so both
 * engines' media cross the same impaired path (twice: each side's TURN leg).
 * Per profile and engine: a sentence (espeak-ng) is played into Alice's
 * microphone and its similarity at Bob's speaker is scored
 * (docs/similarity.md); then a click train gives mouth-to-ear p50/p95; the
 * concealment rate is the share of Bob's played audio that was concealed or
 * rebuilt (Parley: PLC + FEC + expand frames; Chromium: concealedSamples /
 * totalSamplesReceived). Devices: one private PulseAudio for everything.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { CallStatus } from '../common/protocol/control';
import { speechSimilarity } from '../main/media/analysis';
import { issueTurnCredential } from '../server/turn';
import { makeClientContacts, startClient } from '../test/harness/client';
import { startCoturn } from '../test/harness/coturn';
import { startImpairRelay, type ProfileName } from '../test/harness/impair';
import { startKeyring } from '../test/harness/keyring';
import { makeTempDir, removeTempDir } from '../test/harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../test/harness/pulse';
import { startServer } from '../test/harness/server';
import { channel, readWav, renderSpeech } from '../test/harness/speech';
import { chromiumPair, NO_VOICE_PROCESSING, clickRun, percentile } from './lib';

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    profiles: { type: 'string', default: 'clean,wifi,mobile,bad' },
    clicks: { type: 'string', default: '20' },
    'frame-ms': { type: 'string', default: '20' },
    'no-write': { type: 'boolean', default: false },
  },
});
const PROFILES = args.profiles.split(',') as ProfileName[];
const CLICKS = Number(args.clicks);
const FRAME = (args['frame-ms'] === '10' ? 10 : 20) as 10 | 20;
const log = (s: string) => process.stderr.write(s + '\n');

interface EngineResult {
  similarity: number;
  mouth_to_ear_p50_ms: number;
  mouth_to_ear_p95_ms: number;
  concealment_rate: number;
}

/** Plays the sentence into Alice's mic and scores what Bob's speaker played. */
async function speechRun(pulse: Pulse, dir: string, tag: string, sentence: string): Promise<number> {
  const probe = join(dir, `speech-${tag}.wav`);
  const rec = await pulse.record('probe.monitor', probe, 4);
  await pulse.play('a_in', sentence);
  await new Promise((r) => setTimeout(r, 1200));
  await rec.stop();
  const wav = readWav(probe);
  const mic = channel(wav, PROBE_CHANNEL.aliceMicInput - 1);
  let start = 0;
  while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
  const heard = channel(wav, PROBE_CHANNEL.bobSpeaker - 1).subarray(Math.max(0, start - 4800));
  return speechSimilarity(readWav(sentence).samples, heard, { maxLagMs: 3000 }).score;
}

async function main(): Promise<void> {
  const dir = makeTempDir('bench-quality');
  const sentence = join(dir, 'sentence.wav');
  await renderSpeech('The quick brown fox jumps over the lazy dog near the river bank.', 'en-us', sentence);
  const pulse = await startPulse();
  const keyring = await startKeyring();
  const coturn = await startCoturn();
  const relay = await startImpairRelay({ upstream: { host: coturn.host, port: coturn.port }, seed: 42 });
  const server = await startServer({ turn: { urls: [relay.url()], secret: coturn.secret, ttlSeconds: 3600 } });
  const results: { name: string; parley: EngineResult; chromium: EngineResult }[] = [];
  try {
    for (const profile of PROFILES) {
      // Parley: two daemons, relay-only.
      log(`${profile}: Parley…`);
      relay.setProfile('clean');
      const [alice, bob] = await Promise.all([
        startClient({ name: `a-${profile}`, server, relay: true, frameMs: FRAME, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk', extraArgs: NO_VOICE_PROCESSING }),
        startClient({ name: `b-${profile}`, server, relay: true, frameMs: FRAME, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk', extraArgs: NO_VOICE_PROCESSING }),
      ]);
      let parley: EngineResult;
      try {
        await makeClientContacts(alice, bob);
        const { callId } = await alice.request<{ callId: string }>('create_call', { to: bob.name });
        await bob.waitForCall(callId, (s) => s.state === 'incoming');
        await bob.request('answer_call', { callId });
        await bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt);
        relay.setProfile(profile);
        await new Promise((r) => setTimeout(r, 3000)); // let the jitter buffer learn the path
        const before = (await bob.request<CallStatus>('get_call_status', { callId })).stats!;
        const similarity = await speechRun(pulse, dir, `parley-${profile}`, sentence);
        const clicks = await clickRun(pulse, dir, `parley-${profile}`, CLICKS, CLICKS * 1.0, { alice: () => [alice.pid], bob: () => [bob.pid] });
        const after = (await bob.request<CallStatus>('get_call_status', { callId })).stats!;
        const repaired = (s: typeof after) => s.framesConcealed + s.framesRecoveredByFec + (s.expandFrames ?? 0);
        const played = (after.packetsReceived - before.packetsReceived + (after.packetsLost - before.packetsLost)) || 1;
        parley = {
          similarity,
          mouth_to_ear_p50_ms: percentile(clicks.m2e, 50),
          mouth_to_ear_p95_ms: percentile(clicks.m2e, 95),
          concealment_rate: (repaired(after) - repaired(before)) / played,
        };
        await alice.request('end_call', { callId });
      } finally {
        await Promise.allSettled([alice.stop(), bob.stop()]);
      }

      // Chromium: two pages, relay-only through the same relay.
      log(`${profile}: Chromium…`);
      relay.setProfile('clean');
      const cred = issueTurnCredential(coturn.secret, 'chromium-bench', 3600);
      const pair = await chromiumPair(pulse, FRAME, {
        iceServers: [{ urls: [relay.url()], username: cred.username, credential: cred.credential }],
        relayOnly: true,
      });
      let chromium: EngineResult;
      try {
        relay.setProfile(profile);
        await new Promise((r) => setTimeout(r, 3000));
        type In = { concealedSamples: number; totalSamplesReceived: number };
        const before = await pair.call<In>('bob', 'inboundStats');
        const similarity = await speechRun(pulse, dir, `chromium-${profile}`, sentence);
        const clicks = await clickRun(pulse, dir, `chromium-${profile}`, CLICKS, CLICKS * 1.0, pair.pids);
        const after = await pair.call<In>('bob', 'inboundStats');
        chromium = {
          similarity,
          mouth_to_ear_p50_ms: percentile(clicks.m2e, 50),
          mouth_to_ear_p95_ms: percentile(clicks.m2e, 95),
          concealment_rate:
            (after.concealedSamples - before.concealedSamples) / Math.max(1, after.totalSamplesReceived - before.totalSamplesReceived),
        };
      } finally {
        await pair.close();
      }
      results.push({ name: profile, parley, chromium });
    }
  } finally {
    await server.stop();
    await relay.stop();
    await coturn.stop();
    await keyring.stop();
    await pulse.stop();
    removeTempDir(dir);
  }

  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  const r1 = (x: number) => Math.round(x * 10) / 10;
  const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a) ? (a / b).toFixed(2) : '–');
  const lines = [
    '| profile | engine | similarity | mouth-to-ear p50 (ms) | p95 (ms) | concealment rate |',
    '|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    for (const [name, e] of [['Parley', r.parley], ['Chromium', r.chromium]] as const) {
      lines.push(`| ${r.name} | ${name} | ${r3(e.similarity)} | ${r1(e.mouth_to_ear_p50_ms)} | ${r1(e.mouth_to_ear_p95_ms)} | ${r3(e.concealment_rate)} |`);
    }
    lines.push(
      `| ${r.name} | **ratio Parley / Chromium** | **${ratio(r.parley.similarity, r.chromium.similarity)}** | **${ratio(r.parley.mouth_to_ear_p50_ms, r.chromium.mouth_to_ear_p50_ms)}** | **${ratio(r.parley.mouth_to_ear_p95_ms, r.chromium.mouth_to_ear_p95_ms)}** | |`,
    );
  }
  const table = lines.join('\n');
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
  (args.json ? process.stderr : process.stdout).write(`\nCall quality under impairment — ${machine}, ${FRAME} ms packets\n\n${table}\n\n`);

  if (!args['no-write']) {
    const path = 'docs/BENCHMARKS.md';
    let doc = readFileSync(path, 'utf8');
    const section = [
      '<!-- bench:quality:start -->',
      '## Call quality under impairment, against Chromium (`npm run bench:quality`)',
      '',
      `Command: \`npm run bench:quality\` (${FRAME} ms packets, ${CLICKS} clicks per engine and profile). Machine: ${machine}.`,
      '',
      'Method: relay-only calls through coturn behind the user-space impairment relay (docs/impairment.md; each side\'s TURN',
      'leg crosses it, so a call sees the profile twice); per profile and engine a sentence is scored at the far speaker',
      '(docs/similarity.md), a click train gives mouth-to-ear p50/p95 (device to device through PulseAudio, as in',
      '`npm run bench`), and the concealment rate is the share of played audio that was concealed or rebuilt.',
      'Ratios: similarity above 1 and delay below 1 favour Parley.',
      '',
      table,
      '<!-- bench:quality:end -->',
    ].join('\n');
    const re = /<!-- bench:quality:start -->[\s\S]*<!-- bench:quality:end -->/;
    doc = re.test(doc) ? doc.replace(re, section) : `${doc.trimEnd()}\n\n${section}\n`;
    writeFileSync(path, doc);
    (args.json ? process.stderr : process.stdout).write(`written to ${path}\n`);
  }
  if (args.json) {
    console.log(
      JSON.stringify({
        profiles: results.map((r) => ({
          name: r.name,
          parley: { ...r.parley, similarity: r3(r.parley.similarity), concealment_rate: r3(r.parley.concealment_rate) },
          chromium: { ...r.chromium, similarity: r3(r.chromium.similarity), concealment_rate: r3(r.chromium.concealment_rate) },
        })),
      }),
    );
  }
}

main().catch((e: unknown) => {
  console.error(`bench:quality failed: ${e instanceof Error ? e.stack : e}`);
  process.exit(1);
});
