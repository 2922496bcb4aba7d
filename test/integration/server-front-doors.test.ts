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
import { DEFAULT_PASSWORD } from '../harness/signal-client';

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
