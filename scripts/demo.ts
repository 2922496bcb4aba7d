/**
 * `npm run demo [-- --relay] [-- --json] [-- --frame-ms 10]`: Parley's first real call.
 * `npm run demo -- --group 4 [--json]`: a group call instead (scripts/demo-group.ts).
 *
 * Starts the signaling server, coturn, a private PulseAudio with virtual
 * devices, a private keychain and two headless clients (Alice and Bob, each
 * the `parley` daemon in its own process). Renders a spoken sentence with
 * espeak-ng into Alice's microphone and another into Bob's, calls, records
 * both speakers (one 4-channel recording, one clock), hangs up and prints a
 * report: transport, set-up times, speech similarity both ways (see
 * docs/similarity.md; the delay followed through mid-sentence jitter-buffer
 * steps, and with one delay for the whole sentence) and mouth-to-ear delay. With `--json` the last line is
 * one JSON object.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { CallStatus } from '../common/protocol/control';
import { SIMILARITY_THRESHOLD, estimateDelayMs, speechSimilarity } from '../main/media/analysis';
import { makeClientContacts, startClient, type RunningClient } from '../test/harness/client';
import { startCoturn } from '../test/harness/coturn';
import { startKeyring } from '../test/harness/keyring';
import { PROBE_CHANNEL, startPulse } from '../test/harness/pulse';
import { startServer } from '../test/harness/server';
import { channel, readWav, renderSpeech, writeWav } from '../test/harness/speech';
import { clickDelays, clickTrain, percentile } from '../bench/lib';

const { values: args } = parseArgs({
  options: {
    relay: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    'frame-ms': { type: 'string', default: '20' },
    out: { type: 'string' },
    group: { type: 'string' },
  },
});
const frameMs = args['frame-ms'] === '10' ? 10 : 20;
const json = args.json;
const say = (line: string) => (json ? process.stderr : process.stdout).write(line + '\n');

/** The click train after the speech: the bench's stimulus (bench/lib.ts clickTrain), 6 clicks 500 ms apart. */
const CLICKS = 6;
const CLICK_PERIOD_MS = 500;

const ALICE_SAYS = 'The quick brown fox jumps over the lazy dog near the river bank.';
const BOB_SAYS = 'She sells sea shells by the sea shore every sunny morning.';

