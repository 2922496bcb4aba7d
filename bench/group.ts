/**
 * `npm run bench:group [-- --clicks 20] [-- --seconds 20] [-- --max-rooms 6] [-- --joins 10] [-- --json] [-- --no-write]`:
 * group calls through the server's SFU (a real mediasoup worker) between real
 * `parley` daemons on one private PulseAudio, against a direct 1:1 call of the
 * same two daemons in the same run.
 *
 * 1. Direct: Alice and Bob (devices a and b) in a 1:1 call; a click train into
 *    Alice's microphone, each click's mouth-to-ear delay read at Bob's speaker
 *    on the probe's one clock — the method of `npm run bench` (bench/lib.ts
 *    `clickRun`), the same clicks, the same daemons.
 * 1b. The same two alone in a room through the SFU: the click train again
 *    (the group path's own delay, against the direct call's).
 * 2. Room 1: the same two and three more daemons join one room (5
 *    participants); `--joins` more join/leave cycles of one of them: join
 *    time (`join_room` → both transports, the producer and every consumer up,
 *    the daemon's `joinMs`), p50/p95 over every join of the run. The click
 *    train again, now Alice → SFU → Bob; CPU per participant: utime+stime of
 *    the five daemons over the train, mean, % of one core.
 * 3. Scale: rooms of 5 more daemons each are added (each of those rooms full
 *    of daemons sending continuously: DTX off, the daemon default) and the
 *    train is played in room 1 again after each, until its mouth-to-ear p95
 *    exceeds 1.5× the one-room p95, clicks go missing (over 20 %), or
 *    `--max-rooms` is reached (the run stays under 10 minutes). The most
 *    participants this machine carries: the last step within the bound.
 *
 * The extra participants share the c and d devices (PulseAudio mixes their
 * streams); only Alice's microphone carries the clicks and only Bob's speaker
 * is measured. Prints a table and writes it to docs/BENCHMARKS.md (between
 * `bench:group` markers); with `--json` the last line is
 * `{"participants_per_room":5,"join_ms_p50","join_ms_p95","direct":{"mouth_to_ear_p50_ms","mouth_to_ear_p95_ms"},"pair":{…},
 * "sfu":{…},"cpu_percent_per_participant","steps":[{"rooms","participants","mouth_to_ear_p50_ms","mouth_to_ear_p95_ms",
 * "missed","cpu_percent_per_participant","load_average"}],"max_participants","bound":"…"}`.
 */
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import type { RoomStatus } from '../common/protocol/control';
import { makeClientContacts, startClient, type RunningClient } from '../test/harness/client';
import { startKeyring } from '../test/harness/keyring';
import { makeTempDir, removeTempDir, waitFor } from '../test/harness/process';
import { startPulse, type ClientName } from '../test/harness/pulse';
import { startServer } from '../test/harness/server';
import { clickRun, cpuTicks, percentile, type ClickResult } from './lib';
import { writeBenchSection } from './doc-section';

