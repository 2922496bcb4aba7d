#!/usr/bin/env node
/**
 * `parley`: the headless Parley client.
 *
 *   parley register --server URL --username NAME       (password from PARLEY_PASSWORD, --password-stdin, or a prompt)
 *   parley login    --server URL --username NAME
 *   parley daemon   [--auto-answer] [--input NAME] [--output NAME] [--frame-ms 20] [--jitter-ms 40] [--relay]
 *                   [--no-echo-cancellation] [--no-noise-suppression] [--no-gain-control] [--dtx]
 *   parley call NAME [--wait]        (through the running daemon's control socket)
 *   parley answer [CALL_ID] | reject [CALL_ID] | hangup [CALL_ID] | status
 *   parley contacts [list] | add NAME | accept NAME | decline NAME | remove NAME | block NAME | unblock NAME
 *   parley callers approve NAME | refuse NAME   (first-time caller approval)
 *   parley presence [online|away|dnd]
 *   parley settings [--contacts-only on|off]
 *   parley devices [list] | revoke DEVICE_ID      (this account's signed-in devices, with alarms)
 *   parley devices link                            (on the device holding the account key: show a one-time code)
 *   parley link CODE                               (on a new device, daemon running: link it with that code)
 *   parley login --server URL --username NAME --link CODE   (sign in and link at once)
 *   parley devices reset-account-key --yes         (recovery: a new account key; contacts are warned)
 *   parley logout
 *   parley audio-devices [--input NAME] [--output NAME]   (list; with a name, choose it in the running daemon)
 *   parley audit [--type T...] [--call ID] [--since TIME] [--limit N] [--offset N] [--json]   (the local audit log)
 *
 * `parley daemon` reads `<data-dir>/config.toml` (`--config FILE`, PARLEY_CONFIG) first; see main/cli/daemon-config.ts.
 *
 * The daemon owns the audio devices and the signaling connection; it serves
 * the JSON-RPC 2.0 control socket that the other commands (and automation) use.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { ParleyError } from '../../common/errors';
import type { CallStatus, RoomRing, RoomStatus } from '../../common/protocol/control';
import type { ContactsListResult, DeviceInfo } from '../../common/protocol/signaling';
import { loadSession, login, register, tokenKey } from '../core/account';
import { CallEngine } from '../core/call-engine';
import { roomClientBeside } from '../core/room-client';
import { ContactBook } from '../core/contacts';
import { DeviceSessions } from '../core/devices';
import { SignalingClient } from '../core/signaling-client';
import { ControlClient, ControlServer } from './control-server';
import { loadDaemonConfig } from './daemon-config';
import { AuditLog } from '../core/audit-log';
import { parseDuration, type AuditEntry } from '../../common/protocol/webrtc-api';
import { keychainStore } from '../core/keychain-store';
import { DeviceIdentity, identityOwner, startEndToEnd } from '../core/e2ee';
import { raiseMediaPriority, type PriorityResult, type RealtimeResult } from '../media/priority';
import { MediaWorkerHost, startMediaThreadEarly } from '../media/worker/host';
import { AudioRouter, logDeviceEvents, type DeviceChoice } from '../media/audio-router';
import { DEFAULT_OPUS, LocalAudio, installCrashLog, listDevices, mediaPlatform } from '../media/platform';
import type { AccountDevicesStatus, DeviceList } from '../../common/protocol/control';

function defaultDataDir(): string {
  if (process.env.PARLEY_DATA_DIR) return process.env.PARLEY_DATA_DIR;
  const base = process.env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, 'parley');
}

function defaultSocket(dataDir: string): string {
  return process.env.PARLEY_SOCKET || join(dataDir, 'control.sock');
}

async function readPassword(fromStdin: boolean): Promise<string> {
  if (fromStdin || !process.stdin.isTTY) {
    let text = '';
    for await (const chunk of process.stdin) text += chunk;
    return text.replace(/\r?\n$/, '');
  }
  if (process.env.PARLEY_PASSWORD) return process.env.PARLEY_PASSWORD;
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  const password = await rl.question('Password: ');
  rl.close();
  return password;
}

/** The remembered device choice (PulseAudio names) in `<data-dir>/audio.json`. */
function readChoice(dataDir: string): Partial<DeviceChoice> {
  try {
    const j = JSON.parse(readFileSync(join(dataDir, 'audio.json'), 'utf8')) as Partial<DeviceChoice>;
    return { ...(typeof j.input === 'string' ? { input: j.input } : {}), ...(typeof j.output === 'string' ? { output: j.output } : {}) };
  } catch {
    return {};
  }
}

function frameMs(value: string): 10 | 20 {
  if (value !== '10' && value !== '20') throw new InvalidArgumentError('frame size is 10 or 20 (ms)');
  return Number(value) as 10 | 20;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return n;
}

