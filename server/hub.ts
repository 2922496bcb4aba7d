import type { EndReason, RejectReason } from '../common/call';
import { ParleyError } from '../common/errors';
import type { Envelope, SecurityReason } from '../common/protocol/envelope';
import type {
  PeerInfo,
  SignalNotification,
  SignalNotificationParams,
} from '../common/protocol/signaling';

/** One authenticated signaling connection of a device, as the hub sees it. */
export interface DeviceLink {
  readonly peer: PeerInfo;
  /** Sends a notification to the device; a closed link drops it silently. */
  notify<N extends SignalNotification>(method: N, params: SignalNotificationParams<N>): void;
  /** Closes the connection (WebSocket close code and reason). */
  close(code: number, reason: string): void;
  /**
   * Several nodes (server/cluster.ts): the id of the node that holds this
   * device's socket when that is another node (the link then forwards through
   * Redis); undefined for a socket of this process.
   */
  readonly node?: string | undefined;
}

/** An account as the callee of a call. */
export interface AccountRef {
  accountId: string;
  username: string;
}

/**
 * The server side of a call, one state at a time; the ring timer belongs to
 * the ringing state and is cleared by the transition that leaves it.
 * - `ringing`: the invite went to every online device of the callee (`invited`);
 *   `ringingSent` once the caller was told one of them rings.
 * - `active`: one callee device answered; only it and the caller's device are parties now.
 */
type CallPhase =
  | { kind: 'ringing'; invited: Set<string>; ringingSent: boolean; timer: NodeJS.Timeout }
  | {
      kind: 'active';
      callee: PeerInfo;
      answeredAt: number;
      /** Policy timers (lifetime, budget warnings and ends), cleared when the call ends. */
      timers: NodeJS.Timeout[];
      /** Duration budget of this call, seconds (null: none). */
      budgetSeconds: number | null;
      /**
       * Parties whose signaling connection dropped, by device id: the call is
       * held for them until their grace timer fires (then it ends `failed`);
       * what the other side sends them meanwhile waits in the relay log.
       */
      away: Map<string, AwayParty>;
    };

/** A party of an answered call whose connection dropped, within its grace period. */
interface AwayParty {
  /** When its connection dropped, Unix ms. */
  since: number;
  /** Ends the call `failed` when the device is not back in time. */
  timer: NodeJS.Timeout;
}

/**
 * The `call.candidate` messages relayed to one device of a call, numbered
 * from 0 in the order relayed (the sealed messages inside are numbered too,
 * and one lost would end the call `replayed`). The recent ones are kept so
 * that a device that comes back — after a grace period, or over a new socket
 * that replaced one the server was still writing into — gets what it missed:
 * its hello says how many it received (`calls[].received`).
 */
interface RelayLog {
  /** Messages relayed so far (the next one's number). */
  count: number;
  /** The most recent ones, oldest first; `sent`: written to a connection. */
  recent: Array<{ i: number; params: SignalNotificationParams<'call.candidate'>; sent: boolean }>;
}

/** Messages kept per device and call for re-sending; a device that missed more than this ends the call `failed`. */
const RELAY_LOG_MAX = 256;

interface Call {
  callId: string;
  /** What was relayed to each device of the call, by device id. */
  relayLog: Map<string, RelayLog>;
  caller: PeerInfo;
  callee: AccountRef;
  phase: CallPhase;
  createdAt: number;
}

/** Facts about a call's life, for the log and the audit table (never envelopes). */
export type HubEvent =
  | {
      event: 'call.invited';
      callId: string;
      caller: PeerInfo;
      callee: AccountRef;
      devices: number;
      /** The callee devices that ring. */
      deviceIds: string[];
    }
  | { event: 'call.busy'; callId: string; caller: PeerInfo; callee: AccountRef }
  | { event: 'call.ringing'; callId: string; caller: PeerInfo; setupMs: number }
  | { event: 'call.answered'; callId: string; caller: PeerInfo; callee: PeerInfo; setupMs: number }
  /** An answered call a server crash dropped is back (server/resume.ts); `answeredAt` is the original answer, Unix ms. */
  | { event: 'call.resumed'; callId: string; caller: PeerInfo; callee: PeerInfo; answeredAt: number }
  | { event: 'call.rejected'; callId: string; caller: PeerInfo; by: PeerInfo; reason: RejectReason }
  /** A party's connection dropped mid-call: the call is held for it for `graceMs`. */
  | { event: 'call.party_away'; callId: string; deviceId: string; graceMs: number }
  /** It came back within the grace period, after `awayMs`; the call goes on. */
  | { event: 'call.party_back'; callId: string; deviceId: string; awayMs: number }
  | {
      event: 'call.ended';
      callId: string;
      caller: PeerInfo;
      callee: AccountRef;
      reason: EndReason;
      by: string | null;
      durationMs: number;
      /** Why the server ended it, when no party did: `admin` (calls.end) or `server_shutdown`. */
      cause?: EndCause;
      /** A party reported a failed end-to-end check (`call.security`). */
      security?: SecurityReason;
    };

