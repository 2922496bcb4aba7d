import { createHash, hkdfSync } from 'node:crypto';

/**
 * What binds one call's SRTP master keys to its sealed signaling
 * (docs/SECURITY.md, "Media keys bound to the sealed channel").
 *
 * Each device puts a fresh ephemeral X25519 public key (RFC 7748) in its
 * sealed offer or answer; `secret` is the X25519 of the two, known only to the
 * two devices (the shares travel only inside envelopes sealed with X25519 +
 * ML-KEM-768, so they are hidden from the server, the relay and a recorder
 * with a quantum computer alike; the private halves live only as long as the
 * call, so the secret has forward secrecy).
 */
export interface SrtpKeyBinding {
  /** 32 bytes: X25519(own ephemeral private key, peer's ephemeral public key). */
  secret: Uint8Array;
  /** What the keys are bound to: the call id and both public shares, caller's first (any length). */
  context: Uint8Array;
}

/** SRTP master keys and salts of one DTLS-SRTP association (RFC 5764 §4.2), as werift hands them out. */
export interface SrtpKeys {
  localKey: Buffer;
  localSalt: Buffer;
  remoteKey: Buffer;
  remoteSalt: Buffer;
}

const INFO = 'parley srtp master key v1';

/**
 * One direction's key and salt: HKDF-SHA256 (RFC 5869) with
 * `ikm = exporter key ‖ exporter salt ‖ secret`, `salt = SHA-256(context)`,
 * `info = "parley srtp master key v1" ‖ direction`, `L = |key| + |salt|`.
 * The output is secret while *either* the DTLS handshake's ECDHE or the sealed
 * X25519 exchange is: a relay that broke or joined the DTLS handshake still
 * lacks `secret`; a server that can read nothing sealed lacks the DTLS keys.
 */
function direction(key: Buffer, salt: Buffer, binding: SrtpKeyBinding, sender: 'client' | 'server'): { key: Buffer; salt: Buffer } {
  const out = Buffer.from(
    hkdfSync(
      'sha256',
      Buffer.concat([key, salt, binding.secret]),
      createHash('sha256').update(binding.context).digest(),
      `${INFO} ${sender}`,
      key.length + salt.length,
    ),
  );
  return { key: out.subarray(0, key.length), salt: out.subarray(key.length) };
}

/**
 * The SRTP master keys of a call bound to its sealed secret: each direction's
 * DTLS-SRTP key and salt (RFC 5764 §4.2: the exporter's client and server
 * halves) mixed with `binding` (see {@link direction}). Both ends compute the
 * same keys for the same direction, so what one sends the other opens.
 * @param keys what the DTLS exporter gave this end (lengths as the SRTP profile: 16/14 for AES_CM_128_HMAC_SHA1_80, 16/12 for AEAD_AES_128_GCM).
 * @param role this end's DTLS role (`client` sends with the exporter's client key).
 * @throws Error when the secret is not 32 bytes.
 */
export function mixSrtpKeys(keys: SrtpKeys, role: 'client' | 'server', binding: SrtpKeyBinding): SrtpKeys {
  if (binding.secret.length !== 32) throw new Error('the SRTP key binding secret must be 32 bytes');
  const remoteRole = role === 'client' ? 'server' : 'client';
  const local = direction(keys.localKey, keys.localSalt, binding, role);
  const remote = direction(keys.remoteKey, keys.remoteSalt, binding, remoteRole);
  return { localKey: local.key, localSalt: local.salt, remoteKey: remote.key, remoteSalt: remote.salt };
}
