/**
 * The desktop notification server over D-Bus (freedesktop Desktop
 * Notifications Specification 1.2/1.3, `org.freedesktop.Notifications` at
 * `/org/freedesktop/Notifications` on the session bus). Electron's own
 * notifications have no action buttons on Linux (electron#24333), so the
 * incoming-call notification talks to the server directly.
 *
 * Pure JavaScript (@particle/dbus-next), no Electron: usable and tested in Node.
 */
import { EventEmitter } from 'node:events';
import dbus from '@particle/dbus-next';
import { ParleyError } from '../../../common/errors';

const NAME = 'org.freedesktop.Notifications';
const PATH = '/org/freedesktop/Notifications';
const PROPERTIES = 'org.freedesktop.DBus.Properties';
/** dunst's own control interface: its `paused` property is dunst's do-not-disturb (dunstctl set-paused). */
const DUNST = 'org.dunstproject.cmd0';

/** Why the server closed a notification (spec: NotificationClosed `reason`). */
export type CloseReason = 'expired' | 'dismissed' | 'closed' | 'undefined';
const CLOSE_REASONS: Record<number, CloseReason> = {
  1: 'expired',
  2: 'dismissed',
  3: 'closed',
  4: 'undefined',
};

/** One notification as Parley asks for it. */
export interface NotificationRequest {
  summary: string;
  body?: string;
  /** Icon name from the theme or an absolute file path ('' for none). */
  icon?: string;
  /** Buttons in order: `key` comes back in the `action` event, `label` is shown. The key `default` is a click on the bubble. */
  actions?: { key: string; label: string }[];
  /** Spec hint `urgency`: low 0, normal 1, critical 2 (critical ones do not expire on most servers). */
  urgency?: 'low' | 'normal' | 'critical';
  /** Spec hint `category`, e.g. `call.incoming`, `call.missed`. */
  category?: string;
  /** Replace this earlier notification in place instead of showing a new one. */
  replacesId?: number;
  /** Expiry in ms; -1 = the server's default, 0 = never (default -1). */
  timeoutMs?: number;
}

/** The server's identity (spec: GetServerInformation). */
export interface ServerInfo {
  name: string;
  vendor: string;
  version: string;
  specVersion: string;
}

type Events = {
  /** A button (or, with key `default`, the bubble) was invoked: (notification id, action key). */
  action: [id: number, key: string];
  /** The notification left the screen: (notification id, why). */
  closed: [id: number, reason: CloseReason];
  /** The desktop's do-not-disturb changed (spec 1.3 `Inhibited`, or dunst's `paused`). */
  doNotDisturb: [on: boolean];
};

/**
 * A connection to the session's notification server.
 *
 * Events: `action` (ActionInvoked), `closed` (NotificationClosed) — for any
 * notification of this connection's server; `doNotDisturb` when the server's
 * do-not-disturb changes (spec 1.3's `Inhibited` property; dunst 1.9 has no
 * `Inhibited` but exposes `paused` on `org.dunstproject.cmd0`).
 */
export class DesktopNotifications extends EventEmitter<Events> {
  private constructor(
    private readonly bus: dbus.MessageBus,
    private readonly iface: dbus.ClientInterface,
    private readonly props: dbus.ClientInterface,
    private readonly dunst: boolean,
    /** What the server can do (spec: GetCapabilities), e.g. `actions`, `body`, `persistence`. */
    readonly capabilities: readonly string[],
    readonly server: ServerInfo,
    private readonly ownBus: boolean,
  ) {
    super();
    iface.on('ActionInvoked', (id: number, key: string) => this.emit('action', id, key));
    iface.on('NotificationClosed', (id: number, reason: number) =>
      this.emit('closed', id, CLOSE_REASONS[reason] ?? 'undefined'),
    );
    props.on('PropertiesChanged', (name: string, changed: Record<string, dbus.Variant>) => {
      const v =
        name === NAME ? changed['Inhibited'] : name === DUNST ? changed['paused'] : undefined;
      if (v && typeof v.value === 'boolean') this.emit('doNotDisturb', v.value);
    });
  }

