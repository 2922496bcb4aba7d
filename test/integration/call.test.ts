/**
 * Real calls between two headless clients: the `parley` daemon in separate
 * processes, the real signaling server, coturn, PulseAudio virtual devices
 * and gnome-keyring. Speech rendered by espeak-ng is played into each
 * microphone; the far speakers are recorded on one clock and compared with
 * what was said.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CallStatus } from '../../common/protocol/control';
import { SIMILARITY_THRESHOLD, speechSimilarity } from '../../main/media/analysis';
import { KEYCHAIN_SERVICE } from '../../main/core/keychain-store';
import { getSecret } from '../../native/keychain';
import { makeClientContacts, runParley, startClient, type RunningClient } from '../harness/client';
import { startCoturn, type Coturn } from '../harness/coturn';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { channel, readWav, renderSpeech, whiteNoise } from '../harness/speech';

let pulse: Pulse;
let keyring: Keyring;
let coturn: Coturn;
let server: RunningServer;
let dir: string;
const speech = { alice: '', bob: '', other: '' };

beforeAll(async () => {
  dir = makeTempDir('call-test');
  [pulse, keyring, coturn] = await Promise.all([startPulse(), startKeyring(), startCoturn()]);
  server = await startServer({
    turn: { urls: [coturn.url], secret: coturn.secret, ttlSeconds: 600 },
    ringTimeoutSeconds: 3,
  });
  speech.alice = join(dir, 'alice.wav');
  speech.bob = join(dir, 'bob.wav');
  speech.other = join(dir, 'other.wav');
  await Promise.all([
    renderSpeech('The quick brown fox jumps over the lazy dog near the river bank.', 'en-us', speech.alice),
    renderSpeech('She sells sea shells by the sea shore every sunny morning.', 'en-gb', speech.bob),
    renderSpeech('Please call me back when you have a moment this afternoon.', 'en-us', speech.other),
  ]);
});

afterAll(async () => {
  await server?.stop();
  await Promise.allSettled([coturn?.stop(), keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

/** Two fresh client daemons that are contacts of each other. */
async function pair(names: [string, string], extra: { relay?: boolean; frameMs?: 10 | 20; mediaTimeoutS?: number } = {}) {
  const clients = await Promise.all([
    startClient({ ...extra, name: names[0], server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ ...extra, name: names[1], server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(clients[0], clients[1]);
  return clients;
}

/** Places a call from `a` to `b`, answers it, and waits until audio flows both ways. */
async function connect(a: RunningClient, b: RunningClient): Promise<{ callId: string; a: CallStatus; b: CallStatus }> {
  const { callId } = await a.request<{ callId: string }>('create_call', { to: b.name });
  await b.waitForCall(callId, (s) => s.state === 'incoming');
  await b.request('answer_call', { callId });
  const [sa, sb] = await Promise.all([
    a.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
    b.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
  ]);
  return { callId, a: sa, b: sb };
}

/** Both talk at once; returns what each far speaker played, from the moment each mic heard speech. */
async function converse(tag: string) {
  const probePath = join(dir, `${tag}-probe.wav`);
  const rec = await pulse.record('probe.monitor', probePath, 4);
  await Promise.all([pulse.play('a_in', speech.alice), pulse.play('b_in', speech.bob)]);
  await new Promise((r) => setTimeout(r, 800));
  await rec.stop();
  const probe = readWav(probePath);
  const from = (mic: Int16Array) => {
    let i = 0;
    while (i < mic.length && Math.abs(mic[i]!) < 300) i++;
    return Math.max(0, i - 4800);
  };
  const aMic = channel(probe, PROBE_CHANNEL.aliceMicInput - 1);
  const bMic = channel(probe, PROBE_CHANNEL.bobMicInput - 1);
  return {
    bobHeard: channel(probe, PROBE_CHANNEL.bobSpeaker - 1).subarray(from(aMic)),
    aliceHeard: channel(probe, PROBE_CHANNEL.aliceSpeaker - 1).subarray(from(bMic)),
  };
}

/**
 * Ends whatever a failed test left ringing or connected, so that one failure
 * is reported once instead of as "already in a call" in every later test.
 */
async function endLeftoverCalls(clients: (RunningClient | undefined)[]) {
  await Promise.allSettled(
    clients.map(async (c) => {
      if (!c) return;
      const { calls } = await c.request<{ calls: CallStatus[] }>('list_calls', {});
      await Promise.allSettled(calls.filter((s) => s.state !== 'ended').map((s) => c.request('end_call', { callId: s.callId })));
    }),
  );
}

async function hangupBoth(a: RunningClient, b: RunningClient, callId: string) {
  await a.request('end_call', { callId });
  return Promise.all([
    a.waitForCall(callId, (s) => s.state === 'ended'),
    b.waitForCall(callId, (s) => s.state === 'ended'),
  ]);
}

describe('a direct call', () => {
  let alice: RunningClient;
  let bob: RunningClient;
  let carol: RunningClient;
  beforeAll(async () => {
    [alice, bob] = await pair(['alice', 'bob']);
    carol = await startClient({ name: 'carol', server, env: { ...pulse.env, ...keyring.env }, autoAnswer: true });
    await makeClientContacts(carol, bob);
    await makeClientContacts(alice, carol);
  });
  afterEach(() => endLeftoverCalls([alice, bob, carol]));
  afterAll(async () => {
    await Promise.allSettled([alice?.stop(), bob?.stop(), carol?.stop()]);
  });

  // As root setpriority is allowed; a normal user gets the same through RTKit on a desktop (not here: no system bus).
  it.skipIf(process.getuid?.() !== 0)('runs its threads at the priority audio clients get (nice -11, as root by setpriority)', async () => {
    // /proc/<pid>/task/<tid>/stat: the nice value is field 19 (proc(5)); the command name may hold spaces.
    const niceOf = async (tid: string) => Number((await readFile(`/proc/${alice.pid}/task/${tid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[16]);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && (await niceOf(String(alice.pid))) !== -11) await new Promise((r) => setTimeout(r, 100));
    expect(await niceOf(String(alice.pid))).toBe(-11); // the main thread: capture, processing, Opus, SRTP, playout
    const tids = await readdir(`/proc/${alice.pid}/task`);
    const nices = await Promise.all(tids.map(niceOf));
    expect(nices.filter((n) => n !== -11)).toEqual([]); // and every other thread (libuv's pool runs PortAudio's reads and writes)
  });

  it('carries speech both ways, peer to peer, and hangup ends both sides with "hangup"', async () => {
    const call = await connect(alice, bob);
    expect(call.a.transport).toBe('host');
    const heard = await converse('direct');
    const aToB = speechSimilarity(readWav(speech.alice).samples, heard.bobHeard);
    const bToA = speechSimilarity(readWav(speech.bob).samples, heard.aliceHeard);
    expect(aToB.score).toBeGreaterThan(SIMILARITY_THRESHOLD);
    expect(bToA.score).toBeGreaterThan(SIMILARITY_THRESHOLD);

    // Negative controls on the same recordings: the threshold rejects the wrong sentence,
    // white noise and silence.
    expect(speechSimilarity(readWav(speech.other).samples, heard.bobHeard).score).toBeLessThan(SIMILARITY_THRESHOLD);
    expect(speechSimilarity(readWav(speech.alice).samples, whiteNoise(5, 0.1)).score).toBeLessThan(SIMILARITY_THRESHOLD);
    expect(speechSimilarity(readWav(speech.alice).samples, new Int16Array(48000 * 5)).score).toBeLessThan(SIMILARITY_THRESHOLD);

    // Live stats: one a second, with an RTCP round trip on loopback and a high MOS.
    const live = alice.stats.filter((s) => s.callId === call.callId);
    expect(live.length).toBeGreaterThanOrEqual(3);
    expect(live.at(-1)!.stats.rttMs).toBeLessThan(50);
    expect(live.at(-1)!.mos).toBeGreaterThan(4);

    const [ea, eb] = await hangupBoth(alice, bob, call.callId);
    expect(ea.endReason).toBe('hangup');
    expect(eb.endReason).toBe('hangup');
    expect(eb.stats?.packetsReceived).toBeGreaterThan(100);
  });

  it('hold keeps the call up (the peer keeps receiving silence) and resume brings it back', async () => {
    const call = await connect(alice, bob);
    await alice.request('hold_call', { callId: call.callId });
    await alice.waitForCall(call.callId, (s) => s.state === 'held');
    const r1 = (await bob.request<CallStatus>('get_call_status', { callId: call.callId })).stats!.packetsReceived;
    await new Promise((r) => setTimeout(r, 600));
    const during = await bob.request<CallStatus>('get_call_status', { callId: call.callId });
    expect(during.state).toBe('active');
    expect(during.stats!.packetsReceived).toBeGreaterThan(r1 + 15);
    await expect(alice.request('hold_call', { callId: call.callId })).rejects.toMatchObject({ reason: 'invalid_state' });
    await alice.request('resume_call', { callId: call.callId });
    const states = () => alice.events.filter((e) => e.callId === call.callId).map((e) => e.state);
    await expect.poll(() => states().at(-1)).toBe('active');
    expect(states()).toEqual(expect.arrayContaining(['held', 'active']));
    await hangupBoth(alice, bob, call.callId);
  });

  it('a declined call ends with "declined" on both sides', async () => {
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('reject_call', { callId });
    const [ea, eb] = await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'ended'),
      bob.waitForCall(callId, (s) => s.state === 'ended'),
    ]);
    expect(ea.endReason).toBe('declined');
    expect(eb.endReason).toBe('declined');
  });

  it('an unanswered call ends with "no_answer" when ringing times out', async () => {
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
    await alice.waitForCall(callId, (s) => s.state === 'ringing');
    const [ea, eb] = await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'ended', 10_000),
      bob.waitForCall(callId, (s) => s.state === 'ended', 10_000),
    ]);
    expect(ea.endReason).toBe('no_answer');
    expect(eb.endReason).toBe('no_answer');
  });

  it('calling someone who is in a call gives "busy" and leaves their call alone', async () => {
    const call = await connect(alice, bob);
    const { callId } = await carol.request<{ callId: string }>('create_call', { to: 'bob' });
    const ended = await carol.waitForCall(callId, (s) => s.state === 'ended');
    expect(ended.endReason).toBe('busy');
    const still = await bob.request<CallStatus>('get_call_status', { callId: call.callId });
    expect(still.state).toBe('active');
    await hangupBoth(alice, bob, call.callId);
  });

  it('calling an unknown user fails with a clear error', async () => {
    await expect(alice.request('create_call', { to: 'nobody-here' })).rejects.toMatchObject({
      reason: 'unknown_user',
      message: expect.stringContaining('nobody-here'),
    });
    // And the client is still fine.
    const { calls } = await alice.request<{ calls: CallStatus[] }>('list_calls');
    expect(calls.every((c) => c.state === 'ended')).toBe(true);
  });

  it('a daemon started with --auto-answer picks up by itself', async () => {
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'carol' });
    const [a, c] = await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active'),
      carol.waitForCall(callId, (s) => s.state === 'active'),
    ]);
    expect(a.transport).toBe('host');
    expect(c.direction).toBe('incoming');
    await hangupBoth(alice, carol, callId);
  });

  it('the parley CLI drives the daemons: call, answer, status, hangup', async () => {
    const cli = (who: RunningClient, ...args: string[]) =>
      runParley(args, { ...keyring.env, PARLEY_DATA_DIR: who.dataDir, PARLEY_SOCKET: who.socket });
    const out = await cli(alice, 'call', 'bob');
    const callId = /calling bob \(call ([0-9a-f-]{36})\)/.exec(out)?.[1];
    expect(callId, out).toBeTruthy();
    const incoming = await bob.waitForCall(callId, (s) => s.state === 'incoming');
    expect(await cli(bob, 'answer')).toContain(incoming.callId);
    await alice.waitForCall(incoming.callId, (s) => s.state === 'active');
    expect(await cli(bob, 'status')).toMatch(new RegExp(`${incoming.callId.slice(0, 8)} incoming alice: active via host`));
    expect(await cli(alice, 'hangup')).toContain(incoming.callId);
    const ended = await bob.waitForCall(incoming.callId, (s) => s.state === 'ended');
    expect(ended.endReason).toBe('hangup');
    await expect(cli(bob, 'answer')).rejects.toThrow(/no call to act on|not ringing/);
  });

  it('the parley CLI manages contacts, presence, settings and devices through the daemon', async () => {
    const cli = (who: RunningClient, ...args: string[]) =>
      runParley(args, { ...keyring.env, PARLEY_DATA_DIR: who.dataDir, PARLEY_SOCKET: who.socket });
    const list = await cli(alice, 'contacts');
    expect(list).toMatch(/^bob\tonline$/m);
    expect(list).toMatch(/^carol\tonline$/m);
    expect(await cli(carol, 'presence', 'away')).toContain('your contacts see you as away');
    await expect.poll(() => cli(alice, 'contacts', 'list'), { timeout: 15_000 }).toMatch(/^carol\taway$/m);
    await cli(carol, 'presence', 'online');
    expect(await cli(alice, 'contacts', 'block', 'carol')).toContain('carol blocked');
    expect(await cli(alice, 'contacts')).toMatch(/^carol\tblocked$/m);
    expect(await cli(alice, 'contacts', 'unblock', 'carol')).toContain('carol unblocked');
    await expect(cli(alice, 'contacts', 'decline', 'carol')).rejects.toThrow(/carol has not asked to be your contact/);
    expect(await cli(alice, 'settings')).toContain('only contacts may call me: on');
    const devices = await cli(alice, 'devices');
    expect(devices).toMatch(/\tonline\t.*\(this device\)/);
  });

  it('keeps the device token in the keychain and in no file of the data folder', async () => {
    const profile = JSON.parse(await readFile(join(alice.dataDir, 'profile.json'), 'utf8'));
    const saved = { ...process.env };
    Object.assign(process.env, keyring.env);
    let token: string | null;
    try {
      token = await getSecret(KEYCHAIN_SERVICE, `alice@${new URL(profile.serverUrl).host}`);
    } finally {
      process.env = saved;
    }
    expect(token).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    for (const f of await readdir(alice.dataDir, { recursive: true })) {
      const text = await readFile(join(alice.dataDir, f)).catch(() => Buffer.alloc(0));
      expect(text.includes(token!), `${f} holds the token`).toBe(false);
    }
  });
});

describe('a peer that stops answering', () => {
  it('says "reconnecting" while no audio arrives, recovers when it returns, and fails after the media timeout', async () => {
    const [alice, bob] = await pair(['halice', 'hbob'], { mediaTimeoutS: 4 });
    try {
      const call = await connect(alice, bob);
      // Frozen for 3 s: its signaling socket stays open, but no RTP comes. After 2 s (half the timeout): reconnecting.
      bob.kill('SIGSTOP');
      await alice.waitForCall(call.callId, (s) => s.media === 'reconnecting', 5_000);
      bob.kill('SIGCONT');
      const latest = () => alice.events.filter((e) => e.callId === call.callId).at(-1)!;
      await expect.poll(() => latest().media, { timeout: 5_000 }).toBe('connected');
      expect(latest().state).toBe('active');
      // Frozen for good: the call ends as failed, with a reason a user understands.
      bob.kill('SIGSTOP');
      const ended = await alice.waitForCall(call.callId, (s) => s.state === 'ended', 15_000);
      expect(ended.endReason).toBe('failed');
      expect(ended.error).toMatch(/connection to hbob was lost/);
      bob.kill('SIGCONT');
      const other = await bob.waitForCall(call.callId, (s) => s.state === 'ended', 15_000);
      expect(['failed', 'hangup']).toContain(other.endReason);
    } finally {
      bob.kill('SIGCONT');
      await Promise.allSettled([alice.stop(), bob.stop()]);
    }
  });
});

describe('a relayed call', () => {
  let alice: RunningClient;
  let bob: RunningClient;
  beforeAll(async () => {
    [alice, bob] = await pair(['ralice', 'rbob'], { relay: true });
  });
  afterAll(async () => {
    await Promise.allSettled([alice?.stop(), bob?.stop()]);
  });

  it('carries speech both ways through coturn', async () => {
    const call = await connect(alice, bob);
    expect(call.a.transport).toBe('relay');
    expect(call.b.transport).toBe('relay');
    const heard = await converse('relay');
    expect(speechSimilarity(readWav(speech.alice).samples, heard.bobHeard).score).toBeGreaterThan(SIMILARITY_THRESHOLD);
    expect(speechSimilarity(readWav(speech.bob).samples, heard.aliceHeard).score).toBeGreaterThan(SIMILARITY_THRESHOLD);
    const [ea, eb] = await hangupBoth(alice, bob, call.callId);
    expect(ea.endReason).toBe('hangup');
    expect(eb.endReason).toBe('hangup');
  });
});