const { values: args } = parseArgs({
  options: {
    clicks: { type: 'string', default: '20' },
    seconds: { type: 'string', default: '20' },
    'max-rooms': { type: 'string', default: '6' },
    joins: { type: 'string', default: '10' },
    'no-write': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const CLICKS = Number(args.clicks);
const SECONDS = Number(args.seconds);
const MAX_ROOMS = Number(args['max-rooms']);
const JOINS = Number(args.joins);
for (const [k, v] of Object.entries({ clicks: CLICKS, seconds: SECONDS, 'max-rooms': MAX_ROOMS, joins: JOINS }))
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a whole number ≥ 1, got "${args[k as keyof typeof args]}"`);
/** Participants per room. */
const ROOM_SIZE = 5;
/** The scale-out stops when room 1's mouth-to-ear p95 exceeds this many times its one-room value. */
const P95_BOUND = 1.5;
/** …or when more than this share of the clicks never reached Bob's speaker. */
const MISSED_BOUND = 0.2;
/** No new room is added after this long, ms (adding one and measuring takes about a minute here: the run ends in < 10 min). */
const DEADLINE_MS = 8 * 60_000;

interface Step {
  rooms: number;
  participants: number;
  clicks: ClickResult;
  /** Mean CPU of room 1's five daemons over the click train, % of one core. */
  cpuPerParticipant: number;
  load: number;
}

const started = Date.now();
const log = (s: string) => process.stderr.write(`[bench:group ${((Date.now() - started) / 1000).toFixed(0)} s] ${s}\n`);
const round1 = (x: number) => Math.round(x * 10) / 10;
const p50 = (x: number[]) => round1(percentile(x, 50));
const p95 = (x: number[]) => round1(percentile(x, 95));

async function main(): Promise<void> {
  const dir = makeTempDir('bench-group');
  const [pulse, keyring] = await Promise.all([startPulse({ clients: 4 }), startKeyring()]);
  const server = await startServer({ env: { PARLEY_SFU_WORKERS: '1' } });
  const daemons: RunningClient[] = [];
  let n = 0;
  const tag = Math.floor(Math.random() * 1e6);
  const daemon = async (device: ClientName): Promise<RunningClient> => {
    const c = await startClient({
      name: `g${tag}x${n++}`,
      server,
      env: { ...pulse.clientEnv(device), ...keyring.env },
      input: `${device}_mic`,
      output: `${device}_spk`,
    });
    daemons.push(c);
    return c;
  };
  const joinMs: number[] = [];
  const join = async (c: RunningClient, roomId: string) => {
    const s = await c.request<RoomStatus>('join_room', { roomId });
    if (s.joinMs !== undefined) joinMs.push(s.joinMs);
  };
  const steps: Step[] = [];
  let direct: ClickResult;
  let pair: ClickResult;
  let bound = `the cap of ${MAX_ROOMS} rooms`;
  try {
    log('starting Alice and Bob…');
    const [alice, bob] = [await daemon('a'), await daemon('b')];

    // 1. Direct 1:1 call, the same daemons.
    await makeClientContacts(alice, bob);
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: bob.name });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('answer_call', { callId });
    await Promise.all([alice.waitForCall(callId, (s) => !!s.firstAudioAt), bob.waitForCall(callId, (s) => !!s.firstAudioAt)]);
    await new Promise((r) => setTimeout(r, 1000));
    log(`direct 1:1 call: ${CLICKS} clicks…`);
    direct = await clickRun(pulse, dir, 'direct', CLICKS, SECONDS, { alice: () => [alice.pid], bob: () => [bob.pid] });
    await alice.request('end_call', { callId });
    await bob.waitForCall(callId, (s) => s.state === 'ended');

    // 1b. The same two in a room of their own: the group path's own delay against the direct call's.
    const duo = await alice.request<RoomStatus>('create_room', { invite: [bob.name] });
    await join(bob, duo.roomId);
    await waitFor('Bob to hear Alice in their room', async () => (await bob.request<RoomStatus>('list_participants')).participants.some((p) => !p.self && p.audio?.playing), 15_000, 100);
    await new Promise((r) => setTimeout(r, 1000));
    log(`room of two: ${CLICKS} clicks…`);
    pair = await clickRun(pulse, dir, 'pair', CLICKS, SECONDS, { alice: () => [alice.pid], bob: () => [bob.pid] });
    await alice.request('leave_room');
    await bob.request('leave_room');

    // 2. Room 1: five participants, join cycles, the clicks through the SFU.
    const others = [await daemon('c'), await daemon('d'), await daemon('c')];
    const room1 = [alice, bob, ...others];
    // Only invited accounts may join by id: Alice rings the others in (contacts first, as users do).
    for (const c of room1.slice(2)) await makeClientContacts(alice, c);
    const created = await alice.request<RoomStatus>('create_room', { invite: room1.slice(1).map((c) => c.name) });
    if (created.joinMs !== undefined) joinMs.push(created.joinMs);
    const roomId = created.roomId;
    for (const c of room1.slice(1)) await join(c, roomId);
    const cycler = others[2]!;
    log(`room 1 full; ${JOINS} join/leave cycles…`);
    for (let i = 0; i < JOINS; i++) {
      try {
        await cycler.request('leave_room');
        await join(cycler, roomId);
      } catch (e) {
        console.error(`the daemon joining and leaving failed; the end of its log:\n${cycler.log().slice(-6000)}`);
        throw e;
      }
    }
    const hearsAll = async (rooms: RunningClient[]) =>
      waitFor('every participant of room 1 to hear the four others', async () => {
        const st = await Promise.all(rooms.map((c) => c.request<RoomStatus>('list_participants')));
        return st.every((s) => s.participants.filter((p) => !p.self && p.audio?.playing).length === ROOM_SIZE - 1);
      }, 30_000, 200);
    await hearsAll(room1);
    await new Promise((r) => setTimeout(r, 1000));
    const measure = async (rooms: number): Promise<Step> => {
      const pids = room1.map((c) => c.pid);
      const c0 = cpuTicks(pids);
      const t0 = performance.now();
      const clicks = await clickRun(pulse, dir, `room-${rooms}`, CLICKS, SECONDS, { alice: () => [alice.pid], bob: () => [bob.pid] });
      const cpu = (100 * (cpuTicks(pids) - c0)) / 100 / ((performance.now() - t0) / 1000) / pids.length;
      const step = { rooms, participants: rooms * ROOM_SIZE, clicks, cpuPerParticipant: cpu, load: loadavg()[0]! };
      log(`${rooms} room(s), ${step.participants} participants: mouth-to-ear p50 ${p50(clicks.m2e)} ms, p95 ${p95(clicks.m2e)} ms, missed ${clicks.missed}/${CLICKS}, CPU ${cpu.toFixed(1)} % per participant, load ${step.load.toFixed(1)}`);
      return step;
    };
    steps.push(await measure(1));
    const base = p95(steps[0]!.clicks.m2e);

    // 3. More rooms of five until room 1's p95 passes the bound.
    for (let rooms = 2; rooms <= MAX_ROOMS; rooms++) {
      if (Date.now() - started > DEADLINE_MS) {
        bound = 'the 8-minute deadline';
        break;
      }
      log(`adding room ${rooms}…`);
      const members: RunningClient[] = [];
      for (let i = 0; i < ROOM_SIZE; i++) members.push(await daemon(i % 2 === 0 ? 'c' : 'd'));
      for (const m of members.slice(1)) await makeClientContacts(members[0]!, m);
      const r = await members[0]!.request<RoomStatus>('create_room', { invite: members.slice(1).map((m) => m.name) });
      if (r.joinMs !== undefined) joinMs.push(r.joinMs);
      for (const m of members.slice(1)) await join(m, r.roomId);
      await new Promise((res) => setTimeout(res, 2000));
      const step = await measure(rooms);
      steps.push(step);
      const over = p95(step.clicks.m2e) > P95_BOUND * base;
      const lost = step.clicks.missed > MISSED_BOUND * CLICKS;
      if (over || lost) {
        bound = over ? `room 1's mouth-to-ear p95 above ${P95_BOUND}× its one-room value` : `more than ${MISSED_BOUND * 100} % of the clicks lost`;
        break;
      }
    }
  } finally {
    await Promise.allSettled(daemons.map((c) => c.stop()));
    await server.stop();
    await Promise.allSettled([keyring.stop(), pulse.stop()]);
    removeTempDir(dir);
  }

  const base = steps[0]!;
  const within = steps.filter((s) => p95(s.clicks.m2e) <= P95_BOUND * p95(base.clicks.m2e) && s.clicks.missed <= MISSED_BOUND * CLICKS);
  /** null: even one room was out of the bound (the machine was saturated: see the direct call's figures). */
  const maxParticipants = within.at(-1)?.participants ?? null;
  joinMs.sort((a, b) => a - b);
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const machine = `${cpus().length} cores (${cpu}), Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
  const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');
  const rows = steps.map(
    (s) =>
      `| ${s.rooms} | ${s.participants} | ${p50(s.clicks.m2e)} | ${p95(s.clicks.m2e)} | ${(p95(s.clicks.m2e) / p95(base.clicks.m2e)).toFixed(2)} | ${s.clicks.missed}/${CLICKS} | ${f1(s.cpuPerParticipant)} | ${s.load.toFixed(1)} |`,
  );
  const table = [
    `Mouth-to-ear, direct 1:1 call (the same two daemons): p50 ${p50(direct.m2e)} ms, p95 ${p95(direct.m2e)} ms (missed ${direct.missed}/${CLICKS}; CPU ${f1(direct.cpu.alice)} % / ${f1(direct.cpu.bob)} % of a core).`,
    `Mouth-to-ear through the SFU, the same two alone in a room: p50 ${p50(pair!.m2e)} ms, p95 ${p95(pair!.m2e)} ms — ${(p50(pair!.m2e) / p50(direct!.m2e)).toFixed(2)}× / ${(p95(pair!.m2e) / p95(direct!.m2e)).toFixed(2)}× the direct call's (missed ${pair!.missed}/${CLICKS}).`,
    `Mouth-to-ear through the SFU, one room of ${ROOM_SIZE}: p50 ${p50(base.clicks.m2e)} ms, p95 ${p95(base.clicks.m2e)} ms — ${(p50(base.clicks.m2e) / p50(direct.m2e)).toFixed(2)}× / ${(p95(base.clicks.m2e) / p95(direct.m2e)).toFixed(2)}× the direct call's.`,
    `Join time (\`join_room\` → transports, producer and every consumer up), ${joinMs.length} joins: p50 ${p50(joinMs)} ms, p95 ${p95(joinMs)} ms.`,
    `CPU per participant (one room of ${ROOM_SIZE}): ${f1(base.cpuPerParticipant)} % of one core.`,
    maxParticipants === null
      ? `Most participants this machine carries: **not measured in this run** — one room already lost ${base.clicks.missed}/${CLICKS} clicks (the direct call ${direct!.missed}/${CLICKS}) at load average ${base.load.toFixed(1)}; stopped at ${bound}.`
      : `Most participants this machine carries: **${maxParticipants}** (${maxParticipants / ROOM_SIZE} room(s) of ${ROOM_SIZE} within the bound; stopped at ${bound}).`,
    '',
    '| rooms | participants | m2e p50 ms | m2e p95 ms | p95 ÷ 1-room p95 | clicks missed | CPU per participant % | load average (1 min) |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows,
  ].join('\n');
  console.log(`\nParley group-call benchmark — ${machine}\n\n${table}\n`);
  if (!args['no-write']) {
    const written = writeBenchSection('group', [
      '## Group calls through the SFU (`npm run bench:group`)',
      '',
      `Command: \`npm run bench:group -- --clicks ${CLICKS} --seconds ${SECONDS} --max-rooms ${MAX_ROOMS} --joins ${JOINS}\`. Machine: ${machine}; shared with other work (load average in the table).`,
      '',
      'Method (bench/group.ts): real `parley` daemons on one private PulseAudio, the server with one mediasoup worker. The',
      "mouth-to-ear method of `npm run bench` (bench/lib.ts `clickRun`): a click train into Alice's microphone, each click's",
      "onset offset at Bob's speaker on one recording's clock — first in a direct 1:1 call of the two, then the two alone in a",
      `room, then with both in a room of ${ROOM_SIZE} through the SFU. Rooms of ${ROOM_SIZE} daemons each (sending continuously: DTX off) are then added and the train played in`,
      `room 1 again after each, until its p95 exceeds ${P95_BOUND}× the one-room p95 (or clicks are lost, or the cap). CPU: utime+stime of`,
      "room 1's daemons over the train, mean per daemon. Join time: each daemon's `joinMs` (join_room until both transports,",
      'the producer and every consumer are up), every join of the run.',
      '',
      table,
    ]);
    console.log(`written to ${written}`);
  }
  if (args.json) {
    const m2e = (c: ClickResult) => ({ mouth_to_ear_p50_ms: p50(c.m2e), mouth_to_ear_p95_ms: p95(c.m2e), missed: c.missed });
    console.log(
      JSON.stringify({
        participants_per_room: ROOM_SIZE,
        join_ms_p50: p50(joinMs),
        join_ms_p95: p95(joinMs),
        joins: joinMs.length,
        direct: m2e(direct!),
        pair: m2e(pair!),
        sfu: m2e(base.clicks),
        cpu_percent_per_participant: Math.round(base.cpuPerParticipant * 10) / 10,
        steps: steps.map((s) => ({
          rooms: s.rooms,
          participants: s.participants,
          ...m2e(s.clicks),
          cpu_percent_per_participant: Math.round(s.cpuPerParticipant * 10) / 10,
          load_average: Math.round(s.load * 10) / 10,
        })),
        max_participants: maxParticipants,
        bound,
      }),
    );
  }
}

main().catch((e: unknown) => {
  console.error(`bench:group failed: ${e instanceof Error ? e.stack : e}`);
  process.exit(1);
});
