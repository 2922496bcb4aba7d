/**
 * `npm run bench:drift [-- --minutes 10] [-- --ppm 1000] [-- --json]`: two
 * clocks (issue 18 item 5, docs/audio.md "Two clocks"). Alice's microphone is
 * a PulseAudio source whose sample clock runs `ppm` fast against her speaker
 * and the rest of the machine (test/harness/two-clocks.ts: a pipe source fed
 * by parecord | sox at 48 000·(1 + ppm/10⁶) samples a second), her speaker
 * leaks into her room at −10 dB (module-loopback, 60 ms), and for `minutes`
 * Bob speaks a sentence every 6 s while Alice's room clicks twice in between,
 * recorded minute by minute on the probe's one clock.
 *
 * Reported per minute: the median mouth-to-ear delay of Alice's clicks at
 * Bob's speaker, Bob's jitter buffer target, the lowest and the median ERLE
 * of Bob's sentences (echo at Alice's microphone over what Bob hears of it),
 * and Alice's echo path state; overall: the least-squares slope of the click
 * delay (ms per 10 minutes; uncompensated it would be `ppm` × 0.6 ms) and the
 * microphone's clock as measured on the probe.
 */
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeClientContacts, placeAnsweredCall, startClient } from '../test/harness/client';
import { startKeyring } from '../test/harness/keyring';
import { makeTempDir, removeTempDir } from '../test/harness/process';
import { startPulse } from '../test/harness/pulse';
import { startServer } from '../test/harness/server';
import { readWav, renderSpeech } from '../test/harness/speech';
import { runScene, slope, startDriftingSource } from '../test/harness/two-clocks';

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    minutes: { type: 'string', default: '10' },
    ppm: { type: 'string', default: '1000' },
  },
});
const minutes = Number(args.minutes);
const ppm = Number(args.ppm);
const log = (s: string) => process.stderr.write(s + '\n');
const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[xs.length >> 1]! : NaN);
const r1 = (x: number) => Math.round(x * 10) / 10;

interface MinuteRow {
  minute: number;
  delay_ms_p50: number;
  clicks: number;
  missed: number;
  jitter_target_ms: number;
  erle_db_min: number;
  erle_db_p50: number;
  echo_path: string;
  aec_delay_ms?: number;
  mic_ppm?: number;
}

async function main(): Promise<void> {
  const dir = makeTempDir('bench-drift');
  const [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  const server = await startServer({});
  await renderSpeech('The quick brown fox jumps over the lazy dog.', 'en-us', join(dir, 'far.wav'));
  const far = readWav(join(dir, 'far.wav')).samples;
  const module = (
    await pulse.pactl('load-module', 'module-loopback', 'source=a_spk.monitor', 'sink=a_in', 'latency_msec=60', 'source_dont_move=true', 'sink_dont_move=true')
  ).trim();
  const inputs = JSON.parse(await pulse.pactl('-f', 'json', 'list', 'sink-inputs')) as Array<{ index: number; owner_module: number | string }>;
  await pulse.pactl('set-sink-input-volume', String(inputs.find((i) => String(i.owner_module) === module)!.index), '-10dB');
  const mic = await startDriftingSource(pulse, { master: 'a_mic', name: 'a_mic_drift', ppm });
  const [alice, bob] = await Promise.all([
    startClient({ name: 'alice', server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: mic.name, output: 'a_spk', frameMs: 20 }),
    startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk', frameMs: 20 }),
  ]);
  const rows: MinuteRow[] = [];
  const all: { x: number; y: number }[] = [];
  try {
    await makeClientContacts(alice, bob);
    const callId = await placeAnsweredCall(alice, bob);
    type Stats = { jitterTargetMs: number; echoPath?: string; echoDelayMs?: number };
    const statsOf = async (c: typeof alice) => (await c.request<{ stats?: Stats }>('get_call_status', { callId })).stats!;
    const t0 = performance.now();
    for (let m = 0; m < minutes; m++) {
      const startS = (performance.now() - t0) / 1000;
      const scene = await runScene(pulse, dir, `m${m}`, far, 60, mic.name);
      for (const c of scene.clicks) all.push({ x: startS + c.atS, y: c.delayMs });
      const [a, b] = await Promise.all([statsOf(alice), statsOf(bob)]);
      const row: MinuteRow = {
        minute: m + 1,
        delay_ms_p50: r1(median(scene.clicks.map((c) => c.delayMs))),
        clicks: scene.clicks.length,
        missed: scene.missed,
        jitter_target_ms: b.jitterTargetMs,
        erle_db_min: r1(Math.min(...scene.erleDb)),
        erle_db_p50: r1(median(scene.erleDb)),
        echo_path: a.echoPath ?? 'n/a',
        ...(a.echoDelayMs !== undefined ? { aec_delay_ms: a.echoDelayMs } : {}),
        ...(scene.micPpm !== undefined ? { mic_ppm: Math.round(scene.micPpm) } : {}),
      };
      rows.push(row);
      log(
        `minute ${row.minute}: delay p50 ${row.delay_ms_p50} ms (${row.clicks} clicks, ${row.missed} missed), Bob's target ${row.jitter_target_ms} ms, ` +
          `ERLE min/p50 ${row.erle_db_min}/${row.erle_db_p50} dB, echo path ${row.echo_path}, AEC delay ${row.aec_delay_ms} ms, mic ${row.mic_ppm} ppm`,
      );
    }
  } finally {
    await Promise.allSettled([alice.stop(), bob.stop()]);
    await server.stop();
    await mic.stop();
    await Promise.allSettled([keyring.stop(), pulse.stop()]);
    removeTempDir(dir);
  }
  const perTenMinutes = slope(all) * 600;
  const result = {
    ppm,
    minutes,
    delay_slope_ms_per_10min: r1(perTenMinutes),
    uncompensated_ms_per_10min: r1((ppm / 1e6) * 600_000),
    delay_ms_p50_first_minute: rows[0]?.delay_ms_p50,
    delay_ms_p50_last_minute: rows.at(-1)?.delay_ms_p50,
    erle_db_min_last_minute: rows.at(-1)?.erle_db_min,
    machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`,
    rows,
  };
  log(
    `delay slope ${result.delay_slope_ms_per_10min} ms per 10 min (uncompensated ${result.uncompensated_ms_per_10min}); ` +
      `p50 first/last minute ${result.delay_ms_p50_first_minute}/${result.delay_ms_p50_last_minute} ms; ERLE min last minute ${result.erle_db_min_last_minute} dB`,
  );
  if (args.json) console.log(JSON.stringify(result));
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    log(`bench:drift failed: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  },
);
