/**
 * Group-call keys end to end, in process: real device identities (Ed25519,
 * X25519, ML-KEM-768), real sealing, real trust stores and the 1:1 trust rules
 * (EndToEnd.contactDevices) over a directory that plays the server's
 * `keys.get`; real SFrame on the frames. The "SFU" is a list that forwards
 * every frame to every other participant (and can hand frames to anyone, as a
 * malicious one would). A clock in the test drives the grace and retention.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { bundleSigningText, type Envelope } from '../../common/protocol/envelope';
import type { KeysGetResult } from '../../common/protocol/signaling';
import { AccountIdentity, DeviceIdentity, EndToEnd, TrustStore } from '../../main/core/e2ee';
import {
  GroupKeys,
  PENDING_KEY_MS,
  type Exclusion,
  type GroupDevice,
} from '../../main/core/e2ee/group-keys';
import { b64u, ed25519Generate, ed25519Sign } from '../../main/core/e2ee/primitives';
import { seal } from '../../main/core/e2ee/seal';
import type { SignalingClient } from '../../main/core/signaling-client';
import { decodeHeader } from '../../main/media/sframe';
import { makeTempDir, removeTempDir } from '../harness/process';

const dirs: string[] = [];
afterAll(() => dirs.forEach(removeTempDir));

const GRACE = 3000;
const RETAIN = 10_000;

/** The server's key directory: what `keys.get` returns for each account. */
class Directory {
  readonly accounts = new Map<string, KeysGetResult>();
  publish(identity: DeviceIdentity, account?: AccountIdentity): void {
    const a = this.accounts.get(identity.username) ?? { devices: [] };
    a.devices = a.devices.filter((d) => d.deviceId !== identity.deviceId);
    a.devices.push({
      deviceId: identity.deviceId,
      online: true,
      bundle: identity.bundle,
      ...(account ? { certificate: account.certify(identity.bundle) } : {}),
    });
    if (account) a.accountKey = account.record;
    this.accounts.set(identity.username, a);
  }
  /** A stand-in for SignalingClient with only what EndToEnd uses: `keys.get` answered from here. */
  signaling(): SignalingClient {
    return {
      afterHello: () => {},
      on: () => {},
      request: async (method: string, params: { username: string }) => {
        if (method !== 'keys.get') throw new Error(`unexpected ${method}`);
        return structuredClone(this.accounts.get(params.username) ?? { devices: [] });
      },
    } as unknown as SignalingClient;
  }
}

class Clock {
  t = 1_700_000_000_000;
  readonly now = () => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

interface Device {
  identity: DeviceIdentity;
  e2ee: EndToEnd;
  keys: GroupKeys;
  excluded: Exclusion[];
  me: GroupDevice;
}

/** One room: participants, the key relay (server) and the frame relay (SFU). */
class Room {
  readonly id = randomUUID();
  readonly devices = new Map<string, Device>();
  readonly directory = new Directory();
  readonly clock = new Clock();
  /** Every key message the server relayed, by recipient device. */
  readonly relayed = new Map<string, Envelope[]>();

  async device(
    username: string,
    identity = DeviceIdentity.ephemeral(username, randomUUID()),
    account?: AccountIdentity,
  ): Promise<Device> {
    this.directory.publish(identity, account);
    const dir = makeTempDir('group-keys');
    dirs.push(dir);
    const e2ee = new EndToEnd(identity, await TrustStore.open(dir), this.directory.signaling());
    return this.instance(identity, e2ee);
  }

  /** A fresh GroupKeys for a device (a join). */
  instance(identity: DeviceIdentity, e2ee: EndToEnd): Device {
    const keys = new GroupKeys({
      roomId: this.id,
      identity,
      directory: e2ee,
      graceMs: GRACE,
      retainMs: RETAIN,
      now: this.clock.now,
    });
    const d: Device = {
      identity,
      e2ee,
      keys,
      excluded: [],
      me: { username: identity.username, deviceId: identity.deviceId },
    };
    keys.on('excluded', (x) => d.excluded.push(x));
    return d;
  }

