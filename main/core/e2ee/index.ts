import { EventEmitter } from 'node:events';
import { ParleyError } from '../../../common/errors';
import type { AccountDevicesStatus, DeviceAlarm, SafetyNumberResult, TrustInfo } from '../../../common/protocol/control';
import type { Envelope, EnvelopeContent, KeyBundle, SealedContent } from '../../../common/protocol/envelope';
import { LINK_TTL_MS, type KeysGetResult, type SignalMethod, type SignalParams, type SignalResult, type SignalNotificationParams } from '../../../common/protocol/signaling';
import type { SecretStore } from '../account';
import type { SignalingClient } from '../signaling-client';
import type { SrtpKeyBinding } from '../../media/srtp-binding';
import { AccountDevices } from './account-devices';
import {
  AccountIdentity,
  certificateValid,
  checkLinkReply,
  checkLinkRequest,
  linkSecrets,
  makeLinkReply,
  makeLinkRequest,
  newLinkCode,
  verifyAccountKey,
} from './account-key';
import { DeviceIdentity, verifyBundle } from './identity';
import { b64u, unb64u, x25519, x25519Generate } from './primitives';
import { SeenInvites } from './seen-invites';
import { SealError, open, peekSealed, seal } from './seal';
import { TrustStore, keyChangedError, safetyNumber, type KeyChange, type SafetySide } from './trust';

export { DeviceIdentity, verifyBundle } from './identity';
export { AccountIdentity, certificateValid, verifyAccountKey, newLinkCode, linkSecrets } from './account-key';
export { AccountDevices } from './account-devices';
export { SealError } from './seal';
export { SeenInvites, INVITE_FRESHNESS_MS } from './seen-invites';
export { TrustStore, safetyNumber, safetyHalf, type KeyChange } from './trust';
export { GroupKeys, DEFAULT_KEY_GRACE_MS, DEFAULT_KEY_RETAIN_MS, type DeviceDirectory, type Exclusion, type GroupDevice, type OutgoingKeyMessage, type AcceptKeyResult } from './group-keys';

/** How long a new device waits for the linking device's answer, ms. */
export const LINK_REPLY_TIMEOUT_MS = 25_000;

/**
 * This device's own account: its approved-devices list and, on the device
 * that holds it, the account key (docs/SECURITY.md, "Account key and device
 * certificates").
 */
export interface OwnAccount {
  devices: AccountDevices;
  /** The account key, when this device holds it (the account's first device, or after a reset). */
  holder: AccountIdentity | undefined;
  /** Where a new account key goes (the OS keychain) and under which server host. */
  secrets: SecretStore;
  serverHost: string;
}

/** A contact's device the server listed but this device refused to treat as theirs. */
export interface DeviceRefusal {
  username: string;
  deviceId: string;
  reason: 'device_uncertified';
  message: string;
}

/** A contact's devices as checked against their pinned account key and device pins. */
export interface ContactDevices {
  /** The bundles of the devices to seal for (validly certified, or all of an account without an account key). */
  usable: KeyBundle[];
  /** Devices listed without a valid certificate by the pinned account key: never rung. */
  refused: string[];
  /** Usable devices added to the account recently (`TrustStore.isNewDevice`). */
  newDevices: string[];
}

type Request = <M extends SignalMethod>(method: M, params: SignalParams<M>) => Promise<SignalResult<M>>;

/**
 * End-to-end security of one signed-in device (docs/SECURITY.md): its
 * identity, its account's key and approved devices, the trust store of its
 * contacts' keys, key publication, device linking, and the per-call sealing
 * state.
 *
 * Core API for the desktop trust screens (all methods throw ParleyError with a
 * stable reason):
 * - `safetyNumber(username)` → `{username, safetyNumber, digits, verified}`;
 *   `key_changed` while a change waits; `unknown_user`, `not_contact`.
 * - `verify(username)` → TrustInfo (marks verified); `key_changed`, `not_found`.
 * - `acceptKeyChange(username)` → TrustInfo; `not_found`.
 * - `trustInfo(username)` → TrustInfo; `not_found`.
 * - `accountDevices()` → AccountDevicesStatus (reviews the server's list now).
 * - `startLink()` → `{code, expiresAt}` (holder only: `forbidden`); `link(code)` on the new device.
 * - events `keyChange` (KeyChange), `deviceRefused` (DeviceRefusal: a contact's
 *   device without a valid certificate), `alarm` (DeviceAlarm: a device on my
 *   own account I did not approve), `linked` (a device this one linked).
 */
