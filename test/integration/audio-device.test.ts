/**
 * native/audio-device against a real PulseAudio, on both device paths: straight
 * through libpulse (native/pulse, for `pulse:<name>` and default devices) and
 * through PortAudio and ALSA's pulse plugin (other names): exact frames in,
 * device-paced frames out, devices released on close, clear errors when a
 * device is missing, and (libpulse) an error event when a device or the sound
 * server goes away mid-stream. Each case runs in a child process, because
 * PortAudio and libpulse read their environment once.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDir } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { REPO_ROOT } from '../harness/server';
import { channel, readWav, rms, sineWave, writeWav } from '../harness/speech';

let pulse: Pulse;
let dir: string;

beforeAll(async () => {
  pulse = await startPulse();
  dir = makeTempDir('audio-device');
});
afterAll(async () => {
  await pulse?.stop();
  if (dir) removeTempDir(dir);
});

/** Runs a TypeScript snippet (with `dev` = native/audio-device) in a child; returns its last stdout line as JSON. */
function child(code: string, env: Record<string, string>): Promise<Record<string, unknown>> {
  const file = join(dir, `snippet-${Math.random().toString(36).slice(2)}.mts`);
  writeFileSync(
    file,
    `import * as dev from ${JSON.stringify(join(REPO_ROOT, 'native/audio-device/index.ts'))};\n` +
      `const out = await (async () => { ${code} })();\nconsole.log('RESULT ' + JSON.stringify(out));\nprocess.exit(0);\n`,
  );
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', file], { cwd: REPO_ROOT, env: { ...process.env, ...env } });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('exit', () => {
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (line) resolve(JSON.parse(line.slice(7)));
      else reject(new Error(`snippet failed:\n${out}`));
    });
  });
}

const PATHS = [
  { path: 'libpulse', mic: 'pulse:a_mic', spk: 'pulse:a_spk', app: 'Parley' },
  { path: 'PortAudio', mic: 'a_mic', spk: 'a_spk', app: 'ALSA plug-in' },
] as const;

describe.each(PATHS)('native/audio-device on PulseAudio through $path', ({ mic, spk, app }) => {
  it('captures exact 48 kHz mono frames of 10 and 20 ms from a named microphone', async () => {
    const tone = join(dir, 'tone.wav');
    writeWav(tone, sineWave(1.5, 1000, 0.5));
    const running = child(
      `const out = {};
       for (const frameMs of [20, 10]) {
         const cap = dev.openCapture({ device: '${mic}', frameMs });
         const frames = [];
         cap.on('frame', (f) => frames.push(f));
         cap.start();
         await new Promise((r) => setTimeout(r, 500));
         await cap.close();
         const lengths = [...new Set(frames.map((f) => f.length))];
         const loud = Math.max(...frames.map((f) => Math.sqrt(f.reduce((s, v) => s + v * v, 0) / f.length) / 32768));
         out[frameMs] = { count: frames.length, lengths, loud };
       }
       return out;`,
      pulse.env,
    );
    await new Promise((r) => setTimeout(r, 200));
    await pulse.play('a_in', tone);
    const r = (await running) as Record<string, { count: number; lengths: number[]; loud: number }>;
    expect(r['20']!.lengths).toEqual([960]);
    expect(r['10']!.lengths).toEqual([480]);
    // ~500 ms of capture each: about 25 and 50 frames (device start-up eats a little).
    expect(r['20']!.count).toBeGreaterThan(15);
    expect(r['10']!.count).toBeGreaterThan(30);
    expect(r['20']!.loud).toBeGreaterThan(0.2); // the 0.5-peak tone (RMS 0.35) came through
  });

  it('plays pulled frames on the named speaker at the device pace', async () => {
    const rec = await pulse.record('probe.monitor', join(dir, 'play.wav'), 4);
    const r = await child(
      `const play = dev.openPlayback({ device: '${spk}', frameMs: 20 });
       let pulls = 0, n = 0;
       play.start(() => { pulls++; const f = new Int16Array(960); for (let i = 0; i < 960; i++, n++) f[i] = Math.round(12000 * Math.sin(2 * Math.PI * 440 * n / 48000)); return f; });
       await new Promise((r) => setTimeout(r, 1000));
       await play.close();
       return { pulls };`,
      pulse.env,
    );
    await rec.stop();
    // Paced by the device: about 50 frames per second, not as fast as the loop could go.
    expect(r.pulls).toBeGreaterThan(35);
    expect(r.pulls).toBeLessThan(65);
    const wav = readWav(rec.path);
    expect(rms(channel(wav, PROBE_CHANNEL.aliceSpeaker - 1))).toBeGreaterThan(0.05);
    expect(rms(channel(wav, PROBE_CHANNEL.bobSpeaker - 1))).toBeLessThan(0.001);
  });

  it('releases the devices on close', async () => {
    const before = await pulse.pactl('list', 'short', 'source-outputs');
    const r = await child(
      `const cap = dev.openCapture({ device: '${mic}', frameMs: 20 });
       const play = dev.openPlayback({ device: '${spk}', frameMs: 20 });
       cap.start(); play.start(() => new Int16Array(960));
       await new Promise((r) => setTimeout(r, 300));
       const { execFileSync } = await import('node:child_process');
       const during = execFileSync('pactl', ['list', 'short', 'source-outputs']).toString();
       const apps = JSON.parse(execFileSync('pactl', ['-f', 'json', 'list', 'sink-inputs']).toString())
         .filter((i) => i.properties['application.process.id'] === String(process.pid)).map((i) => i.properties['application.name']);
       await cap.close(); await play.close();
       await new Promise((r) => setTimeout(r, 200));
       const after = execFileSync('pactl', ['list', 'short', 'source-outputs']).toString();
       return { apps, backend: dev.lastBackend, during: during.trim().split('\\n').filter(Boolean).length, after: after.trim().split('\\n').filter(Boolean).length };`,
      pulse.env,
    );
    const base = before.trim().split('\n').filter(Boolean).length;
    expect(r.during).toBe(base + 1);
    expect(r.after).toBe(base);
    // The stream really went the way this block is about.
    expect((r.apps as string[]).length).toBe(1);
    expect((r.apps as string[])[0]).toContain(app);
  });
});