  participants(): GroupDevice[] {
    return [...this.devices.values()].map((d) => d.me);
  }

  /** Tells every participant the membership (as `room.participant_joined/left` would). */
  async announce(): Promise<void> {
    const list = this.participants();
    await Promise.all([...this.devices.values()].map((d) => d.keys.onMembershipChanged(list)));
  }

  async join(d: Device): Promise<void> {
    this.devices.set(d.identity.deviceId, d);
    await this.announce();
  }

  async leave(d: Device): Promise<void> {
    this.devices.delete(d.identity.deviceId);
    await this.announce();
  }

  /** Relays every queued key message to its device (the server's sealed-message relay). */
  deliverKeys(): void {
    for (const d of [...this.devices.values()]) {
      for (const m of d.keys.outgoingKeyMessages()) {
        this.relayed.set(m.to.deviceId, [...(this.relayed.get(m.to.deviceId) ?? []), m.envelope]);
        const to = this.devices.get(m.to.deviceId);
        if (to) expect(to.keys.acceptKey(d.me, m.envelope)).toMatchObject({ ok: true });
      }
    }
  }

  /** What each other participant hears of `from` saying `text` (undefined: dropped). */
  say(
    from: Device,
    text: string,
    listeners = [...this.devices.values()],
  ): Map<string, string | undefined> {
    const wire = from.keys.encryptFrame(Buffer.from(text));
    expect(wire.includes(Buffer.from(text))).toBe(false); // the SFU sees only ciphertext
    const heard = new Map<string, string | undefined>();
    for (const to of listeners) {
      if (to === from) continue;
      heard.set(
        to.identity.username + ':' + to.identity.deviceId.slice(0, 4),
        to.keys.decryptFrame(wire, from.identity.deviceId)?.toString(),
      );
    }
    return heard;
  }
}

/** New devices of these accounts, typed as a tuple. */
async function devices<N extends string[]>(
  room: Room,
  ...names: N
): Promise<{ [K in keyof N]: Device }> {
  const out: Device[] = [];
  for (const n of names) out.push(await room.device(n));
  return out as { [K in keyof N]: Device };
}

const all = (heard: Map<string, string | undefined>) => [...new Set(heard.values())];

describe('group keys: in-process rooms of real devices', () => {
  it('two participants: each hears the other once the keys are relayed; the frames carry only ciphertext', async () => {
    const room = new Room();
    const alice = await room.device('alice');
    const bob = await room.device('bob');
    await room.join(alice);
    await room.join(bob);
    room.deliverKeys();
    expect(all(room.say(alice, 'hello bob'))).toEqual(['hello bob']);
    expect(all(room.say(bob, 'hello alice'))).toEqual(['hello alice']);
    expect(alice.keys.stats().keysAccepted).toBeGreaterThanOrEqual(1);
  });

  it('three and four participants: every ordered pair hears each other', async () => {
    for (const n of [3, 4]) {
      const room = new Room();
      const people = (await devices(room, 'alice', 'bob', 'carol', 'dave')).slice(0, n);
      for (const p of people) await room.join(p);
      room.deliverKeys();
      room.clock.advance(GRACE); // the rotations made by the later joins are in use now
      for (const p of people) {
        const heard = room.say(p, `I am ${p.identity.username}`);
        expect(heard.size).toBe(n - 1);
        expect(all(heard)).toEqual([`I am ${p.identity.username}`]);
      }
    }
  });

  it('a new key on every join and leave: a join ratchets the key in use forward (used at once; the newcomer hears at once, the others derive it), a leave makes a random one used after the grace', async () => {
    const room = new Room();
    const [alice, bob, carol, dave] = await devices(room, 'alice', 'bob', 'carol', 'dave');
    await room.join(alice);
    await room.join(bob);
    room.deliverKeys();
    const first = alice.keys.localKeyForSending();
    const before = alice.keys.encryptFrame(Buffer.from('before carol')); // the key is now used

    await room.join(carol);
    // Alice sealed the ratcheted key to Carol only; Bob gets nothing new from her.
    const fromAlice = alice.keys.outgoingKeyMessages();
    expect(fromAlice.map((m) => m.to.deviceId)).toEqual([carol.identity.deviceId]);
    expect(carol.keys.acceptKey(alice.me, fromAlice[0]!.envelope)).toMatchObject({ ok: true });
    room.deliverKeys();
    const second = alice.keys.localKeyForSending(); // no grace: in use at once
    expect(second.epoch).toBe(first.epoch + 1);
    expect(second.kid).not.toBe(first.kid);
    // Carol hears Alice at once, and Bob derives the next key himself from the first frame under it.
    expect(all(room.say(alice, 'welcome carol'))).toEqual(['welcome carol']);
    expect(bob.keys.stats().keysRatcheted).toBe(1);
    // One way: Carol cannot go back to what was said under the key before.
    expect(carol.keys.decryptFrame(before, alice.identity.deviceId)).toBeUndefined();

    // A frame with a forged KID a few steps ahead does not make Bob keep a key.
    const forged = Buffer.from(alice.keys.encryptFrame(Buffer.from('x')));
    expect(forged[0]! >> 4).toBe(0xb); // RFC 9605 §4.3: X = 1, a 4-byte KID follows the config byte
    forged.writeUInt32BE(forged.readUInt32BE(1) + 2, 1); // relabelled two epochs ahead
    expect(bob.keys.decryptFrame(forged, alice.identity.deviceId)).toBeUndefined();
    expect(bob.keys.stats().keysRatcheted).toBe(1);

    // Two joins between two of Alice's frames: Bob derives two steps at once.
    await room.join(dave);
    room.deliverKeys();
    expect(all(room.say(alice, 'welcome dave'))).toEqual(['welcome dave']);

    // A leave: a random key, sealed to those who stay, used only after the grace.
    const beforeLeave = alice.keys.localKeyForSending();
    await room.leave(dave);
    room.deliverKeys();
    expect(alice.keys.localKeyForSending()).toEqual(beforeLeave); // grace: still the old key
    const inGrace = room.say(alice, 'during the grace');
    expect(inGrace.get(`bob:${bob.identity.deviceId.slice(0, 4)}`)).toBe('during the grace');
    room.clock.advance(GRACE);
    expect(alice.keys.localKeyForSending().epoch).toBe(beforeLeave.epoch + 1);
    expect(all(room.say(alice, 'after the grace'))).toEqual(['after the grace']);
    // Dave, who held every key before (and can ratchet), cannot follow a random key.
    const after = alice.keys.encryptFrame(Buffer.from('dave is gone'));
    expect(dave.keys.decryptFrame(after, alice.identity.deviceId)).toBeUndefined();
    expect(alice.keys.stats().rotations).toBe(3);
  });

  it('a removed participant gets no key made after its removal and cannot decrypt what is said after the rotation', async () => {
    const room = new Room();
    const people = await devices(room, 'alice', 'bob', 'carol', 'mallory');
    const [alice, bob, carol, mallory] = people as [Device, Device, Device, Device];
    for (const p of people) await room.join(p);
    room.deliverKeys();
    room.clock.advance(GRACE);
    expect(
      room.say(alice, 'all four of us').get(`mallory:${mallory.identity.deviceId.slice(0, 4)}`),
    ).toBe('all four of us');

    const toMalloryBefore = room.relayed.get(mallory.identity.deviceId)?.length ?? 0;
    await room.leave(mallory);
    room.deliverKeys();
    // Not a single key message for mallory's device since she left.
    expect(room.relayed.get(mallory.identity.deviceId)?.length ?? 0).toBe(toMalloryBefore);
    room.clock.advance(GRACE);
    // A malicious SFU still forwards every frame to mallory, whose client kept every key it had.
    for (const speaker of [alice, bob, carol]) {
      const heard = room.say(speaker, 'secret plan', [alice, bob, carol, mallory]);
      expect(heard.get(`mallory:${mallory.identity.deviceId.slice(0, 4)}`)).toBeUndefined();
      expect(
        [...heard.entries()]
          .filter(([k]) => !k.startsWith('mallory'))
          .every(([, v]) => v === 'secret plan'),
      ).toBe(true);
    }
    expect(mallory.keys.stats().frames.unknown_kid).toBe(3);
    // Her own late key messages are not taken: held in case she rejoins, then dropped and counted.
    const late = seal(
      mallory.identity,
      alice.identity.bundle,
      { callId: room.id, role: 'member', n: 99 },
      { content: { type: 'sender-key', kid: 7, epoch: 9, suite: 4, key: 'A'.repeat(22) } },
    );
    expect(alice.keys.acceptKey(mallory.me, late)).toEqual({ ok: 'pending' });
    room.clock.advance(PENDING_KEY_MS);
    await room.announce();
    expect(alice.keys.stats().keysRejected.not_member).toBe(1);
  });

  it('a newcomer cannot decrypt what was said before it joined (the SFU recorded it)', async () => {
    const room = new Room();
    const [alice, bob, dave] = await devices(room, 'alice', 'bob', 'dave');
    await room.join(alice);
    await room.join(bob);
    room.deliverKeys();
    const recorded = alice.keys.encryptFrame(Buffer.from('said before dave came'));
    await room.join(dave);
    room.deliverKeys();
    room.clock.advance(GRACE);
    expect(dave.keys.decryptFrame(recorded, alice.identity.deviceId)).toBeUndefined();
    expect(all(room.say(alice, 'welcome dave'))).toEqual(['welcome dave']);
  });

  it('rejoin: a participant that leaves and comes back (a new instance) exchanges keys again', async () => {
    const room = new Room();
    const [alice, bob, carol] = await devices(room, 'alice', 'bob', 'carol');
    for (const p of [alice, bob, carol]) await room.join(p);
    room.deliverKeys();
    room.clock.advance(GRACE);
    await room.leave(carol);
    room.deliverKeys();
    room.clock.advance(GRACE);
    const again = room.instance(carol.identity, carol.e2ee);
    await room.join(again);
    room.deliverKeys();
    room.clock.advance(GRACE);
    expect(all(room.say(again, 'back again'))).toEqual(['back again']);
    expect(room.say(alice, 'hi carol').get(`carol:${carol.identity.deviceId.slice(0, 4)}`)).toBe(
      'hi carol',
    );
    // The old instance learnt nothing new.
    expect(
      carol.keys.decryptFrame(alice.keys.encryptFrame(Buffer.from('x')), alice.identity.deviceId),
    ).toBeUndefined();
  });

  it('frames that arrive before their key are dropped and counted, then play once the key arrives', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    await room.join(alice);
    await room.join(bob);
    const early = [1, 2, 3].map((i) => alice.keys.encryptFrame(Buffer.from(`early ${i}`)));
    for (const f of early)
      expect(bob.keys.decryptFrame(f, alice.identity.deviceId)).toBeUndefined();
    expect(bob.keys.stats().frames.unknown_kid).toBe(3);
    room.deliverKeys();
    // Still inside the replay window: the held-back frames now open, in any order.
    expect(bob.keys.decryptFrame(early[2]!, alice.identity.deviceId)?.toString()).toBe('early 3');
    expect(bob.keys.decryptFrame(early[0]!, alice.identity.deviceId)?.toString()).toBe('early 1');
    expect(bob.keys.decryptFrame(early[0]!, alice.identity.deviceId)).toBeUndefined(); // a replay
    expect(bob.keys.stats().frames).toMatchObject({ accepted: 2, replayed: 1, unknown_kid: 3 });
  });

  it('a key that overtakes the membership notice waits, then is taken', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    room.devices.set(alice.identity.deviceId, alice);
    room.devices.set(bob.identity.deviceId, bob);
    await bob.keys.onMembershipChanged(room.participants()); // bob knows alice; alice does not know bob yet
    const [toAlice] = bob.keys.outgoingKeyMessages();
    expect(alice.keys.acceptKey(bob.me, toAlice!.envelope)).toEqual({ ok: 'pending' });
    const f = bob.keys.encryptFrame(Buffer.from('too soon'));
    expect(alice.keys.decryptFrame(f, bob.identity.deviceId)).toBeUndefined();
    await alice.keys.onMembershipChanged(room.participants());
    expect(alice.keys.decryptFrame(f, bob.identity.deviceId)?.toString()).toBe('too soon');
  });

