import { describe, expect, it } from 'vitest';
import { freeTcpPort } from '../harness/ports';
import { waitFor } from '../harness/process';
import { runServerUntilExit, startServer } from '../harness/server';
import { openDatabase } from '../../server/db';
import { createTestDatabase } from '../harness/store';
import { startTcpProxy } from '../harness/tcp-proxy';
import { httpJson, register } from '../harness/signal-client';

// The store setting itself, always against PostgreSQL (this file's servers get
// their own store URL; the run's store does not matter): what the operator sees
// when the URL is wrong or the database cannot be used, and /readyz following
// PostgreSQL's reachability. The password of every URL here is a secret the
// server must never print.

/** `url` with its password replaced. */
function withPassword(url: string, password: string): string {
  const u = new URL(url);
  u.password = password;
  return u.toString();
}

describe('[store] url', () => {
  it('refuses a malformed store URL with exit 2, naming store.url and never repeating it', async () => {
    const r = await runServerUntilExit({
      env: { PARLEY_STORE_URL: 'mysql://parley:not-this-one-7f3a@db/parley' },
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('store.url (from PARLEY_STORE_URL): only PostgreSQL is supported');
    expect(r.stdout + r.stderr).not.toContain('not-this-one-7f3a');
  });

  it('does not start when PostgreSQL is unreachable, and says so in words without the password', async () => {
    const port = await freeTcpPort();
    const r = await runServerUntilExit({
      env: { PARLEY_STORE_URL: `postgres://parley:not-this-one-7f3a@127.0.0.1:${port}/parley` },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `parley-server: cannot start: cannot reach PostgreSQL at 127.0.0.1:${port}: connection refused`,
    );
    expect(r.stdout + r.stderr).not.toContain('not-this-one-7f3a');
  });

  it('does not start with a wrong password, and says the login was refused', async () => {
    const url = await createTestDatabase();
    const { host, port, username } = new URL(url);
    const r = await runServerUntilExit({
      env: { PARLEY_STORE_URL: withPassword(url, 'not-this-one-7f3a') },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `cannot start: PostgreSQL at ${host.split(':')[0]}:${port} refused the login of "${username}": password authentication failed`,
    );
    expect(r.stdout + r.stderr).not.toContain('not-this-one-7f3a');
  });

  it('runs on PostgreSQL: the log names the store without its password; /metrics shows the pool; /readyz follows its reachability', async () => {
    const url = new URL(await createTestDatabase());
    const password = url.password;
    const proxy = await startTcpProxy(`http://${url.hostname}:${url.port}`);
    url.port = String(proxy.port);
    // From the TOML file this time (an empty PARLEY_STORE_URL counts as unset).
    const server = await startServer({
      configToml: `[store]\nurl = "${url.toString()}"\npool_size = 3\n`,
      env: { PARLEY_STORE_URL: '' },
    });
    try {
      const listening = await server.waitForLog((l) => l.msg === 'listening');
      expect(listening.store).toBe(withPassword(url.toString(), '***'));
      await register(server.url, 'alice');
      expect(await httpJson(server.url, 'GET', '/readyz')).toEqual({
        status: 200,
        body: { ready: true },
      });
      const metrics = await (await fetch(new URL('/metrics', server.url))).text();
      expect(metrics).toMatch(/^parley_store_connections\{state="idle"\} [1-9]/m);
      expect(metrics).toMatch(/^parley_store_connections\{state="waiting"\} 0$/m);

      proxy.cut();
      expect(await httpJson(server.url, 'GET', '/readyz')).toEqual({
        status: 503,
        body: { ready: false, reason: 'database unreachable' },
      });
      await server.waitForLog((l) => l.msg === 'store connection lost');

      proxy.restore();
      await waitFor(
        '/readyz 200 again',
        async () => (await httpJson(server.url, 'GET', '/readyz')).status === 200,
        10_000,
        100,
      );
      await register(server.url, 'bob');
      expect(server.stdout() + server.stderr()).not.toContain(password);
    } finally {
      const exit = await server.stop();
      await proxy.close();
      expect(exit.code).toBe(0);
    }
  });

  it('builds the same tables, columns and nullability on SQLite and PostgreSQL from the one migration history', async () => {
    const shape = async (url: string | undefined) => {
      const db = await openDatabase(':memory:', { url });
      try {
        const tables = await db.introspection.getTables();
        return Object.fromEntries(
          tables
            .map((t) => [
              t.name,
              Object.fromEntries(
                t.columns.map((c) => [c.name, { type: c.dataType, nullable: c.isNullable }]),
              ),
            ])
            .sort(([a], [b]) => String(a).localeCompare(String(b))),
        ) as Record<string, Record<string, { type: string; nullable: boolean }>>;
      } finally {
        await db.destroy();
      }
    };
    const sqlite = await shape(undefined);
    const postgres = await shape(await createTestDatabase());
    expect(Object.keys(postgres)).toEqual(Object.keys(sqlite));
    const stricter: string[] = [];
    for (const [table, columns] of Object.entries(sqlite)) {
      expect(Object.keys(postgres[table]!).sort(), table).toEqual(Object.keys(columns).sort());
      for (const [name, c] of Object.entries(columns)) {
        const pg = postgres[table]![name]!;
        expect(pg.nullable && !c.nullable, `${table}.${name} nullable only in PostgreSQL`).toBe(false);
        if (c.nullable && !pg.nullable) stricter.push(`${table}.${name}`);
      }
    }
    // Only primary keys differ: SQLite lets a non-integer PRIMARY KEY hold NULL (a
    // documented quirk) and reports its rowid alias (audit.id) as nullable (a NULL there
    // takes the next id); PostgreSQL's primary keys are NOT NULL.
    expect(stricter.sort()).toEqual([
      'account_keys.account_id',
      'accounts.id',
      'audit.id',
      'device_keys.device_id',
      'devices.id',
      'open_calls.call_id',
    ]);
    // Unix-ms times are 64-bit in both (PostgreSQL's integer is 32-bit).
    expect(postgres.audit!.at!.type).toBe('int8');
    expect(postgres.devices!.expires_at!.type).toBe('int8');
    expect(postgres.call_usage!.seconds!.type).toBe('float8');
  });
});
