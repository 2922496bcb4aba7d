/**
 * End-to-end security primitives: sealing, opening, bundles, trust on first
 * use and safety numbers (main/core/e2ee). No server: devices in memory.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { Envelope } from '../../common/protocol/envelope';
import { DeviceIdentity, SealError, TrustStore, safetyNumber, verifyBundle } from '../../main/core/e2ee';
import { checkFingerprint, sdpFingerprints } from '../../main/core/e2ee';
import { open, seal } from '../../main/core/e2ee/seal';
import { makeTempDir, removeTempDir } from '../harness/process';

const alice = DeviceIdentity.ephemeral('alice', randomUUID());
const bob = DeviceIdentity.ephemeral('bob', randomUUID());
const bobTablet = DeviceIdentity.ephemeral('bob', randomUUID());
const dirs: string[] = [];
afterAll(() => dirs.forEach(removeTempDir));

const offer = { type: 'offer' as const, sdp: 'v=0\r\na=fingerprint:sha-256 AB:CD\r\n' };

function expectSealError(fn: () => unknown, reason: string): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SealError);
    expect((e as SealError).reason).toBe(reason);
    return;
  }
  throw new Error('expected a SealError');
}

describe('sealed envelopes', () => {
  const callId = randomUUID();
  const sealed = seal(alice, bob.bundle, { callId, role: 'caller', n: 0 }, { content: offer, bundle: alice.bundle });
  const expectFromAlice = { callId, fromDeviceId: alice.deviceId, fromIdentityKey: alice.identityKey, role: 'caller' as const, n: 0 };

  it('opens on the intended device with the content and the sender bundle', () => {
    const opened = open(bob, sealed, expectFromAlice);
    expect(opened.content).toEqual(offer);
    expect(opened.bundle?.ik).toBe(alice.identityKey);
  });

  it('hides the SDP from whoever routes it', () => {
    expect(sealed.kind).toBe('sealed');
    expect(sealed.body).not.toContain('fingerprint');
    expect(sealed.body).not.toContain('AB:CD');
  });

  it('does not open on another device of the same account', () => {
    expectSealError(() => open(bobTablet, sealed, expectFromAlice), 'envelope_invalid');
  });

  it('refuses a tampered ciphertext, header or signature', () => {
    const body = JSON.parse(sealed.body) as Record<string, string>;
    const flip = (s: string) => (s[5] === 'A' ? s.slice(0, 5) + 'B' + s.slice(6) : s.slice(0, 5) + 'A' + s.slice(6));
    for (const field of ['ct', 'kem', 'eph', 'iv', 'sig']) {
      const bad: Envelope = { kind: 'sealed', body: JSON.stringify({ ...body, [field]: flip(body[field]!) }) };
      expectSealError(() => open(bob, bad, expectFromAlice), 'envelope_invalid');
    }
    const otherCall: Envelope = { kind: 'sealed', body: JSON.stringify({ ...body, call: randomUUID() }) };
    expectSealError(() => open(bob, otherCall, { ...expectFromAlice, callId: JSON.parse(otherCall.body).call }), 'envelope_invalid');
  });

  it('refuses the wrong call, role, sender device, sender key, sequence number, and plain envelopes', () => {
    expectSealError(() => open(bob, sealed, { ...expectFromAlice, callId: randomUUID() }), 'envelope_invalid');
    expectSealError(() => open(bob, sealed, { ...expectFromAlice, role: 'callee' }), 'envelope_invalid');
    expectSealError(() => open(bob, sealed, { ...expectFromAlice, fromDeviceId: randomUUID() }), 'envelope_invalid');
    expectSealError(() => open(bob, sealed, { ...expectFromAlice, fromIdentityKey: bob.identityKey }), 'key_mismatch');
    expectSealError(() => open(bob, sealed, { ...expectFromAlice, n: 1 }), 'replayed');
    expectSealError(() => open(bob, { kind: 'plain', body: JSON.stringify(offer) }, expectFromAlice), 'unsealed');
  });

  it('refuses a message re-signed by another identity (a substituted sender)', () => {
    const mallory = DeviceIdentity.ephemeral('alice', alice.deviceId);
    const forged = seal(mallory, bob.bundle, { callId, role: 'caller', n: 0 }, { content: offer });
    expectSealError(() => open(bob, forged, expectFromAlice), 'key_mismatch');
  });
});

describe('key bundles', () => {
  it('verify under their own identity key and bind username and device', () => {
    expect(verifyBundle(alice.bundle, { username: 'alice', deviceId: alice.deviceId }).ik).toBe(alice.identityKey);
    expect(() => verifyBundle(alice.bundle, { username: 'bob' })).toThrow(/names another account/);
    expect(() => verifyBundle({ ...alice.bundle, x25519: bob.bundle.x25519 })).toThrow(/invalid signature/);
    expect(() => verifyBundle({ ...alice.bundle, deviceId: bob.deviceId })).toThrow(/invalid signature/);
    expect(() => verifyBundle({ nope: 1 })).toThrow(/malformed/);
  });

  it('never show private keys when printed or serialised', () => {
    expect(JSON.stringify(alice)).not.toMatch(/ed25519|x25519Private|mlkem/i);
    expect(Object.keys(alice.bundle).sort()).toEqual(['createdAt', 'deviceId', 'ik', 'mlkem', 'sig', 'username', 'v', 'x25519']);
  });
});

describe('trust on first use', () => {
  it('pins first, blocks a changed key until accepted, and clears the verified mark', async () => {
    const dir = makeTempDir('trust');
    dirs.push(dir);
    const trust = await TrustStore.open(dir);
    const changes: string[] = [];
    trust.on('keyChange', (c) => changes.push(`${c.kind}:${c.blocked}`));
    expect(trust.check('bob', bob.deviceId, bob.identityKey)).toBe('pinned_now');
    expect(trust.check('bob', bob.deviceId, bob.identityKey)).toBe('trusted');
    expect(trust.markVerified('bob').verified).toBe(true);
    // A new device of a verified contact waits for acceptance.
    expect(trust.check('bob', bobTablet.deviceId, bobTablet.identityKey)).toBe('blocked');
    expect(trust.isVerified('bob')).toBe(false);
    trust.acceptKeyChange('bob');
    expect(trust.check('bob', bobTablet.deviceId, bobTablet.identityKey)).toBe('trusted');
    // Another key for a known device.
    const impostor = DeviceIdentity.ephemeral('bob', bob.deviceId);
    expect(trust.check('bob', bob.deviceId, impostor.identityKey)).toBe('blocked');
    expect(trust.blocked('bob')).toBe(true);
    expect(() => trust.markVerified('bob')).toThrow(/changed/);
    expect(trust.info('bob').devices.find((d) => d.deviceId === bob.deviceId)?.pending?.kind).toBe('changed');
    expect(changes).toEqual(['added:true', 'changed:true']);
    await trust.flush();
    // Pins survive a restart; the file holds public keys only.
    const again = await TrustStore.open(dir);
    expect(again.blocked('bob')).toBe(true);
  });
});

describe('safety numbers', () => {
  it('are 60 digits, the same from both ends, and change with any key', () => {
    const a = { username: 'alice', identityKeys: [alice.identityKey] };
    const b = { username: 'bob', identityKeys: [bob.identityKey, bobTablet.identityKey] };
    const ab = safetyNumber(a, b);
    expect(ab.digits).toMatch(/^\d{60}$/);
    expect(ab.grouped).toMatch(/^(\d{5} ){11}\d{5}$/);
    expect(safetyNumber(b, a)).toEqual(ab);
    expect(safetyNumber(a, { ...b, identityKeys: [bobTablet.identityKey, bob.identityKey] })).toEqual(ab);
    expect(safetyNumber(a, { ...b, identityKeys: [bob.identityKey] }).digits).not.toBe(ab.digits);
  });
});

describe('fingerprint binding', () => {
  it('matches a certificate only against the sealed SDP fingerprint (SHA-256 and up)', async () => {
    const { createHash } = await import('node:crypto');
    const der = new Uint8Array([1, 2, 3, 4]);
    const fp = createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
    expect(sdpFingerprints(`a=fingerprint:sha-256 ${fp}\r\n`)).toHaveLength(1);
    expect(checkFingerprint(der, `v=0\r\na=fingerprint:sha-256 ${fp}\r\n`)).toBe('match');
    expect(checkFingerprint(new Uint8Array([9]), `a=fingerprint:sha-256 ${fp}\r\n`)).toBe('mismatch');
    expect(checkFingerprint(der, 'v=0\r\n')).toBe('none');
    expect(checkFingerprint(undefined, `a=fingerprint:sha-256 ${fp}\r\n`)).toBe('none');
  });
});