  it('refuses replayed, misaddressed, other-room and tampered key messages, counting each, never throwing', async () => {
    const room = new Room();
    const [alice, bob, carol] = await devices(room, 'alice', 'bob', 'carol');
    for (const p of [alice, bob, carol]) await room.join(p);
    const out = alice.keys.outgoingKeyMessages();
    const toBob = out.find((m) => m.to.deviceId === bob.identity.deviceId)!.envelope;
    const toCarol = out.find((m) => m.to.deviceId === carol.identity.deviceId)!.envelope;
    expect(bob.keys.acceptKey(alice.me, toCarol)).toMatchObject({
      ok: false,
      reason: 'envelope_invalid',
    }); // sealed for carol
    expect(bob.keys.acceptKey(alice.me, toBob)).toMatchObject({ ok: true });
    expect(bob.keys.acceptKey(alice.me, toBob)).toMatchObject({ ok: false, reason: 'replayed' });
    const otherRoom = seal(
      alice.identity,
      bob.identity.bundle,
      { callId: randomUUID(), role: 'member', n: 50 },
      { content: { type: 'sender-key', kid: 1, epoch: 0, suite: 4, key: 'A'.repeat(22) } },
    );
    expect(bob.keys.acceptKey(alice.me, otherRoom)).toMatchObject({
      ok: false,
      reason: 'envelope_invalid',
    });
    const asCaller = seal(
      alice.identity,
      bob.identity.bundle,
      { callId: room.id, role: 'caller', n: 51 },
      { content: { type: 'sender-key', kid: 1, epoch: 0, suite: 4, key: 'A'.repeat(22) } },
    );
    expect(bob.keys.acceptKey(alice.me, asCaller)).toMatchObject({
      ok: false,
      reason: 'envelope_invalid',
    });
    const notAKey = seal(
      alice.identity,
      bob.identity.bundle,
      { callId: room.id, role: 'member', n: 52 },
      { content: { type: 'end-of-candidates' } },
    );
    expect(bob.keys.acceptKey(alice.me, notAKey)).toMatchObject({
      ok: false,
      reason: 'envelope_invalid',
    });
    // Carol forging a key in alice's name: the signature is carol's, not alice's.
    const forged = seal(
      carol.identity,
      bob.identity.bundle,
      { callId: room.id, role: 'member', n: 53 },
      { content: { type: 'sender-key', kid: 1, epoch: 0, suite: 4, key: 'A'.repeat(22) } },
    );
    expect(bob.keys.acceptKey(alice.me, forged)).toMatchObject({
      ok: false,
      reason: 'envelope_invalid',
    });
    for (const junk of [
      { kind: 'sealed', body: 'nope' },
      { kind: 'plain', body: '{}' },
      { kind: 'sealed', body: JSON.stringify({ v: 1 }) },
    ] as Envelope[]) {
      expect(bob.keys.acceptKey(alice.me, junk)).toMatchObject({
        ok: false,
        reason: 'envelope_invalid',
      });
    }
    expect(bob.keys.stats().keysRejected).toEqual({
      not_member: 0,
      envelope_invalid: 8,
      replayed: 1,
    });
  });

