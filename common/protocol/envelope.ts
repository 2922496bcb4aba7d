import { z } from 'zod';

/** Largest envelope body in characters (an SDP offer is ~1–3 KiB; sealing adds ~2.3 KiB of ML-KEM and signature). */
export const MAX_ENVELOPE_BYTES = 32 * 1024;

/**
 * An opaque payload routed between devices: SDP offers/answers and ICE
 * candidates travel only inside one. The server never parses `body`.
 *
 * - `plain`: JSON text of {@link EnvelopeContent}. Only the server's own tests
 *   and the routing layer use it; a Parley client refuses it for calls
 *   (security reason `unsealed`).
 * - `sealed`: JSON text of a {@link SealedBody}: the content encrypted and
 *   signed for exactly one recipient device (docs/SECURITY.md, "Sealed
 *   signaling"). The version is `SealedBody.v`.
 */
export const Envelope = z.object({
  kind: z.enum(['plain', 'sealed']),
  body: z.string().max(MAX_ENVELOPE_BYTES, `an envelope body is at most ${MAX_ENVELOPE_BYTES} characters`),
});
export type Envelope = z.infer<typeof Envelope>;

/** What an envelope carries (plain, or inside a sealed one). */
/**
 * An ephemeral X25519 public key (32 bytes, base64url: 43 characters) in a
 * sealed offer or answer: the two are combined into the secret the call's SRTP
 * master keys are bound to (main/media/srtp-binding.ts, docs/SECURITY.md).
 */
export const MediaShare = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'expected a 32-byte X25519 public key (base64url)');

/** An ICE restart's generation within a call: 1 for the first restart, counted by the caller. */
export const RestartGeneration = z.number().int().positive();

/**
 * A group call sender key (issue 14 item 4; main/core/e2ee/group-keys.ts,
 * docs/SECURITY.md "Group calls"): one participant device's random SFrame base
 * key (RFC 9605 §4.4.2), sealed for one other participant device like every
 * sealed message (role `member`, the room id as call id). The sender encrypts
 * its Opus frames under `kid` once the key's grace has passed.
 */
export const SenderKeyContent = z
  .object({
    type: z.literal('sender-key'),
    /** The SFrame KID of this key (RFC 9605 §4.3): unique per (sender device, epoch); below 2^48. */
    kid: z.number().int().nonnegative().max(2 ** 48 - 1),
    /** The sender's key generation in this room: 0 for its first key, one more per rotation. */
    epoch: z.number().int().nonnegative(),
    /** SFrame cipher suite (RFC 9605 §8.1): 4 = AES_128_GCM_SHA256_128, 5 = AES_256_GCM_SHA512_128. */
    suite: z.union([z.literal(4), z.literal(5)]),
    /** The base key: 16 bytes (suite 4) or 32 bytes (suite 5), base64url. Secret: never log. */
    key: z.string().regex(/^([A-Za-z0-9_-]{22}|[A-Za-z0-9_-]{43})$/, 'expected a 16- or 32-byte key (base64url)'),
  })
  .strict();
export type SenderKeyContent = z.infer<typeof SenderKeyContent>;

export const EnvelopeContent = z.discriminatedUnion('type', [
  SenderKeyContent,
  z.object({
    type: z.literal('offer'),
    sdp: z.string(),
    mediaShare: MediaShare.optional(),
    /**
     * Unix ms the caller sealed the invite (signed with it): a callee refuses an
     * invite older than the freshness window, or one it has seen before, even
     * after a restart (main/core/e2ee/seen-invites.ts). ICE-restart offers inside
     * a call carry none.
     */
    sentAt: z.number().int().nonnegative().optional(),
    /** ICE-restart generation (1, 2, …) of an offer inside a call; absent on the invite. */
    restart: RestartGeneration.optional(),
  }),
  z.object({
    type: z.literal('answer'),
    sdp: z.string(),
    mediaShare: MediaShare.optional(),
    /** The restart generation this answers; absent on the call's first answer. */
    restart: RestartGeneration.optional(),
  }),
  /**
   * Either side's media stopped arriving (its inbound path failed): it asks
   * the caller, who alone offers, to restart ICE. Repeated while it lasts.
   * `restart` is the latest restart generation the asking side has seen (0:
   * none): a request older than the caller's latest restart was sent before
   * the asker saw it, and does not start another one while that restart is
   * under way or has just switched.
   */
  z.object({ type: z.literal('restart-request'), restart: z.number().int().nonnegative().optional() }),
  /**
   * The sender moved its audio onto the transport of restart `restart`; the
   * receiver may close the old one once it has switched too (make before break).
   */
  z.object({ type: z.literal('switched'), restart: RestartGeneration }),
  z.object({
    type: z.literal('candidate'),
    candidate: z.string(),
    sdpMid: z.string().nullable().optional(),
    sdpMLineIndex: z.number().int().nullable().optional(),
  }),
  z.object({ type: z.literal('end-of-candidates') }),
]);
export type EnvelopeContent = z.infer<typeof EnvelopeContent>;

