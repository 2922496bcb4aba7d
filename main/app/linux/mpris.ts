/**
 * The desktop's media players over MPRIS (Media Player Remote Interfacing
 * Specification 2.2: every player owns a bus name `org.mpris.MediaPlayer2.*`
 * and serves `org.mpris.MediaPlayer2.Player` at `/org/mpris/MediaPlayer2`).
 * Parley pauses the ones that are playing when a call connects and resumes
 * exactly those when the last call ends — never a player the user paused or
 * started meanwhile.
 *
 * Pure JavaScript (@particle/dbus-next), no Electron.
 */
import dbus from '@particle/dbus-next';

const PREFIX = 'org.mpris.MediaPlayer2.';
const PATH = '/org/mpris/MediaPlayer2';
const PLAYER = 'org.mpris.MediaPlayer2.Player';
const PROPERTIES = 'org.freedesktop.DBus.Properties';

/** A player's state (MPRIS `PlaybackStatus`). */
export type PlaybackStatus = 'Playing' | 'Paused' | 'Stopped';

/**
 * Pauses and resumes the session's MPRIS players. Methods never throw: a
 * player that vanishes or refuses is skipped (the call matters more).
 */
export class MediaPlayers {
  /** Bus names of the players Parley paused, to resume after the call. */
  private paused: string[] = [];

  constructor(private readonly bus: dbus.MessageBus) {}

  /** Bus names of the MPRIS players on the bus now. */
  async players(): Promise<string[]> {
    try {
      const obj = await this.bus.getProxyObject('org.freedesktop.DBus', '/org/freedesktop/DBus');
      const names = (await invoke(
        obj.getInterface('org.freedesktop.DBus'),
        'ListNames',
      )) as string[];
      return names.filter((n) => n.startsWith(PREFIX)).sort();
    } catch {
      return [];
    }
  }

  /** A player's `PlaybackStatus`, or undefined when it does not answer. */
  async status(name: string): Promise<PlaybackStatus | undefined> {
    try {
      const obj = await this.bus.getProxyObject(name, PATH);
      const v = (await invoke(
        obj.getInterface(PROPERTIES),
        'Get',
        PLAYER,
        'PlaybackStatus',
      )) as dbus.Variant<PlaybackStatus>;
      return v.value;
    } catch {
      return undefined;
    }
  }

  /**
   * Pauses every player that is `Playing` (MPRIS `Pause`), remembering which.
   * Calling it again while some are remembered adds the newly playing ones.
   * @returns the bus names paused by this call.
   */
  async pauseAll(): Promise<string[]> {
    const now: string[] = [];
    for (const name of await this.players()) {
      if ((await this.status(name)) !== 'Playing') continue;
      try {
        const obj = await this.bus.getProxyObject(name, PATH);
        await invoke(obj.getInterface(PLAYER), 'Pause');
        now.push(name);
      } catch {
        // A player that refuses is left alone.
      }
    }
    this.paused.push(...now.filter((n) => !this.paused.includes(n)));
    return now;
  }

  /**
   * Resumes (MPRIS `Play`) the players this object paused that are still
   * `Paused` — one the user stopped, or started again, stays as it is.
   * @returns the bus names resumed.
   */
  async resumePaused(): Promise<string[]> {
    const names = this.paused;
    this.paused = [];
    const resumed: string[] = [];
    for (const name of names) {
      if ((await this.status(name)) !== 'Paused') continue;
      try {
        const obj = await this.bus.getProxyObject(name, PATH);
        await invoke(obj.getInterface(PLAYER), 'Play');
        resumed.push(name);
      } catch {
        // Gone meanwhile.
      }
    }
    return resumed;
  }
}

/** Calls a method of a D-Bus proxy interface. */
function invoke(iface: dbus.ClientInterface, method: string, ...args: unknown[]): Promise<unknown> {
  const f = iface[method];
  if (!f) return Promise.reject(new Error(`no method ${method}`));
  return f.apply(iface, args);
}
