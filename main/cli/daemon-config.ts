import { readFileSync } from 'node:fs';
import { parse as parseToml, TomlError } from 'smol-toml';
import { z } from 'zod';
import { ParleyError } from '../../common/errors';
import { parseDuration } from '../../common/protocol/webrtc-api';

const Duration = z.string().refine(
  (s) => {
    try {
      parseDuration(s);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'expected a duration like "30m", "2h", "1h30m" or "90s"' },
);

/**
 * `parley daemon`'s config file (`<data-dir>/config.toml`, by default
 * `~/.config/parley/config.toml`; TOML 1.0 read by smol-toml). Top-level keys
 * only; the first five are the ArmorClaw voice guide's (`[voice.general]` and
 * `[voice.ttl]` there), the rest mirror the daemon's flags. Unknown keys are
 * refused (a typo must not silently change nothing). Flags and environment
 * variables (`PARLEY_AUTO_ANSWER=1`, …) override the file.
 */
export const DaemonConfig = z
  .object({
    /** Answer every incoming call (guide: `auto_answer`). */
    auto_answer: z.boolean(),
    /**
     * Simultaneous calls (guide: `max_concurrent_calls`). Parley takes one
     * call at a time; a larger value is accepted and the limit stays 1.
     */
    max_concurrent_calls: z.number().int().min(1),
    /** How long a call may last once connected (guide: `default_lifetime`, default `30m`). */
    default_lifetime: Duration,
    /** Upper bound of any lifetime (guide: `max_lifetime`, default `2h`). */
    max_lifetime: Duration,
    /** `budget_warning` this long before a call's end (guide `[voice.ttl]`: `warn_before_expiration`, default `5m`). */
    warn_before_expiration: Duration,
    input: z.string().min(1),
    output: z.string().min(1),
    frame_ms: z.union([z.literal(10), z.literal(20)]),
    jitter_ms: z.number().int().positive(),
    media_timeout: z.number().int().positive(),
    relay: z.boolean(),
    dtx: z.boolean(),
    echo_cancellation: z.boolean(),
    noise_suppression: z.boolean(),
    gain_control: z.boolean(),
    /**
     * Where 1:1 calls' media runs: `main` (the default: the daemon's
     * JavaScript thread) or `worker` (its own real-time thread,
     * main/media/worker/; not the default yet, docs/audio.md says why).
     */
    media_thread: z.enum(['worker', 'main']),
  })
  .partial()
  .strict();
export type DaemonConfig = z.infer<typeof DaemonConfig>;

/** The line (1-based) where `key` is set in `text`, if it can be found. */
function lineOf(text: string, key: string): number | undefined {
  const re = new RegExp(`^\\s*["']?${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}["']?\\s*=`);
  const i = text.split('\n').findIndex((l) => re.test(l));
  return i >= 0 ? i + 1 : undefined;
}

/**
 * Reads and checks a daemon config file.
 * @param required when false, a missing file is an empty config.
 * @throws ParleyError `invalid_params` naming the file, the line and the key
 *   for a TOML syntax error, an unknown key or a value of the wrong type.
 */
export function loadDaemonConfig(path: string, required: boolean): DaemonConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (!required && (e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new ParleyError('invalid_params', `cannot read the config file ${path}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (e) {
    if (e instanceof TomlError) {
      const first = e.message.split('\n')[0] ?? 'invalid TOML';
      throw new ParleyError('invalid_params', `${path} line ${e.line}, column ${e.column}: ${first}`);
    }
    throw e;
  }
  const parsed = DaemonConfig.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = issue.code === 'unrecognized_keys' ? issue.keys[0]! : issue.path.map(String).join('.');
    const line = lineOf(text, key.split('.')[0]!);
    const what = issue.code === 'unrecognized_keys' ? `unknown key "${key}"` : `key "${key}": ${issue.message}`;
    throw new ParleyError('invalid_params', `${path}${line ? ` line ${line}` : ''}: ${what}`, {
      issues: [{ path: key, message: issue.message }],
    });
  }
  const c = parsed.data;
  if (c.default_lifetime && c.max_lifetime && parseDuration(c.default_lifetime) > parseDuration(c.max_lifetime)) {
    throw new ParleyError('invalid_params', `${path} line ${lineOf(text, 'default_lifetime') ?? '?'}: key "default_lifetime" is longer than max_lifetime`);
  }
  return c;
}
