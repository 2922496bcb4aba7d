import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plainEnvelope } from '../../common/protocol/envelope';
import { adminRequest, startServer, type RunningServer } from '../harness/server';
import { connectCall, makeContacts, signIn, type SignedInDevice } from '../harness/signal-client';

const offer = plainEnvelope({ type: 'offer', sdp: 'v=0 offer' });
const answer = plainEnvelope({ type: 'answer', sdp: 'v=0 answer' });

let server: RunningServer;
let n = 0;
const user = (base: string) => signIn(server, `${base}${++n}`);
const closeAll = (...d: SignedInDevice[]) => Promise.all(d.map((x) => x.client.close()));
const invite = (from: SignedInDevice, to: string) =>
  from.client.request('call.invite', { callId: randomUUID(), callee: to, envelope: offer });
const refusal = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (e: { code: number; message: string; data: unknown }) => ({
      code: e.code,
      message: e.message,
      data: e.data,
    }),
  );

interface AuditEvent {
  event: string;
  accountId: string | null;
  detail: Record<string, unknown> | null;
}
async function audit(params: object): Promise<AuditEvent[]> {
  return (await adminRequest<{ events: AuditEvent[] }>(server.adminSocket, 'audit.query', params))
    .events;
}

beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server?.stop();
});

describe('contacts: requests', () => {
  it('request → the other side is told on every device; accept → both are contacts and see each other online', async () => {
    const ann = await user('ann');
    const ben = await user('ben');
    const benPhone = await signIn(server, ben.username, { register: false, deviceName: 'phone' });

    await expect(
      ann.client.request('contacts.request', { username: ben.username }),
    ).resolves.toEqual({ status: 'requested' });
    for (const d of [ben, benPhone]) {
      expect(await d.client.nextNotification('contact.request')).toMatchObject({
        accountId: ann.accountId,
        username: ann.username,
      });
    }
    expect(await ann.client.nextNotification('contact.updated')).toEqual({
      accountId: ben.accountId,
      username: ben.username,
      relation: 'outgoing',
    });
    expect((await ann.client.request('contacts.list', {})).outgoing).toMatchObject([
      { username: ben.username },
    ]);
    expect((await ben.client.request('contacts.list', {})).incoming).toMatchObject([
      { username: ann.username },
    ]);

    await benPhone.client.request('contacts.accept', { username: ann.username });
    expect(await ann.client.nextNotification('contact.updated')).toEqual({
      accountId: ben.accountId,
      username: ben.username,
      relation: 'contact',
      presence: 'online',
    });
    expect(await ben.client.nextNotification('contact.updated')).toMatchObject({
      username: ann.username,
      relation: 'contact',
    });
    const list = await ann.client.request('contacts.list', {});
    expect(list.contacts).toMatchObject([{ username: ben.username, presence: 'online' }]);
    expect(list.outgoing).toEqual([]);
    expect((await ben.client.request('contacts.list', {})).incoming).toEqual([]);
    expect(
      (await audit({ event: 'contact.accepted', accountId: ben.accountId }))[0]?.detail,
    ).toEqual({ otherAccountId: ann.accountId });
    await closeAll(ann, ben, benPhone);
  });

  it('asking someone who already asked me makes us contacts at once; asking twice is harmless', async () => {
    const cy = await user('cy');
    const di = await user('di');
    await cy.client.request('contacts.request', { username: di.username });
    await expect(cy.client.request('contacts.request', { username: di.username })).resolves.toEqual(
      { status: 'requested' },
    );
    await expect(di.client.request('contacts.request', { username: cy.username })).resolves.toEqual(
      { status: 'contact' },
    );
    expect((await cy.client.request('contacts.list', {})).contacts).toHaveLength(1);
    await expect(cy.client.request('contacts.request', { username: di.username })).resolves.toEqual(
      { status: 'contact' },
    );
    await closeAll(cy, di);
  });

  it('decline and remove: both sides see relation none; accepting a declined request is not_found', async () => {
    const ed = await user('ed');
    const flo = await user('flo');
    await ed.client.request('contacts.request', { username: flo.username });
    await flo.client.nextNotification('contact.request');
    await ed.client.nextNotification('contact.updated');
    await flo.client.request('contacts.decline', { username: ed.username });
    expect(await ed.client.nextNotification('contact.updated')).toMatchObject({
      username: flo.username,
      relation: 'none',
    });
    const err = await refusal(flo.client.request('contacts.accept', { username: ed.username }));
    expect(err).toMatchObject({ code: -32015, data: { reason: 'not_found' } });
    expect(err.message).toBe(`${ed.username} has not asked to be your contact`);

    await makeContacts(ed, flo);
    await flo.client.request('contacts.remove', { username: ed.username });
    expect(await ed.client.nextNotification('contact.updated')).toMatchObject({
      username: flo.username,
      relation: 'none',
    });
    expect((await ed.client.request('contacts.list', {})).contacts).toEqual([]);
    // Removing is mutual: neither may call the other now.
    await expect(invite(ed, flo.username)).rejects.toMatchObject({ reason: 'not_contact' });
    await expect(
      flo.client.request('contacts.remove', { username: ed.username }),
    ).rejects.toMatchObject({ reason: 'not_found' });
    await closeAll(ed, flo);
  });

  it('refuses yourself (forbidden) and unknown accounts (unknown_user)', async () => {
    const gil = await user('gil');
    await expect(
      gil.client.request('contacts.request', { username: gil.username }),
    ).rejects.toMatchObject({ reason: 'forbidden' });
    await expect(
      gil.client.request('contacts.request', { username: 'nobody-at-all' }),
    ).rejects.toMatchObject({ reason: 'unknown_user', message: 'no account named nobody-at-all' });
    await closeAll(gil);
  });
});

