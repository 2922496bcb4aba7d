/**
 * The OS keychain: secrets stored under (service, account) through keytar's
 * API (`@github/keytar`): the Secret Service (gnome-keyring, KWallet…) over
 * D-Bus on Linux, Keychain on macOS, the Credential Vault on Windows.
 *
 * There is no fallback: when no keychain answers, every call throws
 * {@link KeychainUnavailableError} and Parley refuses to keep the secret,
 * rather than writing it to a file in plaintext.
 *
 * `@github/keytar` is loaded on first use (it needs libsecret-1.so.0 on Linux).
 */
import { loadNativeModule, type NativeModuleSpec } from '../load';

/** The subset of keytar's API Parley uses. */
interface Keytar {
  getPassword(service: string, account: string): Promise<string | null>;
  setPassword(service: string, account: string, password: string): Promise<void>;
  deletePassword(service: string, account: string): Promise<boolean>;
}

const KEYTAR: NativeModuleSpec = {
  packageName: '@github/keytar',
  purpose: 'the OS keychain',
  addonPaths: [
    'build/Release/keytar.node',
    `prebuilds/${process.platform}-${process.arch}/keytar.node`,
  ],
  systemLibraries: {
    'libsecret-1.so.0': 'libsecret-1-0',
    'libglib-2.0.so.0': 'libglib2.0-0',
    'libgio-2.0.so.0': 'libglib2.0-0',
  },
};

/** The message of {@link KeychainUnavailableError}. */
export const KEYCHAIN_UNAVAILABLE_MESSAGE =
  'no OS keychain (Secret Service) is running: Parley will not store your sign-in token in plaintext; ' +
  'start gnome-keyring or another Secret Service provider';

/**
 * No keychain answered: on Linux, no Secret Service on the session D-Bus (no
 * bus at all, no provider, or a provider without an unlocked default
 * collection), or the keytar module itself could not be loaded. `detail` holds
 * the underlying reason (never a secret).
 */
export class KeychainUnavailableError extends Error {
  readonly code = 'keychain_unavailable';
  override readonly name = 'KeychainUnavailableError';
  constructor(
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${KEYCHAIN_UNAVAILABLE_MESSAGE} (${detail})`, options);
  }
}

let keytar: Keytar | undefined;

function load(): Keytar {
  if (!keytar) {
    try {
      keytar = loadNativeModule<Keytar>(KEYTAR);
    } catch (err) {
      throw new KeychainUnavailableError((err as Error).message, { cause: err });
    }
  }
  return keytar;
}

function checkName(what: string, value: string): void {
  if (typeof value !== 'string' || value.length === 0)
    throw new TypeError(`keychain: ${what} must be a non-empty string`);
}

/**
 * Runs a keytar call. keytar rejects only when the keychain itself fails
 * (a missing entry is `null` / `false`, and names are checked beforehand), so
 * every rejection means "unavailable". Examples on Linux: "Cannot autolaunch
 * D-Bus without X11 $DISPLAY" (no session bus), "Could not connect: No such
 * file or directory" (stale bus address), "Object does not exist at path
 * /org/freedesktop/secrets/collection/login" (a keyring with no login collection).
 */
async function call<T>(op: (k: Keytar) => Promise<T>): Promise<T> {
  const k = load();
  try {
    return await op(k);
  } catch (err) {
    throw new KeychainUnavailableError(err instanceof Error ? err.message : String(err), {
      cause: err,
    });
  }
}

/**
 * The secret stored for (service, account), or `null` when there is none.
 * @throws KeychainUnavailableError when no keychain answers.
 * @throws TypeError for an empty service or account.
 */
export function getSecret(service: string, account: string): Promise<string | null> {
  checkName('service', service);
  checkName('account', account);
  return call((k) => k.getPassword(service, account));
}

/**
 * Stores (or replaces) the secret for (service, account).
 * @throws KeychainUnavailableError when no keychain answers; nothing is stored anywhere else.
 * @throws TypeError for an empty service, account or secret.
 */
export function setSecret(service: string, account: string, secret: string): Promise<void> {
  checkName('service', service);
  checkName('account', account);
  checkName('secret', secret);
  return call((k) => k.setPassword(service, account, secret));
}

/**
 * Deletes the secret for (service, account).
 * @returns true when an entry was deleted, false when there was none.
 * @throws KeychainUnavailableError when no keychain answers.
 */
export function deleteSecret(service: string, account: string): Promise<boolean> {
  checkName('service', service);
  checkName('account', account);
  return call((k) => k.deletePassword(service, account));
}

/**
 * Whether a keychain answers right now (a harmless lookup of a name that is
 * never used). Never throws.
 */
export async function keychainAvailable(): Promise<boolean> {
  try {
    await getSecret('org.parley.probe', 'availability-check');
    return true;
  } catch {
    return false;
  }
}
