/**
 * Push-to-talk under Wayland through the XDG desktop portal's GlobalShortcuts
 * interface (`org.freedesktop.portal.GlobalShortcuts` on
 * `org.freedesktop.portal.Desktop` at `/org/freedesktop/portal/desktop`,
 * xdg-desktop-portal ≥ 1.16), directly over D-Bus: its `Activated` and
 * `Deactivated` signals are key down and key up (Electron's own portal
 * support has no release event). Under X11 the uiohook hook (native/hotkeys)
 * sees the key instead.
 *
 * Portal requests follow the portal's Request pattern: each call returns the
 * path of a `org.freedesktop.portal.Request` whose `Response (u code, a{sv}
 * results)` signal carries the answer (code 0 = success, 1 = cancelled by the
 * user, 2 = other failure); the path is predictable
 * (`/org/freedesktop/portal/desktop/request/<sender>/<token>`), so the match
 * rule is in place before the call.
 *
 * Pure JavaScript (@particle/dbus-next), no Electron.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import dbus from '@particle/dbus-next';
import { ParleyError } from '../../../common/errors';

const PORTAL = 'org.freedesktop.portal.Desktop';
const PORTAL_PATH = '/org/freedesktop/portal/desktop';
const IFACE = 'org.freedesktop.portal.GlobalShortcuts';
const REQUEST = 'org.freedesktop.portal.Request';
const SESSION = 'org.freedesktop.portal.Session';

/** The push-to-talk shortcut's id in the portal session. */
export const PTT_SHORTCUT = 'push-to-talk';

type Events = {
  /** The shortcut went down (Activated) or up (Deactivated). */
  key: [pressed: boolean];
  /**
   * The key state can no longer be known: the session was closed by the
   * desktop, the portal went away or the bus broke. The caller must treat
   * the key as released (microphone closed).
   */
  lost: [reason: string];
};

/**
 * One GlobalShortcuts session with one shortcut, push-to-talk.
 *
 * Events: `key` (pressed / released), `lost` (state uncertain: treat as released).
 */
export class PortalPushToTalk extends EventEmitter<Events> {
  private sessionHandle: string | undefined;
  private readonly onMessage = (msg: dbus.Message) => this.handle(msg);
  private pressed = false;
  private closed = false;

  private constructor(private readonly bus: dbus.MessageBus) {
    super();
  }

  /**
   * Creates a portal session and binds the push-to-talk shortcut with
   * `preferredTrigger` (XDG shortcuts syntax, e.g. `F8`, `CTRL+space`); the
   * desktop may ask the user to confirm or change it.
   * @param options.bus the session bus (default: a new connection to `DBUS_SESSION_BUS_ADDRESS`).
   * @param options.timeoutMs how long to wait for each portal answer (default 60 000 ms: the desktop may show a dialog).
   * @returns the client and the trigger the desktop reports for the shortcut, if any.
   * @throws ParleyError `unavailable` when there is no portal or it has no GlobalShortcuts;
   *   `forbidden` when the user or the desktop refused (Response code 1 or 2).
   */
  static async start(
    preferredTrigger: string,
    options: { bus?: dbus.MessageBus; timeoutMs?: number; description?: string } = {},
  ): Promise<{ client: PortalPushToTalk; trigger: string | undefined }> {
    const bus = options.bus ?? dbus.sessionBus();
    const client = new PortalPushToTalk(bus);
    try {
      const trigger = await client.open(
        preferredTrigger,
        options.timeoutMs ?? 60_000,
        options.description ?? 'Push to talk (Parley)',
      );
      return { client, trigger };
    } catch (e) {
      await client.close();
      if (!options.bus) bus.disconnect();
      throw e;
    }
  }

  /** Whether the key is held now (as the portal last said). */
  get isPressed(): boolean {
    return this.pressed;
  }

