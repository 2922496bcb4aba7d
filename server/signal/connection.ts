import type { WebSocket, RawData } from 'ws';
import { ParleyError } from '../../common/errors';
import { RpcPeer } from '../../common/protocol/rpc';
import { MAX_MESSAGE_BYTES, type PeerInfo } from '../../common/protocol/signaling';
import { CLOSE_EXPIRED, CLOSE_HELLO_TIMEOUT, type DeviceLink } from '../hub';
import { TokenBucket, WindowCounter } from '../rate-limit';
import { registerCallHandlers } from './calls';
import { registerContactHandlers } from './contacts';
import { registerDeviceHandlers } from './devices';
import { registerKeyHandlers } from './keys';
import type { Ctx, SignalConnection, SignalDeps, SignalModule } from './module';
import { registerRelayHandlers } from './relay';
import { registerSessionHandlers } from './session';
import { registerRoomHandlers } from '../sfu/signal-handlers';

/**
 * The handler modules every connection registers, by concern. A new group of
 * methods (e.g. the SFU's rooms) adds its module here.
 */
export const SIGNAL_MODULES: readonly SignalModule[] = [
  registerSessionHandlers,
  registerCallHandlers,
  registerKeyHandlers,
  registerDeviceHandlers,
  registerRelayHandlers,
  registerContactHandlers,
  registerRoomHandlers,
];

/** Frames a connection may have queued before the server stops reading them (back-pressure). */
const MAX_QUEUED_FRAMES = 256;

/** Window in which rate-limited messages are counted to detect sustained abuse, ms. */
const ABUSE_WINDOW_MS = 10_000;
/** A connection with more rate-limited messages than this many bursts in one window is closed (1008). */
const ABUSE_BURSTS = 5;

/**
 * Serves one signaling WebSocket (`/v1/signal`): JSON-RPC 2.0 through
 * RpcPeer with the `SignalRequests` schemas, handlers registered by
 * SIGNAL_MODULES. Until a successful `hello`, every other method is refused
 * with `unauthenticated` and the connection stays open. Frames are handled one
 * at a time, in order, so a candidate sent right after an invite always finds
 * its call. Envelopes are routed, never parsed or logged.
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
export function serveSignalSocket(
  socket: WebSocket,
  remote: string,
  deps: SignalDeps,
  modules: readonly SignalModule[] = SIGNAL_MODULES,
): void {
  const { hub, config, audit, metrics, contacts } = deps;
  let log = deps.log.child({ remote });
  let link: DeviceLink | undefined;
  let closed = false;
  const closeHooks: (() => void)[] = [];
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

  const conn: SignalConnection = {
    peer,
    remote,
    get log() {
      return log;
    },
    get link() {
      return link;
    },
    me(): PeerInfo {
      if (!link) throw new ParleyError('unauthenticated', 'send hello with your device id and token first');
      if (Date.now() >= tokenExpiresAt) {
        armExpiry();
        throw new ParleyError('token_expired', 'this sign-in has expired; sign in again with your password');
      }
      return link.peer;
    },
    isClosed: () => closed,
    bind(info: PeerInfo, expiresAt: number): DeviceLink {
      if (closed) throw new ParleyError('unavailable', 'connection closed');
      if (link) throw new ParleyError('invalid_state', 'hello was already accepted on this connection');
      tokenExpiresAt = expiresAt;
      link = {
        peer: info,
        notify: (method, params) => {
          if (!closed) peer.notify(method, params);
        },
        close: (code, reason) => socket.close(code, reason),
      };
      clearTimeout(helloDeadline);
      log = log.child({ accountId: info.accountId, deviceId: info.deviceId });
      hub.attach(link);
      armExpiry();
      return link;
    },
    setTokenExpiry(expiresAt: number): void {
      tokenExpiresAt = expiresAt;
      armExpiry();
    },
    onClose(fn: () => void): void {
      closeHooks.push(fn);
    },
  };
  for (const register of modules) register(conn, deps);
  // Several nodes: room requests about another node's room go there (server/sfu/room-proxy.ts).
  const roomProxy = deps.roomProxy?.attach(send, () => conn.me());

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
    if (roomProxy && (await roomProxy.intercept(text))) return;
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
    roomProxy?.close();
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
    for (const fn of closeHooks) {
      try {
        fn();
      } catch (err) {
        log.error({ err }, 'close hook failed');
      }
    }
  });
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
