import { createHash } from 'node:crypto';
import {
  SEALED_VERSION,
  SealedBody,
  SealedContent,
  sealedHeaderText,
  type Envelope,
  type KeyBundle,
  type SecurityReason,
} from '../../../common/protocol/envelope';
import type { DeviceIdentity } from './identity';
import {
  aesGcmOpen,
  aesGcmSeal,
  b64u,
  ed25519Verify,
  hkdfSha256,
  mlkemDecapsulate,
  mlkemEncapsulate,
  random,
  unb64u,
  x25519,
  x25519Generate,
} from './primitives';

/** HKDF `info` of the envelope key (RFC 5869 §3.2: a context string binding the use). */
const KEY_INFO = 'parley sealed envelope v1 / x25519+ml-kem-768 / aes-256-gcm key';

/** A failed check while opening a sealed envelope, with the security reason to report. Never holds secrets. */
export class SealError extends Error {
  override readonly name = 'SealError';
  constructor(
    readonly reason: SecurityReason,
    message: string,
  ) {
    super(message);
  }
}

const utf8 = (s: string) => new TextEncoder().encode(s);
const sha256 = (...parts: Uint8Array[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};

/** The bytes the sender's identity key signs: header ‖ nonce ‖ ciphertext, length-prefixed. */
function signedBytes(header: string, iv: Uint8Array, ct: Uint8Array): Uint8Array {
  const h = utf8(header);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(h.length);
  return Buffer.concat([len, h, iv, ct]);
}

/**
 * The hybrid key schedule (X-Wing-like combiner): HKDF-SHA256 over
 * ss_X25519 ‖ ss_ML-KEM, salted with SHA-256 of the header (which holds the
 * ephemeral key, the ML-KEM ciphertext and both identities) and the recipient's
 * two public keys. The key is safe while either X25519 or ML-KEM-768 holds.
 */
function envelopeKey(ssX: Uint8Array, ssK: Uint8Array, header: string, recipient: KeyBundle): Uint8Array {
  const salt = sha256(utf8(header), unb64u(recipient.x25519), unb64u(recipient.mlkem));
  return hkdfSha256(Buffer.concat([ssX, ssK]), salt, KEY_INFO, 32);
}

/** Where a sealed message sits in a call: which call, who sends, to which device, in what role, its sequence number. */
export interface SealContext {
  /** The call id, or the room id in a group call. */
  callId: string;
  role: 'caller' | 'callee' | 'member';
  /** Sequence number per (call, sender device, recipient device): 0, 1, 2, … */
  n: number;
}

/**
 * Seals `content` for one recipient device (docs/SECURITY.md "Sealed signaling"):
 * hybrid X25519 (RFC 7748) + ML-KEM-768 (FIPS 203) → HKDF-SHA256 (RFC 5869) →
 * AES-256-GCM, signed with the sender's Ed25519 identity key (RFC 8032), bound
 * to the call id, both device ids and identity keys, the role and `n`.
 * @param recipient the recipient device's bundle, already verified and trusted.
 * @returns a `sealed` envelope (~3.5 KiB + content).
 */
export function seal(sender: DeviceIdentity, recipient: KeyBundle, ctx: SealContext, content: SealedContent): Envelope {
  const eph = x25519Generate();
  const ssX = x25519(eph.privateKey, unb64u(recipient.x25519));
  const kem = mlkemEncapsulate(unb64u(recipient.mlkem));
  const head = {
    v: SEALED_VERSION,
    call: ctx.callId,
    from: { deviceId: sender.deviceId, ik: sender.identityKey },
    to: { deviceId: recipient.deviceId, ik: recipient.ik },
    role: ctx.role,
    n: ctx.n,
    eph: b64u(eph.publicKey),
    kem: b64u(kem.cipherText),
  } as const;
  const header = sealedHeaderText(head);
  const key = envelopeKey(ssX, kem.sharedSecret, header, recipient);
  const iv = random(12);
  const ct = aesGcmSeal(key, iv, utf8(JSON.stringify(content)), utf8(header));
  const sig = sender.sign(signedBytes(header, iv, ct));
  const body: SealedBody = { ...head, iv: b64u(iv), ct: b64u(ct), sig: b64u(sig) };
  return { kind: 'sealed', body: JSON.stringify(body) };
}

/** What the receiver expects of a sealed envelope before it opens it. */
export interface OpenExpectation {
  callId: string;
  /** The sender's device id as the server routed it. */
  fromDeviceId: string;
  /**
   * The sender's identity key when already known (pinned / from the offer);
   * undefined only for the offer, whose sender key is then checked against the
   * bundle inside and the trust store by the caller of `open`.
   */
  fromIdentityKey: string | undefined;
  /** The sender's role. */
  role: 'caller' | 'callee' | 'member';
  /** The sequence number that must come next from this sender. */
  n: number;
}

/** Reads a sealed body's header without opening it (to learn the sender's identity key for the offer). */
export function peekSealed(envelope: Envelope): SealedBody {
  if (envelope.kind !== 'sealed') throw new SealError('unsealed', 'a plain (unsealed) envelope arrived where a sealed one is required');
  let body: SealedBody;
  try {
    body = SealedBody.parse(JSON.parse(envelope.body));
  } catch {
    throw new SealError('envelope_invalid', 'a sealed envelope is malformed');
  }
  return body;
}

/**
 * Opens a sealed envelope addressed to this device, checking in order: the
 * format and version; that it is bound to this call, this device and identity
 * key, the expected sender device (and identity key) and role; the sender's
 * signature; the sequence number; then decrypts it.
 * @throws SealError with the security reason: `unsealed`, `envelope_invalid`, `replayed`, `key_mismatch`.
 */
export function open(me: DeviceIdentity, envelope: Envelope, expect: OpenExpectation): SealedContent & { body: SealedBody } {
  const body = peekSealed(envelope);
  if (body.call !== expect.callId) throw new SealError('envelope_invalid', 'a sealed envelope belongs to another call');
  if (body.to.deviceId !== me.deviceId || body.to.ik !== me.identityKey) {
    throw new SealError('envelope_invalid', 'a sealed envelope was sealed for another device');
  }
  if (body.from.deviceId !== expect.fromDeviceId) throw new SealError('envelope_invalid', 'a sealed envelope comes from another device than the server says');
  if (expect.fromIdentityKey !== undefined && body.from.ik !== expect.fromIdentityKey) {
    throw new SealError('key_mismatch', "a sealed envelope is signed by an identity key that is not the peer device's");
  }
  if (body.role !== expect.role) throw new SealError('envelope_invalid', 'a sealed envelope claims the wrong role');
  const header = sealedHeaderText(body);
  const iv = unb64u(body.iv);
  const ct = unb64u(body.ct);
  if (!ed25519Verify(unb64u(body.from.ik), signedBytes(header, iv, ct), unb64u(body.sig))) {
    throw new SealError('envelope_invalid', 'a sealed envelope has an invalid signature');
  }
  if (body.n !== expect.n) {
    throw new SealError('replayed', `a sealed envelope arrived out of sequence (number ${body.n}, expected ${expect.n}): replayed, reordered or dropped`);
  }
  let plain: Uint8Array;
  try {
    const ssX = x25519(me.x25519Private(), unb64u(body.eph));
    const ssK = mlkemDecapsulate(unb64u(body.kem), me.mlkemSecret());
    plain = aesGcmOpen(envelopeKey(ssX, ssK, header, me.bundle), iv, ct, utf8(header));
  } catch {
    throw new SealError('envelope_invalid', 'a sealed envelope does not decrypt');
  }
  let content: SealedContent;
  try {
    content = SealedContent.parse(JSON.parse(new TextDecoder().decode(plain)));
  } catch {
    throw new SealError('envelope_invalid', 'a sealed envelope holds malformed content');
  }
  return { ...content, body };
}
