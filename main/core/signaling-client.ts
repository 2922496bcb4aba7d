import { EventEmitter } from 'node:events';
import { WebSocket } from 'ws';
import { ParleyError } from '../../common/errors';
import { RpcPeer } from '../../common/protocol/rpc';
import {
  MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  SignalNotifications,
  SignalRequests,
  type SignalMethod,
  type SignalNotification,
  type SignalNotificationParams,
  type SignalParams,
  type SignalResult,
} from '../../common/protocol/signaling';
import { checkServerUrl, signalingUrlOf } from '../../common/server-url';

export type SignalingState = 'connecting' | 'online' | 'offline';

export interface SignalingClientOptions {
  /**
   * Server base URL, e.g. `https://parley.example.org` (plain `http://` only on loopback:
   * common/server-url); the socket is `<url>/v1/signal` over wss:// (ws:// for a plain one).
   */
  serverUrl: string;
  deviceId: string;
  /** Device token from login; sent only inside `hello`, never logged. */
  token: string;
  /** First reconnect delay, ms (doubles per failure, with ±25 % jitter). */
  minBackoffMs?: number;
  /** Longest reconnect delay, ms. */
  maxBackoffMs?: number;
  /** Request timeout, ms. */
  requestTimeoutMs?: number;
}

type NotificationEvents = {
  [N in SignalNotification]: [SignalNotificationParams<N>];
};

/**
 * The client end of Parley signaling (JSON-RPC 2.0 over WebSocket, see
 * `common/protocol/signaling`). Connects, says `hello`, and reconnects with
 * exponential backoff and jitter whenever the socket drops, until `close()`.
 * A token the server refuses (`unauthenticated`, `token_expired`) and a
 * `session.ended` notification (device revoked or logged out) stop the
 * reconnecting (retrying cannot help) and report `offline` with the reason.
 *
 * Events: `state` (SignalingState, detail) and one event per server
 * notification, with params already validated.
 */
export class SignalingClient extends EventEmitter<
  NotificationEvents & { state: [SignalingState, string | undefined] }