async function main(): Promise<void> {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outDir = resolve(args.out ?? join('.parley', 'demo', stamp));
  mkdirSync(outDir, { recursive: true });
  if (args.group !== undefined) {
    const { groupDemo } = await import('./demo-group');
    const ok = await groupDemo(Number.parseInt(args.group, 10), { json, outDir, say });
    process.exitCode = ok ? 0 : 1;
    return;
  }
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    say('Parley demo: starting PulseAudio, keychain, coturn and the signaling server…');
    const pulse = await startPulse();
    cleanup.push(() => pulse.stop());
    const keyring = await startKeyring();
    cleanup.push(() => keyring.stop());
    const coturn = await startCoturn();
    cleanup.push(() => coturn.stop());
    const server = await startServer({ turn: { urls: [coturn.url], secret: coturn.secret, ttlSeconds: 600 } });
    cleanup.push(() => server.stop());

    const aliceWav = join(outDir, 'alice-says.wav');
    const bobWav = join(outDir, 'bob-says.wav');
    await renderSpeech(ALICE_SAYS, 'en-us', aliceWav);
    await renderSpeech(BOB_SAYS, 'en-gb', bobWav);
    const clicksWav = join(outDir, 'clicks.wav');
    writeWav(clicksWav, clickTrain(CLICKS, CLICK_PERIOD_MS));

    say('Starting Alice and Bob (headless clients)…');
    const common = { server, frameMs, relay: args.relay } as const;
    const [alice, bob] = await Promise.all([
      startClient({ ...common, name: 'alice', env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
      startClient({ ...common, name: 'bob', env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
    ]);
    cleanup.push(() => alice.stop(), () => bob.stop());
    await makeClientContacts(alice, bob);

    const probeWav = join(outDir, 'probe-4ch.wav');
    const recording = await pulse.record('probe.monitor', probeWav, 4);
    const recordingFrom = performance.now();

    say('Alice calls Bob…');
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    const ringing = await alice.waitForCall(callId, (s) => s.state === 'ringing');
    say('Bob\'s phone rings; Bob answers.');
    await bob.request('answer_call', { callId });
    const [aActive, bActive] = await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
      bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
    ]);
    say(`Connected via ${aActive.transport}; both talk…`);
    // End-to-end security: both ends got the other's SDP sealed and signed, DTLS matched its fingerprint.
    const [aliceSafety, bobSafety] = await Promise.all([
      alice.request<{ safetyNumber: string }>('get_safety_number', { username: 'bob' }),
      bob.request<{ safetyNumber: string }>('get_safety_number', { username: 'alice' }),
    ]);
    const e2ee = {
      sealed: !!aActive.e2ee?.sealed && !!bActive.e2ee?.sealed,
      fingerprint_bound: !!aActive.e2ee?.fingerprintBound && !!bActive.e2ee?.fingerprintBound,
      safety_number: aliceSafety.safetyNumber,
    };
    const safetyAgrees = aliceSafety.safetyNumber === bobSafety.safetyNumber;
    await Promise.all([pulse.play('a_in', aliceWav), pulse.play('b_in', bobWav)]);
    await new Promise((r) => setTimeout(r, 1000)); // the tail reaches the far speaker
    // Then the bench's own delay method in the same call (npm run bench: clicks), both ways at once.
    // Where the clicks start in the recording, less 300 ms (inside the silence after the tail: the split need not be exact).
    const clicksAt = performance.now() - recordingFrom - 300;
    await Promise.all([pulse.play('a_in', clicksWav), pulse.play('b_in', clicksWav)]);
    await new Promise((r) => setTimeout(r, 500));
    const [before, aliceBefore] = await Promise.all([
      bob.request<CallStatus>('get_call_status', { callId }),
      alice.request<CallStatus>('get_call_status', { callId }),
    ]);
    await alice.request('end_call', { callId });
    const [aEnd, bEnd] = await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'ended'),
      bob.waitForCall(callId, (s) => s.state === 'ended'),
    ]);
    await recording.stop();

    // One recording, one clock: ch1 Alice's mic in, ch2 Bob's speaker, ch3 Bob's mic in, ch4 Alice's speaker.
    const probe = readWav(probeWav);
    const aMic = channel(probe, PROBE_CHANNEL.aliceMicInput - 1);
    const bSpk = channel(probe, PROBE_CHANNEL.bobSpeaker - 1);
    const bMic = channel(probe, PROBE_CHANNEL.bobMicInput - 1);
    const aSpk = channel(probe, PROBE_CHANNEL.aliceSpeaker - 1);
    const recA = join(outDir, 'alice-speaker.wav');
    const recB = join(outDir, 'bob-speaker.wav');
    writeWav(recA, aSpk);
    writeWav(recB, bSpk);
    const aSent = readWav(aliceWav).samples;
    const bSent = readWav(bobWav).samples;
    // Judged as a listener hears it: the delay followed through the jitter buffer's 20 ms steps
    // in mid-sentence (docs/similarity.md, trackDelayMs); one delay for the whole is printed beside it.
    const aToB = speechSimilarity(aSent, cut(bSpk, aMic), { trackDelayMs: 40 });
    const bToA = speechSimilarity(bSent, cut(aSpk, bMic), { trackDelayMs: 40 });
    const single = { aToB: aToB.silent ? 0 : Math.max(0, aToB.correlation), bToA: bToA.silent ? 0 : Math.max(0, bToA.correlation) };
    const speechEnd = Math.round((clicksAt * 48_000) / 1000);
    const d1 = estimateDelayMs(aMic.subarray(0, speechEnd), bSpk.subarray(0, speechEnd), 1000);
    const d2 = estimateDelayMs(bMic.subarray(0, speechEnd), aSpk.subarray(0, speechEnd), 1000);
    const mouthToEar = Math.round((d1.lagMs + d2.lagMs) / 2);
    const c1 = clickDelays(aMic.subarray(speechEnd), bSpk.subarray(speechEnd), CLICK_PERIOD_MS);
    const c2 = clickDelays(bMic.subarray(speechEnd), aSpk.subarray(speechEnd), CLICK_PERIOD_MS);
    const clickMs = (c: { m2e: number[] }) => (c.m2e.length ? percentile(c.m2e, 50) : NaN);
    const mouthToEarClicks = Math.round((clickMs(c1) + clickMs(c2)) / 2);

    const transport = aActive.transport === 'relay' || bActive.transport === 'relay' ? 'relay' : 'host';
    const inviteToRinging = ringing.ringingAt! - ringing.createdAt;
    const answeredAt = bActive.answeredAt!;
    const answerToAudio = Math.max(aActive.firstAudioAt!, bActive.firstAudioAt!) - answeredAt;
    const ok =
      aToB.score >= SIMILARITY_THRESHOLD &&
      bToA.score >= SIMILARITY_THRESHOLD &&
      aEnd.endReason === 'hangup' &&
      bEnd.endReason === 'hangup' &&
      (!args.relay || transport === 'relay') &&
      e2ee.sealed &&
      e2ee.fingerprint_bound &&
      safetyAgrees;

    say('');
    say(`Parley demo report (${ok ? 'OK' : 'FAILED'})`);
    say(`  transport        ${transport === 'relay' ? 'relay (through coturn)' : 'host (direct, peer to peer)'}; ${frameMs} ms frames`);
    say(`  set-up           invite → ringing ${inviteToRinging} ms; answer → first audio ${answerToAudio} ms`);
    say(`  speech           Alice → Bob similarity ${aToB.score.toFixed(3)}; Bob → Alice ${bToA.score.toFixed(3)} (pass ≥ ${SIMILARITY_THRESHOLD}; with one delay for the whole sentence ${single.aToB.toFixed(3)} and ${single.bToA.toFixed(3)})`);
    say(`  mouth-to-ear     ${mouthToEar} ms (Alice → Bob ${d1.lagMs.toFixed(1)} ms, Bob → Alice ${d2.lagMs.toFixed(1)} ms), by speech correlation`);
    say(`                   ${mouthToEarClicks} ms (${clickMs(c1).toFixed(1)} ms, ${clickMs(c2).toFixed(1)} ms) by clicks after the speech, the bench's method (${c1.m2e.length + c2.m2e.length} of ${2 * CLICKS} heard)`);
    say(`  packets (Bob)    sent ${before.stats?.packetsSent}, received ${before.stats?.packetsReceived}, lost ${before.stats?.packetsLost}, jitter ${before.stats?.jitterMs} ms`);
    for (const [who, st] of [['Alice', aliceBefore.stats], ['Bob', before.stats]] as const) {
      say(`  playout ${who.padEnd(6)}   jitter buffer target ${st?.jitterTargetMs} ms; frames concealed (expand) ${st?.expandFrames}, dropped ${st?.accelerateFrames}, inserted ${st?.decelerateFrames}; aligned ${st?.playoutAlignedMs ?? 0} ms`);
    }
    say(`  ended            Alice: ${aEnd.endReason}; Bob: ${bEnd.endReason}`);
    say(`  end-to-end       SDP and candidates sealed (X25519 + ML-KEM-768) and signed: ${e2ee.sealed ? 'yes' : 'NO'}; DTLS bound to the sealed fingerprint: ${e2ee.fingerprint_bound ? 'yes' : 'NO'}`);
    say(`  safety number    ${e2ee.safety_number}${safetyAgrees ? ' (the same on both ends)' : ' (DIFFERS between the ends)'}`);
    say(`  recordings       ${recA}`);
    say(`                   ${recB}`);
    if (json) {
      console.log(
        JSON.stringify({
          ok,
          transport,
          setup_ms: { invite_to_ringing: inviteToRinging, answer_to_audio: answerToAudio },
          similarity: { a_to_b: round3(aToB.score), b_to_a: round3(bToA.score) },
          similarity_single_delay: { a_to_b: round3(single.aToB), b_to_a: round3(single.bToA) },
          mouth_to_ear_ms: mouthToEar,
          mouth_to_ear_clicks_ms: mouthToEarClicks,
          e2ee,
          recordings: { a: recA, b: recB },
        }),
      );
    }
    process.exitCode = ok ? 0 : 1;
  } finally {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  }
}

/** The far speaker's recording from where the near mic's speech starts (the sentence plus its delay). */
function cut(farSpeaker: Int16Array, nearMic: Int16Array): Int16Array {
  let start = 0;
  while (start < nearMic.length && Math.abs(nearMic[start]!) < 300) start++;
  return farSpeaker.subarray(Math.max(0, start - 4800));
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

main().catch((e: unknown) => {
  const message = e instanceof Error ? e.message : String(e);
  say(`demo failed: ${message}`);
  if (json) console.log(JSON.stringify({ ok: false, error: message }));
  process.exit(1);
});

export type { RunningClient };
