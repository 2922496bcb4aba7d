/**
 * `npm run bench:audio [-- --json] [-- --no-write] [-- --switches 6]`: the voice processing chain and
 * device switching (issue 7, docs/audio.md).
 *
 * - ERLE (ITU-T G.168 §3.4), end to end in a real call: Alice's speaker leaks
 *   into her microphone through PulseAudio's module-loopback (−10 dB, 60 ms);
 *   Bob speaks a sentence twice; ERLE = energy of the echo at Alice's
 *   microphone over the energy Bob's speaker plays back, on the second pass
 *   (after convergence), on one clock (the probe sink). Default chain.
 * - SNR gain: espeak-ng speech mixed at 5 dB SNR with sox-made fan (brown
 *   noise), keyboard (clicks) and babble (four espeak voices), run through the
 *   APM (NS + AGC + high-pass) offline; segmental SNR with speech and pauses
 *   from the clean speech (main/media/voice-metrics.ts); the mean gain of the three.
 * - CPU per 10 ms frame: process CPU time of processRender + processCapture
 *   (all components on, speech with echo) over the frames, offline.
 * - Added latency: the delay between the APM's input and output on speech
 *   (cross-correlation, analysis.ts estimateDelayMs); the APM processes the
 *   pipeline's own frames, so it adds no framing delay of its own.
 * - Device switch gap: during the call Bob plays a steady tone and Alice's
 *   output is switched between two speakers on the same probe channel; the gap
 *   is the longest silence in that channel around each switch; median reported.
 */
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { dbfs, estimateDelayMs } from '../main/media/analysis';
import { activeLevelDbfs, longestSilenceMs, maskedSnrDb, speechMask } from '../main/media/voice-metrics';
import { APM_FRAME_SAMPLES, createVoiceProcessor } from '../native/apm';
import { makeClientContacts, startClient } from '../test/harness/client';
import { startKeyring } from '../test/harness/keyring';
import { makeNoise, mixAtSnr, NOISE_KINDS } from '../test/harness/noise';
import { makeTempDir, removeTempDir, startChild } from '../test/harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../test/harness/pulse';
import { startServer } from '../test/harness/server';
import { channel, readWav, renderSpeech, sineWave, writeWav } from '../test/harness/speech';
import { percentile } from './lib';
import { writeBenchSection } from './doc-section';

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    switches: { type: 'string', default: '6' },
  },
});
const log = (s: string) => process.stderr.write(s + '\n');
const r1 = (x: number) => Math.round(x * 10) / 10;
const r3 = (x: number) => Math.round(x * 1000) / 1000;

const SENTENCE =
  'The quick brown fox jumps over the lazy dog near the river bank. She sells sea shells by the sea shore every sunny morning.';

function processOffline(mic: Int16Array, render?: Int16Array, settings = {}): Int16Array {
  const apm = createVoiceProcessor(settings);
  const out = new Int16Array(mic.length);
  for (let i = 0; i + APM_FRAME_SAMPLES <= mic.length; i += APM_FRAME_SAMPLES) {
    if (render) apm.processRender(render.slice(i, i + APM_FRAME_SAMPLES));
    out.set(apm.processCapture(mic.slice(i, i + APM_FRAME_SAMPLES)).frame, i);
  }
  return out;
}

async function offline(dir: string, speech: Int16Array) {
  // SNR gain per noise.
  const mask = speechMask(speech);
  const settled = { speech: mask.speech.filter((f) => f >= 150), pause: mask.pause.filter((f) => f >= 150) };
  const snr: Record<string, { inDb: number; outDb: number; levelDbfs: number }> = {};
  for (const kind of NOISE_KINDS) {
    const noise = readWav(await makeNoise(kind, speech.length / 48000 + 1, dir)).samples;
    const mixed = mixAtSnr(speech, noise, 5);
    const out = processOffline(mixed, undefined, { echoCancellation: false });
    snr[kind] = { inDb: maskedSnrDb(mixed, settled), outDb: maskedSnrDb(out, settled), levelDbfs: activeLevelDbfs(out, settled) };
  }
  const gains = Object.values(snr).map((s) => s.outDb - s.inDb);
  const snrGain = gains.reduce((a, b) => a + b, 0) / gains.length;

  // CPU per 10 ms: render + capture, everything on, speech with a 60 ms −10 dB echo, 4 passes.
  const render = Int16Array.from([...speech, ...speech, ...speech, ...speech]);
  const mic = new Int16Array(render.length);
  for (let i = 2880; i < mic.length; i++) mic[i] = Math.round(render[i - 2880]! * 0.316);
  const apm = createVoiceProcessor();
  apm.setStreamDelayMs(60);
  const frames = Math.floor(mic.length / APM_FRAME_SAMPLES);
  const r = [];
  const m = [];
  for (let f = 0; f < frames; f++) {
    r.push(render.slice(f * APM_FRAME_SAMPLES, (f + 1) * APM_FRAME_SAMPLES));
    m.push(mic.slice(f * APM_FRAME_SAMPLES, (f + 1) * APM_FRAME_SAMPLES));
  }
  const cpu0 = process.cpuUsage();
  for (let f = 0; f < frames; f++) {
    apm.processRender(r[f]!);
    apm.processCapture(m[f]!);
  }
  const cpu = process.cpuUsage(cpu0);
  const cpuMsPer10ms = (cpu.user + cpu.system) / 1000 / frames;

  // Added latency: input vs output of the full chain on clean speech.
  const out = processOffline(speech, undefined, { echoCancellation: true, noiseSuppression: true, gainControl: true });
  const delay = estimateDelayMs(speech, out, 50, { minLagMs: -5 });
  return { snr, snrGain, cpuMsPer10ms, addedLatencyMs: Math.max(0, delay.lagMs), delayCorrelation: delay.correlation };
}

