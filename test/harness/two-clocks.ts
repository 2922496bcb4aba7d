/**
 * Two clocks on one machine (issue 18 item 5): a PulseAudio microphone whose
 * sample clock really runs ε fast or slow against the speaker's, and a call
 * scene that measures what that does to the mouth-to-ear delay and to the
 * echo canceller. Shared by `test/integration/two-clocks.test.ts` (~80 s) and
 * `bench/drift.ts` (`npm run bench:drift`, 10 minutes).
 *
 * **Why a pipe source.** Every null sink, remap sink/source and loopback of
 * the test PulseAudio is timed by the same system clock (`pa_rtclock_now`):
 * a null sink with `rate=44100` next to one with `rate=48000` only makes the
 * resampler convert between two nominal rates of that one clock, and a
 * `module-loopback` with `rate=48048` is resampled back to its sink's rate by
 * the loopback's own rate controller, which exists to keep the two ends
 * locked — neither makes a sample stream that gains on another. A
 * `module-pipe-source` has no clock of its own: it delivers what its writer
 * writes into its FIFO, when it is written. Here the writer is
 *
 * ```
 *   parecord <master>  ─▶  sox -r 48000 → -r 48000·(1+ε)  ─▶  FIFO  ─▶  module-pipe-source <name>
 * ```
 *
 * `parecord` delivers the master source in real time on the system clock
 * (48 000 samples per second), sox resamples every second of it to
 * 48 000·(1+ε) samples, and PulseAudio reads those as a 48 kHz source: a
 * microphone whose crystal is ε off, hearing exactly what `master` hears (the
 * probe's channel 1 in the test layout, so the room is still recorded on the
 * probe's clock). Measured here: a +1000 ppm source delivered 32.9 ms more
 * than its master in 30 s.
 */
import { join } from 'node:path';
import { dbfs, detectOnsets } from '../../main/media/analysis';
import { spawn } from 'node:child_process';
import { run } from './process';
import { PROBE_CHANNEL, PULSE_RATE, type Pulse } from './pulse';
import { channel, readWav, writeWav } from './speech';

/** A running drifting source, see {@link startDriftingSource}. */
export interface DriftingSource {
  /** The PulseAudio source name clients open. */
  readonly name: string;
  /** Its clock against the system's, parts per million (+ = fast). */
  readonly ppm: number;
  /** Stops the writer and unloads the pipe source. Never throws. */
  stop(): Promise<void>;
}

/**
 * Makes `name`, a mono 48 kHz PulseAudio source that hears what `master`
 * hears, on a clock `ppm` parts per million fast (negative: slow) against
 * the system clock (see the module comment).
 * @throws Error when pactl, parecord or sox fail to start.
 */
