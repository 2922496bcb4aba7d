import type { DeviceLinks } from './device-links';
import type { Logger } from 'pino';
import type { WebSocket, RawData } from 'ws';
import { ParleyError } from '../common/errors';
import { RpcPeer } from '../common/protocol/rpc';
import {
  MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  SignalRequests,
  type PeerInfo,
} from '../common/protocol/signaling';
import type { Accounts } from './accounts';
import type { CallerApprovals } from './approvals';
import type { Contacts } from './contacts';
import type { CallPolicy } from './policy';
import type { OpenCalls } from './open-calls';
import type { CallResumption } from './resume';
import type { RelayService } from './relays';
import type { AuditLog } from './audit';
import type { ServerConfig } from './config';
import { CLOSE_EXPIRED, CLOSE_HELLO_TIMEOUT, CLOSE_REVOKED, type DeviceLink, type Hub, type Routed } from './hub';
import type { Envelope } from '../common/protocol/envelope';
import type { Interceptor } from './intercept';
import type { ServerMetrics } from './metrics';
import { TokenBucket, WindowCounter } from './rate-limit';
import { clientKey } from './front-door';

/** Per-message context: work to run once the request's reply has been sent. */
interface Ctx {
  afterReply: (fn: () => void) => void;
}

export interface SignalDeps {
  accounts: Accounts;
  contacts: Contacts;
  policy: CallPolicy;
  relays: RelayService;
  openCalls: OpenCalls;
  /** Answered calls a crash left open, waiting for their devices (server/resume.ts). */
  resumption: CallResumption;
  approvals: CallerApprovals;
  /** Device-linking rendezvous (server/device-links.ts). */
  links: DeviceLinks;
  hub: Hub;
  /** The live configuration (config.reload replaces its fields; read at use). */
  config: ServerConfig;
  log: Logger;
  audit: AuditLog;
  metrics: ServerMetrics;
  /** TEST ONLY (server/intercept.ts): rewrites outbound messages; absent in production. */
  intercept?: Interceptor | undefined;
}

/** Frames a connection may have queued before the server stops reading them (back-pressure). */
const MAX_QUEUED_FRAMES = 256;

/** Window in which rate-limited messages are counted to detect sustained abuse, ms. */
const ABUSE_WINDOW_MS = 10_000;
/** A connection with more rate-limited messages than this many bursts in one window is closed (1008). */
const ABUSE_BURSTS = 5;

/**
 * Serves one signaling WebSocket (`/v1/signal`): JSON-RPC 2.0 through
 * RpcPeer with the `SignalRequests` schemas. Until a successful `hello`, every
 * other method is refused with `unauthenticated` and the connection stays
 * open. Frames are handled one at a time, in order, so a candidate sent right
 * after an invite always finds its call. Envelopes are routed, never parsed or logged.
 *
 * Each connection may send `config.limits.messagesPerSecond` messages per
 * second with bursts of `messageBurst` (token bucket). A message over the
 * limit is answered at once with `rate_limited` and `retryAfter` (seconds) and
 * not handled; the connection stays open. More than ABUSE_BURSTS × burst such
 * messages within ABUSE_WINDOW_MS close it with 1008.
 *
 * A connection that has not completed `hello` within
 * `config.limits.helloTimeoutSeconds` of connecting (a failed hello does not
 * count) is closed with CLOSE_HELLO_TIMEOUT (4004, reason "hello timeout …") and
 * counted in `parley_hello_timeouts_total`: idle sockets cannot pile up.
 */