/** Why the server itself ended a call: `calls.end`, shutdown, or call policy (lifetime, budget). */
export type EndCause = 'admin' | 'server_shutdown' | 'policy';

/** A call as the admin API shows it. Times are Unix ms. */
export interface CallSnapshot {
  callId: string;
  caller: PeerInfo;
  /** The callee account and, once answered, the device that answered (else null). */
  callee: AccountRef & { deviceId: string | null };
  state: 'ringing' | 'active';
  createdAt: number;
  answeredAt: number | null;
  /** Seconds since the answer (0 while ringing). */
  durationSeconds: number;
  /** Callee devices still ringing (0 once answered). */
  ringingDevices: number;
  /** Duration budget of the call, seconds (null: no budget applies). */
  budgetSeconds: number | null;
}

/**
 * What a request carries to route: one envelope for every recipient device,
 * or one per device (sealed envelopes open only on their own device). The hub
 * never looks inside.
 */
export type Routed = { envelope: Envelope; envelopes?: undefined } | { envelope?: undefined; envelopes: Record<string, Envelope> };

/** The envelope for one device, or undefined when the sender sealed none for it. A bare Envelope goes to every device. */
function envelopeFor(r: Routed | Envelope, deviceId: string): Envelope | undefined {
  if ('kind' in r) return r;
  return r.envelopes ? r.envelopes[deviceId] : r.envelope;
}

/**
 * Several nodes (server/cluster.ts): what the other nodes' calls add to an
 * invite's checks — the devices in a call owned elsewhere, and the call
 * counts across the cluster (this hub's own calls included).
 */
export interface ClusterCallCounts {
  /** Device ids that are a party of some call in the cluster. */
  busy: ReadonlySet<string>;
  callerCalls: number;
  calleeCalls: number;
  totalCalls: number;
}

/** Concurrency limits (config `policy.*`); 0 means no limit. */
export interface HubLimits {
  /** Calls (ringing or active) one account may be a party of at once. */
  maxCallsPerAccount: number;
  /** Calls (ringing or active) on the whole server. */
  maxCalls: number;
}

/** WebSocket close code sent to a connection replaced by a newer one of the same device. */
export const CLOSE_REPLACED = 4001;
/** WebSocket close code for a connection whose device token expired. */
export const CLOSE_EXPIRED = 4002;
/** WebSocket close code for a connection whose device was revoked or logged out. */
export const CLOSE_REVOKED = 4003;
/** WebSocket close code for a connection that did not complete `hello` within `limits.hello_timeout_seconds`. */
export const CLOSE_HELLO_TIMEOUT = 4004;

/**
 * Online devices and the calls between them: the server's routing state
 * machine. Everything here is in memory and synchronous; a restart drops calls.
 * With several nodes (server/cluster.ts) the same code routes across them: the
 * devices other nodes hold are links with `node` set (mirrored through Redis),
 * and this hub holds the calls this node owns (the ones whose invite it took).
 *
 * Semantics (one rule throughout): the device whose request ends a call learns
 * it from that request's result (`{ok:true}`); every other device still in the
 * call gets `call.ended` with the reason.
 * - `call.reject` (callee, ringing): caller and the callee's other invited devices get the given reason.
 * - `call.cancel` (caller, ringing): the invited devices get `hangup`.
 * - `call.hangup` (either party, any phase): the other side gets `hangup`; from the
 *   callee while ringing it counts as a reject with `declined`.
 * - ring timeout: caller and invited devices get `no_answer`.
 * - a party's connection closes without being replaced: while ringing, the
 *   other side gets `failed`. An answered call is held for the device for
 *   `graceMs` (its media runs peer to peer and may well survive): the other
 *   party gets `call.link` `reconnecting`, what it sends is logged (numbered),
 *   and the device's next hello that lists the call (`reconnected`) delivers
 *   what the device missed and tells the other party `online`. A hello without the call, or
 *   no hello within the grace, ends it `failed` for both. A reconnect of the
 *   same device (which replaces its connection) keeps its calls: routing is by
 *   device id.
 * - answer on one callee device: the callee's other invited devices get `answered_elsewhere`.
 * Anyone not a party of a call gets `call_not_found` for it, so call ids leak nothing.
 */
export class Hub {
  private readonly devices = new Map<string, DeviceLink>();
  private readonly devicesByAccount = new Map<string, Set<string>>();
  private readonly calls = new Map<string, Call>();
  private readonly callsByAccount = new Map<string, Set<string>>();
  private ringTimeoutMs: number;
  private graceMs: number;
  /** Ends of calls a device missed while away (told at its next hello), by device id. */
  private readonly missed = new Map<string, Map<string, EndReason>>();
  private limits: HubLimits = { maxCallsPerAccount: 0, maxCalls: 0 };

