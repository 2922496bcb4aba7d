/**
 * A network change mid-call (issue 18, item 3). Two network namespaces made by
 * the test, joined by a veth pair: Alice and the server in A (10.218.0.1),
 * Bob in B (10.218.0.2), reaching the server through socat on B's loopback.
 * Both gather their real interface addresses (no `--loopback`); IPv6 is off so
 * the path is the IPv4 one. While Alice speaks, Bob's address changes (a new
 * lease: 10.218.0.3 added, 10.218.0.2 removed). Bob's network watcher sees it,
 * reconnects signaling over the new address and asks for an ICE restart;
 * Alice restarts, both gather anew, and the speech goes on.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallStatus } from '../../common/protocol/control';
import { makeClientContacts, placeAnsweredCall, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { channel, longestSilenceMs, readWav } from '../harness/speech';

const run = promisify(execFile);
const NS_A = `p18a-${process.pid}`;
const NS_B = `p18b-${process.pid}`;
const ip = (...args: string[]) => run('ip', args);

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let socat: ChildProcess | undefined;
let dir: string;
let alice: RunningClient;
let bob: RunningClient;

beforeAll(async () => {
  dir = makeTempDir('network-change');
  for (const ns of [NS_A, NS_B]) {
    await ip('netns', 'add', ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    // IPv6 off (the path is the IPv4 one); a removed primary address promotes the secondary instead of taking it along.
    await run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv4.conf.all.promote_secondaries=1', 'net.ipv4.conf.default.promote_secondaries=1']);
  }
  await ip('link', 'add', 'p18va', 'netns', NS_A, 'type', 'veth', 'peer', 'name', 'p18vb', 'netns', NS_B);
  await ip('-n', NS_A, 'addr', 'add', '10.218.0.1/24', 'dev', 'p18va');
  await ip('-n', NS_B, 'addr', 'add', '10.218.0.2/24', 'dev', 'p18vb');
  await ip('-n', NS_A, 'link', 'set', 'p18va', 'up');
  await ip('-n', NS_B, 'link', 'set', 'p18vb', 'up');

  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer({ netns: NS_A, env: { PARLEY_SERVER_LISTEN: '0.0.0.0:0' } });
  const port = new URL(server.url).port;
  socat = spawn('ip', ['netns', 'exec', NS_B, 'socat', `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `TCP:10.218.0.1:${port}`], {
    stdio: 'ignore',
  });
  await new Promise((r) => setTimeout(r, 300));
  const local = { url: `http://127.0.0.1:${port}` };
  [alice, bob] = await Promise.all([
    startClient({ name: 'nalice', server: local, netns: NS_A, loopback: false, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'nbob', server: local, netns: NS_B, loopback: false, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
}, 60_000);

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  socat?.kill();
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  for (const ns of [NS_A, NS_B]) await ip('netns', 'del', ns).catch(() => {});
  if (dir) removeTempDir(dir);
});

/**
 * Plays a 9 s tone into Alice's microphone, runs `change` 2.5 s in, and
 * returns the longest silence at Bob's speaker, ms; checks that both sides say
 * `connected` again and the call is still up, then hangs up.
 */
async function speakThrough(change: () => Promise<void>): Promise<number> {
  const tone = join(dir, 'tone.wav');
  await run('sox', ['-R', '-n', '-r', '48000', '-c', '1', '-b', '16', tone, 'synth', '9', 'sine', '440', 'vol', '0.3']);
  const callId = await placeAnsweredCall(alice, bob);

  const probe = join(dir, 'probe.wav');
  const rec = await pulse.record('probe.monitor', probe, 4);
  const playing = pulse.play('a_in', tone);
  await new Promise((r) => setTimeout(r, 2500));
  const changedAt = Date.now();
  await change();
  await bob.waitForCall(callId, (s) => (s.networkChangedAt ?? 0) >= changedAt - 100, 5_000);
  await playing;
  await rec.stop();

  const latest = (c: RunningClient) => c.events.filter((e) => e.callId === callId).at(-1)!;
  try {
    await expect.poll(() => [latest(alice).media, latest(bob).media], { timeout: 10_000 }).toEqual(['connected', 'connected']);
  } catch (e) {
    // What each side showed last, and its signaling, for the failure report.
    for (const c of [alice, bob]) console.log(c.name, JSON.stringify(c.events.filter((e) => e.callId === callId).slice(-8).map((e) => [e.media, e.signaling, e.networkChangedAt])), JSON.stringify(c.notifications.filter((n) => n.method === 'signaling.state').slice(-6)));
    throw e;
  }
  const wav = readWav(probe);
  const mic = channel(wav, PROBE_CHANNEL.aliceMicInput - 1);
  const heard = channel(wav, PROBE_CHANNEL.bobSpeaker - 1);
  let start = 0;
  while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
  const startMs = start / 48;
  const gap = longestSilenceMs(heard, startMs + 500, startMs + 8500);
  for (const c of [alice, bob]) expect((await c.request<CallStatus>('get_call_status', { callId })).state).toBe('active');
  await alice.request('end_call', { callId });
  expect((await bob.waitForCall(callId, (s) => s.state === 'ended')).endReason).toBe('hangup');
  return gap;
}

describe('a network change mid-call', () => {
  it("the callee's address changes mid-sentence: it restarts ICE at once and the speech goes on", async () => {
    const gap = await speakThrough(async () => {
      await ip('-n', NS_B, 'addr', 'add', '10.218.0.3/24', 'dev', 'p18vb');
      await ip('-n', NS_B, 'addr', 'del', '10.218.0.2/24', 'dev', 'p18vb');
    });
    console.log(`network change (address): longest silence at Bob's speaker ${gap} ms`);
    expect(gap).toBeLessThan(2000);
  }, 60_000);

  it("the callee's link moves to a second veth mid-sentence: the speech goes on", async () => {
    await ip('link', 'add', 'p18va2', 'netns', NS_A, 'type', 'veth', 'peer', 'name', 'p18vb2', 'netns', NS_B);
    await ip('-n', NS_A, 'addr', 'add', '10.218.1.1/24', 'dev', 'p18va2');
    await ip('-n', NS_A, 'link', 'set', 'p18va2', 'up');
    const gap = await speakThrough(async () => {
      // The new link comes up with its own address; the old one goes down, and with it its address and route.
      await ip('-n', NS_B, 'addr', 'add', '10.218.1.2/24', 'dev', 'p18vb2');
      await ip('-n', NS_B, 'link', 'set', 'p18vb2', 'up');
      await ip('-n', NS_B, 'link', 'set', 'p18vb', 'down'); // (deleting it would take Alice's end and address along)
      await ip('-n', NS_B, 'addr', 'flush', 'dev', 'p18vb');
      await ip('-n', NS_B, 'route', 'add', '10.218.0.1/32', 'via', '10.218.1.1', 'dev', 'p18vb2');
    });
    console.log(`network change (link moved): longest silence at Bob's speaker ${gap} ms`);
    expect(gap).toBeLessThan(2000);
  }, 60_000);
});
