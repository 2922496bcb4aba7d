/**
 * A private PulseAudio daemon for tests and the demo: two softphone clients
 * (Alice `a`, Bob `b`) whose microphones and speakers all live on ONE 4-channel
 * null sink, `probe`, so that a single recording of `probe.monitor` holds every
 * signal of a call on one sample clock (mouth-to-ear latency = offset between
 * channels of one file).
 *
 * ```
 *  play into a_in ──▶ probe ch1 (front-left)  ──▶ a_mic  ──▶ Alice's client captures
 *  Bob plays  b_spk ─▶ probe ch2 (front-right)
 *  play into b_in ──▶ probe ch3 (rear-left)   ──▶ b_mic  ──▶ Bob's client captures
 *  Alice plays a_spk ▶ probe ch4 (rear-right)
 * ```
 * `a_in`, `b_in`, `a_spk`, `b_spk` are mono `module-remap-sink`s onto one
 * channel of `probe` (`remix=no`, so nothing leaks into other channels);
 * `a_mic`, `b_mic` are mono `module-remap-source`s of one channel of
 * `probe.monitor`.
 *
 * Facts found on this machine (PulseAudio 16.1, Debian):
 * - As root, `pulseaudio -n --daemonize=no --system=false --use-pid-file=no
 *   --exit-idle-time=-1 --disallow-exit -F <script>` runs a per-user daemon
 *   (it warns "not intended to be run as root"; harmless). `-n` skips the
 *   system default.pa; the script loads `module-native-protocol-unix
 *   socket=<tmp>/native auth-anonymous=1`. Clients reach it through
 *   `PULSE_SERVER=unix:<tmp>/native`.
 * - A 4-channel recording must name its channel map
 *   (`--channel-map=front-left,front-right,rear-left,rear-right`): parecord's
 *   default map for 4 channels is the AIFF one (L, C, R, rear-centre) and
 *   PulseAudio silently remixes into it.
 * - A null sink renders in 2 s blocks until some stream asks for low latency,
 *   and only notices the request at the end of the current block: a capture
 *   stream started then waits 0.1–2 s for its first data. The harness keeps a
 *   low-latency recording of `probe.monitor` running (the *clock keeper*) and
 *   waits until `probe`'s actual latency is below 50 ms before returning.
 * - ALSA programs (PortAudio, hence naudiodon) reach this daemon through the
 *   ALSA pulse plugin. We set `ALSA_CONFIG_PATH` to a self-contained file
 *   (`pcm.!default { type pulse }` plus one named PCM per device) instead of
 *   a `$HOME/.asoundrc`: HOME stays free for other harnesses (the keyring's
 *   temp HOME) and PortAudio no longer probes the system's JACK/OSS/etc PCMs
 *   (which print "jack server is not running" noise). PortAudio then lists
 *   exactly: `a_mic`, `a_spk`, `b_mic`, `b_spk`, `default` (ALSA host API;
 *   each reports 32 in / 32 out channels and 44100 Hz default rate — the
 *   plugin accepts any rate, open at 48000). `default` follows
 *   `PULSE_SOURCE` / `PULSE_SINK`.
 *
 * Group calls need more clients: `startPulse({ clients: 4 })` adds Carol `c`
 * and Dave `d` on a second 4-channel null sink, `probe2`, laid out as
 * `probe` is (`c_in` ch1 → `c_mic`, `d_spk` ch2, `d_in` ch3 → `d_mic`,
 * `c_spk` ch4: {@link PROBE2_CHANNEL}), with its own clock keeper. The
 * default (two clients) is unchanged.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, removeTempDir, run, startChild, waitFor, type Child } from './process';

/** The client names: `a`, `b` always; `c`, `d` with `startPulse({ clients: 4 })`. */
export type ClientName = 'a' | 'b' | 'c' | 'd';

/** Sample rate of every device (Hz). */
export const PULSE_RATE = 48000;

/**
 * 1-based channel numbers of a `probe.monitor` recording (as sox's `remix N`
 * counts them).
 */
export const PROBE_CHANNEL = {
  /** What was played into Alice's microphone (`a_in` → `a_mic`). */
  aliceMicInput: 1,
  /** What Bob's client played to its speaker (`b_spk`). */
  bobSpeaker: 2,
  /** What was played into Bob's microphone (`b_in` → `b_mic`). */
  bobMicInput: 3,
  /** What Alice's client played to its speaker (`a_spk`). */
  aliceSpeaker: 4,
} as const;

/** 1-based channels of a `probe2.monitor` recording (four-client setup). */
export const PROBE2_CHANNEL = {
  carolMicInput: 1,
  daveSpeaker: 2,
  daveMicInput: 3,
  carolSpeaker: 4,
} as const;