  /**
   * @param options.ringTimeoutMs how long a call may ring before it ends with `no_answer`, ms.
   * @param options.graceMs how long an answered call is held for a party whose connection dropped, ms (0: it ends at once, `failed`).
   * @param options.onEvent sees each call event (for logging and audit); must not throw.
   * @param options.onLink sees a link become a device's current one (`attached`) and
   *   stop being it (`detached`, not when it was replaced): how the cluster
   *   (server/cluster.ts) learns presence; must not throw.
   */
  constructor(
    private readonly options: {
      ringTimeoutMs: number;
      graceMs?: number;
      onEvent?: (e: HubEvent) => void;
      onLink?: (change: 'attached' | 'detached', link: DeviceLink) => void;
    },
  ) {
    this.ringTimeoutMs = options.ringTimeoutMs;
    this.graceMs = options.graceMs ?? 0;
  }

  /** Changes the grace period for connections that drop from now on, ms (config.reload). */
  setGrace(ms: number): void {
    this.graceMs = ms;
  }

  /** Sets the concurrency limits for invites from now on (config.reload). */
  setLimits(limits: HubLimits): void {
    this.limits = { ...limits };
  }

  /**
   * Runs `fn` after `delayMs` if the call is still active then; the timer
   * belongs to the call's active state and dies with it.
   * @returns false when there is no such active call.
   */
  addCallTimer(callId: string, delayMs: number, fn: () => void): boolean {
    const call = this.calls.get(callId);
    if (call?.phase.kind !== 'active') return false;
    const timer = setTimeout(fn, Math.max(0, Math.min(delayMs, 2 ** 31 - 1)));
    timer.unref();
    call.phase.timers.push(timer);
    return true;
  }

  /** Records the duration budget of an active call (shown by the admin API), seconds. */
  setCallBudget(callId: string, seconds: number | null): void {
    const call = this.calls.get(callId);
    if (call?.phase.kind === 'active') call.phase.budgetSeconds = seconds;
  }

  /** Sends a notification to every party device of a call (both sides). */
  notifyParties<N extends SignalNotification>(
    callId: string,
    method: N,
    params: SignalNotificationParams<N>,
  ): void {
    const call = this.calls.get(callId);
    if (call) for (const deviceId of this.parties(call)) this.send(deviceId, method, params);
  }

  /** Changes the ring timeout for calls invited from now on, ms (config.reload). */
  setRingTimeout(ms: number): void {
    this.ringTimeoutMs = ms;
  }

  /** Number of calls per state. */
  callsByState(): { ringing: number; active: number } {
    let ringing = 0;
    for (const call of this.calls.values()) if (call.phase.kind === 'ringing') ringing++;
    return { ringing, active: this.calls.size - ringing };
  }

  /** Every current call, oldest first. */
  list(nowMs: number = Date.now()): CallSnapshot[] {
    return [...this.calls.values()].map((c) => this.snapshot(c, nowMs));
  }

  /** One call, or undefined when there is none with that id. */
  get(callId: string, nowMs: number = Date.now()): CallSnapshot | undefined {
    const call = this.calls.get(callId);
    return call ? this.snapshot(call, nowMs) : undefined;
  }

  /**
   * Ends a call on the server's initiative: every party device gets
   * `call.ended` with `reason`; the audit record carries `cause`.
   * @returns false when there is no such call.
   */
  endCall(callId: string, reason: EndReason, cause: EndCause): boolean {
    const call = this.calls.get(callId);
    if (!call) return false;
    this.end(call, reason, null, cause);
    return true;
  }

  /**
   * A party's client reports a failed end-to-end check: the call ends `failed`
   * for every other party, with the security reason passed on.
   * @throws ParleyError `call_not_found` (not a party).
   */
  securityFailure(from: PeerInfo, callId: string, security: SecurityReason): void {
    const call = this.callFor(from, callId);
    this.end(call, 'failed', from.deviceId, undefined, security);
  }

  /** Ends every call with `failed` (cause `server_shutdown`), notifying every party. */
  shutdown(): void {
    for (const callId of [...this.calls.keys()]) this.endCall(callId, 'failed', 'server_shutdown');
  }

  /** Number of online devices connected to this process (not other nodes') and of calls (ringing or active) it holds. */
  get stats(): { devices: number; calls: number } {
    let devices = 0;
    for (const link of this.devices.values()) if (link.node === undefined) devices++;
    return { devices, calls: this.calls.size };
  }

