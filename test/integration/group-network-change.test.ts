/**
 * A network change in a group call (issue 14 item 3): two network
 * namespaces made by the test, joined by a veth pair — the server, its SFU
 * (transports listening on 10.214.0.1) and Alice in A; Bob in B (10.214.0.2),
 * reaching the server's signaling through socat on B's loopback. Both gather
 * their real interface addresses (no `--loopback`). While Alice plays a tone,
 * Bob's address changes (a new lease: 10.214.0.3 added, .2 removed): his
 * network watcher sees it, his signaling reconnects and resumes his place in
 * the room, his transports to the SFU restart ICE over the new address, and
 * the tone goes on at his speaker.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomStatus } from '../../common/protocol/control';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir, waitFor } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { channel, longestSilenceMs, readWav } from '../harness/speech';

const run = promisify(execFile);
const NS_A = `p14a-${process.pid}`;
const NS_B = `p14b-${process.pid}`;
const ip = (...args: string[]) => run('ip', args);

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let socat: ChildProcess | undefined;
let dir: string;
let alice: RunningClient;
let bob: RunningClient;

beforeAll(async () => {
  dir = makeTempDir('group-network-change');
  for (const ns of [NS_A, NS_B]) {
    await ip('netns', 'add', ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    await run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv4.conf.all.promote_secondaries=1', 'net.ipv4.conf.default.promote_secondaries=1']);
  }
  await ip('link', 'add', 'p14va', 'netns', NS_A, 'type', 'veth', 'peer', 'name', 'p14vb', 'netns', NS_B);
  await ip('-n', NS_A, 'addr', 'add', '10.214.0.1/24', 'dev', 'p14va');
  await ip('-n', NS_B, 'addr', 'add', '10.214.0.2/24', 'dev', 'p14vb');
  await ip('-n', NS_A, 'link', 'set', 'p14va', 'up');
  await ip('-n', NS_B, 'link', 'set', 'p14vb', 'up');

  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer({
    netns: NS_A,
    env: { PARLEY_SERVER_LISTEN: '0.0.0.0:0', PARLEY_SFU_WORKERS: '1', PARLEY_SFU_LISTEN_IP: '10.214.0.1', PARLEY_SFU_RECONNECT_GRACE: '20' },
  });
  const port = new URL(server.url).port;
  socat = spawn('ip', ['netns', 'exec', NS_B, 'socat', `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `TCP:10.214.0.1:${port}`], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  const local = { url: `http://127.0.0.1:${port}` };
  [alice, bob] = await Promise.all([
    startClient({ name: `galice${process.pid}`, server: local, netns: NS_A, loopback: false, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: `gbob${process.pid}`, server: local, netns: NS_B, loopback: false, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
}, 90_000);

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  socat?.kill();
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  for (const ns of [NS_A, NS_B]) await ip('netns', 'del', ns).catch(() => {});
  if (dir) removeTempDir(dir);
});

describe('a network change in a group call', () => {
  it("a participant's address changes mid-tone: it resumes, restarts ICE to the SFU over the new address, and the audio goes on", async () => {
    await makeClientContacts(alice, bob);
    const created = await alice.request<RoomStatus>('create_room', { invite: [bob.name] });
    const roomId = created.roomId;
    await bob.request<RoomStatus>('join_room', { roomId });
    await waitFor('both to hear each other', async () => {
      const st = await Promise.all([alice, bob].map((c) => c.request<RoomStatus>('list_participants')));
      return st.every((s) => s.participants.some((p) => !p.self && p.audio?.playing));
    }, 20_000, 100);
    const paths = async () =>
      (await adminRequest<{ rooms: { roomId: string; participants: { username: string; paths: { direction: string; remote: string | null }[] }[] }[] }>(server.adminSocket, 'rooms.list', {}))
        .rooms.find((r) => r.roomId === roomId)!.participants.find((p) => p.username === bob.name)!.paths;
    const before = await paths();
    expect(before.every((p) => p.remote?.startsWith('10.214.0.2:'))).toBe(true);

    const tone = join(dir, 'tone.wav');
    await run('sox', ['-R', '-n', '-r', '48000', '-c', '1', '-b', '16', tone, 'synth', '12', 'sine', '440', 'vol', '0.3']);
    const probe = join(dir, 'probe.wav');
    const rec = await pulse.record('probe.monitor', probe, 4);
    const seenBefore = bob.notifications.length;
    const playing = pulse.play('a_in', tone);
    await new Promise((r) => setTimeout(r, 2500));
    await ip('-n', NS_B, 'addr', 'add', '10.214.0.3/24', 'dev', 'p14vb');
    await ip('-n', NS_B, 'addr', 'del', '10.214.0.2/24', 'dev', 'p14vb');
    const changedAt = Date.now();
    await playing;
    await rec.stop();

    // Bob said reconnecting, resumed and restarted ICE; the SFU now receives him from his new address.
    const states = bob.notifications.slice(seenBefore).filter((n) => n.method === 'room.state').map((n) => n.params as RoomStatus);
    const status = await bob.request<RoomStatus>('list_participants');
    console.log(`bob after the change: ${JSON.stringify(states.map((s) => [s.state, s.reconnecting?.what ?? '', s.resumes, s.iceRestarts]))}; now ${status.state}, resumes ${status.resumes}, ICE restarts ${status.iceRestarts}, error ${status.error ?? '–'}`);
    expect(states.some((s) => s.state === 'reconnecting')).toBe(true);
    expect(status.state).toBe('joined');
    expect(status.resumes).toBeGreaterThanOrEqual(1);
    expect(status.iceRestarts).toBeGreaterThanOrEqual(2);
    const after = await paths();
    console.log(`SFU's view of bob: before ${JSON.stringify(before)}, after ${JSON.stringify(after)} (${Date.now() - changedAt} ms after the change)`);
    expect(after.every((p) => p.remote?.startsWith('10.214.0.3:'))).toBe(true);

    const wav = readWav(probe);
    const mic = channel(wav, PROBE_CHANNEL.aliceMicInput - 1);
    const heard = channel(wav, PROBE_CHANNEL.bobSpeaker - 1);
    let start = 0;
    while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
    const startMs = start / 48;
    const gap = longestSilenceMs(heard, startMs + 500, startMs + 11_500);
    // The tone's last 3 s reached Bob: the audio came back after the change.
    const tail = longestSilenceMs(heard, startMs + 8500, startMs + 11_500);
    console.log(`group network change: longest silence at Bob's speaker ${gap} ms; in the tone's last 3 s ${tail} ms`);
    // Back for good: at most a short underrun in the last 3 s (80-320 ms here at load average 15).
    expect(tail).toBeLessThan(600);
    expect(gap).toBeLessThan(4000);
  }, 90_000);

  it("a participant's link goes down for 6 s: its room says reconnecting, then resumes, restarts ICE and the audio comes back", async () => {
    const roomId = (await bob.request<RoomStatus>('list_participants')).roomId;
    const tone = join(dir, 'tone2.wav');
    await run('sox', ['-R', '-n', '-r', '48000', '-c', '1', '-b', '16', tone, 'synth', '16', 'sine', '440', 'vol', '0.3']);
    const probe = join(dir, 'probe2.wav');
    const rec = await pulse.record('probe.monitor', probe, 4);
    const seenBefore = bob.notifications.length;
    const restartsBefore = (await bob.request<RoomStatus>('list_participants')).iceRestarts ?? 0;
    const playing = pulse.play('a_in', tone);
    await new Promise((r) => setTimeout(r, 2500));
    await ip('-n', NS_B, 'link', 'set', 'p14vb', 'down');
    await new Promise((r) => setTimeout(r, 6000));
    await ip('-n', NS_B, 'link', 'set', 'p14vb', 'up');
    await playing;
    await rec.stop();
    const states = bob.notifications.slice(seenBefore).filter((n) => n.method === 'room.state').map((n) => n.params as RoomStatus);
    const status = await bob.request<RoomStatus>('list_participants');
    console.log(`bob through the link drop: ${JSON.stringify(states.map((s) => [s.state, s.reconnecting?.what ?? '', s.resumes, s.iceRestarts, s.error ?? '']))}; now ${status.state}, ICE restarts ${status.iceRestarts} (before ${restartsBefore})`);
    expect(status.roomId).toBe(roomId);
    expect(states.some((s) => s.state === 'reconnecting')).toBe(true);
    expect(status.state).toBe('joined');
    expect(status.iceRestarts).toBeGreaterThan(restartsBefore);
    const wav = readWav(probe);
    const mic = channel(wav, PROBE_CHANNEL.aliceMicInput - 1);
    const heard = channel(wav, PROBE_CHANNEL.bobSpeaker - 1);
    let start = 0;
    while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
    const startMs = start / 48;
    const tail = longestSilenceMs(heard, startMs + 13_000, startMs + 15_500);
    console.log(`link down 6 s: longest silence at Bob's speaker ${longestSilenceMs(heard, startMs + 500, startMs + 15_500)} ms; in the tone's last 2.5 s ${tail} ms`);
    expect(tail).toBeLessThan(600);
  }, 90_000);
});
