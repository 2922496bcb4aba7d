import { ParleyError } from '../../common/errors';
import { SignalRequests } from '../../common/protocol/signaling';
import { CLOSE_REVOKED } from '../hub';
import type { SignalModule } from './module';

/**
 * An account's devices: `devices.list`, `devices.revoke`, and device linking —
 * `link.open` / `link.request` / `link.reply`, a rendezvous the server routes
 * but cannot forge (server/device-links.ts).
 */
export const registerDeviceHandlers: SignalModule = (conn, deps) => {
  const { peer } = conn;
  const { accounts, links, hub, audit } = deps;

  peer.handle('devices.list', SignalRequests['devices.list'].params, async () => {
    const self = conn.me();
    const devices = await accounts.listDevices(self.accountId);
    return {
      devices: devices.map((d) => ({
        ...d,
        online: hub.isOnline(d.deviceId),
        current: d.deviceId === self.deviceId,
      })),
    };
  });
  peer.handle('devices.revoke', SignalRequests['devices.revoke'].params, async (p, ctx) => {
    const self = conn.me();
    await accounts.revokeDevice(self.accountId, p.deviceId);
    void audit.record({
      event: 'device.revoked',
      accountId: self.accountId,
      deviceId: p.deviceId,
      detail: { by: self.deviceId },
    });
    ctx.afterReply(() => hub.disconnectDevice(p.deviceId, 'revoked', CLOSE_REVOKED));
    return { ok: true as const };
  });

  peer.handle('link.open', SignalRequests['link.open'].params, (p) => {
    const self = conn.me();
    links.openLink(p.linkId, self);
    void audit.record({ event: 'device.link', accountId: self.accountId, deviceId: self.deviceId, detail: { step: 'open' } });
    return { ok: true as const };
  });
  peer.handle('link.request', SignalRequests['link.request'].params, (p) => {
    const self = conn.me();
    const open = links.find(p.linkId, self.accountId);
    if (!open || open.deviceId === self.deviceId || !hub.isOnline(open.deviceId)) {
      throw new ParleyError(
        'not_found',
        'no device of your account is showing that link code now; show a new code ("parley devices link") and try again',
      );
    }
    hub.notifyDevice(open.deviceId, 'link.request', { linkId: p.linkId, deviceId: self.deviceId, request: p.request });
    void audit.record({ event: 'device.link', accountId: self.accountId, deviceId: self.deviceId, detail: { step: 'request' } });
    return { ok: true as const };
  });
  peer.handle('link.reply', SignalRequests['link.reply'].params, async (p) => {
    const self = conn.me();
    const open = links.find(p.linkId, self.accountId);
    if (!open || open.deviceId !== self.deviceId) throw new ParleyError('not_found', 'this device has no open link with that id');
    const target = (await accounts.deviceKeys(self.accountId)).some((k) => k.deviceId === p.deviceId);
    if (!target) throw new ParleyError('not_found', 'no such device on this account');
    links.close(p.linkId);
    hub.notifyDevice(p.deviceId, 'link.reply', { linkId: p.linkId, reply: p.reply });
    void audit.record({ event: 'device.link', accountId: self.accountId, deviceId: self.deviceId, detail: { step: 'reply' } });
    return { ok: true as const };
  });
};
