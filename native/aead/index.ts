/**
 * AES-GCM with one OpenSSL context per key (`native/aead/addon`, plain C
 * N-API over OpenSSL's EVP; built by `scripts/setup.sh` / `npm run
 * build:native`), for per-packet sealing: SRTP (RFC 7714) and SFrame
 * (RFC 9605). main/media/aes-gcm.ts is its user; see there for why.
 */
import { loadOwnAddon, ownAddonPaths, type OwnAddonSpec } from '../load';

/** One key's contexts (AEAD_AES_128_GCM or AEAD_AES_256_GCM, 12-byte IV, 16-byte tag). */
export interface NativeGcm {
  /**
   * Writes ciphertext ‖ tag into `out` from `offset`.
   * @throws RangeError for an IV that is not 12 bytes or an `out` too short; TypeError for a non-Uint8Array.
   */
  seal(out: Uint8Array, offset: number, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): void;
  /**
   * Checks the tag (constant time, in OpenSSL) and only when it matches writes the plaintext into `out` from `offset`.
   * @returns false, `out` untouched, when the tag does not match.
   * @throws RangeError for a bad IV or tag length or an `out` too short.
   */
  open(out: Uint8Array, offset: number, iv: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array): boolean;
}

interface AeadAddon {
  /** @throws RangeError for a key that is not 16 or 32 bytes. */
  Gcm: new (key: Uint8Array) => NativeGcm;
  /** The OpenSSL the contexts come from (Node's own, in Node), e.g. "OpenSSL 3.5.9 29 Sep 2026". */
  openssl: string;
}

const AEAD_ADDON: OwnAddonSpec = {
  packageName: 'parley_aead (native/aead/addon)',
  purpose: 'encrypting call audio (SRTP and end-to-end frames)',
  systemLibraries: { 'libcrypto.so.3': 'libssl3' },
  dir: 'aead',
  target: 'parley_aead',
  envVar: 'PARLEY_AEAD_ADDON',
  title: "Parley's AES-GCM addon",
  buildPackage: 'libssl-dev',
};

/** Where the addon may be, most specific first (native/load.ts {@link ownAddonPaths}; `PARLEY_AEAD_ADDON` first). */
export function aeadAddonPaths(): string[] {
  return ownAddonPaths(AEAD_ADDON, import.meta.url);
}

/**
 * Loads the addon from the first of `candidates` that exists.
 * @throws NativeModuleLoadError "… not built: run scripts/setup.sh …" when none
 *   exists, or "libcrypto.so.3 missing: install libssl3 …" when the loader cannot find OpenSSL.
 */
export function loadAeadAddon(candidates: readonly string[] = aeadAddonPaths()): AeadAddon {
  return loadOwnAddon<AeadAddon>(AEAD_ADDON, candidates);
}