  /**
   * Registers an authenticated connection. An older connection of the same
   * device is closed with CLOSE_REPLACED; its calls continue on the new one.
   */
  attach(link: DeviceLink): void {
    const { deviceId, accountId } = link.peer;
    const old = this.devices.get(deviceId);
    this.devices.set(deviceId, link);
    let set = this.devicesByAccount.get(accountId);
    if (!set) this.devicesByAccount.set(accountId, (set = new Set()));
    set.add(deviceId);
    if (old && old !== link)
      old.close(CLOSE_REPLACED, 'replaced by a newer connection of this device');
    this.options.onLink?.('attached', link);
  }

  /** The device's current link (local or, with several nodes, remote), or undefined. */
  linkOf(deviceId: string): DeviceLink | undefined {
    return this.devices.get(deviceId);
  }

  /** True when this hub holds a call of this id (with several nodes: this node owns it). */
  hasCall(callId: string): boolean {
    return this.calls.has(callId);
  }

  /**
   * Forgets a connection that closed. If it was still the device's current
   * connection, the device goes offline and its calls end (`failed` for the other side).
   */
  detach(link: DeviceLink): void {
    const { deviceId, accountId } = link.peer;
    if (this.devices.get(deviceId) !== link) return;
    this.devices.delete(deviceId);
    this.options.onLink?.('detached', link);
    const set = this.devicesByAccount.get(accountId);
    set?.delete(deviceId);
    if (set?.size === 0) this.devicesByAccount.delete(accountId);

    for (const callId of [...(this.callsByAccount.get(accountId) ?? [])]) {
      const call = this.calls.get(callId);
      if (!call) continue;
      const role = this.roleOf(call, deviceId);
      if (role === 'caller') {
        this.holdFor(call, deviceId);
      } else if (role === 'callee') {
        if (call.phase.kind === 'ringing') {
          call.phase.invited.delete(deviceId);
          if (call.phase.invited.size === 0) this.end(call, 'failed', deviceId);
        } else {
          this.holdFor(call, deviceId);
        }
      }
    }
  }

  /**
   * A device said hello again: its answered calls held within the grace
   * period resume when it lists them (`reported`), and the other party is told
   * `online`; the ones it does not list end `failed` for the other party. For
   * every call it lists, the relayed messages it says it did not receive
   * (from `received` on; without it, the ones never written to a connection)
   * are sent again, in order.
   * @param reported the calls the device says it carries (hello `calls`; none when omitted).
   * @returns the calls to tell this device ended, with the reason (ones it
   *   missed while away, and held ones it came back without), to send after the hello reply.
   */
  reconnected(peer: PeerInfo, reported: ReadonlyArray<{ callId: string; received?: number }>): Array<{ callId: string; reason: EndReason }> {
    const tell: Array<{ callId: string; reason: EndReason }> = [];
    const listed = new Map(reported.map((c) => [c.callId, c]));
    for (const callId of [...(this.callsByAccount.get(peer.accountId) ?? [])]) {
      const call = this.calls.get(callId);
      if (call?.phase.kind !== 'active' || !this.roleOf(call, peer.deviceId)) continue;
      const away = call.phase.away.get(peer.deviceId);
      const mine = listed.get(callId);
      if (away) {
        clearTimeout(away.timer);
        call.phase.away.delete(peer.deviceId);
        if (!mine) {
          this.end(call, 'failed', peer.deviceId);
          tell.push({ callId, reason: 'failed' });
          continue;
        }
        this.emit({ event: 'call.party_back', callId, deviceId: peer.deviceId, awayMs: Date.now() - away.since });
        const other = this.otherParty(call, peer.deviceId);
        if (other) this.send(other, 'call.link', { callId, peer: 'online' });
      }
      if (mine) this.resend(call, peer.deviceId, mine.received);
    }
    const missed = this.missed.get(peer.deviceId);
    this.missed.delete(peer.deviceId);
    for (const [callId, reason] of missed ?? []) tell.push({ callId, reason });
    return tell;
  }

  /** The account's online devices (with several nodes: on any node). */
  devicesOf(accountId: string): string[] {
    return [...(this.devicesByAccount.get(accountId) ?? [])];
  }

  /** True when the device has a current connection. */
  isOnline(deviceId: string): boolean {
    return this.devices.has(deviceId);
  }

  /** True when at least one device of the account is connected. */
  accountOnline(accountId: string): boolean {
    return (this.devicesByAccount.get(accountId)?.size ?? 0) > 0;
  }

  /** True when the account is a party of an answered call. */
  inAnsweredCall(accountId: string): boolean {
    for (const callId of this.callsByAccount.get(accountId) ?? []) {
      if (this.calls.get(callId)?.phase.kind === 'active') return true;
    }
    return false;
  }

  /** Number of calls (ringing or active) the account is a party of. */
  callCount(accountId: string): number {
    return this.callsByAccount.get(accountId)?.size ?? 0;
  }