function describe(s: CallStatus): string {
  const parts = [`${s.callId.slice(0, 8)} ${s.direction} ${s.peer}: ${s.state}`];
  if (s.endReason) parts.push(`(${s.endReason}${s.error ? `: ${s.error}` : ''})`);
  if (s.transport) parts.push(`via ${s.transport}`);
  if (s.media === 'reconnecting' && s.state !== 'ended') {
    const since = s.mediaSince ?? Date.now();
    const silent = s.lastAudioAt !== undefined ? ` — no audio from ${s.peer} for ${Math.round((Date.now() - s.lastAudioAt) / 1000)} s` : '';
    parts.push(`(reconnecting… ${Math.round((Date.now() - since) / 1000)} s${silent})`);
  }
  if (s.signaling === 'offline' && s.state !== 'ended') parts.push('(offline: the call continues peer to peer; reconnecting to the server)');
  if (s.signaling === 'peer_offline' && s.state !== 'ended') parts.push(`(${s.peer}'s device lost the server; the call continues peer to peer)`);
  if (s.warning) parts.push(`[warning: ${s.warning}]`);
  return parts.join(' ');
}

const program = new Command()
  .name('parley')
  .description('Parley headless client: secure voice calls from the command line')
  .option('--data-dir <dir>', 'where the profile lives (no secrets are stored there)', defaultDataDir())
  .option('--socket <path>', 'control socket path (default <data-dir>/control.sock)')
  .showHelpAfterError();

const globals = () => {
  const o = program.opts<{ dataDir: string; socket?: string }>();
  return { dataDir: o.dataDir, socket: o.socket ?? defaultSocket(o.dataDir) };
};

program
  .command('register')
  .description('create an account on a Parley server')
  .requiredOption('--server <url>', 'server base URL, e.g. http://127.0.0.1:8787')
  .requiredOption('--username <name>')
  .option('--password-stdin', 'read the password from standard input')
  .action(async (o: { server: string; username: string; passwordStdin?: boolean }) => {
    await register(o.server, o.username, await readPassword(!!o.passwordStdin));
    console.log(`account ${o.username} created on ${o.server}`);
  });

program
  .command('login')
  .description('sign this device in; the device token goes to the OS keychain')
  .requiredOption('--server <url>', 'server base URL')
  .requiredOption('--username <name>')
  .option('--password-stdin', 'read the password from standard input')
  .option('--device-name <name>', 'name of this device', 'parley-headless')
  .option('--link <code>', 'link this device to your account at once, with the code "parley devices link" shows on your first device')
  .action(async (o: { server: string; username: string; passwordStdin?: boolean; deviceName: string; link?: string }) => {
    const { dataDir } = globals();
    const s = await login(o.server, o.username, await readPassword(!!o.passwordStdin), dataDir, keychainStore(), o.deviceName);
    // The device identity (Ed25519, X25519, ML-KEM-768) is created at first sign-in, in the keychain only.
    await DeviceIdentity.loadOrCreate(keychainStore(), identityOwner(s));
    console.log(`signed in as ${s.username} (device ${s.deviceId}); sign-in kept in the OS keychain`);
    if (!o.link) return;
    // Link now, over a short signaling connection (the daemon is not needed for it).
    const signaling = new SignalingClient({ serverUrl: s.serverUrl, deviceId: s.deviceId, token: s.token });
    const e2ee = await startEndToEnd({ secrets: keychainStore(), dataDir, session: s, signaling });
    try {
      await signaling.connect();
      const r = await e2ee.link(o.link);
      console.log(`device ${r.deviceId} linked (account key ${r.accountKey}); contacts will ring it from now on`);
    } finally {
      signaling.close();
    }
  });

