import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  deleteSecret,
  getSecret,
  KEYCHAIN_UNAVAILABLE_MESSAGE,
  setSecret,
} from '../../native/keychain';
import { startKeyring, type Keyring } from '../harness/keyring';

const repoRoot = resolve(import.meta.dirname, '../..');
const keychainModule = join(repoRoot, 'native/keychain/index.ts');

let keyring: Keyring;
const savedEnv: Record<string, string | undefined> = {};

beforeAll(async () => {
  keyring = await startKeyring();
  // libsecret connects once per process: point this worker at our keyring
  // before its first keychain call.
  for (const [k, v] of Object.entries(keyring.env)) {
    savedEnv[k] = process.env[k];
    process.env[k] = v;
  }
});
afterAll(async () => {
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  await keyring?.stop();
});

/**
 * Runs a snippet against native/keychain in a fresh Node process (tsx) with
 * `env`, and returns what it printed as JSON.
 */
function inChildProcess(env: NodeJS.ProcessEnv, body: string): Promise<unknown> {
  const script =
    `import * as keychain from ${JSON.stringify(keychainModule)};\n` +
    `const out = await (async () => { ${body} })();\nconsole.log(JSON.stringify(out));`;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      {
        cwd: repoRoot,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.once('exit', (code) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      if (code === 0 && line) resolvePromise(JSON.parse(line));
      else reject(new Error(`child exited ${code}: ${stderr}`));
    });
  });
}

/** Every file under `dir` (recursively). */
function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

describe('keychain (real gnome-keyring over the Secret Service)', () => {
  it('stores a secret, reads it back, replaces it and deletes it', async () => {
    const account = `alice-${randomUUID()}`;
    expect(await getSecret('org.parley.test', account)).toBeNull();
    await setSecret('org.parley.test', account, 'first-token');
    expect(await getSecret('org.parley.test', account)).toBe('first-token');
    await setSecret('org.parley.test', account, 'second-token');
    expect(await getSecret('org.parley.test', account)).toBe('second-token');
    expect(await deleteSecret('org.parley.test', account)).toBe(true);
    expect(await getSecret('org.parley.test', account)).toBeNull();
    expect(await deleteSecret('org.parley.test', account)).toBe(false);
  });

  it('keeps secrets apart per service and account, and another process with the keyring env reads them', async () => {
    const account = `bob-${randomUUID()}`;
    await setSecret('org.parley.test', account, 'token-bob');
    await setSecret('org.parley.other', account, 'token-other');
    expect(await getSecret('org.parley.test', `${account}-x`)).toBeNull();
    const seen = await inChildProcess(
      { ...process.env, ...keyring.env },
      `return [await keychain.getSecret('org.parley.test', ${JSON.stringify(account)}),
               await keychain.getSecret('org.parley.other', ${JSON.stringify(account)})];`,
    );
    expect(seen).toEqual(['token-bob', 'token-other']);
  });

  it('never writes the secret in plaintext to disk', async () => {
    const secret = `plaintext-canary-${randomUUID()}`;
    await setSecret('org.parley.test', 'canary', secret);
    const leaks = filesUnder(keyring.dir).filter((f) => {
      try {
        return readFileSync(f).includes(secret);
      } catch {
        return false; // sockets
      }
    });
    expect(leaks).toEqual([]);
    await deleteSecret('org.parley.test', 'canary');
  });

  it('refuses with KeychainUnavailableError when there is no session bus, and stores nothing', async () => {
    // Neither a bus address nor $XDG_RUNTIME_DIR/bus (GDBus's fallback) nor X11 autolaunch.
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: keyring.env.HOME };
    delete env.DBUS_SESSION_BUS_ADDRESS;
    delete env.XDG_RUNTIME_DIR;
    delete env.DISPLAY;
    const result = await inChildProcess(
      env,
      `try { await keychain.setSecret('org.parley.test', 'x', 'y'); return { stored: true }; }
       catch (e) { return { name: e.name, code: e.code, message: e.message, isClass: e instanceof keychain.KeychainUnavailableError }; }`,
    );
    expect(result).toMatchObject({
      name: 'KeychainUnavailableError',
      code: 'keychain_unavailable',
      isClass: true,
    });
    expect((result as { message: string }).message).toContain(KEYCHAIN_UNAVAILABLE_MESSAGE);
    expect(await getSecret('org.parley.test', 'x')).toBeNull();
  });

  it('refuses with KeychainUnavailableError when the session bus has no Secret Service provider', async () => {
    const busOnly = await startKeyring({ secretService: false });
    try {
      const result = await inChildProcess(
        { ...process.env, ...busOnly.env },
        `try { return { value: await keychain.getSecret('org.parley.test', 'x') }; }
         catch (e) { return { name: e.name, message: e.message, detail: e.detail }; }`,
      );
      expect(result).toMatchObject({
        name: 'KeychainUnavailableError',
        detail: expect.stringContaining('org.freedesktop.secrets'),
      });
      expect((result as { message: string }).message).toMatch(
        /will not store your sign-in token in plaintext/,
      );
    } finally {
      await busOnly.stop();
    }
  });
});
