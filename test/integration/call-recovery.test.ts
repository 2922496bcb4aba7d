/**
 * A call outlives its signaling server: two `parley` daemons in a direct call,
 * the server is killed (kill -9) mid-sentence and started again on the same
 * address and data folder. The speech keeps flowing peer to peer while the
 * server is gone; the daemons reconnect, list the call in `hello`, the server
 * resumes it (server/resume.ts), and a hang-up is routed again.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallStatus } from '../../common/protocol/control';
import { SIMILARITY_THRESHOLD, speechSimilarity } from '../../main/media/analysis';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { channel, readWav, renderSpeech } from '../harness/speech';

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let dir: string;
let alice: RunningClient;
let bob: RunningClient;

beforeAll(async () => {
  dir = makeTempDir('call-recovery');
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer({ dataDir: join(dir, 'server') });
  [alice, bob] = await Promise.all([
    startClient({ name: 'alice', server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
});

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

describe('the signaling server restarts mid-call', () => {
  it('keeps the audio flowing peer to peer, resumes the call on reconnect and routes its hang-up', async () => {
    const sentence = join(dir, 'alice.wav');
    await renderSpeech('The quick brown fox jumps over the lazy dog near the river bank.', 'en-us', sentence);
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('answer_call', { callId });
    await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
      bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
    ]);
    await expect
      .poll(async () => (await adminRequest<{ calls: unknown[] }>(server.adminSocket, 'calls.list', {})).calls.length, {
        timeout: 5_000,
      })
      .toBe(1);

    // Kill the server while Alice speaks.
    const port = new URL(server.url).port;
    const probePath = join(dir, 'probe.wav');
    const rec = await pulse.record('probe.monitor', probePath, 4);
    const speaking = pulse.play('a_in', sentence);
    await new Promise((r) => setTimeout(r, 500));
    process.kill(server.pid, 'SIGKILL');
    await server.stop();
    const during = (await bob.request<CallStatus>('get_call_status', { callId })).stats!.packetsReceived;
    await speaking;
    await new Promise((r) => setTimeout(r, 800));
    await rec.stop();
    const down = await bob.request<CallStatus>('get_call_status', { callId });
    expect(down.state).toBe('active');
    expect(down.stats!.packetsReceived).toBeGreaterThan(during + 50); // ≥ 1 s of packets with no server
    const probe = readWav(probePath);
    const mic = channel(probe, PROBE_CHANNEL.aliceMicInput - 1);
    let start = 0;
    while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
    const heard = channel(probe, PROBE_CHANNEL.bobSpeaker - 1).subarray(Math.max(0, start - 4800));
    expect(speechSimilarity(readWav(sentence).samples, heard).score).toBeGreaterThan(SIMILARITY_THRESHOLD);

    // Same address, same data folder: the daemons reconnect and list the call.
    server = await startServer({ dataDir: join(dir, 'server'), env: { PARLEY_SERVER_LISTEN: `127.0.0.1:${port}` } });
    await expect
      .poll(
        async () =>
          (await adminRequest<{ calls: { callId: string; state: string }[] }>(server.adminSocket, 'calls.list', {})).calls,
        { timeout: 15_000, interval: 250 },
      )
      .toEqual([expect.objectContaining({ callId, state: 'active' })]);
    for (const c of [alice, bob]) expect((await c.request<CallStatus>('get_call_status', { callId })).state).toBe('active');

    await alice.request('end_call', { callId });
    const ended = await bob.waitForCall(callId, (s) => s.state === 'ended');
    expect(ended.endReason).toBe('hangup');
  }, 60_000);
});
