import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { ParleyError } from '../../../common/errors';
import type { SafetyNumberResult, TrustInfo } from '../../../common/protocol/control';
import type { Envelope, EnvelopeContent, KeyBundle, SealedContent } from '../../../common/protocol/envelope';
import type { SignalingClient } from '../signaling-client';
import type { SrtpKeyBinding } from '../../media/srtp-binding';
import { DeviceIdentity, verifyBundle } from './identity';
import { b64u, unb64u, x25519, x25519Generate } from './primitives';
import { SeenInvites } from './seen-invites';
import { SealError, open, peekSealed, seal } from './seal';
import { TrustStore, keyChangedError, safetyNumber, type KeyChange } from './trust';

export { DeviceIdentity, verifyBundle } from './identity';
export { SealError } from './seal';
export { SeenInvites, INVITE_FRESHNESS_MS } from './seen-invites';
export { TrustStore, safetyNumber, safetyHalf, type KeyChange } from './trust';

/**
 * End-to-end security of one signed-in device (docs/SECURITY.md): its
 * identity, the trust store of its contacts' device keys, key publication,
 * and the per-call sealing state.
 *
 * Core API for the desktop trust screens (all methods throw ParleyError with a
 * stable reason):
 * - `safetyNumber(username)` → `{username, safetyNumber, digits, verified}`;
 *   `key_changed` while a change waits; `unknown_user`, `not_contact`.
 * - `verify(username)` → TrustInfo (marks verified); `key_changed`, `not_found`.
 * - `acceptKeyChange(username)` → TrustInfo; `not_found`.
 * - `trustInfo(username)` → TrustInfo; `not_found`.
 * - event `keyChange` (KeyChange): a contact's key changed or a device was added.
 */
export class EndToEnd extends EventEmitter<{ keyChange: [KeyChange] }> {
  /** The invites already opened (persisted; set by {@link startEndToEnd}). */
  seenInvites: SeenInvites | undefined;

  constructor(
    readonly identity: DeviceIdentity,
    readonly trust: TrustStore,
    private readonly signaling: SignalingClient,
  ) {
    super();
    trust.on('keyChange', (c) => this.emit('keyChange', c));
    // Publish the bundle on every (re)connection, before the device counts as online.
    signaling.afterHello(async (request) => {
      await request('keys.publish', { bundle: this.identity.bundle });
    });
  }

  /**
   * The verified, trusted key bundles of `username`'s devices, as the server lists them.
   * @param onlineOnly only the devices online now.
   * @throws ParleyError `key_changed` when a pinned key differs (or a verified contact
   *   shows a new device); `security` for a bundle with a bad signature or the wrong names;
   *   the server's `unknown_user`, `not_contact`.
   */
  async devicesOf(username: string, onlineOnly: boolean): Promise<KeyBundle[]> {
    const { devices } = await this.signaling.request('keys.get', { username });
    const out: KeyBundle[] = [];
    for (const d of devices) {
      const bundle = verifyBundle(d.bundle, { username, deviceId: d.deviceId });
      if (username !== this.identity.username) this.trust.check(username, bundle.deviceId, bundle.ik);
      if (!onlineOnly || d.online) out.push(bundle);
    }
    if (username !== this.identity.username && this.trust.blocked(username)) throw keyChangedError(username);
    return out;
  }

  /**
   * The safety number with `username`: both accounts' device identity keys as
   * the server lists them (mine must include this device's own key), each
   * checked against the pins first. The same 60 digits on both ends exactly
   * when both see the same keys.
   */
  async safetyNumber(username: string): Promise<SafetyNumberResult> {
    if (username === this.identity.username) throw new ParleyError('invalid_params', 'a safety number is between you and a contact');
    const theirs = await this.devicesOf(username, false);
    if (theirs.length === 0) throw new ParleyError('not_found', `${username} has no device with security keys yet`);
    const mine = await this.devicesOf(this.identity.username, false);
    if (!mine.some((b) => b.deviceId === this.identity.deviceId && b.ik === this.identity.identityKey)) {
      throw new ParleyError('security', "the server's list of your own devices does not hold this device's key");
    }
    const n = safetyNumber(
      { username: this.identity.username, identityKeys: mine.map((b) => b.ik) },
      { username, identityKeys: theirs.map((b) => b.ik) },
    );
    return { username, safetyNumber: n.grouped, digits: n.digits, verified: this.trust.isVerified(username) };
  }