  /** Sends a notification to one connected device (no-op when it is offline). */
  notifyDevice<N extends SignalNotification>(deviceId: string, method: N, params: SignalNotificationParams<N>): void {
    this.send(deviceId, method, params);
  }

  /** Sends a notification to every connected device of an account. */
  notifyAccount<N extends SignalNotification>(
    accountId: string,
    method: N,
    params: SignalNotificationParams<N>,
  ): void {
    for (const deviceId of this.devicesByAccount.get(accountId) ?? [])
      this.send(deviceId, method, params);
  }

  /**
   * Tells a device its session is over (`session.ended`) and closes its
   * connection with `code` (a revoked device, a logout). No-op when offline.
   */
  disconnectDevice(
    deviceId: string,
    reason: 'revoked' | 'logged_out' | 'expired',
    code: number,
  ): void {
    const link = this.devices.get(deviceId);
    if (!link) return;
    link.notify('session.ended', { reason });
    link.close(code, reason.replace('_', ' '));
  }

  /**
   * Starts a call from `caller` to every online device of `callee`.
   *
   * When the callee is already in a call, the result is still returned and
   * the caller then gets `call.ended` with `busy` (sent through `afterReply`,
   * so it follows the result); the callee is not disturbed.
   * @param afterReply schedules work to run after the request's result was sent.
   * @param cluster several nodes: busy devices and call counts across the cluster (server/cluster.ts).
   * Only the callee's devices that are not in a call ring; when none is free,
   * or the callee account has `maxCallsPerAccount` calls, the callee is busy.
   * With per-device `envelopes`, only the callee's online devices that have one ring
   * (each gets its own); devices the caller did not seal for are not disturbed.
   * @throws ParleyError `invalid_state` (call id in use, or the calling device is already in a call),
   *   `forbidden` (calling yourself), `callee_offline` (no online device, or none the caller sealed for),
   *   `policy` (the caller's account has `maxCallsPerAccount` calls), `unavailable` (the server has `maxCalls` calls).
   */
  invite(
    caller: PeerInfo,
    callId: string,
    callee: AccountRef,
    routed: Routed | Envelope,
    afterReply: (fn: () => void) => void,
    cluster?: ClusterCallCounts,
  ): { callId: string } {
    if (this.calls.has(callId))
      throw new ParleyError('invalid_state', `call id ${callId} is already in use`);
    if (callee.accountId === caller.accountId)
      throw new ParleyError('forbidden', 'you cannot call yourself');
    if (this.deviceInCall(caller.accountId, caller.deviceId) || cluster?.busy.has(caller.deviceId)) {
      throw new ParleyError(
        'invalid_state',
        'you are already in a call; end it before starting another',
      );
    }
    const { maxCallsPerAccount, maxCalls } = this.limits;
    const mine = Math.max(this.callCount(caller.accountId), cluster?.callerCalls ?? 0);
    if (maxCallsPerAccount > 0 && mine >= maxCallsPerAccount) {
      throw new ParleyError(
        'policy',
        `your account already has ${mine} calls going, the most this server allows; end one first`,
      );
    }
    if (maxCalls > 0 && Math.max(this.calls.size, cluster?.totalCalls ?? 0) >= maxCalls) {
      throw new ParleyError(
        'unavailable',
        'this server is carrying as many calls as it can; try again in a few minutes',
      );
    }
    const online = [...(this.devicesByAccount.get(callee.accountId) ?? [])].filter((d) => !!envelopeFor(routed, d));
    if (online.length === 0)
      throw new ParleyError('callee_offline', `${callee.username} is not online`); // same words as signal/calls.ts calleeOffline
    const targets = online.filter((d) => !this.deviceInCall(callee.accountId, d) && !cluster?.busy.has(d));

    if (
      targets.length === 0 ||
      (maxCallsPerAccount > 0 &&
        Math.max(this.callCount(callee.accountId), cluster?.calleeCalls ?? 0) >= maxCallsPerAccount)
    ) {
      this.emit({ event: 'call.busy', callId, caller, callee });
      afterReply(() => this.send(caller.deviceId, 'call.ended', { callId, reason: 'busy' }));
      return { callId };
    }

    const timer = setTimeout(() => this.ringTimeout(callId), this.ringTimeoutMs);
    timer.unref();
    const call: Call = {
      callId,
      relayLog: new Map(),
      caller,
      callee,
      phase: { kind: 'ringing', invited: new Set(targets), ringingSent: false, timer },
      createdAt: Date.now(),
    };
    this.calls.set(callId, call);
    this.index(caller.accountId, callId);
    this.index(callee.accountId, callId);
    this.emit({
      event: 'call.invited',
      callId,
      caller,
      callee,
      devices: targets.length,
      deviceIds: targets,
    });
    for (const deviceId of targets)
      this.send(deviceId, 'call.incoming', { callId, caller, envelope: envelopeFor(routed, deviceId)! });
    return { callId };
  }