/** Wraps content in a plain envelope (server tests and tools only; clients seal). */
export function plainEnvelope(content: EnvelopeContent): Envelope {
  return { kind: 'plain', body: JSON.stringify(content) };
}

/**
 * Opens a plain envelope.
 * @throws Error when the envelope is sealed or its body is not valid content.
 */
export function openPlainEnvelope(envelope: Envelope): EnvelopeContent {
  if (envelope.kind !== 'plain') throw new Error('this is a sealed envelope; open it with the device keys');
  return EnvelopeContent.parse(JSON.parse(envelope.body));
}

// ---- end-to-end sealing (issue 5, docs/SECURITY.md) --------------------------------

/**
 * Most callee devices one invite is sealed for: a sealed offer is ~7 KiB (SDP,
 * the caller's key bundle, the ML-KEM-768 ciphertext), and an invite frame must
 * stay under the 64 KiB signaling frame limit.
 */
export const MAX_SEALED_DEVICES = 8;

/** Version of the sealed envelope format and of the key bundle format. */
export const SEALED_VERSION = 1;

/** base64url without padding (RFC 4648 §5). */
const B64u = z.string().regex(/^[A-Za-z0-9_-]*$/, 'expected base64url');
const b64uBytes = (bytes: number) =>
  B64u.refine((s) => Math.floor((s.length * 3) / 4) === bytes, `expected ${bytes} bytes (base64url)`);

/** Ed25519 public key, 32 bytes raw (RFC 8032 §5.1.5), base64url. A device's identity key. */
export const IdentityKey = b64uBytes(32);
/** X25519 public key, 32 bytes (RFC 7748 §5), base64url. */
export const X25519Key = b64uBytes(32);
/** ML-KEM-768 encapsulation key, 1184 bytes (FIPS 203 §8, table 3), base64url. */
export const MlKemKey = b64uBytes(1184);

/**
 * A device's public keys, signed by its identity key. Published to the server
 * with `keys.publish` after hello; the server stores it per device and hands it
 * out with `keys.get`. It binds the keys to the account name and device id, so
 * the server cannot move a bundle to another device or account. Never holds
 * private material.
 */
export const KeyBundle = z
  .object({
    v: z.literal(SEALED_VERSION),
    username: z.string().min(1).max(64),
    deviceId: z.uuid(),
    /** Ed25519 identity key. */
    ik: IdentityKey,
    /** X25519 key for sealing to this device. */
    x25519: X25519Key,
    /** ML-KEM-768 key for sealing to this device. */
    mlkem: MlKemKey,
    /** Unix ms the keys were created. */
    createdAt: z.number().int().nonnegative(),
    /** Ed25519 signature (64 bytes) by `ik` over `bundleSigningBytes(bundle)`. */
    sig: b64uBytes(64),
  })
  .strict();
export type KeyBundle = z.infer<typeof KeyBundle>;

/**
 * The exact bytes a bundle's signature covers: a domain label and the fields
 * in a fixed order, as canonical JSON (a fixed key order, no whitespace).
 */
export function bundleSigningText(b: Omit<KeyBundle, 'sig'>): string {
  return `parley-key-bundle-v1\n${JSON.stringify([b.v, b.username, b.deviceId, b.ik, b.x25519, b.mlkem, b.createdAt])}`;
}

/** One device party of a sealed envelope: its id and its identity key. */
export const SealedParty = z.object({ deviceId: z.uuid(), ik: IdentityKey }).strict();

