import { pino, type Logger, type LevelWithSilent } from 'pino';

/**
 * Paths pino replaces with "[redacted]" wherever they appear in a log object.
 * Secrets (passwords, device tokens, TURN secrets and credentials) and
 * envelopes (SDP and ICE candidates; opaque and possibly sealed) never reach a
 * log line. Code also never logs them on purpose; this is the second fence.
 */
export const REDACT_PATHS = [
  'password',
  'token',
  'credential',
  'secret',
  'envelope',
  '*.password',
  '*.token',
  '*.credential',
  '*.secret',
  '*.envelope',
  '*.*.password',
  '*.*.token',
  '*.*.credential',
  '*.*.secret',
  '*.*.envelope',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'config.turn.secret',
  'store.url',
  'config.store.url',
  'redisUrl',
  '*.redisUrl',
  'config.cluster.redisUrl',
];

/**
 * The server's logger: JSON lines on stdout (pino), with `REDACT_PATHS`
 * redacted.
 * @param level minimum level; `silent` logs nothing.
 * @param destination where lines go (default stdout; tests may pass a stream).
 */
export function createLogger(level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  const options = {
    level,
    base: { name: 'parley-server' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}
