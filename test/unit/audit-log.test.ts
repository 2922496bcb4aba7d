import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../main/core/audit-log';
import { makeTempDir, removeTempDir } from '../harness/process';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) removeTempDir(d);
});
function tempLog(): string {
  const d = makeTempDir('audit');
  dirs.push(d);
  return join(d, 'audit.jsonl');
}

describe('AuditLog', () => {
  it('appends records with rising sequence numbers to a 0600 file and finds them with filters, newest first', () => {
    const path = tempLog();
    const log = new AuditLog(path);
    log.append({ event_type: 'call_created', call_id: 'c1', user_id: 'bob' });
    log.append({ event_type: 'call_ended', call_id: 'c1', user_id: 'bob', reason: 'hangup' });
    log.append({ event_type: 'call_refused', user_id: 'carol', reason: 'key_changed' });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const all = log.query({ limit: 10, offset: 0 });
    expect(all.total).toBe(3);
    expect(all.entries.map((e) => e.seq)).toEqual([3, 2, 1]);
    expect(log.query({ limit: 10, offset: 0, callId: 'c1' }).entries.map((e) => e.event_type)).toEqual(['call_ended', 'call_created']);
    expect(log.query({ limit: 10, offset: 0, eventTypes: ['call_refused'] }).entries[0]).toMatchObject({ user_id: 'carol', reason: 'key_changed' });
    const page = log.query({ limit: 2, offset: 0 });
    expect(page).toMatchObject({ total: 3, nextOffset: 2 });
    expect(log.query({ limit: 2, offset: 2 }).entries.map((e) => e.seq)).toEqual([1]);
    expect(log.query({ limit: 10, offset: 0, since: Date.now() + 60_000 }).total).toBe(0);
    log.close();
  });

  it('never writes a secret-looking detail', () => {
    const path = tempLog();
    const log = new AuditLog(path);
    log.append({ event_type: 'x', details: { token: 'eyJ-secret', password: 'hunter2', offer_sdp: 'v=0', device_id: 'd1', link_code: '123456' } });
    log.close();
    const text = readFileSync(path, 'utf8');
    expect(text).not.toMatch(/eyJ-secret|hunter2|v=0|123456/);
    expect(text).toContain('d1');
  });

  it('keeps every record written before a kill -9, skips a torn last line and goes on numbering', async () => {
    const path = tempLog();
    const script = `
      const { AuditLog } = await import(${JSON.stringify(resolve('main/core/audit-log.ts'))});
      const log = new AuditLog(${JSON.stringify(path)});
      for (let i = 0; i < 200; i++) log.append({ event_type: 'call_created', call_id: 'c' + i });
      process.stdout.write('written\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((ok, fail) => {
      child.stdout.on('data', (d: Buffer) => d.toString().includes('written') && ok());
      child.on('exit', (code) => fail(new Error(`child exited ${code}`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    appendFileSync(path, '{"seq":201,"ts":1,"event_ty'); // a crash in the middle of a write
    const log = new AuditLog(path);
    expect(log.query({ limit: 1000, offset: 0 }).total).toBe(200);
    expect(log.append({ event_type: 'call_created' }).seq).toBe(201);
    log.close();
    const again = new AuditLog(path);
    expect(again.query({ limit: 1, offset: 0 }).entries[0]).toMatchObject({ seq: 201, event_type: 'call_created' });
    expect(again.query({ limit: 1000, offset: 0 }).total).toBe(201);
    again.close();
  });
});
