import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ParleyError } from '../../common/errors';
import { HttpError, LoginReply, RegisterReply } from '../../common/protocol/signaling';
import { checkServerUrl, httpBaseOf } from '../../common/server-url';
import { writeJsonFile } from './json-file';

/**
 * Where secrets go: the OS keychain (native/keychain). There is deliberately
 * no file-backed implementation: without a keychain Parley refuses to sign in
 * rather than keep a token in plaintext.
 */
export interface SecretStore {
  get(account: string): Promise<string | null>;
  set(account: string, secret: string): Promise<void>;
  delete(account: string): Promise<boolean>;
}

/** The non-secret part of a signed-in device, kept in `<dataDir>/profile.json`. */
export const Profile = z.object({
  serverUrl: z.string().url(),
  username: z.string(),
  accountId: z.string(),
  deviceId: z.string(),
});
export type Profile = z.infer<typeof Profile>;

export interface Session extends Profile {
  /** The device token (from the keychain). */
  token: string;
}

/** The keychain entry name of a profile's device token. */
export function tokenKey(p: Pick<Profile, 'serverUrl' | 'username'>): string {
  return `${p.username}@${new URL(p.serverUrl).host}`;
}

/** POSTs JSON to the server; the address is checked first (https:// except on loopback, common/server-url). */
async function postJson(serverUrl: string, path: string, body: unknown): Promise<unknown> {
  const base = httpBaseOf(checkServerUrl(serverUrl));
  let res: Response;
  try {
    res = await fetch(new URL(path, base), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ParleyError('unavailable', `cannot reach the Parley server at ${serverUrl}`);
  }
  const json: unknown = await res.json().catch(() => undefined);
  if (!res.ok) {
    const e = HttpError.safeParse(json);
    if (e.success) throw ParleyError.fromJsonRpc(e.data.error);
    throw new ParleyError('unavailable', `the server answered HTTP ${res.status}`);
  }
  return json;
}

/**
 * Creates an account (`POST /v1/accounts`).
 * @throws ParleyError `already_exists`, `invalid_params` (username or password rules, or a
 *   plain http:// address of another computer: common/server-url), `rate_limited` (with
 *   `retryAfter`, seconds), `unavailable`.
 */
export async function register(serverUrl: string, username: string, password: string): Promise<void> {
  RegisterReply.parse(await postJson(serverUrl, '/v1/accounts', { username, password }));
}

/**
 * Signs in (`POST /v1/sessions`): the server creates a device and returns its
 * token once. The token goes to the keychain, the rest to `profile.json`;
 * nothing secret is written to `dataDir`.
 * @throws ParleyError `bad_credentials`, `invalid_params` (a plain http:// address of another
 *   computer: common/server-url), `rate_limited` (with `retryAfter`, seconds), `unavailable`;
 *   KeychainUnavailableError from the store.
 */
export async function login(
  serverUrl: string,
  username: string,
  password: string,
  dataDir: string,
  secrets: SecretStore,
  deviceName = 'parley-headless',
): Promise<Session> {
  const reply = LoginReply.parse(
    await postJson(serverUrl, '/v1/sessions', { username, password, deviceName }),
  );
  const profile: Profile = {
    serverUrl,
    username: reply.username,
    accountId: reply.accountId,
    deviceId: reply.deviceId,
  };
  await secrets.set(tokenKey(profile), reply.token);
  await saveProfile(dataDir, profile);
  return { ...profile, token: reply.token };
}

/**
 * Loads the signed-in device: profile from `dataDir`, token from the keychain.
 * @throws ParleyError `unauthenticated` when not signed in, the token is gone from the keychain,
 *   or the saved server address is plain http:// to another computer (common/server-url).
 */
export async function loadSession(dataDir: string, secrets: SecretStore): Promise<Session> {
  let profile: Profile;
  try {
    profile = Profile.parse(JSON.parse(await readFile(join(dataDir, 'profile.json'), 'utf8')));
  } catch {
    throw new ParleyError('unauthenticated', `not signed in (no profile in ${dataDir}); run "parley login" first`);
  }
  try {
    checkServerUrl(profile.serverUrl);
  } catch (e) {
    // A profile saved before the https rule: sign in again rather than send the token in the clear.
    throw new ParleyError('unauthenticated', `${(e as Error).message}; sign in again with an https:// address`);
  }
  const token = await secrets.get(tokenKey(profile));
  if (!token) {
    throw new ParleyError('unauthenticated', 'the sign-in token is not in the keychain any more; run "parley login" again');
  }
  return { ...profile, token };
}

/**
 * Forgets this device's sign-in locally: the token leaves the keychain and the
 * profile is removed. (Revoking the device on the server is the server's
 * `session.logout`, called before this when online.)
 */
export async function forgetSession(dataDir: string, secrets: SecretStore, profile: Pick<Profile, 'serverUrl' | 'username'>): Promise<void> {
  await secrets.delete(tokenKey(profile));
  await unlink(join(dataDir, 'profile.json')).catch(() => {});
}

async function saveProfile(dataDir: string, profile: Profile): Promise<void> {
  await writeJsonFile(join(dataDir, 'profile.json'), profile);
}