  /**
   * A callee device reports that it rings; the caller is told once.
   * @throws ParleyError `call_not_found` (not a party), `invalid_state` (from the caller, or after answer).
   */
  ringing(from: PeerInfo, callId: string): void {
    const call = this.callFor(from, callId);
    if (this.roleOf(call, from.deviceId) !== 'callee') {
      throw new ParleyError('invalid_state', 'only the callee sends call.ringing');
    }
    if (call.phase.kind !== 'ringing')
      throw new ParleyError('invalid_state', 'the call was already answered');
    if (!call.phase.ringingSent) {
      call.phase.ringingSent = true;
      this.send(call.caller.deviceId, 'call.ringing', { callId });
      this.emit({
        event: 'call.ringing',
        callId,
        caller: call.caller,
        setupMs: Date.now() - call.createdAt,
      });
    }
  }

  /**
   * Puts back an answered call that a server crash dropped, once both its
   * devices are connected again and still carry it (server/resume.ts). It is
   * active as before (same id, devices and answer time); no one is notified.
   * @param answeredAt the original answer time, Unix ms.
   * @throws ParleyError `invalid_state` when the id is in use or a device is offline.
   */
  adopt(callId: string, caller: PeerInfo, callee: PeerInfo, answeredAt: number): void {
    if (this.calls.has(callId)) throw new ParleyError('invalid_state', `call ${callId} exists`);
    if (!this.devices.has(caller.deviceId) || !this.devices.has(callee.deviceId))
      throw new ParleyError('invalid_state', 'both devices of a resumed call must be online');
    const call: Call = {
      callId,
      relayLog: new Map(),
      caller,
      callee: { accountId: callee.accountId, username: callee.username },
      createdAt: answeredAt,
      phase: { kind: 'active', callee, answeredAt, timers: [], budgetSeconds: null, away: new Map() },
    };
    this.calls.set(callId, call);
    this.index(caller.accountId, callId);
    this.index(callee.accountId, callId);
    this.emit({ event: 'call.resumed', callId, caller, callee, answeredAt });
  }

  /** True when the device is a party of the call (ringing or active). */
  hasParty(callId: string, deviceId: string): boolean {
    const call = this.calls.get(callId);
    return !!call && !!this.roleOf(call, deviceId);
  }

  /** Sends `call.ended` to one device (a call the hub no longer has, e.g. after a crash). */
  tellEnded(deviceId: string, callId: string, reason: EndReason): void {
    this.send(deviceId, 'call.ended', { callId, reason });
  }

  /**
   * A callee device answers: the caller gets `call.answered` with the answer
   * envelope; other invited devices of the callee get `answered_elsewhere`.
   * @throws ParleyError `call_not_found`, `invalid_state` (own outgoing call, or already answered).
   */
  answer(from: PeerInfo, callId: string, envelope: Envelope): void {
    const call = this.callFor(from, callId);
    if (this.roleOf(call, from.deviceId) === 'caller') {
      throw new ParleyError('invalid_state', 'you cannot answer your own outgoing call');
    }
    const phase = call.phase;
    if (phase.kind !== 'ringing')
      throw new ParleyError('invalid_state', 'the call was already answered');
    clearTimeout(phase.timer);
    const answeredAt = Date.now();
    call.phase = { kind: 'active', callee: from, answeredAt, timers: [], budgetSeconds: null, away: new Map() };
    this.emit({
      event: 'call.answered',
      callId,
      caller: call.caller,
      callee: from,
      setupMs: answeredAt - call.createdAt,
    });
    this.send(call.caller.deviceId, 'call.answered', { callId, callee: from, envelope });
    for (const deviceId of phase.invited) {
      if (deviceId !== from.deviceId)
        this.send(deviceId, 'call.ended', { callId, reason: 'answered_elsewhere' });
    }
  }

  /**
   * A callee device refuses a ringing call; the call ends with `reason` for everyone else.
   * @throws ParleyError `call_not_found`, `invalid_state` (from the caller, or after answer: use hangup).
   */
  reject(from: PeerInfo, callId: string, reason: RejectReason): void {
    const call = this.callFor(from, callId);
    if (this.roleOf(call, from.deviceId) === 'caller') {
      throw new ParleyError(
        'invalid_state',
        'you cannot reject your own outgoing call; use call.cancel',
      );
    }
    if (call.phase.kind !== 'ringing') {
      throw new ParleyError('invalid_state', 'the call was already answered; use call.hangup');
    }
    this.emit({ event: 'call.rejected', callId, caller: call.caller, by: from, reason });
    this.end(call, reason, from.deviceId);
  }

