/**
 * Voice activity in a real call (issue 7 item 4): the APM's VAD drives the
 * "talking" flag of `audio.levels` and, with `--dtx`, discontinuous
 * transmission — while Alice is silent her client sends one packet every
 * 400 ms instead of 50 a second, and her speech still reaches Bob whole.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallStatus } from '../../common/protocol/control';
import { SIMILARITY_THRESHOLD, speechSimilarity } from '../../main/media/analysis';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { channel, readWav, renderSpeech } from '../harness/speech';

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let dir: string;
let alice: RunningClient;
let bob: RunningClient;
let callId: string;
let sentence: string;

interface Levels {
  callId: string;
  inputDbfs: number;
  sentDbfs: number;
  outputDbfs: number;
  talking: boolean;
}

beforeAll(async () => {
  dir = makeTempDir('vad-test');
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer({});
  sentence = join(dir, 'alice.wav');
  await renderSpeech('The quick brown fox jumps over the lazy dog near the river bank.', 'en-us', sentence);
  [alice, bob] = await Promise.all([
    startClient({ name: 'alice', server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk', extraArgs: ['--dtx'] }),
    startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
  ({ callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' }));
  await bob.waitForCall(callId, (s) => s.state === 'incoming');
  await bob.request('answer_call', { callId });
  await Promise.all([
    alice.waitForCall(callId, (s) => s.state === 'active'),
    bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
  ]);
}, 90_000);

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

const received = async () => (await bob.request<CallStatus>('get_call_status', { callId })).stats!.packetsReceived;

describe('voice activity', () => {
  it('while Alice is silent, DTX sends a keep-alive every 400 ms and the call stays connected', async () => {
    await new Promise((r) => setTimeout(r, 500));
    const before = await received();
    await new Promise((r) => setTimeout(r, 2000));
    const silent = (await received()) - before;
    console.log(`[vad] silence: ${silent} packets in 2 s (50 without DTX)`);
    expect(silent).toBeGreaterThanOrEqual(3);
    expect(silent).toBeLessThanOrEqual(10);
    const status = await bob.request<CallStatus>('get_call_status', { callId });
    expect(status.media).toBe('connected');
    const levels = alice.notifications.filter((n) => n.method === 'audio.levels').slice(-10).map((n) => n.params as Levels);
    expect(levels.every((l) => !l.talking)).toBe(true);
  });

  it('when Alice talks, the talking flag rises, packets flow and Bob hears the sentence', async () => {
    const before = await received();
    const from = alice.notifications.length;
    const path = join(dir, 'talk.wav');
    const rec = await pulse.record('probe.monitor', path, 4);
    await pulse.play('a_in', sentence);
    await new Promise((r) => setTimeout(r, 800));
    await rec.stop();
    const sent = (await received()) - before;
    const levels = alice.notifications.slice(from).filter((n) => n.method === 'audio.levels').map((n) => n.params as Levels);
    const talking = levels.filter((l) => l.talking).length / levels.length;
    const w = readWav(path);
    const heard = speechSimilarity(readWav(sentence).samples, channel(w, PROBE_CHANNEL.bobSpeaker - 1));
    const stats = (await alice.request<CallStatus>('get_call_status', { callId })).stats!;
    console.log(`[vad] speech: ${sent} packets, talking in ${(talking * 100).toFixed(0)} % of level reports, similarity ${heard.score.toFixed(2)}, ${stats.vadSilentFrames} frames not sent`);
    expect(talking).toBeGreaterThan(0.4);
    expect(levels.some((l) => l.talking && l.inputDbfs > -40)).toBe(true);
    expect(heard.score).toBeGreaterThan(SIMILARITY_THRESHOLD);
    expect(stats.vadSilentFrames).toBeGreaterThan(50);
  });
});