describe('contacts: "only contacts may call me"', () => {
  it('is on by default: a stranger gets not_contact with words a user understands; audited', async () => {
    const hal = await user('hal');
    const ivy = await user('ivy');
    await expect(ivy.client.request('settings.get', {})).resolves.toEqual({ contactsOnly: true });
    const err = await refusal(invite(hal, ivy.username));
    expect(err).toEqual({
      code: -32014,
      message: `${ivy.username} only takes calls from contacts; send a contact request first`,
      data: { reason: 'not_contact' },
    });
    await ivy.client.expectNoNotification('call.incoming', {}, 100);
    const refused = await audit({ event: 'call.refused', accountId: hal.accountId });
    expect(refused[0]?.detail).toMatchObject({ callee: ivy.username, reason: 'not_contact' });

    // Turned off, anyone may ring.
    await expect(ivy.client.request('settings.set', { contactsOnly: false })).resolves.toEqual({
      contactsOnly: false,
    });
    const r = await invite(hal, ivy.username);
    await ivy.client.nextNotification('call.incoming', { callId: r.callId });
    await hal.client.request('call.cancel', { callId: r.callId });
    expect(
      (await audit({ event: 'settings.changed', accountId: ivy.accountId }))[0]?.detail,
    ).toEqual({ contactsOnly: false });
    await closeAll(hal, ivy);
  });
});