/** The PulseAudio channel map of `probe`, in channel order. */
export const PROBE_CHANNEL_MAP = 'front-left,front-right,rear-left,rear-right';

/** Device names per client. */
export const DEVICES = {
  a: { input: 'a_in', mic: 'a_mic', speaker: 'a_spk' },
  b: { input: 'b_in', mic: 'b_mic', speaker: 'b_spk' },
  c: { input: 'c_in', mic: 'c_mic', speaker: 'c_spk' },
  d: { input: 'd_in', mic: 'd_mic', speaker: 'd_spk' },
} as const;

/** Options of {@link startPulse}. */
export interface PulseOptions {
  /** 2 (default: `a`, `b` on `probe`) or 4 (also `c`, `d` on `probe2`). */
  clients?: 2 | 4;
}

/** A running recording started by {@link Pulse.record}. */
export interface Recording {
  /** The WAV file being written (48 kHz, 16-bit, `channels` channels). */
  readonly path: string;
  /** Stops parecord with SIGINT (which finalises the WAV header) and waits for it. */
  stop(): Promise<void>;
}

/** A running private PulseAudio daemon, see {@link startPulse}. */
export interface Pulse {
  /** Temporary folder holding the socket, config, state and log (`pulse.log`). */
  readonly dir: string;
  /** `unix:<dir>/run/native` */
  readonly server: string;
  /**
   * What any child process needs to use this daemon: `PULSE_SERVER`,
   * `PULSE_CLIENTCONFIG` (autospawn off, so a client never starts a stray
   * daemon) and `ALSA_CONFIG_PATH` (ALSA/PortAudio programs go through the
   * pulse plugin). Merge into `process.env` of the child; HOME is not touched.
   */
  readonly env: Record<string, string>;
  /**
   * `env` plus `PULSE_SOURCE=<name>_mic`, `PULSE_SINK=<name>_spk`: a client
   * opening the default device (PortAudio/naudiodon `default`, or any Pulse
   * client) captures from its mic and plays to its speaker.
   */
  clientEnv(name: ClientName): Record<string, string>;
  /**
   * Plays a WAV file into `sink` (e.g. `a_in`) with paplay; resolves when it
   * has been played out.
   * @throws Error when paplay fails (unknown sink, unreadable file).
   */
  play(sink: string, wavPath: string): Promise<void>;
  /**
   * Records `source` (e.g. `probe.monitor`, `a_mic`) to a 48 kHz 16-bit WAV
   * with `channels` channels (4 for `probe.monitor`, in {@link PROBE_CHANNEL}
   * order; 1 for a mic). Resolves once parecord is running; the first samples
   * follow within a few ms (the clock keeper holds latency low).
   */
  record(source: string, wavPath: string, channels: number): Promise<Recording>;
  /** Runs `pactl <args>` against this daemon and returns its stdout. */
  pactl(...args: string[]): Promise<string>;
  /** Stops recordings, the clock keeper and the daemon; removes the folder. Idempotent. */
  stop(): Promise<void>;
}

function channelMapFor(channels: number): string {
  if (channels === 1) return 'mono';
  if (channels === 2) return 'front-left,front-right';
  if (channels === 4) return PROBE_CHANNEL_MAP;
  throw new Error(`record: unsupported channel count ${channels} (use 1, 2 or 4)`);
}

function remapSink(name: string, channel: string, master = 'probe'): string {
  return `load-module module-remap-sink sink_name=${name} master=${master} channels=1 channel_map=mono master_channel_map=${channel} remix=no sink_properties=device.description=${name}`;
}

function remapSource(name: string, channel: string, master = 'probe'): string {
  return `load-module module-remap-source source_name=${name} master=${master}.monitor channels=1 channel_map=mono master_channel_map=${channel} remix=no source_properties=device.description=${name}`;
}

function alsaConfig(clients: 2 | 4): string {
  const pcm = (name: string, description: string) =>
    `pcm.${name} {\n  type pulse\n  device ${name}\n  hint { show on description "${description}" }\n}\n`;
  return [
    '# Written by test/harness/pulse.ts: every ALSA PCM goes to the private PulseAudio.',
    'pcm.!default {\n  type pulse\n  hint { show on description "PulseAudio default (PULSE_SOURCE / PULSE_SINK)" }\n}',
    'ctl.!default {\n  type pulse\n}',
    pcm('a_mic', "Alice's microphone"),
    pcm('a_spk', "Alice's speaker"),
    pcm('b_mic', "Bob's microphone"),
    pcm('b_spk', "Bob's speaker"),
    ...(clients === 4
      ? [pcm('c_mic', "Carol's microphone"), pcm('c_spk', "Carol's speaker"), pcm('d_mic', "Dave's microphone"), pcm('d_spk', "Dave's speaker")]
      : []),
  ].join('\n');
}

