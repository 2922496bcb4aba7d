/**
 * Only the callee's inbound path fails (issue 18, item 2). Both clients are
 * relay-only and each starts on its own relay: Alice (caller) on relay A, Bob
 * (callee) on relay B — the server's relay experiment gives Bob's account
 * another list — with a spare relay C second on both lists; all three are
 * user-space UDP relays in front of one coturn. Mid-call, relay B drops
 * everything towards Bob: Alice still hears Bob and sees nothing wrong, so
 * before this change nobody restarted and Bob waited for the media timeout.
 * Now Bob asks (`restart-request`, sealed), Alice restarts ICE (generation 1,
 * through relay C on both sides), both switch, and the audio at Bob's speaker
 * is back within 3 s.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startCoturn, type Coturn } from '../harness/coturn';
import { startImpairRelay, type ImpairRelay } from '../harness/impair';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { channel, longestSilenceMs, readWav } from '../harness/speech';

let pulse: Pulse;
let keyring: Keyring;
let coturn: Coturn;
let relays: ImpairRelay[] = [];
let server: RunningServer;
let alice: RunningClient;
let bob: RunningClient;
let dir: string;

beforeAll(async () => {
  dir = makeTempDir('asymmetric-path');
  [pulse, keyring, coturn] = await Promise.all([startPulse(), startKeyring(), startCoturn()]);
  relays = await Promise.all(
    [1, 2, 3].map((seed) => startImpairRelay({ upstream: { host: coturn.host, port: coturn.port }, profile: 'clean', seed })),
  );
  const [a, b, c] = relays.map((r) => JSON.stringify(r.url()));
  server = await startServer({
    configToml: [
      '[turn]',
      `urls = [${a}, ${c}]`,
      `secret = ${JSON.stringify(coturn.secret)}`,
      'experiment_accounts = ["ybob"]',
      `experiment_urls = [${b}, ${c}]`,
    ].join('\n'),
  });
  [alice, bob] = await Promise.all([
    startClient({ name: 'yalice', server, relay: true, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'ybob', server, relay: true, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
});

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await server?.stop();
  await Promise.allSettled(relays.map((r) => r.stop()));
  await Promise.allSettled([coturn?.stop(), keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

describe("only the callee's inbound path fails", () => {
  it('the callee asks, the caller restarts ICE, and the audio at the callee is back within 3 s', async () => {
    const [relayA, relayB, relayC] = relays as [ImpairRelay, ImpairRelay, ImpairRelay];
    const tone = join(dir, 'tone.wav');
    await promisify(execFile)('sox', ['-R', '-n', '-r', '48000', '-c', '1', '-b', '16', tone, 'synth', '9', 'sine', '440', 'vol', '0.3']);

    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'ybob' });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('answer_call', { callId });
    await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active' && s.transport === 'relay' && !!s.firstAudioAt),
      bob.waitForCall(callId, (s) => s.state === 'active' && s.transport === 'relay' && !!s.firstAudioAt),
    ]);
    const flows = (r: ImpairRelay) => r.stats().toServer.forwarded + r.stats().toClient.forwarded;
    expect(flows(relayA)).toBeGreaterThan(0);
    expect(flows(relayB)).toBeGreaterThan(0);
    const beforeC = flows(relayC);

    const probe = join(dir, 'probe.wav');
    const rec = await pulse.record('probe.monitor', probe, 4);
    const playing = pulse.play('a_in', tone);
    await new Promise((r) => setTimeout(r, 2500));
    relayB.setProfile({ name: 'dead', loss: { model: 'bernoulli', rate: 1 } }, 'toClient'); // towards Bob only
    await bob.waitForCall(callId, (s) => s.media === 'reconnecting', 5_000);
    const latest = (c: RunningClient) => c.events.filter((e) => e.callId === callId).at(-1)!;
    await expect.poll(() => latest(bob).media, { timeout: 8_000 }).toBe('connected');
    await playing;
    await rec.stop();

    expect(flows(relayC)).toBeGreaterThan(beforeC + 50); // the new path
    for (const c of [alice, bob]) {
      const s = latest(c);
      expect(s.state).toBe('active');
      expect(s.media).toBe('connected');
      expect(s.e2ee?.fingerprintBound).toBe(true);
    }
    const wav = readWav(probe);
    const mic = channel(wav, PROBE_CHANNEL.aliceMicInput - 1);
    const heard = channel(wav, PROBE_CHANNEL.bobSpeaker - 1);
    let start = 0;
    while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
    const startMs = start / 48;
    const gap = longestSilenceMs(heard, startMs + 500, startMs + 8500);
    console.log(`asymmetric path failure: longest silence at Bob's speaker ${gap} ms`);
    expect(gap).toBeGreaterThan(200); // the path really broke…
    expect(gap).toBeLessThan(3000); // …and Bob heard Alice again within 3 s

    // A repaired call stays repaired: a restart-request Bob sent before he saw the restart's
    // offer must not start another restart (it once did, ~1 in 5: Bob showed "reconnecting"
    // 5 s after recovering while his audio played on).
    const seen = { alice: alice.events.length, bob: bob.events.length };
    await new Promise((r) => setTimeout(r, 7000));
    const later = [...alice.events.slice(seen.alice), ...bob.events.slice(seen.bob)].filter((e) => e.callId === callId);
    expect(later.filter((e) => e.media === 'reconnecting')).toEqual([]);
    await alice.request('end_call', { callId });
  });
});
