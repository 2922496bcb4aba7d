/**
 * Staying in a group call (issue 14 items 3 and 4): real headless daemons in
 * one room on the real server with its SFU (a real mediasoup worker), each
 * with its own PulseAudio microphone and speaker.
 * - Alice reaches the server through a TCP proxy the test cuts (a signaling
 *   blip: Wi-Fi roaming, a NAT rebinding): the server keeps her place for its
 *   grace, her audio goes on, her room says `reconnecting`, the others see
 *   her `away`; when the proxy is back she resumes (`room.resume`), restarts
 *   ICE to the SFU, and speech goes both ways again. Cut longer than the
 *   grace, she is removed as before and her room ends `signaling_lost`.
 * - A newcomer hears whoever is talking at once (the defect: ~3 s of silence
 *   after joining, while the others' SFrame keys rotated with a grace the
 *   newcomer had no key for).
 */
import { execFile } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomStatus } from '../../common/protocol/control';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { piecewiseSimilarity } from '../harness/group';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir, waitFor } from '../harness/process';
import { DEVICES, PROBE2_CHANNEL, PROBE_CHANNEL, startPulse, type ClientName, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { channel, longestSilenceMs, readWav, renderSpeech } from '../harness/speech';
import { startTcpProxy, type TcpProxy } from '../harness/tcp-proxy';

/** The server's grace for a participant whose signaling dropped, s. */
const GRACE_S = 8;
/** The bar for speech heard after a resume, judged in 500 ms pieces (as group-call.test.ts, which explains it). */
const PAIR_SIMILARITY = 0.7;

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let proxy: TcpProxy;
let dir: string;
let roomId: string;
const clients = {} as Record<'a' | 'b' | 'c', RunningClient>;
const wav = {} as Record<'a' | 'b' | 'tone', string>;

beforeAll(async () => {
  dir = makeTempDir('group-reconnect');
  [pulse, keyring] = await Promise.all([startPulse({ clients: 4 }), startKeyring()]);
  server = await startServer({ env: { PARLEY_SFU_WORKERS: '1', PARLEY_SFU_RECONNECT_GRACE: String(GRACE_S) } });
  proxy = await startTcpProxy(server.url);
  wav.a = join(dir, 'a.wav');
  wav.b = join(dir, 'b.wav');
  wav.tone = join(dir, 'tone.wav');
  await Promise.all([
    renderSpeech('The quick brown fox jumps over the lazy dog near the river bank.', 'en-us', wav.a),
    renderSpeech('She sells sea shells by the sea shore every sunny morning.', 'en-gb', wav.b),
    promisify(execFile)('sox', ['-R', '-n', '-r', '48000', '-c', '1', '-b', '16', wav.tone, 'synth', '9', 'sine', '440', 'vol', '0.3']),
  ]);
  const tag = Math.floor(Math.random() * 1e6);
  for (const [n, name, via] of [['a', 'ralice', proxy], ['b', 'rbob', server], ['c', 'rcarol', server]] as const) {
    clients[n] = await startClient({
      name: `${name}${tag}`,
      server: via,
      env: { ...pulse.clientEnv(n), ...keyring.env },
      input: DEVICES[n].mic,
      output: DEVICES[n].speaker,
    });
  }
}, 180_000);

afterAll(async () => {
  await Promise.allSettled(Object.values(clients).map((c) => c.stop()));
  await proxy?.close();
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir && process.env.PARLEY_KEEP_RECORDINGS) console.log(`group-reconnect recordings kept in ${dir}`);
  else if (dir) removeTempDir(dir);
});

const status = (n: 'a' | 'b' | 'c') => clients[n].request<RoomStatus>('list_participants');

/** Waits until `who` plays audio from every one of `from`. */
async function hearsAll(who: 'a' | 'b' | 'c', from: ('a' | 'b' | 'c')[], timeoutMs = 15_000): Promise<RoomStatus> {
  let last: RoomStatus | undefined;
  await waitFor(
    `${who} to hear ${from.join(', ')}`,
    async () => {
      last = await status(who);
      return from.every((f) => last!.participants.some((p) => p.username === clients[f].name && p.audio?.playing));
    },
    timeoutMs,
    100,
  ).catch((e: unknown) => {
    throw new Error(`${(e as Error).message}; last status: ${JSON.stringify(last)}`, { cause: e });
  });
  return last!;
}

