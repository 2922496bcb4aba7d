/**
 * Where one thread's CPU goes by component, from `perf record -g` samples of
 * that thread (Linux perf, with V8's `--perf-basic-prof` map for the
 * JavaScript frames): `npm run bench:profile -- --perf`. Unlike V8's own
 * profiler this sees native code (libopus, the APM, the kernel) and costs the
 * profiled thread nothing, so its shares hold for an unprofiled call.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { statTicks } from './lib';

/** One sample's stack, leaf first: `symbol` and the object it came from (`dso`). */
export type Stack = { symbol: string; dso: string }[];

/**
 * Parses `perf script` output (stacks separated by blank lines; a header
 * line, then one `  <address> <symbol> (<dso>)` line per frame).
 */
export function parsePerfScript(text: string): Stack[] {
  const stacks: Stack[] = [];
  let cur: Stack | undefined;
  for (const line of text.split('\n')) {
    if (!line.trim()) {
      if (cur?.length) stacks.push(cur);
      cur = undefined;
      continue;
    }
    if (!/^\s/.test(line)) {
      if (cur?.length) stacks.push(cur);
      cur = [];
      continue;
    }
    const m = /^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)$/.exec(line);
    if (m && cur) cur.push({ symbol: m[1]!.replace(/\+0x[0-9a-f]+$/, ''), dso: m[2]! });
  }
  if (cur?.length) stacks.push(cur);
  return stacks;
}

/** The media thread's components, tried in order: the first whose test a stack passes takes the sample. */
export const MEDIA_COMPONENTS: { name: string; test: (s: Stack) => boolean }[] = [
  { name: 'Opus encode (libopus)', test: (s) => s.some((f) => f.symbol.startsWith('opus_encode')) },
  // The decoder is native/opus over the system libopus, built without frame pointers: its stacks often end in it.
  { name: 'Opus decode (libopus)', test: (s) => s.some((f) => f.symbol.startsWith('opus_decode') || f.dso.includes('libopus.so')) },
  { name: 'voice processing (WebRTC APM)', test: (s) => s.some((f) => f.symbol.startsWith('webrtc::') || f.dso.includes('webrtc_audio_processing')) },
  { name: 'RTP send: werift RTP, RED, SRTP, UDP', test: (s) => s.some((f) => f.symbol.includes('writeRtp')) },
  { name: 'RTP receive: UDP, werift ICE/DTLS/SRTP/RTP routing, the jitter buffer', test: (s) => s.some((f) => f.symbol.includes('datagramReceived') || f.symbol.includes('UDPWrap::OnRecv')) },
  { name: 'timers (levels, state report, liveness, werift RTCP)', test: (s) => s.some((f) => f.symbol.includes('RunTimers') || f.symbol.includes('listOnTimeout')) },
  { name: 'microtasks and next-tick callbacks', test: (s) => s.some((f) => f.symbol.includes('processTicksAndRejections')) },
  { name: 'messages from the main thread', test: (s) => s.some((f) => f.symbol.includes('MessagePort')) },
  { name: 'capture and playout stages (device events: capture chain, playout, mixer, meters)', test: (s) => s.some((f) => f.symbol.includes('ThreadSafeFunction')) },
  { name: 'event loop (epoll, libuv)', test: (s) => s.some((f) => f.symbol.includes('uv__io_poll') || f.symbol.includes('epoll')) },
];

/** What kind of code a stack's leaf is. */
export function codeKind(leaf: { symbol: string; dso: string }): string {
  if (leaf.dso.includes('kernel')) return 'kernel';
  if (leaf.symbol.startsWith('JS:')) return 'JavaScript, compiled (JIT)';
  if (leaf.symbol.startsWith('Builtins_')) return 'V8 builtins (inline caches, calls, allocation)';
  if (leaf.symbol.startsWith('v8::') || leaf.symbol.startsWith('Heap') || /Scavenge|MarkCompact/.test(leaf.symbol)) return 'V8 runtime and GC';
  if (/opus|silk_|celt_|tonality|ec_/.test(leaf.symbol) || leaf.dso.includes('opus')) return 'libopus';
  if (leaf.symbol.startsWith('webrtc::') || leaf.dso.includes('webrtc')) return 'WebRTC APM';
  if (leaf.dso.includes('libc.so') || leaf.dso.includes('libm.so')) return 'libc, libm';
  if (leaf.symbol.startsWith('uv_') || leaf.symbol.startsWith('uv__') || leaf.symbol.startsWith('node::')) return 'Node and libuv';
  return 'other';
}

/** Shares (0–1) of the samples per key, largest first. */
export function shares(stacks: Stack[], key: (s: Stack) => string): [string, number][] {
  const counts = new Map<string, number>();
  for (const s of stacks) counts.set(key(s), (counts.get(key(s)) ?? 0) + 1);
  return [...counts].map(([k, v]): [string, number] => [k, v / Math.max(1, stacks.length)]).sort((a, b) => b[1] - a[1]);
}

/** The kernel id of the thread named `comm` in process `pid`. @throws when there is none. */
export function threadId(pid: number, comm: string): number {
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === comm) return Number(tid);
    } catch {
      // the thread ended
    }
  }
  throw new Error(`process ${pid} has no thread named ${comm}`);
}

/** utime + stime of one thread, clock ticks (1/100 s). */
export function threadTicks(pid: number, tid: number): number {
  return statTicks(`/proc/${pid}/task/${tid}/stat`);
}

/**
 * Samples thread `tid` with `perf record -F 999 -g` while `during` runs, and
 * returns its stacks.
 * @throws when perf is missing or may not sample (kernel.perf_event_paranoid; run as root).
 */
export async function perfSamples(tid: number, file: string, during: () => Promise<void>): Promise<Stack[]> {
  const probe = spawnSync('perf', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) throw new Error('`perf` is not installed (apt-get install linux-perf)');
  const rec = spawn('perf', ['record', '-F', '999', '-g', '-t', String(tid), '-o', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  rec.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => rec.on('exit', (code) => r(code)));
  await new Promise((r) => setTimeout(r, 300));
  try {
    await during();
  } finally {
    rec.kill('SIGINT');
  }
  const code = await exited;
  if (code !== 0 && code !== null) throw new Error(`perf record failed (${code}): ${err.trim().split('\n').slice(-2).join(' ')}`);
  const script = spawnSync('perf', ['script', '-i', file], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (script.status !== 0) throw new Error(`perf script failed: ${script.stderr.trim().split('\n').slice(-1)[0]}`);
  return parsePerfScript(script.stdout);
}
