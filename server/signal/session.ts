import { ParleyError } from '../../common/errors';
import { PROTOCOL_VERSION, SignalRequests, type PeerInfo } from '../../common/protocol/signaling';
import { clientKey } from '../front-door';
import { CLOSE_REVOKED } from '../hub';
import type { SignalModule } from './module';

/**
 * Authentication and the session: `hello` (binds the device, resumes the calls
 * a dropped connection or a server crash left open, rings it for the group
 * calls still ringing for its account), `session.refresh`,
 * `session.logout`.
 */
export const registerSessionHandlers: SignalModule = (conn, deps) => {
  const { peer } = conn;
  const { accounts, audit, hub, resumption, openCalls, contacts } = deps;

  peer.handle('hello', SignalRequests.hello.params, async (p, ctx) => {
    if (conn.link) throw new ParleyError('invalid_state', 'hello was already accepted on this connection');
    if (p.protocol !== PROTOCOL_VERSION) {
      throw new ParleyError(
        'protocol_version',
        `this server speaks signaling protocol ${PROTOCOL_VERSION}, the client sent ${p.protocol}`,
      );
    }
    let info: PeerInfo & { tokenExpiresAt: number };
    try {
      info = await accounts.authenticateDevice(p.deviceId, p.token);
    } catch (e) {
      if (e instanceof ParleyError) {
        const address = clientKey(conn.remote);
        void audit.recordSampled(
          `device.auth_failed:${address}:${p.deviceId}`,
          { event: 'device.auth_failed', deviceId: p.deviceId, detail: { remote: conn.remote, reason: e.reason } },
          { key: `device.auth_failed:${address}`, detail: { remote: conn.remote } },
        );
      }
      throw e;
    }
    const peerInfo: PeerInfo = { accountId: info.accountId, username: info.username, deviceId: info.deviceId };
    const attached = conn.bind(peerInfo, info.tokenExpiresAt);
    // Calls a server crash left open: the answered ones this device still
    // carries may resume (server/resume.ts); the others ended, and so did any
    // call it lists that the server does not know.
    const reported = (p.calls ?? []).map((c) => c.callId);
    // Answered calls held for this device since its connection dropped (hub grace period).
    const missed = hub.reconnected(peerInfo, p.calls ?? []);
    // Several nodes: calls other nodes own are not unknown; those nodes run their side of this hello after the reply.
    const cluster = deps.cluster;
    const elsewhere = cluster ? await cluster.hello(peerInfo, p.calls ?? []) : undefined;
    if (cluster) ctx.afterReply(() => cluster.announceHello(peerInfo, p.calls ?? []));
    const ended = new Set([
      ...resumption.onHello(
        peerInfo,
        reported,
        (callId) => hub.hasParty(callId, info.deviceId) || !!elsewhere?.has(callId),
      ),
      ...openCalls.takeEndedFor(info.deviceId),
    ]);
    for (const { callId, reason } of missed) {
      ended.delete(callId);
      ctx.afterReply(() => attached.notify('call.ended', { callId, reason }));
    }
    for (const callId of ended) {
      ctx.afterReply(() => attached.notify('call.ended', { callId, reason: 'failed' }));
    }
    // Group calls this node carries that ring for the account ring this device too, after the reply
    // (other nodes' rooms: their hook for the cluster's hello broadcast, server/app.ts).
    ctx.afterReply(() => deps.roomInvitations.deviceOnline(peerInfo));
    void contacts.presenceMayHaveChanged(peerInfo);
    conn.log.info('device online');
    void audit.record({
      event: 'device.connected',
      accountId: info.accountId,
      deviceId: info.deviceId,
      detail: { remote: conn.remote },
    });
    return {
      accountId: info.accountId,
      username: info.username,
      deviceId: info.deviceId,
      serverTime: Date.now(),
      tokenExpiresAt: info.tokenExpiresAt,
    };
  });

  peer.handle('session.refresh', SignalRequests['session.refresh'].params, async () => {
    const self = conn.me();
    const fresh = await accounts.refreshToken(self.deviceId);
    conn.setTokenExpiry(fresh.expiresAt);
    void audit.record({
      event: 'session.refreshed',
      accountId: self.accountId,
      deviceId: self.deviceId,
      detail: { expiresAt: fresh.expiresAt },
    });
    return fresh;
  });

  peer.handle('session.logout', SignalRequests['session.logout'].params, async (_p, ctx) => {
    const self = conn.me();
    await accounts.revokeDevice(self.accountId, self.deviceId);
    void audit.record({ event: 'session.logout', accountId: self.accountId, deviceId: self.deviceId });
    ctx.afterReply(() => hub.disconnectDevice(self.deviceId, 'logged_out', CLOSE_REVOKED));
    return { ok: true as const };
  });
};
