import { spawn } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { channel, readWav, rms, sineWave, writeWav } from '../harness/speech';

// Loudness, as a fraction of full scale: a 0.5-peak sine has an RMS of 0.354.
const SILENT = 0.001;

let pulse: Pulse;
let dir: string;
let tone: string;

beforeAll(async () => {
  pulse = await startPulse();
  dir = makeTempDir('pulse-test');
  tone = join(dir, 'tone-1k.wav');
  writeWav(tone, sineWave(0.4, 1000, 0.5));
});
afterAll(async () => {
  await pulse?.stop();
  if (dir) removeTempDir(dir);
});

/** The loudest `windowMs` of a signal, as RMS (fraction of full scale). */
function loudestWindow(samples: Int16Array, windowMs = 100): number {
  const n = (48000 * windowMs) / 1000;
  let best = 0;
  for (let start = 0; start + n <= samples.length; start += n / 2)
    best = Math.max(best, rms(samples.subarray(start, start + n)));
  return best;
}

describe('PulseAudio harness: one 4-channel probe clock', () => {
  it('routes what is played into each input to its own probe channel and its mic only', async () => {
    const probe = await pulse.record('probe.monitor', join(dir, 'probe.wav'), 4);
    const aMic = await pulse.record('a_mic', join(dir, 'a_mic.wav'), 1);
    const bMic = await pulse.record('b_mic', join(dir, 'b_mic.wav'), 1);
    await pulse.play('a_in', tone);
    await Promise.all([probe.stop(), aMic.stop(), bMic.stop()]);

    const recorded = readWav(probe.path);
    expect(recorded).toMatchObject({ sampleRate: 48000, channels: 4 });
    const level = (ch: number) => loudestWindow(channel(recorded, ch - 1));
    expect(level(PROBE_CHANNEL.aliceMicInput)).toBeGreaterThan(0.3);
    expect(level(PROBE_CHANNEL.bobSpeaker)).toBeLessThan(SILENT);
    expect(level(PROBE_CHANNEL.bobMicInput)).toBeLessThan(SILENT);
    expect(level(PROBE_CHANNEL.aliceSpeaker)).toBeLessThan(SILENT);
    expect(loudestWindow(readWav(aMic.path).samples)).toBeGreaterThan(0.3);
    expect(loudestWindow(readWav(bMic.path).samples)).toBeLessThan(SILENT);
  });

  it('routes each speaker to its probe channel (b_in → ch3 / b_mic, b_spk → ch2, a_spk → ch4)', async () => {
    const probe = await pulse.record('probe.monitor', join(dir, 'probe2.wav'), 4);
    await Promise.all([
      pulse.play('b_in', tone),
      pulse.play('b_spk', tone),
      pulse.play('a_spk', tone),
    ]);
    await probe.stop();
    const recorded = readWav(probe.path);
    const level = (ch: number) => loudestWindow(channel(recorded, ch - 1));
    expect(level(PROBE_CHANNEL.aliceMicInput)).toBeLessThan(SILENT);
    expect(level(PROBE_CHANNEL.bobSpeaker)).toBeGreaterThan(0.3);
    expect(level(PROBE_CHANNEL.bobMicInput)).toBeGreaterThan(0.3);
    expect(level(PROBE_CHANNEL.aliceSpeaker)).toBeGreaterThan(0.3);
  });

  it('lets a PortAudio (naudiodon) client capture from a_mic and play to a_spk through its default device', async () => {
    // The client runs as its own process with pulse.clientEnv('a'), as the
    // headless softphone will: naudiodon's "default" device is PULSE_SOURCE/PULSE_SINK.
    const naudiodonPath = createRequire(import.meta.url).resolve('naudiodon');
    const script = join(dir, 'portaudio-client.cjs');
    const captured = join(dir, 'captured.raw');
    writeFileSync(
      script,
      `
const fs = require('fs');
const na = require(${JSON.stringify(naudiodonPath)});
const devices = na.getDevices();
const dev = devices.find((d) => d.name === 'default');
const opts = { channelCount: 1, sampleFormat: na.SampleFormat16Bit, sampleRate: 48000, deviceId: dev.id, closeOnError: false, framesPerBuffer: 480 };
const input = new na.AudioIO({ inOptions: { ...opts, highwaterMark: 1920, maxQueue: 50 } });
const output = new na.AudioIO({ outOptions: opts });
const chunks = [];
let bytes = 0;
input.on('data', (b) => {
  if (bytes === 0) console.log(JSON.stringify({ ready: true, devices: devices.map((d) => d.name) }));
  chunks.push(b); bytes += b.length;
  if (bytes >= 48000 * 2 * 1.5 && chunks.length > 0) {
    fs.writeFileSync(${JSON.stringify(captured)}, Buffer.concat(chunks));
    chunks.length = 0;
    input.quit(() => output.quit(() => process.exit(0)));
  }
});
input.start();
output.start();
const tone = Buffer.alloc(48000 * 2 * 0.4);
for (let i = 0; i < tone.length / 2; i++) tone.writeInt16LE(Math.round(16000 * Math.sin(2 * Math.PI * 440 * i / 48000)), 2 * i);
output.write(tone);
`,
    );
    const probe = await pulse.record('probe.monitor', join(dir, 'probe3.wav'), 4);
    const child = spawn(process.execPath, [script], {
      env: { ...process.env, ...pulse.clientEnv('a') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    const ready = await new Promise<{ devices: string[] }>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += String(d);
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) resolve(JSON.parse(line));
      });
      child.once('exit', (code) =>
        reject(new Error(`client exited ${code} before capturing: ${stderr}`)),
      );
    });
    await pulse.play('a_in', tone);
    const code = await new Promise<number | null>((resolve) => {
      if (child.exitCode !== null) resolve(child.exitCode);
      else child.once('exit', resolve);
    });
    await probe.stop();

    expect(code).toBe(0);
    expect(ready.devices.sort()).toEqual(['a_mic', 'a_spk', 'b_mic', 'b_spk', 'default']);
    const raw = readFileSync(captured);
    const samples = new Int16Array(raw.buffer, raw.byteOffset, raw.length / 2);
    expect(loudestWindow(samples)).toBeGreaterThan(0.3);
    const recorded = readWav(probe.path);
    const level = (ch: number) => loudestWindow(channel(recorded, ch - 1));
    expect(level(PROBE_CHANNEL.aliceSpeaker)).toBeGreaterThan(0.3);
    expect(level(PROBE_CHANNEL.bobSpeaker)).toBeLessThan(SILENT);
  });
});
