import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plainEnvelope } from '../../common/protocol/envelope';
import { adminRequest, REPO_ROOT, startServer, type RunningServer } from '../harness/server';
import { openServerStore } from '../harness/store';
import {
  login,
  signIn,
  type SignedInDevice,
  connectCall as connectCallWith,
  makeContacts,
  offlineContact,
} from '../harness/signal-client';

const run = promisify(execFile);
const offer = plainEnvelope({ type: 'offer', sdp: 'v=0 offer-sdp-audit-5b2e' });
const answer = plainEnvelope({ type: 'answer', sdp: 'v=0 answer-sdp-audit-91fa' });
const TURN_SECRET = 'turn-shared-secret-3c9d7e';
const BASE_TOML = `
[turn]
urls = ["turn:127.0.0.1:3478?transport=udp"]
secret = "${TURN_SECRET}"
`;

interface AuditEvent {
  id: number;
  at: number;
  event: string;
  accountId: string | null;
  deviceId: string | null;
  callId: string | null;
  detail: Record<string, unknown> | null;
}
interface AuditPage {
  events: AuditEvent[];
  next: string | null;
}
interface AdminCall {
  callId: string;
  state: string;
  caller: { username: string };
  callee: { username: string; deviceId: string | null };
  createdAt: number;
  answeredAt: number | null;
  durationSeconds: number;
  budgetUsedSeconds: null;
  budgetRemainingSeconds: null;
}

let server: RunningServer;
let dataDir: string;
let n = 0;
const admin = <T>(method: string, params: object = {}) =>
  adminRequest<T>(server.adminSocket, method, params);

async function pair(): Promise<[SignedInDevice, SignedInDevice]> {
  n++;
  const a = await signIn(server, `acaller${n}`);
  const b = await signIn(server, `acallee${n}`);
  await makeContacts(a, b);
  return [a, b];
}
const connectCall = (caller: SignedInDevice, callee: SignedInDevice) =>
  connectCallWith(caller, callee, { offer, answer });