program
  .command('daemon')
  .description('stay online, ring on incoming calls and serve the control socket')
  .option('--config <file>', 'config file (default <data-dir>/config.toml; env PARLEY_CONFIG); flags and environment override it')
  .addOption(new Option('--auto-answer', 'answer every incoming call').env('PARLEY_AUTO_ANSWER'))
  .addOption(new Option('--default-lifetime <duration>', 'end a call this long after it connected, e.g. 30m (0s: never)').env('PARLEY_DEFAULT_LIFETIME'))
  .addOption(new Option('--warn-before-expiration <duration>', 'send budget_warning this long before, e.g. 5m').env('PARLEY_WARN_BEFORE_EXPIRATION'))
  .option('--input <name>', 'microphone by name ("pulse:<source>" picks a PulseAudio source)')
  .option('--output <name>', 'speaker by name ("pulse:<sink>" picks a PulseAudio sink)')
  .addOption(new Option('--frame-ms <ms>', 'frame and packet duration').default(20).argParser(frameMs))
  .addOption(new Option('--jitter-ms <ms>', 'fixed jitter buffer delay (default: adaptive)').argParser(positiveInt))
  .addOption(new Option('--media-timeout <s>', 'end a call whose peer has sent nothing for this long').default(30).argParser(positiveInt))
  .option('--relay', 'send media through the TURN relay only')
  .option('--loopback', 'use 127.0.0.1 for media (tests and the demo on one machine)')
  .option('--no-echo-cancellation', 'turn off echo cancellation (WebRTC APM AEC)')
  .option('--no-noise-suppression', 'turn off noise suppression')
  .option('--no-gain-control', 'turn off automatic gain control')
  .option('--dtx', 'discontinuous transmission: do not send frames the voice activity detector calls silence')
  .addOption(
    new Option('--media-thread <where>', "where 1:1 calls' media runs: its own real-time thread (default), or the daemon's main thread (docs/audio.md)")
      .choices(['worker', 'main'])
      .default('worker')
      .env('PARLEY_MEDIA_THREAD'),
  )
  .action(
    async (o: {
      mediaThread: 'worker' | 'main';
      autoAnswer?: boolean;
      input?: string;
      output?: string;
      frameMs: 10 | 20;
      jitterMs?: number;
      mediaTimeout: number;
      relay?: boolean;
      loopback?: boolean;
      echoCancellation: boolean;
      noiseSuppression: boolean;
      gainControl: boolean;
      dtx?: boolean;
      config?: string;
      defaultLifetime?: string;
      warnBeforeExpiration?: string;
    }, cmd: Command) => {
      const { dataDir, socket } = globals();
      // The config file gives defaults; a flag or an environment variable wins over it.
      const configPath = o.config ?? process.env.PARLEY_CONFIG ?? join(dataDir, 'config.toml');
      const file = loadDaemonConfig(configPath, !!(o.config ?? process.env.PARLEY_CONFIG));
      const given = (k: string) => ['cli', 'env'].includes(cmd.getOptionValueSource(k) ?? '');
      const pick = <T,>(k: keyof typeof o, fromFile: T | undefined): T => (given(k) || fromFile === undefined ? (o[k] as T) : fromFile);
      o.autoAnswer = pick('autoAnswer', file.auto_answer);
      o.input = pick('input', file.input);
      o.output = pick('output', file.output);
      o.frameMs = pick('frameMs', file.frame_ms);
      o.jitterMs = pick('jitterMs', file.jitter_ms);
      o.mediaTimeout = pick('mediaTimeout', file.media_timeout);
      o.relay = pick('relay', file.relay);
      o.dtx = pick('dtx', file.dtx);
      o.echoCancellation = pick('echoCancellation', file.echo_cancellation);
      o.noiseSuppression = pick('noiseSuppression', file.noise_suppression);
      o.gainControl = pick('gainControl', file.gain_control);
      o.mediaThread = pick('mediaThread', file.media_thread);
      // The media thread loads its code while this one opens devices and signs in.
      if (o.mediaThread === 'worker') startMediaThreadEarly();
      const duration = (flag: string, text: string) => {
        try {
          return parseDuration(text);
        } catch {
          throw new InvalidArgumentError(`${flag}: "${text}" is not a duration like 30m, 2h or 90s`);
        }
      };
      const maxLifetimeS = parseDuration(file.max_lifetime ?? '2h');
      let lifetimeS = duration('--default-lifetime', pick('defaultLifetime', file.default_lifetime) ?? '30m');
      if (lifetimeS === 0 || lifetimeS > maxLifetimeS) lifetimeS = maxLifetimeS;
      const warnBeforeS = duration('--warn-before-expiration', pick('warnBeforeExpiration', file.warn_before_expiration) ?? '5m');
      if ((file.max_concurrent_calls ?? 1) > 1) {
        console.log(`[daemon] max_concurrent_calls = ${file.max_concurrent_calls}: Parley takes one call at a time; the limit stays 1`);
      }
      // Flags win over the remembered choice; a choice made over the control socket is remembered.
      const remembered = readChoice(dataDir);
      const router = new AudioRouter({ input: o.input ?? remembered.input, output: o.output ?? remembered.output });
      await router.start();
      let saved = JSON.stringify(router.list().chosen);
      router.on('devices', (list: DeviceList) => {
        const now = JSON.stringify(list.chosen);
        if (now === saved) return;
        saved = now;
        try {
          writeFileSync(join(dataDir, 'audio.json'), now + '\n');
        } catch (e) {
          console.error(`[audio] could not remember the device choice: ${(e as Error).message}`);
        }
      });
      logDeviceEvents(router, (line) => console.log(line));
      const audio = new LocalAudio(router, {
        echoCancellation: o.echoCancellation,
        noiseSuppression: o.noiseSuppression,
        gainControl: o.gainControl,
      });
      // 1:1 calls' media on a thread of its own (main/media/worker/, the default). The thread began
      // loading its code above and now warms the media path (ICE, DTLS, SRTP, Opus on loopback)
      // while this thread reads the keychain; the daemon goes online once it is warm (below).
      // Started after sign-in, its 0.5-1 s of loading held the first call's offer: a call placed
      // right after start rang 0.2-1.4 s late (0.04-0.06 s with the media on the main thread).
      const mediaWorker = o.mediaThread === 'worker' ? new MediaWorkerHost(audio, { ...DEFAULT_OPUS, dtx: !!o.dtx }) : undefined;
      const priority = mediaWorker ? mediaWorker.raisePriority() : raiseMediaPriority();
      const earlyWarmUp = mediaWorker?.backend().warmUp(o.frameMs).then(
        (r) => r,
        (e: unknown) => ({ error: e instanceof Error ? e.message : String(e) }),
      );
      const session = await loadSession(dataDir, keychainStore());
      // A crash in native code leaves its backtrace in the data folder, not in the folder the daemon was started from.
      const crashLog = installCrashLog(join(dataDir, 'crash.log'));
      if ('reason' in crashLog) console.log(`[daemon] native crashes will not be logged: ${crashLog.reason}`);
      const signaling = new SignalingClient({
        serverUrl: session.serverUrl,
        deviceId: session.deviceId,
        token: session.token,
      });
      const e2ee = await startEndToEnd({
        secrets: keychainStore(),
        dataDir,
        session,
        signaling,
        onCorrupt: (why) => console.log(`[e2ee] warning: ${why}`),
      });
      e2ee.on('deviceRefused', (r) => console.log(`[e2ee] security: ${r.message}`));
      e2ee.on('alarm', (a) => console.log(`[e2ee] ALARM: ${a.message}`));
      e2ee.on('linked', (d) => console.log(`[e2ee] linked device ${d.deviceId}`));
      e2ee.on('keyChange', (c) =>
        console.log(`[e2ee] ${c.username}: ${c.kind === 'changed' ? 'a device changed its security key' : c.kind === 'account_key_changed' ? 'their account key changed' : 'a new device appeared'}${c.blocked ? `; calls are blocked until you compare the safety number ("parley safety-number ${c.username}") and accept the change` : ''}`),
      );
      const engine = new CallEngine(signaling, mediaPlatform(audio, { ...DEFAULT_OPUS, dtx: !!o.dtx }, mediaWorker), {
        frameMs: o.frameMs,
        jitterTargetMs: o.jitterMs,
        forceRelay: !!o.relay,
        loopbackOnly: !!o.loopback,
        connectTimeoutMs: 15_000,
        mediaTimeoutMs: o.mediaTimeout * 1000,
        dtx: !!o.dtx,
      }, e2ee);
      engine.autoAnswer = !!o.autoAnswer;
      // Group calls share the devices and the mic flag with the engine: one call at a time.
      // DTX as in 1:1 (`--dtx`): the VAD-driven kind drops the first frames of each talk spurt
      // until the VAD hears voice, which costs similarity on this machine.
      const rooms = roomClientBeside(engine, {
        signaling,
        platform: mediaPlatform(audio, { ...DEFAULT_OPUS, dtx: !!o.dtx }),
        config: {
          frameMs: o.frameMs,
          ...(o.jitterMs !== undefined ? { jitterTargetMs: o.jitterMs } : {}),
          dtx: !!o.dtx,
          loopbackOnly: !!o.loopback,
          forceRelay: !!o.relay,
        },
        self: { username: session.username, deviceId: session.deviceId },
        // Rooms are end-to-end encrypted with this device's identity and the same trust as 1:1 calls.
        endToEnd: { identity: e2ee.identity, directory: e2ee },
      });
      rooms.on('ring', (r) => console.log(`[room] ${r.roomId} rings: ${r.inviter.username} invites you (parley room join / parley room decline)`));
      rooms.on('ring_cancelled', (r) => console.log(`[room] ${r.roomId} stopped ringing (${r.reason})`));
      rooms.on('knock', (k) => console.log(`[room] ${k.username} asks to join ${k.roomId} (parley room admit ${k.knockId}, or --deny)`));
      rooms.on('state', (r) => console.log(`[room] ${r.roomId} ${r.state}${r.endReason ? ` (${r.endReason})` : ''}: ${r.participants.map((p) => p.username).join(', ')}${r.error ? ` — ${r.error}` : ''}`));
      engine.on('call', (s) => console.log(`[call] ${describe(s)}`));
      // The media thread (or this one, with --media-thread main) asks for the priority audio clients get (main/media/priority.ts).
      void priority.then((r: PriorityResult & { tid?: number; realtime?: RealtimeResult }) => {
        const nice = r.method === 'none' ? `normal priority (${r.reason})` : `priority nice ${r.nice} via ${r.method}`;
        const rt = r.realtime ? (r.realtime.method === 'none' ? `; not real-time (${r.realtime.reason})` : `; real-time SCHED_RR ${r.realtime.priority} via ${r.realtime.method}`) : '';
        console.log(`[media] ${engine.mediaThread} thread${r.tid !== undefined ? ` (tid ${r.tid})` : ''}: ${nice}${rt}`);
      });
      // The first call connects as fast as the next ones (no compilation on its path).
      void (earlyWarmUp ?? engine.warmUp()).then((r) => {
        console.log('error' in r ? `[media] warm-up failed: ${r.error}` : `[media] warm-up ${r.ms} ms`);
        // Group calls run on this thread: their codec module loads now, not at the first join.
        rooms.warmUp();
      });
      signaling.on('state', (s, d) => console.log(`[signaling] ${s}${d ? ` (${d})` : ''}`));
      const secrets = keychainStore();
      const contacts = new ContactBook(signaling);
      const sessions = new DeviceSessions(signaling);
      sessions.on('token', ({ token }) => {
        secrets.set(tokenKey(session), token).catch((e: unknown) => console.error(`[session] the keychain refused the renewed sign-in: ${(e as Error).message}`));
      });
      sessions.on('ended', (why) => console.log(`[session] ended: ${why}; sign in again with "parley login"`));
      contacts.on('request', (r) => console.log(`[contacts] ${r.username} wants to be your contact ("parley contacts accept ${r.username}")`));
      contacts.on('presence', (p) => console.log(`[presence] ${p.username}: ${p.presence}`));
      contacts.on('approvalRequest', (r) => console.log(`[callers] ${r.username} wants to call you ("parley callers approve ${r.username}")`));
      contacts.on('approval', (r) => console.log(`[callers] ${r.username}: ${r.result}`));
      const audit = new AuditLog(join(dataDir, 'audit.jsonl'));
      const control = new ControlServer(engine, signaling, session, audio, {
        contacts,
        sessions,
        e2ee,
        onLogout: async () => {
          await secrets.delete(tokenKey(session));
          await DeviceIdentity.forget(secrets, identityOwner(session));
          // The account key stays: it is the account's, not this sign-in's (without it no device can be linked).
        },
      }, { audit, limits: { lifetimeS, warnBeforeS }, rooms });
      await control.listen(socket);
      console.log(`[daemon] ${session.username} ready; control socket ${socket}`);
      // Online once the media thread is warm (at most 2 s): a call placed or answered in the first
      // second after start then does not wait for the thread's code to load (measured: the first
      // offer took 0.22-0.36 s when the daemon went online first, 3-6 ms afterwards).
      if (earlyWarmUp) await Promise.race([earlyWarmUp, new Promise((r) => setTimeout(r, 2000).unref())]);
      await signaling.connect();
      sessions.startAutoRefresh();
      e2ee.startDeviceReview();
      const stop = async () => {
        console.log('[daemon] shutting down');
        await Promise.allSettled([engine.shutdown(), rooms.shutdown()]);
        router.close();
        signaling.close();
        await control.close();
        process.exit(0);
      };
      process.on('SIGINT', () => void stop());
      process.on('SIGTERM', () => void stop());
    },
  );

