import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ParleyError } from '../../common/errors';
import { loadDaemonConfig } from '../../main/cli/daemon-config';
import { makeTempDir, removeTempDir } from '../harness/process';

const dir = makeTempDir('daemon-config');
afterAll(() => removeTempDir(dir));
function file(text: string): string {
  const p = join(dir, `c${Math.random().toString(36).slice(2)}.toml`);
  writeFileSync(p, text);
  return p;
}
function refusal(text: string): string {
  try {
    loadDaemonConfig(file(text), true);
  } catch (e) {
    expect(e).toBeInstanceOf(ParleyError);
    return (e as ParleyError).message;
  }
  throw new Error('accepted');
}

describe('daemon config file', () => {
  it("reads the guide's keys and the daemon's own", () => {
    expect(
      loadDaemonConfig(
        file('# voice\nauto_answer = true\nmax_concurrent_calls = 5\ndefault_lifetime = "30m"\nmax_lifetime = "2h"\nwarn_before_expiration = "5m"\nframe_ms = 10\n'),
        true,
      ),
    ).toEqual({ auto_answer: true, max_concurrent_calls: 5, default_lifetime: '30m', max_lifetime: '2h', warn_before_expiration: '5m', frame_ms: 10 });
  });

  it('reads where the media runs (media_thread)', () => {
    expect(loadDaemonConfig(file('media_thread = "main"\n'), true)).toEqual({ media_thread: 'main' });
  });

  it('is empty when the default file does not exist, and an error when a named one does not', () => {
    expect(loadDaemonConfig(join(dir, 'none.toml'), false)).toEqual({});
    expect(() => loadDaemonConfig(join(dir, 'none.toml'), true)).toThrow(/cannot read/);
  });

  const table: [string, string, RegExp][] = [
    ['a TOML syntax error', 'auto_answer = true\nmax_lifetime = "2h\n', /line 2, column \d+/],
    ['an unknown key', 'auto_answer = true\n\nauto_answer_x = 1\n', /line 3: unknown key "auto_answer_x"/],
    ['a wrong type', 'max_concurrent_calls = "five"\n', /line 1: key "max_concurrent_calls"/],
    ['a bad duration', 'frame_ms = 20\ndefault_lifetime = "half an hour"\n', /line 2: key "default_lifetime": expected a duration/],
    ['a media thread that is neither worker nor main', 'media_thread = "gpu"\n', /line 1: key "media_thread"/],
    ['a lifetime above the maximum', 'default_lifetime = "3h"\nmax_lifetime = "2h"\n', /line 1: key "default_lifetime" is longer than max_lifetime/],
  ];
  for (const [what, text, message] of table) {
    it(`refuses ${what}, naming the line and the key`, () => {
      expect(refusal(text)).toMatch(message);
    });
  }
});
