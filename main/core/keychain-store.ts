import * as keychain from '../../native/keychain';
import type { SecretStore } from './account';

/** Keychain service name under which Parley keeps its secrets. */
export const KEYCHAIN_SERVICE = 'org.parley.desktop';

/**
 * The OS keychain as Parley's SecretStore. Throws the keychain's own
 * "unavailable" error when no Secret Service runs: there is no fallback.
 */
export function keychainStore(service = KEYCHAIN_SERVICE): SecretStore {
  return {
    get: (account) => keychain.getSecret(service, account),
    set: (account, secret) => keychain.setSecret(service, account, secret),
    delete: (account) => keychain.deleteSecret(service, account),
  };
}