/** Audit records for a query, polled until `done` holds (writes are asynchronous), at most ~2 s. */
async function auditUntil(
  params: object,
  done: (events: AuditEvent[]) => boolean,
): Promise<AuditEvent[]> {
  let events: AuditEvent[] = [];
  for (let i = 0; i < 40; i++) {
    events = (await admin<AuditPage>('audit.query', params)).events;
    if (done(events)) return events;
    await new Promise((r) => setTimeout(r, 50));
  }
  return events;
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'parley-admin-test-'));
  server = await startServer({ dataDir, configToml: BASE_TOML });
});
afterAll(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('audit log', () => {
  it('records a full call: created, answered and ended with its reason, newest first', async () => {
    const [alice, bob] = await pair();
    const callId = await connectCall(alice, bob);
    await alice.client.request('call.hangup', { callId });
    await bob.client.nextNotification('call.ended', { callId });
    const events = await auditUntil({ callId }, (e) => e.length >= 3);
    expect(events.map((e) => e.event)).toEqual(['call.ended', 'call.answered', 'call.created']);
    const [ended, answered, created] = events as [AuditEvent, AuditEvent, AuditEvent];
    expect(created).toMatchObject({
      accountId: alice.accountId,
      deviceId: alice.deviceId,
      detail: { callee: bob.username, calleeAccountId: bob.accountId, devices: 1 },
    });
    expect(answered).toMatchObject({ accountId: bob.accountId, deviceId: bob.deviceId });
    expect(ended.detail).toMatchObject({ reason: 'hangup', by: alice.deviceId });
    expect(ended.at).toBeGreaterThanOrEqual(created.at);
    await Promise.all([alice.client.close(), bob.client.close()]);
  });

  it('records a rejected call, refusals (unknown_user, callee_offline, forbidden) and failed logins', async () => {
    const [alice, bob] = await pair();
    const rejected = randomUUID();
    await alice.client.request('call.invite', {
      callId: rejected,
      callee: bob.username,
      envelope: offer,
    });
    await bob.client.nextNotification('call.incoming', { callId: rejected });
    await bob.client.request('call.reject', { callId: rejected, reason: 'declined' });
    await alice.client.nextNotification('call.ended', { callId: rejected });

    await offlineContact(server, alice, 'offline-olga');
    const refusals: [string, string][] = [
      ['nobody-here', 'unknown_user'],
      ['offline-olga', 'callee_offline'],
      [alice.username, 'forbidden'],
    ];
    for (const [callee, reason] of refusals) {
      await expect(
        alice.client.request('call.invite', { callId: randomUUID(), callee, envelope: offer }),
      ).rejects.toMatchObject({ reason });
    }
    await expect(login(server.url, alice.username, 'wrong password!')).rejects.toMatchObject({
      reason: 'bad_credentials',
    });
    await expect(login(server.url, 'no-such-user', 'whatever-123')).rejects.toMatchObject({
      reason: 'bad_credentials',
    });

    const mine = await auditUntil(
      { accountId: alice.accountId, event: ['call.refused', 'login.failed'] },
      (e) => e.length >= 4,
    );
    expect(mine.map((e) => [e.event, e.detail?.reason ?? e.detail?.username])).toEqual([
      ['login.failed', alice.username],
      ['call.refused', 'forbidden'],
      ['call.refused', 'callee_offline'],
      ['call.refused', 'unknown_user'],
    ]);
    const unknown = await auditUntil({ event: 'login.failed' }, (e) =>
      e.some((x) => x.detail?.username === 'no-such-user'),
    );
    expect(unknown.find((x) => x.detail?.username === 'no-such-user')?.accountId).toBeNull();

    const rejects = await auditUntil({ callId: rejected }, (e) => e.length >= 3);
    expect(rejects.map((e) => e.event)).toEqual(['call.ended', 'call.rejected', 'call.created']);
    expect(rejects[1]).toMatchObject({ accountId: bob.accountId, detail: { reason: 'declined' } });
    await Promise.all([alice.client.close(), bob.client.close()]);
  });

  it('records logins, device connects/disconnects and relay credentials, never the credential', async () => {
    const alice = await signIn(server, `solo${++n}`);
    const relay = await alice.client.request('relay.credentials', {});
    expect(relay.iceServers[0]?.credential).toBeTruthy();
    await alice.client.close();
    const events = await auditUntil({ accountId: alice.accountId }, (e) =>
      e.some((x) => x.event === 'device.disconnected'),
    );
    expect(events.map((e) => e.event).reverse()).toEqual([
      'account.registered',
      'login',
      'device.connected',
      'relay.credentials_issued',
      'device.disconnected',
    ]);
    const issued = events.find((e) => e.event === 'relay.credentials_issued')!;
    expect(issued.detail).toMatchObject({ ttlSeconds: 600 });
    expect(JSON.stringify(events)).not.toContain(relay.iceServers[0]!.credential!);
  });

  it('pages with a next cursor and filters by time range', async () => {
    const alice = await signIn(server, `solo${++n}`);
    await alice.client.close();
    const all = await auditUntil({ accountId: alice.accountId }, (e) => e.length >= 4);
    expect(all).toHaveLength(4);
    const seen: AuditEvent[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 10; page++) {
      const r = await admin<AuditPage>('audit.query', {
        accountId: alice.accountId,
        limit: 3,
        ...(cursor ? { cursor } : {}),
      });
      seen.push(...r.events);
      if (!r.next) break;
      cursor = r.next;
    }
    expect(seen.map((e) => e.id)).toEqual(all.map((e) => e.id));
    const newest = all[0]!;
    const since = await admin<AuditPage>('audit.query', {
      accountId: alice.accountId,
      since: newest.at,
    });
    expect(since.events.every((e) => e.at >= newest.at)).toBe(true);
    const before = await admin<AuditPage>('audit.query', {
      accountId: alice.accountId,
      until: all[all.length - 1]!.at,
    });
    expect(before.events).toEqual([]);
    await expect(admin('audit.query', { cursor: 'not-a-cursor' })).rejects.toMatchObject({
      reason: 'invalid_params',
    });
    await expect(admin('audit.query', { limit: 'ten' })).rejects.toMatchObject({
      reason: 'invalid_params',
    });
  });
});

describe('admin API', () => {
  it('lists calls, shows one, and calls.end ends a live call on both clients with policy', async () => {
    const [alice, bob] = await pair();
    const callId = await connectCall(alice, bob);
    const { calls } = await admin<{ calls: AdminCall[] }>('calls.list');
    const listed = calls.find((c) => c.callId === callId);
    expect(listed).toMatchObject({
      state: 'active',
      caller: { username: alice.username },
      callee: { username: bob.username, deviceId: bob.deviceId },
      budgetUsedSeconds: null,
      budgetRemainingSeconds: null,
    });
    expect(listed!.answeredAt).toBeGreaterThanOrEqual(listed!.createdAt);
    expect(listed!.durationSeconds).toBeGreaterThanOrEqual(0);
    const status = await admin<AdminCall>('calls.get_status', { callId });
    expect(status.callId).toBe(callId);

    await expect(admin('calls.end', { callId })).resolves.toEqual({ ok: true, reason: 'policy' });
    const [a, b] = await Promise.all([
      alice.client.nextNotification('call.ended', { callId }),
      bob.client.nextNotification('call.ended', { callId }),
    ]);
    expect(a).toEqual({ callId, reason: 'policy' });
    expect(b).toEqual({ callId, reason: 'policy' });
    await expect(admin('calls.get_status', { callId })).rejects.toMatchObject({
      reason: 'call_not_found',
    });
    await expect(admin('calls.end', { callId })).rejects.toMatchObject({
      reason: 'call_not_found',
    });
    const ended = await auditUntil({ callId, event: 'call.ended' }, (e) => e.length > 0);
    expect(ended[0]?.detail).toMatchObject({ reason: 'policy', cause: 'admin', by: 'server' });
    await Promise.all([alice.client.close(), bob.client.close()]);
  });

  it('answers unknown methods and bad params with stable errors; the socket is mode 0600', async () => {
    await expect(admin('calls.nope')).rejects.toMatchObject({ reason: 'method_not_found' });
    await expect(admin('calls.end', { callId: 'x' })).rejects.toMatchObject({
      reason: 'invalid_params',
    });
    expect(statSync(server.adminSocket).mode & 0o777).toBe(0o600);
  });

  it('npm run admin prints the JSON result; a clear error when no server runs there', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, PARLEY_DATA_DIR: server.dataDir };
    delete env.PARLEY_ADMIN_SOCKET;
    delete env.PARLEY_SERVER_CONFIG;
    const { stdout } = await run('npm', ['run', '--silent', 'admin', '--', 'calls.list'], {
      cwd: REPO_ROOT,
      env,
      timeout: 20_000,
    });
    expect(JSON.parse(stdout)).toHaveProperty('calls');
    const q = await run(
      'npm',
      ['run', '--silent', 'admin', '--', 'audit.query', '{"event":"login","limit":1}'],
      { cwd: REPO_ROOT, env, timeout: 20_000 },
    );
    const page = JSON.parse(q.stdout) as AuditPage;
    expect(page.events).toHaveLength(1);
    expect(page.events[0]?.event).toBe('login');

    const nowhere = mkdtempSync(join(tmpdir(), 'parley-no-server-'));
    try {
      const failed = await run(
        process.execPath,
        ['--import', 'tsx', join(REPO_ROOT, 'server/admin-cli.ts'), 'calls.list'],
        { cwd: REPO_ROOT, env: { ...env, PARLEY_DATA_DIR: nowhere }, timeout: 20_000 },
      ).then(
        () => undefined,
        (e: { code: number; stderr: string }) => e,
      );
      expect(failed?.code).toBe(3);
      expect(failed?.stderr).toContain(
        `no Parley server is listening on the admin socket ${nowhere}`,
      );
    } finally {
      rmSync(nowhere, { recursive: true, force: true });
    }
  });

  it('config.reload applies a new ring timeout live and names keys that need a restart', async () => {
    writeFileSync(
      server.configFile!,
      `ring_timeout_seconds = 1\n${BASE_TOML}\n[admin]\nsocket = "${join(server.dataDir, 'other.sock')}"\n`,
    );
    const reloaded = await admin('config.reload');
    expect(reloaded).toEqual({
      changed: ['ring_timeout_seconds', 'admin.socket'],
      applied: ['ring_timeout_seconds'],
      restartRequired: ['admin.socket'],
    });
    const [alice, bob] = await pair();
    const callId = randomUUID();
    const started = Date.now();
    await alice.client.request('call.invite', { callId, callee: bob.username, envelope: offer });
    expect(await alice.client.nextNotification('call.ended', { callId }, 4000)).toEqual({
      callId,
      reason: 'no_answer',
    });
    expect(Date.now() - started).toBeLessThan(3000);

    writeFileSync(server.configFile!, 'ring_timeout_seconds = "soon"\n');
    await expect(admin('config.reload')).rejects.toMatchObject({ reason: 'invalid_state' });
    await Promise.all([alice.client.close(), bob.client.close()]);
  });
});

describe('audit table on disk', () => {
  it('holds no password, token, TURN secret, relay credential or envelope', async () => {
    const [alice, bob] = await pair();
    const relay = await alice.client.request('relay.credentials', {});
    const callId = await connectCall(alice, bob);
    await bob.client.request('call.hangup', { callId });
    await alice.client.nextNotification('call.ended', { callId });
    await Promise.all([alice.client.close(), bob.client.close()]);
    const { code } = await server.stop();
    expect(code).toBe(0);

    const db = await openServerStore(dataDir);
    try {
      const rows = await db.selectFrom('audit').selectAll().execute();
      const text = JSON.stringify(rows);
      expect(rows.length).toBeGreaterThan(20);
      for (const secret of [
        alice.password,
        alice.token,
        bob.token,
        TURN_SECRET,
        relay.iceServers[0]!.credential!,
        'offer-sdp-audit',
        'answer-sdp-audit',
        'wrong password!',
      ]) {
        expect(text).not.toContain(secret);
      }
      expect(text).not.toMatch(/"(password|token|secret|credential|envelope)"/);
    } finally {
      await db.destroy();
    }
  });
});
