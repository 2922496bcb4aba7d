import { lstat, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { isMainThread } from 'node:worker_threads';
import { ParleyError } from '../../common/errors';
import { RpcPeer } from '../../common/protocol/rpc';
import { JsonStreamSplitter, type JsonStreamEvent } from '../../common/protocol/json-stream';
import {
  ControlNotifications,
  ControlRequests,
  MAX_CONTROL_MESSAGE_BYTES,
  type CallStatus,
} from '../../common/protocol/control';
import type { CallEngine } from '../core/call-engine';
import type { RoomClient } from '../core/room-client';
import type { LocalAudio } from '../media/platform';
import type { ContactBook } from '../core/contacts';
import type { DeviceSessions } from '../core/devices';
import type { SignalingClient } from '../core/signaling-client';
import type { EndToEnd } from '../core/e2ee';
import { sameUserGuard, type PeerGuard } from '../core/local-peer';
import type { AuditLog } from '../core/audit-log';
import type { RejectReason } from '../../common/call';
import {
  WebrtcRequests,
  callTokens,
  guideError,
  guideState,
  formatDuration,
  type BudgetWarning,
} from '../../common/protocol/webrtc-api';

/** The daemon's own call limits (the guide's TTL; `parley daemon` config `default_lifetime`, `warn_before_expiration`). */
export interface CallLimits {
  /** How long a call may last once connected, s; it is ended then (audit `ttl_expired`). 0 = no limit. */
  lifetimeS: number;
  /** A `budget_warning` notification this long before the end, s. */
  warnBeforeS: number;
}

/** Optional parts of a {@link ControlServer}. */
export interface ControlServerOptions {
  /** Where security-relevant events are recorded (`webrtc.get_audit_log`); none: the method answers `unavailable`. */
  audit?: AuditLog;
  limits?: CallLimits;
  /** Group calls (`create_room`, `join_room`, …); none: those methods answer `unavailable`. */
  rooms?: RoomClient;
}

/**
 * How long `webrtc.answer_call` waits for the answer to complete before it
 * replies `{"success": true}` with the answer under way, ms: below socat's
 * default 0.5 s linger after its input ends (`socat -t`).
 */
const ANSWER_REPLY_WAIT_MS = 300;

/** How long a new connection that sends nothing waits before it is taken for a listener and gets every notification, ms. */
const LISTENER_GRACE_MS = 250;

/** Options of {@link ControlServer.listen}. */
export interface ControlListenOptions {
  /** Where refused connections are reported, one line each. Default `console.warn`. */
  log?: (line: string) => void;
}

/**
 * The headless client's control API (DESIGN.md): JSON-RPC 2.0 over a Unix
 * socket. Methods are `ControlRequests` in `common/protocol/control` and,
 * under the ArmorClaw voice guide's names, `WebrtcRequests` in
 * `common/protocol/webrtc-api` (same handlers; docs/automation.md).
 *
 * Framing is as scripts really write (`JsonStreamSplitter`): any sequence of
 * JSON values, one per line, several per line or one over many lines, the
 * last without a newline; JSON-RPC 2.0 batches are answered. A controller that
 * half-closes (`echo … | socat - UNIX-CONNECT:…`) still gets every answer,
 * asynchronous ones included, and the daemon closes after the last. A value
 * over `MAX_CONTROL_MESSAGE_BYTES` (or one that never ends) is answered
 * `payload_too_large` and the connection is closed cleanly. Every call event
 * of note goes to the audit log when one is given (`webrtc.get_audit_log`),
 * and the daemon's own call lifetime is kept (`CallLimits`).
 *
 * Controllers receive `call.state`, `call.stats`, `signaling.state`,
 * `budget_warning` and, with local audio, `audio.levels`, `audio.warning`,
 * `devices.changed` and `devices.switched` notifications — a connection that
 * speaks only the guide's names gets `budget_warning` alone (see `peers`).
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
  /**
   * Connected controllers and the notifications each gets. A new connection
   * holds its notifications back until its first request or
   * {@link LISTENER_GRACE_MS}: one whose first request uses the guide's
   * `webrtc.*` names then gets only `budget_warning` (so `echo … | socat`
   * prints exactly its answers) until it uses a Parley method; any other
   * connection — a Parley controller, or a listener that sends nothing —
   * gets every notification, the held ones first.
   */
  private readonly peers = new Map<RpcPeer, { mode: 'pending' | 'guide' | 'all'; held: [string, object][]; timer?: NodeJS.Timeout }>();
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
    private readonly options: ControlServerOptions = {},
  ) {
    // Paused: nothing is read from a connection until its peer is accepted.
    this.server = createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => this.accept(socket));
    engine.on('call', (status: CallStatus) => this.broadcast('call.state', status));
    engine.on('stats', (stats) => this.broadcast('call.stats', stats));
    engine.on('levels', (levels) => this.broadcast('audio.levels', levels));
    audio?.router.on('devices', (list) => this.broadcast('devices.changed', list));
    audio?.router.on('warning', (w) => this.broadcast('audio.warning', w));
    audio?.router.on('cleared', (c) => this.broadcast('audio.warning_cleared', c));
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
    options.rooms?.on('state', (s) => this.broadcast('room.state', s));
    options.rooms?.on('speaker', (s) => this.broadcast('room.speaker', s));
    options.rooms?.on('ring', (r) => this.broadcast('room.ringing', r));
    options.rooms?.on('ring_cancelled', (r) => this.broadcast('room.ring_cancelled', r));
    options.rooms?.on('invite_ended', (r) => this.broadcast('room.invite_ended', r));
    options.rooms?.on('knock', (k) => this.broadcast('room.knock', k));
    this.limits = options.limits ?? { lifetimeS: 30 * 60, warnBeforeS: 5 * 60 };
    engine.on('call', (status: CallStatus) => this.track(status));
    signaling.on('call.warning', (w) => {
      if (w.kind === 'budget') this.warnBudget(w.callId, Math.max(0, Math.round((w.endsAt - Date.now()) / 1000)));
    });
    const audit = options.audit;
    if (audit) {
      // An invite the engine turned away as busy (another call is live) never becomes a call of its own.
      // The engine's listener ran first and registers a call it takes before its first await.
      signaling.on('call.incoming', (p) => {
        if (!engine.list().some((c) => c.callId === p.callId)) {
          audit.append({ event_type: 'call_refused', call_id: p.callId, user_id: p.caller.username, reason: 'busy' });
        }
      });
      account?.e2ee?.on('keyChange', (c) => audit.append({ event_type: 'key_changed', user_id: c.username, details: { kind: c.kind, device_id: c.deviceId, blocked: c.blocked } }));
      account?.e2ee?.on('deviceRefused', (r) => audit.append({ event_type: 'device_refused', user_id: r.username, reason: r.reason, details: { device_id: r.deviceId } }));
      account?.e2ee?.on('alarm', (a) => audit.append({ event_type: 'device_alarm', reason: a.kind, details: { message: a.message } }));
      account?.e2ee?.on('linked', (d) => audit.append({ event_type: 'device_linked', details: { device_id: d.deviceId } }));
    }
  }

  private readonly limits: CallLimits;
  /** Per call: what this server saw of it (for the audit log, the guide's labels and the lifetime timers). */
  private readonly seen = new Map<
    string,
    {
      state: string;
      answered: boolean;
      roomId?: string;
      endReason?: string;
      warnTimer?: NodeJS.Timeout;
      endTimer?: NodeJS.Timeout;
      /** A standard WebRTC peer's call (`offer_sdp`), answered by webrtc.create_call. */
      standard?: boolean;
    }
  >();

  /** Follows each call's states: audit records and the lifetime (TTL) timers. */
  private track(s: CallStatus): void {
    const audit = this.options.audit;
    let t = this.seen.get(s.callId);
    if (!t) {
      t = { state: 'idle', answered: false };
      this.seen.set(s.callId, t);
      audit?.append({
        event_type: s.direction === 'outgoing' ? 'call_created' : 'call_incoming',
        call_id: s.callId,
        user_id: s.peer,
      });
    }
    if (t.state === s.state) return;
    const before = t.state;
    t.state = s.state;
    if (s.state === 'connecting' && before === 'incoming') {
      t.answered = true;
      audit?.append({ event_type: 'call_answered', call_id: s.callId, user_id: s.peer });
    }
    if (s.state === 'active' && before !== 'held') {
      audit?.append({
        event_type: 'call_connected',
        call_id: s.callId,
        user_id: s.peer,
        details: { e2e_verified: !!(s.e2ee?.sealed && s.e2ee.fingerprintBound), ...(s.transport ? { transport: s.transport } : {}) },
      });
      this.startLifetime(s.callId);
    }
    if (s.state === 'ended') {
      clearTimeout(t.warnTimer);
      clearTimeout(t.endTimer);
      // The engine keeps a bounded history of ended calls; so does this map.
      const known = new Set(this.engine.list().map((c) => c.callId));
      for (const id of this.seen.keys()) if (!known.has(id)) this.seen.delete(id);
      const rejected = s.direction === 'incoming' && !t.answered && (s.endReason === 'declined' || s.endReason === 'busy');
      audit?.append({
        event_type: rejected ? 'call_rejected' : 'call_ended',
        call_id: s.callId,
        user_id: s.peer,
        reason: s.endReason,
        details: {
          ...(t.endReason ? { requested_reason: t.endReason } : {}),
          ...(s.security ? { security: s.security } : {}),
          ...(s.error ? { error: s.error } : {}),
        },
      });
    }
  }

  /** The guide's TTL: warn `warnBeforeS` before, end the call at `lifetimeS` after it connected. */
  private startLifetime(callId: string): void {
    const t = this.seen.get(callId);
    const { lifetimeS, warnBeforeS } = this.limits;
    if (!t || lifetimeS <= 0 || t.endTimer) return;
    if (warnBeforeS > 0 && warnBeforeS < lifetimeS) {
      t.warnTimer = setTimeout(() => this.warnBudget(callId, warnBeforeS), (lifetimeS - warnBeforeS) * 1000);
      t.warnTimer.unref();
    }
    t.endTimer = setTimeout(() => {
      this.options.audit?.append({ event_type: 'ttl_expired', call_id: callId, details: { lifetime_s: lifetimeS } });
      this.engine.end(callId, 'ttl_expired').catch(() => {});
    }, lifetimeS * 1000);
    t.endTimer.unref();
  }

  /** The guide's `budget_warning` notification (and audit record): `remainingS` seconds of the call are left. */
  private warnBudget(callId: string, remainingS: number): void {
    let status: CallStatus;
    try {
      status = this.engine.status(callId);
    } catch {
      return;
    }
    if (status.state === 'ended') return;
    const used = callTokens(status, this.limits.lifetimeS).used;
    const total = used + remainingS;
    const w: BudgetWarning = {
      warning: 'budget_warning',
      call_id: callId,
      tokens_used: used,
      tokens_remaining: remainingS,
      percentage_used: total > 0 ? Math.round((used / total) * 100) / 100 : 1,
    };
    this.options.audit?.append({ event_type: 'budget_warning', call_id: callId, details: { tokens_used: used, tokens_remaining: remainingS } });
    this.broadcast('budget_warning', w);
  }

  /** A call in the guide's shape (`webrtc.get_call_status`, `webrtc.list`), with Parley's extra fields. */
  private guideStatus(s: CallStatus): Record<string, unknown> {
    const t = callTokens(s, this.limits.lifetimeS);
    const roomId = this.seen.get(s.callId)?.roomId;
    return {
      call_id: s.callId,
      state: guideState(s.state, s.media),
      duration: t.duration,
      tokens_used: t.used,
      budget_remaining: t.remaining,
      ...(roomId ? { room_id: roomId } : {}),
      user_id: s.peer,
      direction: s.direction,
      e2e_verified: !!(s.e2ee?.sealed && s.e2ee.fingerprintBound),
      ...(s.endReason ? { end_reason: s.endReason } : {}),
      // Parley's own: how long no audio has come (while reconnecting), and a signaling connection that is down.
      ...(s.state !== 'ended' && s.media === 'reconnecting' && s.lastAudioAt !== undefined ? { no_audio_ms: Math.max(0, Date.now() - s.lastAudioAt) } : {}),
      ...(s.state !== 'ended' && s.signaling && s.signaling !== 'online' ? { signaling: s.signaling } : {}),
    };
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
      if (!socket.destroyed && socket.writable) socket.write(text + '\n');
    }, { maxMessageBytes: MAX_CONTROL_MESSAGE_BYTES, batches: true });
    this.register(rpc);
    const peer = { mode: 'pending' as 'pending' | 'guide' | 'all', held: [] as [string, object][], timer: undefined as NodeJS.Timeout | undefined };
    peer.timer = setTimeout(() => this.setMode(rpc, 'all'), LISTENER_GRACE_MS);
    this.peers.set(rpc, peer);
    // Every request still being answered: a half-closed connection (`echo … | socat`)
    // is ended only once all of them have been written.
    const pending = new Set<Promise<void>>();
    const splitter = new JsonStreamSplitter(MAX_CONTROL_MESSAGE_BYTES);
    let ending = false;
    const finish = () => {
      if (pending.size === 0 && ending && !socket.destroyed) socket.end();
    };
    const take = (events: JsonStreamEvent[]) => {
      for (const ev of events) {
        if (ev.kind === 'value') {
          this.noteMethods(rpc, ev.text);
          const p = rpc.receive(ev.text, undefined).finally(() => {
            pending.delete(p);
            finish();
          });
          pending.add(p);
        } else if (ev.kind === 'garbage') {
          void rpc.receive(ev.text, undefined); // answered parse_error; the stream goes on
        } else {
          // Where the next value would start is unknowable: answer, then close cleanly after the pending answers.
          rpc.refuse(new ParleyError('payload_too_large', `a message is larger than ${MAX_CONTROL_MESSAGE_BYTES} bytes; closing the connection`, { name: 'ErrPayloadTooLarge' }));
          ending = true;
          socket.pause();
          finish();
          // The controller may keep its half open; it is no longer read, so let it go soon.
          setTimeout(() => socket.destroy(), 2000).unref();
        }
      }
    };
    socket.on('data', (chunk: string) => take(splitter.push(chunk)));
    socket.on('end', () => {
      // The controller half-closed: answer what it sent (a last value without newline too), then close.
      take(splitter.end());
      ending = true;
      finish();
    });
    const drop = () => {
      clearTimeout(this.peers.get(rpc)?.timer);
      this.peers.delete(rpc);
      rpc.close();
    };
    socket.on('close', drop);
    socket.on('error', drop);
    socket.resume();
  }

  /** Calls a Parley user (both `create_call` and `webrtc.create_call`); a refusal is audited. */
  private async createCall(to: string, roomId?: string): Promise<string> {
    try {
      const id = await this.engine.createCall(to);
      const t = this.seen.get(id);
      if (t && roomId) t.roomId = roomId;
      return id;
    } catch (err) {
      this.options.audit?.append({
        event_type: 'call_refused',
        user_id: to,
        reason: err instanceof ParleyError ? err.reason : 'internal_error',
        ...(err instanceof ParleyError && err.data.name ? { details: { name: err.data.name } } : {}),
      });
      throw err;
    }
  }

  private async rejectCall(callId: string | undefined, reason: RejectReason, text?: string): Promise<string> {
    if (text && callId) this.noteReason(callId, text);
    return this.engine.reject(callId, reason);
  }

  private async endCall(callId: string | undefined, text?: string): Promise<string> {
    if (text && callId) this.noteReason(callId, text);
    return this.engine.end(callId);
  }

  private noteReason(callId: string, text: string): void {
    const t = this.seen.get(callId);
    if (t) t.endReason = text;
  }

  /** The call API of the ArmorClaw voice guide (`common/protocol/webrtc-api`), on the same handlers as Parley's names. */
  private registerGuide(rpc: RpcPeer<void>): void {
    const e = this.engine;
    const success = { success: true as const };
    const named = (err: ParleyError) => guideError(err);
    rpc.handle(
      'webrtc.create_call',
      WebrtcRequests['webrtc.create_call'].params,
      async ({ user_id, offer_sdp, room_id }) => {
        if (offer_sdp !== undefined) {
          // A standard WebRTC peer the controller brings along: answered here, not end-to-end verified.
          const label = user_id ?? 'webrtc-peer';
          let answered: { callId: string; answerSdp: string };
          try {
            answered = await e.answerOffer(offer_sdp, label);
          } catch (err) {
            this.options.audit?.append({ event_type: 'call_refused', user_id: label, reason: err instanceof ParleyError ? err.reason : 'internal_error', details: { standard_peer: true } });
            throw err;
          }
          const t = this.seen.get(answered.callId);
          if (t) {
            t.standard = true;
            if (room_id) t.roomId = room_id;
          }
          return {
            call_id: answered.callId,
            answer_sdp: answered.answerSdp,
            ttl: formatDuration(this.limits.lifetimeS, true),
            state: guideState(e.status(answered.callId).state),
            ...(room_id ? { room_id } : {}),
          };
        }
        const id = await this.createCall(user_id!, room_id);
        return {
          call_id: id,
          ttl: formatDuration(this.limits.lifetimeS, true),
          state: guideState(e.status(id).state),
          ...(room_id ? { room_id } : {}),
        };
      },
      (err) => guideError(err, { creating: true }),
    );
    rpc.handle(
      'webrtc.answer_call',
      WebrtcRequests['webrtc.answer_call'].params,
      async ({ call_id, answer_sdp }) => {
        if (call_id) {
          const s = e.status(call_id); // ErrCallNotFound first
          // A standard peer's call was answered by webrtc.create_call itself (its answer_sdp): nothing more to do.
          if (this.seen.get(call_id)?.standard) {
            if (s.state === 'ended') throw new ParleyError('invalid_state', 'that call has already ended');
            return success;
          }
        }
        if (answer_sdp !== undefined) {
          throw new ParleyError('invalid_params', 'answer_sdp: the daemon makes its own answer to a Parley call; leave answer_sdp out', {
            issues: [{ path: 'answer_sdp', message: 'not taken for this call' }],
          });
        }
        // Answering opens the audio devices (often longer than the 0.5 s socat waits after
        // its input ends): an error in the first moments is the answer; after that the call
        // is being answered and its outcome shows in get_call_status and the audit log.
        const answering = e.answer(call_id);
        const early = await Promise.race([answering.then(() => 'done' as const), new Promise<'pending'>((r) => setTimeout(() => r('pending'), ANSWER_REPLY_WAIT_MS))]);
        if (early === 'pending') answering.catch(() => {});
        return success;
      },
      named,
    );
    rpc.handle(
      'webrtc.reject_call',
      WebrtcRequests['webrtc.reject_call'].params,
      async ({ call_id, reason }) => {
        await this.rejectCall(call_id, reason && /busy/i.test(reason) ? 'busy' : 'declined', reason);
        return success;
      },
      named,
    );
    rpc.handle(
      'webrtc.end_call',
      WebrtcRequests['webrtc.end_call'].params,
      async ({ call_id, reason }) => {
        await this.endCall(call_id, reason);
        return success;
      },
      named,
    );
    rpc.handle(
      'webrtc.send_candidates',
      WebrtcRequests['webrtc.send_candidates'].params,
      async ({ call_id, candidates }) => {
        await e.addRemoteCandidates(
          call_id,
          candidates.map((c) => ({ candidate: c.candidate, sdpMid: c.sdp_mid ?? null, sdpMLineIndex: c.sdp_mline_index ?? null })),
        );
        return success;
      },
      named,
    );
    rpc.handle('webrtc.get_call_status', WebrtcRequests['webrtc.get_call_status'].params, ({ call_id }) => this.guideStatus(e.status(call_id)), named);
    rpc.handle(
      'webrtc.list',
      WebrtcRequests['webrtc.list'].params,
      () => ({ calls: e.list().filter((c) => c.state !== 'ended').map((c) => this.guideStatus(c)) }),
      named,
    );
    rpc.handle(
      'webrtc.get_audit_log',
      WebrtcRequests['webrtc.get_audit_log'].params,
      (p) => {
        const audit = this.options.audit;
        if (!audit) throw new ParleyError('unavailable', 'this daemon keeps no audit log');
        const time = (v: number | string | undefined) => (v === undefined ? undefined : typeof v === 'number' ? v : Date.parse(v));
        const r = audit.query({
          limit: p.limit,
          offset: p.offset,
          ...(p.event_type !== undefined ? { eventTypes: Array.isArray(p.event_type) ? p.event_type : [p.event_type] } : {}),
          ...(p.call_id ? { callId: p.call_id } : {}),
          ...(p.since !== undefined ? { since: time(p.since) } : {}),
          ...(p.until !== undefined ? { until: time(p.until) } : {}),
        });
        return { entries: r.entries, total: r.total, ...(r.nextOffset !== undefined ? { next_offset: r.nextOffset } : {}) };
      },
      named,
    );
  }

  private register(rpc: RpcPeer<void>): void {
    const e = this.engine;
    this.registerGuide(rpc);
    rpc.handle('create_call', ControlRequests.create_call.params, async ({ to }) => ({ callId: await this.createCall(to) }));
    rpc.handle('answer_call', ControlRequests.answer_call.params, async ({ callId }) => ({ callId: await e.answer(callId) }));
    rpc.handle('reject_call', ControlRequests.reject_call.params, async ({ callId, reason }) => ({
      callId: await this.rejectCall(callId, reason),
    }));
    rpc.handle('end_call', ControlRequests.end_call.params, async ({ callId }) => ({ callId: await this.endCall(callId) }));
    rpc.handle('hold_call', ControlRequests.hold_call.params, ({ callId }) => ({ callId: e.setHold(callId, true) }));
    rpc.handle('resume_call', ControlRequests.resume_call.params, ({ callId }) => ({ callId: e.setHold(callId, false) }));
    rpc.handle('get_call_status', ControlRequests.get_call_status.params, ({ callId }) => e.status(callId));
    rpc.handle('list_calls', ControlRequests.list_calls.params, () => ({ calls: e.list() }));
    const rooms = this.options.rooms;
    const noRooms = () => new ParleyError('unavailable', 'this client does not do group calls');
    /** The room named, or the one we are in. */
    const here = (r: RoomClient, roomId: string | undefined): string => {
      const id = roomId ?? r.currentRoomId();
      if (!id) throw new ParleyError('invalid_state', 'not in a group call: name the room (roomId)');
      return id;
    };
    rpc.handle('create_room', ControlRequests.create_room.params, ({ maxParticipants, invite }) => {
      if (!rooms) throw noRooms();
      return rooms.create(maxParticipants, invite);
    });
    rpc.handle('join_room', ControlRequests.join_room.params, ({ roomId, link }) => {
      if (!rooms) throw noRooms();
      if (link) return rooms.joinByLink(link);
      if (roomId) return rooms.join(roomId);
      const ringing = rooms.ringing();
      if (ringing.length !== 1)
        throw new ParleyError('invalid_params', ringing.length === 0 ? 'no group call rings: name the room (roomId) or give a call link' : 'several group calls ring: name the room (roomId)');
      return rooms.join(ringing[0]!.roomId);
    });
    rpc.handle('leave_room', ControlRequests.leave_room.params, async ({ roomId }) => {
      if (!rooms) throw noRooms();
      return { roomId: await rooms.leave(roomId) };
    });
    rpc.handle('list_participants', ControlRequests.list_participants.params, () => {
      if (!rooms) throw noRooms();
      return rooms.current();
    });
    rpc.handle('invite_to_room', ControlRequests.invite_to_room.params, async ({ roomId, to }) => {
      if (!rooms) throw noRooms();
      return { invited: await rooms.invite(here(rooms, roomId), Array.isArray(to) ? to : [to]) };
    });
    rpc.handle('decline_room', ControlRequests.decline_room.params, async ({ roomId }) => {
      if (!rooms) throw noRooms();
      const ringing = rooms.ringing();
      const id = roomId ?? (ringing.length === 1 ? ringing[0]!.roomId : undefined);
      if (!id) throw new ParleyError('not_found', ringing.length === 0 ? 'no group call rings' : 'several group calls ring: name the room (roomId)');
      await rooms.decline(id);
      return { roomId: id };
    });
    rpc.handle('list_room_rings', ControlRequests.list_room_rings.params, () => {
      if (!rooms) throw noRooms();
      return rooms.ringing();
    });
    rpc.handle('create_room_link', ControlRequests.create_room_link.params, ({ roomId, expiresInSeconds, approval }) => {
      if (!rooms) throw noRooms();
      return rooms.createLink(here(rooms, roomId), {
        ...(expiresInSeconds !== undefined ? { expiresInSeconds } : {}),
        ...(approval !== undefined ? { approval } : {}),
      });
    });
    rpc.handle('revoke_room_link', ControlRequests.revoke_room_link.params, async ({ roomId, linkId }) => {
      if (!rooms) throw noRooms();
      await rooms.revokeLink(here(rooms, roomId), linkId);
      return { ok: true as const };
    });
    rpc.handle('admit_to_room', ControlRequests.admit_to_room.params, async ({ roomId, knockId, admit }) => {
      if (!rooms) throw noRooms();
      await rooms.admit(here(rooms, roomId), knockId, admit);
      return { ok: true as const };
    });
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
      const audit = (event_type: string, extra: { user_id?: string; details?: Record<string, string> } = {}) =>
        this.options.audit?.append({ event_type, ...extra });
      rpc.handle('revoke_device', ControlRequests.revoke_device.params, async ({ deviceId }) => {
        await a.sessions.revoke(deviceId);
        audit('device_revoked', { details: { device_id: deviceId } });
        return ok;
      });
      rpc.handle('refresh_session', ControlRequests.refresh_session.params, async () => ({ expiresAt: await a.sessions.refresh() }));
      const e2ee = a.e2ee;
      if (e2ee) {
        rpc.handle('get_safety_number', ControlRequests.get_safety_number.params, ({ username }) => e2ee.safetyNumber(username));
        rpc.handle('mark_verified', ControlRequests.mark_verified.params, async ({ username }) => {
          const r = await e2ee.verify(username);
          audit('contact_verified', { user_id: username });
          return r;
        });
        rpc.handle('accept_key_change', ControlRequests.accept_key_change.params, async ({ username }) => {
          const r = await e2ee.acceptKeyChange(username);
          audit('key_change_accepted', { user_id: username });
          return r;
        });
        rpc.handle('get_trust', ControlRequests.get_trust.params, ({ username }) => e2ee.trustInfo(username));
        rpc.handle('get_account_devices', ControlRequests.get_account_devices.params, () => e2ee.accountDevices());
        rpc.handle('start_device_link', ControlRequests.start_device_link.params, () => e2ee.startLink());
        rpc.handle('link_device', ControlRequests.link_device.params, ({ code }) => e2ee.link(code));
        rpc.handle('reset_account_key', ControlRequests.reset_account_key.params, async () => {
          const r = await e2ee.resetAccountKey();
          audit('account_key_reset');
          return r;
        });
      }
      rpc.handle('logout', ControlRequests.logout.params, async () => {
        await a.sessions.logout();
        audit('logout');
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
    for (const [p, peer] of this.peers) {
      if (peer.mode === 'all' || (peer.mode === 'guide' && method === 'budget_warning')) p.notify(method, params);
      else if (peer.mode === 'pending' && peer.held.length < 200) peer.held.push([method, params]);
    }
  }

  private setMode(rpc: RpcPeer, mode: 'guide' | 'all'): void {
    const peer = this.peers.get(rpc);
    if (!peer || peer.mode === 'all' || peer.mode === mode) return;
    clearTimeout(peer.timer);
    const held = peer.held;
    peer.held = [];
    peer.mode = mode;
    for (const [method, params] of held) if (mode === 'all' || method === 'budget_warning') rpc.notify(method, params);
  }

  /** Moves a connection's notification mode on by the method names of one inbound value (see `peers`). */
  private noteMethods(rpc: RpcPeer, text: string): void {
    if (this.peers.get(rpc)?.mode === 'all') return;
    let payload: unknown;
    try {
      payload = JSON.parse(text);
    } catch {
      return;
    }
    for (const m of Array.isArray(payload) ? payload : [payload]) {
      const method = typeof m === 'object' && m !== null ? (m as { method?: unknown }).method : undefined;
      if (typeof method === 'string') this.setMode(rpc, method.startsWith('webrtc.') ? 'guide' : 'all');
    }
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
    const splitter = new JsonStreamSplitter(1024 * 1024);
    socket.on('data', (chunk: string) => {
      for (const ev of splitter.push(chunk)) if (ev.kind === 'value') void rpc.receive(ev.text, undefined);
      if (splitter.failed) socket.destroy();
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
