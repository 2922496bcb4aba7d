import { lstat, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { isMainThread } from 'node:worker_threads';
import { ParleyError } from '../../common/errors';
import { RpcPeer } from '../../common/protocol/rpc';
import {
  ControlNotifications,
  ControlRequests,
  MAX_CONTROL_MESSAGE_BYTES,
  type CallStatus,
} from '../../common/protocol/control';
import type { CallEngine } from '../core/call-engine';
import type { LocalAudio } from '../media/platform';
import type { ContactBook } from '../core/contacts';
import type { DeviceSessions } from '../core/devices';
import type { SignalingClient } from '../core/signaling-client';
import type { EndToEnd } from '../core/e2ee';
import { sameUserGuard, type PeerGuard } from '../core/local-peer';

/** Options of {@link ControlServer.listen}. */
export interface ControlListenOptions {
  /** Where refused connections are reported, one line each. Default `console.warn`. */
  log?: (line: string) => void;
}

/**
 * The headless client's control API (DESIGN.md): JSON-RPC 2.0 over a Unix
 * socket, one JSON message per line. Methods are `ControlRequests` in
 * `common/protocol/control`; every connected controller receives `call.state`,
 * `call.stats` and `signaling.state` notifications, and, with local audio,
 * `audio.levels`, `audio.warning`, `devices.changed` and `devices.switched`.
 *
 * Only the user who runs the daemon can drive it, twice over: the socket file
 * is born mode 0600 (bound under umask 0177, so there is no moment in which
 * another user may connect), and every connection's peer is checked with the
 * kernel's credentials (SO_PEERCRED on Linux, getpeereid on macOS/BSD; see
 * main/core/local-peer.ts) before any of its bytes is read — a different uid
 * is logged and disconnected. Where no such check exists (Windows) the socket
 * is not opened at all.
 */
export class ControlServer {
  private readonly server: Server;
  private readonly peers = new Set<RpcPeer>();
  private guard: PeerGuard | undefined;
  private log: (line: string) => void = (line) => console.warn(line);

  /**
   * @param account contacts, presence, settings and devices of the signed-in
   *   account; `logout` also runs `onLogout` (delete the keychain entry). Without
   *   it those methods answer `method_not_found`.
   */
  constructor(
    private readonly engine: CallEngine,
    private readonly signaling: SignalingClient,
    private readonly identity: { username: string; deviceId: string },
    private readonly audio?: LocalAudio,
    private readonly account?: { contacts: ContactBook; sessions: DeviceSessions; onLogout: () => Promise<void>; e2ee?: EndToEnd },
  ) {
    // Paused: nothing is read from a connection until its peer is accepted.
    this.server = createServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
    engine.on('call', (status: CallStatus) => this.broadcast('call.state', status));
    engine.on('stats', (stats) => this.broadcast('call.stats', stats));
    engine.on('levels', (levels) => this.broadcast('audio.levels', levels));
    audio?.router.on('devices', (list) => this.broadcast('devices.changed', list));
    audio?.router.on('warning', (w) => this.broadcast('audio.warning', w));
    audio?.router.on('switched', (r) => this.broadcast('devices.switched', { ...r, gapMs: Math.round(r.gapMs * 10) / 10 }));
    signaling.on('state', (state, detail) => this.broadcast('signaling.state', { state, ...(detail ? { detail } : {}) }));
    for (const method of [
      'contact.request',
      'contact.updated',
      'presence.changed',
      'session.ended',
      'caller.approval_request',
      'caller.approval',
    ] as const) {
      signaling.on(method, (params: object) => this.broadcast(method, params));
    }
    account?.e2ee?.on('keyChange', (c) => this.broadcast('trust.key_changed', c));
    account?.e2ee?.on('deviceRefused', (r) => this.broadcast('trust.device_refused', r));
    account?.e2ee?.on('alarm', (a) => this.broadcast('account.device_alarm', a));
    account?.e2ee?.on('linked', (d) => this.broadcast('account.device_linked', d));
  }

  /**
   * Listens on `path` (a stale socket file from a crashed daemon is replaced).
   * The socket is bound under umask 0177 (mode 0600 from the first instant)
   * and its mode is verified afterwards; each connection is then checked by
   * peer credentials (see the class comment).
   * @throws ParleyError `unavailable` when this platform has no peer credential
   *   check or Parley's peercred addon is not built (run scripts/setup.sh), or
   *   when called off the main thread (process.umask is process-wide and
   *   unavailable in workers).
   * @throws ParleyError `forbidden` when the socket file came out readable or
   *   writable by others anyway (it is closed again).
   * @throws Error when the path cannot be bound (e.g. another daemon is running there).
   */
  async listen(path: string, options: ControlListenOptions = {}): Promise<void> {
    if (options.log) this.log = options.log;
    // Fail before binding: an unchecked control socket would let any local user place calls.
    this.guard = sameUserGuard();
    if (!isMainThread) throw new ParleyError('unavailable', 'the control socket must be opened on the main thread (it needs process.umask)');
    await rm(path, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      // For a path, Node binds inside listen() itself (outside a cluster
      // worker), so the umask covers the bind(2) and is restored at once.
      const previous = process.umask(0o177);
      try {
        this.server.listen(path, () => {
          this.server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(previous);
      }
    });
    const st = await lstat(path);
    if ((st.mode & 0o077) !== 0 || (typeof process.geteuid === 'function' && st.uid !== process.geteuid())) {
      await this.close();
      throw new ParleyError(
        'forbidden',
        `the control socket ${path} was created mode ${(st.mode & 0o777).toString(8)} owned by uid ${st.uid}, not 600 owned by us; not serving it`,
      );
    }
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    const verdict = this.guard ? this.guard.check(socket) : { ok: false as const, reason: 'no peer check configured; refused' };
    if (!verdict.ok) {
      this.log(`[control] refused a connection to the control socket: ${verdict.reason}`);
      socket.destroy();
      return;
    }
    socket.setEncoding('utf8');
    const rpc = new RpcPeer<void>((text) => {
      if (!socket.destroyed) socket.write(text + '\n');
    }, { maxMessageBytes: MAX_CONTROL_MESSAGE_BYTES });
    this.register(rpc);
    this.peers.add(rpc);
    let buffered = '';
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line) void rpc.receive(line, undefined);
      }
      if (buffered.length > MAX_CONTROL_MESSAGE_BYTES) {
        buffered = '';
        void rpc.receive('x'.repeat(MAX_CONTROL_MESSAGE_BYTES + 1), undefined);
      }
    });
    const drop = () => {
      this.peers.delete(rpc);
      rpc.close();
    };
    socket.on('close', drop);
    socket.on('error', drop);
    socket.resume();
  }

  private register(rpc: RpcPeer<void>): void {
    const e = this.engine;
    rpc.handle('create_call', ControlRequests.create_call.params, async ({ to }) => ({ callId: await e.createCall(to) }));
    rpc.handle('answer_call', ControlRequests.answer_call.params, async ({ callId }) => ({ callId: await e.answer(callId) }));
    rpc.handle('reject_call', ControlRequests.reject_call.params, async ({ callId, reason }) => ({
      callId: await e.reject(callId, reason),
    }));
    rpc.handle('end_call', ControlRequests.end_call.params, async ({ callId }) => ({ callId: await e.end(callId) }));
    rpc.handle('hold_call', ControlRequests.hold_call.params, ({ callId }) => ({ callId: e.setHold(callId, true) }));
    rpc.handle('resume_call', ControlRequests.resume_call.params, ({ callId }) => ({ callId: e.setHold(callId, false) }));
    rpc.handle('get_call_status', ControlRequests.get_call_status.params, ({ callId }) => e.status(callId));
    rpc.handle('list_calls', ControlRequests.list_calls.params, () => ({ calls: e.list() }));
    const a = this.account;
    if (a) {
      const ok = { ok: true as const };
      rpc.handle('list_contacts', ControlRequests.list_contacts.params, () => a.contacts.refresh());
      rpc.handle('request_contact', ControlRequests.request_contact.params, async ({ username }) => ({
        status: await a.contacts.request(username),
      }));
      rpc.handle('accept_contact', ControlRequests.accept_contact.params, async ({ username }) => (await a.contacts.accept(username), ok));
      rpc.handle('decline_contact', ControlRequests.decline_contact.params, async ({ username }) => (await a.contacts.decline(username), ok));
      rpc.handle('remove_contact', ControlRequests.remove_contact.params, async ({ username }) => (await a.contacts.remove(username), ok));
      rpc.handle('block_contact', ControlRequests.block_contact.params, async ({ username }) => (await a.contacts.block(username), ok));
      rpc.handle('unblock_contact', ControlRequests.unblock_contact.params, async ({ username }) => (await a.contacts.unblock(username), ok));
      rpc.handle('approve_caller', ControlRequests.approve_caller.params, async ({ username }) => (await a.contacts.approveCaller(username), ok));
      rpc.handle('refuse_caller', ControlRequests.refuse_caller.params, async ({ username }) => (await a.contacts.refuseCaller(username), ok));
      rpc.handle('set_presence', ControlRequests.set_presence.params, async ({ status }) => ({
        presence: await a.contacts.setPresence(status),
      }));
      rpc.handle('get_settings', ControlRequests.get_settings.params, () => a.contacts.getSettings());
      rpc.handle('set_settings', ControlRequests.set_settings.params, async ({ contactsOnly }) =>
        contactsOnly === undefined ? a.contacts.getSettings() : a.contacts.setContactsOnly(contactsOnly),
      );
      rpc.handle('list_devices', ControlRequests.list_devices.params, async () => {
        // Looking at the devices is also a moment to compare them with the approved list (alarms are notifications).
        await a.e2ee?.accountDevices().catch(() => undefined);
        return { devices: await a.sessions.list() };
      });
      rpc.handle('revoke_device', ControlRequests.revoke_device.params, async ({ deviceId }) => (await a.sessions.revoke(deviceId), ok));
      rpc.handle('refresh_session', ControlRequests.refresh_session.params, async () => ({ expiresAt: await a.sessions.refresh() }));
      const e2ee = a.e2ee;
      if (e2ee) {
        rpc.handle('get_safety_number', ControlRequests.get_safety_number.params, ({ username }) => e2ee.safetyNumber(username));
        rpc.handle('mark_verified', ControlRequests.mark_verified.params, ({ username }) => e2ee.verify(username));
        rpc.handle('accept_key_change', ControlRequests.accept_key_change.params, ({ username }) => e2ee.acceptKeyChange(username));
        rpc.handle('get_trust', ControlRequests.get_trust.params, ({ username }) => e2ee.trustInfo(username));
        rpc.handle('get_account_devices', ControlRequests.get_account_devices.params, () => e2ee.accountDevices());
        rpc.handle('start_device_link', ControlRequests.start_device_link.params, () => e2ee.startLink());
        rpc.handle('link_device', ControlRequests.link_device.params, ({ code }) => e2ee.link(code));
        rpc.handle('reset_account_key', ControlRequests.reset_account_key.params, () => e2ee.resetAccountKey());
      }
      rpc.handle('logout', ControlRequests.logout.params, async () => {
        await a.sessions.logout();
        await a.onLogout();
        return ok;
      });
    }
    rpc.handle('get_status', ControlRequests.get_status.params, () => ({
      username: this.identity.username,
      deviceId: this.identity.deviceId,
      signaling: this.signaling.state,
      autoAnswer: e.autoAnswer,
    }));
    const audio = this.audio;
    const noAudio = () => new ParleyError('unavailable', 'this client has no local audio');
    rpc.handle('devices.list', ControlRequests['devices.list'].params, () => {
      if (!audio) throw noAudio();
      return audio.router.list();
    });
    rpc.handle('devices.set', ControlRequests['devices.set'].params, async (choice) => {
      if (!audio) throw noAudio();
      try {
        return await audio.router.choose(choice);
      } catch (err) {
        throw new ParleyError('device_error', err instanceof Error ? err.message : String(err));
      }
    });
    rpc.handle('audio.get_processing', ControlRequests['audio.get_processing'].params, () => {
      if (!audio) throw noAudio();
      return audio.getProcessing();
    });
    rpc.handle('audio.set_processing', ControlRequests['audio.set_processing'].params, (next) => {
      if (!audio) throw noAudio();
      if (audio.processingUnavailable) throw new ParleyError('unavailable', audio.processingUnavailable);
      return audio.setProcessing(next);
    });
  }

  private broadcast(method: string, params: object): void {
    for (const p of this.peers) p.notify(method, params);
  }
}

