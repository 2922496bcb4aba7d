/**
 * The ArmorClaw voice guide's examples, typed as the guide writes them
 * (method names, snake_case fields, multi-line JSON, `echo … | socat`),
 * against running `parley daemon`s — driven by the real `socat`, as a new
 * automation user would. Also: the stream framing scripts really use, bad
 * input answered with the guide's error names beside Parley's codes, the
 * daemon's TTL with `budget_warning`, the audit log after `kill -9`, and a
 * malformed config file. docs/automation.md shows the same commands.
 */
import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../common/errors';
import { makeClientContacts, runParley, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir } from '../harness/process';
import { startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';

type Reply = { jsonrpc: '2.0'; id: unknown; result?: Record<string, unknown>; error?: { code: number; message: string; data: { reason: string; name?: string; retry_after?: number } } };

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let alice: RunningClient;
let bob: RunningClient;

beforeAll(async () => {
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer();
  [alice, bob] = await Promise.all([
    // A short lifetime so the guide's TTL and budget_warning can be watched: warned at 3 s, ended at 8 s.
    startClient({ name: 'alice', server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk', extraArgs: ['--default-lifetime', '8s', '--warn-before-expiration', '5s'] }),
    startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
});

/** Runs a shell command line (the guide's `echo '…' | socat - UNIX-CONNECT:…` form); resolves with its stdout. */
function sh(command: string, socket: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', command.replaceAll('/run/armorclaw/bridge.sock', socket)], { timeout: 20_000 }, (err, stdout) =>
      err ? reject(new Error(`${command}: ${err.message}`)) : resolve(stdout),
    );
  });
}

/** Writes `input` to `socat - UNIX-CONNECT:socket` exactly as given, half-closes, and resolves with everything socat printed. */
function socat(socket: string, input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('socat', ['-', `UNIX-CONNECT:${socket}`], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`socat exited ${code}: ${out}`));
    });
    child.stdin.end(input);
  });
}

/** The daemon answers one JSON value per line. */
function replies(out: string): Reply[] {
  return out
    .split('\n')
    .filter((l) => l.trim())
    .flatMap((l) => JSON.parse(l) as Reply | Reply[]);
}
async function one(socket: string, input: string): Promise<Reply> {
  const r = replies(await socat(socket, input));
  expect(r).toHaveLength(1);
  return r[0]!;
}

