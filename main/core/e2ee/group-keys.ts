import { EventEmitter } from 'node:events';
import { ParleyError } from '../../../common/errors';
import { SenderKeyContent, type Envelope, type KeyBundle } from '../../../common/protocol/envelope';
import {
  CipherSuite,
  SFrameReceiver,
  SFrameSender,
  decodeHeader,
  keySize,
  type SFrameDropReason,
  type SFrameStats,
} from '../../media/sframe';
import type { DeviceIdentity } from './identity';
import { b64u, hkdfSha256, random, unb64u } from './primitives';
import { open, peekSealed, seal } from './seal';

/** Signal's delay between distributing a new sender key and sending under it, ms. */
export const DEFAULT_KEY_GRACE_MS = 3000;
/** How long a replaced or departed sender's key still decrypts frames in flight, ms (after its grace). */
export const DEFAULT_KEY_RETAIN_MS = 10_000;
/**
 * How many ratchet steps ahead of a key it holds a receiver derives on its own
 * (one step per join since that key; more joins between two of its frames
 * than this and it waits for a sealed key instead).
 */
export const MAX_RATCHET_STEPS = 16;
/** HKDF-SHA256 info of the join ratchet: the next base key = HKDF(previous base key, no salt, this info). */
const RATCHET_INFO = 'parley sframe sender key ratchet';
/** How long a key from a device not (yet) known as a trusted member waits for the membership, ms. */
export const PENDING_KEY_MS = 30_000;
/** Most key messages held per unknown device, and in all, while waiting for the membership. */
const PENDING_PER_DEVICE = 4;
const PENDING_TOTAL = 64;

/** One device in the room, as the SFU signaling names it (`RoomParticipant` without the account id). */
export interface GroupDevice {
  username: string;
  deviceId: string;
}

/**
 * Where trusted key bundles come from: the same checks as a 1:1 call.
 * `EndToEnd.contactDevices` is the production implementation (bundle
 * signatures, the account key against its pin, device certificates, device
 * pins; a pending key change throws `key_changed`).
 */
export interface DeviceDirectory {
  contactDevices(
    username: string,
    onlineOnly: boolean,
  ): Promise<{ usable: KeyBundle[]; refused: string[]; newDevices: string[] }>;
}

/** Why a participant device gets no key from this device and its keys are refused. */
export type ExclusionReason =
  /** A pending key change of the account (as in 1:1: accept it after comparing safety numbers). */
  | 'key_changed'
  /** The server lists the device without a valid certificate by the account key (as in 1:1). */
  | 'device_uncertified'
  /** The server gave no key bundle for that device, or the check failed otherwise (message says why). */
  | 'untrusted';

/** A participant device left out of the key exchange. */
export interface Exclusion extends GroupDevice {
  reason: ExclusionReason;
  message: string;
}

/** A sealed key message to route to one participant device (the room's transport carries it). */
export interface OutgoingKeyMessage {
  to: GroupDevice;
  envelope: Envelope;
}

/** Why an incoming key message was not taken. */
export type KeyRejectReason =
  /** From a device that is not a trusted participant (now): see `exclusions`. */
  | 'not_member'
  /** Malformed, not for this room or device, bad signature, does not decrypt, or not a sender key. */
  | 'envelope_invalid'
  /** A sequence number not above the last one taken from that device (a replay or a reordering). */
  | 'replayed';

/** What `acceptKey` did with a key message. */
export type AcceptKeyResult =
  | { ok: true; kid: number; epoch: number }
  /** Held until the sender appears as a trusted participant (keys can overtake the membership notice). */
  | { ok: 'pending' }
  | { ok: false; reason: KeyRejectReason; message: string };

/** Counters for the call's statistics: frames by outcome, key messages by outcome. */
export interface GroupKeyStats {
  frames: SFrameStats;
  keysAccepted: number;
  keysRejected: Record<KeyRejectReason, number>;
  rotations: number;
  /** Keys of other senders this device derived by the join ratchet (no key message needed). */
  keysRatcheted: number;
}

