/**
 * The server's front doors (issue 12, item 4), each against the real server
 * process on loopback: what an attacker who only knows the server's address
 * meets, and what the operator sees of it.
 */
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, runServerUntilExit } from '../harness/server';
import { join } from 'node:path';

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
