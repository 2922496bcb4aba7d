/**
 * The server's front doors (issue 12, item 4), each against the real server
 * process on loopback: what an attacker who only knows the server's address
 * meets, and what the operator sees of it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runParley } from '../harness/client';
import { REPO_ROOT, adminRequest, runServerUntilExit, startServer, type RunningServer } from '../harness/server';
import { DEFAULT_PASSWORD, httpJson, register, signIn, SignalClient } from '../harness/signal-client';

/** What a client sees of one HTTP answer. */
interface Answer {
  status: number;
  retryAfter: string | undefined;
  body: { error?: { code: number; message: string; data: { reason: string; retryAfter?: number; retry_after?: number } } };
}

/**
 * POSTs JSON to the server from the loopback address `from` (127.0.0.0/8 is all
 * loopback on Linux: each address is another client to the server's per-IP limits).
 */
function post(server: RunningServer, path: string, body: object, from = '127.0.0.1'): Promise<Answer> {
  const url = new URL(path, server.url);
  const text = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        localAddress: from,
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
      },
      (res) => {
        let data = '';
        res.setEncoding('utf8').on('data', (c: string) => (data += c));
        res.on('end', () => {
          const header = res.headers['retry-after'];
          resolve({
            status: res.statusCode ?? 0,
            retryAfter: Array.isArray(header) ? header[0] : header,
            body: JSON.parse(data) as Answer['body'],
          });
        });
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

const loginAs = (server: RunningServer, username: string, password: string, from?: string) =>
  post(server, '/v1/sessions', { username, password }, from);
const signUp = (server: RunningServer, username: string, from?: string) =>
  post(server, '/v1/accounts', { username, password: DEFAULT_PASSWORD }, from);

/** One page of the server's audit log, newest first (admin API). */
async function auditRows(server: RunningServer, event: string): Promise<{ detail: Record<string, unknown> | null }[]> {
  return (await adminRequest<{ events: { detail: Record<string, unknown> | null }[] }>(server.adminSocket, 'audit.query', { event, limit: 1000 })).events;
}

/** Polls `read` until `done` holds for its value (at most `ms`); returns the last value. */
async function until<T>(read: () => Promise<T>, done: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  let v = await read();
  while (!done(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    v = await read();
  }
  return v;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `promise`, or rejects saying `what` did not happen within `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
    }),
  ]);
}

/** The value of one Prometheus sample (`name` with its labels, e.g. `x_total{scope="a"}`) in /metrics. */
async function counter(baseUrl: string, name: string): Promise<number> {
  const text = String((await httpJson<string>(baseUrl, 'GET', '/metrics')).body);
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : NaN;
}

describe('the test-only interception hook', () => {
  it('stops the server at start-up when PARLEY_TEST_INTERCEPT is set without the explicit test-only flag', async () => {
    const r = await runServerUntilExit({
      env: { PARLEY_TEST_INTERCEPT: join(REPO_ROOT, 'test/fixtures/malicious-intercept.ts') },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('PARLEY_TEST_INTERCEPT_ENABLE');
    expect(r.stderr).not.toContain('TEST INTERCEPTION HOOK ACTIVE');
    expect(r.stdout).not.toContain('"msg":"listening"');
  });
});

describe('the client and plain http://', () => {
  it('parley refuses a plain http:// address of another computer, saying to use https://, and signs up over http://127.0.0.1', async () => {
    const server = await startServer();
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-cli-'));
    const env = { PARLEY_DATA_DIR: dataDir };
    try {
      // .invalid never resolves (RFC 2606): without the rule this fails later, with "cannot reach".
      const refused = await runParley(['register', '--server', 'http://parley.invalid:8787', '--username', 'plain1'], env, DEFAULT_PASSWORD).then(
        () => 'registered',
        (e: Error) => e.message,
      );
      expect(refused).toContain('http://parley.invalid:8787 must use https://');
      expect(refused).not.toContain('cannot reach');
      const ws = await runParley(['register', '--server', 'ws://parley.invalid', '--username', 'plain1'], env, DEFAULT_PASSWORD).then(
        () => 'registered',
        (e: Error) => e.message,
      );
      expect(ws).toContain('must use wss://');
      // The same command to the real server on loopback works.
      expect(await runParley(['register', '--server', server.url, '--username', 'plain1'], env, DEFAULT_PASSWORD)).toContain('account plain1 created');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
      await server.stop();
    }
  });
});

describe('the hello deadline', () => {
  it('closes a socket that never completes hello (4004 "hello timeout"), counts it, and leaves signed-in sockets alone', async () => {
    const server = await startServer({ env: { PARLEY_HELLO_TIMEOUT: '1' } });
    try {
      const signedIn = await signIn(server, 'early1');
      const silent = await SignalClient.connect(server.wsUrl);
      const wrongToken = await SignalClient.connect(server.wsUrl);
      await expect(wrongToken.hello({ deviceId: signedIn.deviceId, token: 'not-the-token' })).rejects.toMatchObject({
        reason: 'unauthenticated',
      });
      for (const socket of [silent, wrongToken]) {
        const closed = await within(socket.closed, 10_000, 'the server did not close a socket without hello');
        expect(closed.code).toBe(4004);
        expect(closed.reason).toMatch(/^hello timeout/);
      }
      expect(await counter(server.url, 'parley_hello_timeouts_total')).toBe(2);
      // The device that said hello in time is still served after the deadline.
      expect((await signedIn.client.request('devices.list', {})).devices.length).toBe(1);
      signedIn.client.socket.close();
    } finally {
      await server.stop();
    }
  });
});

describe('login limits', () => {
  it('throttles one username after its failures: 429 rate_limited with Retry-After, even for the right password; the owner signs in once the window is over', async () => {
    const server = await startServer({
      authLimits: true,
      env: { PARLEY_LOGIN_WINDOW: '4', PARLEY_LOGIN_FAILURES_PER_USERNAME: '3', PARLEY_LOGIN_ATTEMPTS_PER_IP: '0' },
    });
    try {
      await register(server.url, 'owner1', DEFAULT_PASSWORD);
      for (let i = 0; i < 3; i++) expect((await loginAs(server, 'owner1', 'guess-number-' + i)).status).toBe(401);
      const refused = await loginAs(server, 'owner1', DEFAULT_PASSWORD);
      expect(refused.status).toBe(429);
      expect(refused.body.error?.data.reason).toBe('rate_limited');
      expect(refused.body.error?.message).toMatch(/too many sign-in attempts; try again in \d+ s/);
      const wait = Number(refused.retryAfter);
      expect(wait).toBeGreaterThanOrEqual(1);
      expect(wait).toBeLessThanOrEqual(4);
      expect(refused.body.error?.data.retry_after).toBe(wait);
      // The attacker keeps trying from elsewhere: refused, and the window does not grow.
      for (let i = 0; i < 5; i++) {
        const again = await loginAs(server, 'owner1', 'more-guesses', '127.0.0.9');
        expect(again.status).toBe(429);
        expect(Number(again.retryAfter)).toBeLessThanOrEqual(wait);
      }
      await sleep(wait * 1000 + 250);
      expect((await loginAs(server, 'owner1', DEFAULT_PASSWORD)).status).toBe(201);
      expect(await counter(server.url, 'parley_auth_throttled_total{scope="login_username"}')).toBe(6);
      // Six refusals, one audit row so far (the rest are summed up when the window ends).
      const rows = (await auditRows(server, 'rate_limited')).filter((r) => r.detail?.scope === 'login_username');
      expect(rows).toHaveLength(1);
      expect(rows[0]?.detail).toMatchObject({ username: 'owner1', remote: '127.0.0.1' });
    } finally {
      await server.stop();
    }
  });

  it('answers a name that does not exist exactly like one that does', async () => {
    const server = await startServer({
      authLimits: true,
      env: { PARLEY_LOGIN_WINDOW: '600', PARLEY_LOGIN_FAILURES_PER_USERNAME: '2', PARLEY_LOGIN_ATTEMPTS_PER_IP: '0' },
    });
    try {
      await register(server.url, 'real1', DEFAULT_PASSWORD);
      const run = async (username: string) => {
        const answers = [];
        for (let i = 0; i < 4; i++) answers.push(await loginAs(server, username, 'not-the-password'));
        return answers.map((a) => [a.status, a.body.error?.data.reason, a.body.error?.message.replace(/\d+ s$/, 'N s')]);
      };
      const real = await run('real1');
      expect(real.map(([status]) => status)).toEqual([401, 401, 429, 429]);
      expect(await run('ghost1')).toEqual(real);
    } finally {
      await server.stop();
    }
  });

  it('throttles one client address across usernames, and not the next address', async () => {
    const server = await startServer({
      authLimits: true,
      env: { PARLEY_LOGIN_WINDOW: '600', PARLEY_LOGIN_ATTEMPTS_PER_IP: '3', PARLEY_LOGIN_FAILURES_PER_USERNAME: '0' },
    });
    try {
      await register(server.url, 'spray1', DEFAULT_PASSWORD);
      for (const name of ['spray-a', 'spray-b', 'spray-c']) expect((await loginAs(server, name, 'x-password', '127.0.0.2')).status).toBe(401);
      const refused = await loginAs(server, 'spray1', DEFAULT_PASSWORD, '127.0.0.2');
      expect(refused.status).toBe(429);
      expect(Number(refused.retryAfter)).toBeGreaterThan(0);
      expect((await loginAs(server, 'spray1', DEFAULT_PASSWORD, '127.0.0.3')).status).toBe(201);
      expect(await counter(server.url, 'parley_auth_throttled_total{scope="login_ip"}')).toBe(1);
    } finally {
      await server.stop();
    }
  });
});

describe('registration limits', () => {
  it('limits sign-ups per client address and per requested username with 429 and Retry-After', async () => {
    const server = await startServer({
      authLimits: true,
      env: { PARLEY_REGISTRATION_WINDOW: '600', PARLEY_REGISTRATIONS_PER_IP: '2', PARLEY_REGISTRATION_ATTEMPTS_PER_USERNAME: '2' },
    });
    try {
      expect((await signUp(server, 'reg-a', '127.0.0.4')).status).toBe(201);
      expect((await signUp(server, 'reg-b', '127.0.0.4')).status).toBe(201);
      const perIp = await signUp(server, 'reg-c', '127.0.0.4');
      expect(perIp.status).toBe(429);
      expect(perIp.body.error?.data.reason).toBe('rate_limited');
      expect(perIp.body.error?.message).toMatch(/too many sign-up attempts/);
      expect(Number(perIp.retryAfter)).toBeGreaterThan(0);
      expect((await signUp(server, 'reg-c', '127.0.0.5')).status).toBe(201);
      // One name, from ever-new addresses: its second try says it is taken, the third is throttled.
      expect((await signUp(server, 'reg-c', '127.0.0.6')).status).toBe(409);
      const perName = await signUp(server, 'reg-c', '127.0.0.7');
      expect(perName.status).toBe(429);
      expect(Number(perName.retryAfter)).toBeGreaterThan(0);
      expect(await counter(server.url, 'parley_auth_throttled_total{scope="registration_ip"}')).toBe(1);
      expect(await counter(server.url, 'parley_auth_throttled_total{scope="registration_username"}')).toBe(1);
    } finally {
      await server.stop();
    }
  });
});

describe('front-door limits at config.reload', () => {
  it('applies a new limit without a restart', async () => {
    const server = await startServer({ authLimits: true, configToml: '[auth]\nregistrations_per_ip = 0\n' });
    try {
      for (const name of ['reload-a', 'reload-b', 'reload-c']) expect((await signUp(server, name)).status).toBe(201);
      writeFileSync(server.configFile!, '[auth]\nregistrations_per_ip = 1\n');
      const reload = await adminRequest<{ applied: string[] }>(server.adminSocket, 'config.reload');
      expect(reload.applied).toContain('auth.registrations_per_ip');
      expect((await signUp(server, 'reload-d', '127.0.0.10')).status).toBe(201);
      expect((await signUp(server, 'reload-e', '127.0.0.10')).status).toBe(429);
    } finally {
      await server.stop();
    }
  });
});

describe('the password-hash cap', () => {
  it('a flood of logins beyond the slots and the queue gets 503 unavailable with Retry-After, the rest are served, and a later login works', async () => {
    const server = await startServer({ env: { PARLEY_MAX_CONCURRENT_HASHES: '1', PARLEY_HASH_QUEUE: '1' } });
    try {
      await register(server.url, 'flood1', DEFAULT_PASSWORD);
      const answers = await Promise.all(Array.from({ length: 20 }, () => loginAs(server, 'flood1', DEFAULT_PASSWORD)));
      const busy = answers.filter((a) => a.status === 503);
      expect(answers.every((a) => a.status === 201 || a.status === 503)).toBe(true);
      expect(answers.some((a) => a.status === 201)).toBe(true);
      expect(busy.length).toBeGreaterThan(0);
      for (const a of busy) {
        expect(a.retryAfter).toBe('1');
        expect(a.body.error?.data.reason).toBe('unavailable');
        expect(a.body.error?.message).toMatch(/busy; try again/);
      }
      expect(await counter(server.url, 'parley_password_hash_refused_total')).toBe(busy.length);
      expect((await loginAs(server, 'flood1', DEFAULT_PASSWORD)).status).toBe(201);
      expect(await counter(server.url, 'parley_password_hashes{state="running"}')).toBe(0);
    } finally {
      await server.stop();
    }
  });
});

describe('sampled audit rows for repeated failures', () => {
  it('writes the first failed login of an address and username, then one summary with the count — not a row per try', async () => {
    const server = await startServer({ env: { PARLEY_AUDIT_FAILURE_SUMMARY_SECONDS: '2' } });
    try {
      await register(server.url, 'audited1', DEFAULT_PASSWORD);
      for (let i = 0; i < 20; i++) expect((await loginAs(server, 'audited1', 'wrong-' + i)).status).toBe(401);
      expect((await loginAs(server, 'audited1', 'wrong-elsewhere', '127.0.0.8')).status).toBe(401);
      const rows = await until(
        () => auditRows(server, 'login.failed'),
        (r) => r.some((x) => x.detail?.summary === true),
      );
      const mine = rows.filter((r) => r.detail?.username === 'audited1');
      expect(mine).toHaveLength(3);
      const from1 = mine.filter((r) => r.detail?.remote === '127.0.0.1');
      expect(from1.map((r) => r.detail?.summary ?? false).sort()).toEqual([false, true]);
      expect(from1.find((r) => r.detail?.summary)?.detail).toMatchObject({ count: 19, windowSeconds: 2 });
      expect(mine.filter((r) => r.detail?.remote === '127.0.0.8')).toHaveLength(1);
      // After the window, the next failure is written at once again.
      expect((await loginAs(server, 'audited1', 'wrong-later')).status).toBe(401);
      await until(() => auditRows(server, 'login.failed'), (r) => r.filter((x) => x.detail?.username === 'audited1').length === 4);
      expect((await auditRows(server, 'login.failed')).filter((x) => x.detail?.username === 'audited1')).toHaveLength(4);
    } finally {
      await server.stop();
    }
  });

  it('sums up refused hellos per address and device, bounds the devices one address may spray, and writes pending summaries at shutdown', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-audit-'));
    const device = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
    try {
      const server = await startServer({ dataDir, env: { PARLEY_AUDIT_FAILURE_SUMMARY_SECONDS: '600' } });
      const socket = await SignalClient.connect(server.wsUrl);
      // One device id, ten times; then 25 more device ids from the same address.
      for (const i of [...Array<number>(10).fill(0), ...Array.from({ length: 25 }, (_, n) => n + 1)]) {
        await expect(socket.hello({ deviceId: device(i), token: 'forged' })).rejects.toMatchObject({ reason: 'unauthenticated' });
      }
      // 20 device ids with a row of their own, then one shared row for the address.
      expect(await until(() => auditRows(server, 'device.auth_failed'), (r) => r.length >= 21)).toHaveLength(21);
      await server.stop();
      const again = await startServer({ dataDir });
      try {
        const rows = await auditRows(again, 'device.auth_failed');
        expect(rows).toHaveLength(23);
        const summaries = rows.filter((r) => r.detail?.summary).map((r) => r.detail);
        expect(summaries).toHaveLength(2);
        expect(summaries).toContainEqual(expect.objectContaining({ remote: '127.0.0.1', reason: 'unauthenticated', count: 9, windowSeconds: 600 }));
        expect(summaries).toContainEqual(expect.objectContaining({ remote: '127.0.0.1', grouped: true, count: 5 }));
      } finally {
        await again.stop();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
