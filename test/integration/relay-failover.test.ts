/**
 * The relay in use disappears mid-call. Both clients are relay-only; the
 * server hands out two relays (two user-space UDP relays in front of one
 * coturn: two paths), and werift uses the first. Relay A is then shut: no
 * RTP arrives, the call says "reconnecting", the caller restarts ICE on a new
 * transport through relay B (sealed offer and answer over the call's
 * candidate channel, DTLS fingerprint checked again), and the audio comes
 * back. Measured at Bob's speaker through PulseAudio: the longest silence in
 * a steady tone from Alice's microphone stays under 2 s, and the call is
 * still `active` and `connected` afterwards.
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
let relayA: ImpairRelay;
let relayB: ImpairRelay;
let server: RunningServer;
let alice: RunningClient;
let bob: RunningClient;
let dir: string;

beforeAll(async () => {
  dir = makeTempDir('relay-failover');
  [pulse, keyring, coturn] = await Promise.all([startPulse(), startKeyring(), startCoturn()]);
  relayA = await startImpairRelay({ upstream: { host: coturn.host, port: coturn.port }, profile: 'clean', seed: 1 });
  relayB = await startImpairRelay({ upstream: { host: coturn.host, port: coturn.port }, profile: 'clean', seed: 2 });
  server = await startServer({ turn: { urls: [relayA.url(), relayB.url()], secret: coturn.secret, ttlSeconds: 600 } });
  [alice, bob] = await Promise.all([
    startClient({ name: 'falice', server, relay: true, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'fbob', server, relay: true, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
});

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await server?.stop();
  await Promise.allSettled([relayA?.stop(), relayB?.stop()]);
  await Promise.allSettled([coturn?.stop(), keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

describe('the relay in use disappears mid-call', () => {
  it('restarts ICE through the other relay: "reconnecting", then "connected", the audio gap under 2 s', async () => {
    const tone = join(dir, 'tone.wav');
    await promisify(execFile)('sox', ['-R', '-n', '-r', '48000', '-c', '1', '-b', '16', tone, 'synth', '9', 'sine', '440', 'vol', '0.3']);

    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'fbob' });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('answer_call', { callId });
    await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active' && s.transport === 'relay' && !!s.firstAudioAt),
      bob.waitForCall(callId, (s) => s.state === 'active' && s.transport === 'relay' && !!s.firstAudioAt),
    ]);
    const flowsOn = (r: ImpairRelay) => r.stats().toServer.forwarded + r.stats().toClient.forwarded;
    const beforeB = flowsOn(relayB);
    expect(flowsOn(relayA)).toBeGreaterThan(0);

    const probe = join(dir, 'probe.wav');
    const rec = await pulse.record('probe.monitor', probe, 4);
    const playing = pulse.play('a_in', tone);
    await new Promise((r) => setTimeout(r, 2500));
    await relayA.stop(); // the path in use is gone, in both directions, for both sides
    const [ra, rb] = await Promise.all([
      alice.waitForCall(callId, (s) => s.media === 'reconnecting', 5_000),
      bob.waitForCall(callId, (s) => s.media === 'reconnecting', 5_000),
    ]);
    expect(ra.state).toBe('active');
    expect(rb.state).toBe('active');
    const latest = (c: RunningClient) => c.events.filter((e) => e.callId === callId).at(-1)!;
    await expect.poll(() => latest(alice).media, { timeout: 8_000 }).toBe('connected');
    await expect.poll(() => latest(bob).media, { timeout: 8_000 }).toBe('connected');
    await playing;
    await rec.stop();

    // The audio now crosses relay B, and the call carried on.
    expect(flowsOn(relayB)).toBeGreaterThan(beforeB + 50);
    for (const c of [alice, bob]) {
      const s = latest(c);
      expect(s.state).toBe('active');
      expect(s.transport).toBe('relay');
      expect(s.e2ee?.fingerprintBound).toBe(true);
    }
    const wav = readWav(probe);
    const mic = channel(wav, PROBE_CHANNEL.aliceMicInput - 1);
    const heard = channel(wav, PROBE_CHANNEL.bobSpeaker - 1);
    let start = 0;
    while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
    const startMs = start / 48;
    // From 0.5 s into the tone until 0.5 s before its end (the call delay is well under 0.5 s).
    const gap = longestSilenceMs(heard, startMs + 500, startMs + 8500);
    console.log(`relay failover: longest silence at Bob's speaker ${gap} ms`);
    expect(gap).toBeGreaterThan(200); // the path really broke…
    expect(gap).toBeLessThan(2000); // …and the audio was back within 2 s
    await alice.request('end_call', { callId });
  });
});