/** Plays `file` into `who`'s microphone while both probes are recorded; returns the recordings. */
async function recorded(tag: string, during: () => Promise<void>): Promise<{ probe: ReturnType<typeof readWav>; probe2: ReturnType<typeof readWav>; startedAt: number }> {
  const p1 = join(dir, `${tag}-probe.wav`);
  const p2 = join(dir, `${tag}-probe2.wav`);
  const [r1, r2] = await Promise.all([pulse.record('probe.monitor', p1, 4), pulse.record('probe2.monitor', p2, 4)]);
  const startedAt = Date.now();
  try {
    await during();
    await new Promise((r) => setTimeout(r, 900));
  } finally {
    await Promise.all([r1.stop(), r2.stop()]);
  }
  return { probe: readWav(p1), probe2: readWav(p2), startedAt };
}

const speakerOf = (rec: Awaited<ReturnType<typeof recorded>>, n: ClientName) =>
  n === 'a' ? channel(rec.probe, PROBE_CHANNEL.aliceSpeaker - 1) : n === 'b' ? channel(rec.probe, PROBE_CHANNEL.bobSpeaker - 1) : channel(rec.probe2, PROBE2_CHANNEL.carolSpeaker - 1);

describe('staying in a group call', () => {
  it('a signaling blip within the grace: the audio goes on, the room says reconnecting, then resumes with an ICE restart and speech goes both ways', async () => {
    // Only invited accounts may join by id: Alice rings Bob and Carol in (Carol joins later, as a newcomer).
    for (const n of ['b', 'c'] as const) await makeClientContacts(clients.a, clients[n]);
    const created = await clients.a.request<RoomStatus>('create_room', { invite: [clients.b.name, clients.c.name] });
    roomId = created.roomId;
    await clients.b.request<RoomStatus>('join_room', { roomId });
    await Promise.all([hearsAll('a', ['b']), hearsAll('b', ['a'])]);

    // Bob plays a steady tone; 1.5 s in, Alice's signaling is cut for 4 s.
    let cutAt = 0;
    const bobSeenBefore = clients.b.notifications.length;
    const rec = await recorded('blip', async () => {
      const playing = pulse.play(DEVICES.b.input, wav.tone);
      await new Promise((r) => setTimeout(r, 1500));
      cutAt = Date.now();
      proxy.cut();
      const away = await clients.a.waitForNotification<RoomStatus>('room.state', (s) => s.roomId === roomId && s.state === 'reconnecting', 5_000);
      expect(away.reconnecting?.what).toBe('signaling');
      await waitFor('bob to see alice away', async () => (await status('b')).participants.some((p) => p.username === clients.a.name && p.away === true), 5_000, 100);
      await new Promise((r) => setTimeout(r, Math.max(0, 4000 - (Date.now() - cutAt))));
      proxy.restore();
      await playing;
    });
    // The tone reached Alice's speaker throughout: the media path never depended on the signaling.
    const mic = channel(rec.probe, PROBE_CHANNEL.bobMicInput - 1);
    let start = 0;
    while (start < mic.length && Math.abs(mic[start]!) < 300) start++;
    const startMs = start / 48;
    const heard = speakerOf(rec, 'a');
    const gap = longestSilenceMs(heard, startMs + 800, startMs + 8500);
    let at = 0;
    for (let t = startMs + 800; t + 10 <= startMs + 8500; t += 10) if (longestSilenceMs(heard, t, t + gap) >= gap) { at = t; break; }
    console.log(`group signaling blip 4 s: longest silence at Alice's speaker ${gap} ms, ${Math.round(at - startMs)} ms into the tone (cut ${cutAt - rec.startedAt} ms after the recording began, the tone began at ${Math.round(startMs)} ms)`);
    // Measured 10-40 ms with the ICE restart on resume (up to 270 ms in runs at load average 7-10).
    expect(gap).toBeLessThan(300);

    // Alice comes back within the grace: joined again, same place (Bob never saw her leave), ICE restarted.
    const back = await clients.a
      .waitForNotification<RoomStatus>('room.state', (s) => s.roomId === roomId && s.state === 'joined' && (s.resumes ?? 0) >= 1, GRACE_S * 1000)
      .catch((e: unknown) => {
        const seen = clients.a.notifications.filter((n) => n.method === 'room.state' || n.method === 'signaling.state').slice(-12);
        throw new Error(`${(e as Error).message}; Alice saw ${JSON.stringify(seen.map((n) => [n.method, (n.params as RoomStatus).state, (n.params as RoomStatus).resumes, (n.params as RoomStatus).error]))}`, { cause: e });
      });
    expect(back.participants.map((p) => p.username).sort()).toEqual([clients.a.name, clients.b.name].sort());
    await waitFor('alice to restart ICE on both transports', async () => ((await status('a')).iceRestarts ?? 0) >= 2, 10_000, 100);
    const bob = await status('b');
    expect(bob.state).toBe('joined');
    expect(bob.participants.find((p) => p.username === clients.a.name)?.away).toBeUndefined();
    // Bob's room never lost Alice (no status of his since the cut shows him alone).
    const bobSince = clients.b.notifications.slice(bobSeenBefore).filter((n) => n.method === 'room.state').map((n) => n.params as RoomStatus);
    expect(bobSince.length).toBeGreaterThan(0);
    expect(bobSince.every((x) => x.participants.length === 2)).toBe(true);

    // After the restart speech goes both ways.
    const after = await recorded('after-blip', async () => {
      await pulse.play(DEVICES.a.input, wav.a);
      await pulse.play(DEVICES.b.input, wav.b);
    });
    const aToB = piecewiseSimilarity(readWav(wav.a).samples, speakerOf(after, 'b'));
    const bToA = piecewiseSimilarity(readWav(wav.b).samples, speakerOf(after, 'a').subarray(Math.floor((readWav(wav.a).samples.length / 48) * 48)));
    const bobHears = (await status('b')).participants.find((p) => p.username === clients.a.name)?.audio;
    console.log(`after the blip and the ICE restart: alice→bob ${aToB.toFixed(3)}, bob→alice ${bToA.toFixed(3)}; Bob's stats of Alice ${JSON.stringify(bobHears)}; load average ${loadavg()[0]!.toFixed(1)}; Alice's status ${JSON.stringify(await status('a'))}`);
    expect(aToB).toBeGreaterThanOrEqual(PAIR_SIMILARITY);
    expect(bToA).toBeGreaterThanOrEqual(PAIR_SIMILARITY);
  }, 120_000);

  it('a newcomer hears the one talking within a second of joining (no SFrame key gap)', async () => {
    let joinedAt = 0;
    let heardAt = 0;
    let undecryptable = -1;
    const rec = await recorded('newcomer', async () => {
      const playing = pulse.play(DEVICES.b.input, wav.tone);
      await new Promise((r) => setTimeout(r, 1500));
      const joined = await clients.c.request<RoomStatus>('join_room', { roomId });
      joinedAt = Date.now();
      expect(joined.state).toBe('joined');
      const s = await hearsAll('c', ['b'], 8_000);
      heardAt = Date.now();
      undecryptable = s.participants.find((p) => p.username === clients.b.name)!.audio!.framesUndecryptable;
      await playing;
    });
    // At Carol's speaker: the tone from (join + 1 s) to its end, without a gap.
    const fromMs = joinedAt - rec.startedAt + 1000;
    const gap = longestSilenceMs(speakerOf(rec, 'c'), fromMs, fromMs + 4000);
    const c = await status('c');
    console.log(`newcomer: Bob playing at Carol ${heardAt - joinedAt} ms after join_room returned (joinMs ${c.joinMs}); frames she could not decrypt ${undecryptable}; longest silence in the 4 s after join + 1 s: ${gap} ms`);
    expect(heardAt - joinedAt).toBeLessThan(1000);
    expect(undecryptable).toBeLessThan(10);
    expect(gap).toBeLessThan(200);
    // Alice, who stayed, derived Bob's ratcheted key herself: she lost nothing to Carol's join either.
    const stayer = (await status('a')).participants.find((p) => p.username === clients.b.name)!.audio!;
    console.log(`stayer: Alice's frames from Bob she could not decrypt ${stayer.framesUndecryptable} (of ${stayer.packetsReceived})`);
    expect(stayer.framesUndecryptable).toBe(0);
    await clients.c.request('leave_room');
  }, 60_000);

  it('a drop longer than the grace: the others see the participant leave, and its room ends "signaling_lost" saying why', async () => {
    const cutAt = Date.now();
    proxy.cut();
    await waitFor(
      'bob to see alice leave',
      async () => (await status('b')).participants.every((p) => p.username !== clients.a.name),
      (GRACE_S + 5) * 1000,
      200,
    );
    const waited = Date.now() - cutAt;
    console.log(`alice removed ${waited} ms after the cut (grace ${GRACE_S} s)`);
    expect(waited).toBeGreaterThan(GRACE_S * 1000 - 1000);
    const end = await clients.a.waitForNotification<RoomStatus>('room.state', (s) => s.roomId === roomId && s.state === 'ended', 10_000);
    expect(end.endReason).toBe('signaling_lost');
    expect(end.error).toMatch(/was down for more than 8 s|no place in the room/);
    proxy.restore();
  }, 60_000);
});
