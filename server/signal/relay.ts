import { SignalRequests } from '../../common/protocol/signaling';
import type { SignalModule } from './module';

/**
 * `relay.credentials`: the ICE servers a device should use — the configured
 * STUN URLs and, when coturn is configured, short-lived TURN REST credentials
 * (server/relays.ts; draft-uberti-behave-turn-rest-00).
 */
export const registerRelayHandlers: SignalModule = (conn, deps) => {
  const { relays, config } = deps;
  conn.peer.handle('relay.credentials', SignalRequests['relay.credentials'].params, async () => {
    const from = conn.me();
    const stun = config.stun.urls.length > 0 ? [{ urls: config.stun.urls }] : [];
    if (!relays.configured) {
      const ttlSeconds = config.turn.ttlSeconds;
      return {
        iceServers: stun,
        expiresAt: Math.floor(Date.now() / 1000) + ttlSeconds,
        ttlSeconds,
      };
    }
    const r = await relays.issue(from, conn.remote);
    return {
      iceServers: [...stun, { urls: r.urls, username: r.username, credential: r.password }],
      expiresAt: r.expiresAt,
      ttlSeconds: r.ttl,
    };
  });
};