describe("the ArmorClaw voice guide's examples, through socat", () => {
  it('webrtc.list as the one-liner of the troubleshooting section', async () => {
    const out = await sh(`echo '{"jsonrpc":"2.0","id":1,"method":"webrtc.list"}' | \\\n  socat - UNIX-CONNECT:/run/armorclaw/bridge.sock`, alice.socket);
    expect(JSON.parse(out)).toEqual({ jsonrpc: '2.0', id: 1, result: { calls: [] } });
  });

  it('webrtc.get_audit_log, one line and pretty-printed (Examples: Get Security Audit Log)', async () => {
    const oneLine = await sh(`echo '{"jsonrpc":"2.0","id":1,"method":"webrtc.get_audit_log"}' | \\\n  socat - UNIX-CONNECT:/run/armorclaw/bridge.sock`, alice.socket);
    expect(JSON.parse(oneLine).result).toMatchObject({ entries: expect.any(Array), total: expect.any(Number) });
    const multi = await sh(`echo '{\n  "jsonrpc": "2.0",\n  "id": 1,\n  "method": "webrtc.get_audit_log"\n}' | socat - UNIX-CONNECT:/run/armorclaw/bridge.sock`, alice.socket);
    expect(JSON.parse(multi).result).toMatchObject({ entries: expect.any(Array) });
  });

  it("webrtc.get_call_status of the guide's call-uuid-123 (Examples: Check Call Status) is ErrCallNotFound", async () => {
    const out = await sh(
      `echo '{\n  "jsonrpc": "2.0",\n  "id": 1,\n  "method": "webrtc.get_call_status",\n  "params": {\n    "call_id": "call-uuid-123"\n  }\n}' | socat - UNIX-CONNECT:/run/armorclaw/bridge.sock`,
      alice.socket,
    );
    expect(JSON.parse(out).error).toMatchObject({ code: ErrorCode.CALL_NOT_FOUND, data: { reason: 'call_not_found', name: 'ErrCallNotFound' } });
  });

  it("the guide's call flow with a Parley user: create (async, half-closed), answer, status, list, candidates, budget_warning, TTL end, audit", async () => {
    // 1. Create a call: user_id names the Parley user (Matrix-style is accepted), room_id is kept as a label.
    const created = await one(
      alice.socket,
      `{\n  "jsonrpc": "2.0",\n  "id": 1,\n  "method": "webrtc.create_call",\n  "params": {\n    "room_id": "!abc123:matrix.example.com",\n    "user_id": "@bob:matrix.example.com"\n  }\n}\n`,
    );
    expect(created.result).toMatchObject({ call_id: expect.any(String), ttl: '8s', room_id: '!abc123:matrix.example.com' });
    const callId = created.result!.call_id as string;
    await bob.waitForCall(callId, (s) => s.state === 'incoming');

    // 2. Answer the call (on bob's daemon), without a trailing newline.
    expect(await one(bob.socket, `{"jsonrpc":"2.0","id":2,"method":"webrtc.answer_call","params":{"call_id":"${callId}"}}`)).toEqual({ jsonrpc: '2.0', id: 2, result: { success: true } });
    await alice.waitForCall(callId, (s) => s.state === 'active');

    // Status and list, in the guide's shapes; both requests on one line.
    const [status, list] = replies(
      await socat(alice.socket, `{"jsonrpc":"2.0","id":3,"method":"webrtc.get_call_status","params":{"call_id":"${callId}"}} {"jsonrpc":"2.0","id":4,"method":"webrtc.list"}`),
    );
    expect(status!.result).toMatchObject({ call_id: callId, state: 'connected', duration: expect.stringMatching(/^\d+s$/), tokens_used: expect.any(Number), budget_remaining: expect.any(Number), room_id: '!abc123:matrix.example.com', e2e_verified: true });
    expect(list!.result!.calls).toEqual([expect.objectContaining({ call_id: callId, state: 'connected', room_id: '!abc123:matrix.example.com' })]);

    // One call at a time: a second one is the guide's ErrMaxConcurrentCallsExceeded (and an audited refusal).
    const second = await one(alice.socket, `{"jsonrpc":"2.0","id":9,"method":"webrtc.create_call","params":{"user_id":"bob"}}`);
    expect(second.error).toMatchObject({ code: ErrorCode.INVALID_STATE, data: { reason: 'invalid_state', name: 'ErrMaxConcurrentCallsExceeded' } });
    const refused = await one(alice.socket, `{"jsonrpc":"2.0","id":9,"method":"webrtc.get_audit_log","params":{"event_type":"call_refused","limit":1}}`);
    expect(refused.result!.entries).toEqual([expect.objectContaining({ user_id: 'bob', reason: 'invalid_state' })]);

    // 3. Candidates of a Parley call travel sealed; the daemon says so (the guide's example, typed as written).
    const cand = await one(
      alice.socket,
      `{\n  "jsonrpc": "2.0",\n  "id": 3,\n  "method": "webrtc.send_candidates",\n  "params": {\n    "call_id": "${callId}",\n    "candidates": [\n      {\n        "candidate": "candidate:1 1 UDP 2130706431 192.168.1.1 54321 typ host",\n        "sdp_mid": "0",\n        "sdp_mline_index": 0\n      }\n    ]\n  }\n}\n`,
    );
    expect(cand.error).toMatchObject({ code: ErrorCode.INVALID_STATE, data: { name: 'ErrInvalidState' } });

    // The daemon's lifetime (8 s): the guide's budget_warning 5 s before, then the end.
    const warning = await alice.waitForNotification<{ call_id: string; tokens_used: number; tokens_remaining: number; percentage_used: number; warning: string }>(
      'budget_warning',
      (w) => w.call_id === callId,
      10_000,
    );
    expect(warning).toMatchObject({ warning: 'budget_warning', tokens_remaining: 5 });
    expect(warning.percentage_used).toBeGreaterThan(0.2);
    expect(warning.percentage_used).toBeLessThan(0.6);
    const ended = await alice.waitForCall(callId, (s) => s.state === 'ended', 10_000);
    expect(ended.endReason).toBe('ttl_expired');
    expect((await one(alice.socket, `{"jsonrpc":"2.0","id":5,"method":"webrtc.get_call_status","params":{"call_id":"${callId}"}}`)).result).toMatchObject({ state: 'ended', end_reason: 'ttl_expired' });

    const audit = await one(alice.socket, `{"jsonrpc":"2.0","id":5,"method":"webrtc.get_audit_log","params":{"call_id":"${callId}"}}\n`);
    const types = (audit.result!.entries as { event_type: string }[]).map((e) => e.event_type).reverse();
    expect(types).toEqual(['call_created', 'call_connected', 'budget_warning', 'ttl_expired', 'call_ended']);
    expect((audit.result!.entries as { event_type: string; reason?: string }[])[0]).toMatchObject({ event_type: 'call_ended', reason: 'ttl_expired' });
  }, 60_000);

  it('reject_call and end_call with reasons, answered {"success": true}; the reasons are audited', async () => {
    const created = await one(alice.socket, `{"jsonrpc":"2.0","id":1,"method":"webrtc.create_call","params":{"user_id":"bob"}}`);
    const declined = created.result!.call_id as string;
    await bob.waitForCall(declined, (s) => s.state === 'incoming');
    expect((await one(bob.socket, `{\n  "jsonrpc": "2.0",\n  "id": 1,\n  "method": "webrtc.reject_call",\n  "params": {\n    "call_id": "${declined}",\n    "reason": "user declined"\n  }\n}`)).result).toEqual({ success: true });
    await alice.waitForCall(declined, (s) => s.state === 'ended' && s.endReason === 'declined');

    const second = (await one(alice.socket, `{"jsonrpc":"2.0","id":1,"method":"webrtc.create_call","params":{"user_id":"bob"}}`)).result!.call_id as string;
    await bob.waitForCall(second, (s) => s.state === 'incoming');
    expect((await one(alice.socket, `{\n  "jsonrpc": "2.0",\n  "id": 4,\n  "method": "webrtc.end_call",\n  "params": {\n    "call_id": "${second}",\n    "reason": "call completed"\n  }\n}\n`)).result).toEqual({ success: true });
    await bob.waitForCall(second, (s) => s.state === 'ended');

    const bobLog = await one(bob.socket, `{"jsonrpc":"2.0","id":1,"method":"webrtc.get_audit_log","params":{"event_type":"call_rejected","limit":1}}`);
    expect(bobLog.result!.entries).toEqual([expect.objectContaining({ call_id: declined, user_id: 'alice', reason: 'declined', details: { requested_reason: 'user declined' } })]);
    const aliceLog = await one(alice.socket, `{"jsonrpc":"2.0","id":1,"method":"webrtc.get_audit_log","params":{"call_id":"${second}","event_type":["call_ended"]}}`);
    expect(aliceLog.result!.entries).toEqual([expect.objectContaining({ reason: 'hangup', details: { requested_reason: 'call completed' } })]);
  }, 60_000);
});