export class EndToEnd extends EventEmitter<{
  keyChange: [KeyChange];
  deviceRefused: [DeviceRefusal];
  alarm: [DeviceAlarm];
  linked: [{ deviceId: string; identityKey: string }];
}> {
  /** The invites already opened (persisted; set by {@link startEndToEnd}). */
  seenInvites: SeenInvites | undefined;
  /** The link this device offers now (holder), until used or expired. */
  private openLink: { linkId: string; macKey: Uint8Array; expiresAt: number } | undefined;
  /** Refusals already reported (username, device, key): each is told once per run. */
  private readonly reported = new Set<string>();
  private reviewTimer: NodeJS.Timeout | undefined;

  /**
   * @param own this device's account key and approved-devices list; without it
   *   (tools, tests of older behaviour) the device publishes its bundle alone,
   *   as before account keys.
   */
  constructor(
    readonly identity: DeviceIdentity,
    readonly trust: TrustStore,
    private readonly signaling: SignalingClient,
    private readonly own?: OwnAccount,
  ) {
    super();
    trust.on('keyChange', (c) => this.emit('keyChange', c));
    own?.devices.on('alarm', (a) => this.emit('alarm', a));
    // Publish the keys on every (re)connection, before the device counts as online.
    signaling.afterHello(async (request) => {
      await this.publishKeys(request);
    });
    signaling.on('link.request', (p) => void this.onLinkRequest(p).catch(() => {}));
  }

  /**
   * Publishes this device's bundle, with the account key (holder) and this
   * device's certificate when it has them, then reviews the server's list of
   * this account's devices. The account's first device (the server has no
   * account key, and this device never pinned one) creates the account key.
   */
  private async publishKeys(request: Request): Promise<void> {
    const bundle = this.identity.bundle;
    if (!this.own) {
      await request('keys.publish', { bundle });
      return;
    }
    const own = this.own;
    const mine = await request('keys.get', { username: this.identity.username });
    if (!own.holder && !own.devices.accountKey && !mine.accountKey) {
      own.holder = await AccountIdentity.create(own.secrets, { username: this.identity.username, serverHost: own.serverHost });
    }
    const holder = own.holder;
    if (holder) {
      let cert = own.devices.certificate;
      if (!cert || !certificateValid(cert, holder.publicKey, bundle) || own.devices.accountKey?.key !== holder.publicKey) {
        cert = holder.certify(bundle);
        own.devices.pin(holder.record, cert, true);
      }
      // Another account key on the server (a reset from another device, or a lying server) is not
      // overwritten from here: this device keeps its own and raises an alarm (review below).
      const replaced = !!mine.accountKey && mine.accountKey.key !== holder.publicKey;
      await request('keys.publish', replaced ? { bundle, certificate: cert } : { bundle, accountKey: holder.record, certificate: cert });
    } else {
      const cert = own.devices.certificate;
      const ak = own.devices.accountKey;
      await request('keys.publish', ak && cert && certificateValid(cert, ak.key, bundle) ? { bundle, certificate: cert } : { bundle });
    }
    own.devices.review(mine, { deviceId: this.identity.deviceId });
  }

  /** This device's account key and certificate, for the sealed offer (nothing when it has none). */
  private credentials(): Pick<SealedContent, 'accountKey' | 'certificate'> {
    const ak = this.own?.devices.accountKey;
    const cert = this.own?.devices.certificate;
    return ak && cert && certificateValid(cert, ak.key, this.identity.bundle) ? { accountKey: ak, certificate: cert } : {};
  }

  /**
   * The devices of a contact as the server lists them, checked: each bundle's
   * signature; the contact's account key against its pin (first use pins it);
   * each device's certificate by the pinned account key — a device without a
   * valid one is refused (never rung; `deviceRefused` once) — and the device
   * pins.
   * @param onlineOnly only the devices online now.
   * @throws ParleyError `key_changed` when a pinned key differs (or a verified
   *   contact of an account without account key shows a new device);
   *   `security` for a bad bundle or account key, an account key that is gone,
   *   or (with `onlineOnly`) when every online device was refused; the
   *   server's `unknown_user`, `not_contact`.
   */
  async contactDevices(username: string, onlineOnly: boolean): Promise<ContactDevices> {
    const listed = await this.signaling.request('keys.get', { username });
    if (username === this.identity.username) {
      // My own account (the server refuses a call to oneself): bundles checked, nothing pinned.
      const usable = listed.devices.filter((d) => !onlineOnly || d.online).map((d) => verifyBundle(d.bundle, { username, deviceId: d.deviceId }));
      return { usable, refused: [], newDevices: [] };
    }
    const pinned = this.trust.accountKeyOf(username);
    if (listed.accountKey) {
      this.trust.checkAccountKey(username, verifyAccountKey(listed.accountKey, username).key);
    } else if (pinned && listed.devices.length > 0) {
      throw new ParleyError('security', `the server gave no account key for ${username}, though this device knows theirs: their devices cannot be checked, so none is called`);
    }
    const ak = this.trust.accountKeyOf(username);
    const out: ContactDevices = { usable: [], refused: [], newDevices: [] };
    const refusedOnline: string[] = [];
    for (const d of listed.devices) {
      const bundle = verifyBundle(d.bundle, { username, deviceId: d.deviceId });
      if (ak) {
        if (!certificateValid(d.certificate, ak, bundle)) {
          // A pinned device showing another key is still a key change; an unknown one is never pinned.
          if (this.trust.isPinned(username, bundle.deviceId)) this.trust.check(username, bundle.deviceId, bundle.ik);
          out.refused.push(bundle.deviceId);
          if (d.online) refusedOnline.push(bundle.deviceId);
          this.refuse(username, bundle.deviceId, bundle.ik);
          continue;
        }
        this.trust.check(username, bundle.deviceId, bundle.ik, true);
      } else {
        this.trust.check(username, bundle.deviceId, bundle.ik);
      }
      if (this.trust.isNewDevice(username, bundle.deviceId)) out.newDevices.push(bundle.deviceId);
      if (!onlineOnly || d.online) out.usable.push(bundle);
    }
    if (this.trust.blocked(username)) throw keyChangedError(username);
    if (onlineOnly && out.usable.length === 0 && refusedOnline.length > 0) {
      throw new ParleyError(
        'security',
        `none of ${username}'s online devices is signed by ${username}'s account key (the server lists ${refusedOnline.length} that is not): not calling them`,
      );
    }
    return out;
  }

  /**
   * The verified, trusted key bundles of `username`'s devices (see `contactDevices`).
   * @throws as `contactDevices`.
   */
  async devicesOf(username: string, onlineOnly: boolean): Promise<KeyBundle[]> {
    return (await this.contactDevices(username, onlineOnly)).usable;
  }

  /** Whether that device of a contact was added to their account recently (call status `e2ee.newDevice`). */
  isNewDevice(username: string, deviceId: string): boolean {
    return this.trust.isNewDevice(username, deviceId);
  }

  private refuse(username: string, deviceId: string, ik: string): void {
    const key = `${username}\n${deviceId}\n${ik}`;
    if (this.reported.has(key)) return;
    this.reported.add(key);
    this.emit('deviceRefused', {
      username,
      deviceId,
      reason: 'device_uncertified',
      message: `the server lists device ${deviceId} for ${username}, but it is not signed by ${username}'s account key: it is not called and its calls do not ring. Tell ${username} (their own devices raise an alarm).`,
    });
  }

  /**
   * The safety number with `username`: for each account its account key (its
   * device keys for an account without one); mine is the one this device
   * pinned, theirs the one the server shows, checked against the pin. The same
   * 60 digits on both ends exactly when both see the same keys.
   * @throws ParleyError `invalid_state` on a device that is not linked yet; as `contactDevices`.
   */
  async safetyNumber(username: string): Promise<SafetyNumberResult> {
    if (username === this.identity.username) throw new ParleyError('invalid_params', 'a safety number is between you and a contact');
    const theirs = await this.contactDevices(username, false);
    const theirKey = this.trust.accountKeyOf(username);
    if (!theirKey && theirs.usable.length === 0) throw new ParleyError('not_found', `${username} has no device with security keys yet`);
    const their: SafetySide = { username, identityKeys: theirs.usable.map((b) => b.ik), ...(theirKey ? { accountKey: theirKey } : {}) };
    let mine: SafetySide;
    const myKey = this.own?.devices.accountKey?.key;
    if (myKey) {
      mine = { username: this.identity.username, accountKey: myKey, identityKeys: [] };
    } else {
      const listed = await this.signaling.request('keys.get', { username: this.identity.username });
      if (listed.accountKey) {
        throw new ParleyError('invalid_state', 'this device is not linked to your account yet ("parley link CODE"); compare safety numbers on a linked device');
      }
      const keys = listed.devices.map((d) => verifyBundle(d.bundle, { username: this.identity.username, deviceId: d.deviceId }));
      if (!keys.some((b) => b.deviceId === this.identity.deviceId && b.ik === this.identity.identityKey)) {
        throw new ParleyError('security', "the server's list of your own devices does not hold this device's key");
      }
      mine = { username: this.identity.username, identityKeys: keys.map((b) => b.ik) };
    }
    const n = safetyNumber(mine, their);
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

  // ---- my own account's devices ------------------------------------------------

  /**
   * Reviews the server's list of this account's devices now against the
   * approved list (alarms are raised as `alarm`) and returns the status.
   * @throws ParleyError `unavailable` offline; `method_not_found` without an own-account store.
   */
  async accountDevices(): Promise<AccountDevicesStatus> {
    const own = this.requireOwn();
    const listed: KeysGetResult = await this.signaling.request('keys.get', { username: this.identity.username });
    own.devices.review(listed, { deviceId: this.identity.deviceId });
    return own.devices.status(!!own.holder);
  }

  /**
   * Reviews this account's devices every `intervalMs` (default 10 min) while
   * online, besides at each connection, so an added device raises its alarm
   * without the user looking. Failures (offline) wait for the next turn.
   */
  startDeviceReview(intervalMs = 10 * 60_000): void {
    this.stopDeviceReview();
    if (!this.own) return;
    this.reviewTimer = setInterval(() => {
      if (this.signaling.state === 'online') void this.accountDevices().catch(() => {});
    }, intervalMs);
    this.reviewTimer.unref();
  }

  /** Stops `startDeviceReview`. */
  stopDeviceReview(): void {
    clearInterval(this.reviewTimer);
    this.reviewTimer = undefined;
  }

  /**
   * Offers a link on the device that holds the account key: a one-time code
   * (100 bits, shown as 4 groups of 5) and a rendezvous on the server under
   * the id derived from it. The first link request that carries a MAC made with
   * the code is answered with the account key and a certificate for the new
   * device; any request closes the offer (one try per code).
   * @throws ParleyError `forbidden` when this device does not hold the account key; `unavailable` offline.
   */
  async startLink(): Promise<{ code: string; expiresAt: number }> {
    const own = this.requireOwn();
    if (!own.holder) {
      throw new ParleyError('forbidden', "this device does not hold your account key: link new devices from your account's first device");
    }
    const code = newLinkCode();
    const secrets = linkSecrets(code);
    await this.signaling.request('link.open', { linkId: secrets.linkId });
    const expiresAt = Date.now() + LINK_TTL_MS;
    this.openLink = { ...secrets, expiresAt };
    return { code, expiresAt };
  }

  private async onLinkRequest(p: SignalNotificationParams<'link.request'>): Promise<void> {
    const link = this.openLink;
    const holder = this.own?.holder;
    if (!link || !holder || link.linkId !== p.linkId) return;
    this.openLink = undefined; // one try per code
    if (Date.now() > link.expiresAt) return;
    const me = { username: this.identity.username, deviceId: p.deviceId };
    let bundle: KeyBundle;
    try {
      bundle = checkLinkRequest(link, p.request, me);
      verifyBundle(bundle, me);
    } catch {
      return; // not made with the code: nothing is signed
    }
    const certificate = holder.certify(bundle);
    this.own!.devices.approve(bundle.deviceId, bundle.ik);
    await this.signaling.request('link.reply', { linkId: link.linkId, deviceId: bundle.deviceId, reply: makeLinkReply(link, holder.record, certificate) });
    this.emit('linked', { deviceId: bundle.deviceId, identityKey: bundle.ik });
  }

  /**
   * Links this (new) device with the code shown on the device that holds the
   * account key: sends this device's bundle MAC-ed with the code, checks the
   * answer (MAC, account key, certificate for exactly this device), pins the
   * account key and publishes the certificate.
   * @throws ParleyError `invalid_params` (malformed code), `not_found` (no open
   *   link for it), `security` (an answer not made with the code), `unavailable`
   *   (offline, or no answer within LINK_REPLY_TIMEOUT_MS, 25 s: under the control socket's 30 s request timeout).
   */
  async link(code: string): Promise<{ accountKey: string; deviceId: string }> {
    const own = this.requireOwn();
    if (own.holder) throw new ParleyError('invalid_state', 'this device holds your account key: it links other devices ("parley devices link"), it is not linked itself');
    const secrets = linkSecrets(code);
    const bundle = this.identity.bundle;
    const { linkId, request } = makeLinkRequest(code, bundle);
    let stop = (): void => {};
    const replied = new Promise<SignalNotificationParams<'link.reply'>>((resolve, reject) => {
      const onReply = (p: SignalNotificationParams<'link.reply'>) => {
        if (p.linkId !== linkId) return;
        stop();
        resolve(p);
      };
      const timer = setTimeout(() => {
        stop();
        reject(new ParleyError('unavailable', 'the device showing the code did not answer; show a new code and try again'));
      }, LINK_REPLY_TIMEOUT_MS);
      stop = () => {
        clearTimeout(timer);
        this.signaling.off('link.reply', onReply);
      };
      this.signaling.on('link.reply', onReply);
    });
    try {
      await this.signaling.request('link.request', { linkId, request });
    } catch (e) {
      stop();
      replied.catch(() => {});
      throw e;
    }
    const { reply } = await replied;
    const { accountKey, certificate } = checkLinkReply(secrets, reply, bundle);
    own.devices.pin(accountKey, certificate);
    await this.signaling.request('keys.publish', { bundle, certificate });
    return { accountKey: accountKey.key, deviceId: this.identity.deviceId };
  }

  /**
   * Recovery when no device holds the account key any more: a new account key
   * on this device (in its keychain), this device certified by it and
   * published. Contacts see an account-key change (blocking until accepted);
   * the account's other devices raise an alarm and must be linked again.
   * @throws KeychainUnavailableError; ParleyError `unavailable` offline.
   */
  async resetAccountKey(): Promise<{ accountKey: string }> {
    const own = this.requireOwn();
    const holder = await AccountIdentity.create(own.secrets, { username: this.identity.username, serverHost: own.serverHost });
    own.holder = holder;
    const certificate = holder.certify(this.identity.bundle);
    own.devices.pin(holder.record, certificate, true);
    await this.signaling.request('keys.publish', { bundle: this.identity.bundle, accountKey: holder.record, certificate });
    return { accountKey: holder.publicKey };
  }

  private requireOwn(): OwnAccount {
    if (!this.own) throw new ParleyError('method_not_found', 'this client keeps no account key state');
    return this.own;
  }

  // ---- calls -------------------------------------------------------------------

  /** Sealing state for a call this device places, towards the callee's devices. */
  outgoingCall(callId: string, callee: string, devices: KeyBundle[]): SealedCall {
    return new SealedCall(this, callId, 'caller', callee, devices);
  }

  /** What goes with this device's bundle in a sealed offer: the bundle, the account key and this device's certificate. */
  offerCredentials(): Pick<SealedContent, 'bundle' | 'accountKey' | 'certificate'> {
    return { bundle: this.identity.bundle, ...this.credentials() };
  }

  /**
   * Opens an incoming invite: the sealed offer from the caller's device. Checks
   * the caller device's bundle inside (signed by the key that signed the
   * envelope, naming that account and device) and its certificate by the
   * caller's account key (pinned, or pinned now on first use) against the
   * trust store.
   * @returns the call's sealing state, the offer SDP, and whether the caller's device is new to their account.
   * @throws SealError (security reason; `device_uncertified` for a device of an
   *   account with an account key that it did not sign) for anything that does
   *   not verify; ParleyError `key_changed` when the caller's keys are not the pinned ones.
   */
  incomingCall(
    callId: string,
    caller: { username: string; deviceId: string },
    envelope: Envelope,
  ): { call: SealedCall; offer: string; newDevice: boolean } {
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
    let ak = this.trust.accountKeyOf(caller.username);
    if (opened.accountKey) {
      let key: string;
      try {
        key = verifyAccountKey(opened.accountKey, caller.username).key;
      } catch {
        throw new SealError('device_uncertified', `the account key in ${caller.username}'s invite does not verify`);
      }
      if (this.trust.checkAccountKey(caller.username, key) === 'blocked') throw keyChangedError(caller.username);
      ak = this.trust.accountKeyOf(caller.username);
    }
    let certified = false;
    if (ak) {
      if (!certificateValid(opened.certificate, ak, bundle)) {
        this.refuse(caller.username, caller.deviceId, bundle.ik);
        throw new SealError(
          'device_uncertified',
          `the calling device ${caller.deviceId} is not signed by ${caller.username}'s account key: a device ${caller.username} did not link (the call does not ring)`,
        );
      }
      certified = true;
    }
    if (this.trust.check(caller.username, caller.deviceId, bundle.ik, certified) === 'blocked') throw keyChangedError(caller.username);
    // A recorded invite delivered again (even after a restart) never rings twice.
    this.seenInvites?.admit(callId, opened.content.sentAt);
    const call = new SealedCall(this, callId, 'callee', caller.username, [bundle]);
    call.bind(caller.deviceId);
    call.received(caller.deviceId);
    call.acceptMediaShare(opened.content.mediaShare);
    return { call, offer: opened.content.sdp, newDevice: this.trust.isNewDevice(caller.username, caller.deviceId) };
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
    const payload: SealedContent = withBundle ? { content, ...this.e2ee.offerCredentials() } : { content };
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

// The DTLS certificate check runs in the media thread too (it starts sending once it holds): main/media/fingerprint.ts.
export { checkFingerprint, sdpFingerprints } from '../../media/fingerprint';

/**
 * Sets up end-to-end security for a signed-in device: loads its identity from
 * the keychain (creating it on the device's first run) and the account key if
 * this device holds it, opens the trust store and the approved-devices list in
 * `dataDir`, and arranges for the keys to be published on every connection
 * (the account's first device creates the account key then). Call before
 * `signaling.connect()`.
 * @throws KeychainUnavailableError (no keychain: no identity, no calls).
 */
export async function startEndToEnd(o: {
  secrets: SecretStore;
  dataDir: string;
  session: { username: string; deviceId: string; serverUrl: string };
  signaling: SignalingClient;
  onCorrupt?: (why: string) => void;
}): Promise<EndToEnd> {
  const owner = identityOwner(o.session);
  const identity = await DeviceIdentity.loadOrCreate(o.secrets, owner);
  const trust = await TrustStore.open(o.dataDir, o.onCorrupt);
  const devices = await AccountDevices.open(o.dataDir, o.onCorrupt);
  // The keychain may hold this account's key for another profile of the same OS user: use it only if this profile made it.
  const stored = await AccountIdentity.load(o.secrets, owner);
  const own: OwnAccount = {
    devices,
    holder: stored && devices.holds(stored.publicKey) ? stored : undefined,
    secrets: o.secrets,
    serverHost: owner.serverHost,
  };
  const e2ee = new EndToEnd(identity, trust, o.signaling, own);
  e2ee.seenInvites = SeenInvites.open(o.dataDir, o.onCorrupt);
  return e2ee;
}

/** Who a device identity belongs to (its keychain entry name): account, device and server host. */
export function identityOwner(s: { username: string; deviceId: string; serverUrl: string }): { username: string; deviceId: string; serverHost: string } {
  return { username: s.username, deviceId: s.deviceId, serverHost: new URL(s.serverUrl).host };
}
