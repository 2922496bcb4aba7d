import { describe, expect, it } from 'vitest';
import { runServerUntilExit, startServer } from '../harness/server';
import { httpJson } from '../harness/signal-client';

describe('server configuration', () => {
  it('exits with code 2 and names an unknown TOML key', async () => {
    const r = await runServerUntilExit({
      configToml: 'ring_timeout_seconds = 30\n[turn]\nurl = "turn:x"\n',
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('config error');
    expect(r.stderr).toContain('"turn.url"');
  });

  it('exits with code 2 and names a key with the wrong type', async () => {
    const r = await runServerUntilExit({ configToml: 'ring_timeout_seconds = "soon"\n' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ring_timeout_seconds: .*number/);
  });

  it('exits with code 2 on TOML syntax errors and on a bad environment override', async () => {
    const syntax = await runServerUntilExit({ configToml: 'listen = \n' });
    expect(syntax.code).toBe(2);
    expect(syntax.stderr).toContain('not valid TOML');
    const env = await runServerUntilExit({ env: { PARLEY_SERVER_LISTEN: 'localhost' } });
    expect(env.code).toBe(2);
    expect(env.stderr).toContain('listen (from PARLEY_SERVER_LISTEN)');
  });

  it('starts from a TOML file, with the environment overriding the listen address', async () => {
    const server = await startServer({
      configToml: 'listen = "127.0.0.1:1"\nring_timeout_seconds = 5\n[turn]\nttl_seconds = 120\n',
    });
    try {
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(server.url).not.toMatch(/:1$/);
      const health = await httpJson(server.url, 'GET', '/healthz');
      expect(health.body).toMatchObject({ ok: true });
    } finally {
      const exit = await server.stop();
      expect(exit.code).toBe(0);
    }
  });
});