  /**
   * The caller withdraws a call before it is answered; invited devices get `hangup`.
   * @throws ParleyError `call_not_found`, `invalid_state` (from the callee, or after answer: use hangup).
   */
  cancel(from: PeerInfo, callId: string): void {
    const call = this.callFor(from, callId);
    if (this.roleOf(call, from.deviceId) !== 'caller') {
      throw new ParleyError('invalid_state', 'only the caller can cancel; use call.reject');
    }
    if (call.phase.kind !== 'ringing') {
      throw new ParleyError('invalid_state', 'the call was already answered; use call.hangup');
    }
    this.end(call, 'hangup', from.deviceId);
  }

  /**
   * Either party ends the call in any phase. The other side gets `hangup`,
   * except a callee hanging up a still-ringing call, which the caller sees as
   * `declined`, and a party that gave up on the call (`failed`: its media
   * timed out), which the other side sees as `failed`.
   * @throws ParleyError `call_not_found`.
   */
  hangup(from: PeerInfo, callId: string, failed?: 'failed'): void {
    const call = this.callFor(from, callId);
    if (failed) {
      this.end(call, 'failed', from.deviceId);
      return;
    }
    const declined = call.phase.kind === 'ringing' && this.roleOf(call, from.deviceId) === 'callee';
    if (declined)
      this.emit({
        event: 'call.rejected',
        callId,
        caller: call.caller,
        by: from,
        reason: 'declined',
      });
    this.end(call, declined ? 'declined' : 'hangup', from.deviceId);
  }

  /**
   * Relays a trickled ICE candidate to the other party: from the caller to
   * every invited device while ringing (to the answering device after
   * answer), from a callee device to the caller.
   * @throws ParleyError `call_not_found`.
   */
  candidate(from: PeerInfo, callId: string, routed: Routed | Envelope): void {
    const call = this.callFor(from, callId);
    const relay = (deviceId: string) => {
      const envelope = envelopeFor(routed, deviceId);
      if (envelope) this.relayTo(call, deviceId, { callId, envelope });
    };
    if (this.roleOf(call, from.deviceId) === 'callee') {
      relay(call.caller.deviceId);
    } else if (call.phase.kind === 'ringing') {
      for (const deviceId of call.phase.invited) relay(deviceId);
    } else {
      relay(call.phase.callee.deviceId);
    }
  }

  /** Stops every ring timer and forgets all calls (server shutdown). No notifications are sent. */
  close(): void {
    for (const call of this.calls.values()) {
      if (call.phase.kind === 'ringing') clearTimeout(call.phase.timer);
      else this.clearActiveTimers(call.phase);
    }
    this.calls.clear();
    this.callsByAccount.clear();
  }

  // ---- internals ----------------------------------------------------------------

  /**
   * Relays one `call.candidate` to a device and logs it (numbered): written at
   * once when the device is connected; while it is away, kept for its return.
   * A device that misses more than RELAY_LOG_MAX ends the call `failed`.
   */
  private relayTo(call: Call, deviceId: string, params: SignalNotificationParams<'call.candidate'>): void {
    let log = call.relayLog.get(deviceId);
    if (!log) call.relayLog.set(deviceId, (log = { count: 0, recent: [] }));
    const link = this.devices.get(deviceId);
    const away = call.phase.kind === 'active' && call.phase.away.has(deviceId);
    if (!link && !away) return; // an invited device that went offline: it no longer rings
    if (!link && log.recent.length >= RELAY_LOG_MAX && !log.recent[0]!.sent) {
      this.end(call, 'failed', null);
      return;
    }
    log.recent.push({ i: log.count++, params, sent: !!link });
    if (log.recent.length > RELAY_LOG_MAX) log.recent.shift();
    link?.notify('call.candidate', params);
  }

  /** Sends a device again what it missed of a call's relayed messages, in order (see `reconnected`). */
  private resend(call: Call, deviceId: string, received: number | undefined): void {
    const link = this.devices.get(deviceId);
    const log = call.relayLog.get(deviceId);
    if (!link || !log) return;
    for (const m of log.recent) {
      if (received !== undefined ? m.i >= received : !m.sent) {
        m.sent = true;
        link.notify('call.candidate', m.params);
      }
    }
  }

  /** Holds an answered call for a party whose connection dropped (or ends it `failed` with no grace). */
  private holdFor(call: Call, deviceId: string): void {
    if (call.phase.kind !== 'active' || this.graceMs <= 0) {
      this.end(call, 'failed', deviceId);
      return;
    }
    if (call.phase.away.has(deviceId)) return;
    const since = Date.now();
    const graceMs = this.graceMs;
    const timer = setTimeout(() => {
      if (this.calls.get(call.callId) === call) this.end(call, 'failed', null);
    }, graceMs);
    timer.unref();
    call.phase.away.set(deviceId, { since, timer });
    this.emit({ event: 'call.party_away', callId: call.callId, deviceId, graceMs });
    const other = this.otherParty(call, deviceId);
    if (other) this.send(other, 'call.link', { callId: call.callId, peer: 'reconnecting', since, until: since + graceMs });
  }