/**
 * A client of the control socket (used by `parley call`, `parley answer`, the
 * demo and tests).
 */
export class ControlClient {
  private constructor(
    private readonly socket: Socket,
    readonly rpc: RpcPeer<void>,
  ) {}

  /**
   * Connects to a daemon's control socket.
   * @throws ParleyError `unavailable` when no daemon listens at `path`.
   */
  static async connect(path: string, onNotification?: (method: string, params: unknown) => void): Promise<ControlClient> {
    const { connect } = await import('node:net');
    const socket = connect(path);
    socket.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', () =>
        reject(new ParleyError('unavailable', `no Parley daemon is listening on ${path}; start one with "parley daemon"`)),
      );
    });
    const rpc = new RpcPeer<void>((text) => socket.write(text + '\n'), {
      maxMessageBytes: 1024 * 1024,
      requestTimeoutMs: 30_000,
    });
    const { z } = await import('zod');
    for (const m of Object.keys(ControlNotifications)) {
      rpc.handle(m, z.unknown(), (p) => onNotification?.(m, p));
    }
    let buffered = '';
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim()) void rpc.receive(line, undefined);
      }
    });
    socket.on('close', () => rpc.close('the daemon closed the control socket'));
    return new ControlClient(socket, rpc);
  }

  request<T = unknown>(method: string, params: object = {}): Promise<T> {
    return this.rpc.request<T>(method, params);
  }

  close(): void {
    this.socket.end();
  }
}
