/**
 * The desktop app's build carries the media thread: `npm run build`
 * (electron-vite) emits out/main/media-worker.js beside the code that starts
 * it (main/media/worker/host.ts looks next to itself), and that file runs as a
 * worker: werift, libopus and the APM load in it and a loopback call's
 * transport (ICE, DTLS-SRTP, one SRTP packet each way) connects in it. Before,
 * the app's build had no worker and its calls' media ran on the main thread
 * beside every IPC call of the UI. The Electron binary itself cannot run here;
 * Electron's main process is Node, and its workers are Node workers.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { SHARE_ENV, Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newestSourceMs } from '../../scripts/build-cli';
import { run } from '../harness/process';
import { REPO_ROOT } from '../harness/server';

const OUT = join(REPO_ROOT, 'out/main');
const WORKER = join(OUT, 'media-worker.js');

/** Every .js file under out/main, with its text. */
function bundleFiles(): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.js')) files.set(p, readFileSync(p, 'utf8'));
    }
  };
  walk(OUT);
  return files;
}

/** The files a module loads at start, itself included: its static relative imports, followed. */
function importGraph(entry: string, files: Map<string, string>): Set<string> {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const m of (files.get(file) ?? '').matchAll(/(?:^|[\s;])(?:import|export)\s*(?:[^'"]*?\sfrom\s*)?["'](\.[^"']+)["']/g)) {
      visit(resolve(dirname(file), m[1]!));
    }
  };
  visit(entry);
  return seen;
}

let worker: Worker | undefined;

beforeAll(async () => {
  if (!existsSync(WORKER) || statSync(WORKER).mtimeMs < newestSourceMs(['main', 'common', 'native'], ['electron.vite.config.ts'])) {
    await run('npm', ['run', 'build'], { cwd: REPO_ROOT, timeoutMs: 240_000 });
  }
}, 300_000);

afterAll(async () => {
  await worker?.terminate();
});

describe("the desktop app's media thread (out/main)", () => {
  it('is built beside the code that starts it, and loads nothing of Electron', () => {
    expect(existsSync(WORKER)).toBe(true);
    const files = bundleFiles();
    // host.ts's workerEntry() resolves ./media-worker.js against its own file: that file must sit beside the worker.
    const hosts = [...files].filter(([, text]) => text.includes("the media thread's code (media-worker.mjs) is missing next to")).map(([f]) => f);
    expect(hosts.length).toBeGreaterThan(0);
    for (const host of hosts) expect(dirname(host)).toBe(OUT);
    const graph = importGraph(WORKER, files);
    for (const file of graph) {
      expect(files.has(file), `${file} (imported by the worker) is in the build`).toBe(true);
      expect(files.get(file)).not.toMatch(/from\s*["']electron["']|require\(["']electron["']\)/);
    }
  });

  it('runs as a worker: a loopback transport (ICE, DTLS-SRTP, one SRTP packet each way) connects inside it', async () => {
    const w = new Worker(WORKER, { name: 'parley-media', env: SHARE_ENV });
    worker = w;
    const reply = await new Promise<{ ok: boolean; result?: { ms: number }; error?: { message: string } }>((resolveReply, reject) => {
      w.on('message', (m: { kind: string; id?: number }) => {
        if (m.kind === 'reply' && m.id === 1) resolveReply(m as never);
      });
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`the worker exited (${code})`)));
      w.postMessage({ kind: 'request', id: 1, method: 'warmUp', params: { ptimeMs: 20 } });
    });
    expect(reply.error).toBeUndefined();
    expect(reply.ok).toBe(true);
    expect(reply.result!.ms).toBeGreaterThan(0);
  });
});