  it('a key message altered in any field of its sealed body is refused, never thrown', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    await room.join(alice);
    await room.join(bob);
    const [m] = alice.keys.outgoingKeyMessages();
    const body = JSON.parse(m!.envelope.body) as Record<string, unknown>;
    const flip = (v: string) =>
      v[5] === 'A' ? v.slice(0, 5) + 'B' + v.slice(6) : v.slice(0, 5) + 'A' + v.slice(6);
    for (const field of ['eph', 'kem', 'iv', 'ct', 'sig', 'call']) {
      const bad = { ...body, [field]: flip(body[field] as string) };
      expect(
        bob.keys.acceptKey(alice.me, { kind: 'sealed', body: JSON.stringify(bad) }),
        field,
      ).toMatchObject({ ok: false, reason: 'envelope_invalid' });
    }
    expect(
      bob.keys.acceptKey(alice.me, {
        kind: 'sealed',
        body: JSON.stringify({ ...body, role: 'caller' }),
      }),
    ).toMatchObject({ ok: false, reason: 'envelope_invalid' });
    expect(bob.keys.acceptKey(alice.me, m!.envelope)).toMatchObject({ ok: true });
  });

  it('a repeated key (same KID) neither replaces the key nor reopens its replay window', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    await room.join(alice);
    await room.join(bob);
    room.deliverKeys();
    const f = alice.keys.encryptFrame(Buffer.from('once'));
    expect(bob.keys.decryptFrame(f, alice.identity.deviceId)?.toString()).toBe('once');
    const { kid, epoch } = alice.keys.localKeyForSending();
    const again = seal(
      alice.identity,
      bob.identity.bundle,
      { callId: room.id, role: 'member', n: 40 },
      { content: { type: 'sender-key', kid, epoch, suite: 4, key: 'B'.repeat(22) } },
    );
    expect(bob.keys.acceptKey(alice.me, again)).toEqual({ ok: true, kid, epoch });
    expect(bob.keys.decryptFrame(f, alice.identity.deviceId)).toBeUndefined(); // still a replay
    expect(
      bob.keys
        .decryptFrame(alice.keys.encryptFrame(Buffer.from('twice')), alice.identity.deviceId)
        ?.toString(),
    ).toBe('twice'); // the original key
  });

  it('a participant that rejoins before the others saw it leave: its new key is held, then taken', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    await room.join(alice);
    await room.join(bob);
    room.deliverKeys();
    room.devices.delete(bob.identity.deviceId);
    await alice.keys.onMembershipChanged(room.participants()); // alice sees bob leave
    const bob2 = room.instance(bob.identity, bob.e2ee);
    room.devices.set(bob.identity.deviceId, bob2);
    await bob2.keys.onMembershipChanged(room.participants()); // bob is back; alice has not seen it yet
    const [key] = bob2.keys.outgoingKeyMessages();
    expect(alice.keys.acceptKey(bob2.me, key!.envelope)).toEqual({ ok: 'pending' });
    await alice.keys.onMembershipChanged(room.participants());
    expect(
      alice.keys
        .decryptFrame(bob2.keys.encryptFrame(Buffer.from('back')), bob.identity.deviceId)
        ?.toString(),
    ).toBe('back');
  });

  it("does not let one participant pass its frames off as another's", async () => {
    const room = new Room();
    const [alice, bob, carol] = await devices(room, 'alice', 'bob', 'carol');
    for (const p of [alice, bob, carol]) await room.join(p);
    room.deliverKeys();
    room.clock.advance(GRACE);
    const fromCarol = carol.keys.encryptFrame(Buffer.from('carol speaking'));
    expect(bob.keys.decryptFrame(fromCarol, alice.identity.deviceId)).toBeUndefined();
    expect(bob.keys.decryptFrame(fromCarol, carol.identity.deviceId)?.toString()).toBe(
      'carol speaking',
    );
  });

  it('drops keys of departed and superseded senders after the retention time', async () => {
    const room = new Room();
    const [alice, bob, carol] = await devices(room, 'alice', 'bob', 'carol');
    for (const p of [alice, bob, carol]) await room.join(p);
    room.deliverKeys();
    room.clock.advance(GRACE);
    const carolLast = carol.keys.encryptFrame(Buffer.from('last words'));
    const aliceOld = alice.keys.encryptFrame(Buffer.from('old key'));
    await room.leave(carol);
    room.deliverKeys();
    // In flight: both still play.
    expect(bob.keys.decryptFrame(carolLast, carol.identity.deviceId)?.toString()).toBe(
      'last words',
    );
    expect(bob.keys.decryptFrame(aliceOld, alice.identity.deviceId)?.toString()).toBe('old key');
    room.clock.advance(GRACE + RETAIN);
    // The same frames again (a delayed copy): their keys are gone, so unknown KID rather than replay.
    expect(bob.keys.decryptFrame(carolLast, carol.identity.deviceId)).toBeUndefined();
    expect(bob.keys.decryptFrame(aliceOld, alice.identity.deviceId)).toBeUndefined();
    expect(bob.keys.stats().frames.unknown_kid).toBe(2);
    expect(all(room.say(alice, 'new key'))).toEqual(['new key']);
  });

  it('KIDs are unique per sender and epoch; the header is 1 + 4 KID bytes + the CTR', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    await room.join(alice);
    await room.join(bob);
    const h = decodeHeader(alice.keys.encryptFrame(Buffer.from('x')))!;
    expect(h.length).toBe(5);
    expect(Number(h.kid)).toBe(alice.keys.localKeyForSending().kid);
    expect(alice.keys.localKeyForSending().kid).not.toBe(bob.keys.localKeyForSending().kid);
  });
});