> {
  private ws: WebSocket | undefined;
  private rpc: RpcPeer | undefined;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private _state: SignalingState = 'offline';
  private token: string;
  private _tokenExpiresAt: number | undefined;
  private onlineWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private readonly helloSteps: ((request: <M extends SignalMethod>(method: M, params: SignalParams<M>) => Promise<SignalResult<M>>) => Promise<void>)[] = [];
  private liveCalls: () => Array<{ callId: string; received?: number }> = () => [];
  /** `<serverUrl>/v1/signal`, wss:// unless the server is on loopback over plain http. */
  private readonly signalUrl: URL;

  /**
   * @throws ParleyError `invalid_params` for a plain http:// / ws:// address of another computer
   *   (common/server-url), before anything is sent.
   */
  constructor(private readonly options: SignalingClientOptions) {
    super();
    this.signalUrl = signalingUrlOf(checkServerUrl(options.serverUrl));
    this.token = options.token;
    // The server ended this device's session (revoked, logged out, expired): retrying cannot help.
    this.on('session.ended', ({ reason }) => {
      this.closed = true;
      clearTimeout(this.reconnectTimer);
      this.setState('offline', `session ended: ${reason.replace('_', ' ')}`);
    });
  }

  get state(): SignalingState {
    return this._state;
  }

  /** When the device token stops working, Unix ms (from the last hello or `setToken`); undefined before the first hello. */
  get tokenExpiresAt(): number | undefined {
    return this._tokenExpiresAt;
  }

  /**
   * Uses a new device token from now on (after `session.refresh`): the next
   * reconnect says hello with it. Never logged.
   * @param expiresAt when it stops working, Unix ms.
   */
  setToken(token: string, expiresAt: number): void {
    this.token = token;
    this._tokenExpiresAt = expiresAt;
  }

  /**
   * Adds a step run on every connection after a successful hello and before
   * the client reports `online` (e.g. publishing this device's key bundle, so
   * nobody can reach the device before its keys are on the server). A failing
   * step drops the connection (it is retried with the usual backoff).
   */
  afterHello(step: (request: <M extends SignalMethod>(method: M, params: SignalParams<M>) => Promise<SignalResult<M>>) => Promise<void>): void {
    this.helloSteps.push(step);
  }

  /**
   * Tells the client which answered calls this device carries, so that every
   * `hello` lists them (`calls`): after a server crash a call both devices
   * list resumes, and one the server no longer knows comes back as
   * `call.ended` (server/resume.ts). With each, how many `call.candidate`
   * messages of it arrived (`received`), so the server sends again what a
   * dead connection lost. The call engine registers itself here.
   */
  reportCallsWith(liveCalls: () => Array<{ callId: string; received?: number }>): void {
    this.liveCalls = liveCalls;
  }

  /** Starts connecting (and keeps reconnecting). Resolves when first online. */
  connect(): Promise<void> {
    this.closed = false;
    const ready = this.waitOnline();
    this.open();
    return ready;
  }

  /** Resolves when online; rejects if the client is closed or the token is refused first. */
  waitOnline(): Promise<void> {
    if (this._state === 'online') return Promise.resolve();
    return new Promise((resolve, reject) => this.onlineWaiters.push({ resolve, reject }));
  }

  /**
   * Sends a request and returns its validated result.
   * @throws ParleyError from the server, or `unavailable` when offline or on timeout.
   */
  async request<M extends SignalMethod>(method: M, params: SignalParams<M>): Promise<SignalResult<M>> {
    if (!this.rpc || this._state !== 'online') {
      throw new ParleyError('unavailable', 'not connected to the Parley server');
    }
    const raw = await this.rpc.request(method, params);
    const parsed = SignalRequests[method].result.safeParse(raw);
    if (!parsed.success) throw new ParleyError('internal_error', `the server sent an invalid reply to ${method}`);
    return parsed.data as SignalResult<M>;
  }

  /**
   * After a suspend (a clock jump) or a network change: makes sure the
   * connection is alive now instead of at the next keep-alive. Online, it
   * pings the server and drops the socket (reconnecting at once) if no pong
   * comes within `timeoutMs`; waiting for a reconnect, it tries at once.
   * @param timeoutMs how long to wait for the pong, ms.
   */
  checkAlive(timeoutMs = 2000): void {
    if (this.closed) return;
    const ws = this.ws;
    if (!ws) {
      clearTimeout(this.reconnectTimer);
      this.attempt = 0;
      this.open();
      return;
    }
    if (ws.readyState !== WebSocket.OPEN) return;
    const timer = setTimeout(() => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      ws.terminate(); // 'close' follows: offline, then a reconnect after the shortest backoff
    }, timeoutMs);
    timer.unref();
    ws.once('pong', () => clearTimeout(timer));
    try {
      ws.ping();
    } catch {
      // closing already: 'close' takes it from here
    }
  }

  /**
   * After a network change: the socket may be bound to an address that is
   * gone, and the server would write into it until its keep-alive noticed.
   * Drops it and connects again at once (over the new path).
   */
  reconnectNow(): void {
    if (this.closed) return;
    clearTimeout(this.reconnectTimer);
    this.attempt = 0;
    const ws = this.ws;
    if (!ws) {
      this.open();
      return;
    }
    this.ws = undefined;
    this.rpc?.close('connection replaced');
    this.rpc = undefined;
    ws.terminate();
    this.setState('offline', 'network changed; reconnecting');
    this.open();
  }

  /** Closes the connection for good. */
  close(): void {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.rpc?.close();
    this.ws?.close(1000, 'client closing');
    this.ws = undefined;
    this.setState('offline', 'closed');
    for (const w of this.onlineWaiters.splice(0)) w.reject(new ParleyError('unavailable', 'signaling closed'));
  }

  private setState(state: SignalingState, detail?: string): void {
    if (state === this._state && state !== 'offline') return;
    this._state = state;
    this.emit('state', state, detail);
  }

  private open(): void {
    if (this.closed) return;
    this.setState('connecting');
    const url = this.signalUrl;
    const ws = new WebSocket(url, { maxPayload: 1024 * 1024, handshakeTimeout: 10_000 });
    this.ws = ws;
    const rpc = new RpcPeer((text) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(text);
    }, { maxMessageBytes: MAX_MESSAGE_BYTES, requestTimeoutMs: this.options.requestTimeoutMs ?? 10_000 });
    this.rpc = rpc;
    for (const [name, schema] of Object.entries(SignalNotifications)) {
      rpc.handle(name, schema, (params) => {
        (this.emit as (event: string, p: unknown) => boolean)(name, params);
      });
    }
    ws.on('message', (data) => void rpc.receive(data.toString(), undefined));
    ws.on('open', async () => {
      try {
        const calls = this.liveCalls().slice(0, 16);
        const hello = await rpc.request<{ tokenExpiresAt?: unknown }>('hello', {
          protocol: PROTOCOL_VERSION,
          deviceId: this.options.deviceId,
          token: this.token,
          ...(calls.length > 0 ? { calls } : {}),
        });
        if (typeof hello.tokenExpiresAt === 'number') this._tokenExpiresAt = hello.tokenExpiresAt;
        for (const step of this.helloSteps) {
          await step(async (method, params) => {
            const raw = await rpc.request(method, params);
            const parsed = SignalRequests[method].result.safeParse(raw);
            if (!parsed.success) throw new ParleyError('internal_error', `the server sent an invalid reply to ${method}`);
            return parsed.data as never;
          });
        }
        this.attempt = 0;
        this.setState('online');
        for (const w of this.onlineWaiters.splice(0)) w.resolve();
      } catch (e) {
        const err = e instanceof ParleyError ? e : new ParleyError('unavailable', String(e));
        if (
          err.reason === 'unauthenticated' ||
          err.reason === 'token_expired' ||
          err.reason === 'protocol_version'
        ) {
          // Retrying cannot help: stop and say why.
          this.closed = true;
          ws.close(1000);
          this.setState('offline', err.message);
          for (const w of this.onlineWaiters.splice(0)) w.reject(err);
        } else {
          ws.close(1011);
        }
      }
    });
    ws.on('error', () => {
      /* 'close' follows and schedules the reconnect */
    });
    ws.on('close', () => {
      rpc.close('connection closed');
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.rpc = undefined;
      if (this.closed) return;
      this.setState('offline', 'connection lost; reconnecting');
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    const min = this.options.minBackoffMs ?? 500;
    const max = this.options.maxBackoffMs ?? 30_000;
    const base = Math.min(max, min * 2 ** this.attempt++);
    const delay = base * (0.75 + Math.random() * 0.5);
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }
}