describe('framing as scripts really send it, and bad input', () => {
  it('answers a batch, several values on a line, one over many lines and a last one without newline, then closes', async () => {
    const out = await socat(
      alice.socket,
      `[{"jsonrpc":"2.0","id":"a","method":"webrtc.list"},{"jsonrpc":"2.0","method":"webrtc.list"},{"jsonrpc":"2.0","id":"b","method":"get_status"}]\n` +
        `{"jsonrpc":"2.0","id":1,"method":"list_calls"}{"jsonrpc":"2.0","id":2,"method":"webrtc.list"}\n` +
        `{\n  "jsonrpc": "2.0",\n  "id": 3,\n  "method": "get_status"\n}\n` +
        `{"jsonrpc":"2.0","id":4,"method":"webrtc.list"}`,
    );
    // Answers come as they are ready (JSON-RPC does not order them); the batch is one array.
    const values = out.trim().split('\n').map((l) => JSON.parse(l) as Reply | Reply[]);
    expect(values).toHaveLength(5);
    const batch = values.find((v): v is Reply[] => Array.isArray(v))!;
    expect(batch.map((r) => r.id)).toEqual(['a', 'b']);
    expect(values.filter((v): v is Reply => !Array.isArray(v)).map((r) => r.id).sort()).toEqual([1, 2, 3, 4]);
  });

  it('answers bad input with the guide error name and Parley code, and keeps serving', async () => {
    const cases: [string, number, string][] = [
      [`{"jsonrpc":"2.0","id":1,"method":"webrtc.get_call_status","params":{"call_id":42}}`, ErrorCode.INVALID_PARAMS, 'ErrInvalidParams'],
      [`{"jsonrpc":"2.0","id":1,"method":"webrtc.end_call","params":{"call_id":"no-such-call"}}`, ErrorCode.CALL_NOT_FOUND, 'ErrCallNotFound'],
      [`{"jsonrpc":"2.0","id":1,"method":"webrtc.answer_call","params":{}}`, ErrorCode.CALL_NOT_FOUND, 'ErrCallNotFound'],
      [`{"jsonrpc":"2.0","id":1,"method":"webrtc.create_call","params":{"room_id":"!x"}}`, ErrorCode.INVALID_PARAMS, 'ErrInvalidParams'],
      [`{"jsonrpc":"2.0","id":1,"method":"webrtc.create_call","params":{"offer_sdp":"${'a'.repeat(20_000)}"}}`, ErrorCode.INVALID_PARAMS, 'ErrInvalidParams'],
      [`{"jsonrpc":"2.0","id":1,"method":"webrtc.create_call","params":{"user_id":"nobody-here"}}`, ErrorCode.UNKNOWN_USER, 'ErrUserNotFound'],
    ];
    for (const [input, code, name] of cases) {
      const r = await one(alice.socket, input);
      expect(r.error, input.slice(0, 120)).toMatchObject({ code, data: { name } });
    }
    // A call in the wrong state: the ended calls of the flow above cannot be answered.
    const ended = (await one(alice.socket, `{"jsonrpc":"2.0","id":1,"method":"webrtc.get_audit_log","params":{"event_type":"call_ended","limit":1}}`)).result!.entries as { call_id: string }[];
    const wrong = await one(bob.socket, `{"jsonrpc":"2.0","id":1,"method":"webrtc.answer_call","params":{"call_id":"${ended[0]!.call_id}"}}`);
    expect(wrong.error).toMatchObject({ code: ErrorCode.INVALID_STATE, data: { name: 'ErrInvalidState' } });
    // Not JSON at all: one parse error for the line, then the next line is served.
    const mixed = replies(await socat(alice.socket, `{not json\n{"jsonrpc":"2.0","id":9,"method":"get_status"}\n`));
    expect(mixed[0]!.error).toMatchObject({ code: ErrorCode.PARSE_ERROR });
    expect(mixed[1]).toMatchObject({ id: 9, result: { username: 'alice' } });
  });

  it('refuses an oversize value with an error and closes the connection cleanly', async () => {
    const out = await socat(alice.socket, `{"jsonrpc":"2.0","id":1,"method":"get_status"}\n{"jsonrpc":"2.0","id":2,"method":"webrtc.list","params":{"x":"${'x'.repeat(100_000)}"}}\n{"jsonrpc":"2.0","id":3,"method":"get_status"}\n`);
    const r = replies(out);
    expect(r.map((x) => x.id)).toEqual([1, null]);
    expect(r[1]!.error).toMatchObject({ code: ErrorCode.PAYLOAD_TOO_LARGE, data: { name: 'ErrPayloadTooLarge' } });
    expect((await one(alice.socket, `{"jsonrpc":"2.0","id":1,"method":"webrtc.list"}`)).result).toEqual({ calls: [] });
  });
});