  /** Marks `username` verified. @throws ParleyError `key_changed`, `not_found`. */
  verify(username: string): TrustInfo {
    return this.trust.markVerified(username);
  }

  /** Accepts a pending key change of `username`. @throws ParleyError `not_found`. */
  acceptKeyChange(username: string): TrustInfo {
    return this.trust.acceptKeyChange(username);
  }

  /** What is pinned for `username`. @throws ParleyError `not_found`. */
  trustInfo(username: string): TrustInfo {
    return this.trust.info(username);
  }

  /** Sealing state for a call this device places, towards the callee's devices. */
  outgoingCall(callId: string, callee: string, devices: KeyBundle[]): SealedCall {
    return new SealedCall(this, callId, 'caller', callee, devices);
  }

  /**
   * Opens an incoming invite: the sealed offer from the caller's device. Checks
   * the caller device's bundle inside (signed by the key that signed the
   * envelope, naming that account and device) against the trust store.
   * @returns the call's sealing state and the offer SDP.
   * @throws SealError (security reason) for anything that does not verify;
   *   ParleyError `key_changed` when the caller's key is not the pinned one.
   */
  incomingCall(callId: string, caller: { username: string; deviceId: string }, envelope: Envelope): { call: SealedCall; offer: string } {
    const head = peekSealed(envelope);
    const opened = open(this.identity, envelope, {
      callId,
      fromDeviceId: caller.deviceId,
      fromIdentityKey: head.from.ik,
      role: 'caller',
      n: 0,
    });
    if (opened.content.type !== 'offer' || !opened.bundle) throw new SealError('envelope_invalid', 'the sealed invite holds no offer');
    let bundle: KeyBundle;
    try {
      bundle = verifyBundle(opened.bundle, caller);
    } catch {
      throw new SealError('key_mismatch', "the caller device's key bundle does not verify");
    }
    if (bundle.ik !== head.from.ik) throw new SealError('key_mismatch', "the caller's bundle and signature use different identity keys");
    if (this.trust.check(caller.username, caller.deviceId, bundle.ik) === 'blocked') throw keyChangedError(caller.username);
    // A recorded invite delivered again (even after a restart) never rings twice.
    this.seenInvites?.admit(callId, opened.content.sentAt);
    const call = new SealedCall(this, callId, 'callee', caller.username, [bundle]);
    call.bind(caller.deviceId);
    call.received(caller.deviceId);
    call.acceptMediaShare(opened.content.mediaShare);
    return { call, offer: opened.content.sdp };
  }
}

/**
 * The sealing state of one call: the peer devices' bundles, the device the
 * call is bound to once answered, and sequence numbers per direction and
 * device (send: next number per recipient; receive: next number expected per
 * sender). Every envelope is sealed for exactly one device.
 */
export class SealedCall {
  private readonly peers = new Map<string, KeyBundle>();
  private readonly sendNext = new Map<string, number>();
  private readonly recvNext = new Map<string, number>();
  private bound: string | undefined;
  /** The remote SDP as it arrived sealed (offer or answer): its fingerprint is what DTLS must show. */
  remoteSdp: string | undefined;
  /** This device's ephemeral X25519 key for the call's SRTP key binding; forgotten with the call. */
  private readonly mediaKey = x25519Generate();
  /** The peer device's share, from its sealed offer or answer. */
  private remoteMediaShare: Uint8Array | undefined;

