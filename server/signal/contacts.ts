import { SignalRequests, type PeerInfo } from '../../common/protocol/signaling';
import type { SignalModule } from './module';

/**
 * Contacts, presence and account settings: `contacts.*`, caller approval
 * (`callers.approve` / `callers.refuse`), `presence.set`, `settings.get` /
 * `settings.set`.
 */
export const registerContactHandlers: SignalModule = (conn, deps) => {
  const { peer } = conn;
  const { contacts, approvals, accounts, audit } = deps;
  const me = (): PeerInfo => conn.me();

  peer.handle('contacts.list', SignalRequests['contacts.list'].params, () => contacts.list(me()));
  peer.handle('contacts.request', SignalRequests['contacts.request'].params, (p) => contacts.request(me(), p.username));
  for (const [method, act] of [
    ['contacts.accept', (self: PeerInfo, u: string) => contacts.accept(self, u)],
    ['contacts.decline', (self: PeerInfo, u: string) => contacts.decline(self, u)],
    ['contacts.remove', (self: PeerInfo, u: string) => contacts.remove(self, u)],
    ['contacts.block', (self: PeerInfo, u: string) => contacts.block(self, u)],
    ['contacts.unblock', (self: PeerInfo, u: string) => contacts.unblock(self, u)],
  ] as const) {
    peer.handle(method, SignalRequests[method].params, async (p) => {
      await act(me(), p.username);
      return { ok: true as const };
    });
  }
  peer.handle('callers.approve', SignalRequests['callers.approve'].params, async (p) => {
    await approvals.approve(me(), p.username);
    return { ok: true as const };
  });
  peer.handle('callers.refuse', SignalRequests['callers.refuse'].params, (p) => {
    approvals.refuse(me(), p.username);
    return { ok: true as const };
  });
  peer.handle('presence.set', SignalRequests['presence.set'].params, async (p) => ({
    presence: await contacts.setPresence(me(), p.status),
  }));
  peer.handle('settings.get', SignalRequests['settings.get'].params, async () => ({
    contactsOnly: await accounts.contactsOnly(me().accountId),
  }));
  peer.handle('settings.set', SignalRequests['settings.set'].params, async (p) => {
    const self = me();
    if (p.contactsOnly !== undefined) {
      await accounts.setContactsOnly(self.accountId, p.contactsOnly);
      void audit.record({
        event: 'settings.changed',
        accountId: self.accountId,
        deviceId: self.deviceId,
        detail: { contactsOnly: p.contactsOnly },
      });
    }
    return { contactsOnly: await accounts.contactsOnly(self.accountId) };
  });
};