describe('parley audit, kill -9 and the config file', () => {
  it('keeps the audit log across kill -9, and parley audit reads it', async () => {
    alice.kill('SIGKILL');
    const out = await runParley(['audit', '--type', 'call_ended', 'call_rejected', '--json'], { PARLEY_DATA_DIR: alice.dataDir });
    const entries = out.trim().split('\n').map((l) => JSON.parse(l) as { event_type: string; reason?: string });
    expect(entries.map((e) => e.reason)).toEqual(['hangup', 'declined', 'ttl_expired']);
    expect(out).not.toMatch(/v=0|token|password/i);
  });

  it('refuses a malformed config file, naming the line and the key', async () => {
    const dir = makeTempDir('config');
    try {
      writeFileSync(join(dir, 'config.toml'), 'auto_answer = true\nmax_concurrent_calls = "five"\n');
      await expect(runParley(['daemon'], { PARLEY_DATA_DIR: dir })).rejects.toThrow(/config\.toml line 2: key "max_concurrent_calls"/);
      writeFileSync(join(dir, 'config.toml'), 'auto_answer = true\ndefault_lifetime = "30m\n');
      await expect(runParley(['daemon'], { PARLEY_DATA_DIR: dir })).rejects.toThrow(/config\.toml line 2, column \d+/);
    } finally {
      removeTempDir(dir);
    }
  });
});
