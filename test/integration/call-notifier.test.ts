/**
 * Which way an incoming call is offered on Linux depends on the desktop's
 * notification server (main/app/linux/call-notifier.ts): buttons where the
 * server has the `actions` capability (Debian's dunst), Parley's own call
 * window where it has not (Debian's notify-osd, which never shows actions).
 * Both servers run for real on a private bus and Xvfb; the phone is a small
 * stand-in that emits the Softphone's `call` events (the real calls through
 * the real core are in test/ui/desktop.test.ts).
 */
import { EventEmitter } from 'node:events';
import dbus from '@particle/dbus-next';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallStatus } from '../../common/protocol/control';
import { CallNotifier } from '../../main/app/linux/call-notifier';
import { DesktopNotifications } from '../../main/app/linux/notifications';
import { startDunst, type Dunst } from '../harness/dunst';
import { makeTempDir, removeTempDir, startChild, waitFor, type Child } from '../harness/process';
import { startXvfb, type Xvfb } from '../harness/xvfb';

/** A private session bus (dbus-daemon) in `dir`; resolves with its address. */
async function startBus(dir: string): Promise<{ address: string; daemon: Child }> {
  const daemon = await startChild(
    'dbus-daemon',
    ['--session', '--nofork', '--print-address=1', `--address=unix:path=${dir}/bus`],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  const address = await new Promise<string>((resolve) => {
    let out = '';
    daemon.process.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
  });
  return { address, daemon };
}

class StandInPhone extends EventEmitter<{ call: [CallStatus & { silenced?: boolean }] }> {
  readonly answered: string[] = [];
  readonly declined: string[] = [];
  async answer(callId: string) {
    this.answered.push(callId);
  }
  async decline(callId: string) {
    this.declined.push(callId);
  }
}

const ringing = (callId: string): CallStatus =>
  ({
    callId,
    direction: 'incoming',
    peer: 'bob',
    state: 'incoming',
    createdAt: Date.now(),
  }) as CallStatus;

describe('the incoming-call notification on Linux', () => {
  const dirs: string[] = [];
  const stops: (() => Promise<unknown> | void)[] = [];
  afterAll(async () => {
    for (const s of stops.reverse()) await s();
    for (const d of dirs) removeTempDir(d);
  });

  describe('with dunst (actions)', () => {
    let dunst: Dunst;
    let address: string;
    beforeAll(async () => {
      const dir = makeTempDir('notify-dunst');
      dirs.push(dir);
      const bus = await startBus(dir);
      stops.push(() => bus.daemon.stop());
      address = bus.address;
      dunst = await startDunst({ DBUS_SESSION_BUS_ADDRESS: address });
      stops.push(() => dunst.stop());
    });

    it('shows Accept / Decline and does not open the call window; Decline declines that call', async () => {
      const bus = dbus.sessionBus({ busAddress: address });
      stops.push(() => bus.disconnect());
      const notifications = await DesktopNotifications.connect({ bus });
      expect(notifications.supportsActions).toBe(true);
      const phone = new StandInPhone();
      const windows: string[] = [];
      const notifier = new CallNotifier(phone, notifications, {
        showCallWindow: (c) => windows.push(c.callId),
      });
      phone.emit('call', ringing('c1'));
      await waitFor('the notification', () => notifier.notificationOf('c1'), 5000);
      await dunst.press('Decline');
      await waitFor('declined', () => (phone.declined.length ? true : undefined), 5000);
      expect(phone.declined).toEqual(['c1']);
      expect(phone.answered).toEqual([]);
      expect(windows).toEqual([]);
      await notifier.stop();
    });

    it('answered on another device: the notification goes, no "Missed call" (Signal-Desktop#6954)', async () => {
      const bus = dbus.sessionBus({ busAddress: address });
      stops.push(() => bus.disconnect());
      const notifications = await DesktopNotifications.connect({ bus });
      const phone = new StandInPhone();
      const notifier = new CallNotifier(phone, notifications);
      await dunst.closeAll();
      phone.emit('call', ringing('c3'));
      await waitFor('the notification', () => notifier.notificationOf('c3'), 5000);
      expect(await dunst.displayed()).toBe(1);
      phone.emit('call', {
        ...ringing('c3'),
        state: 'ended',
        endReason: 'answered_elsewhere',
        endedAt: Date.now(),
      });
      await waitFor(
        'closed',
        async () => ((await dunst.displayed()) === 0 ? true : undefined),
        5000,
        100,
      );
      expect(notifier.notificationOf('c3')).toBeUndefined();
      await notifier.stop();
    });
  });

  describe('with notify-osd (no actions)', () => {
    let xvfb: Xvfb;
    let address: string;
    beforeAll(async () => {
      const dir = makeTempDir('notify-osd');
      dirs.push(dir);
      const bus = await startBus(dir);
      stops.push(() => bus.daemon.stop());
      address = bus.address;
      xvfb = await startXvfb();
      stops.push(() => xvfb.stop());
      const osd = await startChild('/usr/lib/x86_64-linux-gnu/notify-osd', [], {
        env: {
          ...process.env,
          DBUS_SESSION_BUS_ADDRESS: address,
          DISPLAY: xvfb.display,
          HOME: dir,
        },
        stdio: 'ignore',
      });
      stops.push(() => osd.stop());
    });

    it('opens Parley’s call window instead, because the server cannot show buttons', async () => {
      const bus = dbus.sessionBus({ busAddress: address });
      stops.push(() => bus.disconnect());
      const notifications = await waitFor(
        'notify-osd on the bus',
        () => DesktopNotifications.connect({ bus, timeoutMs: 1000 }).catch(() => undefined),
        10_000,
        200,
      );
      expect(notifications.server.name).toBe('notify-osd');
      expect(notifications.supportsActions).toBe(false);
      const phone = new StandInPhone();
      const windows: string[] = [];
      const notifier = new CallNotifier(phone, notifications, {
        showCallWindow: (c) => windows.push(c.callId),
      });
      phone.emit('call', ringing('c2'));
      await waitFor('the call window', () => (windows.length ? true : undefined), 5000);
      expect(windows).toEqual(['c2']);
      expect(notifier.notificationOf('c2')).toBeUndefined();
      await notifier.stop();
    });
  });
});