async function withDaemon<T>(fn: (c: ControlClient) => Promise<T>, onNote?: (m: string, p: unknown) => void): Promise<T> {
  const c = await ControlClient.connect(globals().socket, onNote);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

program
  .command('call <username>')
  .description('call someone through the running daemon')
  .option('--wait', 'stay until the call ends (Ctrl-C hangs up)')
  .action(async (username: string, o: { wait?: boolean }) => {
    let callId: string | undefined;
    let resolveEnd: () => void = () => {};
    const ended = new Promise<void>((r) => (resolveEnd = r));
    await withDaemon(
      async (c) => {
        ({ callId } = await c.request<{ callId: string }>('create_call', { to: username }));
        console.log(`calling ${username} (call ${callId})`);
        if (!o.wait) return;
        process.on('SIGINT', () => void c.request('end_call', { callId }).catch(() => {}));
        await ended;
      },
      (method, p) => {
        const s = p as CallStatus;
        if (method !== 'call.state' || s.callId !== callId) return;
        console.log(describe(s));
        if (s.state === 'ended') resolveEnd();
      },
    );
  });

for (const [name, method, help] of [
  ['answer', 'answer_call', 'answer the ringing call'],
  ['reject', 'reject_call', 'decline the ringing call'],
  ['hangup', 'end_call', 'end the current call'],
] as const) {
  program
    .command(`${name} [callId]`)
    .description(help)
    .action(async (callId?: string) => {
      const r = await withDaemon((c) => c.request<{ callId: string }>(method, callId ? { callId } : {}));
      console.log(`${name}: ${r.callId}`);
    });
}

/** One line per participant of a room, for people. */
function describeRoom(r: RoomStatus): string {
  const head = `room ${r.roomId}: ${r.state}${r.endReason ? ` (${r.endReason})` : ''}${r.joinMs !== undefined ? `, joined in ${r.joinMs} ms` : ''}${r.micOpen ? '' : ', microphone closed'}${r.error ? ` — ${r.error}` : ''}`;
  const lines = r.participants.map((p) => {
    const speaking = r.speaker?.deviceId === p.deviceId ? ' (speaking)' : '';
    if (p.self) return `  ${p.username} (you)${speaking}`;
    const a = p.audio;
    return `  ${p.username}${speaking}${a ? `: ${a.playing ? 'heard' : 'not heard yet'}, ${a.packetsReceived} packets, ${a.packetsLost} lost` : ': not received yet'}`;
  });
  return [head, ...lines].join('\n');
}

const roomCmd = program.command('room').description('group calls through the running daemon');
/** A list of usernames from "a,b c" (commas or spaces). */
function usernames(list: string[]): string[] {
  return list.flatMap((x) => x.split(',')).map((x) => x.trim()).filter((x) => x.length > 0);
}
roomCmd
  .command('create')
  .description('open a room on the server and join it; with --invite, ring those contacts into it')
  .option('--max <n>', 'most participants', (v) => Number.parseInt(v, 10))
  .option('--invite <usernames...>', 'contacts to ring (every device of each rings)')
  .action(async (o: { max?: number; invite?: string[] }) => {
    const invite = o.invite ? usernames(o.invite) : [];
    const r = await withDaemon((c) =>
      c.request<RoomStatus>('create_room', { ...(o.max !== undefined ? { maxParticipants: o.max } : {}), ...(invite.length ? { invite } : {}) }),
    );
    console.log(describeRoom(r));
    if (invite.length) console.log(`ringing ${invite.join(', ')}`);
    console.log(`invite more with: parley room invite <username>; or make a call link: parley room link`);
  });
roomCmd
  .command('join [roomId]')
  .description('join a room you were invited to (without an id: the one ringing now), or through a call link (--link)')
  .option('--link <url>', 'a call link parley://room/<id>?t=… (knocks and waits when the host must let you in)')
  .action(async (roomId: string | undefined, o: { link?: string }) => {
    const params = o.link ? { link: o.link } : roomId ? { roomId } : {};
    if (o.link) console.log('joining through the call link (if the host must let you in, this waits for them)…');
    console.log(describeRoom(await withDaemon((c) => c.request<RoomStatus>('join_room', params))));
  });
roomCmd
  .command('invite <usernames...>')
  .description('ring contacts into the room you are in')
  .action(async (names: string[]) => {
    const r = await withDaemon((c) => c.request<{ invited: string[] }>('invite_to_room', { to: usernames(names) }));
    console.log(r.invited.length ? `ringing ${r.invited.join(', ')}` : 'nobody new to ring (already in the room or ringing)');
  });
roomCmd
  .command('rings')
  .description('group calls ringing this device now')
  .action(async () => {
    const rings = await withDaemon((c) => c.request<RoomRing[]>('list_room_rings'));
    if (rings.length === 0) console.log('no group call rings');
    for (const r of rings)
      console.log(`room ${r.roomId}: ${r.inviter.username} invites you (in it: ${r.participants.join(', ') || 'nobody yet'}); rings until ${new Date(r.expiresAt).toLocaleTimeString()}`);
  });
roomCmd
  .command('decline [roomId]')
  .description('stop a group call ringing (without an id: the one ringing now); your other devices stop too')
  .action(async (roomId?: string) => {
    const r = await withDaemon((c) => c.request<{ roomId: string }>('decline_room', roomId ? { roomId } : {}));
    console.log(`declined room ${r.roomId}`);
  });
roomCmd
  .command('link')
  .description('make a call link for the room you are in (anyone with it may join: share it carefully)')
  .option('--expires <seconds>', 'seconds until it stops working (default a day)', (v) => Number.parseInt(v, 10))
  .option('--approval', 'you let each person in yourself (parley room admit)')
  .action(async (o: { expires?: number; approval?: boolean }) => {
    const r = await withDaemon((c) =>
      c.request<{ url: string; linkId: string; expiresAt: number; approval: boolean }>('create_room_link', {
        ...(o.expires !== undefined ? { expiresInSeconds: o.expires } : {}),
        ...(o.approval ? { approval: true } : {}),
      }),
    );
    console.log(r.url);
    console.log(`link ${r.linkId}: works until ${new Date(r.expiresAt).toISOString()}${r.approval ? '; you let each person in (parley room admit <knockId>)' : ''}; revoke with: parley room revoke ${r.linkId}`);
  });
roomCmd
  .command('revoke <linkId>')
  .description('stop a call link working')
  .action(async (linkId: string) => {
    await withDaemon((c) => c.request('revoke_room_link', { linkId }));
    console.log(`link ${linkId} revoked`);
  });
roomCmd
  .command('admit <knockId>')
  .description('as the host, let in someone who knocked through a call link (--deny: refuse)')
  .option('--deny', 'refuse instead')
  .action(async (knockId: string, o: { deny?: boolean }) => {
    await withDaemon((c) => c.request('admit_to_room', { knockId, admit: !o.deny }));
    console.log(o.deny ? 'refused' : 'let in');
  });
roomCmd
  .command('leave')
  .description('leave the room')
  .action(async () => {
    const r = await withDaemon((c) => c.request<{ roomId: string }>('leave_room'));
    console.log(`left room ${r.roomId}`);
  });
roomCmd
  .command('participants', { isDefault: true })
  .description("who is in the room and what you receive from each")
  .action(async () => {
    console.log(describeRoom(await withDaemon((c) => c.request<RoomStatus>('list_participants'))));
  });

program
  .command('status')
  .description("show the daemon's calls")
  .action(async () => {
    const { calls } = await withDaemon((c) => c.request<{ calls: CallStatus[] }>('list_calls'));
    if (calls.length === 0) console.log('no calls');
    for (const s of calls) console.log(describe(s));
  });

program
  .command('audio-devices')
  .description('list audio devices; with --input/--output, choose them in the running daemon (also mid-call)')
  .option('--input <name>', 'microphone: "default" or a PulseAudio source name')
  .option('--output <name>', 'speaker: "default" or a PulseAudio sink name')
  .action(async (o: { input?: string; output?: string }) => {
    if (o.input || o.output) {
      const list = await withDaemon((c) => c.request<DeviceList>('devices.set', { ...(o.input ? { input: o.input } : {}), ...(o.output ? { output: o.output } : {}) }));
      console.log(`chosen: input ${list.chosen.input}, output ${list.chosen.output}`);
      return;
    }
    const router = new AudioRouter();
    await router.start();
    router.close();
    const list = router.list();
    if (list.pulse) {
      for (const d of list.inputs) console.log(`in\t${d.isDefault ? '*' : ' '} ${d.name}\t${d.description}`);
      for (const d of list.outputs) console.log(`out\t${d.isDefault ? '*' : ' '} ${d.name}\t${d.description}`);
      return;
    }
    for (const d of listDevices()) {
      const dir = [d.maxInputChannels > 0 ? 'in' : '', d.maxOutputChannels > 0 ? 'out' : ''].filter(Boolean).join('/');
      console.log(`${d.id}\t${dir}\t${d.name}`);
    }
  });

function printContacts(b: ContactsListResult): void {
  if (b.contacts.length + b.incoming.length + b.outgoing.length + b.blocked.length === 0) console.log('no contacts');
  for (const c of b.contacts) console.log(`${c.username}\t${c.presence}`);
  for (const r of b.incoming) console.log(`${r.username}\twants to be your contact`);
  for (const r of b.outgoing) console.log(`${r.username}\tasked, waiting for an answer`);
  for (const r of b.blocked) console.log(`${r.username}\tblocked`);
}

const contactsCmd = program.command('contacts').description('your contacts (through the running daemon)');
contactsCmd
  .command('list', { isDefault: true })
  .description('contacts with presence, pending requests and blocks')
  .action(async () => printContacts(await withDaemon((c) => c.request<ContactsListResult>('list_contacts'))));
contactsCmd
  .command('add <username>')
  .description('ask someone to be your contact (accepts theirs if they asked first)')
  .action(async (username: string) => {
    const r = await withDaemon((c) => c.request<{ status: string }>('request_contact', { username }));
    console.log(r.status === 'contact' ? `${username} is now your contact` : `asked ${username}; waiting for them to accept`);
  });
for (const [name, method, done] of [
  ['accept', 'accept_contact', 'is now your contact'],
  ['decline', 'decline_contact', ': request declined'],
  ['remove', 'remove_contact', 'removed'],
  ['block', 'block_contact', 'blocked'],
  ['unblock', 'unblock_contact', 'unblocked'],
] as const) {
  contactsCmd
    .command(`${name} <username>`)
    .description(`${name} a contact`)
    .action(async (username: string) => {
      await withDaemon((c) => c.request(method, { username }));
      console.log(`${username}${done.startsWith(':') ? done : ` ${done}`}`);
    });
}

const callersCmd = program.command('callers').description('first-time callers waiting for your approval');
for (const [name, method, done] of [
  ['approve', 'approve_caller', 'may call you now'],
  ['refuse', 'refuse_caller', 'refused'],
] as const) {
  callersCmd
    .command(`${name} <username>`)
    .description(`${name} a caller who is waiting`)
    .action(async (username: string) => {
      await withDaemon((c) => c.request(method, { username }));
      console.log(`${username} ${done}`);
    });
}

program
  .command('safety-number <username>')
  .description('show the safety number with a contact (compare it with them in person or on another channel)')
  .option('--verify', 'after comparing: mark the contact verified')
  .option('--accept-key-change', "accept a contact's changed security keys (calls are blocked until then)")
  .action(async (username: string, o: { verify?: boolean; acceptKeyChange?: boolean }) => {
    await withDaemon(async (c) => {
      if (o.acceptKeyChange) {
        await c.request('accept_key_change', { username });
        console.log(`accepted the new security keys of ${username}; compare the safety number again`);
      }
      const s = await c.request<{ safetyNumber: string; verified: boolean }>('get_safety_number', { username });
      console.log(`safety number with ${username}:`);
      const groups = s.safetyNumber.split(' ');
      for (let i = 0; i < groups.length; i += 4) console.log(`  ${groups.slice(i, i + 4).join(' ')}`);
      if (o.verify) {
        await c.request('mark_verified', { username });
        console.log(`${username} marked verified`);
      } else {
        console.log(s.verified ? `${username} is verified` : `${username} is not verified ("parley safety-number ${username} --verify" once the numbers match)`);
      }
    });
  });

program
  .command('presence [status]')
  .description('set your presence for your contacts: online, away or dnd')
  .action(async (status?: string) => {
    if (!status) {
      const s = await withDaemon((c) => c.request<{ username: string; signaling: string }>('get_status'));
      console.log(`${s.username}: signaling ${s.signaling}`);
      return;
    }
    const r = await withDaemon((c) => c.request<{ presence: string }>('set_presence', { status }));
    console.log(`your contacts see you as ${r.presence}`);
  });

program
  .command('settings')
  .description('account settings')
  .addOption(new Option('--contacts-only <on|off>', 'only contacts may call me').choices(['on', 'off']))
  .action(async (o: { contactsOnly?: 'on' | 'off' }) => {
    const params = o.contactsOnly ? { contactsOnly: o.contactsOnly === 'on' } : {};
    const s = await withDaemon((c) => c.request<{ contactsOnly: boolean }>('set_settings', params));
    console.log(`only contacts may call me: ${s.contactsOnly ? 'on' : 'off'}`);
  });

const devicesCmd = program.command('devices').description("this account's signed-in devices (through the running daemon)");
devicesCmd
  .command('list', { isDefault: true })
  .description('every signed-in device')
  .action(async () => {
    const [{ devices }, own] = await withDaemon(async (c) =>
      Promise.all([c.request<{ devices: DeviceInfo[] }>('list_devices'), c.request<AccountDevicesStatus>('get_account_devices')]),
    );
    const approved = new Set(own.approved.map((d) => d.deviceId));
    for (const d of devices) {
      const seen = d.lastSeenAt ? new Date(d.lastSeenAt).toISOString() : 'never';
      const role = { holder: 'holds the account key', linked: 'linked', unlinked: 'NOT LINKED' }[own.role];
      const mark = d.current ? `\t(this device)\t${role}` : own.role === 'unlinked' ? '' : approved.has(d.deviceId) ? '\tlinked' : '\tNOT LINKED';
      console.log(`${d.deviceId}\t${d.name}\t${d.online ? 'online' : 'offline'}\tlast seen ${seen}${mark}`);
    }
    if (own.role === 'unlinked') console.log('this device is not linked to your account yet: run "parley devices link" on your first device, then "parley link CODE" here');
    for (const a of own.alarms) console.log(`ALARM: ${a.message}`);
  });
devicesCmd
  .command('link')
  .description('show a one-time code that links a new device of this account (on the device that holds the account key)')
  .action(async () => {
    let resolveLinked: () => void = () => {};
    const linked = new Promise<void>((r) => (resolveLinked = r));
    await withDaemon(
      async (c) => {
        const { code, expiresAt } = await c.request<{ code: string; expiresAt: number }>('start_device_link');
        console.log(`On the new device (signed in, daemon running) enter:\n\n    parley link ${code}\n`);
        console.log(`The code works once, until ${new Date(expiresAt).toISOString()}. Waiting…`);
        let timer: NodeJS.Timeout | undefined;
        const expired = new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, expiresAt - Date.now()))));
        await Promise.race([linked, expired]);
        clearTimeout(timer);
      },
      (method, p) => {
        if (method !== 'account.device_linked') return;
        console.log(`linked device ${(p as { deviceId: string }).deviceId}`);
        resolveLinked();
      },
    );
  });
