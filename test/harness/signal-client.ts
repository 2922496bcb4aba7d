/**
 * A small signaling client for tests: HTTP helpers (register, login) and a
 * WebSocket JSON-RPC 2.0 client built on the same RpcPeer and schemas as the
 * real clients. Requests reject with `ParleyError` (match on `.reason`);
 * server notifications are queued and awaited with `nextNotification`, which
 * also checks them against `SignalNotifications`.
 *
 * ```ts
 * const alice = await signIn(server, 'alice');            // register + login + connect + hello
 * const bob = await signIn(server, 'bob');
 * await alice.client.request('call.invite', { callId, callee: 'bob', envelope });
 * const incoming = await bob.client.nextNotification('call.incoming', { callId });
 * ```
 */
import { randomUUID } from 'node:crypto';
import { WebSocket } from 'ws';
import { z } from 'zod';
import { ParleyError, type ParleyErrorData } from '../../common/errors';
import type { Envelope } from '../../common/protocol/envelope';
import { RpcPeer } from '../../common/protocol/rpc';
import {
  HttpError,
  LoginReply,
  PROTOCOL_VERSION,
  RegisterReply,
  SignalNotifications,
  SignalRequests,
  type SignalMethod,
  type SignalNotification,
  type SignalNotificationParams,
  type SignalParams,
  type SignalResult,
} from '../../common/protocol/signaling';

/** Something with the server's base URL and WebSocket URL (a `RunningServer` fits). */
export interface ServerAddress {
  url: string;
  wsUrl: string;
}

/** An HTTP reply: status and parsed JSON body. */
export interface HttpReply<T = unknown> {
  status: number;
  body: T;
}

/** A password long enough for the server's rules, used when a test does not care. */
export const DEFAULT_PASSWORD = 'correct horse battery staple';

/**
 * Sends a JSON request to the server's HTTP API; never throws for an HTTP error status.
 * @param body sent as JSON; a string is sent as-is (to test malformed bodies).
 */