describe('group keys: trust by the 1:1 rules', () => {
  it('a changed identity key excludes that account (no key to it, none taken from it) as it blocks a 1:1 call, until accepted', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    await room.join(alice);
    await room.join(bob);
    room.deliverKeys();
    // The server now shows another identity key for bob's device (a takeover, or a reinstall).
    const impostor = DeviceIdentity.ephemeral('bob', bob.identity.deviceId);
    const bobNow = await room.device('bob', impostor);
    room.devices.set(bob.identity.deviceId, bobNow);
    await room.announce();
    expect(alice.excluded).toEqual([
      expect.objectContaining({ username: 'bob', reason: 'key_changed' }),
    ]);
    expect(alice.keys.excluded()).toHaveLength(1);
    // Alice sends nothing to the changed device, and takes nothing from it.
    expect(alice.keys.outgoingKeyMessages().filter((m) => m.to.username === 'bob')).toEqual([]);
    const fromImpostor = bobNow.keys
      .outgoingKeyMessages()
      .find((m) => m.to.deviceId === alice.identity.deviceId)!;
    expect(alice.keys.acceptKey(bobNow.me, fromImpostor.envelope)).toMatchObject({
      ok: false,
      reason: 'not_member',
    });
    // Old bob's keys are dropped at once: his frames no longer play.
    expect(
      alice.keys.decryptFrame(bob.keys.encryptFrame(Buffer.from('x')), bob.identity.deviceId),
    ).toBeUndefined();
    // Alice compares safety numbers and accepts the change: bob's device is trusted again.
    alice.e2ee.acceptKeyChange('bob');
    await alice.keys.refreshTrust();
    expect(alice.keys.excluded()).toEqual([]);
    const again = alice.keys.outgoingKeyMessages().filter((m) => m.to.username === 'bob');
    expect(again).toHaveLength(1);
    expect(bobNow.keys.acceptKey(alice.me, again[0]!.envelope)).toMatchObject({ ok: true });
  });

  it('an unverified contact whose keys did not change is taken; a device new to the account carries the 1:1 warning', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    await room.join(alice);
    await room.join(bob);
    room.deliverKeys();
    expect(alice.keys.trustedDevices()).toEqual([
      { username: 'bob', deviceId: bob.identity.deviceId, newDevice: false },
    ]);
    const bobLaptop = await room.device('bob');
    await room.join(bobLaptop);
    room.deliverKeys();
    expect(alice.keys.trustedDevices()).toContainEqual({
      username: 'bob',
      deviceId: bobLaptop.identity.deviceId,
      newDevice: true,
    });
    expect(alice.excluded).toEqual([]);
  });

  it('a verified contact (account without an account key) showing a new device is blocked, as in 1:1', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    await room.join(alice);
    await room.join(bob);
    alice.e2ee.verify('bob');
    const bobLaptop = await room.device('bob');
    await room.join(bobLaptop);
    expect(alice.keys.excluded().map((x) => x.reason)).toEqual(['key_changed', 'key_changed']);
    expect(
      alice.keys
        .outgoingKeyMessages()
        .filter((m) => m.to.username === 'bob' && m.to.deviceId === bobLaptop.identity.deviceId),
    ).toEqual([]);
  });

  it('with account keys: a device the server slipped into an account is excluded (device_uncertified); a certified new device of a verified contact is taken, flagged new', async () => {
    const room = new Room();
    const bobAccount = AccountIdentity.ephemeral('bob');
    const alice = await room.device('alice');
    const bob = await room.device('bob', DeviceIdentity.ephemeral('bob', randomUUID()), bobAccount);
    await room.join(alice);
    await room.join(bob);
    room.deliverKeys();
    alice.e2ee.verify('bob');
    // The server lists a "bob" device of its own making (no certificate by bob's account key) and puts it in the room.
    const planted = await room.device('bob');
    const laptop = await room.device(
      'bob',
      DeviceIdentity.ephemeral('bob', randomUUID()),
      bobAccount,
    );
    room.devices.set(planted.identity.deviceId, planted);
    await room.join(laptop);
    expect(alice.keys.excluded()).toEqual([
      expect.objectContaining({
        deviceId: planted.identity.deviceId,
        reason: 'device_uncertified',
      }),
    ]);
    const out = alice.keys.outgoingKeyMessages().map((m) => m.to.deviceId);
    expect(out).toContain(laptop.identity.deviceId);
    expect(out).not.toContain(planted.identity.deviceId);
    expect(alice.keys.trustedDevices()).toContainEqual({
      username: 'bob',
      deviceId: laptop.identity.deviceId,
      newDevice: true,
    });
    // The planted device's key messages are refused outright.
    const fromPlanted = planted.keys
      .outgoingKeyMessages()
      .find((m) => m.to.deviceId === alice.identity.deviceId)!;
    expect(alice.keys.acceptKey(planted.me, fromPlanted.envelope)).toMatchObject({
      ok: false,
      reason: 'not_member',
    });
  });

  it('a signed bundle whose X25519 key is a low-order point: that device is excluded, the others still get the key', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    const ed = ed25519Generate();
    const eveId = randomUUID();
    const unsigned = {
      ...bob.identity.bundle,
      username: 'eve',
      deviceId: eveId,
      ik: b64u(ed.publicKey),
      x25519: b64u(new Uint8Array(32)),
    };
    const { sig: _drop, ...toSign } = unsigned;
    const bundle = {
      ...toSign,
      sig: b64u(ed25519Sign(ed.privateKey, new TextEncoder().encode(bundleSigningText(toSign)))),
    };
    room.directory.accounts.set('eve', { devices: [{ deviceId: eveId, online: true, bundle }] });
    room.devices.set(eveId, { ...bob, me: { username: 'eve', deviceId: eveId } });
    await room.join(alice);
    await room.join(bob);
    expect(alice.keys.excluded()).toEqual([
      expect.objectContaining({ deviceId: eveId, reason: 'untrusted' }),
    ]);
    expect(alice.keys.outgoingKeyMessages().map((m) => m.to.deviceId)).toEqual([
      bob.identity.deviceId,
    ]);
  });

  it('a device the server lists without a bundle gets no key', async () => {
    const room = new Room();
    const [alice, bob] = await devices(room, 'alice', 'bob');
    await room.join(alice);
    const ghost: Device = { ...bob, me: { username: 'bob', deviceId: randomUUID() } };
    room.devices.set(ghost.me.deviceId, ghost);
    await alice.keys.onMembershipChanged(room.participants());
    expect(alice.excluded).toEqual([
      expect.objectContaining({ deviceId: ghost.me.deviceId, reason: 'untrusted' }),
    ]);
    expect(alice.keys.outgoingKeyMessages()).toEqual([]);
  });
});
