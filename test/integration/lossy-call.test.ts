/**
 * A relayed call whose TURN traffic crosses the user-space impairment relay
 * (test/harness/impair.ts) with the `wifi` profile on every leg: packets are
 * lost and jittered, and speech still gets through both ways, with lost
 * frames rebuilt from in-band FEC or concealed.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallStatus } from '../../common/protocol/control';
import { SIMILARITY_THRESHOLD, speechSimilarity } from '../../main/media/analysis';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startCoturn, type Coturn } from '../harness/coturn';
import { startImpairRelay, type ImpairRelay } from '../harness/impair';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { channel, readWav, renderSpeech } from '../harness/speech';

let pulse: Pulse;
let keyring: Keyring;
let coturn: Coturn;
let relay: ImpairRelay;
let server: RunningServer;
let alice: RunningClient;
let bob: RunningClient;
let dir: string;

beforeAll(async () => {
  dir = makeTempDir('lossy-call');
  [pulse, keyring, coturn] = await Promise.all([startPulse(), startKeyring(), startCoturn()]);
  relay = await startImpairRelay({ upstream: { host: coturn.host, port: coturn.port }, profile: 'clean', seed: 7 });
  server = await startServer({ turn: { urls: [relay.url()], secret: coturn.secret, ttlSeconds: 600 } });
  [alice, bob] = await Promise.all([
    startClient({ name: 'alice', server, relay: true, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'bob', server, relay: true, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
});

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await server?.stop();
  await relay?.stop();
  await Promise.allSettled([coturn?.stop(), keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

describe('a call over a lossy, jittery path', () => {
  it('carries speech both ways through wifi-like loss and jitter, rebuilding lost frames', async () => {
    const aliceWav = join(dir, 'alice.wav');
    const bobWav = join(dir, 'bob.wav');
    await renderSpeech('The quick brown fox jumps over the lazy dog near the river bank.', 'en-us', aliceWav);
    await renderSpeech('She sells sea shells by the sea shore every sunny morning.', 'en-gb', bobWav);

    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('answer_call', { callId });
    await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active' && s.transport === 'relay'),
      bob.waitForCall(callId, (s) => s.state === 'active' && s.transport === 'relay'),
    ]);
    relay.setProfile('wifi'); // impair media only, after ICE settled on the relay

    const probePath = join(dir, 'probe.wav');
    const rec = await pulse.record('probe.monitor', probePath, 4);
    await Promise.all([pulse.play('a_in', aliceWav), pulse.play('b_in', bobWav)]);
    await new Promise((r) => setTimeout(r, 1000));
    await rec.stop();

    const stats = relay.stats();
    const [sa, sb] = await Promise.all([
      alice.request<CallStatus>('get_call_status', { callId }),
      bob.request<CallStatus>('get_call_status', { callId }),
    ]);
    await alice.request('end_call', { callId });

    // The path really was impaired…
    expect(stats.toServer.droppedLoss + stats.toClient.droppedLoss).toBeGreaterThan(0);
    // …and the receivers met the loss: frames rebuilt from in-band FEC or concealed, or packets brought back
    // whole by the next packet's RFC 2198 copy (a CI run saw every loss of a short call covered that way).
    const rebuilt = (s: CallStatus) => s.stats!.framesRecoveredByFec + s.stats!.framesConcealed + (s.stats!.packetsRecoveredByRed ?? 0);
    expect(rebuilt(sa) + rebuilt(sb)).toBeGreaterThan(0);
    expect(sa.stats!.packetsRecoveredByRed).toBeDefined();
    // Live stats came every second, with RTCP round-trip times, the loss the far
    // end reports (which steers the encoder's FEC) and an E-model MOS.
    const live = [...alice.stats, ...bob.stats].filter((x) => x.callId === callId);
    expect(live.length).toBeGreaterThanOrEqual(6);
    const lastA = alice.stats.filter((x) => x.callId === callId).at(-1)!;
    expect(lastA.stats.rttMs).toBeGreaterThan(20); // two relay legs of 20 ± 20 ms each way
    expect(lastA.mos).toBeGreaterThan(1);
    expect(lastA.mos).toBeLessThan(4.5);
    expect(live.some((x) => x.concealmentRate > 0)).toBe(true);
    // …and speech still got through both ways.
    const probe = readWav(probePath);
    const bobHeard = channel(probe, PROBE_CHANNEL.bobSpeaker - 1);
    const aliceHeard = channel(probe, PROBE_CHANNEL.aliceSpeaker - 1);
    const aToB = speechSimilarity(readWav(aliceWav).samples, bobHeard, { maxLagMs: 3000 });
    const bToA = speechSimilarity(readWav(bobWav).samples, aliceHeard, { maxLagMs: 3000 });
    console.log(
      `wifi profile: relay dropped ${stats.toServer.droppedLoss}+${stats.toClient.droppedLoss}; ` +
        `alice ${JSON.stringify(sa.stats)}; bob ${JSON.stringify(sb.stats)}; similarity ${aToB.score.toFixed(3)} / ${bToA.score.toFixed(3)}`,
    );
    expect(aToB.score).toBeGreaterThan(SIMILARITY_THRESHOLD);
    expect(bToA.score).toBeGreaterThan(SIMILARITY_THRESHOLD);
  });
});
