/**
 * The media worker (issue 13 item 1, main/media/worker/): the 1:1 media path
 * runs on a worker thread of its own, driven through contract.ts by
 * host.ts. Here the host runs in the test's process against the real worker
 * (werift, libopus, the APM and naudiodon loaded in that thread) and a real
 * PulseAudio; full calls through it are in call.test.ts and the other call
 * tests (the daemon uses the worker by default).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { AudioDeviceError, listAudioDevices, playPcm } from '../../native/audio-device';
import { makeTempDir } from '../harness/process';
import { readWav, rms, sineWave } from '../harness/speech';
import { AudioRouter } from '../../main/media/audio-router';
import { DEFAULT_OPUS, LocalAudio } from '../../main/media/platform';
import { MediaWorkerHost, type RemotePeer } from '../../main/media/worker/host';
import type { PeerConnectionState } from '../../main/media/peer';
import { startPulse, type Pulse } from '../harness/pulse';

let pulse: Pulse;
let host: MediaWorkerHost;
let router: AudioRouter;

beforeAll(async () => {
  pulse = await startPulse();
  // naudiodon (in both threads) reaches the private PulseAudio through ALSA's pulse plugin.
  Object.assign(process.env, pulse.env);
  router = new AudioRouter();
  await router.start();
  host = new MediaWorkerHost(new LocalAudio(router), DEFAULT_OPUS);
}, 60_000);

afterAll(async () => {
  await host?.close();
  router?.close();
  await pulse?.stop();
});

const loopback = { iceServers: [], iceTransportPolicy: 'all' as const, loopbackOnly: true, ptimeMs: 20 as const };

describe('the media worker', () => {
  it('runs on a thread of its own, named parley-media, and reports the priority that thread got', async () => {
    const result = await host.raisePriority();
    expect(result.tid).toBeDefined();
    expect(result.tid).not.toBe(process.pid);
    expect(readFileSync(`/proc/self/task/${result.tid}/comm`, 'utf8').trim()).toBe('parley-media');
    if (process.getuid?.() === 0) {
      expect(result).toMatchObject({ method: 'setpriority', nice: -11, realtime: { method: 'sched_rr', priority: 5 } });
      // The kernel agrees: SCHED_RR (policy 2, /proc stat field 41), and this thread (the main one) is left alone.
      const fields = (tid: number) => readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      expect(Number(fields(result.tid!)[38])).toBe(2);
      expect(Number(fields(process.pid)[38])).toBe(0);
    } else expect(['rtkit', 'none']).toContain(result.method);
  });

  it('runs the loopback warm-up (ICE, DTLS-SRTP, one SRTP packet each way) inside the worker', async () => {
    const { ms } = await host.backend().warmUp(20);
    expect(ms).toBeGreaterThan(0);
    expect(ms).toBeLessThan(5000);
  });

  it('connects two transports in the worker and mirrors what the engine reads: state, transport kind, certificate, bound keys', async () => {
    const backend = host.backend();
    const a = backend.createPeer(loopback) as RemotePeer;
    const b = backend.createPeer(loopback) as RemotePeer;
    const states: PeerConnectionState[] = [];
    a.onConnectionState((s) => states.push(s));
    const binding = { secret: randomBytes(32), context: randomBytes(16) };
    a.bindSrtpKeys(binding);
    b.bindSrtpKeys(binding);
    let ended = false;
    a.onCandidate((c) => (c ? void b.addCandidate(c).catch(() => {}) : (ended = true)));
    b.onCandidate((c) => c && void a.addCandidate(c).catch(() => {}));
    try {
      const offer = await a.createOffer();
      expect(offer.sdp).toMatch(/a=ptime:20/);
      const answer = await b.acceptOffer(offer.sdp);
      await a.acceptAnswer(answer.sdp);
      await Promise.all([a.connected(10_000), b.connected(10_000)]);
      expect(a.transportKind()).toBe('host');
      expect(a.remoteCertificate()?.length).toBeGreaterThan(100);
      expect(a.srtpKeysBound).toBe(true);
      expect(a.dtlsAuthFailure()).toBeUndefined();
      expect(states).toContain('connected');
      await expect.poll(() => ended, { timeout: 5000 }).toBe(true);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('opens devices in the worker after this thread loaded naudiodon, and a missing device fails with words that name it', async () => {
    expect(listAudioDevices().length).toBeGreaterThan(0); // naudiodon (and its crash handler) loaded here first
    await router.choose({ input: 'a_mic' });
    const peer = host.backend().createPeer(loopback);
    try {
      // An open that works: the worker's streams are routed by this thread's router.
      const media = await host.backend().openMedia(peer, { frameMs: 20, dtx: false, mediaTimeoutMs: 30_000, micOpen: true, outputGain: 1 });
      expect(router.list().active).toMatchObject({ input: 'a_mic' });
      media.start();
      await new Promise((r) => setTimeout(r, 300));
      expect(media.stats().ptimeMs).toBe(20);
      // The media thread reports its own garbage-collection pauses (docs/audio.md), from the session's start.
      await expect.poll(() => media.stats().mediaThreadGc, { timeout: 5000 }).toEqual({ pauses: expect.any(Number), longestMs: expect.any(Number) });
      // The device streams' own threads (libpulse's, started by the worker) run as the worker's thread does:
      // real-time when it is (they do not inherit it: the policy carries SCHED_RESET_ON_FORK).
      const comm = (t: string) => readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim();
      const policy = (t: string) => Number(readFileSync(`/proc/self/task/${t}/stat`, 'utf8').split(') ')[1]!.split(' ')[38]);
      const streamThreads = () => readdirSync('/proc/self/task').filter((t) => /^parley-pa-(in|out)$/.test(comm(t)));
      expect(streamThreads().map(comm).sort()).toEqual(['parley-pa-in', 'parley-pa-out']);
      if (process.getuid?.() === 0) await expect.poll(() => streamThreads().map(policy), { timeout: 5000 }).toEqual([2, 2]);
      await media.close();
      expect(router.list().active).toEqual({});
      // A device PortAudio does not have: the worker's AudioDeviceError arrives as one, with its message.
      const wrong = new AudioRouter({ input: 'no-such-microphone' });
      const other = new MediaWorkerHost(new LocalAudio(wrong), DEFAULT_OPUS);
      try {
        const p2 = other.backend().createPeer(loopback);
        const failed = other.backend().openMedia(p2, { frameMs: 20, dtx: false, mediaTimeoutMs: 30_000, micOpen: true, outputGain: 1 });
        await expect(failed).rejects.toBeInstanceOf(AudioDeviceError);
        await expect(failed).rejects.toThrow(/no audio input device named "no-such-microphone"; available: /);
      } finally {
        await other.close();
      }
    } finally {
      await router.choose({ input: 'default' });
      await peer.close();
    }
  });

  // naudiodon kept its AudioIO constructor in a static N-API reference that the last thread to load the addon
  // overwrote, so once the worker had loaded it this thread's streams failed ("audioIOAdon.start is not a function").
  // patches/naudiodon+2.3.6.patch keeps the reference per environment (and serializes PortAudio's init/terminate).
  it('leaves this thread able to play on a device after a worker session used and closed its own (a tone after a call)', async () => {
    const peer = host.backend().createPeer(loopback);
    const media = await host.backend().openMedia(peer, { frameMs: 20, dtx: false, mediaTimeoutMs: 30_000, micOpen: true, outputGain: 1 });
    media.start();
    await new Promise((r) => setTimeout(r, 500));
    await media.close();
    await peer.close();
    const path = join(makeTempDir('mw-tone'), 'tone.wav');
    const rec = await pulse.record('b_spk.monitor', path, 1);
    const tone = await playPcm(sineWave(1.0, 440, 0.3), { device: 'pulse:b_spk' });
    await tone.done;
    await new Promise((r) => setTimeout(r, 300));
    await rec.stop();
    expect(rms(readWav(path).samples)).toBeGreaterThan(0.01);
  });

  it('fails what is pending, in words, when the worker stops, and starts a new one for the next call', async () => {
    const backend = host.backend();
    const a = backend.createPeer(loopback);
    await a.createOffer();
    const failed = expect(a.connected(30_000)).rejects.toThrow(/the media thread stopped/);
    await host.close();
    await failed;
    expect((await backend.warmUp(20)).ms).toBeGreaterThan(0);
  });
});