export async function startDriftingSource(pulse: Pulse, options: { master: string; name: string; ppm: number }): Promise<DriftingSource> {
  const fifo = join(pulse.dir, `${options.name}.fifo`);
  const module = (
    await pulse.pactl(
      'load-module',
      'module-pipe-source',
      `source_name=${options.name}`,
      `file=${fifo}`,
      'format=s16le',
      `rate=${PULSE_RATE}`,
      'channels=1',
      `source_properties=device.description=${options.name}`,
    )
  ).trim();
  const env = { ...process.env, ...pulse.env };
  delete env.PULSE_SOURCE;
  delete env.PULSE_SINK;
  const outRate = PULSE_RATE * (1 + options.ppm / 1e6);
  // One shell pipeline, so that the samples go from parecord to sox through a kernel pipe and not through
  // this process's event loop (whose stalls would add a backlog that never drains: the chain runs at its
  // input's pace). sox: `rate -q` (cubic, a few samples of delay instead of the default filter's
  // milliseconds), -D no dither, --buffer 10 ms blocks instead of its default 85 ms bursts.
  //
  // A pipe source reads its FIFO only while something records it: until the client opens it, sox would
  // block on a full FIFO and PulseAudio would buffer the master for parecord — seconds of backlog that
  // then stay in the chain for good (measured: a 3 s wait before recording gave a 3 s delay). A keeper
  // records the source from the start and throws the samples away.
  const raw = '-t raw -e signed-integer -b 16 -c 1';
  const keeper = `parecord --device=${options.name} --raw --latency-msec=10 --client-name=parley-drifting-source-keeper > /dev/null`;
  const pipeline =
    `${keeper} & parecord --device=${options.master} --raw --latency-msec=10 --rate=${PULSE_RATE} --channels=1 --format=s16le --client-name=parley-drifting-source` +
    ` | sox -D --buffer 960 ${raw} -r ${PULSE_RATE} - ${raw} -r ${outRate} ${fifo} rate -q; wait`;
  const writer = spawn('sh', ['-c', pipeline], { env, stdio: 'ignore', detached: true });
  const exited = new Promise<void>((resolve) => writer.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    writer.once('spawn', resolve);
    writer.once('error', reject);
  }).catch(async (e: unknown) => {
    await pulse.pactl('unload-module', module).catch(() => '');
    throw e;
  });
  const stopWriter = async () => {
    try {
      process.kill(-writer.pid!, 'SIGTERM'); // the whole pipeline (its own process group)
    } catch {
      return; // already gone
    }
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
  };
  process.once('exit', () => {
    try {
      process.kill(-writer.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  });
  return {
    name: options.name,
    ppm: options.ppm,
    async stop() {
      await stopWriter();
      await pulse.pactl('unload-module', module).catch(() => '');
    },
  };
}

/** A click train sample: 10 ms of a 2 kHz tone at −6 dBFS (the bench's click, bench/lib.ts). */
function addClick(out: Int16Array, at: number): void {
  for (let i = 0; i < 480 && at + i < out.length; i++) {
    out[at + i] = Math.round(16_000 * Math.sin((Math.PI * i) / 480) * Math.sin((2 * Math.PI * 2000 * i) / 48_000));
  }
}

/** One cycle of the scene, ms: Bob talks, then Alice clicks twice. */
const CYCLE_MS = 6000;
/** Alice's clicks within a cycle, ms (after Bob's sentence and its echo). */
const CLICKS_AT_MS = [4600, 5400];
/** Bob's sentence and the window its ERLE is measured over end by this time of a cycle, ms. */
const SENTENCE_END_MS = 3400;
const ERLE_END_MS = 4400;

/**
 * The scene's two inputs for `seconds` (whole cycles of {@link CYCLE_MS}):
 * Bob's microphone (`b_in`) says `farSpeech` at the start of every cycle;
 * Alice's room (`a_in`) has two clicks in each cycle, after Bob has spoken.
 * Alice's file opens with a sync click at 0.5 s; the cycles start at 1.5 s.
 */
export function sceneInputs(farSpeech: Int16Array, seconds: number): { bob: Int16Array; alice: Int16Array; cycles: number } {
  if (farSpeech.length > (SENTENCE_END_MS / 1000) * PULSE_RATE) throw new RangeError(`sceneInputs: the far-end sentence must be at most ${SENTENCE_END_MS} ms`);
  const cycles = Math.max(1, Math.floor((seconds * 1000) / CYCLE_MS));
  const length = Math.round(((1500 + cycles * CYCLE_MS + 1000) * PULSE_RATE) / 1000);
  const bob = new Int16Array(length);
  const alice = new Int16Array(length);
  addClick(alice, PULSE_RATE / 2);
  for (let c = 0; c < cycles; c++) {
    const start = ((1500 + c * CYCLE_MS) * PULSE_RATE) / 1000;
    bob.set(farSpeech, start);
    for (const at of CLICKS_AT_MS) addClick(alice, start + (at * PULSE_RATE) / 1000);
  }
  return { bob, alice, cycles };
}

/** What one stretch of the scene measured, on the probe's (system) clock. */
export interface SceneResult {
  /** Alice's clicks heard at Bob's speaker: when (s from the stretch's start) and the mouth-to-ear delay, ms. */
  clicks: { atS: number; delayMs: number }[];
  /** Clicks that did not arrive within 900 ms. */
  missed: number;
  /** ERLE per sentence of Bob's (echo at Alice's mic over what Bob hears of it), dB, in order. */
  erleDb: number[];
  /**
   * The microphone's clock against the probe's, ppm: Alice's first and last click as the drifting source
   * delivered them (a recording of it, counted in its samples) over the same two clicks in her room.
   */
  micPpm?: number;
}

/**
 * Plays {@link sceneInputs} for `seconds` into `b_in` and `a_in` (Alice's
 * microphone must hear `a_in`, e.g. through a drifting source of `a_mic`)
 * while recording the probe, and measures every click's delay and every
 * sentence's ERLE.
 */
export async function runScene(pulse: Pulse, dir: string, tag: string, farSpeech: Int16Array, seconds: number, micSource?: string): Promise<SceneResult> {
  const { bob, alice, cycles } = sceneInputs(farSpeech, seconds);
  const bobWav = join(dir, `${tag}-bob.wav`);
  const aliceWav = join(dir, `${tag}-alice.wav`);
  writeWav(bobWav, bob);
  writeWav(aliceWav, alice);
  const probePath = join(dir, `${tag}-probe.wav`);
  const rec = await pulse.record('probe.monitor', probePath, 4);
  const micPath = join(dir, `${tag}-mic.wav`);
  const micRec = micSource ? await pulse.record(micSource, micPath, 1) : undefined;
  // paplay itself (Pulse.play gives up after 60 s).
  const env = { ...process.env, ...pulse.env };
  const play = (sink: string, wav: string) =>
    run('paplay', [`--device=${sink}`, '--client-name=parley-harness-play', wav], { env, timeoutMs: (bob.length / PULSE_RATE) * 1000 + 30_000 });
  await Promise.all([play('b_in', bobWav), play('a_in', aliceWav)]);
  await new Promise((r) => setTimeout(r, 1000));
  await Promise.all([rec.stop(), micRec?.stop()]);
  const probe = readWav(probePath);
  const room = channel(probe, PROBE_CHANNEL.aliceMicInput - 1);
  const bobHears = channel(probe, PROBE_CHANNEL.bobSpeaker - 1);
  const bobMic = channel(probe, PROBE_CHANNEL.bobMicInput - 1);
  const onsets = (x: Int16Array) => detectOnsets(x, { thresholdDbfs: -30, minGapMs: 300 });
  // Where each file starts in the recording: Bob's first sentence (nothing else reaches his microphone)
  // and Alice's sync click.
  const bobStart = onsets(bobMic)[0]! - 1500 - onsets(farSpeech)[0]!;
  // Alice's clicks in her room; the first is the sync click. The room also hears Bob's echo (≈ −30 dBFS
  // peaks at most), which stays under the −30 dBFS onset threshold only where it is quiet: use the
  // schedule to keep onsets near a click's due time.
  const aliceOnsets = onsets(room);
  const aliceStart = aliceOnsets[0]! - 500;
  const heard = onsets(bobHears);
  const clicks: SceneResult['clicks'] = [];
  const sentTimes: number[] = [];
  let missed = 0;
  for (let c = 0; c < cycles; c++) {
    for (const at of CLICKS_AT_MS) {
      const due = aliceStart + 1500 + c * CYCLE_MS + at;
      const sent = aliceOnsets.find((o) => Math.abs(o - due) < 50);
      if (sent === undefined) continue;
      sentTimes.push(sent);
      const hit = heard.find((o) => o >= sent && o - sent < 900);
      if (hit === undefined) missed++;
      else clicks.push({ atS: sent / 1000, delayMs: hit - sent });
    }
  }
  const erle: number[] = [];
  for (let c = 0; c < cycles; c++) {
    // Bob's sentence as his microphone had it, plus 1 s for the trip to Alice, the echo and back.
    const from = Math.round(((bobStart + 1500 + c * CYCLE_MS) * PULSE_RATE) / 1000);
    const to = Math.min(from + Math.min(farSpeech.length + PULSE_RATE, (ERLE_END_MS * PULSE_RATE) / 1000), room.length);
    if (to <= from) break;
    erle.push(dbfs(room, from, to) - dbfs(bobHears, from, to));
  }
  let micPpm: number | undefined;
  if (micRec) {
    // The sync click and the last click as the drifting source delivered them, found near where they
    // are due (the source's recording started before either), against the same two in the room.
    const micOnsets = onsets(readWav(micPath).samples);
    const last = sentTimes.at(-1);
    const m0 = micOnsets[0];
    if (last !== undefined && m0 !== undefined) {
      const roomSpan = last - aliceOnsets[0]!;
      const m1 = micOnsets.find((o) => Math.abs(o - m0 - roomSpan) < 300);
      if (m1 !== undefined) micPpm = ((m1 - m0) / roomSpan - 1) * 1e6;
    }
  }
  return { clicks, missed, erleDb: erle, ...(micPpm !== undefined ? { micPpm } : {}) };
}

/** Least-squares slope of `y` over `x` (units of y per unit of x). */
export function slope(points: { x: number; y: number }[]): number {
  const n = points.length;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return den > 0 ? num / den : 0;
}
