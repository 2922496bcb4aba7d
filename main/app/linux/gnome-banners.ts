/**
 * GNOME's do-not-disturb: the GSettings key
 * `org.gnome.desktop.notifications show-banners` (false = do not disturb),
 * which GNOME Shell's notification server does not expose as the spec's
 * `Inhibited` property. Read and followed through GLib's `gsettings` tool
 * (package libglib2.0-bin), so that the value comes from whatever backend
 * the session uses (dconf) exactly as GNOME Shell reads it.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';

const SCHEMA = 'org.gnome.desktop.notifications';
const KEY = 'show-banners';

/** Whether this session is GNOME (`XDG_CURRENT_DESKTOP` lists GNOME, as `GNOME` or `ubuntu:GNOME`). */
export function isGnomeSession(env: NodeJS.ProcessEnv = process.env): boolean {
  return (env['XDG_CURRENT_DESKTOP'] ?? '').split(':').some((d) => d.toUpperCase() === 'GNOME');
}

/**
 * GNOME's do-not-disturb now: `true` when `show-banners` is false;
 * `undefined` when the key cannot be read (no gsettings, no schema).
 */
export function gnomeDoNotDisturb(
  env: NodeJS.ProcessEnv = process.env,
): Promise<boolean | undefined> {
  return new Promise((resolve) => {
    execFile('gsettings', ['get', SCHEMA, KEY], { env, timeout: 5000 }, (err, stdout) => {
      const v = String(stdout).trim();
      resolve(err ? undefined : v === 'false' ? true : v === 'true' ? false : undefined);
    });
  });
}

/**
 * Follows `show-banners` (`gsettings monitor`) and calls `onChange(dnd)` on
 * each change. @returns a function that stops following.
 */
export function watchGnomeDoNotDisturb(
  onChange: (dnd: boolean) => void,
  env: NodeJS.ProcessEnv = process.env,
): () => void {
  let child: ChildProcess | undefined;
  try {
    child = spawn('gsettings', ['monitor', SCHEMA, KEY], {
      env,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  } catch {
    return () => {};
  }
  child.on('error', () => {});
  let buffered = '';
  child.stdout?.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      const m = /^show-banners:\s*(true|false)$/.exec(line);
      if (m) onChange(m[1] === 'false');
    }
  });
  return () => child?.kill();
}
