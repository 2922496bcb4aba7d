import type { PeerInfo } from '../common/protocol/signaling';
import type { RecoveredCall } from './open-calls';

/**
 * Resumption of answered calls after the server was killed (kill -9, a
 * crash): issue 6's "the signaling server restarts mid-call, audio keeps
 * flowing peer to peer", reconciled with issue 4's restart recovery.
 *
 * A call's media never crosses the server, so a call that was answered may
 * well still be up when the server comes back. Each device that reconnects
 * lists in `hello` the answered calls it still carries (`calls`). For every
 * answered call the previous run left open (`open_calls`):
 * - both devices list it within the grace period → the call goes back into
 *   the hub as it was (same call id, answer time, devices) and routes again
 *   (hang-up, policy limits); nobody is told anything, nothing was lost;
 * - a device says hello *without* it (it hung up meanwhile, or an older client
 *   that does not report calls) → the call ends at once, `failed`, for both
 *   (issue 4's behaviour);
 * - the grace period passes without both → it ends `failed`: devices that
 *   reported it are told now, the others at their next hello (issue 4).
 * Calls that were still ringing cannot resume (their offer and answer were in
 * flight) and end at once, as before. A device that lists a call the server
 * does not know at all is told `call.ended` (`failed`), so both ends agree.
 *
 * A graceful shutdown (SIGTERM) keeps issue 4's behaviour — it ends every call
 * with `failed` and tells both devices — because it empties `open_calls` and
 * says why: an operator stopping the service on purpose wants calls to end
 * cleanly, not to linger for a server that may not come back.
 */
export class CallResumption {
  private readonly pending = new Map<
    string,
    { call: RecoveredCall; confirmed: Map<string, PeerInfo>; timer: NodeJS.Timeout }
  >();

  /**
   * @param calls the answered calls the previous run left open.
   * @param graceMs how long both devices have to come back, ms (from now).
   * @param hooks `resume`: put the call back into the hub; `end`: the call is over —
   *   `tellNow` are the devices to notify at once, `untold` those to tell at their next hello.
   */
  constructor(
    calls: readonly RecoveredCall[],
    graceMs: number,
    private readonly hooks: {
      resume(call: RecoveredCall, caller: PeerInfo, callee: PeerInfo): void;
      end(call: RecoveredCall, tellNow: string[], untold: string[]): void;
    },
  ) {
    for (const call of calls) {
      if (call.answeredAt === null || call.devices.length !== 2) continue;
      const timer = setTimeout(() => this.expire(call.callId), graceMs);
      timer.unref();
      this.pending.set(call.callId, { call, confirmed: new Map(), timer });
    }
  }

  /**
   * Several nodes: an answered call whose owner node died, taken over by this
   * node (server/cluster.ts), waits here for its devices like a call a crash
   * of this process left open; `confirmed` are the devices known to still
   * carry it (it resumes at once when both are).
   */
  add(call: RecoveredCall, graceMs: number, confirmed: readonly PeerInfo[]): void {
    if (call.answeredAt === null || call.devices.length !== 2 || this.pending.has(call.callId)) return;
    const timer = setTimeout(() => this.expire(call.callId), graceMs);
    timer.unref();
    const p = { call, confirmed: new Map<string, PeerInfo>(), timer };
    this.pending.set(call.callId, p);
    for (const peer of confirmed) if (call.devices.includes(peer.deviceId)) p.confirmed.set(peer.deviceId, peer);
    if (p.confirmed.size === 2) {
      this.settle(call.callId);
      this.hooks.resume(call, p.confirmed.get(call.devices[0]!)!, p.confirmed.get(call.devices[1]!)!);
    }
  }

  /** Calls still waiting for their devices. */
  get size(): number {
    return this.pending.size;
  }

  /**
   * A device said hello.
   * @param reported the call ids it says it still carries.
   * @param known whether the hub has a call of this id with this device as a party.
   * @returns the calls this device must be told ended (`failed`) after the
   *   hello reply: reported ones the server does not know, and recovered ones
   *   it came back without.
   */
  onHello(peer: PeerInfo, reported: readonly string[], known: (callId: string) => boolean): string[] {
    const tell: string[] = [];
    const listed = new Set(reported);
    const handled = new Set<string>();
    for (const [callId, p] of [...this.pending]) {
      if (!p.call.devices.includes(peer.deviceId)) continue;
      handled.add(callId);
      if (listed.has(callId)) {
        p.confirmed.set(peer.deviceId, peer);
        if (p.confirmed.size === 2) {
          this.settle(callId);
          this.hooks.resume(p.call, p.confirmed.get(p.call.devices[0]!)!, p.confirmed.get(p.call.devices[1]!)!);
        }
      } else {
        // Back without the call: it is over for both.
        this.settle(callId);
        tell.push(callId);
        const others = p.call.devices.filter((d) => d !== peer.deviceId);
        this.hooks.end(
          p.call,
          others.filter((d) => p.confirmed.has(d)),
          others.filter((d) => !p.confirmed.has(d)),
        );
      }
    }
    for (const callId of listed) {
      if (!handled.has(callId) && !this.pending.has(callId) && !known(callId)) tell.push(callId);
    }
    return tell;
  }

  /** Stops the grace timers (server shutdown). */
  close(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
  }

  private expire(callId: string): void {
    const p = this.pending.get(callId);
    if (!p) return;
    this.settle(callId);
    const devices = p.call.devices;
    this.hooks.end(
      p.call,
      devices.filter((d) => p.confirmed.has(d)),
      devices.filter((d) => !p.confirmed.has(d)),
    );
  }

  private settle(callId: string): void {
    const p = this.pending.get(callId);
    if (p) clearTimeout(p.timer);
    this.pending.delete(callId);
  }
}
