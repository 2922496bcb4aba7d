import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { login, signIn, SignalClient } from '../harness/signal-client';

let server: RunningServer;
let n = 0;
const fresh = (base: string) => `${base}${++n}`;

interface AuditEvent {
  event: string;
  accountId: string | null;
  deviceId: string | null;
  detail: Record<string, unknown> | null;
}
async function auditEvents(params: object): Promise<AuditEvent[]> {
  return (await adminRequest<{ events: AuditEvent[] }>(server.adminSocket, 'audit.query', params))
    .events;
}

beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server?.stop();
});

describe('devices: one account, several devices', () => {
  it('lists every device with its name, online state and which one asks; hello tells the token expiry', async () => {
    const name = fresh('dora');
    const laptop = await signIn(server, name, { deviceName: 'laptop' });
    const phone = await signIn(server, name, { register: false, deviceName: 'phone' });
    const tablet = await login(server.url, name, undefined, 'tablet'); // signed in, never connected

    const { devices } = await phone.client.request('devices.list', {});
    expect(devices.map((d) => [d.name, d.online, d.current])).toEqual([
      ['laptop', true, false],
      ['phone', true, true],
      ['tablet', false, false],
    ]);
    expect(devices.map((d) => d.deviceId)).toEqual([
      laptop.deviceId,
      phone.deviceId,
      tablet.deviceId,
    ]);
    for (const d of devices) {
      expect(d.expiresAt).toBeGreaterThan(Date.now() + 29 * 86_400_000);
      expect(JSON.stringify(d)).not.toContain(laptop.token);
    }
    const again = await SignalClient.connect(server.wsUrl);
    const hello = await again.hello(tablet);
    expect(hello.tokenExpiresAt).toBe(devices[2]!.expiresAt);
    await Promise.all([laptop.client.close(), phone.client.close(), again.close()]);
  });

  it('revoking a device closes its live connection (session.ended, 4003) and its token stops working', async () => {
    const name = fresh('rex');
    const laptop = await signIn(server, name, { deviceName: 'laptop' });
    const stolen = await signIn(server, name, { register: false, deviceName: 'stolen phone' });

    await expect(
      laptop.client.request('devices.revoke', { deviceId: stolen.deviceId }),
    ).resolves.toEqual({ ok: true });
    expect(await stolen.client.nextNotification('session.ended')).toEqual({ reason: 'revoked' });
    expect((await stolen.client.closed).code).toBe(4003);

    const retry = await SignalClient.connect(server.wsUrl);
    await expect(retry.hello(stolen)).rejects.toMatchObject({ reason: 'unauthenticated' });
    await retry.close();
    const { devices } = await laptop.client.request('devices.list', {});
    expect(devices.map((d) => d.name)).toEqual(['laptop']);

    const events = await auditEvents({ event: 'device.revoked', deviceId: stolen.deviceId });
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      accountId: laptop.accountId,
      detail: { by: laptop.deviceId },
    });
    await laptop.client.close();
  });

  it("another account's device, or an unknown one, is not_found (the same answer for both)", async () => {
    const mallory = await signIn(server, fresh('mallory'));
    const victim = await signIn(server, fresh('victim'));
    const other = await mallory.client
      .request('devices.revoke', { deviceId: victim.deviceId })
      .catch((e: unknown) => e);
    const unknown = await mallory.client
      .request('devices.revoke', { deviceId: '00000000-0000-4000-8000-000000000000' })
      .catch((e: unknown) => e);
    expect(other).toMatchObject({ reason: 'not_found', code: -32015 });
    expect((other as Error).message).toBe((unknown as Error).message);
    // The victim is untouched.
    await expect(victim.client.request('devices.list', {})).resolves.toBeTruthy();
    await Promise.all([mallory.client.close(), victim.client.close()]);
  });

  it('session.refresh gives a new token; the old one stops working at once, the connection stays', async () => {
    const nina = await signIn(server, fresh('nina'));
    const fresh1 = await nina.client.request('session.refresh', {});
    expect(fresh1.token).not.toBe(nina.token);
    expect(fresh1.expiresAt).toBeGreaterThan(Date.now());
    // The refreshing connection keeps working.
    await expect(nina.client.request('devices.list', {})).resolves.toBeTruthy();

    const old = await SignalClient.connect(server.wsUrl);
    await expect(old.hello(nina)).rejects.toMatchObject({ reason: 'unauthenticated' });
    await old.close();
    const renewed = await SignalClient.connect(server.wsUrl);
    await expect(
      renewed.hello({ deviceId: nina.deviceId, token: fresh1.token }),
    ).resolves.toMatchObject({ deviceId: nina.deviceId, tokenExpiresAt: fresh1.expiresAt });
    await renewed.close();

    const events = await auditEvents({ event: 'session.refreshed', deviceId: nina.deviceId });
    expect(events).toHaveLength(1);
    expect(JSON.stringify(events)).not.toContain(fresh1.token);
    await nina.client.close().catch(() => {});
  });

  it('session.logout ends this device: the result, then session.ended and close 4003; the token is gone', async () => {
    const otto = await signIn(server, fresh('otto'));
    await expect(otto.client.request('session.logout', {})).resolves.toEqual({ ok: true });
    expect(await otto.client.nextNotification('session.ended')).toEqual({ reason: 'logged_out' });
    expect((await otto.client.closed).code).toBe(4003);
    const again = await SignalClient.connect(server.wsUrl);
    await expect(again.hello(otto)).rejects.toMatchObject({ reason: 'unauthenticated' });
    await again.close();
    expect(await auditEvents({ event: 'session.logout', deviceId: otto.deviceId })).toHaveLength(1);
  });
});

describe('devices: token expiry', () => {
  let quick: RunningServer;
  beforeAll(async () => {
    quick = await startServer({ env: { PARLEY_TOKEN_TTL: '4' } });
  });
  afterAll(async () => {
    await quick?.stop();
  });

  it('an expired token closes the connection (4002) and hello answers token_expired; a refresh in time keeps the device', async () => {
    const pia = await signIn(quick, 'pia');
    const quinn = await signIn(quick, 'quinn');
    await new Promise((r) => setTimeout(r, 2000));
    const renewed = await quinn.client.request('session.refresh', {});
    expect(renewed.expiresAt).toBeGreaterThan(Date.now() + 3000);

    expect(await pia.client.nextNotification('session.ended', {}, 10_000)).toEqual({
      reason: 'expired',
    });
    expect((await pia.client.closed).code).toBe(4002);
    const again = await SignalClient.connect(quick.wsUrl);
    const err = await again.hello(pia).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: 'token_expired', code: -32017 });
    expect((err as Error).message).toContain('sign in again');
    await again.close();

    // quinn refreshed 2 s after pia signed in: still signed in, on the same connection.
    await expect(quinn.client.request('devices.list', {})).resolves.toBeTruthy();
    expect(await quinn.client.nextNotification('session.ended', {}, 10_000)).toEqual({
      reason: 'expired',
    });
  });
});
