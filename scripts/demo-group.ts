/**
 * `npm run demo -- --group 4 [--json]`: a group call. Starts the signaling
 * server with its SFU (one mediasoup worker), a private PulseAudio with four
 * clients' devices, a private keychain and N headless clients (3 or 4); the
 * first opens a room, the others join; each says its own sentence in turn
 * while every speaker is recorded; then a report: every ordered pair's speech
 * similarity (whole sentence with the delay followed through mid-sentence
 * steps of up to ±40 ms, docs/similarity.md; also with one delay for the
 * whole sentence, and in 500 ms pieces),
 * mouth-to-ear through the SFU, join time, and whether the SFU could read the
 * frames. With `--json` the last line is one JSON object:
 * `{"ok","participants","similarity":{"<from>_to_<to>"},"mouth_to_ear_p50_ms","join_ms_p95","sfu_saw_plaintext",…}`.
 */
import { join } from 'node:path';
import type { RoomStatus } from '../common/protocol/control';
import { estimateDelayMs } from '../main/media/analysis';
import { makeClientContacts, startClient, type RunningClient } from '../test/harness/client';
import { GROUP_NAMES, piecewiseSimilarity, recordTurn, sentenceSimilarity, trackedSimilarity } from '../test/harness/group';
import { startKeyring } from '../test/harness/keyring';
import { waitFor } from '../test/harness/process';
import { DEVICES, startPulse, type ClientName } from '../test/harness/pulse';
import { startServer } from '../test/harness/server';
import { readWav, renderSpeech } from '../test/harness/speech';

const PEOPLE: Record<ClientName, string> = { a: 'alice', b: 'bob', c: 'carol', d: 'dave' };
const SAYS: Record<ClientName, [string, string]> = {
  a: ['The quick brown fox jumps over the lazy dog near the river bank.', 'en-us'],
  b: ['She sells sea shells by the sea shore every sunny morning.', 'en-gb'],
  c: ['Please call me back when you have a moment this afternoon.', 'en-us'],
  d: ['Seven green bottles were standing on the kitchen table last night.', 'en-gb'],
};
/** The issue's bar for every ordered pair. */
const PAIR_BAR = 0.9;

/**
 * Runs the group demo with `n` participants (3 or 4); resolves with whether it passed.
 * @throws Error when a component does not start or a client cannot join.
 */