export function serveSignalSocket(socket: WebSocket, remote: string, deps: SignalDeps): void {
  const {
    accounts,
    contacts,
    policy,
    relays,
    openCalls,
    resumption,
    approvals,
    links,
    hub,
    config,
    audit,
    metrics,
  } = deps;
  let log = deps.log.child({ remote });
  let link: DeviceLink | undefined;
  let closed = false;
  /** When this connection's device token stops working, Unix ms (after hello). */
  let tokenExpiresAt = Infinity;
  let expiryTimer: NodeJS.Timeout | undefined;
  /** Closes the connection when the token expires (re-armed by session.refresh). */
  const armExpiry = (): void => {
    clearTimeout(expiryTimer);
    const left = tokenExpiresAt - Date.now();
    expiryTimer = setTimeout(
      () => {
        if (Date.now() < tokenExpiresAt) return armExpiry();
        if (link) hub.disconnectDevice(link.peer.deviceId, 'expired', CLOSE_EXPIRED);
        else socket.close(CLOSE_EXPIRED, 'expired');
      },
      Math.max(0, Math.min(left, 2 ** 31 - 1)),
    );
    expiryTimer.unref();
  };

  const helloSeconds = config.limits.helloTimeoutSeconds;
  const helloDeadline = setTimeout(() => {
    if (link || closed) return;
    metrics.helloTimeouts.inc();
    log.debug({ helloTimeoutSeconds: helloSeconds }, 'no hello in time; closing');
    socket.close(CLOSE_HELLO_TIMEOUT, `hello timeout: no successful hello within ${helloSeconds} s`);
  }, helloSeconds * 1000);
  helloDeadline.unref();

  const sendRaw = (text: string): void => {
    metrics.countOutbound(text);
    if (socket.readyState === socket.OPEN) socket.send(text);
  };
  const intercept = deps.intercept;
  const send = !intercept
    ? sendRaw
    : (text: string): void => {
        const to = link ? { username: link.peer.username, deviceId: link.peer.deviceId } : undefined;
        for (const m of intercept.outbound(JSON.parse(text) as Record<string, unknown>, to)) sendRaw(JSON.stringify(m));
      };
  const peer = new RpcPeer<Ctx>(send, {
    maxMessageBytes: MAX_MESSAGE_BYTES,
    onInternalError: (method, err) => log.error({ err, method }, 'signal handler failed'),
  });

  const me = (): PeerInfo => {
    if (!link)
      throw new ParleyError('unauthenticated', 'send hello with your device id and token first');
    if (Date.now() >= tokenExpiresAt) {
      armExpiry();
      throw new ParleyError(
        'token_expired',
        'this sign-in has expired; sign in again with your password',
      );
    }
    return link.peer;
  };

  peer.handle('hello', SignalRequests.hello.params, async (p, ctx) => {
    if (link)
      throw new ParleyError('invalid_state', 'hello was already accepted on this connection');
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
        const address = clientKey(remote);
        void audit.recordSampled(
          `device.auth_failed:${address}:${p.deviceId}`,
          { event: 'device.auth_failed', deviceId: p.deviceId, detail: { remote, reason: e.reason } },
          { key: `device.auth_failed:${address}`, detail: { remote } },
        );
      }
      throw e;
    }
    if (closed) throw new ParleyError('unavailable', 'connection closed');
    if (link)
      throw new ParleyError('invalid_state', 'hello was already accepted on this connection');
    tokenExpiresAt = info.tokenExpiresAt;
    const peerInfo: PeerInfo = {
      accountId: info.accountId,
      username: info.username,
      deviceId: info.deviceId,
    };
    link = {
      peer: peerInfo,
      notify: (method, params) => {
        if (!closed) peer.notify(method, params);
      },
      close: (code, reason) => socket.close(code, reason),
    };
    clearTimeout(helloDeadline);
    log = log.child({ accountId: info.accountId, deviceId: info.deviceId });
    hub.attach(link);
    armExpiry();
    // Calls a server crash left open: the answered ones this device still
    // carries may resume (server/resume.ts); the others ended, and so did any
    // call it lists that the server does not know.
    const attached = link;
    const reported = (p.calls ?? []).map((c) => c.callId);
    // Answered calls held for this device since its connection dropped (hub grace period).
    const missed = hub.reconnected(peerInfo, p.calls ?? []);
    const ended = new Set([
      ...resumption.onHello(peerInfo, reported, (callId) => hub.hasParty(callId, info.deviceId)),
      ...openCalls.takeEndedFor(info.deviceId),
    ]);
    for (const { callId, reason } of missed) {
      ended.delete(callId);
      ctx.afterReply(() => attached.notify('call.ended', { callId, reason }));
    }
    for (const callId of ended) {
      ctx.afterReply(() => attached.notify('call.ended', { callId, reason: 'failed' }));
    }
    void contacts.presenceMayHaveChanged(peerInfo);
    log.info('device online');
    void audit.record({
      event: 'device.connected',
      accountId: info.accountId,
      deviceId: info.deviceId,
      detail: { remote },
    });
    return {
      accountId: info.accountId,
      username: info.username,
      deviceId: info.deviceId,
      serverTime: Date.now(),
      tokenExpiresAt: info.tokenExpiresAt,
    };
  });

  peer.handle('call.invite', SignalRequests['call.invite'].params, async (p, ctx) => {
    const from = me();
    /** The real reason behind a refusal, when the caller is told something else (a block). */
    let refusedBecause: string | undefined;
    try {
      const callee = await accounts.findByUsername(p.callee);
      if (!callee) throw new ParleyError('unknown_user', `no account named ${p.callee}`);
      await policy.checkInvite(from, callee);
      const blocked = await checkCallAllowed(from, callee, contacts, accounts);
      // A blocked caller goes through the approval step too (silently: the callee is
      // not asked), so that it gets exactly what it would get from an offline callee.
      await approvals.check(from, callee, { silent: blocked }).catch((e: unknown) => {
        if (blocked) refusedBecause = 'blocked';
        throw e;
      });
      if (blocked) {
        refusedBecause = 'blocked';
        throw calleeOffline(callee.username);
      }
      if (closed) throw new ParleyError('unavailable', 'connection closed');
      return hub.invite(from, p.callId, callee, routedOf(p), ctx.afterReply);
    } catch (e) {
      if (e instanceof ParleyError) {
        void audit.record({
          event: 'call.refused',
          accountId: from.accountId,
          deviceId: from.deviceId,
          callId: p.callId,
          detail: { callee: p.callee, reason: refusedBecause ?? e.reason },
        });
      }
      throw e;
    }
  });
  peer.handle('call.ringing', SignalRequests['call.ringing'].params, (p) => {
    hub.ringing(me(), p.callId);
    return { ok: true as const };
  });
  peer.handle('call.answer', SignalRequests['call.answer'].params, (p) => {
    hub.answer(me(), p.callId, p.envelope);
    return { ok: true as const };
  });
  peer.handle('call.reject', SignalRequests['call.reject'].params, (p) => {
    hub.reject(me(), p.callId, p.reason);
    return { ok: true as const };
  });
  peer.handle('call.cancel', SignalRequests['call.cancel'].params, (p) => {
    hub.cancel(me(), p.callId);
    return { ok: true as const };
  });
  peer.handle('call.hangup', SignalRequests['call.hangup'].params, (p) => {
    hub.hangup(me(), p.callId, p.reason);
    return { ok: true as const };
  });
  peer.handle('call.candidate', SignalRequests['call.candidate'].params, (p) => {
    hub.candidate(me(), p.callId, routedOf(p));
    return { ok: true as const };
  });
  peer.handle('call.security', SignalRequests['call.security'].params, (p) => {
    const from = me();
    hub.securityFailure(from, p.callId, p.reason);
    log.warn({ callId: p.callId, reason: p.reason }, 'a client reported a failed end-to-end security check');
    void audit.record({
      event: 'call.security_failure',
      accountId: from.accountId,
      deviceId: from.deviceId,
      callId: p.callId,
      detail: { reason: p.reason },
    });
    return { ok: true as const };
  });

  // ---- device keys (end-to-end security) ------------------------------------------

  peer.handle('keys.publish', SignalRequests['keys.publish'].params, async (p) => {
    const self = me();
    const { replaced, accountKeyReplaced } = await accounts.publishKeys(self, p.bundle, { accountKey: p.accountKey, certificate: p.certificate });
    void audit.record({
      event: 'device.keys_published',
      accountId: self.accountId,
      deviceId: self.deviceId,
      detail: { identityKey: p.bundle.ik, replaced, certified: !!p.certificate },
    });
    if (accountKeyReplaced && p.accountKey) {
      void audit.record({ event: 'account.key_replaced', accountId: self.accountId, deviceId: self.deviceId, detail: { accountKey: p.accountKey.key } });
    }
    return { ok: true as const };
  });
  peer.handle('keys.get', SignalRequests['keys.get'].params, async (p) => {
    const self = me();
    let accountId = self.accountId;
    if (p.username !== self.username) {
      const target = await accounts.findByUsername(p.username);
      if (!target) throw new ParleyError('unknown_user', `no account named ${p.username}`);
      // Only for accounts I may call; a block looks like an account with no devices.
      if (await checkCallAllowed(self, target, contacts, accounts)) return { devices: [] };
      accountId = target.accountId;
    }
    const [keys, accountKey] = await Promise.all([accounts.deviceKeys(accountId), accounts.accountKey(accountId)]);
    return { ...(accountKey ? { accountKey } : {}), devices: keys.map((k) => ({ ...k, online: hub.isOnline(k.deviceId) })) };
  });

  // ---- device linking: a rendezvous the server routes but cannot forge (server/device-links.ts) ----

  peer.handle('link.open', SignalRequests['link.open'].params, (p) => {
    const self = me();
    links.openLink(p.linkId, self);
    void audit.record({ event: 'device.link', accountId: self.accountId, deviceId: self.deviceId, detail: { step: 'open' } });
    return { ok: true as const };
  });
  peer.handle('link.request', SignalRequests['link.request'].params, (p) => {
    const self = me();
    const open = links.find(p.linkId, self.accountId);
    if (!open || open.deviceId === self.deviceId || !hub.isOnline(open.deviceId)) {
      throw new ParleyError('not_found', 'no device of your account is showing that link code now; show a new code ("parley devices link") and try again');
    }
    hub.notifyDevice(open.deviceId, 'link.request', { linkId: p.linkId, deviceId: self.deviceId, request: p.request });
    void audit.record({ event: 'device.link', accountId: self.accountId, deviceId: self.deviceId, detail: { step: 'request' } });
    return { ok: true as const };
  });
  peer.handle('link.reply', SignalRequests['link.reply'].params, async (p) => {
    const self = me();
    const open = links.find(p.linkId, self.accountId);
    if (!open || open.deviceId !== self.deviceId) throw new ParleyError('not_found', 'this device has no open link with that id');
    const target = (await accounts.deviceKeys(self.accountId)).some((k) => k.deviceId === p.deviceId);
    if (!target) throw new ParleyError('not_found', 'no such device on this account');
    links.close(p.linkId);
    hub.notifyDevice(p.deviceId, 'link.reply', { linkId: p.linkId, reply: p.reply });
    void audit.record({ event: 'device.link', accountId: self.accountId, deviceId: self.deviceId, detail: { step: 'reply' } });
    return { ok: true as const };
  });
  peer.handle('relay.credentials', SignalRequests['relay.credentials'].params, async () => {
    const from = me();
    const stun = config.stun.urls.length > 0 ? [{ urls: config.stun.urls }] : [];
    if (!relays.configured) {
      const ttlSeconds = config.turn.ttlSeconds;
      return {
        iceServers: stun,
        expiresAt: Math.floor(Date.now() / 1000) + ttlSeconds,
        ttlSeconds,
      };
    }
    const r = await relays.issue(from);
    return {
      iceServers: [...stun, { urls: r.urls, username: r.username, credential: r.password }],
      expiresAt: r.expiresAt,
      ttlSeconds: r.ttl,
    };
  });

  // ---- devices and sessions --------------------------------------------------------

  peer.handle('devices.list', SignalRequests['devices.list'].params, async () => {
    const self = me();
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
    const self = me();
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
  peer.handle('session.refresh', SignalRequests['session.refresh'].params, async () => {
    const self = me();
    const fresh = await accounts.refreshToken(self.deviceId);
    tokenExpiresAt = fresh.expiresAt;
    armExpiry();
    void audit.record({
      event: 'session.refreshed',
      accountId: self.accountId,
      deviceId: self.deviceId,
      detail: { expiresAt: fresh.expiresAt },
    });
    return fresh;
  });
  peer.handle('session.logout', SignalRequests['session.logout'].params, async (_p, ctx) => {
    const self = me();
    await accounts.revokeDevice(self.accountId, self.deviceId);
    void audit.record({
      event: 'session.logout',
      accountId: self.accountId,
      deviceId: self.deviceId,
    });
    ctx.afterReply(() => hub.disconnectDevice(self.deviceId, 'logged_out', CLOSE_REVOKED));
    return { ok: true as const };
  });

  // ---- contacts, presence, settings ------------------------------------------------

  peer.handle('contacts.list', SignalRequests['contacts.list'].params, () => contacts.list(me()));
  peer.handle('contacts.request', SignalRequests['contacts.request'].params, (p) =>
    contacts.request(me(), p.username),
  );
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

  const bucket = new TokenBucket(config.limits.messagesPerSecond, config.limits.messageBurst);
  let bucketLimits = config.limits;
  const abuse = new WindowCounter(ABUSE_WINDOW_MS);
  let limited = false;
  /** Answers a message over the rate limit (without handling it); true when it was over. */
  const overRate = (text: string): boolean => {
    if (bucketLimits !== config.limits) {
      bucketLimits = config.limits;
      bucket.configure(bucketLimits.messagesPerSecond, bucketLimits.messageBurst);
    }
    const verdict = bucket.take();
    if (verdict.ok) {
      limited = false;
      return false;
    }
    if (!limited) {
      limited = true;
      log.warn({ retryAfter: verdict.retryAfter }, 'message rate limit hit');
      void audit.record({
        event: 'rate_limited',
        accountId: link?.peer.accountId ?? null,
        deviceId: link?.peer.deviceId ?? null,
        detail: { scope: 'messages', remote, retryAfter: verdict.retryAfter },
      });
    }
    if (abuse.add(ABUSE_BURSTS * bucketLimits.messageBurst)) {
      log.warn('sustained message flood; closing');
      socket.close(1008, 'message rate limit exceeded');
      return true;
    }
    const error = new ParleyError(
      'rate_limited',
      `too many messages; wait ${verdict.retryAfter} s before sending more`,
      { retryAfter: verdict.retryAfter },
    ).toJsonRpc();
    send(JSON.stringify({ jsonrpc: '2.0', id: requestId(text), error }));
    return true;
  };

  // One frame at a time, in arrival order.
  let queue: Promise<void> = Promise.resolve();
  let queued = 0;
  const handleFrame = async (text: string): Promise<void> => {
    const deferred: (() => void)[] = [];
    await peer.receive(text, { afterReply: (fn) => deferred.push(fn) });
    for (const fn of deferred) fn();
  };

  socket.on('message', (data: RawData) => {
    const text = rawToText(data);
    if (closed || overRate(text)) return;
    if (++queued > MAX_QUEUED_FRAMES) {
      log.warn('too many queued frames; closing');
      socket.close(1008, 'too many messages in flight');
      return;
    }
    queue = queue
      .then(() => handleFrame(text))
      .catch((err: unknown) => log.error({ err }, 'signal frame failed'))
      .finally(() => {
        queued--;
      });
  });
  socket.on('error', (err) => log.warn({ err: { message: err.message } }, 'signal socket error'));
  socket.on('close', (code) => {
    closed = true;
    clearTimeout(expiryTimer);
    clearTimeout(helloDeadline);
    peer.close();
    if (link) {
      hub.detach(link);
      void contacts.presenceMayHaveChanged(link.peer);
      log.info({ code }, 'device offline');
      void audit.record({
        event: 'device.disconnected',
        accountId: link.peer.accountId,
        deviceId: link.peer.deviceId,
        detail: { code },
      });
    }
  });
}

/**
 * May `caller` call `callee`? The callee's "only contacts may call me"
 * setting is checked first (`not_contact`, which an offline callee gives
 * too), then blocks. A blocked caller must then get exactly what an offline
 * callee would give (the caller's `callee_offline` error, after the same
 * approval step), so a block is never revealed: the caller does that.
 * @returns true when the callee blocked the caller.
 * @throws ParleyError `not_contact`.
 */
export async function checkCallAllowed(
  caller: PeerInfo,
  callee: { accountId: string; username: string },
  contacts: Contacts,
  accounts: Accounts,
): Promise<boolean> {
  if (callee.accountId === caller.accountId) return false; // the hub refuses it with `forbidden`
  if (
    (await accounts.contactsOnly(callee.accountId)) &&
    !(await contacts.areContacts(callee.accountId, caller.accountId))
  ) {
    throw new ParleyError(
      'not_contact',
      `${callee.username} only takes calls from contacts; send a contact request first`,
    );
  }
  return contacts.hasBlocked(callee.accountId, caller.accountId);
}

/** The error for a callee with no device online (also what a blocked caller gets). */
export function calleeOffline(username: string): ParleyError {
  return new ParleyError('callee_offline', `${username} is not online`);
}

/** The routing part of an invite or candidate: one envelope for all, or one per device. */
function routedOf(p: { envelope?: Envelope | undefined; envelopes?: Record<string, Envelope> | undefined }): Routed {
  return p.envelopes ? { envelopes: p.envelopes } : { envelope: p.envelope! };
}

/** The id of a JSON-RPC request frame, or null (notification, unreadable or oversized frame). */
function requestId(text: string): string | number | null {
  if (text.length > MAX_MESSAGE_BYTES) return null;
  try {
    const id = (JSON.parse(text) as { id?: unknown } | null)?.id;
    return typeof id === 'string' || typeof id === 'number' ? id : null;
  } catch {
    return null;
  }
}

function rawToText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8');
  return data.toString('utf8');
}
