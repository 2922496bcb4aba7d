/**
 * The server's side of account keys and device linking (issue 12 item 3): it
 * stores and returns account keys and device certificates, refuses ones that
 * name another device or account or do not verify, and routes link messages
 * only between devices of one account — the real server, hand-driven devices.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountIdentity, DeviceIdentity } from '../../main/core/e2ee';
import { linkSecrets, makeLinkReply, makeLinkRequest, newLinkCode } from '../../main/core/e2ee/account-key';
import { startServer, type RunningServer } from '../harness/server';
import { makeContacts, signIn, type SignedInDevice } from '../harness/signal-client';

let server: RunningServer;
let ann: SignedInDevice;
let annPhone: SignedInDevice;
let ben: SignedInDevice;

beforeAll(async () => {
  server = await startServer();
  ann = await signIn(server, 'ann');
  annPhone = await signIn(server, 'ann', { register: false, deviceName: 'phone' });
  ben = await signIn(server, 'ben');
  await makeContacts(ann, ben);
});

afterAll(async () => {
  for (const d of [ann, annPhone, ben]) d?.client.close();
  await server?.stop();
});

const account = AccountIdentity.ephemeral('ann');

describe('account keys on the server', () => {
  it('stores the account key and certificates and returns them with keys.get', async () => {
    const laptop = DeviceIdentity.ephemeral('ann', ann.deviceId);
    const certificate = account.certify(laptop.bundle);
    await ann.client.request('keys.publish', { bundle: laptop.bundle, accountKey: account.record, certificate });
    const phone = DeviceIdentity.ephemeral('ann', annPhone.deviceId);
    await annPhone.client.request('keys.publish', { bundle: phone.bundle });
    const listed = await ben.client.request('keys.get', { username: 'ann' });
    expect(listed.accountKey).toEqual(account.record);
    expect(listed.devices.find((d: { deviceId: string }) => d.deviceId === ann.deviceId)).toMatchObject({ certificate });
    expect(listed.devices.find((d: { deviceId: string }) => d.deviceId === annPhone.deviceId)?.certificate).toBeUndefined();
  });

  it('refuses certificates and account keys that name another device or account, or do not verify', async () => {
    const laptop = DeviceIdentity.ephemeral('ann', ann.deviceId);
    const phone = DeviceIdentity.ephemeral('ann', annPhone.deviceId);
    const cases: object[] = [
      { bundle: laptop.bundle, certificate: account.certify(phone.bundle) }, // another device's certificate
      { bundle: laptop.bundle, certificate: { ...account.certify(laptop.bundle), signedAt: 1 } }, // bad signature
      { bundle: laptop.bundle, accountKey: AccountIdentity.ephemeral('ben').record }, // another account's key
      { bundle: laptop.bundle, accountKey: { ...account.record, createdAt: 1 } }, // bad self-signature
    ];
    for (const params of cases) {
      await expect(ann.client.request('keys.publish', params as never)).rejects.toMatchObject({ reason: 'invalid_params' });
    }
    // Nothing was replaced.
    expect((await ben.client.request('keys.get', { username: 'ann' })).accountKey).toEqual(account.record);
  });

  it('routes a link request to the device that opened the code, and the reply back, within the account only', async () => {
    const code = newLinkCode();
    const secrets = linkSecrets(code);
    await ann.client.request('link.open', { linkId: secrets.linkId });
    const phone = DeviceIdentity.ephemeral('ann', annPhone.deviceId);
    const { request } = makeLinkRequest(code, phone.bundle);
    // Another account cannot reach it.
    await expect(ben.client.request('link.request', { linkId: secrets.linkId, request })).rejects.toMatchObject({ reason: 'not_found' });
    await annPhone.client.request('link.request', { linkId: secrets.linkId, request });
    const asked = await ann.client.nextNotification('link.request');
    expect(asked).toMatchObject({ linkId: secrets.linkId, deviceId: annPhone.deviceId, request });
    const reply = makeLinkReply(secrets, account.record, account.certify(phone.bundle));
    // The reply goes only to a device of the same account.
    await expect(ann.client.request('link.reply', { linkId: secrets.linkId, deviceId: ben.deviceId, reply })).rejects.toMatchObject({ reason: 'not_found' });
    await ann.client.request('link.reply', { linkId: secrets.linkId, deviceId: annPhone.deviceId, reply });
    const answered = await annPhone.client.nextNotification('link.reply');
    expect(answered).toEqual({ linkId: secrets.linkId, reply });
    // Used once: the rendezvous is closed.
    await expect(annPhone.client.request('link.request', { linkId: secrets.linkId, request })).rejects.toMatchObject({ reason: 'not_found' });
  });
});