/** The SFrame suites group calls may use: the AES-GCM ones with full 16-byte tags (the key message carries 4 or 5). */
export type GroupCipherSuite =
  typeof CipherSuite.AES_128_GCM_SHA256_128 | typeof CipherSuite.AES_256_GCM_SHA512_128;

/** Options of a {@link GroupKeys}. Times are ms. */
export interface GroupKeysOptions {
  /** The room (a UUID): bound into every sealed key message as its call id. */
  roomId: string;
  /** This device. */
  identity: DeviceIdentity;
  /** Trusted bundles of the other participants' devices (`EndToEnd`). */
  directory: DeviceDirectory;
  /** Delay before a new key is used for sending (default 3000, Signal's). */
  graceMs?: number;
  /** How long a superseded or departed key still decrypts, after its grace (default 10 000). */
  retainMs?: number;
  /** SFrame replay window, frames (default 128). */
  replayWindow?: number;
  /** SFrame cipher suite (default AES_128_GCM_SHA256_128, 0x0004). */
  suite?: GroupCipherSuite;
  /** The clock (Unix ms); tests pass their own. */
  now?: () => number;
}

interface OwnKey {
  kid: number;
  epoch: number;
  /** The base key. Secret. */
  key: Uint8Array;
  /** When it may be used for sending. */
  activeAt: number;
  /** Whether a frame was encrypted under it. */
  used: boolean;
  /** The devices it was sealed for. */
  sentTo: Set<string>;
}

interface Member extends GroupDevice {
  bundle: KeyBundle;
  /** Shown with the same warning as in 1:1 (`e2ee.newDevice`): a device added to its account recently. */
  newDevice: boolean;
  /** Sequence number of the last key message taken from it (-1: none). */
  lastN: number;
  /**
   * Its keys held for decryption: KID → epoch, the base key (secret: the join
   * ratchet derives the next from it) and, once superseded, when it is dropped.
   */
  keys: Map<number, { epoch: number; key: Uint8Array; dropAt: number | undefined }>;
}

/**
 * Group-call key management (issue 14 item 4, docs/SECURITY.md "Group calls"),
 * SFrame's "sender keys" scheme (RFC 9605 §5.1: the stream tells the sender,
 * the KID its key generation; no ratchet steps here, a new key instead) in
 * the design of Signal's group calls: each participant device has its own
 * random sender key (an SFrame base key, RFC 9605 §4.4.2) with its own KID,
 * and seals it for every other participant device over the 1:1 sealed channel
 * (X25519 + ML-KEM-768, signed; role `member`, the room id as call id). On
 * every membership change it makes a new key. On a leave (or a trust change)
 * the new key is random, sealed for the devices in the room now — never for
 * one that left — and used only `graceMs` later, so the others have it. On a
 * join alone it is the current key ratcheted forward (HKDF, one way: the
 * newcomer cannot go back to what was said before it came), used at once
 * and sealed to the newcomers only; the others, who hold the current key,
 * derive the next themselves when its first frame arrives (RingRTC's scheme
 * in Signal's group calls: a newcomer hears at once instead of after the
 * grace); keys of senders that moved on or
 * left still decrypt for `retainMs`, then are dropped. Participants are
 * trusted by the 1:1 rules ({@link DeviceDirectory}): an unverified device that
 * did not change is taken (flagged `newDevice` when recent, as in 1:1), a
 * changed key excludes every device of that account until the change is
 * accepted, exactly as it blocks a 1:1 call.
 *
 * Client wiring (the room client):
 * 1. `new GroupKeys({ roomId, identity: e2ee.identity, directory: e2ee })` on
 *    every join (a new instance per join; drop it on leave);
 * 2. `await onMembershipChanged(participants)` with the whole participant list
 *    on join — before producing, or the first frames' key causes a rotation —
 *    and on every `room.participant_joined` / `_left`;
 * 3. after each call to 2 (or `refreshTrust()`), send every
 *    `outgoingKeyMessages()` entry to its device through the room's
 *    sealed-message relay;
 * 4. `acceptKey(from, envelope)` for each key message that arrives;
 * 5. `encryptFrame(opus)` on every outgoing frame, `decryptFrame(frame,
 *    fromDeviceId)` on every incoming one (undefined: drop it; counted);
 * 6. `refreshTrust()` after the user accepts a key change (`EndToEnd`
 *    `acceptKeyChange`); show `excluded()` and `trustedDevices()` warnings.
 *
 * Never throws on what arrives from the network; never logs key material.
 * Events: `excluded` (Exclusion, once per device and reason), `rotated`
 * ({kid, epoch, activeAt}), `keyAccepted` ({from, kid, epoch}).
 */
