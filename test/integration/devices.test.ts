/**
 * Audio devices during real calls (issue 7): PulseAudio devices are added,
 * removed and made default while Alice and Bob talk, and Alice's client must
 * keep the call and move its audio as the rules say (main/media/audio-router.ts).
 *
 * Extra devices on the harness's PulseAudio:
 * - `a_spk2`: a second speaker for Alice on the same probe channel as `a_spk`
 *   (rear-right), so a switch between them shows as a gap in one channel;
 * - `a_mic2`: a second microphone reading the same channel as `a_mic`;
 * - `hs`: a null sink standing for a USB headset that is unplugged and
 *   plugged back (its module is unloaded and loaded again).
 * Bob plays a steady tone into his microphone; where Alice's client plays is
 * read from PulseAudio itself (which sink its stream is on) and from the probe.
 * Voice processing is off for the tone (noise suppression would remove it).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CallStatus, DeviceList } from '../../common/protocol/control';
import { longestSilenceMs } from '../../main/media/voice-metrics';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir, startChild, type Child } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { channel, readWav, sineWave, writeWav } from '../harness/speech';

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let dir: string;
let alice: RunningClient;
let bob: RunningClient;
let callId: string;
let tonePath: string;
let tone: Child | undefined;
let hsModule = '';

const NO_PROCESSING = ['--no-noise-suppression', '--no-gain-control', '--no-echo-cancellation'];

async function loadHeadset(): Promise<void> {
  hsModule = (
    await pulse.pactl('load-module', 'module-null-sink', 'sink_name=hs', 'rate=48000', 'channels=1', 'sink_properties=device.description=USB-Headset')
  ).trim();
}

/** The sink Alice's client plays to now, according to PulseAudio. */
async function aliceSink(): Promise<string | undefined> {
  const [inputs, sinks] = await Promise.all([
    pulse.pactl('-f', 'json', 'list', 'sink-inputs'),
    pulse.pactl('-f', 'json', 'list', 'sinks'),
  ]);
  const mine = (JSON.parse(inputs) as Array<{ sink: number; properties?: Record<string, string> }>).filter(
    (i) => i.properties?.['application.process.id'] === String(alice.pid),
  );
  const byIndex = new Map((JSON.parse(sinks) as Array<{ index: number; name: string }>).map((s) => [s.index, s.name]));
  return mine.length === 1 ? byIndex.get(mine[0]!.sink) : mine.length === 0 ? undefined : `${mine.length} streams`;
}

/** The source Alice's client captures from now. */
async function aliceSource(): Promise<string | undefined> {
  const [outputs, sources] = await Promise.all([
    pulse.pactl('-f', 'json', 'list', 'source-outputs'),
    pulse.pactl('-f', 'json', 'list', 'sources'),
  ]);
  const mine = (JSON.parse(outputs) as Array<{ source: number; properties?: Record<string, string> }>).filter(
    (o) => o.properties?.['application.process.id'] === String(alice.pid),
  );
  const byIndex = new Map((JSON.parse(sources) as Array<{ index: number; name: string }>).map((s) => [s.index, s.name]));
  return mine.length === 1 ? byIndex.get(mine[0]!.source) : mine.length === 0 ? undefined : `${mine.length} streams`;
}