  constructor(
    private readonly e2ee: EndToEnd,
    readonly callId: string,
    readonly role: 'caller' | 'callee',
    readonly peerUsername: string,
    devices: KeyBundle[],
  ) {
    for (const d of devices) this.peers.set(d.deviceId, d);
  }

  /** This device's public share for the sealed offer or answer (base64url, 32 bytes). */
  get mediaShare(): string {
    return b64u(this.mediaKey.publicKey);
  }

  /** Keeps the peer's share from its sealed offer or answer (the first one; later ones, in ICE restarts, carry none). */
  acceptMediaShare(share: string | undefined): void {
    if (share !== undefined && !this.remoteMediaShare) this.remoteMediaShare = unb64u(share);
  }

  /**
   * What the call's SRTP master keys are bound to (main/media/srtp-binding.ts):
   * the X25519 of the two ephemeral shares, and the call id with both shares
   * (the caller's first). Undefined when the peer's sealed offer or answer had
   * no share (a browser peer: DTLS-SRTP keys alone, as standard WebRTC).
   * @throws SealError `envelope_invalid` for a share that gives no secret (a low-order point).
   */
  srtpBinding(): SrtpKeyBinding | undefined {
    if (!this.remoteMediaShare) return undefined;
    let secret: Uint8Array;
    try {
      secret = x25519(this.mediaKey.privateKey, this.remoteMediaShare);
    } catch {
      throw new SealError('envelope_invalid', "the peer's media key share is not a usable X25519 key");
    }
    const [caller, callee] = this.role === 'caller' ? [this.mediaKey.publicKey, this.remoteMediaShare] : [this.remoteMediaShare, this.mediaKey.publicKey];
    const context = Buffer.concat([Buffer.from(`parley-srtp-binding-v1\n${this.callId}\n`), caller, callee]);
    return { secret, context };
  }

  /** The callee devices this call was sealed for (caller side, before the answer). */
  get deviceIds(): string[] {
    return [...this.peers.keys()];
  }

  /** The peer device the call is bound to (the caller's device; the callee device that answered). */
  get boundDevice(): string | undefined {
    return this.bound;
  }

  /** Binds the call to one peer device (the one that answered); others are forgotten. */
  bind(deviceId: string): void {
    if (!this.peers.has(deviceId)) throw new SealError('envelope_invalid', 'the answering device is not one the call was sealed for');
    this.bound = deviceId;
    for (const id of [...this.peers.keys()]) if (id !== deviceId) this.peers.delete(id);
  }

  /** Notes that message 0 from `deviceId` was consumed (the offer opened by `incomingCall`). */
  received(deviceId: string): void {
    this.recvNext.set(deviceId, (this.recvNext.get(deviceId) ?? 0) + 1);
  }

  /** Seals content for one peer device (the next sequence number for it). */
  sealFor(deviceId: string, content: EnvelopeContent, withBundle = false): Envelope {
    const bundle = this.peers.get(deviceId);
    if (!bundle) throw new ParleyError('internal_error', 'no keys for that device');
    const n = this.sendNext.get(deviceId) ?? 0;
    this.sendNext.set(deviceId, n + 1);
    const payload: SealedContent = withBundle ? { content, bundle: this.e2ee.identity.bundle } : { content };
    return seal(this.e2ee.identity, bundle, { callId: this.callId, role: this.role, n }, payload);
  }

  /**
   * Seals content for every peer device (the caller's offer and candidates
   * while ringing), or for the bound device only once answered.
   */
  sealForAll(content: EnvelopeContent, withBundle = false): Record<string, Envelope> {
    const out: Record<string, Envelope> = {};
    for (const id of this.bound ? [this.bound] : this.peers.keys()) out[id] = this.sealFor(id, content, withBundle);
    return out;
  }

