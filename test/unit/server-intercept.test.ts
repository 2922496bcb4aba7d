import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { loadInterceptor } from '../../server/intercept';
import { REPO_ROOT } from '../harness/server';

const FIXTURE = join(REPO_ROOT, 'test/fixtures/malicious-intercept.ts');

function logger() {
  const lines: { level: number; msg: string }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string });
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

describe('the test-only interception hook', () => {
  it('is absent unless PARLEY_TEST_INTERCEPT names a module', async () => {
    expect(await loadInterceptor({}, logger().log)).toBeUndefined();
  });

  it('refuses to load under NODE_ENV=production', async () => {
    await expect(loadInterceptor({ PARLEY_TEST_INTERCEPT: FIXTURE, NODE_ENV: 'production' }, logger().log)).rejects.toThrow(/production/);
  });

  it('announces itself at fatal level and on stderr when active', async () => {
    const { log, lines } = logger();
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const hook = await loadInterceptor({ PARLEY_TEST_INTERCEPT: FIXTURE }, log);
      expect(typeof hook?.outbound).toBe('function');
      expect(stderr.mock.calls.some(([text]) => String(text).includes('TEST INTERCEPTION HOOK ACTIVE'))).toBe(true);
    } finally {
      stderr.mockRestore();
    }
    await new Promise((r) => setTimeout(r, 20));
    expect(lines.some((l) => l.level === 60 && l.msg.includes('TEST INTERCEPTION HOOK ACTIVE'))).toBe(true);
  });
});