/**
 * The body of a `sealed` envelope (version 1). Header fields are bound three
 * times: as AEAD associated data, into the HKDF salt, and under the sender's
 * signature (see `sealedHeaderText`).
 *
 * Construction (docs/SECURITY.md): X25519 (RFC 7748) between a fresh ephemeral
 * key and the recipient's X25519 key, plus ML-KEM-768 encapsulation (FIPS 203)
 * to the recipient's ML-KEM key; both shared secrets → HKDF-SHA256 (RFC 5869)
 * with the SHA-256 of the header as salt → AES-256-GCM key (NIST SP 800-38D,
 * 96-bit random nonce); the sender's Ed25519 identity key (RFC 8032) signs
 * header ‖ nonce ‖ ciphertext.
 */
export const SealedBody = z
  .object({
    v: z.literal(SEALED_VERSION),
    /** The call this message belongs to. */
    call: z.uuid(),
    from: SealedParty,
    to: SealedParty,
    /** The sender's role in the call; `member` in a group call (room), where the call id is the room id. */
    role: z.enum(['caller', 'callee', 'member']),
    /** Per (call, sender device, recipient device) sequence number, 0 first; each must be the next. */
    n: z.number().int().nonnegative(),
    /** Ephemeral X25519 public key, 32 bytes. */
    eph: X25519Key,
    /** ML-KEM-768 ciphertext, 1088 bytes. */
    kem: b64uBytes(1088),
    /** AES-GCM nonce, 12 bytes. */
    iv: b64uBytes(12),
    /** AES-256-GCM ciphertext with its 16-byte tag appended. */
    ct: B64u.max(24 * 1024),
    /** Ed25519 signature by `from.ik`, 64 bytes. */
    sig: b64uBytes(64),
  })
  .strict();
export type SealedBody = z.infer<typeof SealedBody>;

/** The header of a sealed body as canonical text (fixed order): AEAD data, HKDF salt input and signed. */
export function sealedHeaderText(h: Pick<SealedBody, 'v' | 'call' | 'from' | 'to' | 'role' | 'n' | 'eph' | 'kem'>): string {
  return `parley-sealed-v1\n${JSON.stringify([h.v, h.call, h.from.deviceId, h.from.ik, h.to.deviceId, h.to.ik, h.role, h.n, h.eph, h.kem])}`;
}

/**
 * What a sealed envelope holds once opened: the content, and in the caller's
 * offer the caller device's key bundle (the callee needs it to seal back).
 */
export const SealedContent = z
  .object({
    content: EnvelopeContent,
    bundle: KeyBundle.optional(),
    /**
     * With `bundle`: the sender's account key and the certificate its account
     * key gave this device, so the recipient can check the device belongs to
     * the account (absent for accounts without an account key).
     */
    accountKey: z.lazy(() => AccountKey).optional(),
    certificate: z.lazy(() => DeviceCertificate).optional(),
  })
  .strict();
export type SealedContent = z.infer<typeof SealedContent>;

/**
 * Why a call failed its end-to-end security checks (CallStatus.security,
 * `call.security` and `call.ended`):
 * - `unsealed`: a plain envelope arrived where a sealed one is required;
 * - `envelope_invalid`: a sealed envelope did not verify or open, or is bound to
 *   another call, device, identity or role;
 * - `replayed`: a sequence number that is not the next one (replay, reordering, drop);
 * - `key_mismatch`: a bundle whose signature fails, or an identity key that is not
 *   the one pinned for that device;
 * - `fingerprint_mismatch`: the DTLS certificate is not the one whose fingerprint arrived sealed;
 * - `dtls_unauthenticated`: the DTLS handshake did not prove possession of the
 *   key behind the certificate (a ServerKeyExchange or CertificateVerify
 *   signature, or a Finished, that does not verify: RFC 8827 §6.5) — someone
 *   on the media path showed a certificate that is not theirs.
 * - `device_uncertified`: a device the server lists for an account carries no
 *   valid certificate by that account's pinned account key (a device the
 *   server added): it is never rung, and an invite from it never rings.
 */
export const SecurityReason = z.enum([
  'unsealed',
  'envelope_invalid',
  'replayed',
  'key_mismatch',
  'fingerprint_mismatch',
  'dtls_unauthenticated',
  'device_uncertified',
]);
export type SecurityReason = z.infer<typeof SecurityReason>;

// ---- account identity key and device certificates (issue 12 item 3, docs/SECURITY.md) ----

/** Version of the account key record, the device certificate and the link messages. */
export const ACCOUNT_KEY_VERSION = 1;