export async function groupDemo(n: number, options: { json: boolean; outDir: string; say: (line: string) => void }): Promise<boolean> {
  const { json, outDir, say } = options;
  if (n < 3 || n > 4) throw new Error(`--group takes 3 or 4 participants (the PulseAudio layout has four clients' devices), not ${n}`);
  const names = GROUP_NAMES.slice(0, n);
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    say(`Parley group demo: ${n} participants; starting PulseAudio, keychain and the server with its SFU…`);
    const pulse = await startPulse({ clients: 4 });
    cleanup.push(() => pulse.stop());
    const keyring = await startKeyring();
    cleanup.push(() => keyring.stop());
    const server = await startServer({ env: { PARLEY_SFU_WORKERS: '1' } });
    cleanup.push(() => server.stop());
    const wav = {} as Record<ClientName, string>;
    await Promise.all(names.map((x) => renderSpeech(SAYS[x][0], SAYS[x][1], (wav[x] = join(outDir, `${PEOPLE[x]}-says.wav`)))));

    say(`Starting ${names.map((x) => PEOPLE[x]).join(', ')} (headless clients)…`);
    const clients = {} as Record<ClientName, RunningClient>;
    for (const x of names) {
      clients[x] = await startClient({ name: PEOPLE[x], server, env: { ...pulse.clientEnv(x), ...keyring.env }, input: DEVICES[x].mic, output: DEVICES[x].speaker });
      cleanup.push(() => clients[x].stop());
    }

    const first = names[0]!;
    // The group rings: the first makes the others contacts and rings them into a new room.
    for (const x of names.slice(1)) await makeClientContacts(clients[first], clients[x]);
    const created = await clients[first].request<RoomStatus>('create_room', { invite: names.slice(1).map((x) => clients[x].name) });
    const roomId = created.roomId;
    const joinMs = [created.joinMs ?? 0];
    say(`${PEOPLE[first]} opened room ${roomId} (joined in ${created.joinMs} ms) and rang the others; they answer…`);
    for (const x of names.slice(1)) {
      await clients[x].waitForNotification<{ roomId: string }>('room.ringing', (r) => r.roomId === roomId);
      const s = await clients[x].request<RoomStatus>('join_room', { roomId });
      joinMs.push(s.joinMs ?? 0);
      say(`  ${PEOPLE[x]} joined in ${s.joinMs} ms`);
    }
    for (const x of names) {
      await waitFor(
        `${PEOPLE[x]} to hear everyone`,
        async () => {
          const s = await clients[x].request<RoomStatus>('list_participants');
          return s.participants.filter((p) => !p.self && p.audio?.playing).length === n - 1;
        },
        15_000,
        100,
      );
    }

    const similarity: Record<string, number> = {};
    const singleDelay: Record<string, number> = {};
    const steps: Record<string, number[]> = {};
    const pieces: Record<string, number> = {};
    const mouthToEar: number[] = [];
    for (const x of names) {
      say(`${PEOPLE[x]} speaks…`);
      const turn = await recordTurn(pulse, x, wav[x], outDir, `turn-${x}`);
      const sent = readWav(wav[x]).samples;
      for (const y of names) {
        if (y === x) continue;
        const tracked = trackedSimilarity(sent, turn.speaker[y]);
        similarity[`${x}_to_${y}`] = round3(tracked.score);
        steps[`${x}_to_${y}`] = tracked.tracked?.offsetsMs ?? [];
        singleDelay[`${x}_to_${y}`] = round3(sentenceSimilarity(sent, turn.speaker[y]).score);
        pieces[`${x}_to_${y}`] = round3(piecewiseSimilarity(sent, turn.speaker[y]));
        // Mouth-to-ear needs the mic and the far speaker on one clock: the pairs recorded in the same probe.
        if (turn.probe[x] === turn.probe[y]) mouthToEar.push(estimateDelayMs(turn.mic[x], turn.speaker[y], 1500).lagMs);
      }
    }
    const statuses = await Promise.all(names.map((x) => clients[x].request<RoomStatus>('list_participants')));
    for (const x of names) await clients[x].request('leave_room').catch(() => {});

    const m2e = mouthToEar.length > 0 ? Math.round(percentile(mouthToEar, 0.5)) : null;
    const joinP95 = Math.round(percentile(joinMs, 0.95));
    // Every participant encrypted its frames with SFrame and excluded nobody of the room from its keys:
    // the SFU forwarded only ciphertext (test/integration/group-call.test.ts checks it from an
    // eavesdropping participant's side).
    const sfuSawPlaintext = !statuses.every((st) => st.e2ee?.sframe === true && st.e2ee.excluded.length === 0);
    const allPairs = Object.values(similarity).every((s) => s >= PAIR_BAR);
    const ok = allPairs && !sfuSawPlaintext;

    say('');
    say(`Parley group demo report (${ok ? 'OK' : 'FAILED'})`);
    say(`  participants     ${n} in room ${roomId}`);
    say(`  join             ${joinMs.join(', ')} ms (p95 ${joinP95} ms): room.join, Device.load, both transports, the producer, a consumer per participant`);
    say(`  speech           whole sentence per ordered pair, the delay followed through the jitter buffer's steps (pass ≥ ${PAIR_BAR}):`);
    for (const [pair, s] of Object.entries(similarity)) {
      const moved = steps[pair]!.some((o) => o !== 0) ? `; delay steps per 500 ms ${steps[pair]!.join('/')} ms` : '';
      say(`                   ${pair.replace('_to_', ' → ')}  ${s.toFixed(3)}   (one delay for the whole ${singleDelay[pair]!.toFixed(3)}, in 500 ms pieces ${pieces[pair]!.toFixed(3)}${moved})`);
    }
    say(`  mouth-to-ear     p50 ${m2e ?? '—'} ms through the SFU (${mouthToEar.length} pairs recorded on one clock: ${mouthToEar.map((x) => x.toFixed(0)).join(', ')} ms)`);
    for (const s of statuses) {
      const me = s.participants.find((p) => p.self)!;
      say(`  ${me.username.padEnd(16)} ${s.participants.filter((p) => !p.self).map((p) => `${p.username}: ${p.audio?.packetsReceived ?? 0} pkts, ${p.audio?.framesConcealed ?? 0} concealed`).join('; ')}`);
    }
    say(`  end-to-end       ${sfuSawPlaintext ? 'NOT everywhere: a participant sent or received readable Opus (see e2ee in each status)' : 'SFrame (RFC 9605) with per-device sender keys: the SFU saw ciphertext only'}`);
    say(`  recordings       ${outDir}`);
    if (json) {
      console.log(
        JSON.stringify({
          ok,
          participants: n,
          similarity,
          similarity_single_delay: singleDelay,
          similarity_pieces: pieces,
          mouth_to_ear_p50_ms: m2e,
          join_ms_p95: joinP95,
          sfu_saw_plaintext: sfuSawPlaintext,
          room_id: roomId,
        }),
      );
    }
    return ok;
  } finally {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  }
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