  /**
   * Connects to the notification server on the session bus
   * (`DBUS_SESSION_BUS_ADDRESS`, or `bus` when given) and reads its
   * capabilities and identity.
   * @param options.timeoutMs how long the server may take to answer (default 3000 ms).
   * @throws ParleyError `unavailable` when there is no session bus or no notification server on it.
   */
  static async connect(
    options: { bus?: dbus.MessageBus; timeoutMs?: number } = {},
  ): Promise<DesktopNotifications> {
    const ownBus = !options.bus;
    let bus: dbus.MessageBus | undefined;
    try {
      bus = options.bus ?? dbus.sessionBus();
      const b = bus;
      return await withTimeout(options.timeoutMs ?? 3000, async () => {
        const obj = await b.getProxyObject(NAME, PATH);
        const iface = obj.getInterface(NAME);
        const props = obj.getInterface(PROPERTIES);
        const capabilities = (await invoke(iface, 'GetCapabilities')) as string[];
        const [name, vendor, version, specVersion] = (await invoke(
          iface,
          'GetServerInformation',
        )) as string[];
        const dunst = DUNST in obj.interfaces;
        return new DesktopNotifications(
          b,
          iface,
          props,
          dunst,
          capabilities,
          { name: name!, vendor: vendor!, version: version!, specVersion: specVersion! },
          ownBus,
        );
      });
    } catch (e) {
      if (ownBus) bus?.disconnect();
      throw new ParleyError(
        'unavailable',
        `no desktop notification server on the session bus: ${(e as Error).message}`,
      );
    }
  }

  /** Whether the server shows buttons (spec capability `actions`). Without it, Parley's own call window is the way to answer. */
  get supportsActions(): boolean {
    return this.capabilities.includes('actions');
  }

  /**
   * Shows (or, with `replacesId`, replaces) a notification.
   * @returns the server's id for it (non-zero).
   * @throws ParleyError `unavailable` when the server does not answer.
   */
  async notify(n: NotificationRequest, appName = 'Parley'): Promise<number> {
    const hints: Record<string, dbus.Variant> = {
      urgency: new dbus.Variant('y', { low: 0, normal: 1, critical: 2 }[n.urgency ?? 'normal']),
      'desktop-entry': new dbus.Variant('s', 'parley'),
    };
    if (n.category) hints['category'] = new dbus.Variant('s', n.category);
    const actions = this.supportsActions ? (n.actions ?? []).flatMap((a) => [a.key, a.label]) : [];
    try {
      return (await invoke(
        this.iface,
        'Notify',
        appName,
        n.replacesId ?? 0,
        n.icon ?? '',
        n.summary,
        n.body ?? '',
        actions,
        hints,
        n.timeoutMs ?? -1,
      )) as number;
    } catch (e) {
      throw new ParleyError(
        'unavailable',
        `the notification server refused the notification: ${(e as Error).message}`,
      );
    }
  }

  /** Closes a notification (spec: CloseNotification). A notification already gone is not an error. */
  async close(id: number): Promise<void> {
    await (invoke(this.iface, 'CloseNotification', id) as Promise<void>).catch(() => {});
  }

  /**
   * The desktop's do-not-disturb as the notification server knows it:
   * spec 1.3's `Inhibited` property where the server has it, dunst's `paused`
   * (dunst 1.9 has no `Inhibited`), `undefined` where the server says nothing.
   */
  async doNotDisturb(): Promise<boolean | undefined> {
    const get = async (iface: string, prop: string) => {
      const v = (await invoke(this.props, 'Get', iface, prop)) as dbus.Variant;
      return typeof v.value === 'boolean' ? v.value : undefined;
    };
    const inhibited = await get(NAME, 'Inhibited').catch(() => undefined);
    if (inhibited !== undefined) return inhibited;
    return this.dunst ? get(DUNST, 'paused').catch(() => undefined) : undefined;
  }

  /** Stops listening; disconnects the bus when this object opened it. */
  disconnect(): void {
    this.removeAllListeners();
    this.iface.removeAllListeners();
    this.props.removeAllListeners();
    if (this.ownBus) this.bus.disconnect();
  }
}

/** Calls a method of a D-Bus proxy interface. */
function invoke(iface: dbus.ClientInterface, method: string, ...args: unknown[]): Promise<unknown> {
  const f = iface[method];
  if (!f) return Promise.reject(new Error(`the server has no method ${method}`));
  return f.apply(iface, args);
}

async function withTimeout<T>(ms: number, f: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      f(),
      new Promise<never>(
        (_, reject) =>
          (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)),
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
