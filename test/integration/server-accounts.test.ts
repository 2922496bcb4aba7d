import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpError, LoginReply, RegisterReply } from '../../common/protocol/signaling';
import { startServer, type RunningServer } from '../harness/server';
import { httpJson, login, register } from '../harness/signal-client';

let server: RunningServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server?.stop();
});

describe('server HTTP: health, accounts and sessions', () => {
  it('answers /healthz with ok and the version', async () => {
    const r = await httpJson<{ ok: boolean; version: string }>(server.url, 'GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ ok: true, version: expect.stringMatching(/^\d+\.\d+\.\d+/) });
  });

  it('registers an account and refuses the same name twice with already_exists (409)', async () => {
    const first = await httpJson(server.url, 'POST', '/v1/accounts', {
      username: 'carol',
      password: 'carol-password',
    });
    expect(first.status).toBe(201);
    expect(RegisterReply.parse(first.body).username).toBe('carol');

    const again = await httpJson(server.url, 'POST', '/v1/accounts', {
      username: 'carol',
      password: 'other-password',
    });
    expect(again.status).toBe(409);
    const err = HttpError.parse(again.body).error;
    expect(err).toMatchObject({ code: -32010, data: { reason: 'already_exists' } });
    expect(err.message).toContain('carol');
  });

  it('refuses a bad username or a short password with invalid_params (400) naming the field', async () => {
    const badName = await httpJson(server.url, 'POST', '/v1/accounts', {
      username: 'Not Valid',
      password: 'long-enough',
    });
    expect(badName.status).toBe(400);
    expect(badName.body).toMatchObject({
      error: { code: -32602, data: { reason: 'invalid_params', issues: [{ path: 'username' }] } },
    });
    const shortPw = await httpJson(server.url, 'POST', '/v1/accounts', {
      username: 'dave',
      password: 'short',
    });
    expect(shortPw.status).toBe(400);
    expect(shortPw.body).toMatchObject({
      error: { data: { reason: 'invalid_params', issues: [{ path: 'password' }] } },
    });
  });

  it('answers a malformed JSON body with parse_error (400) and an unknown route with the same error shape', async () => {
    const bad = await httpJson(server.url, 'POST', '/v1/accounts', '{"username": ');
    expect(bad.status).toBe(400);
    expect(HttpError.parse(bad.body).error.data.reason).toBe('parse_error');
    const missing = await httpJson(server.url, 'GET', '/v1/nothing-here');
    expect(missing.status).toBe(404);
    expect(HttpError.parse(missing.body).error.data.reason).toBe('method_not_found');
  });

  it('logs in with a new device and a fresh token each time', async () => {
    await register(server.url, 'erin', 'erin-password');
    const a = await httpJson(server.url, 'POST', '/v1/sessions', {
      username: 'erin',
      password: 'erin-password',
      deviceName: 'laptop',
    });
    expect(a.status).toBe(201);
    const first = LoginReply.parse(a.body);
    const second = await login(server.url, 'erin', 'erin-password', 'phone');
    expect(first.username).toBe('erin');
    expect(second.accountId).toBe(first.accountId);
    expect(second.deviceId).not.toBe(first.deviceId);
    expect(second.token).not.toBe(first.token);
    // 32 random bytes in base64url
    expect(first.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('gives the same bad_credentials answer (401) for a wrong password and an unknown user', async () => {
    await register(server.url, 'frank', 'frank-password');
    const wrong = await httpJson(server.url, 'POST', '/v1/sessions', {
      username: 'frank',
      password: 'not-his-password',
    });
    const unknown = await httpJson(server.url, 'POST', '/v1/sessions', {
      username: 'nobody',
      password: 'whatever-pw',
    });
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect(wrong.body).toEqual(unknown.body);
    expect(HttpError.parse(wrong.body).error).toMatchObject({
      code: -32011,
      data: { reason: 'bad_credentials' },
    });
  });
});

describe('server store', () => {
  it('keeps accounts and devices across a restart on the same data folder', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-restart-'));
    try {
      const first = await startServer({ dataDir });
      await register(first.url, 'persisted', 'persisted-password');
      const session = await login(first.url, 'persisted', 'persisted-password');
      expect((await first.stop()).code).toBe(0);

      const second = await startServer({ dataDir });
      try {
        const again = await login(second.url, 'persisted', 'persisted-password');
        expect(again.accountId).toBe(session.accountId);
        const dup = await httpJson(second.url, 'POST', '/v1/accounts', {
          username: 'persisted',
          password: 'x-password',
        });
        expect(dup.status).toBe(409);
      } finally {
        await second.stop();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
