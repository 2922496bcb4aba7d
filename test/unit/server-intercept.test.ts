import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { INTERCEPT_ENABLE_VALUE, loadInterceptor } from '../../server/intercept';
import { REPO_ROOT } from '../harness/server';

const FIXTURE = join(REPO_ROOT, 'test/fixtures/malicious-intercept.ts');
/** The explicit test-only flag the hook needs beside the module path. */
const ENABLE = { PARLEY_TEST_INTERCEPT_ENABLE: INTERCEPT_ENABLE_VALUE };

/** A hook module that leaves a file behind when it is imported at all. */
function tripwireModule(): { path: string; imported: () => boolean; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'parley-intercept-'));
  const mark = join(dir, 'imported');
  const path = join(dir, 'hook.mjs');
  writeFileSync(
    path,
    `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(mark)}, 'x');\nexport const interceptor = { outbound: (m) => [m] };\n`,
  );
  return { path, imported: () => existsSync(mark), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

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

  it('refuses to load under NODE_ENV=production, even with the test-only flag', async () => {
    await expect(loadInterceptor({ PARLEY_TEST_INTERCEPT: FIXTURE, NODE_ENV: 'production', ...ENABLE }, logger().log)).rejects.toThrow(/production/);
  });

  it.each([
    ['no flag', {}],
    ['an empty flag', { PARLEY_TEST_INTERCEPT_ENABLE: '' }],
    ['"1"', { PARLEY_TEST_INTERCEPT_ENABLE: '1' }],
    ['"true"', { PARLEY_TEST_INTERCEPT_ENABLE: 'true' }],
    ['the sentence in other case', { PARLEY_TEST_INTERCEPT_ENABLE: INTERCEPT_ENABLE_VALUE.toUpperCase() }],
  ])('refuses to load with %s, naming the flag, and never imports the module', async (_what, flag) => {
    const hook = tripwireModule();
    try {
      await expect(loadInterceptor({ PARLEY_TEST_INTERCEPT: hook.path, ...flag }, logger().log)).rejects.toThrow(
        /PARLEY_TEST_INTERCEPT_ENABLE/,
      );
      expect(hook.imported()).toBe(false);
    } finally {
      hook.remove();
    }
  });

  it('loads with the exact test-only flag', async () => {
    const hook = tripwireModule();
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(typeof (await loadInterceptor({ PARLEY_TEST_INTERCEPT: hook.path, ...ENABLE }, logger().log))?.outbound).toBe('function');
      expect(hook.imported()).toBe(true);
    } finally {
      stderr.mockRestore();
      hook.remove();
    }
  });

  it('announces itself at fatal level and on stderr when active', async () => {
    const { log, lines } = logger();
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const hook = await loadInterceptor({ PARLEY_TEST_INTERCEPT: FIXTURE, ...ENABLE }, log);
      expect(typeof hook?.outbound).toBe('function');
      expect(stderr.mock.calls.some(([text]) => String(text).includes('TEST INTERCEPTION HOOK ACTIVE'))).toBe(true);
    } finally {
      stderr.mockRestore();
    }
    await new Promise((r) => setTimeout(r, 20));
    expect(lines.some((l) => l.level === 60 && l.msg.includes('TEST INTERCEPTION HOOK ACTIVE'))).toBe(true);
  });
});
