import { ParleyError } from '../../common/errors';
import { SignalRequests } from '../../common/protocol/signaling';
import { checkCallAllowed } from './calls';
import type { SignalModule } from './module';

/**
 * Device keys for end-to-end security: `keys.publish` (a device's bundle and
 * its certificate from the account key) and `keys.get` (another account's
 * devices, only for accounts the caller may call or that share a
 * group-call room with it; a block looks like an account with no devices).
 */
export const registerKeyHandlers: SignalModule = (conn, deps) => {
  const { peer } = conn;
  const { accounts, contacts, hub, audit } = deps;

  peer.handle('keys.publish', SignalRequests['keys.publish'].params, async (p) => {
    const self = conn.me();
    const { replaced, accountKeyReplaced } = await accounts.publishKeys(self, p.bundle, {
      accountKey: p.accountKey,
      certificate: p.certificate,
    });
    void audit.record({
      event: 'device.keys_published',
      accountId: self.accountId,
      deviceId: self.deviceId,
      detail: { identityKey: p.bundle.ik, replaced, certified: !!p.certificate },
    });
    if (accountKeyReplaced && p.accountKey) {
      void audit.record({
        event: 'account.key_replaced',
        accountId: self.accountId,
        deviceId: self.deviceId,
        detail: { accountKey: p.accountKey.key },
      });
    }
    return { ok: true as const };
  });

  peer.handle('keys.get', SignalRequests['keys.get'].params, async (p) => {
    const self = conn.me();
    let accountId = self.accountId;
    if (p.username !== self.username) {
      const target = await accounts.findByUsername(p.username);
      if (!target) throw new ParleyError('unknown_user', `no account named ${p.username}`);
      // Only for accounts I may call, or that are in a group-call room with me (their devices need
      // the room's sender keys sealed to them); a block looks like an account with no devices.
      const shares =
        deps.sfu.sharesRoom(self.deviceId, target.accountId) ||
        ((await deps.roomProxy?.sharesRemoteRoom(self.deviceId, target.accountId)) ?? false);
      if (!shares) {
        if (await checkCallAllowed(self, target, contacts, accounts)) return { devices: [] };
      } else if (await contacts.hasBlocked(target.accountId, self.accountId)) return { devices: [] };
      accountId = target.accountId;
    }
    const [keys, accountKey] = await Promise.all([accounts.deviceKeys(accountId), accounts.accountKey(accountId)]);
    return {
      ...(accountKey ? { accountKey } : {}),
      devices: keys.map((k) => ({ ...k, online: hub.isOnline(k.deviceId) })),
    };
  });
};