/**
 * An account's identity key: an Ed25519 public key (RFC 8032) created on the
 * account's first device and kept only in that device's OS keychain. It signs
 * a {@link DeviceCertificate} for every device of the account, so that the
 * server cannot add a device on its own. Self-signed over
 * {@link accountKeySigningText}, which binds it to the account name.
 */
export const AccountKey = z
  .object({
    v: z.literal(ACCOUNT_KEY_VERSION),
    username: z.string().min(1).max(64),
    /** Ed25519 public key, 32 bytes, base64url. */
    key: IdentityKey,
    /** Unix ms the key was created. */
    createdAt: z.number().int().nonnegative(),
    /** Ed25519 signature (64 bytes) by `key` over `accountKeySigningText`. */
    sig: b64uBytes(64),
  })
  .strict();
export type AccountKey = z.infer<typeof AccountKey>;

/** The exact text an account key's self-signature covers (domain label, fixed field order). */
export function accountKeySigningText(a: Omit<AccountKey, 'sig'>): string {
  return `parley-account-key-v1\n${JSON.stringify([a.v, a.username, a.key, a.createdAt])}`;
}

/**
 * A device certificate: the account key's signature over one device's
 * identity key, binding the account name, the device id, the device's `ik`,
 * the account key and the time of signing (Matrix's cross-signing "self-signing
 * key" signature over a device, in one step). A device the server lists
 * without a valid one is not a device of that account, whatever the server says.
 */
export const DeviceCertificate = z
  .object({
    v: z.literal(ACCOUNT_KEY_VERSION),
    username: z.string().min(1).max(64),
    deviceId: z.uuid(),
    /** The device's Ed25519 identity key (its KeyBundle `ik`). */
    ik: IdentityKey,
    /** The account key that signed (its AccountKey `key`). */
    accountKey: IdentityKey,
    /** Unix ms of the signature. */
    signedAt: z.number().int().nonnegative(),
    /** Ed25519 signature (64 bytes) by `accountKey` over `deviceCertificateSigningText`. */
    sig: b64uBytes(64),
  })
  .strict();
export type DeviceCertificate = z.infer<typeof DeviceCertificate>;

/** The exact text a device certificate's signature covers (domain label, fixed field order). */
export function deviceCertificateSigningText(c: Omit<DeviceCertificate, 'sig'>): string {
  return `parley-device-certificate-v1\n${JSON.stringify([c.v, c.username, c.deviceId, c.ik, c.accountKey, c.signedAt])}`;
}

/** A link rendezvous id: 16 bytes derived from the link code (HKDF), base64url; it reveals nothing of the code. */
export const LinkId = b64uBytes(16);

/**
 * Device linking, step 1 (new device → existing device, through the server):
 * the new device's key bundle, authenticated by an HMAC-SHA256 under the key
 * derived from the one-time link code (main/core/e2ee/account-key.ts).
 */
export const LinkRequest = z
  .object({
    v: z.literal(ACCOUNT_KEY_VERSION),
    bundle: KeyBundle,
    /** HMAC-SHA256 (32 bytes) over `linkRequestText`. */
    mac: b64uBytes(32),
  })
  .strict();
export type LinkRequest = z.infer<typeof LinkRequest>;

/**
 * Device linking, step 2 (existing device → new device): the account key and
 * the new device's certificate, authenticated by the same code-derived key.
 */
export const LinkReply = z
  .object({
    v: z.literal(ACCOUNT_KEY_VERSION),
    accountKey: AccountKey,
    certificate: DeviceCertificate,
    /** HMAC-SHA256 (32 bytes) over `linkReplyText`. */
    mac: b64uBytes(32),
  })
  .strict();
export type LinkReply = z.infer<typeof LinkReply>;

/** The text a link request's MAC covers. */
export function linkRequestText(linkId: string, bundle: KeyBundle): string {
  return `parley-link-request-v1\n${JSON.stringify([linkId, bundleSigningText(bundle), bundle.sig])}`;
}

/** The text a link reply's MAC covers. */
export function linkReplyText(linkId: string, accountKey: AccountKey, certificate: DeviceCertificate): string {
  return `parley-link-reply-v1\n${JSON.stringify([linkId, accountKeySigningText(accountKey), accountKey.sig, deviceCertificateSigningText(certificate), certificate.sig])}`;
}