async function until<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 8000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: T = await probe();
  while (!ok(last)) {
    if (Date.now() > end) throw new Error(`${what}: still ${JSON.stringify(last)} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
    last = await probe();
  }
  return last;
}

beforeAll(async () => {
  dir = makeTempDir('devices-test');
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer({});
  await pulse.pactl(
    'load-module', 'module-remap-sink', 'sink_name=a_spk2', 'master=probe', 'channels=1', 'channel_map=mono',
    'master_channel_map=rear-right', 'remix=no', 'sink_properties=device.description=a_spk2',
  );
  await pulse.pactl(
    'load-module', 'module-remap-source', 'source_name=a_mic2', 'master=probe.monitor', 'channels=1', 'channel_map=mono',
    'master_channel_map=front-left', 'remix=no', 'source_properties=device.description=a_mic2',
  );
  await loadHeadset();
  await pulse.pactl('set-default-sink', 'a_spk');
  tonePath = join(dir, 'tone.wav');
  writeWav(tonePath, sineWave(60, 440, 0.3));
  writeWav(join(dir, 'short.wav'), sineWave(1, 660, 0.3));
  [alice, bob] = await Promise.all([
    startClient({ name: 'alice', server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk', extraArgs: NO_PROCESSING }),
    startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk', extraArgs: NO_PROCESSING }),
  ]);
  await makeClientContacts(alice, bob);
  ({ callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' }));
  await bob.waitForCall(callId, (s) => s.state === 'incoming');
  await bob.request('answer_call', { callId });
  await Promise.all([
    alice.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
    bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
  ]);
  // Bob's steady tone, for the whole file.
  tone = await startChild('paplay', ['--device=b_in', tonePath], { env: { ...process.env, ...pulse.env }, stdio: 'ignore' });
}, 90_000);

afterAll(async () => {
  await tone?.stop('SIGTERM', 1000);
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

beforeEach(async () => {
  const status = await alice.request<CallStatus>('get_call_status', { callId });
  expect(status.state).toBe('active');
});

async function stillTalking(): Promise<void> {
  const [a, b] = await Promise.all([
    alice.request<CallStatus>('get_call_status', { callId }),
    bob.request<CallStatus>('get_call_status', { callId }),
  ]);
  expect(a.state).toBe('active');
  expect(b.state).toBe('active');
}

describe('audio devices during a call', () => {
  it('lists PulseAudio devices by name with the defaults, and refuses an unknown one without touching the call', async () => {
    const list = await alice.request<DeviceList>('devices.list');
    expect(list.pulse).toBe(true);
    expect(list.outputs.map((d) => d.name)).toEqual(expect.arrayContaining(['a_spk', 'a_spk2', 'hs']));
    expect(list.inputs.map((d) => d.name)).toEqual(expect.arrayContaining(['a_mic', 'a_mic2']));
    expect(list.inputs.some((d) => d.name.endsWith('.monitor'))).toBe(false);
    expect(list.outputs.find((d) => d.name === 'hs')?.description).toBe('USB-Headset');
    expect(list.outputs.find((d) => d.isDefault)?.name).toBe('a_spk');
    expect(list.active).toEqual({ input: 'a_mic', output: 'a_spk' });
    expect(await alice.request('audio.get_processing')).toEqual({ echoCancellation: false, noiseSuppression: false, gainControl: false });
    await expect(alice.request('devices.set', { output: 'no_such_sink' })).rejects.toMatchObject({ reason: 'device_error' });
    await expect(alice.request('devices.set', { output: 'no_such_sink' })).rejects.toThrow(/a_spk2/);
    await stillTalking();
  });

  it('switches the speaker mid-call: the stream moves and the tone goes on after a short gap', async () => {
    const rec = await pulse.record('probe.monitor', join(dir, 'out-switch.wav'), 4);
    await new Promise((r) => setTimeout(r, 700));
    const list = await alice.request<DeviceList>('devices.set', { output: 'a_spk2' });
    expect(list.active.output).toBe('a_spk2');
    await new Promise((r) => setTimeout(r, 700));
    await rec.stop();
    expect(await aliceSink()).toBe('a_spk2');
    const switched = await alice.waitForNotification<{ direction: string; to: string; gapMs: number; reason: string }>(
      'devices.switched',
      (s) => s.direction === 'output' && s.to === 'a_spk2',
    );
    expect(switched.reason).toBe('requested');
    const gap = longestSilenceMs(channel(readWav(join(dir, 'out-switch.wav')), PROBE_CHANNEL.aliceSpeaker - 1));
    console.log(`[devices] speaker switch: ${switched.gapMs} ms without playback in the client, ${gap} ms of silence heard`);
    expect(gap).toBeLessThan(1000); // the figure against the 200 ms budget is in bench:audio
    await stillTalking();
  });

  it('switches the microphone mid-call and Bob keeps hearing it', async () => {
    const before = (await bob.request<CallStatus>('get_call_status', { callId })).stats!.packetsReceived;
    await alice.request('devices.set', { input: 'a_mic2' });
    expect(await aliceSource()).toBe('a_mic2');
    const switched = await alice.waitForNotification<{ direction: string; gapMs: number }>('devices.switched', (s) => s.direction === 'input');
    console.log(`[devices] microphone switch: ${switched.gapMs} ms without captured audio`);
    await new Promise((r) => setTimeout(r, 500));
    const after = (await bob.request<CallStatus>('get_call_status', { callId })).stats!.packetsReceived;
    expect(after - before).toBeGreaterThan(20);
    // What reaches a_mic2 reaches Bob: a 1 s tone into a_in (a_mic2 reads its channel), heard on Bob's speaker.
    const rec = await pulse.record('probe.monitor', join(dir, 'in-switch.wav'), 4);
    await pulse.play('a_in', join(dir, 'short.wav'));
    await rec.stop();
    const bobHeard = channel(readWav(join(dir, 'in-switch.wav')), PROBE_CHANNEL.bobSpeaker - 1);
    let peak = 0;
    for (const s of bobHeard) peak = Math.max(peak, Math.abs(s));
    expect(peak).toBeGreaterThan(3000);
    await alice.request('devices.set', { input: 'a_mic' });
    await stillTalking();
  });

  it('a chosen headset that is unplugged falls back to the default with a warning, and is used again when it returns', async () => {
    await alice.request('devices.set', { output: 'hs' });
    expect(await aliceSink()).toBe('hs');
    const warnings = alice.notifications.filter((n) => n.method === 'audio.warning').length;
    await pulse.pactl('unload-module', hsModule);
    // (PulseAudio itself rescues the orphaned stream to the default; the client then reopens there by name.)
    await alice.waitForNotification<{ reason: string; to: string }>('devices.switched', (s) => s.reason === 'fell_back' && s.to === 'a_spk');
    await until('Alice on the default speaker', aliceSink, (s) => s === 'a_spk');
    const warning = await alice.waitForNotification<{ message: string; device?: string }>(
      'audio.warning',
      (w) => w.device === 'hs',
    );
    expect(alice.notifications.filter((n) => n.method === 'audio.warning').length).toBeGreaterThan(warnings);
    expect(warning.message).toMatch(/USB-Headset.*gone/);
    const status = await alice.waitForCall(callId, (s) => /gone/.test(s.warning ?? ''));
    expect(status.state).toBe('active');
    const list = await alice.request<DeviceList>('devices.list');
    expect(list.chosen.output).toBe('hs'); // still the choice
    expect(list.active.output).toBe('a_spk');

    await loadHeadset();
    await until('Alice back on the headset', aliceSink, (s) => s === 'hs');
    await alice.waitForNotification<{ reason: string }>('devices.switched', (s) => s.reason === 'returned');
    await stillTalking();
  });

  it('a speaker that stops asking for audio (its sink suspended) is reported and reopened; the call plays there again once the sink does', async () => {
    /** RMS of what plays on the headset over 1 s. */
    const onHeadset = async () => {
      const path = join(dir, `hs-${Date.now()}.wav`);
      const rec = await pulse.record('hs.monitor', path, 1);
      await new Promise((r) => setTimeout(r, 1000));
      await rec.stop();
      const samples = readWav(path).samples;
      let sum = 0;
      for (const x of samples) sum += (x / 32768) ** 2;
      return Math.sqrt(sum / Math.max(1, samples.length));
    };
    await alice.request('devices.set', { output: 'hs' });
    expect(await until('the tone on the headset', onHeadset, (v) => v > 0.05)).toBeGreaterThan(0.05);
    const from = alice.notifications.length;
    /** The first `method` notification since `from` that matches. */
    const since = <T,>(method: string, pred: (p: T) => boolean, timeoutMs: number) =>
      until(
        `a ${method} notification`,
        async () => alice.notifications.slice(from).find((n) => n.method === method && pred(n.params as T))?.params as T | undefined,
        (v) => v !== undefined,
        timeoutMs,
      ) as Promise<T>;
    // A sink the sound server stops (a Bluetooth headset gone to sleep, a wedged driver): the stream is
    // still there but never asked for audio again. Before the watchdog the call stayed silent, with no word.
    await pulse.pactl('suspend-sink', 'hs', '1');
    try {
      const warning = await since<{ message: string }>('audio.warning', (w) => /asked for no audio/.test(w.message), 10_000);
      expect(warning.message).toMatch(/speaker/);
      await since<{ reason: string; to: string }>('devices.switched', (s) => s.reason === 'recovered' && s.to === 'hs', 10_000);
      // Stalled again on the still-suspended sink: retried with back-off, not warned about again and again.
      await new Promise((r) => setTimeout(r, 8000));
      const warned = alice.notifications.slice(from).filter((n) => n.method === 'audio.warning');
      expect(warned.length, JSON.stringify(warned)).toBeLessThanOrEqual(2);
    } finally {
      await pulse.pactl('suspend-sink', 'hs', '0');
    }
    expect(await until('the tone on the headset again', onHeadset, (v) => v > 0.05, 20_000)).toBeGreaterThan(0.05);
    await since<{ direction: string }>('audio.warning_cleared', (c) => c.direction === 'output', 20_000).catch((e: Error) => {
      const seen = alice.notifications.slice(from).filter((n) => /warning|switched/.test(n.method));
      throw new Error(`${e.message}; device notifications since the suspend: ${JSON.stringify(seen)}`);
    });
    expect(await aliceSink()).toBe('hs');
    await alice.request('devices.set', { output: 'a_spk' });
    await stillTalking();
  });

  it('an unplugged microphone falls back to the default input with a warning, and the call goes on', async () => {
    const module = (
      await pulse.pactl(
        'load-module', 'module-remap-source', 'source_name=usbmic', 'master=probe.monitor', 'channels=1', 'channel_map=mono',
        'master_channel_map=front-left', 'remix=no', 'source_properties=device.description=USB-Mic',
      )
    ).trim();
    await alice.waitForNotification<DeviceList>('devices.changed', (l) => l.inputs.some((d) => d.name === 'usbmic'));
    await alice.request('devices.set', { input: 'usbmic' });
    expect(await aliceSource()).toBe('usbmic');
    await pulse.pactl('unload-module', module);
    const warning = await alice.waitForNotification<{ message: string; direction: string }>('audio.warning', (w) => w.direction === 'input');
    expect(warning.message).toMatch(/microphone "USB-Mic" is gone/);
    await alice.waitForNotification<{ reason: string; direction: string }>('devices.switched', (s) => s.direction === 'input' && s.reason === 'fell_back');
    const list = await alice.request<DeviceList>('devices.list');
    expect(list.active.input).toBe(list.inputs.find((d) => d.isDefault)?.name ?? 'probe.monitor');
    await alice.request('devices.set', { input: 'a_mic' });
    expect(await aliceSource()).toBe('a_mic');
    await stillTalking();
  });

  it('"default" follows the OS default sink and source as they change during the call', async () => {
    await alice.request('devices.set', { output: 'default' });
    await until('Alice on the default', aliceSink, (s) => s === 'a_spk');
    await pulse.pactl('set-default-sink', 'a_spk2');
    await until('Alice on the new default', aliceSink, (s) => s === 'a_spk2');
    await alice.waitForNotification<{ reason: string; to: string }>('devices.switched', (s) => s.reason === 'default_changed' && s.to === 'a_spk2');
    await pulse.pactl('set-default-sink', 'a_spk');
    await until('Alice back on a_spk', aliceSink, (s) => s === 'a_spk');

    // The same for the microphone and the default source.
    await pulse.pactl('set-default-source', 'a_mic');
    await alice.request('devices.set', { input: 'default' });
    await until('Alice on the default microphone', aliceSource, (s) => s === 'a_mic');
    await pulse.pactl('set-default-source', 'a_mic2');
    await until('Alice on the new default microphone', aliceSource, (s) => s === 'a_mic2');
    await alice.request('devices.set', { input: 'a_mic' });
    await stillTalking();
  });

  it('the device list updates while running, and the choice is remembered on disk', async () => {
    const module = (await pulse.pactl('load-module', 'module-null-sink', 'sink_name=dock', 'sink_properties=device.description=Dock')).trim();
    const added = await alice.waitForNotification<DeviceList>('devices.changed', (l) => l.outputs.some((d) => d.name === 'dock'));
    expect(added.outputs.find((d) => d.name === 'dock')?.description).toBe('Dock');
    await pulse.pactl('unload-module', module);
    await alice.waitForNotification<DeviceList>('devices.changed', (l) => !l.outputs.some((d) => d.name === 'dock') && l.outputs.some((d) => d.name === 'hs'));
    const { readFileSync } = await import('node:fs');
    expect(JSON.parse(readFileSync(join(alice.dataDir, 'audio.json'), 'utf8'))).toEqual({ input: 'a_mic', output: 'default' });
  });

  it('reports input and output levels at 20 Hz with a talking flag', async () => {
    const from = alice.notifications.length;
    await new Promise((r) => setTimeout(r, 1000));
    const levels = alice.notifications.slice(from).filter((n) => n.method === 'audio.levels').map((n) => n.params as {
      callId: string;
      inputDbfs: number;
      outputDbfs: number;
      talking: boolean;
    });
    expect(levels.length).toBeGreaterThanOrEqual(15);
    expect(levels.length).toBeLessThanOrEqual(25);
    expect(levels.every((l) => l.callId === callId)).toBe(true);
    // Alice hears Bob's tone (≈ −13 dBFS) and her own microphone is silent.
    expect(levels.at(-1)!.outputDbfs).toBeGreaterThan(-25);
    expect(levels.at(-1)!.inputDbfs).toBeLessThan(-60);
    expect(levels.at(-1)!.talking).toBe(false);
  });
});
