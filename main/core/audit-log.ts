import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { AuditEntry } from '../../common/protocol/webrtc-api';

/** What a caller records: everything but the sequence number and the time. */
export type AuditRecord = Omit<AuditEntry, 'seq' | 'ts' | 'time'>;

/** Filters and paging of {@link AuditLog.query}. */
export interface AuditQuery {
  /** Entries to return, newest first. */
  limit: number;
  /** Newest entries to skip first. */
  offset: number;
  eventTypes?: string[];
  callId?: string;
  /** Unix ms, inclusive. */
  since?: number;
  /** Unix ms, inclusive. */
  until?: number;
}

/** Detail keys that are never written, whatever a caller passes (defence in depth: no secret in the log). */
const SECRET_KEY = /token|password|secret|private|credential|sdp|key$|code$/i;

/**
 * The headless client's local audit log: an append-only file of JSON lines
 * (`<data-dir>/audit.jsonl`, mode 0600), one record per security-relevant
 * event of this daemon (calls created, answered, rejected, ended with reason;
 * refused calls; key changes and verifications; device alarms).
 *
 * Each record is written with one `write(2)` on an `O_APPEND` descriptor
 * before `append` returns, so a record is in the kernel when the event has
 * happened and a `kill -9` loses nothing (a power cut may lose what the page
 * cache held; records are not fsynced, to keep calls fast). A torn last line
 * (a crash inside the write) is skipped when reading. Records hold usernames,
 * device ids, call ids and reasons only: never a token, a key, a password or
 * an SDP (keys matching those names are dropped from `details`).
 */
export class AuditLog {
  private fd: number;
  private seq: number;

  /** Opens (creating it and its folder) the log at `path`. @throws Error when the file cannot be opened. */
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.fd = openSync(path, 'a', 0o600);
    this.seq = this.readAll().reduce((m, e) => Math.max(m, e.seq), 0);
    // A crash inside a write left a torn last line: end it, so the next record starts on a line of its own.
    if (this.lastByteIsNotNewline()) writeSync(this.fd, '\n');
  }

  /** Appends one record; returns it as stored. Never throws: a full disk must not take a call down (the failure is logged). */
  append(record: AuditRecord): AuditEntry {
    const ts = Date.now();
    const entry: AuditEntry = { seq: ++this.seq, ts, time: new Date(ts).toISOString(), ...clean(record) };
    try {
      writeSync(this.fd, JSON.stringify(entry) + '\n');
    } catch (e) {
      console.warn(`[audit] could not write the audit log ${this.path}: ${e instanceof Error ? e.message : String(e)}`);
    }
    return entry;
  }

  /** Entries matching `q`, newest first, with the number that matched before paging. */
  query(q: AuditQuery): { entries: AuditEntry[]; total: number; nextOffset?: number } {
    const types = q.eventTypes && new Set(q.eventTypes);
    const matching = this.readAll()
      .filter(
        (e) =>
          (!types || types.has(e.event_type)) &&
          (!q.callId || e.call_id === q.callId) &&
          (q.since === undefined || e.ts >= q.since) &&
          (q.until === undefined || e.ts <= q.until),
      )
      .reverse();
    const entries = matching.slice(q.offset, q.offset + q.limit);
    const next = q.offset + entries.length;
    return { entries, total: matching.length, ...(next < matching.length ? { nextOffset: next } : {}) };
  }

  close(): void {
    closeSync(this.fd);
  }

  private lastByteIsNotNewline(): boolean {
    try {
      const text = readFileSync(this.path, 'utf8');
      return text.length > 0 && !text.endsWith('\n');
    } catch {
      return false;
    }
  }

  private readAll(): AuditEntry[] {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch {
      return [];
    }
    const out: AuditEntry[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const e = JSON.parse(line) as AuditEntry;
        if (typeof e.seq === 'number' && typeof e.event_type === 'string') out.push(e);
      } catch {
        // A torn line from a crash in the middle of a write: skipped.
      }
    }
    return out;
  }
}

function clean(record: AuditRecord): AuditRecord {
  if (!record.details) return record;
  const details: NonNullable<AuditRecord['details']> = {};
  for (const [k, v] of Object.entries(record.details)) {
    if (SECRET_KEY.test(k)) continue;
    details[k] = typeof v === 'string' ? v.slice(0, 200) : v;
  }
  return { ...record, details };
}
