import type { Kysely } from 'kysely';
import type { DB } from './db';

/**
 * A durable list of the calls in progress and their devices (`open_calls`),
 * so that a server killed without a shutdown (kill -9, power loss) can, when
 * it starts again, record how those calls ended and tell each of their
 * devices `call.ended` with `failed` when it reconnects — or, for a call that
 * was answered, offer it for resumption (server/resume.ts): its media never
 * went through the server and may still be flowing.
 *
 * Writes are asynchronous and never throw to the caller; `flush()` waits for them.
 */
/** A call a previous run left open. */
export interface RecoveredCall {
  callId: string;
  callerAccountId: string;
  /** Device ids: the caller's first; for an answered call exactly [caller, callee]. */
  devices: string[];
  /** Unix ms of the answer; null for a call that was still ringing (those are ended at once). */
  answeredAt: number | null;
}

export class OpenCalls {
  /**
   * The last write of each call with writes in flight. A call's writes run one
   * after another, in the order asked: with PostgreSQL's pool, an `ended` delete
   * sent beside the insert of the same call could otherwise run first and leave
   * the row behind (a call "open" after a restart that had ended long before).
   */
  private readonly chains = new Map<string, Promise<void>>();
  /** Calls ended by the crash, per device, not yet told to it. */
  private readonly untold = new Map<string, string[]>();

  constructor(private readonly db: Kysely<DB>) {}

  /**
   * Reads the calls a previous run left open (it did not shut down), forgets
   * them in the store, and keeps their device ids for `takeEndedFor`.
   * @returns those calls (for the audit log).
   */
  async recover(): Promise<RecoveredCall[]> {
    const rows = await this.db.selectFrom('open_calls').selectAll().execute();
    await this.db.deleteFrom('open_calls').execute();
    const calls = rows.map((r) => ({
      callId: r.call_id,
      callerAccountId: r.caller_account_id,
      devices: JSON.parse(r.devices) as string[],
      answeredAt: r.answered_at ?? null,
    }));
    for (const c of calls) if (c.answeredAt === null) this.markEnded(c.callId, c.devices);
    return calls;
  }

  /** Remembers that a recovered call ended, to tell `devices` once when they say hello. */
  markEnded(callId: string, devices: readonly string[]): void {
    for (const d of devices) this.untold.set(d, [...(this.untold.get(d) ?? []), callId]);
  }

  /** The calls a crash ended for this device that it has not been told about; each is returned once. */
  takeEndedFor(deviceId: string): string[] {
    const ids = this.untold.get(deviceId) ?? [];
    this.untold.delete(deviceId);
    return ids;
  }

  /**
   * Records a call and the devices now part of it (insert or replace).
   * @param answeredAt Unix ms of the answer (then `devices` is [caller, callee]); null while ringing.
   */
  set(callId: string, callerAccountId: string, devices: string[], createdAt: number, answeredAt: number | null = null): void {
    this.track(callId, () =>
      this.db
        .insertInto('open_calls')
        .values({
          call_id: callId,
          caller_account_id: callerAccountId,
          devices: JSON.stringify(devices),
          created_at: createdAt,
          answered_at: answeredAt,
        })
        .onConflict((oc) =>
          oc.column('call_id').doUpdateSet({ devices: JSON.stringify(devices), answered_at: answeredAt }),
        )
        .execute(),
    );
  }

  /** Forgets a call that ended. */
  delete(callId: string): void {
    this.track(callId, () => this.db.deleteFrom('open_calls').where('call_id', '=', callId).execute());
  }

  /** Resolves when every write started so far has finished. */
  async flush(): Promise<void> {
    while (this.chains.size > 0) await Promise.all([...this.chains.values()]);
  }

  /** Runs `write` after the call's earlier writes; a failure is dropped (best effort, as before). */
  private track(callId: string, write: () => Promise<unknown>): void {
    const previous = this.chains.get(callId) ?? Promise.resolve();
    const p: Promise<void> = previous.then(write).then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(callId, p);
    void p.then(() => {
      if (this.chains.get(callId) === p) this.chains.delete(callId);
    });
  }
}
