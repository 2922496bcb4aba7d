/**
 * A private Secret Service for tests: a D-Bus session bus plus an unlocked
 * gnome-keyring-daemon (secrets component only), in a temporary HOME.
 *
 * Facts found on this machine (dbus 1.14, gnome-keyring 42+, as root):
 * - `dbus-daemon --config-file=<ours> --nofork --print-address=1` gives a bus
 *   we own by pid (no `dbus-run-session` wrapper needed). Our config has no
 *   service directories, so nothing is bus-activated behind our back: without
 *   the keyring, a client gets "The name org.freedesktop.secrets was not
 *   provided by any .service files" at once (with the system's session config
 *   the bus would activate a second, empty gnome-keyring instead).
 * - `gnome-keyring-daemon --foreground --unlock --components=secrets` reads
 *   the password from stdin, creates and unlocks the `login` collection, and
 *   stays our child (unlike `--daemonize`, whose orphan we could not reap).
 * - GDBus falls back to `$XDG_RUNTIME_DIR/bus` when `DBUS_SESSION_BUS_ADDRESS`
 *   is unset; our socket lives exactly there, like a systemd user bus.
 * - libsecret (inside keytar) reads `DBUS_SESSION_BUS_ADDRESS` once, when a
 *   process first talks to the Secret Service, and keeps that connection: set
 *   `process.env` from {@link Keyring.env} before the first keychain call in
 *   a process, or give the env to a child process.
 */
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { makeTempDir, removeTempDir, run, startChild, waitFor, type Child } from './process';

/** A running private Secret Service, see {@link startKeyring}. */
export interface Keyring {
  /** Temporary folder (HOME, runtime dir, bus socket, `dbus.log`). */
  readonly dir: string;
  /**
   * What a process needs to use this Secret Service through keytar:
   * `DBUS_SESSION_BUS_ADDRESS`, `HOME`, `XDG_RUNTIME_DIR`, `XDG_DATA_HOME`,
   * `XDG_CONFIG_HOME`, `XDG_CACHE_HOME`. Merge into a child's env, or into
   * `process.env` before the process's first keychain call.
   */
  readonly env: Record<string, string>;
  /** Stops the keyring and the bus and removes the folder. Idempotent. */
  stop(): Promise<void>;
}

function busConfig(socket: string): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`;
}

/**
 * Starts a session bus and an unlocked gnome-keyring-daemon (random password)
 * in a temporary folder. Resolves once `org.freedesktop.secrets` answers with
 * its `login` collection (≈ 0.3 s).
 * @param options.secretService false: start only the bus, with no Secret
 *   Service on it (to test the "no keychain" path). Default true.
 * @throws Error (with the daemons' logs) when they do not come up within 10 s.
 */
export async function startKeyring(options: { secretService?: boolean } = {}): Promise<Keyring> {
  const dir = makeTempDir('keyring');
  const home = join(dir, 'home');
  const runtime = join(dir, 'run');
  await run('mkdir', ['-p', '-m', '700', home, runtime]);
  const socket = join(runtime, 'bus');
  const configPath = join(dir, 'bus.conf');
  writeFileSync(configPath, busConfig(socket));
  const address = `unix:path=${socket}`;
  const env: Record<string, string> = {
    DBUS_SESSION_BUS_ADDRESS: address,
    HOME: home,
    XDG_RUNTIME_DIR: runtime,
    XDG_DATA_HOME: join(home, '.local', 'share'),
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_CACHE_HOME: join(home, '.cache'),
  };
  const childEnv = { ...process.env, ...env };
  delete childEnv.DISPLAY;

  const children: Child[] = [];
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const child of children.reverse()) await child.stop('SIGTERM', 2000);
    removeTempDir(dir);
  };

  try {
    children.push(
      await startChild('dbus-daemon', [`--config-file=${configPath}`, '--nofork', '--nopidfile'], {
        env: childEnv,
        logFile: join(dir, 'dbus.log'),
      }),
    );
    const nameHasOwner = async (name: string) =>
      (
        await run(
          'dbus-send',
          [
            '--session',
            '--dest=org.freedesktop.DBus',
            '--print-reply',
            '/org/freedesktop/DBus',
            'org.freedesktop.DBus.NameHasOwner',
            `string:${name}`,
          ],
          { env: childEnv, timeoutMs: 2000 },
        )
      ).includes('boolean true');
    await waitFor('the session bus', () => nameHasOwner('org.freedesktop.DBus'), 5000, 20);
    if (options.secretService === false) return { dir, env, stop };

    const keyringProcess = await startChild(
      'gnome-keyring-daemon',
      ['--foreground', '--unlock', '--components=secrets'],
      { env: childEnv, stdio: ['pipe', 'ignore', 'ignore'] },
    );
    children.push(keyringProcess);
    keyringProcess.process.stdin?.end(randomBytes(12).toString('hex'));
    await waitFor(
      'gnome-keyring to own org.freedesktop.secrets with a login collection',
      async () => {
        if (keyringProcess.hasExited()) throw new Error('gnome-keyring-daemon exited');
        if (!(await nameHasOwner('org.freedesktop.secrets'))) return false;
        const collections = await run(
          'dbus-send',
          [
            '--session',
            '--dest=org.freedesktop.secrets',
            '--print-reply',
            '/org/freedesktop/secrets',
            'org.freedesktop.DBus.Properties.Get',
            'string:org.freedesktop.Secret.Service',
            'string:Collections',
          ],
          { env: childEnv, timeoutMs: 2000 },
        );
        return collections.includes('/org/freedesktop/secrets/collection/login');
      },
      10_000,
      30,
    );
  } catch (err) {
    let logs = '';
    try {
      logs = await run('cat', [join(dir, 'dbus.log')]);
    } catch {
      // no log
    }
    await stop();
    throw new Error(`keyring did not start: ${(err as Error).message}\n${logs.trim()}`, {
      cause: err,
    });
  }

  return { dir, env, stop };
}
