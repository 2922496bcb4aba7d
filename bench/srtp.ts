/**
 * `npm run bench:srtp [-- --packets 400] [-- --no-write] [-- --json]`: what
 * sealing and opening one RTP packet with SRTP AEAD_AES_128_GCM (RFC 7714)
 * costs, through werift's SrtpSession as a call uses it, with werift's own
 * cipher (a node:crypto AES-GCM cipher made per packet) against Parley's AEAD
 * (main/media/aes-gcm.ts: one OpenSSL AES-GCM context per session key, native/aead), in the same run.
 *
 * Two regimes, each engine alternately:
 * - `cadence`: one packet every 10 ms (a call with 10 ms packets), with a 4 MiB
 *   memory sweep before each, so the caches are as cold as after the rest of
 *   the media thread's work between two packets (Opus, voice processing,
 *   playout). This is what a call pays.
 * - `back to back`: packets in a tight loop, hot caches (the best case).
 *
 * A packet: 12-byte header and 80-byte payload (Opus at ~32 kb/s, 20 ms), sealed
 * by one session and opened by the other. Prints µs per packet (seal + open),
 * median and p95, and the ratio Parley / werift.
 */
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { ProtectionProfileAeadAes128Gcm, RtpHeader, SrtpSession } from 'werift';
import { WERIFT_SRTP_AEAD_HOOK, installSrtpAead } from '../main/media/aes-gcm';
import { writeBenchSection } from './doc-section';

const { values: args } = parseArgs({
  options: {
    packets: { type: 'string', default: '400' },
    'no-write': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const PACKETS = Number(args.packets);
const SWEEP_BYTES = 4 << 20;

type Engine = 'werift' | 'parley';

function pair(engine: Engine): { send: SrtpSession; receive: SrtpSession } {
  const hooks = globalThis as Record<symbol, unknown>;
  if (engine === 'parley') installSrtpAead();
  else delete hooks[WERIFT_SRTP_AEAD_HOOK];
  const a = { key: randomBytes(16), salt: randomBytes(12) };
  const b = { key: randomBytes(16), salt: randomBytes(12) };
  const make = (local: typeof a, remote: typeof a) =>
    new SrtpSession({
      profile: ProtectionProfileAeadAes128Gcm,
      keys: { localMasterKey: local.key, localMasterSalt: local.salt, remoteMasterKey: remote.key, remoteMasterSalt: remote.salt },
    });
  const sessions = { send: make(a, b), receive: make(b, a) };
  const usesAead = (s: SrtpSession) => (s as unknown as { localContext: { cipher: { srtpAead?: unknown } } }).localContext.cipher.srtpAead !== undefined;
  if (usesAead(sessions.send) !== (engine === 'parley')) throw new Error(`the ${engine} session did not get the cipher asked for: is patches/werift+0.25.2.patch applied?`);
  return sessions;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const payload = randomBytes(80);
let seq = 0;
function onePacket(s: { send: SrtpSession; receive: SrtpSession }): void {
  seq = (seq + 1) & 0xffff;
  const header = new RtpHeader({ payloadType: 111, sequenceNumber: seq, timestamp: seq * 960, ssrc: 0x5eed, marker: false });
  const opened = s.receive.decrypt(s.send.encrypt(payload, header));
  if (opened.length !== 12 + payload.length) throw new Error('SRTP round trip lost bytes');
}

const sweep = new Float64Array(SWEEP_BYTES / 8);
async function cadence(engines: Record<Engine, ReturnType<typeof pair>>): Promise<Record<Engine, number[]>> {
  const out: Record<Engine, number[]> = { werift: [], parley: [] };
  for (let i = 0; i < PACKETS; i++) {
    for (const engine of ['werift', 'parley'] as const) {
      for (let k = 0; k < sweep.length; k += 8) sweep[k]! += 1;
      const t = process.hrtime.bigint();
      onePacket(engines[engine]);
      out[engine].push(Number(process.hrtime.bigint() - t) / 1000);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return out;
}

function backToBack(engines: Record<Engine, ReturnType<typeof pair>>): Record<Engine, number[]> {
  const out: Record<Engine, number[]> = { werift: [], parley: [] };
  for (let round = 0; round < 20; round++) {
    for (const engine of ['werift', 'parley'] as const) {
      const t = process.hrtime.bigint();
      for (let i = 0; i < 500; i++) onePacket(engines[engine]);
      out[engine].push(Number(process.hrtime.bigint() - t) / 1000 / 500);
    }
  }
  return out;
}

async function main(): Promise<void> {
  const engines = { werift: pair('werift'), parley: pair('parley') };
  for (let i = 0; i < 5000; i++) for (const e of Object.values(engines)) onePacket(e); // JIT warm, as after a call's first seconds
  const results = { cadence: await cadence(engines), back_to_back: backToBack(engines) };
  const r2 = (x: number) => Math.round(x * 100) / 100;
  const summary = Object.fromEntries(
    Object.entries(results).map(([regime, byEngine]) => {
      const s = Object.fromEntries(
        (Object.entries(byEngine) as [Engine, number[]][]).map(([e, v]) => {
          const sorted = [...v].sort((a, b) => a - b);
          return [e, { p50_us: r2(percentile(sorted, 50)), p95_us: r2(percentile(sorted, 95)) }];
        }),
      ) as Record<Engine, { p50_us: number; p95_us: number }>;
      return [regime, { ...s, ratio_p50: r2(s.parley.p50_us / s.werift.p50_us), ratio_p95: r2(s.parley.p95_us / s.werift.p95_us) }];
    }),
  );
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  const rows = Object.entries(summary).map(
    ([regime, s]) =>
      `| ${regime.replace(/_/g, ' ')} | ${s.werift.p50_us} / ${s.werift.p95_us} | ${s.parley.p50_us} / ${s.parley.p95_us} | **${s.ratio_p50}** / ${s.ratio_p95} |`,
  );
  const table = [
    '| regime | werift\'s per-packet cipher, µs p50 / p95 | Parley\'s AEAD, µs p50 / p95 | ratio p50 / p95 |',
    '|---|---|---|---|',
    ...rows,
  ].join('\n');
  const say = args.json ? process.stderr : process.stdout;
  say.write(`\nSRTP seal + open per packet — ${machine}\n\n${table}\n\n`);
  if (!args['no-write']) {
    const written = writeBenchSection('srtp', [
      '## SRTP: sealing and opening a packet (`npm run bench:srtp`)',
      '',
      `Command: \`npm run bench:srtp\` (${PACKETS} packets per engine at cadence). Machine: ${machine}.`,
      '',
      'One RTP packet (12-byte header, 80-byte payload) sealed by one werift SrtpSession and opened by another, profile',
      'AEAD_AES_128_GCM (RFC 7714), as a call does it. werift\'s own cipher makes a node:crypto AES-GCM cipher per packet;',
      'Parley\'s (main/media/aes-gcm.ts, native/aead) keeps one OpenSSL AES-GCM context per session key and only sets the IV per packet. `cadence`:',
      'one packet every 10 ms with a 4 MiB memory sweep before it (caches as cold as between two packets of a call);',
      '`back to back`: a tight loop. Both engines alternate in the same run.',
      '',
      table,
    ]);
    say.write(`written to ${written}\n`);
  }
  if (args.json) console.log(JSON.stringify(summary));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
