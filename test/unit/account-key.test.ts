/**
 * Devices the server cannot forge (issue 12 item 3): the account key and its
 * device certificates, link codes and the link exchange, the approved-devices
 * list with its alarms, account-key pins and safety numbers over account keys
 * (main/core/e2ee/account-key.ts, account-devices.ts, trust.ts). No server.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { KeysGetResult } from '../../common/protocol/signaling';
import {
  checkLinkReply,
  checkLinkRequest,
  linkSecrets,
  makeLinkReply,
  makeLinkRequest,
  normaliseLinkCode,
} from '../../main/core/e2ee/account-key';
import { AccountDevices, AccountIdentity, DeviceIdentity, TrustStore, certificateValid, newLinkCode, safetyNumber, verifyAccountKey } from '../../main/core/e2ee';
import { makeTempDir, removeTempDir } from '../harness/process';

const dirs: string[] = [];
afterAll(() => dirs.forEach(removeTempDir));
const tempDir = () => {
  const d = makeTempDir('account-key');
  dirs.push(d);
  return d;
};

const bobAccount = AccountIdentity.ephemeral('bob');
const bobLaptop = DeviceIdentity.ephemeral('bob', randomUUID());
const bobPhone = DeviceIdentity.ephemeral('bob', randomUUID());
const impostor = DeviceIdentity.ephemeral('bob', randomUUID());

describe('account key and device certificates', () => {
  it('an account key verifies under itself and only for its own account', () => {
    expect(verifyAccountKey(bobAccount.record, 'bob').key).toBe(bobAccount.publicKey);
    expect(() => verifyAccountKey(bobAccount.record, 'alice')).toThrow(/another account/);
    const forged = { ...bobAccount.record, key: AccountIdentity.ephemeral('bob').publicKey };
    expect(() => verifyAccountKey(forged, 'bob')).toThrow(/invalid signature/);
    expect(() => verifyAccountKey({ v: 1 }, 'bob')).toThrow(/malformed/);
  });

  it('a certificate is valid for exactly the device, key and account it names', () => {
    const cert = bobAccount.certify(bobPhone.bundle);
    expect(certificateValid(cert, bobAccount.publicKey, bobPhone.bundle)).toBe(true);
    // Another device, another identity key for the same device id, another account key.
    expect(certificateValid(cert, bobAccount.publicKey, bobLaptop.bundle)).toBe(false);
    expect(certificateValid(cert, bobAccount.publicKey, { ...bobPhone.bundle, ik: impostor.identityKey })).toBe(false);
    expect(certificateValid(cert, AccountIdentity.ephemeral('bob').publicKey, bobPhone.bundle)).toBe(false);
    // A server that re-signs with its own account key, or tampers with the time.
    const serverKey = AccountIdentity.ephemeral('bob');
    expect(certificateValid(serverKey.certify(impostor.bundle), bobAccount.publicKey, impostor.bundle)).toBe(false);
    expect(certificateValid({ ...cert, signedAt: cert.signedAt + 1 }, bobAccount.publicKey, bobPhone.bundle)).toBe(false);
    expect(certificateValid(undefined, bobAccount.publicKey, bobPhone.bundle)).toBe(false);
    expect(() => bobAccount.certify(DeviceIdentity.ephemeral('alice', randomUUID()).bundle)).toThrow(/its own account/);
  });

  it('never shows the private key', () => {
    expect(JSON.stringify(bobAccount)).not.toMatch(/ed25519/);
    expect(JSON.stringify(bobAccount)).toContain(bobAccount.publicKey);
  });
});

describe('link codes and the link exchange', () => {
  it('codes are 20 Crockford base32 characters in 4 groups, typed loosely', () => {
    const code = newLinkCode();
    expect(code).toMatch(/^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){3}$/);
    expect(normaliseLinkCode(code.toLowerCase().replace(/-/g, ' '))).toBe(code.replace(/-/g, ''));
    expect(normaliseLinkCode('oooooiiiiilllll00000')).toBe('00000111111111100000');
    expect(() => normaliseLinkCode('ABC')).toThrow(/20 letters/);
    expect(() => normaliseLinkCode('UUUUU-UUUUU-UUUUU-UUUUU')).toThrow(/20 letters/);
    expect(newLinkCode()).not.toBe(code);
  });

  it('the rendezvous id and MAC key come from the code; the id reveals nothing the server can use', () => {
    const code = newLinkCode();
    const a = linkSecrets(code);
    expect(linkSecrets(code.toLowerCase())).toEqual(a);
    expect(Buffer.from(a.linkId, 'base64url')).toHaveLength(16);
    expect(a.macKey).toHaveLength(32);
    expect(linkSecrets(newLinkCode()).linkId).not.toBe(a.linkId);
  });

  it('links a device when both sides used the same code, and refuses everything else', () => {
    const code = newLinkCode();
    const secrets = linkSecrets(code);
    const { linkId, request } = makeLinkRequest(code, bobPhone.bundle);
    expect(linkId).toBe(secrets.linkId);
    const me = { username: 'bob', deviceId: bobPhone.deviceId };
    expect(checkLinkRequest(secrets, request, me)).toEqual(bobPhone.bundle);
    // The server swaps in its own device, or routes a request made with another code, or lies about the sender.
    expect(() => checkLinkRequest(secrets, { ...request, bundle: impostor.bundle }, me)).toThrow(/code shown/);
    expect(() => checkLinkRequest(secrets, makeLinkRequest(newLinkCode(), bobPhone.bundle).request, me)).toThrow(/code shown/);
    expect(() => checkLinkRequest(secrets, request, { username: 'bob', deviceId: impostor.deviceId })).toThrow(/another account or device/);

    const cert = bobAccount.certify(bobPhone.bundle);
    const reply = makeLinkReply(secrets, bobAccount.record, cert);
    expect(checkLinkReply(secrets, reply, bobPhone.bundle)).toEqual({ accountKey: bobAccount.record, certificate: cert });
    // The server answers itself with its own account key (valid signatures, no code).
    const serverKey = AccountIdentity.ephemeral('bob');
    const forged = makeLinkReply(linkSecrets(newLinkCode()), serverKey.record, serverKey.certify(bobPhone.bundle));
    expect(() => checkLinkReply(secrets, forged, bobPhone.bundle)).toThrow(/not made with the code/);
    expect(() => checkLinkReply(secrets, { ...reply, accountKey: serverKey.record }, bobPhone.bundle)).toThrow(/not made with the code/);
    // A reply for another device.
    const other = makeLinkReply(secrets, bobAccount.record, bobAccount.certify(bobLaptop.bundle));
    expect(() => checkLinkReply(secrets, other, bobPhone.bundle)).toThrow(/not a valid one for this device/);
  });
});

describe("my account's approved devices", () => {
  const listed = (devices: DeviceIdentity[], certs: Record<string, ReturnType<AccountIdentity['certify']>>, accountKey = bobAccount.record): KeysGetResult => ({
    accountKey,
    devices: devices.map((d) => ({ deviceId: d.deviceId, online: true, bundle: d.bundle, ...(certs[d.deviceId] ? { certificate: certs[d.deviceId] } : {}) })),
  });

  it('approves certified devices, raises one alarm per device the account key did not sign, and clears it when the device is revoked', async () => {
    const own = await AccountDevices.open(tempDir());
    expect(own.review(listed([bobLaptop, impostor], {}), { deviceId: bobLaptop.deviceId })).toEqual([]); // not linked: cannot judge
    expect(own.status(false).role).toBe('unlinked');
    own.pin(bobAccount.record, bobAccount.certify(bobLaptop.bundle));
    const alarms: unknown[] = [];
    own.on('alarm', (a) => alarms.push(a));
    const certs = { [bobLaptop.deviceId]: bobAccount.certify(bobLaptop.bundle), [bobPhone.deviceId]: bobAccount.certify(bobPhone.bundle) };
    const open = own.review(listed([bobLaptop, bobPhone, impostor], certs), { deviceId: bobLaptop.deviceId });
    expect(open).toEqual([expect.objectContaining({ kind: 'device_uncertified', deviceId: impostor.deviceId, identityKey: impostor.identityKey })]);
    expect(open[0]!.message).toMatch(/revoke/);
    expect(own.isApproved(bobPhone.deviceId, bobPhone.identityKey)).toBe(true);
    expect(own.isApproved(impostor.deviceId, impostor.identityKey)).toBe(false);
    own.review(listed([bobLaptop, bobPhone, impostor], certs), { deviceId: bobLaptop.deviceId });
    expect(alarms).toHaveLength(1); // told once
    // A certificate by another account key is no better than none.
    const serverKey = AccountIdentity.ephemeral('bob');
    own.review(listed([bobLaptop, impostor], { [impostor.deviceId]: serverKey.certify(impostor.bundle) }), { deviceId: bobLaptop.deviceId });
    expect(own.alarms()).toHaveLength(1);
    // Revoked: the server lists it no more.
    expect(own.review(listed([bobLaptop, bobPhone], certs), { deviceId: bobLaptop.deviceId })).toEqual([]);
    expect(own.status(true)).toMatchObject({ role: 'holder', accountKey: bobAccount.publicKey, alarms: [] });
  });

  it('alarms when the server shows another account key, and keeps the pin', async () => {
    const dir = tempDir();
    const own = await AccountDevices.open(dir);
    own.pin(bobAccount.record, bobAccount.certify(bobLaptop.bundle));
    const other = AccountIdentity.ephemeral('bob');
    const alarms = own.review(listed([bobLaptop], {}, other.record), { deviceId: bobLaptop.deviceId });
    expect(alarms).toEqual([expect.objectContaining({ kind: 'account_key_changed', identityKey: other.publicKey })]);
    expect(own.accountKey?.key).toBe(bobAccount.publicKey);
    // A list without any account key (the server dropped it) is an alarm too.
    const dropped = await AccountDevices.open(tempDir());
    dropped.pin(bobAccount.record, bobAccount.certify(bobLaptop.bundle));
    expect(dropped.review({ devices: listed([bobLaptop], {}).devices }, { deviceId: bobLaptop.deviceId })).toEqual([
      expect.objectContaining({ kind: 'account_key_changed', message: expect.stringContaining('no account key') }),
    ]);
    await own.flush();
    const again = await AccountDevices.open(dir);
    expect(again.alarms()).toHaveLength(1);
    expect(again.accountKey?.key).toBe(bobAccount.publicKey);
  });
});

describe('contact account keys in the trust store', () => {
  it('pins an account key on first use; another one blocks until accepted and clears the verified mark', async () => {
    const trust = await TrustStore.open(tempDir());
    expect(trust.checkAccountKey('bob', bobAccount.publicKey)).toBe('pinned_now');
    trust.check('bob', bobLaptop.deviceId, bobLaptop.identityKey, true);
    trust.markVerified('bob');
    const changes: unknown[] = [];
    trust.on('keyChange', (c) => changes.push(c));
    const other = AccountIdentity.ephemeral('bob').publicKey;
    expect(trust.checkAccountKey('bob', other)).toBe('blocked');
    expect(changes).toEqual([{ username: 'bob', deviceId: '', kind: 'account_key_changed', blocked: true }]);
    expect(trust.info('bob')).toMatchObject({ verified: false, blocked: true, accountKey: { key: bobAccount.publicKey, pending: { key: other } } });
    expect(trust.accountKeyOf('bob')).toBe(bobAccount.publicKey);
    trust.acceptKeyChange('bob');
    expect(trust.accountKeyOf('bob')).toBe(other);
    expect(trust.blocked('bob')).toBe(false);
  });

  it("a certified new device of a verified contact is pinned without blocking and shown as new; an uncertified one still blocks", async () => {
    const trust = await TrustStore.open(tempDir());
    trust.checkAccountKey('bob', bobAccount.publicKey);
    expect(trust.check('bob', bobLaptop.deviceId, bobLaptop.identityKey, true)).toBe('pinned_now');
    expect(trust.isNewDevice('bob', bobLaptop.deviceId)).toBe(false); // the first device is not "new"
    trust.markVerified('bob');
    expect(trust.check('bob', bobPhone.deviceId, bobPhone.identityKey, true)).toBe('pinned_now');
    expect(trust.isVerified('bob')).toBe(true);
    expect(trust.isNewDevice('bob', bobPhone.deviceId)).toBe(true);
    expect(trust.isNewDevice('bob', bobPhone.deviceId, Date.now() + 8 * 24 * 3600_000)).toBe(false);
    expect(trust.check('bob', impostor.deviceId, impostor.identityKey, false)).toBe('blocked');
  });
});

describe('safety numbers over account keys', () => {
  const alice = AccountIdentity.ephemeral('alice').publicKey;
  const bobKey = bobAccount.publicKey;

  it('are symmetric, do not change when a device is linked, and change with the account key', () => {
    const a = { username: 'alice', accountKey: alice, identityKeys: [] };
    const b = { username: 'bob', accountKey: bobKey, identityKeys: [bobLaptop.identityKey] };
    const n = safetyNumber(a, b);
    expect(n.grouped).toMatch(/^(\d{5} ){11}\d{5}$/);
    expect(safetyNumber(b, a)).toEqual(n);
    expect(safetyNumber(a, { ...b, identityKeys: [bobLaptop.identityKey, bobPhone.identityKey] })).toEqual(n);
    expect(safetyNumber(a, { ...b, accountKey: AccountIdentity.ephemeral('bob').publicKey }).digits).not.toBe(n.digits);
    // The account-key half differs from the device-key half of the same account (version 1 vs 0).
    expect(safetyNumber(a, { username: 'bob', identityKeys: [bobKey] }).digits).not.toBe(n.digits);
  });
});