describe('contacts: block', () => {
  it('a blocked caller gets exactly what an offline callee gives, and sees the blocker offline', async () => {
    const jo = await user('jo'); // the blocker
    const kai = await user('kai'); // blocked
    const lu = await user('lu'); // a contact of jo who is really offline, for comparison
    await makeContacts(jo, kai);
    await makeContacts(jo, lu);
    await lu.client.close();
    await jo.client.nextNotification('presence.changed');
    // What any contact gets from an offline callee:
    const offline = await refusal(invite(jo, lu.username));

    await jo.client.request('contacts.block', { username: kai.username });
    expect(await kai.client.nextNotification('presence.changed')).toEqual({
      accountId: jo.accountId,
      username: jo.username,
      presence: 'offline',
    });
    const blocked = await refusal(invite(kai, jo.username));
    expect(blocked).toEqual({
      ...offline,
      message: offline.message.replace(lu.username, jo.username),
    });
    expect(blocked.data).toEqual({ reason: 'callee_offline' });
    await jo.client.expectNoNotification('call.incoming', {}, 100);
    expect((await kai.client.request('contacts.list', {})).contacts).toMatchObject([
      { username: jo.username, presence: 'offline' },
    ]);
    // The blocker's presence changes are not pushed to the blocked account.
    await jo.client.request('presence.set', { status: 'away' });
    await kai.client.expectNoNotification('presence.changed', {}, 200);
    // The audit log knows the real reason; the caller never does.
    const refused = await audit({ event: 'call.refused', accountId: kai.accountId });
    expect(refused[0]?.detail).toMatchObject({ reason: 'blocked' });
    expect((await jo.client.request('contacts.list', {})).blocked).toMatchObject([
      { username: kai.username },
    ]);

    await jo.client.request('contacts.unblock', { username: kai.username });
    expect(await kai.client.nextNotification('presence.changed')).toMatchObject({
      username: jo.username,
      presence: 'away',
    });
    const r = await invite(kai, jo.username);
    await jo.client.nextNotification('call.incoming', { callId: r.callId });
    await kai.client.request('call.cancel', { callId: r.callId });
    await expect(
      jo.client.request('contacts.unblock', { username: kai.username }),
    ).rejects.toMatchObject({ reason: 'not_found' });
    await closeAll(jo, kai);
  });

  it("a blocked account's contact request is taken but never shown to the blocker", async () => {
    const max = await user('max');
    const ned = await user('ned');
    await max.client.request('contacts.block', { username: ned.username });
    await expect(
      ned.client.request('contacts.request', { username: max.username }),
    ).resolves.toEqual({ status: 'requested' });
    await max.client.expectNoNotification('contact.request', {}, 200);
    expect((await max.client.request('contacts.list', {})).incoming).toEqual([]);
    await expect(
      max.client.request('contacts.request', { username: ned.username }),
    ).rejects.toMatchObject({ reason: 'invalid_state' });
    await closeAll(max, ned);
  });
});

describe('presence', () => {
  it('goes to contacts only: away, dnd, in_call during an answered call, offline when the last device leaves', async () => {
    const oli = await user('oli');
    const pam = await user('pam'); // contact
    const stranger = await user('quin'); // not a contact
    await makeContacts(oli, pam);

    await expect(oli.client.request('presence.set', { status: 'away' })).resolves.toEqual({
      presence: 'away',
    });
    expect(await pam.client.nextNotification('presence.changed')).toEqual({
      accountId: oli.accountId,
      username: oli.username,
      presence: 'away',
    });
    await oli.client.request('presence.set', { status: 'online' });
    expect((await pam.client.nextNotification('presence.changed')).presence).toBe('online');

    const callId = await connectCall(oli, pam, { offer, answer });
    expect((await pam.client.nextNotification('presence.changed')).presence).toBe('in_call');
    expect((await oli.client.nextNotification('presence.changed')).presence).toBe('in_call');
    await oli.client.request('call.hangup', { callId });
    expect((await pam.client.nextNotification('presence.changed')).presence).toBe('online');

    await oli.client.request('presence.set', { status: 'dnd' });
    expect((await pam.client.nextNotification('presence.changed')).presence).toBe('dnd');

    const oliPhone = await signIn(server, oli.username, { register: false });
    await oli.client.close();
    await pam.client.expectNoNotification('presence.changed', {}, 200); // the phone is still online
    await oliPhone.client.close();
    expect((await pam.client.nextNotification('presence.changed')).presence).toBe('offline');

    expect(stranger.client.notifications().filter((x) => x.method === 'presence.changed')).toEqual(
      [],
    );
    await closeAll(pam, stranger);
  });
});