devicesCmd
  .command('reset-account-key')
  .description('recovery when no device holds the account key: make a new one here (every contact is warned)')
  .option('--yes', 'I understand: contacts see an account-key change and must accept it; my other devices must be linked again')
  .action(async (o: { yes?: boolean }) => {
    if (!o.yes) throw new ParleyError('invalid_params', 'a new account key warns every contact and unlinks your other devices; add --yes to go ahead');
    const r = await withDaemon((c) => c.request<{ accountKey: string }>('reset_account_key', { confirm: true }));
    console.log(`new account key ${r.accountKey}; your contacts will be asked to accept it, and your other devices must be linked again`);
  });

program
  .command('link <code>')
  .description('link this new device to your account with the code shown by "parley devices link" (daemon running)')
  .action(async (code: string) => {
    const r = await withDaemon((c) => c.request<{ deviceId: string; accountKey: string }>('link_device', { code }));
    console.log(`device ${r.deviceId} linked (account key ${r.accountKey}); contacts will ring it from now on`);
  });
devicesCmd
  .command('revoke <deviceId>')
  .description('sign a device out for good')
  .action(async (deviceId: string) => {
    await withDaemon((c) => c.request('revoke_device', { deviceId }));
    console.log(`device ${deviceId} revoked`);
  });

