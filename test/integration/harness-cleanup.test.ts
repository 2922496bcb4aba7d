/**
 * The harness's last layer of cleanup (test/harness/process.ts): a test
 * process killed outright (SIGKILL, no exit hooks) takes the daemons it
 * started with it, through the kernel's parent-death signal. PostgreSQL runs
 * under another user id when the tests run as root, and the kernel clears the
 * parent-death signal at that switch; before test/harness/postgres.ts set it
 * again after the switch, such a cluster kept running (and kept its port and
 * folder) after the test process was gone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createConnection } from 'node:net';
import { dirname, join } from 'node:path';
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../harness/server';
import { waitFor } from '../harness/process';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

/** Starts a test-like process that starts a daemon through the harness and reports it; resolves with what it printed. */
function startOwner(script: string): Promise<{ owner: ChildProcess; report: Record<string, unknown> }> {
  const owner = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith('REPORT '));
      if (line) resolve({ owner, report: JSON.parse(line.slice('REPORT '.length)) as Record<string, unknown> });
    };
    owner.stdout!.on('data', onData);
    owner.stderr!.on('data', (d: Buffer) => (out += d));
    owner.once('exit', (code) => reject(new Error(`the owner process exited (${code}) before reporting:\n${out}`)));
  });
}

const leftovers: { pid: number; dir?: string }[] = [];
afterEach(() => {
  // What a failing run leaked (the folder of a killed owner is never removed by it).
  for (const { pid, dir } of leftovers.splice(0)) {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

describe('harness cleanup when the test process is killed outright', () => {
  it('a plain daemon dies with it (the parent-death signal startChild asks for)', async () => {
    const { owner, report } = await startOwner(
      `import { startChild } from ${JSON.stringify(join(REPO_ROOT, 'test/harness/process.ts'))};\n` +
        `const c = await startChild('sleep', ['300']);\nconsole.log('REPORT ' + JSON.stringify({ pid: c.pid }));\n` +
        `setInterval(() => {}, 1000);\n`,
    );
    const pid = report.pid as number;
    leftovers.push({ pid });
    expect(alive(pid)).toBe(true);
    owner.kill('SIGKILL');
    await waitFor('the daemon to die with its owner', async () => !alive(pid), 10_000, 50);
  });

  it('a Chromium dies with it, its whole process tree (Playwright launches it on a pipe, not through startChild)', async () => {
    const { owner, report } = await startOwner(
      `import { launchChromium } from ${JSON.stringify(join(REPO_ROOT, 'test/harness/chromium.ts'))};\n` +
        `const c = await launchChromium();\nconsole.log('REPORT ' + JSON.stringify({ pids: c.pids() }));\n` +
        `setInterval(() => {}, 1000);\n`,
    );
    const pids = report.pids as number[];
    for (const pid of pids) leftovers.push({ pid });
    expect(pids.length).toBeGreaterThan(1);
    owner.kill('SIGKILL');
    await waitFor('every Chromium process to die with its owner', async () => pids.every((pid) => !alive(pid)), 15_000, 50);
  });

  it('a PostgreSQL cluster dies with it, although it runs under another user id when root starts it', async () => {
    const { owner, report } = await startOwner(
      `import { startPostgres } from ${JSON.stringify(join(REPO_ROOT, 'test/harness/postgres.ts'))};\n` +
        `const pg = await startPostgres();\n` +
        `console.log('REPORT ' + JSON.stringify({ pid: pg.pid, port: pg.port, logPath: pg.logPath }));\n` +
        `setInterval(() => {}, 1000);\n`,
    );
    const pid = report.pid as number;
    const port = report.port as number;
    leftovers.push({ pid, dir: dirname(report.logPath as string) });
    expect(await accepts(port)).toBe(true);
    owner.kill('SIGKILL');
    await waitFor('the postmaster to die with its owner', async () => !alive(pid), 15_000, 50);
    await waitFor('the cluster to stop accepting connections', async () => !(await accepts(port)), 15_000, 50);
  });
});