  /** The other party device of an answered call. */
  private otherParty(call: Call, deviceId: string): string | undefined {
    if (call.phase.kind !== 'active') return undefined;
    return call.caller.deviceId === deviceId ? call.phase.callee.deviceId : call.caller.deviceId;
  }

  /** Clears the timers an answered call's state owns. */
  private clearActiveTimers(phase: Extract<CallPhase, { kind: 'active' }>): void {
    for (const t of phase.timers) clearTimeout(t);
    for (const a of phase.away.values()) clearTimeout(a.timer);
  }

  private callFor(from: PeerInfo, callId: string): Call {
    const call = this.calls.get(callId);
    if (!call || !this.roleOf(call, from.deviceId))
      throw new ParleyError('call_not_found', `no call ${callId}`);
    return call;
  }

  private parties(call: Call): string[] {
    return call.phase.kind === 'ringing'
      ? [call.caller.deviceId, ...call.phase.invited]
      : [call.caller.deviceId, call.phase.callee.deviceId];
  }

  /** True when the device is a party of a call (ringing or active). */
  private deviceInCall(accountId: string, deviceId: string): boolean {
    for (const callId of this.callsByAccount.get(accountId) ?? []) {
      const call = this.calls.get(callId);
      if (call && this.roleOf(call, deviceId)) return true;
    }
    return false;
  }

  private roleOf(call: Call, deviceId: string): 'caller' | 'callee' | undefined {
    if (call.caller.deviceId === deviceId) return 'caller';
    if (
      call.phase.kind === 'ringing'
        ? call.phase.invited.has(deviceId)
        : call.phase.callee.deviceId === deviceId
    ) {
      return 'callee';
    }
    return undefined;
  }

  private ringTimeout(callId: string): void {
    const call = this.calls.get(callId);
    if (call && call.phase.kind === 'ringing') this.end(call, 'no_answer', null);
  }

  private snapshot(call: Call, nowMs: number): CallSnapshot {
    const active = call.phase.kind === 'active' ? call.phase : undefined;
    return {
      callId: call.callId,
      caller: call.caller,
      callee: { ...call.callee, deviceId: active?.callee.deviceId ?? null },
      state: call.phase.kind,
      createdAt: call.createdAt,
      answeredAt: active?.answeredAt ?? null,
      durationSeconds: active ? Math.max(0, nowMs - active.answeredAt) / 1000 : 0,
      ringingDevices: call.phase.kind === 'ringing' ? call.phase.invited.size : 0,
      budgetSeconds: active?.budgetSeconds ?? null,
    };
  }

  /** Ends a call: every party device except `by` gets `call.ended` with `reason` (and `security`, when given). */
  private end(call: Call, reason: EndReason, by: string | null, cause?: EndCause, security?: SecurityReason): void {
    if (call.phase.kind === 'ringing') clearTimeout(call.phase.timer);
    else this.clearActiveTimers(call.phase);
    this.calls.delete(call.callId);
    this.unindex(call.caller.accountId, call.callId);
    this.unindex(call.callee.accountId, call.callId);
    for (const deviceId of this.parties(call)) {
      if (deviceId === by) continue;
      if (call.phase.kind === 'active' && call.phase.away.has(deviceId)) {
        // Away: told at its next hello, with the real reason.
        let m = this.missed.get(deviceId);
        if (!m) this.missed.set(deviceId, (m = new Map()));
        m.set(call.callId, reason);
        if (m.size > 16) m.delete(m.keys().next().value as string);
        continue;
      }
      this.send(deviceId, 'call.ended', { callId: call.callId, reason, ...(security ? { security } : {}) });
    }
    const durationMs = call.phase.kind === 'active' ? Date.now() - call.phase.answeredAt : 0;
    this.emit({
      event: 'call.ended',
      callId: call.callId,
      caller: call.caller,
      callee: call.callee,
      reason,
      by,
      durationMs,
      ...(cause ? { cause } : {}),
      ...(security ? { security } : {}),
    });
  }

  private send<N extends SignalNotification>(
    deviceId: string,
    method: N,
    params: SignalNotificationParams<N>,
  ): void {
    this.devices.get(deviceId)?.notify(method, params);
  }

  private index(accountId: string, callId: string): void {
    let set = this.callsByAccount.get(accountId);
    if (!set) this.callsByAccount.set(accountId, (set = new Set()));
    set.add(callId);
  }

  private unindex(accountId: string, callId: string): void {
    const set = this.callsByAccount.get(accountId);
    set?.delete(callId);
    if (set?.size === 0) this.callsByAccount.delete(accountId);
  }

  private emit(e: HubEvent): void {
    try {
      this.options.onEvent?.(e);
    } catch {
      // An observer's failure must never break routing.
    }
  }
}