program
  .command('logout')
  .description('sign this device out (the server forgets its token; the keychain entry is deleted)')
  .action(async () => {
    await withDaemon((c) => c.request('logout'));
    console.log('signed out');
  });

program
  .command('audit')
  .description("show this device's local audit log (newest first; no daemon needed)")
  .option('--type <event_type...>', 'only these event types, e.g. call_ended call_refused')
  .option('--call <call_id>', 'only this call')
  .option('--since <time>', 'from this time on (ISO 8601 or Unix ms)')
  .addOption(new Option('--limit <n>', 'how many entries').default(50).argParser(positiveInt))
  .addOption(new Option('--offset <n>', 'skip this many newest entries first').default(0).argParser((v) => (v === '0' ? 0 : positiveInt(v))))
  .option('--json', 'one JSON object per line')
  .action((o: { type?: string[]; call?: string; since?: string; limit: number; offset: number; json?: boolean }) => {
    const log = new AuditLog(join(globals().dataDir, 'audit.jsonl'));
    const since = o.since === undefined ? undefined : /^\d+$/.test(o.since) ? Number(o.since) : Date.parse(o.since);
    if (since !== undefined && Number.isNaN(since)) throw new InvalidArgumentError(`--since: "${o.since}" is not a time`);
    const r = log.query({
      limit: o.limit,
      offset: o.offset,
      ...(o.type ? { eventTypes: o.type } : {}),
      ...(o.call ? { callId: o.call } : {}),
      ...(since !== undefined ? { since } : {}),
    });
    log.close();
    const line = (e: AuditEntry) =>
      [e.time, e.event_type, e.call_id?.slice(0, 8), e.user_id, e.reason, e.details && Object.keys(e.details).length ? JSON.stringify(e.details) : undefined]
        .filter((x) => x !== undefined)
        .join('  ');
    for (const e of r.entries) console.log(o.json ? JSON.stringify(e) : line(e));
    if (!o.json) console.error(`${r.entries.length} of ${r.total}${r.nextOffset !== undefined ? ` (more with --offset ${r.nextOffset})` : ''}`);
  });

program.parseAsync().catch((e: unknown) => {
  const message = e instanceof ParleyError || e instanceof Error ? e.message : String(e);
  console.error(`parley: ${message}`);
  process.exit(e instanceof ParleyError && e.reason === 'unauthenticated' ? 3 : 1);
});