  /** Closes the portal session (org.freedesktop.portal.Session.Close) and stops listening. Never throws. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.bus.removeListener('message', this.onMessage);
    if (this.sessionHandle) {
      await this.bus
        .call(
          new dbus.Message({
            destination: PORTAL,
            path: this.sessionHandle,
            interface: SESSION,
            member: 'Close',
          }),
        )
        .catch(() => {});
    }
    this.pressed = false;
  }

  private async open(
    preferredTrigger: string,
    timeoutMs: number,
    description: string,
  ): Promise<string | undefined> {
    const unique = (this.bus as unknown as { name?: string }).name ?? (await this.uniqueName());
    this.bus.on('message', this.onMessage);
    await this.addMatch(`type='signal',sender='${PORTAL}',interface='${IFACE}'`);
    await this.addMatch(`type='signal',sender='${PORTAL}',interface='${SESSION}',member='Closed'`);
    await this.addMatch(
      `type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='${PORTAL}'`,
    );

    const created = await this.request(unique, timeoutMs, (token) => [
      'CreateSession',
      'a{sv}',
      [
        {
          handle_token: new dbus.Variant('s', token),
          session_handle_token: new dbus.Variant('s', token),
        },
      ],
    ]);
    const session = created['session_handle']?.value as string | undefined;
    if (!session)
      throw new ParleyError('unavailable', 'the desktop portal created no GlobalShortcuts session');
    this.sessionHandle = session;

    const bound = await this.request(unique, timeoutMs, (token) => [
      'BindShortcuts',
      'oa(sa{sv})sa{sv}',
      [
        session,
        [
          [
            PTT_SHORTCUT,
            {
              description: new dbus.Variant('s', description),
              preferred_trigger: new dbus.Variant('s', preferredTrigger),
            },
          ],
        ],
        '',
        { handle_token: new dbus.Variant('s', token) },
      ],
    ]);
    const shortcuts = (bound['shortcuts']?.value ?? []) as [string, Record<string, dbus.Variant>][];
    const ours = shortcuts.find(([id]) => id === PTT_SHORTCUT);
    return ours?.[1]['trigger_description']?.value as string | undefined;
  }

  /** Sends one portal method call and waits for its Request's Response. */
  private async request(
    unique: string,
    timeoutMs: number,
    build: (token: string) => [member: string, signature: string, body: unknown[]],
  ): Promise<Record<string, dbus.Variant>> {
    const token = `parley_${randomBytes(6).toString('hex')}`;
    const path = `${PORTAL_PATH}/request/${unique.replace(/^:/, '').replace(/\./g, '_')}/${token}`;
    const rule = `type='signal',sender='${PORTAL}',interface='${REQUEST}',member='Response',path='${path}'`;
    await this.addMatch(rule);
    let timer: NodeJS.Timeout | undefined;
    let listener: ((m: dbus.Message) => void) | undefined;
    const response = new Promise<[number, Record<string, dbus.Variant>]>((resolve, reject) => {
      listener = (m) => {
        if (
          m.type === dbus.MessageType.SIGNAL &&
          m.path === path &&
          m.interface === REQUEST &&
          m.member === 'Response'
        ) {
          resolve(m.body as [number, Record<string, dbus.Variant>]);
        }
      };
      this.bus.on('message', listener);
      timer = setTimeout(
        () =>
          reject(
            new ParleyError(
              'unavailable',
              `the desktop portal did not answer within ${timeoutMs} ms`,
            ),
          ),
        timeoutMs,
      );
    });
    try {
      const [member, signature, body] = build(token);
      const reply = await this.bus
        .call(
          new dbus.Message({
            destination: PORTAL,
            path: PORTAL_PATH,
            interface: IFACE,
            member,
            signature,
            body,
          }),
        )
        .catch((e: unknown) => {
          throw new ParleyError(
            'unavailable',
            `no GlobalShortcuts portal on the session bus: ${(e as Error).message}`,
          );
        });
      const actual = reply?.body?.[0] as string | undefined;
      if (actual && actual !== path) {
        // An older portal that ignores handle_token: follow the path it returned.
        throw new ParleyError(
          'unavailable',
          `the desktop portal answered on an unexpected request path ${actual}`,
        );
      }
      const [code, results] = await response;
      if (code !== 0)
        throw new ParleyError(
          'forbidden',
          code === 1
            ? 'the global shortcut was not allowed'
            : 'the desktop could not set up the global shortcut',
        );
      return results;
    } finally {
      clearTimeout(timer);
      if (listener) this.bus.removeListener('message', listener);
      void this.removeMatch(rule);
    }
  }

  private handle(msg: dbus.Message): void {
    if (msg.type !== dbus.MessageType.SIGNAL || this.closed) return;
    if (msg.interface === IFACE && (msg.member === 'Activated' || msg.member === 'Deactivated')) {
      const [session, id] = msg.body as [string, string];
      if (session !== this.sessionHandle || id !== PTT_SHORTCUT) return;
      this.pressed = msg.member === 'Activated';
      this.emit('key', this.pressed);
    } else if (
      msg.interface === SESSION &&
      msg.member === 'Closed' &&
      msg.path === this.sessionHandle
    ) {
      this.fail('the desktop closed the global shortcut session');
    } else if (
      msg.member === 'NameOwnerChanged' &&
      (msg.body as string[])[0] === PORTAL &&
      !(msg.body as string[])[2]
    ) {
      this.fail('the desktop portal went away');
    }
  }

  private fail(reason: string): void {
    this.pressed = false;
    this.closed = true;
    this.bus.removeListener('message', this.onMessage);
    this.emit('lost', reason);
  }

  private async uniqueName(): Promise<string> {
    const reply = await this.bus.call(
      new dbus.Message({
        destination: 'org.freedesktop.DBus',
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'GetId',
      }),
    );
    void reply;
    const name = (this.bus as unknown as { name?: string }).name;
    if (!name) throw new ParleyError('unavailable', 'not connected to the session bus');
    return name;
  }

  private async addMatch(rule: string): Promise<void> {
    await this.bus.call(
      new dbus.Message({
        destination: 'org.freedesktop.DBus',
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'AddMatch',
        signature: 's',
        body: [rule],
      }),
    );
  }

  private async removeMatch(rule: string): Promise<void> {
    await this.bus
      .call(
        new dbus.Message({
          destination: 'org.freedesktop.DBus',
          path: '/org/freedesktop/DBus',
          interface: 'org.freedesktop.DBus',
          member: 'RemoveMatch',
          signature: 's',
          body: [rule],
        }),
      )
      .catch(() => {});
  }
}
