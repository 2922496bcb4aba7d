/**
 * The server's front doors (issue 12, item 4), each against the real server
 * process on loopback: what an attacker who only knows the server's address
 * meets, and what the operator sees of it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runParley } from '../harness/client';
import { REPO_ROOT, runServerUntilExit, startServer } from '../harness/server';
import { DEFAULT_PASSWORD, httpJson, signIn, SignalClient } from '../harness/signal-client';

/** Resolves with `promise`, or rejects saying `what` did not happen within `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
    }),
  ]);
}

/** The value of one Prometheus counter (no labels) in the server's /metrics text. */
async function counter(baseUrl: string, name: string): Promise<number> {
  const text = (await httpJson<string>(baseUrl, 'GET', '/metrics')).body;
  const m = new RegExp(`^${name} (\\d+(?:\\.\\d+)?)$`, 'm').exec(String(text));
  return m ? Number(m[1]) : NaN;
}

describe('the test-only interception hook', () => {
  it('stops the server at start-up when PARLEY_TEST_INTERCEPT is set without the explicit test-only flag', async () => {
    const r = await runServerUntilExit({
      env: { PARLEY_TEST_INTERCEPT: join(REPO_ROOT, 'test/fixtures/malicious-intercept.ts') },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('PARLEY_TEST_INTERCEPT_ENABLE');
    expect(r.stderr).not.toContain('TEST INTERCEPTION HOOK ACTIVE');
    expect(r.stdout).not.toContain('"msg":"listening"');
  });
});

describe('the client and plain http://', () => {
  it('parley refuses a plain http:// address of another computer, saying to use https://, and signs up over http://127.0.0.1', async () => {
    const server = await startServer();
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-cli-'));
    const env = { PARLEY_DATA_DIR: dataDir };
    try {
      // .invalid never resolves (RFC 2606): without the rule this fails later, with "cannot reach".
      const refused = await runParley(['register', '--server', 'http://parley.invalid:8787', '--username', 'plain1'], env, DEFAULT_PASSWORD).then(
        () => 'registered',
        (e: Error) => e.message,
      );
      expect(refused).toContain('http://parley.invalid:8787 must use https://');
      expect(refused).not.toContain('cannot reach');
      const ws = await runParley(['register', '--server', 'ws://parley.invalid', '--username', 'plain1'], env, DEFAULT_PASSWORD).then(
        () => 'registered',
        (e: Error) => e.message,
      );
      expect(ws).toContain('must use wss://');
      // The same command to the real server on loopback works.
      expect(await runParley(['register', '--server', server.url, '--username', 'plain1'], env, DEFAULT_PASSWORD)).toContain('account plain1 created');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
      await server.stop();
    }
  });
});

describe('the hello deadline', () => {
  it('closes a socket that never completes hello (4004 "hello timeout"), counts it, and leaves signed-in sockets alone', async () => {
    const server = await startServer({ env: { PARLEY_HELLO_TIMEOUT: '1' } });
    try {
      const signedIn = await signIn(server, 'early1');
      const silent = await SignalClient.connect(server.wsUrl);
      const wrongToken = await SignalClient.connect(server.wsUrl);
      await expect(wrongToken.hello({ deviceId: signedIn.deviceId, token: 'not-the-token' })).rejects.toMatchObject({
        reason: 'unauthenticated',
      });
      for (const socket of [silent, wrongToken]) {
        const closed = await within(socket.closed, 10_000, 'the server did not close a socket without hello');
        expect(closed.code).toBe(4004);
        expect(closed.reason).toMatch(/^hello timeout/);
      }
      expect(await counter(server.url, 'parley_hello_timeouts_total')).toBe(2);
      // The device that said hello in time is still served after the deadline.
      expect((await signedIn.client.request('devices.list', {})).devices.length).toBe(1);
      signedIn.client.socket.close();
    } finally {
      await server.stop();
    }
  });
});
