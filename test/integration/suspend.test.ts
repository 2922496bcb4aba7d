/**
 * A laptop that sleeps mid-call (issue 18, item 4): Bob's daemon is stopped
 * (SIGSTOP) for 30 s and continued, as a machine after sleep. Its media
 * watchdog sees its clock jump, checks its signaling at once, and the call's
 * path is repaired (Bob asks, Alice restarts ICE): speech from Alice reaches
 * Bob's speaker again. With the media timeouts longer than the sleep the call
 * must recover; with them shorter it must end on both sides with a reason.
 */
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CallStatus } from '../../common/protocol/control';
import { SIMILARITY_THRESHOLD, speechSimilarity } from '../../main/media/analysis';
import { makeClientContacts, placeAnsweredCall, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { channel, readWav, renderSpeech } from '../harness/speech';

const SLEEP_MS = 30_000;

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let dir: string;
let alice: RunningClient;
let bob: RunningClient;

beforeAll(async () => {
  dir = makeTempDir('suspend');
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer();
  [alice, bob] = await Promise.all([
    startClient({ name: 'salice', server, mediaTimeoutS: 60, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'sbob', server, mediaTimeoutS: 60, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
});

afterEach(() => bob.kill('SIGCONT'));

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

describe('a daemon suspended mid-call', () => {
  it('30 s of SIGSTOP, then SIGCONT: the callee notices, the path is restarted, and speech reaches it again', async () => {
    const sentence = join(dir, 'alice.wav');
    await renderSpeech('The quick brown fox jumps over the lazy dog near the river bank.', 'en-us', sentence);
    const callId = await placeAnsweredCall(alice, bob);

    bob.kill('SIGSTOP');
    await alice.waitForCall(callId, (s) => s.media === 'reconnecting', 5_000);
    await new Promise((r) => setTimeout(r, SLEEP_MS));
    const wokeAt = Date.now();
    bob.kill('SIGCONT');
    const woke = await bob.waitForCall(callId, (s) => (s.suspendedMs ?? 0) > SLEEP_MS - 2000, 5_000);
    expect(woke.state).toBe('active');
    const latest = (c: RunningClient) => c.events.filter((e) => e.callId === callId).at(-1)!;
    await expect.poll(() => [latest(alice).media, latest(bob).media], { timeout: 15_000, interval: 100 }).toEqual(['connected', 'connected']);
    const recoveredMs = Date.now() - wokeAt;
    console.log(`suspend ${SLEEP_MS / 1000} s: audio both ways ${recoveredMs} ms after waking`);

    // Speech from Alice reaches Bob's speaker again.
    const probePath = join(dir, 'probe.wav');
    const rec = await pulse.record('probe.monitor', probePath, 4);
    await pulse.play('a_in', sentence);
    await new Promise((r) => setTimeout(r, 800));
    await rec.stop();
    const probe = readWav(probePath);
    const mic = channel(probe, PROBE_CHANNEL.aliceMicInput - 1);
    let start = 0;
    while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
    const heard = channel(probe, PROBE_CHANNEL.bobSpeaker - 1).subarray(Math.max(0, start - 4800));
    expect(speechSimilarity(readWav(sentence).samples, heard).score).toBeGreaterThan(SIMILARITY_THRESHOLD);
    for (const c of [alice, bob]) expect((await c.request<CallStatus>('get_call_status', { callId })).state).toBe('active');
    expect(recoveredMs).toBeLessThan(8_000);
    await alice.request('end_call', { callId });
    expect((await bob.waitForCall(callId, (s) => s.state === 'ended')).endReason).toBe('hangup');
  }, 90_000);

  it('asleep longer than the media timeout: both sides end the call, each with a reason a user can read', async () => {
    // A pair with the default 30 s media timeout, asleep 40 s.
    const [carol, dave] = await Promise.all([
      startClient({ name: 'scarol', server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
      startClient({ name: 'sdave', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
    ]);
    try {
      await makeClientContacts(carol, dave);
      const callId = await placeAnsweredCall(carol, dave);
      dave.kill('SIGSTOP');
      const carolEnd = await carol.waitForCall(callId, (s) => s.state === 'ended', 40_000);
      expect(carolEnd.endReason).toBe('failed');
      expect(carolEnd.error).toMatch(/lost/);
      await new Promise((r) => setTimeout(r, 5_000)); // asleep ~36 s in all
      dave.kill('SIGCONT');
      const daveEnd = await dave.waitForCall(callId, (s) => s.state === 'ended', 10_000);
      expect(daveEnd.endReason).toBe('failed'); // nobody hung up: the call failed
      console.log(`asleep past the media timeout: carol ${carolEnd.endReason} (${carolEnd.error}), dave ${daveEnd.endReason}`);
    } finally {
      dave.kill('SIGCONT');
      await Promise.allSettled([carol.stop(), dave.stop()]);
    }
  }, 120_000);
});