export async function httpJson<T = unknown>(
  baseUrl: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<HttpReply<T>> {
  const res = await fetch(new URL(path, baseUrl), {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // leave as text
  }
  return { status: res.status, body: parsed as T };
}

function httpFailure(reply: HttpReply): ParleyError {
  const e = HttpError.safeParse(reply.body);
  if (!e.success)
    return new ParleyError('internal_error', `HTTP ${reply.status}: ${JSON.stringify(reply.body)}`);
  const err = ParleyError.fromJsonRpc(e.data.error);
  (err as ParleyError & { status?: number }).status = reply.status;
  return err;
}

/**
 * `POST /v1/accounts`.
 * @throws ParleyError with the server's reason (`already_exists`, `invalid_params`).
 */
export async function register(
  baseUrl: string,
  username: string,
  password = DEFAULT_PASSWORD,
): Promise<z.infer<typeof RegisterReply>> {
  const reply = await httpJson(baseUrl, 'POST', '/v1/accounts', { username, password });
  if (reply.status >= 300) throw httpFailure(reply);
  return RegisterReply.parse(reply.body);
}

/**
 * `POST /v1/sessions`: a new device and its token.
 * @throws ParleyError with the server's reason (`bad_credentials`, `invalid_params`).
 */
export async function login(
  baseUrl: string,
  username: string,
  password = DEFAULT_PASSWORD,
  deviceName = 'test',
): Promise<LoginReply> {
  const reply = await httpJson(baseUrl, 'POST', '/v1/sessions', { username, password, deviceName });
  if (reply.status >= 300) throw httpFailure(reply);
  return LoginReply.parse(reply.body);
}

/** A notification received from the server, in arrival order. */
export interface ReceivedNotification {
  method: string;
  params: unknown;
}

interface Waiter<T> {
  match: (item: T) => boolean;
  resolve: (item: T) => void;
}

/**
 * A signaling WebSocket connection speaking JSON-RPC 2.0 through RpcPeer.
 * Notifications are buffered from the moment the socket opens.
 */
export class SignalClient {
  /** The last socket-level error (connection reset, …), if any. */
  lastError: Error | undefined;

  /** Resolves when the socket closes, with the close code and reason. */
  readonly closed: Promise<{ code: number; reason: string }>;

  private readonly peer: RpcPeer;
  private readonly queue: ReceivedNotification[] = [];
  private readonly all: ReceivedNotification[] = [];
  private readonly frameLog: unknown[] = [];
  private readonly notificationWaiters = new Set<Waiter<ReceivedNotification>>();
  private readonly frameWaiters = new Set<Waiter<unknown>>();

  private constructor(readonly socket: WebSocket) {
    this.peer = new RpcPeer((text) => socket.send(text), {
      maxMessageBytes: 4 * 1024 * 1024,
      requestTimeoutMs: 10_000,
    });
    for (const method of Object.keys(SignalNotifications)) {
      this.peer.handle(method, z.unknown(), (params) => this.onNotification({ method, params }));
    }
    socket.on('message', (data) => {
      const text = data.toString();
      let frame: unknown = text;
      try {
        frame = JSON.parse(text);
      } catch {
        // keep raw text
      }
      this.frameLog.push(frame);
      for (const w of [...this.frameWaiters]) {
        if (w.match(frame)) {
          this.frameWaiters.delete(w);
          w.resolve(frame);
        }
      }
      void this.peer.receive(text, undefined);
    });
    // A socket error (reset, server killed) must not crash the test process; `closed` reports it.
    socket.on('error', (err) => {
      this.lastError = err;
    });
    this.closed = new Promise((resolve) =>
      socket.once('close', (code, reason) => {
        this.peer.close();
        resolve({ code, reason: reason.toString() });
      }),
    );
  }

  /**
   * Opens a WebSocket to `wsUrl` (no hello yet).
   * @throws Error when the connection fails.
   */
  static connect(wsUrl: string): Promise<SignalClient> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(wsUrl);
      const client = new SignalClient(socket);
      socket.once('open', () => resolve(client));
      socket.once('error', reject);
    });
  }

  /**
   * Sends `hello` with the device's credentials.
   * @param protocol protocol version to claim (default: the current one).
   * @throws ParleyError `unauthenticated`, `protocol_version`, …
   */
  hello(
    device: { deviceId: string; token: string },
    protocol: number = PROTOCOL_VERSION,
  ): Promise<SignalResult<'hello'>> {
    return this.request('hello', { protocol, deviceId: device.deviceId, token: device.token });
  }

  /**
   * Sends a typed request; the result is checked against its schema.
   * @throws ParleyError with the server's error (`.reason`, `.message`, `.data`).
   */
  async request<M extends SignalMethod>(
    method: M,
    params: SignalParams<M>,
  ): Promise<SignalResult<M>> {
    const result = await this.peer.request(method, params);
    return SignalRequests[method].result.parse(result) as SignalResult<M>;
  }

  /**
   * Sends any request, unchecked (for wrong types and unknown methods).
   * @throws ParleyError with the server's error.
   */
  requestUnchecked(method: string, params: unknown): Promise<unknown> {
    return this.peer.request(method, params as object);
  }

  /** Sends one raw text frame (for malformed JSON, oversized frames, …). */
  sendRaw(text: string): void {
    this.socket.send(text);
  }

  /**
   * Resolves with the first inbound frame (parsed JSON, or text if not JSON),
   * already received or future, that matches `predicate`.
   * @throws Error after `timeoutMs` (default 5000).
   */
  nextFrame(predicate: (frame: unknown) => boolean, timeoutMs = 5000): Promise<unknown> {
    const found = this.frameLog.find(predicate);
    if (found !== undefined) return Promise.resolve(found);
    return this.wait(this.frameWaiters, predicate, timeoutMs, 'frame');
  }

  /**
   * Resolves with the error of the next error reply that has `id: null` (the
   * server's answer to a frame it could not read as a request), and consumes it.
   */
  async nextFrameError(
    timeoutMs = 5000,
  ): Promise<{ code: number; message: string; data: ParleyErrorData }> {
    const isNullIdError = (f: unknown) =>
      typeof f === 'object' && f !== null && 'error' in f && (f as { id?: unknown }).id === null;
    const frame = (await this.nextFrame(isNullIdError, timeoutMs)) as {
      error: { code: number; message: string; data: ParleyErrorData };
    };
    this.frameLog.splice(this.frameLog.indexOf(frame), 1);
    return frame.error;
  }

  /** Every inbound frame so far, in order (parsed JSON or raw text). */
  frames(): readonly unknown[] {
    return this.frameLog;
  }

  /** Every notification received so far, in order (also the consumed ones). */
  notifications(): readonly ReceivedNotification[] {
    return this.all;
  }

  /**
   * Takes the first queued or future notification `method` (optionally for
   * `filter.callId`, `filter.roomId`, `filter.knockId`: every one given must
   * match) and checks it against its schema.
   * @throws Error after `timeoutMs` (default 5000), or when the params do not match the schema.
   */
  async nextNotification<N extends SignalNotification>(
    method: N,
    filter: { callId?: string; roomId?: string; knockId?: string } = {},
    timeoutMs = 5000,
  ): Promise<SignalNotificationParams<N>> {
    const match = (n: ReceivedNotification) =>
      n.method === method &&
      Object.entries(filter).every(
        ([k, v]) => v === undefined || (n.params as Record<string, unknown> | null)?.[k] === v,
      );
    const index = this.queue.findIndex(match);
    let n: ReceivedNotification;
    if (index >= 0) {
      n = this.queue.splice(index, 1)[0]!;
    } else {
      n = await this.wait(this.notificationWaiters, match, timeoutMs, `notification ${method}`);
      this.queue.splice(this.queue.indexOf(n), 1);
    }
    return SignalNotifications[method].parse(n.params) as SignalNotificationParams<N>;
  }

  /**
   * Waits `ms` and fails if a notification `method` (for `filter.callId`) is queued by then.
   * @throws Error naming the unexpected notification.
   */
  async expectNoNotification(
    method: SignalNotification,
    filter: { callId?: string } = {},
    ms = 300,
  ): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
    const hit = this.queue.find(
      (n) =>
        n.method === method &&
        (filter.callId === undefined ||
          (n.params as { callId?: unknown }).callId === filter.callId),
    );
    if (hit) throw new Error(`unexpected notification ${method}: ${JSON.stringify(hit.params)}`);
  }

  /** Closes the socket and waits until it is closed. */
  async close(code = 1000): Promise<void> {
    if (
      this.socket.readyState === WebSocket.OPEN ||
      this.socket.readyState === WebSocket.CONNECTING
    ) {
      this.socket.close(code);
    }
    await this.closed;
  }

  /** Drops the TCP connection without a close handshake (a crashed or unplugged device). */
  terminate(): void {
    this.socket.terminate();
  }

  private onNotification(n: ReceivedNotification): void {
    this.all.push(n);
    this.queue.push(n);
    for (const w of [...this.notificationWaiters]) {
      if (w.match(n)) {
        this.notificationWaiters.delete(w);
        w.resolve(n);
        return;
      }
    }
  }

  private wait<T>(
    waiters: Set<Waiter<T>>,
    match: (t: T) => boolean,
    timeoutMs: number,
    what: string,
  ): Promise<T> {
    return new Promise((resolve, reject) => {
      const w: Waiter<T> = {
        match,
        resolve: (t) => {
          clearTimeout(timer);
          resolve(t);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      waiters.add(w);
    });
  }
}

/** A signed-in test device: its login (account, device id, token) and its connected client. */
export interface SignedInDevice extends LoginReply {
  client: SignalClient;
  password: string;
}

/**
 * Registers `username` (unless `options.register` is false), logs in a new
 * device, connects to the signaling WebSocket and sends `hello`.
 * @throws ParleyError from any step.
 */
export async function signIn(
  server: ServerAddress,
  username: string,
  options: { password?: string; register?: boolean; deviceName?: string } = {},
): Promise<SignedInDevice> {
  const password = options.password ?? DEFAULT_PASSWORD;
  if (options.register !== false) await register(server.url, username, password);
  const session = await login(server.url, username, password, options.deviceName);
  const client = await SignalClient.connect(server.wsUrl);
  await client.hello(session);
  return { ...session, client, password };
}

/**
 * Makes two signed-in accounts contacts (a asks, b accepts), as every call
 * between two fresh accounts needs: "only contacts may call me" is on by
 * default. Consumes the `contact.request` / `contact.updated` notifications it causes
 * on these two devices, so tests that count notifications start clean.
 * @throws ParleyError from the server.
 */
export async function makeContacts(a: SignedInDevice, b: SignedInDevice): Promise<void> {
  const r = await a.client.request('contacts.request', { username: b.username });
  if (r.status === 'requested') {
    await b.client.nextNotification('contact.request');
    await b.client.request('contacts.accept', { username: a.username });
  }
  await a.client.nextNotification('contact.updated');
  if (r.status === 'requested') await a.client.nextNotification('contact.updated');
  await b.client.nextNotification('contact.updated');
}

/**
 * Registers `username`, makes it a contact of `of`, and signs its only device
 * out again: a callee that is a contact but offline. Resolves once `of` has
 * seen it go offline (`presence.changed`), so the server knows it is offline.
 */
export async function offlineContact(
  server: ServerAddress,
  of: SignedInDevice,
  username: string,
): Promise<void> {
  const other = await signIn(server, username);
  await makeContacts(of, other);
  await other.client.close();
  for (;;) {
    const p = await of.client.nextNotification('presence.changed');
    if (p.username === username && p.presence === 'offline') return;
  }
}

/**
 * Sets up an answered call between two signed-in devices over the real server:
 * invite → incoming → ringing → answer → answered. The envelopes are opaque to
 * the server; tests pass recognisable ones to check they never leak.
 * @returns the call id.
 */
export async function connectCall(
  caller: SignedInDevice,
  callee: SignedInDevice,
  envelopes: { offer: Envelope; answer: Envelope },
): Promise<string> {
  const callId = randomUUID();
  await caller.client.request('call.invite', {
    callId,
    callee: callee.username,
    envelope: envelopes.offer,
  });
  await callee.client.nextNotification('call.incoming', { callId });
  await callee.client.request('call.ringing', { callId });
  await callee.client.request('call.answer', { callId, envelope: envelopes.answer });
  await caller.client.nextNotification('call.answered', { callId });
  return callId;
}