/**
 * Starts a private PulseAudio daemon with the `probe` layout described at the
 * top of this file, on its own Unix socket in a temporary folder. Resolves
 * once the daemon answers and `probe` runs at low latency (≈ 2–3 s).
 * @throws Error (with the tail of pulse.log) when the daemon does not come up within 10 s.
 */
export async function startPulse(options: PulseOptions = {}): Promise<Pulse> {
  const clients = options.clients ?? 2;
  const dir = makeTempDir('pulse');
  const runtime = join(dir, 'run');
  const home = join(dir, 'home');
  const state = join(dir, 'state');
  await run('mkdir', ['-p', '-m', '700', runtime, home, state]);
  const socket = join(runtime, 'native');
  const server = `unix:${socket}`;
  const logPath = join(dir, 'pulse.log');
  const script = join(dir, 'default.pa');
  writeFileSync(
    script,
    [
      `load-module module-native-protocol-unix socket=${socket} auth-anonymous=1`,
      `load-module module-null-sink sink_name=probe channels=4 channel_map=${PROBE_CHANNEL_MAP} rate=${PULSE_RATE} format=s16le sink_properties=device.description=probe`,
      remapSink('a_in', 'front-left'),
      remapSink('b_spk', 'front-right'),
      remapSink('b_in', 'rear-left'),
      remapSink('a_spk', 'rear-right'),
      remapSource('a_mic', 'front-left'),
      remapSource('b_mic', 'rear-left'),
      ...(clients === 4
        ? [
            `load-module module-null-sink sink_name=probe2 channels=4 channel_map=${PROBE_CHANNEL_MAP} rate=${PULSE_RATE} format=s16le sink_properties=device.description=probe2`,
            remapSink('c_in', 'front-left', 'probe2'),
            remapSink('d_spk', 'front-right', 'probe2'),
            remapSink('d_in', 'rear-left', 'probe2'),
            remapSink('c_spk', 'rear-right', 'probe2'),
            remapSource('c_mic', 'front-left', 'probe2'),
            remapSource('d_mic', 'rear-left', 'probe2'),
          ]
        : []),
      'set-default-sink probe',
      'set-default-source probe.monitor',
      '',
    ].join('\n'),
  );
  const daemonConf = join(dir, 'daemon.conf');
  writeFileSync(daemonConf, 'realtime-scheduling = yes\nrealtime-priority = 5\nrlimit-rttime = -1\nhigh-priority = yes\nnice-level = -11\n');
  const clientConf = join(dir, 'client.conf');
  // No shared memory between PulseAudio and its clients: with it, the daemon aborts under
  // load when clients come and go (memblock.c "Assertion 'pa_atomic_load(&b->pool->stat.n_imported) > 0'
  // failed … memblock_replace_import()": after 2 calls on a loaded machine, after ~12 on a quiet one).
  writeFileSync(clientConf, 'autospawn = no\nenable-shm = no\nenable-memfd = no\n');
  const alsaConf = join(dir, 'alsa.conf');
  writeFileSync(alsaConf, alsaConfig(clients));

  const env: Record<string, string> = {
    PULSE_SERVER: server,
    PULSE_CLIENTCONFIG: clientConf,
    ALSA_CONFIG_PATH: alsaConf,
  };
  const toolEnv = { ...process.env, ...env };
  delete toolEnv.PULSE_SOURCE;
  delete toolEnv.PULSE_SINK;

  const daemon = await startChild(
    'pulseaudio',
    [
      '-n',
      '--daemonize=no',
      '--system=false',
      '--use-pid-file=no',
      '--exit-idle-time=-1',
      '--disallow-exit',
      '--disallow-module-loading=no',
      // Real-time I/O threads, as a desktop's PulseAudio gets them (through
      // RTKit; daemon.conf's realtime-priority 5): the Parley daemons' media
      // and stream threads run SCHED_RR (main/media/priority.ts), and a sound
      // server below them missed its own deadlines: `npm run bench` counted a
      // speaker underflow (a 1–14 ms hole mid-word) every 1–2 s on each end,
      // on a quiet machine: 21–25 a call, 7–11 once the server was real-time
      // (docs/audio.md, "Speaker underflows"). daemon.conf lifts
      // RLIMIT_RTTIME (200 ms by default), which let the kernel SIGKILL the
      // daemon on a loaded two-core machine.
      '--realtime=yes',
      '--high-priority=yes', // nice-level -11 for its other threads, daemon.conf's default
      '--disable-shm=yes',
      `--log-target=file:${logPath}`,
      '-F',
      script,
    ],
    {
      env: {
        ...process.env,
        HOME: home,
        XDG_RUNTIME_DIR: runtime,
        PULSE_RUNTIME_PATH: runtime,
        PULSE_STATE_PATH: state,
        XDG_CONFIG_HOME: join(home, '.config'),
        PULSE_CONFIG: daemonConf,
      },
      stdio: 'ignore',
    },
  );

  const children: Child[] = [];
  let stopped = false;
  // A daemon that dies before stop() is a harness failure: say why, from its log.
  void daemon.exited.then((how) => {
    if (stopped) return;
    let tail = '';
    try {
      tail = readFileSync(logPath, 'utf8').split('\n').slice(-15).join('\n');
    } catch {
      // no log
    }
    process.stderr.write(`test harness: PulseAudio exited unexpectedly (${how}); end of pulse.log:\n${tail}\n`);
  });
  const pactl = (...args: string[]) => run('pactl', args, { env: toolEnv, timeoutMs: 5000 });
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await Promise.all(children.map((c) => c.stop('SIGINT', 1000)));
    await daemon.stop('SIGTERM', 3000);
    removeTempDir(dir);
  };

  try {
    await waitFor(
      'PulseAudio to answer',
      async () => {
        if (daemon.hasExited()) throw new Error('pulseaudio exited');
        return existsSync(socket) && (await pactl('info')).includes('Server Name');
      },
      10_000,
    );
    // The clock keepers: a low-latency stream on each probe's monitor makes its null
    // sink render in small blocks (see the facts above).
    const probes = clients === 4 ? ['probe', 'probe2'] : ['probe'];
    for (const probe of probes) {
      children.push(
        await startChild(
          'parecord',
          [
            `--device=${probe}.monitor`,
            '--latency-msec=5',
            '--raw',
            '--channels=1',
            '--client-name=parley-clock-keeper',
          ],
          { env: toolEnv, stdio: ['ignore', 'ignore', 'ignore'] },
        ),
      );
    }
    await waitFor(
      'probe to run at low latency',
      async () => {
        const sinks = JSON.parse(await pactl('-f', 'json', 'list', 'sinks')) as Array<{
          name: string;
          latency?: { actual: number };
        }>;
        return probes.every((name) => {
          const probe = sinks.find((s) => s.name === name);
          return probe?.latency !== undefined && probe.latency.actual < 50_000;
        });
      },
      5_000,
    );
  } catch (err) {
    let tail = '';
    try {
      tail = (await run('tail', ['-n', '20', logPath])).trim();
    } catch {
      // no log
    }
    await stop();
    throw new Error(`PulseAudio did not start: ${(err as Error).message}\n${tail}`, { cause: err });
  }

  return {
    dir,
    server,
    env,
    clientEnv: (name) => ({
      ...env,
      PULSE_SOURCE: DEVICES[name].mic,
      PULSE_SINK: DEVICES[name].speaker,
    }),
    async play(sink, wavPath) {
      await run('paplay', [`--device=${sink}`, '--client-name=parley-harness-play', wavPath], {
        env: toolEnv,
        timeoutMs: 60_000,
      });
    },
    async record(source, wavPath, channels) {
      const child = await startChild(
        'parecord',
        [
          `--device=${source}`,
          `--channels=${channels}`,
          `--channel-map=${channelMapFor(channels)}`,
          `--rate=${PULSE_RATE}`,
          '--format=s16le',
          '--file-format=wav',
          '--latency-msec=10',
          '--client-name=parley-harness-record',
          wavPath,
        ],
        { env: toolEnv, stdio: ['ignore', 'ignore', 'pipe'] },
      );
      children.push(child);
      // Wait until the stream is connected (it shows up as a source output).
      await waitFor(
        `recording of ${source} to start`,
        async () => {
          if (child.hasExited()) throw new Error(`parecord for ${source} exited`);
          const outputs = JSON.parse(await pactl('-f', 'json', 'list', 'source-outputs')) as Array<{
            properties?: Record<string, string>;
          }>;
          return outputs.some(
            (o) => o.properties?.['application.process.id'] === String(child.pid),
          );
        },
        5_000,
        20,
      );
      return {
        path: wavPath,
        async stop() {
          await child.stop('SIGINT', 2000);
          const i = children.indexOf(child);
          if (i >= 0) children.splice(i, 1);
        },
      };
    },
    pactl,
    stop,
  };
}