export class GroupKeys extends EventEmitter<{
  excluded: [Exclusion];
  rotated: [{ kid: number; epoch: number; activeAt: number }];
  keyAccepted: [{ from: GroupDevice; kid: number; epoch: number }];
}> {
  readonly roomId: string;
  readonly suite: GroupCipherSuite;
  private readonly identity: DeviceIdentity;
  private readonly directory: DeviceDirectory;
  private readonly graceMs: number;
  private readonly retainMs: number;
  private readonly now: () => number;
  private readonly sender: SFrameSender;
  private readonly receiver: SFrameReceiver;
  /** This device's keys, oldest first (superseded ones are removed once the next is active). */
  private ownKeys: OwnKey[] = [];
  /** A random tag of this device in this room (0x100 … 0xffff): KID = tag · 2^16 + (epoch mod 2^16), 4 bytes. */
  private readonly kidTag: number;
  private epoch = 0;
  /** Trusted participant devices other than this one, by device id. */
  private members = new Map<string, Member>();
  /** Departed members whose keys still decrypt until dropped, by device id. */
  private departed = new Map<string, Member>();
  private readonly exclusions = new Map<string, Exclusion>();
  /** Next sealed-message sequence number per recipient device (never reset, so a device that stayed sees them rise). */
  private readonly sendN = new Map<string, number>();
  private outbox: OutgoingKeyMessage[] = [];
  private pending = new Map<string, { from: GroupDevice; envelope: Envelope; at: number }[]>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly counters = {
    keysAccepted: 0,
    keysRejected: { not_member: 0, envelope_invalid: 0, replayed: 0 },
    rotations: 0,
    keysRatcheted: 0,
  };

  constructor(o: GroupKeysOptions) {
    super();
    this.roomId = o.roomId;
    this.identity = o.identity;
    this.directory = o.directory;
    this.suite = o.suite ?? CipherSuite.AES_128_GCM_SHA256_128;
    this.graceMs = o.graceMs ?? DEFAULT_KEY_GRACE_MS;
    this.retainMs = o.retainMs ?? DEFAULT_KEY_RETAIN_MS;
    this.now = o.now ?? Date.now;
    this.sender = new SFrameSender(this.suite);
    this.receiver = new SFrameReceiver(this.suite, o.replayWindow);
    const r = random(2);
    // 0x100 … 0xffff, so every KID is exactly 4 bytes on the wire (the header does not tell the tag's size).
    this.kidTag = 0x100 + (((r[0]! << 8) | r[1]!) % 0xff00);
    // Own keys only encrypt and others' only decrypt (RFC 9605 §4.4.1: never both for one base key).
    // The first key is used at once: nobody has seen a frame under it, and there is nothing older to send with.
    this.ownKeys.push(this.newKey(this.now()));
  }

  // ---- membership ----------------------------------------------------------------

  /**
   * Takes the room's whole participant list (this device included; others in
   * any order). Checks the other devices by the 1:1 trust rules, then on any
   * change of the trusted set — a device joined or left — makes a new sender
   * key for the devices in the room now (used after the grace) and queues it
   * in `outgoingKeyMessages()`. A device that left gets nothing more; its keys
   * still decrypt frames in flight for `retainMs`. Calls are serialized.
   * This device may be in the list or not (it is ignored). Never throws on the
   * list's content; a failed trust check excludes that account's devices (`excluded`).
   */
  onMembershipChanged(participants: GroupDevice[]): Promise<void> {
    const run = this.queue.then(() => this.applyMembership(participants));
    this.queue = run.catch(() => {});
    return run;
  }

  /** Checks every participant again (after the user accepted a key change). */
  refreshTrust(): Promise<void> {
    const list: GroupDevice[] = [
      { username: this.identity.username, deviceId: this.identity.deviceId },
      ...[...this.members.values()].map(({ username, deviceId }) => ({ username, deviceId })),
      ...[...this.exclusions.values()].map(({ username, deviceId }) => ({ username, deviceId })),
    ];
    return this.onMembershipChanged(list);
  }

  private async applyMembership(participants: GroupDevice[]): Promise<void> {
    const others = new Map<string, GroupDevice>();
    for (const p of participants)
      if (p.deviceId !== this.identity.deviceId) others.set(p.deviceId, p);
    const trusted = await this.resolve(others);
    const now = this.now();
    this.prune(now);
    const removed = [...this.members.keys()].filter((id) => !trusted.has(id));
    const added = [...trusted.keys()].filter((id) => !this.members.has(id));
    for (const id of removed) {
      const m = this.members.get(id)!;
      // A device now refused (a changed key) loses its keys at once; one that left keeps them for frames in flight.
      const until = this.exclusions.has(id) ? now : now + this.retainMs;
      for (const k of m.keys.values()) k.dropAt = Math.min(k.dropAt ?? Infinity, until);
      this.departed.set(id, m);
      this.members.delete(id);
    }
    // Nothing still queued goes to a device that is gone.
    this.outbox = this.outbox.filter((m) => trusted.has(m.to.deviceId));
    for (const id of added) {
      const t = trusted.get(id)!;
      const back = this.departed.get(id);
      this.departed.delete(id);
      // A device that comes back starts a new key sequence (a new instance on its side); its old keys stay until dropped.
      this.members.set(id, { ...t, lastN: -1, keys: back?.keys ?? new Map() });
    }
    for (const [id, t] of trusted) this.members.get(id)!.newDevice = t.newDevice;
    if (removed.length > 0 || added.length > 0) {
      const newest = this.ownKeys.at(-1)!;
      const everyoneHadIt = [...newest.sentTo].every((id) => this.members.has(id));
      const stayersHaveIt = [...this.members.keys()].every((id) => added.includes(id) || newest.sentTo.has(id));
      if (removed.length === 0 && !newest.used && everyoneHadIt) {
        // Only joins, and no frame was ever sent under the newest key: it is as new to them as a fresh one.
        this.sendKeyTo(
          newest,
          added.map((id) => this.members.get(id)!),
        );
      } else if (removed.length === 0 && newest.activeAt <= now && stayersHaveIt) {
        // Only joins: the key in use, ratcheted forward, at once (the newcomers hear us now).
        this.ratchet(newest, now, added.map((id) => this.members.get(id)!));
      } else {
        this.rotate(now);
      }
    }
    this.prune(now);
    this.retryPending(now);
  }

  /** Checks the other participants' devices by the 1:1 rules; reports each exclusion once. */
  private async resolve(
    others: Map<string, GroupDevice>,
  ): Promise<
    Map<string, { username: string; deviceId: string; bundle: KeyBundle; newDevice: boolean }>
  > {
    const byUser = new Map<string, GroupDevice[]>();
    for (const d of others.values()) byUser.set(d.username, [...(byUser.get(d.username) ?? []), d]);
    const trusted = new Map<
      string,
      { username: string; deviceId: string; bundle: KeyBundle; newDevice: boolean }
    >();
    const excludedNow = new Set<string>();
    await Promise.all(
      [...byUser].map(async ([username, devices]) => {
        let listed: Awaited<ReturnType<DeviceDirectory['contactDevices']>>;
        try {
          listed = await this.directory.contactDevices(username, false);
        } catch (e) {
          const reason: ExclusionReason =
            e instanceof ParleyError && e.reason === 'key_changed' ? 'key_changed' : 'untrusted';
          const message =
            e instanceof Error ? e.message : `the keys of ${username} could not be checked`;
          for (const d of devices) this.exclude({ ...d, reason, message }, excludedNow);
          return;
        }
        for (const d of devices) {
          const bundle = listed.usable.find((b) => b.deviceId === d.deviceId);
          if (bundle) {
            trusted.set(d.deviceId, {
              ...d,
              bundle,
              newDevice: listed.newDevices.includes(d.deviceId),
            });
          } else if (listed.refused.includes(d.deviceId)) {
            this.exclude(
              {
                ...d,
                reason: 'device_uncertified',
                message: `device ${d.deviceId} of ${username} is not signed by ${username}'s account key: it gets no key and its audio is not played`,
              },
              excludedNow,
            );
          } else {
            this.exclude(
              {
                ...d,
                reason: 'untrusted',
                message: `the server lists no key bundle for device ${d.deviceId} of ${username}: it gets no key`,
              },
              excludedNow,
            );
          }
        }
      }),
    );
    for (const id of [...this.exclusions.keys()])
      if (!excludedNow.has(id)) this.exclusions.delete(id);
    return trusted;
  }

  private exclude(x: Exclusion, now: Set<string>): void {
    now.add(x.deviceId);
    const before = this.exclusions.get(x.deviceId);
    this.exclusions.set(x.deviceId, x);
    if (before?.reason !== x.reason) this.emit('excluded', x);
  }

  // ---- own keys ------------------------------------------------------------------

  private newKey(activeAt: number): OwnKey {
    const epoch = this.epoch++;
    return {
      kid: this.kidTag * 0x10000 + (epoch % 0x10000),
      epoch,
      key: random(keySize(this.suite)),
      activeAt,
      used: false,
      sentTo: new Set(),
    };
  }

  /** A new sender key for the devices in the room now, used for sending after the grace. */
  private rotate(now: number): void {
    const k = this.newKey(now + this.graceMs);
    this.ownKeys.push(k);
    this.counters.rotations++;
    this.sendKeyTo(k, this.members.values());
    this.emit('rotated', { kid: k.kid, epoch: k.epoch, activeAt: k.activeAt });
  }

  /**
   * The join ratchet: the next key is HKDF(`from`'s base key), in use at
   * once, sealed to `newcomers` only (the others derive it from `from`, which
   * they hold: {@link decryptFrame}).
   */
  private ratchet(from: OwnKey, now: number, newcomers: Member[]): void {
    const epoch = this.epoch++;
    const k: OwnKey = {
      kid: this.kidTag * 0x10000 + (epoch % 0x10000),
      epoch,
      key: ratchetKey(from.key),
      activeAt: now,
      used: false,
      sentTo: new Set(from.sentTo),
    };
    this.ownKeys.push(k);
    this.counters.rotations++;
    this.sendKeyTo(k, newcomers);
    this.emit('rotated', { kid: k.kid, epoch: k.epoch, activeAt: k.activeAt });
  }

  /** Seals `k` for one member. @returns false when its bundle's keys cannot be sealed to (then nothing is queued). */
  private sendKey(k: OwnKey, to: Member): boolean {
    const n = this.sendN.get(to.deviceId) ?? 0;
    const content: SenderKeyContent = {
      type: 'sender-key',
      kid: k.kid,
      epoch: k.epoch,
      suite: this.suite,
      key: b64u(k.key),
    };
    let envelope: Envelope;
    try {
      envelope = seal(
        this.identity,
        to.bundle,
        { callId: this.roomId, role: 'member', n },
        { content },
      );
    } catch {
      // A signed bundle whose X25519 or ML-KEM key is unusable (a low-order point, a malformed ML-KEM key).
      return false;
    }
    this.sendN.set(to.deviceId, n + 1);
    k.sentTo.add(to.deviceId);
    this.outbox.push({ to: { username: to.username, deviceId: to.deviceId }, envelope });
    return true;
  }

  /** Seals `k` for these members; a member that cannot be sealed to is excluded and its keys dropped. */
  private sendKeyTo(k: OwnKey, to: Iterable<Member>): void {
    for (const m of [...to]) {
      if (this.sendKey(k, m)) continue;
      this.members.delete(m.deviceId);
      for (const kid of m.keys.keys()) this.receiver.removeKey(m.deviceId, BigInt(kid));
      this.exclude(
        {
          username: m.username,
          deviceId: m.deviceId,
          reason: 'untrusted',
          message: `the key bundle of ${m.username}'s device ${m.deviceId} holds keys nothing can be sealed to: it gets no key`,
        },
        new Set(),
      );
    }
  }

  /**
   * The sender key in use now: the newest whose grace has passed. Older ones are forgotten.
   * @returns its KID and epoch (never the key itself).
   */
  localKeyForSending(): { kid: number; epoch: number } {
    const k = this.sendingKey(this.now());
    return { kid: k.kid, epoch: k.epoch };
  }

  private sendingKey(now: number): OwnKey {
    let i = this.ownKeys.length - 1;
    while (i > 0 && this.ownKeys[i]!.activeAt > now) i--;
    if (i > 0) this.ownKeys = this.ownKeys.slice(i);
    const k = this.ownKeys[0]!;
    this.sender.setKey(BigInt(k.kid), k.key);
    return k;
  }

  /**
   * Takes the key messages queued since the last call: one sealed envelope
   * per (key, recipient device). The room client relays each to `to.deviceId`.
   */
  outgoingKeyMessages(): OutgoingKeyMessage[] {
    const out = this.outbox;
    this.outbox = [];
    return out;
  }

  // ---- incoming keys -------------------------------------------------------------

  /**
   * Opens a sender-key message from a participant device (as the server
   * routed it): bound to this room and this device, signed by the identity
   * key the 1:1 trust rules accept for that device, with a sequence number
   * above the last one taken from it (gaps allowed: a newer key supersedes).
   * A message from a device not (or no longer) known as a participant waits
   * (`pending`) for `onMembershipChanged`, at most PENDING_KEY_MS, and is
   * taken only if that device is then a trusted participant; one from an
   * excluded device is refused.
   * @returns the KID taken, `pending`, or why it was refused (counted). Never throws.
   */
  acceptKey(from: GroupDevice, envelope: Envelope): AcceptKeyResult {
    const now = this.now();
    this.prune(now);
    const member = this.members.get(from.deviceId);
    if (!member || member.username !== from.username) {
      if (this.exclusions.has(from.deviceId) || from.deviceId === this.identity.deviceId) {
        return this.reject(
          'not_member',
          `${from.username}'s device ${from.deviceId} is not a trusted participant of this room`,
        );
      }
      // Unknown or departed: held, and taken only if the device is (again) a trusted participant in time.
      return this.hold(from, envelope, now);
    }
    let n: number;
    try {
      n = peekSealed(envelope).n;
    } catch {
      return this.reject('envelope_invalid', 'a key message is malformed');
    }
    if (n <= member.lastN)
      return this.reject(
        'replayed',
        `a key message from ${from.username} repeats or predates one already taken`,
      );
    let content: SenderKeyContent;
    try {
      const opened = open(this.identity, envelope, {
        callId: this.roomId,
        fromDeviceId: from.deviceId,
        fromIdentityKey: member.bundle.ik,
        role: 'member',
        n,
      });
      content = SenderKeyContent.parse(opened.content);
    } catch (e) {
      return this.reject(
        'envelope_invalid',
        e instanceof Error && e.name === 'SealError'
          ? e.message
          : 'a key message holds no sender key',
      );
    }
    const key = unb64u(content.key);
    if (content.suite !== this.suite || key.length !== keySize(this.suite)) {
      return this.reject(
        'envelope_invalid',
        `a sender key from ${from.username} is for another cipher suite`,
      );
    }
    member.lastN = n;
    if (member.keys.has(content.kid)) {
      // A KID names one key for good (RFC 9605 §4.4.1): a repeat neither replaces it nor resets its replay window.
      return { ok: true, kid: content.kid, epoch: member.keys.get(content.kid)!.epoch };
    }
    // Older keys of that sender still decrypt while it switches (its grace) and for retainMs after.
    for (const [kid, k] of member.keys) {
      if (kid !== content.kid)
        k.dropAt = Math.min(k.dropAt ?? Infinity, now + this.graceMs + this.retainMs);
    }
    member.keys.set(content.kid, { epoch: content.epoch, key, dropAt: undefined });
    this.receiver.addKey(from.deviceId, BigInt(content.kid), key);
    this.counters.keysAccepted++;
    this.emit('keyAccepted', {
      from: { username: from.username, deviceId: from.deviceId },
      kid: content.kid,
      epoch: content.epoch,
    });
    return { ok: true, kid: content.kid, epoch: content.epoch };
  }

  private hold(from: GroupDevice, envelope: Envelope, now: number): AcceptKeyResult {
    const total = [...this.pending.values()].reduce((a, l) => a + l.length, 0);
    const list = this.pending.get(from.deviceId) ?? [];
    if (list.length >= PENDING_PER_DEVICE || total >= PENDING_TOTAL) {
      return this.reject(
        'not_member',
        `too many key messages from devices that are not participants (${from.username})`,
      );
    }
    list.push({ from: { username: from.username, deviceId: from.deviceId }, envelope, at: now });
    this.pending.set(from.deviceId, list);
    return { ok: 'pending' };
  }

  private retryPending(now: number): void {
    for (const [id, list] of [...this.pending]) {
      if (this.members.has(id)) {
        this.pending.delete(id);
        for (const p of list) this.acceptKey(p.from, p.envelope);
      } else if (this.exclusions.has(id)) {
        this.pending.delete(id);
        for (const p of list)
          this.reject('not_member', `${p.from.username}'s device is not a trusted participant`);
      } else {
        const fresh = list.filter((p) => now - p.at < PENDING_KEY_MS);
        for (let i = fresh.length; i < list.length; i++)
          this.reject(
            'not_member',
            'a held key message expired: its sender never became a trusted participant',
          );
        if (fresh.length) this.pending.set(id, fresh);
        else this.pending.delete(id);
      }
    }
  }

  private reject(reason: KeyRejectReason, message: string): AcceptKeyResult {
    this.counters.keysRejected[reason]++;
    return { ok: false, reason, message };
  }

  /** Drops the keys whose time is up (superseded or departed senders). */
  private prune(now: number): void {
    for (const [id, m] of [...this.members, ...this.departed]) {
      for (const [kid, k] of [...m.keys]) {
        if (k.dropAt !== undefined && k.dropAt <= now) {
          m.keys.delete(kid);
          this.receiver.removeKey(id, BigInt(kid));
        }
      }
      if (this.departed.has(id) && m.keys.size === 0) this.departed.delete(id);
    }
  }

  // ---- frames ----------------------------------------------------------------------

  /**
   * Encrypts one outgoing Opus frame (1–1275 bytes) under the current sender
   * key (RFC 9605 §4.4.3): header (1 + 4 KID bytes + 0–8 CTR bytes) ‖
   * ciphertext ‖ 16-byte tag.
   */
  encryptFrame(frame: Uint8Array): Buffer {
    const k = this.sendingKey(this.now());
    k.used = true;
    return this.sender.encrypt(frame);
  }

  /**
   * Decrypts one incoming frame.
   * @param fromDeviceId the device whose producer carried it (the consumer's
   *   participant); when given, only that device's keys are tried, so a
   *   participant cannot pass its frames off as another's.
   * @returns the Opus frame, or undefined when it must be dropped (unknown KID —
   *   e.g. its key has not arrived yet —, failed authentication, replay; counted in `stats`). Never throws.
   */
  decryptFrame(frame: Uint8Array, fromDeviceId?: string): Buffer | undefined {
    const now = this.now();
    this.prune(now);
    if (fromDeviceId !== undefined) this.ratchetTo(frame, fromDeviceId, now);
    const r = this.receiver.decrypt(frame, fromDeviceId);
    return r.ok ? r.plaintext : undefined;
  }

  /**
   * A frame of member `deviceId` under a KID we lack, with the tag of one of
   * its keys we hold and an epoch 1 … MAX_RATCHET_STEPS ahead: derives the
   * key by the join ratchet, and keeps it if the frame authenticates under it
   * (else it is forgotten: the frame is dropped as `unknown_kid`).
   */
  private ratchetTo(frame: Uint8Array, deviceId: string, now: number): void {
    const m = this.members.get(deviceId);
    const h = decodeHeader(frame);
    if (!m || !h || h.kid > 0xffffffffn || this.receiver.hasKey(deviceId, h.kid)) return;
    const kid = Number(h.kid);
    let base: { kid: number; epoch: number; key: Uint8Array } | undefined;
    let steps = Infinity;
    for (const [held, k] of m.keys) {
      if (Math.floor(held / 0x10000) !== Math.floor(kid / 0x10000)) continue;
      const d = ((kid & 0xffff) - (held & 0xffff) + 0x10000) % 0x10000;
      if (d >= 1 && d <= MAX_RATCHET_STEPS && d < steps) {
        steps = d;
        base = { kid: held, epoch: k.epoch, key: k.key };
      }
    }
    if (!base) return;
    let key = base.key;
    for (let i = 0; i < steps; i++) key = ratchetKey(key);
    // Only a key the frame authenticates under is kept (a forged KID costs a derivation, nothing more).
    const probe = new SFrameReceiver(this.suite, 1);
    probe.addKey(deviceId, h.kid, key);
    if (!probe.decrypt(frame, deviceId).ok) return;
    this.receiver.addKey(deviceId, h.kid, key);
    for (const [held, k] of m.keys) if (held !== kid) k.dropAt = Math.min(k.dropAt ?? Infinity, now + this.graceMs + this.retainMs);
    m.keys.set(kid, { epoch: base.epoch + steps, key, dropAt: undefined });
    this.counters.keysRatcheted++;
  }

  /** The last drop reason is not kept; this is the per-reason count of frames and key messages. */
  stats(): GroupKeyStats {
    return {
      frames: { ...this.receiver.stats },
      keysAccepted: this.counters.keysAccepted,
      keysRejected: { ...this.counters.keysRejected },
      rotations: this.counters.rotations,
      keysRatcheted: this.counters.keysRatcheted,
    };
  }

  /** The participant devices left out of the key exchange now, with the reason (for the call screen's warnings). */
  excluded(): Exclusion[] {
    return [...this.exclusions.values()];
  }

  /** The trusted participant devices, with the 1:1 "new device" warning flag. */
  trustedDevices(): (GroupDevice & { newDevice: boolean })[] {
    return [...this.members.values()].map(({ username, deviceId, newDevice }) => ({
      username,
      deviceId,
      newDevice,
    }));
  }

  /** A `FrameTransform` for the room client: `encrypt` every outgoing frame, `decrypt` every incoming one. */
  frameTransform(): {
    encrypt(frame: Buffer): Buffer;
    decrypt(frame: Buffer, fromDeviceId?: string): Buffer | undefined;
  } {
    return {
      encrypt: (f) => this.encryptFrame(f),
      decrypt: (f, from) => this.decryptFrame(f, from),
    };
  }
}

export type { SFrameDropReason };

/** One step of the join ratchet: the next base key from `key` (HKDF-SHA256, RFC 5869; one way). */
export function ratchetKey(key: Uint8Array): Uint8Array {
  return hkdfSha256(key, new Uint8Array(0), RATCHET_INFO, key.length);
}