async function live(dir: string, speechPath: string, switches: number) {
  const [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  const server = await startServer({});
  const clients: Array<{ stop(): Promise<void> }> = [];
  try {
    const echoModule = await echoPath(pulse);
    await pulse.pactl(
      'load-module', 'module-remap-sink', 'sink_name=a_spk2', 'master=probe', 'channels=1', 'channel_map=mono',
      'master_channel_map=rear-right', 'remix=no', 'sink_properties=device.description=a_spk2',
    );
    const [alice, bob] = await Promise.all([
      startClient({ name: 'alice', server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
      // Bob's noise suppression would fade the steady tone used for the switch gap.
      startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk', extraArgs: ['--no-noise-suppression', '--no-gain-control'] }),
    ]);
    clients.push(alice, bob);
    await makeClientContacts(alice, bob);
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('answer_call', { callId });
    await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
      bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
    ]);

    // ERLE: two passes of Bob's sentence.
    const erles: number[] = [];
    for (const pass of [1, 2]) {
      const path = join(dir, `echo-${pass}.wav`);
      const rec = await pulse.record('probe.monitor', path, 4);
      await pulse.play('b_in', speechPath);
      await new Promise((r) => setTimeout(r, 1500));
      await rec.stop();
      const w = readWav(path);
      erles.push(dbfs(channel(w, PROBE_CHANNEL.aliceMicInput - 1)) - dbfs(channel(w, PROBE_CHANNEL.bobSpeaker - 1)));
      log(`  ERLE pass ${pass}: ${r1(erles.at(-1)!)} dB`);
    }
    await pulse.pactl('unload-module', echoModule);

    // Device switch gap: Bob's tone, Alice's output flips between a_spk and a_spk2.
    const tonePath = join(dir, 'tone.wav');
    writeWav(tonePath, sineWave(30 + switches * 2, 440, 0.3));
    const tone = await startChild('paplay', ['--device=b_in', tonePath], { env: { ...process.env, ...pulse.env }, stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 1000));
    const gaps: number[] = [];
    const clientGaps: number[] = [];
    for (let i = 0; i < switches; i++) {
      const path = join(dir, `switch-${i}.wav`);
      const rec = await pulse.record('probe.monitor', path, 4);
      await new Promise((r) => setTimeout(r, 500));
      const to = i % 2 === 0 ? 'a_spk2' : 'a_spk';
      const seen = alice.notifications.length;
      await alice.request('devices.set', { output: to });
      await new Promise((r) => setTimeout(r, 500));
      await rec.stop();
      const sw = alice.notifications.slice(seen).find((n) => n.method === 'devices.switched')?.params as { gapMs: number } | undefined;
      if (sw) clientGaps.push(sw.gapMs);
      gaps.push(longestSilenceMs(channel(readWav(path), PROBE_CHANNEL.aliceSpeaker - 1)));
      log(`  switch to ${to}: ${gaps.at(-1)} ms heard silent (client: ${sw ? r1(sw.gapMs) : '?'} ms)`);
    }
    await tone.stop('SIGTERM', 1000);
    const status = await alice.request<{ state: string }>('get_call_status', { callId });
    if (status.state !== 'active') throw new Error(`the call did not survive the switches (${status.state})`);
    return { erleDb: erles[1]!, erleFirstPassDb: erles[0]!, gaps, clientGaps };
  } finally {
    await Promise.allSettled(clients.map((c) => c.stop()));
    await server.stop();
    await Promise.allSettled([keyring.stop(), pulse.stop()]);
  }
}

/** module-loopback from Alice's speaker monitor into her microphone's sink at −10 dB, 60 ms. */
async function echoPath(pulse: Pulse): Promise<string> {
  const module = (
    await pulse.pactl('load-module', 'module-loopback', 'source=a_spk.monitor', 'sink=a_in', 'latency_msec=60', 'source_dont_move=true', 'sink_dont_move=true')
  ).trim();
  const inputs = JSON.parse(await pulse.pactl('-f', 'json', 'list', 'sink-inputs')) as Array<{ index: number; owner_module: number | string }>;
  const input = inputs.find((i) => String(i.owner_module) === module);
  if (!input) throw new Error('echo path: no loopback sink input');
  await pulse.pactl('set-sink-input-volume', String(input.index), '-10dB');
  return module;
}

async function main(): Promise<void> {
  const dir = makeTempDir('bench-audio');
  try {
    const speechPath = join(dir, 'speech.wav');
    await renderSpeech(SENTENCE, 'en-us', speechPath);
    const speech = readWav(speechPath).samples;
    log('offline: NS/AGC on speech in noise, CPU, latency');
    const off = await offline(dir, speech);
    log('live: a call with a PulseAudio echo path, then device switches');
    const on = await live(dir, speechPath, Number(args.switches));
    const sortedGaps = [...on.gaps].sort((a, b) => a - b);
    const gapP50 = percentile(sortedGaps, 50);
    const result = {
      erle_db: r1(on.erleDb),
      snr_gain_db: r1(off.snrGain),
      cpu_ms_per_10ms: r3(off.cpuMsPer10ms),
      added_latency_ms: r1(off.addedLatencyMs),
      device_switch_gap_ms: gapP50,
    };
    const machine = `${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
    const snrRows = Object.entries(off.snr).map(
      ([k, v]) => `| ${k} | ${r1(v.inDb)} | ${r1(v.outDb)} | **${r1(v.outDb - v.inDb)}** | ${r1(v.levelDbfs)} |`,
    );
    const clientSorted = [...on.clientGaps].sort((a, b) => a - b);
    const table = [
      '| measure | value | target |',
      '|---|---|---|',
      `| ERLE after convergence (second pass) | **${result.erle_db} dB** (first pass ${r1(on.erleFirstPassDb)} dB) | ≥ 25 dB |`,
      `| SNR gain, mean of fan / keyboard / babble at 5 dB | **${result.snr_gain_db} dB** | |`,
      `| processing CPU per 10 ms frame (render + capture) | **${result.cpu_ms_per_10ms} ms** (${r1(result.cpu_ms_per_10ms * 10)} % of one core) | |`,
      `| added latency of the chain | **${result.added_latency_ms} ms** (correlation ${r3(off.delayCorrelation)}) | |`,
      `| output device switch, audible gap p50 / max | **${gapP50} ms** / ${sortedGaps.at(-1)} ms (${sortedGaps.length} switches; client-side p50 ${r1(percentile(clientSorted, 50))} ms) | < 200 ms |`,
      '',
      '| noise | SNR in (dB) | SNR out (dB) | gain (dB) | speech level out (dBFS) |',
      '|---|---|---|---|---|',
      ...snrRows,
    ].join('\n');
    (args.json ? process.stderr : process.stdout).write(`\nAudio processing — ${machine}\n\n${table}\n\n`);
    if (!args['no-write']) {
      const written = writeBenchSection('audio', [
        '## Audio processing: echo, noise, gain, device switching (`npm run bench:audio`)',
        '',
        `Command: \`npm run bench:audio\` (${sortedGaps.length} device switches). Machine: ${machine}.`,
        '',
        'Method (details in docs/audio.md): ERLE (ITU-T G.168 §3.4) end to end in a real call whose echo path is',
        'PulseAudio\'s module-loopback from Alice\'s speaker into her microphone (−10 dB, 60 ms), default chain (AEC + NS +',
        'AGC), Opus between: echo energy at Alice\'s microphone over the energy Bob\'s speaker plays back, second utterance.',
        'SNR: espeak-ng speech at 5 dB SNR in sox-made noise through the APM offline (NS + AGC + high-pass), segmental',
        'SNR with speech and pauses from the clean speech. CPU: process CPU time per 10 ms of render + capture processing.',
        'Added latency: input-to-output delay of the APM on speech. Switch gap: longest silence heard in a steady tone',
        'while the speaker is switched mid-call between two PulseAudio sinks on the same probe channel.',
        '',
        table,
      ]);
      (args.json ? process.stderr : process.stdout).write(`written to ${written}\n`);
    }
    if (args.json) console.log(JSON.stringify(result));
  } finally {
    removeTempDir(dir);
  }
}

main().catch((e: unknown) => {
  console.error(`bench:audio failed: ${e instanceof Error ? e.stack : e}`);
  process.exit(1);
});
