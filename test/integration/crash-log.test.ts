/**
 * native/crash-log.ts: a crash in native code leaves its backtrace in the file
 * the daemon names (its data folder), whichever of it and naudiodon loads
 * first, and never a `crash.log` in the folder Parley was started from (what
 * naudiodon's own `registerHandler("crash.log")` did). Each case is a child
 * process that loads naudiodon for real on its main thread (PortAudio over the
 * harness's PulseAudio) and then receives SIGSEGV.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startClient } from '../harness/client';
import { startKeyring } from '../harness/keyring';
import { makeTempDir, removeTempDir, waitFor } from '../harness/process';
import { startPulse, type Pulse } from '../harness/pulse';
import { REPO_ROOT, startServer } from '../harness/server';

let pulse: Pulse;
let dir: string;

beforeAll(async () => {
  pulse = await startPulse();
  dir = makeTempDir('crash-log');
});
afterAll(async () => {
  await pulse?.stop();
  if (dir) removeTempDir(dir);
});

/** Runs `code` (with `crash` = native/crash-log, `dev` = native/audio-device) in a child whose cwd is `cwd`, then SIGSEGVs it. */
function crashingChild(code: string, cwd: string): Promise<{ signal: NodeJS.Signals | null; out: string }> {
  const file = join(dir, `snippet-${Math.random().toString(36).slice(2)}.mts`);
  writeFileSync(
    file,
    `import * as crash from ${JSON.stringify(join(REPO_ROOT, 'native/crash-log.ts'))};\n` +
      `import * as dev from ${JSON.stringify(join(REPO_ROOT, 'native/audio-device/index.ts'))};\n` +
      // A SIGSEGV sent with kill(2) returns from the handler (a real fault would fault again), and the handler
      // resets the default action (SA_RESETHAND): the second one ends the process as the crash would.
      `${code}\nprocess.kill(process.pid, 'SIGSEGV');\nprocess.kill(process.pid, 'SIGSEGV');\nawait new Promise((r) => setTimeout(r, 5000));\n`,
  );
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', pathToFileURL(join(REPO_ROOT, 'node_modules/tsx/dist/loader.mjs')).href, file], {
      cwd,
      env: { ...process.env, ...pulse.env },
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('exit', (_code, signal) => resolve({ signal, out }));
  });
}

describe('native crash log', () => {
  it.each([
    ['installed before naudiodon loads', `console.log(JSON.stringify(crash.installCrashLog(LOG))); dev.listAudioDevices();`],
    ['installed after naudiodon loaded', `dev.listAudioDevices(); console.log(JSON.stringify(crash.installCrashLog(LOG)));`],
  ])('writes the backtrace to the file it was given, and nothing into the working folder (%s)', async (_name, code) => {
    const cwd = join(dir, `cwd-${Math.random().toString(36).slice(2)}`);
    const data = join(dir, `data-${Math.random().toString(36).slice(2)}`);
    mkdirSync(cwd);
    mkdirSync(data);
    const log = join(data, 'crash.log');
    const r = await crashingChild(`const LOG = ${JSON.stringify(log)};\n${code}`, cwd);
    expect(r.out).toContain(JSON.stringify({ path: log }));
    expect(r.signal).toBe('SIGSEGV');
    expect(existsSync(log)).toBe(true);
    const text = readFileSync(log, 'utf8');
    expect(text).toMatch(/^PID \d+ received SIGSEGV for address: 0x[0-9a-f]+\n/);
    // The backtrace follows (glibc backtrace_symbols_fd: one line per frame).
    expect(text.split('\n').length).toBeGreaterThan(3);
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('refuses a path the handler would cut short, and a second, different path', async () => {
    const cwd = join(dir, 'cwd-refuse');
    mkdirSync(cwd);
    const r = await crashingChild(
      `console.log('R1 ' + JSON.stringify(crash.installCrashLog('/tmp/' + 'x'.repeat(130))));
       console.log('R2 ' + JSON.stringify(crash.installCrashLog(${JSON.stringify(join(dir, 'first.log'))})));
       console.log('R3 ' + JSON.stringify(crash.installCrashLog(${JSON.stringify(join(dir, 'second.log'))})));`,
      cwd,
    );
    expect(r.out).toContain('R1 {"reason":"path too long (over 127 bytes)"}');
    expect(r.out).toContain(`R2 ${JSON.stringify({ path: join(dir, 'first.log') })}`);
    expect(r.out).toMatch(/R3 \{"reason":"already installed \(.*first\.log\)"\}/);
    expect(existsSync(join(dir, 'first.log'))).toBe(true);
    expect(existsSync(join(dir, 'second.log'))).toBe(false);
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('is where the daemon puts it: <data dir>/crash.log', async () => {
    const keyring = await startKeyring();
    const server = await startServer();
    const client = await startClient({ name: 'crashy', server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' });
    try {
      const log = join(client.dataDir, 'crash.log');
      expect(existsSync(log)).toBe(false);
      client.kill('SIGSEGV');
      client.kill('SIGSEGV');
      const text = await waitFor('the crash log', async () => (existsSync(log) ? readFileSync(log, 'utf8') || undefined : undefined), 5_000);
      expect(text).toMatch(/^PID \d+ received SIGSEGV/);
    } finally {
      await client.stop().catch(() => {});
      await server.stop();
      await keyring.stop();
    }
  });
});
