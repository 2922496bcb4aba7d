/**
 * A call outlives the cluster node that owns it: two real `parley` daemons
 * reach three server nodes (one PostgreSQL, one Redis) through nginx; the node
 * that took the invite is killed (kill -9) mid-sentence. The speech keeps
 * flowing peer to peer, the daemons reconnect through nginx to the surviving
 * nodes, one of those takes the dead node's call over and resumes it, and a
 * hang-up is routed again.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallStatus } from '../../common/protocol/control';
import { SIMILARITY_THRESHOLD, speechSimilarity } from '../../main/media/analysis';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { startNginx, type RunningNginx } from '../harness/nginx';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { startRedis, type RunningRedis } from '../harness/redis';
import { startServer, type RunningServer } from '../harness/server';
import { channel, readWav, renderSpeech } from '../harness/speech';
import { createTestDatabase } from '../harness/store';

let pulse: Pulse;
let keyring: Keyring;
let redis: RunningRedis;
let lb: RunningNginx;
const nodes: RunningServer[] = [];
let dir: string;
let alice: RunningClient;
let bob: RunningClient;

beforeAll(async () => {
  dir = makeTempDir('cluster-audio');
  [pulse, keyring, redis] = await Promise.all([startPulse(), startKeyring(), startRedis()]);
  const storeUrl = await createTestDatabase();
  const node = (id: string) =>
    startServer({ env: { PARLEY_STORE_URL: storeUrl, PARLEY_CLUSTER_REDIS_URL: redis.url, PARLEY_NODE_ID: id } });
  nodes.push(await node('n1'));
  nodes.push(...(await Promise.all([node('n2'), node('n3')])));
  lb = await startNginx(nodes.map((n) => n.url));
  const server = { url: lb.url };
  [alice, bob] = await Promise.all([
    startClient({ name: 'alice', server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
});

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await lb?.stop();
  await Promise.allSettled(nodes.map((n) => n.stop()));
  await redis?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

describe('the node that owns a call dies mid-call', () => {
  it('keeps the audio flowing peer to peer; the call resumes on another node and its hang-up is routed', async () => {
    const sentence = join(dir, 'alice.wav');
    await renderSpeech('The quick brown fox jumps over the lazy dog near the river bank.', 'en-us', sentence);
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('answer_call', { callId });
    await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
      bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
    ]);
    // The owner: the node that took the invite.
    const owner = nodes.find((n) =>
      n.logLines().some((l) => l.msg === 'call.invited' && (l.call as { callId?: string } | undefined)?.callId === callId),
    )!;
    expect(owner).toBeDefined();
    const survivors = nodes.filter((n) => n !== owner);

    const probePath = join(dir, 'probe.wav');
    const rec = await pulse.record('probe.monitor', probePath, 4);
    const speaking = pulse.play('a_in', sentence);
    await new Promise((r) => setTimeout(r, 500));
    process.kill(owner.pid, 'SIGKILL');
    await owner.stop();
    const during = (await bob.request<CallStatus>('get_call_status', { callId })).stats!.packetsReceived;
    await speaking;
    await new Promise((r) => setTimeout(r, 800));
    await rec.stop();
    const down = await bob.request<CallStatus>('get_call_status', { callId });
    expect(down.state).toBe('active');
    expect(down.stats!.packetsReceived).toBeGreaterThan(during + 50); // ≥ 1 s of packets meanwhile
    const probe = readWav(probePath);
    const mic = channel(probe, PROBE_CHANNEL.aliceMicInput - 1);
    let start = 0;
    while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
    const heard = channel(probe, PROBE_CHANNEL.bobSpeaker - 1).subarray(Math.max(0, start - 4800));
    expect(speechSimilarity(readWav(sentence).samples, heard).score).toBeGreaterThan(SIMILARITY_THRESHOLD);

    // A survivor finds the owner dead, takes the call and resumes it once both daemons are back with it.
    await Promise.race(
      survivors.map((n) => n.waitForLog((l) => l.msg === 'call resumed after restart' && l.callId === callId, 20_000)),
    );
    for (const c of [alice, bob]) expect((await c.request<CallStatus>('get_call_status', { callId })).state).toBe('active');
    await alice.request('end_call', { callId });
    const ended = await bob.waitForCall(callId, (s) => s.state === 'ended');
    expect(ended.endReason).toBe('hangup');
  }, 90_000);
});