describe('native/audio-device on PulseAudio', () => {

  it('names the devices there are when the asked-for one is missing', async () => {
    const r = await child(
      `try { dev.openCapture({ device: 'headset-that-is-not-there', frameMs: 20 }); return { ok: true }; }
       catch (e) { return { kind: e.kind, message: e.message }; }`,
      pulse.env,
    );
    expect(r.kind).toBe('not_found');
    expect(r.message).toContain('headset-that-is-not-there');
    expect(r.message).toContain('a_mic');
  });

  it('says what is wrong when PortAudio sees no device at all', async () => {
    // The system's own ALSA configuration (default → pulse) with no sound server
    // running: what a desktop without PulseAudio/PipeWire looks like.
    const r = await child(
      `try { dev.openPlayback({ frameMs: 20 }); return { ok: true }; }
       catch (e) { return { kind: e.kind, message: e.message }; }`,
      { ALSA_CONFIG_PATH: '/usr/share/alsa/alsa.conf', PULSE_SERVER: 'unix:/nonexistent', HOME: dir },
    );
    expect(r.kind).toBe('no_device');
    expect(r.message).toMatch(/PulseAudio|PipeWire/);
    expect(r.message).toContain('libasound2-plugins');
  });

  it('plays a sound on a named output of its own (a ringtone), once or looped until stopped', async () => {
    writeWav(join(dir, 'stereo.wav'), new Int16Array(9600), 48000, 2);
    writeWav(join(dir, 'ring-src.wav'), sineWave(0.5, 800, 0.3));
    const rec = await pulse.record('probe.monitor', join(dir, 'ring.wav'), 4);
    const r = await child(
      `const tone = new Int16Array(48000 * 0.3).map((_, i) => Math.round(12000 * Math.sin(2 * Math.PI * 800 * i / 48000)));
       const once = await dev.playPcm(tone, { device: 'pulse:b_spk' });
       await once.done;
       const looped = await dev.playPcm(tone, { device: 'pulse:a_spk', loop: true, gapMs: 200 });
       await new Promise((r) => setTimeout(r, 1200));
       await looped.stop();
       let empty = '';
       try { await dev.playPcm(new Int16Array(0)); } catch (e) { empty = e.name; }
       let stereo = '';
       try { await dev.playWavFile(${JSON.stringify(join(dir, 'stereo.wav'))}); } catch (e) { stereo = e.message; }
       const wav = await dev.readWavFile(${JSON.stringify(join(dir, 'ring-src.wav'))});
       return { empty, stereo, wavSamples: wav.length };`,
      pulse.env,
    );
    await new Promise((r) => setTimeout(r, 300));
    await rec.stop();
    expect(r.empty).toBe('RangeError');
    expect(r.stereo).toMatch(/2 channel.*48 kHz mono 16-bit/);
    expect(r.wavSamples).toBe(24000);
    const wav = readWav(join(dir, 'ring.wav'));
    const loudMs = (samples: Int16Array) => {
      let n = 0;
      for (let i = 0; i + 480 <= samples.length; i += 480) if (rms(samples.subarray(i, i + 480)) > 0.1) n++;
      return n * 10;
    };
    const onB = loudMs(channel(wav, PROBE_CHANNEL.bobSpeaker - 1));
    const onA = loudMs(channel(wav, PROBE_CHANNEL.aliceSpeaker - 1));
    // Once: 300 ms of tone; looped for 1.2 s with 200 ms gaps: 2–3 repetitions.
    expect(onB).toBeGreaterThan(250);
    expect(onB).toBeLessThan(350);
    expect(onA).toBeGreaterThan(500);
    expect(onA).toBeLessThan(1000);
  });

  it('serves the rest of each frame to the server from the addon: JavaScript is asked once a frame, and the sound stays continuous (libpulse path)', async () => {
    // The server asks every 5 ms (minreq). Before, each request woke the media
    // thread; now the addon answers from what the last write() left over, and
    // only a request it cannot cover reaches JavaScript.
    const rec = await pulse.record('probe.monitor', join(dir, 'ring.wav'), 4);
    const r = await child(
      `const { loadPulseAddon } = await import(${JSON.stringify(join(REPO_ROOT, 'native/pulse/index.ts'))});
       const addon = loadPulseAddon();
       let needs = 0, pulls = 0, n = 0, left = [];
       const s = addon.open({ capture: false, device: 'a_spk', name: 'ring test', frameBytes: 1920, latencyBytes: 1920, periodBytes: 480 }, (kind) => {
         if (kind !== 'need') return;
         needs++;
         let want = s.writable();
         while (want > 0) {
           pulls++;
           const f = new Int16Array(960);
           for (let i = 0; i < 960; i++, n++) f[i] = Math.round(12000 * Math.sin(2 * Math.PI * 440 * n / 48000));
           want = s.write(new Uint8Array(f.buffer));
           left.push(want);
         }
       });
       s.start();
       await new Promise((r) => setTimeout(r, 1500));
       s.close();
       return { needs, pulls, stillWanted: left.filter((w) => w > 0).length };`,
      pulse.env,
    );
    await rec.stop();
    // ~75 frames of 20 ms in 1.5 s; one request per frame (a few more when a write fell short), not one per 5 ms (~300).
    expect(r.pulls).toBeGreaterThan(55);
    expect(r.pulls).toBeLessThan(95);
    expect(r.needs).toBeLessThan(1.3 * (r.pulls as number));
    // What reached the speaker is the sine without gaps or repeats: no step larger than the tone's own slope.
    const played = channel(readWav(rec.path), PROBE_CHANNEL.aliceSpeaker - 1);
    let first = 0;
    while (first < played.length && Math.abs(played[first]!) < 2000) first++;
    let last = played.length - 1;
    while (last > first && Math.abs(played[last]!) < 2000) last--;
    expect(last - first).toBeGreaterThan(48_000); // at least a second of it
    let worstStep = 0;
    for (let i = first + 480; i < last - 480; i++) worstStep = Math.max(worstStep, Math.abs(played[i]! - played[i - 1]!));
    expect(worstStep).toBeLessThan(2 * Math.PI * 440 / 48_000 * 12_000 * 1.1);
  });

  it('lengthens the speaker buffer when underflows recur, not for a lone one or one in the first second (libpulse path)', async () => {
    // Each underflow is a hole of silence mid-word. A lone one (another stream
    // starting on the server) must not add delay for the rest of the call;
    // recurring ones mean the server or this process cannot keep the buffer filled.
    const r = await child(
      `const { loadPulseAddon } = await import(${JSON.stringify(join(REPO_ROOT, 'native/pulse/index.ts'))});
       const addon = loadPulseAddon();
       const frame = new Uint8Array(1920);
       const s = addon.open({ capture: false, device: 'a_spk', name: 'underflow test', frameBytes: 1920, latencyBytes: 3840, periodBytes: 480 }, (kind) => {
         if (kind !== 'need') return;
         let want = s.writable();
         while (want > 0) want = s.write(frame);
       });
       // Starves the server: this thread answers nothing for 120 ms (the 40 ms buffer runs dry; a 40 ms
       // buffer also keeps the harness's own rare underflows of a quiet stream out of the count).
       const starve = () => { const until = performance.now() + 120; while (performance.now() < until); };
       const at = (ms) => new Promise((r) => setTimeout(r, ms));
       const snap = () => { const x = s.stats(); return { underflows: x.underflows, targetUs: x.targetUs, grantedUs: x.grantedUs, raises: x.raises }; };
       s.start();
       await at(300);
       starve(); // in the first second: the call's start-up, not counted
       await at(1200);
       const start = snap();
       starve(); // a lone underflow
       await at(6000);
       const lone = snap();
       starve(); // then two within 5 s
       await at(1500);
       starve();
       await at(500);
       const recurring = snap();
       s.close();
       return { start, lone, recurring };`,
      pulse.env,
    );
    const { start, lone, recurring } = r as Record<'start' | 'lone' | 'recurring', { underflows: number; targetUs: number; grantedUs: number; raises: number }>;
    expect(start.underflows).toBeGreaterThanOrEqual(1);
    expect(start).toMatchObject({ targetUs: 40_000, raises: 0 });
    expect(lone.underflows).toBeGreaterThan(start.underflows);
    expect(lone).toMatchObject({ targetUs: 40_000, raises: 0 });
    expect(recurring.underflows).toBeGreaterThan(lone.underflows + 1);
    // By a 5 ms period a raise, at most 10 ms above what was asked.
    expect(recurring.raises).toBeGreaterThanOrEqual(1);
    expect(recurring.targetUs).toBe(40_000 + 5_000 * recurring.raises);
    expect(recurring.targetUs).toBeLessThanOrEqual(50_000);
    // The server took it: the stream's queue grew (the sink's part grew too).
    expect(recurring.grantedUs).toBeGreaterThan(lone.grantedUs);
  });

  it('measures its own streams\' latency in-process, as pactl reports it, without starting a process (libpulse path)', async () => {
    // The echo canceller's device delay used to come from two `pactl` runs 300 ms into each call: starting a
    // process forks the daemon first, which stalled the media thread 100–140 ms, a delay spike the jitter
    // buffer then kept in its target for 2 s. The streams now answer from libpulse's own timing.
    const r = await child(
      `const { deviceDelayMs } = await import(${JSON.stringify(join(REPO_ROOT, 'main/media/platform.ts'))});
       const { ownStreamLatencyMs } = await import(${JSON.stringify(join(REPO_ROOT, 'native/audio-device/pulse.ts'))});
       const cp = await import('node:child_process');
       const cap = dev.openCapture({ device: 'pulse:a_mic', frameMs: 20 });
       const play = dev.openPlayback({ device: 'pulse:a_spk', frameMs: 20 });
       cap.on('frame', () => {});
       cap.start();
       play.start(() => new Int16Array(960));
       await new Promise((r) => setTimeout(r, 600));
       let spawned = 0;
       const { spawn } = cp.ChildProcess.prototype;
       cp.ChildProcess.prototype.spawn = function (...a) { spawned++; return spawn.apply(this, a); };
       // The streams' figures move when a timing update from the server lands (the other thread), so read
       // them on both sides of the call: what it returns must be one of those sums, or between them.
       const before = cap.latencyMs() + play.latencyMs();
       const own = await deviceDelayMs(true, { source: cap, sink: play });
       const inputMs = cap.latencyMs(), outputMs = play.latencyMs();
       cp.ChildProcess.prototype.spawn = spawn;
       const server = await ownStreamLatencyMs();
       await Promise.all([cap.close(), play.close()]);
       return { own, before, inputMs, outputMs, spawned, server };`,
      pulse.env,
    );
    expect(r.spawned).toBe(0);
    const server = r.server as { inputMs: number; outputMs: number };
    // Playback: the 10 ms queue and a 5 ms period at least, and what the null sink adds; capture: a fragment or so.
    expect(r.outputMs).toBeGreaterThan(5);
    expect(r.outputMs).toBeLessThan(120);
    expect(r.inputMs).toBeGreaterThanOrEqual(0);
    expect(r.inputMs).toBeLessThan(80);
    const after = (r.outputMs as number) + (r.inputMs as number);
    const before = r.before as number;
    expect(r.own).toBeGreaterThanOrEqual(Math.min(before, after) - 0.5);
    expect(r.own).toBeLessThanOrEqual(Math.max(before, after) + 0.5);
    // The same figures pactl gives for these two streams, within what changes between the two readings (a period or two).
    expect(Math.abs((r.outputMs as number) - server.outputMs)).toBeLessThan(15);
    expect(Math.abs((r.inputMs as number) - server.inputMs)).toBeLessThan(25);
  });

  it('names a PulseAudio device that does not exist (libpulse path)', async () => {
    const r = await child(
      `try { dev.openPlayback({ device: 'pulse:headset-that-is-not-there', frameMs: 20 }); return { ok: true }; }
       catch (e) { return { kind: e.kind, message: e.message }; }`,
      pulse.env,
    );
    expect(r.kind).toBe('not_found');
    expect(r.message).toContain('headset-that-is-not-there');
  });

  it('keeps both directions flowing when their device goes away mid-stream: the server moves them to its default (libpulse path)', async () => {
    // PulseAudio (≥ 15, and PipeWire) moves the streams of a removed device to
    // the default one; the router (main/media/audio-router.ts) then tells the
    // user which device took over. The streams must not die on the way.
    const module = (await pulse.pactl('load-module', 'module-null-sink', 'sink_name=gone', 'rate=48000')).trim();
    const r = await child(
      `const errors = [];
       const play = dev.openPlayback({ device: 'pulse:gone', frameMs: 20 });
       const cap = dev.openCapture({ device: 'pulse:gone.monitor', frameMs: 20 });
       let frames = 0, pulls = 0;
       play.on('error', (e) => errors.push('speaker: ' + e.message));
       cap.on('error', (e) => errors.push('mic: ' + e.message));
       cap.on('frame', () => frames++);
       play.start(() => { pulls++; return new Int16Array(960); }); cap.start();
       // A new null sink renders in 2 s blocks until it notices a low-latency stream (test/harness/pulse.ts).
       for (let i = 0; i < 40 && frames < 10; i++) await new Promise((r) => setTimeout(r, 100));
       const { execFileSync } = await import('node:child_process');
       execFileSync('pactl', ['unload-module', ${JSON.stringify(module)}]);
       const before = { frames, pulls };
       await new Promise((r) => setTimeout(r, 1000));
       const after = { frames: frames - before.frames, pulls: pulls - before.pulls };
       await play.close(); await cap.close();
       return { errors, before, after };`,
      pulse.env,
    );
    expect(r.errors).toEqual([]);
    expect((r.before as { frames: number }).frames).toBeGreaterThan(5);
    // About 50 a second each way on the device that took over.
    expect((r.after as { frames: number }).frames).toBeGreaterThan(30);
    expect((r.after as { pulls: number }).pulls).toBeGreaterThan(30);
  });

  it('reports the sound server going away mid-stream (libpulse path)', async () => {
    const other = await startPulse();
    try {
      const running = child(
        `const errors = [];
         const cap = dev.openCapture({ device: 'pulse:a_mic', frameMs: 20 });
         cap.on('error', (e) => errors.push(e.message));
         cap.start();
         for (let i = 0; i < 80 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
         await cap.close();
         return { errors, backend: dev.lastBackend };`,
        other.env,
      );
      await new Promise((r) => setTimeout(r, 1500));
      await other.stop();
      const r = await running;
      expect(r.backend).toBe('pulse');
      expect(r.errors).toEqual(['microphone failed: the sound server went away']);
    } finally {
      await other.stop();
    }
  });
});