  /**
   * Opens an envelope from the peer: from `fromDeviceId` when the server said
   * who sent it (the answer), else from the bound device.
   * @throws SealError with the security reason.
   */
  open(envelope: Envelope, fromDeviceId?: string): EnvelopeContent {
    const from = fromDeviceId ?? this.bound;
    if (!from) throw new SealError('envelope_invalid', 'a sealed envelope arrived before the call was answered');
    const bundle = this.peers.get(from);
    if (!bundle) throw new SealError('envelope_invalid', 'a sealed envelope comes from a device the call was not sealed for');
    const n = this.recvNext.get(from) ?? 0;
    const opened = open(this.e2ee.identity, envelope, {
      callId: this.callId,
      fromDeviceId: from,
      fromIdentityKey: bundle.ik,
      role: this.role === 'caller' ? 'callee' : 'caller',
      n,
    });
    this.recvNext.set(from, n + 1);
    return opened.content;
  }
}

/** Hash algorithms of `a=fingerprint` (RFC 8122 §5) accepted for the binding (SHA-1 is not). */
const FINGERPRINT_HASHES: Record<string, string> = { 'sha-256': 'sha256', 'sha-384': 'sha384', 'sha-512': 'sha512' };

/** The `a=fingerprint` lines of an SDP (RFC 8122 §5): algorithm (lower case) and value (upper-case hex, no colons). */
export function sdpFingerprints(sdp: string): { algorithm: string; value: string }[] {
  const out: { algorithm: string; value: string }[] = [];
  for (const m of sdp.matchAll(/^a=fingerprint:(\S+)\s+([0-9A-Fa-f:]+)\s*$/gm)) {
    out.push({ algorithm: m[1]!.toLowerCase(), value: m[2]!.replace(/:/g, '').toUpperCase() });
  }
  return out;
}

/**
 * Compares the DTLS peer certificate (DER) with the fingerprints of the SDP that
 * arrived sealed (RFC 8827 §6.5 / RFC 5763 §5: the certificate must match a
 * fingerprint from the signaling; here the signaling is end-to-end signed).
 * @returns `match`, `mismatch`, or `none` (no certificate, or no fingerprint with a supported hash).
 */
export function checkFingerprint(certificateDer: Uint8Array | undefined, sealedSdp: string): 'match' | 'mismatch' | 'none' {
  if (!certificateDer) return 'none';
  const fps = sdpFingerprints(sealedSdp).filter((f) => FINGERPRINT_HASHES[f.algorithm]);
  if (fps.length === 0) return 'none';
  const actual = (alg: string) => createHash(FINGERPRINT_HASHES[alg]!).update(certificateDer).digest('hex').toUpperCase();
  return fps.some((f) => actual(f.algorithm) === f.value) ? 'match' : 'mismatch';
}

/**
 * Sets up end-to-end security for a signed-in device: loads its identity from
 * the keychain (creating it on the device's first run), opens the trust store
 * in `dataDir`, and arranges for the key bundle to be published on every
 * connection. Call before `signaling.connect()`.
 * @throws KeychainUnavailableError (no keychain: no identity, no calls).
 */
export async function startEndToEnd(o: {
  secrets: import('../account').SecretStore;
  dataDir: string;
  session: { username: string; deviceId: string; serverUrl: string };
  signaling: SignalingClient;
  onCorrupt?: (why: string) => void;
}): Promise<EndToEnd> {
  const identity = await DeviceIdentity.loadOrCreate(o.secrets, identityOwner(o.session));
  const trust = await TrustStore.open(o.dataDir, o.onCorrupt);
  const e2ee = new EndToEnd(identity, trust, o.signaling);
  e2ee.seenInvites = SeenInvites.open(o.dataDir, o.onCorrupt);
  return e2ee;
}

/** Who a device identity belongs to (its keychain entry name): account, device and server host. */
export function identityOwner(s: { username: string; deviceId: string; serverUrl: string }): { username: string; deviceId: string; serverHost: string } {
  return { username: s.username, deviceId: s.deviceId, serverHost: new URL(s.serverUrl).host };
}
