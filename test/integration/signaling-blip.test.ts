/**
 * A call outlives a signaling blip (issue 18, item 1). Alice's daemon reaches
 * the server through a TCP proxy the test cuts: her connection drops, and the
 * server holds the answered call for her (`call_grace_seconds`) while the
 * media goes on peer to peer.
 * - cut for 5 s while she plays a steady tone: Bob hears it with no gap, sees
 *   the call's signaling `peer_offline` (not an end), Alice sees `offline`;
 *   when she is back the call goes on (`online` both sides), and a hang-up is
 *   routed again;
 * - cut for longer than the grace: the call ends `failed` on both sides, with
 *   a reason each user can read.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CallStatus } from '../../common/protocol/control';
import { makeClientContacts, placeAnsweredCall, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { channel, longestSilenceMs, readWav } from '../harness/speech';
import { startTcpProxy, type TcpProxy } from '../harness/tcp-proxy';

/** The server's grace for a dropped device, s (the low end of issue 18's 15–20 s). */
const GRACE_S = 15;

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let proxy: TcpProxy;
let dir: string;
let alice: RunningClient;
let bob: RunningClient;

beforeAll(async () => {
  dir = makeTempDir('signaling-blip');
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer({ env: { PARLEY_CALL_GRACE: String(GRACE_S) } });
  proxy = await startTcpProxy(server.url);
  [alice, bob] = await Promise.all([
    // Alice's media timeout is short so that, once the call ended for Bob, her side ends soon too.
    startClient({ name: 'balice', server: proxy, mediaTimeoutS: 8, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'bbob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
});

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await proxy?.close();
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

async function startCall(): Promise<string> {
  const callId = await placeAnsweredCall(alice, bob);
  return callId;
}

afterEach(async () => {
  proxy.restore();
  for (const c of [alice, bob]) {
    const live = (await c.request<{ calls: CallStatus[] }>('list_calls', {})).calls.filter((s) => s.state !== 'ended');
    for (const s of live) await c.request('end_call', { callId: s.callId }).catch(() => {});
  }
});

const serverCalls = async () =>
  (await adminRequest<{ calls: { callId: string; state: string }[] }>(server.adminSocket, 'calls.list', {})).calls;

describe('a signaling blip mid-call', () => {
  it('a 5 s drop: no audio lost, the peer sees "reconnecting" signaling, the call goes on and hangs up normally', async () => {
    const tone = join(dir, 'tone.wav');
    await promisify(execFile)('sox', ['-R', '-n', '-r', '48000', '-c', '1', '-b', '16', tone, 'synth', '9', 'sine', '440', 'vol', '0.3']);
    const callId = await startCall();

    const probe = join(dir, 'probe.wav');
    const rec = await pulse.record('probe.monitor', probe, 4);
    const playing = pulse.play('a_in', tone);
    await new Promise((r) => setTimeout(r, 1500));
    const cutAt = Date.now();
    proxy.cut();
    const [peerOffline, selfOffline] = await Promise.all([
      bob.waitForCall(callId, (s) => s.signaling === 'peer_offline', 5_000),
      alice.waitForCall(callId, (s) => s.signaling === 'offline', 5_000),
    ]);
    expect(peerOffline.state).toBe('active');
    expect(selfOffline.state).toBe('active');
    await new Promise((r) => setTimeout(r, Math.max(0, 5000 - (Date.now() - cutAt))));
    proxy.restore();
    await playing;
    await rec.stop();

    const wav = readWav(probe);
    const mic = channel(wav, PROBE_CHANNEL.aliceMicInput - 1);
    const heard = channel(wav, PROBE_CHANNEL.bobSpeaker - 1);
    let start = 0;
    while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
    const startMs = start / 48;
    const gap = longestSilenceMs(heard, startMs + 500, startMs + 8500);
    let at = 0;
    for (let t = startMs + 500; t + 10 <= startMs + 8500; t += 10) if (longestSilenceMs(heard, t, t + gap) >= gap) { at = t; break; }
    console.log(`signaling blip 5 s: longest silence at Bob's speaker ${gap} ms, at ${Math.round(at - startMs)} ms into the tone (cut at ~1500 ms, restored at ~6500 ms)`);
    // No audio lost to the blip: 0 ms in most runs; one run showed a 90 ms underrun, so allow a short one.
    expect(gap).toBeLessThan(150);

    // Alice reconnects (backoff) within the grace; both sides say online again, and the server still has the call.
    await Promise.all([
      alice.waitForCall(callId, (s) => s.signaling === 'online' && s.signalingSince! > cutAt, GRACE_S * 1000),
      bob.waitForCall(callId, (s) => s.signaling === 'online' && s.signalingSince! > cutAt, GRACE_S * 1000),
    ]);
    expect(await serverCalls()).toEqual([expect.objectContaining({ callId, state: 'active' })]);
    for (const c of [alice, bob]) {
      const s = await c.request<CallStatus>('get_call_status', { callId });
      expect(s.state).toBe('active');
      expect(s.media).toBe('connected');
    }
    await alice.request('end_call', { callId });
    expect((await bob.waitForCall(callId, (s) => s.state === 'ended')).endReason).toBe('hangup');
  }, 60_000);

  it('a drop longer than the grace ends the call "failed" on both sides', async () => {
    const callId = await startCall();
    const cutAt = Date.now();
    proxy.cut();
    await bob.waitForCall(callId, (s) => s.signaling === 'peer_offline', 5_000);
    const bobEnd = await bob.waitForCall(callId, (s) => s.state === 'ended', (GRACE_S + 5) * 1000);
    expect(bobEnd.endReason).toBe('failed');
    expect(Date.now() - cutAt).toBeGreaterThan(GRACE_S * 1000 - 1000);
    expect(await serverCalls()).toEqual([]);
    // Alice, still cut off, loses Bob's audio and ends the call on her media timeout, saying why.
    const aliceEnd = await alice.waitForCall(callId, (s) => s.state === 'ended', 15_000);
    expect(aliceEnd.endReason).toBe('failed');
    expect(aliceEnd.error).toMatch(/lost/);
    proxy.restore();
  }, 60_000);
});
