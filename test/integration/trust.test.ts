/**
 * Trust on first use and key changes (docs/SECURITY.md "Trust"), seen from a
 * real `parley` daemon (Bob) called by a hand-driven device (Dave) that seals
 * its offers with the real sealing code: Bob pins Dave's device key at the
 * first call; after Dave's device key changes, Bob's daemon refuses his calls
 * with a key-change error (both sides see `failed` / `key_mismatch`) until Bob
 * accepts the change; marking verified is then possible again.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KeyBundle } from '../../common/protocol/envelope';
import { DeviceIdentity } from '../../main/core/e2ee/identity';
import { seal } from '../../main/core/e2ee/seal';
import { runParley, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { startPulse, type Pulse } from '../harness/pulse';
import { startServer, type RunningServer } from '../harness/server';
import { signIn, type SignedInDevice } from '../harness/signal-client';

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let bob: RunningClient;
let dave: SignedInDevice;

beforeAll(async () => {
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer({ ringTimeoutSeconds: 5 });
  bob = await startClient({ name: 'bob', server, env: { ...pulse.env, ...keyring.env } });
  dave = await signIn(server, 'dave');
  await dave.client.request('contacts.request', { username: 'bob' });
  await bob.request('accept_contact', { username: 'dave' });
});

afterAll(async () => {
  dave?.client.close();
  await bob?.stop();
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
});

/** Dave (with `identity`) sends Bob a sealed invite; resolves with the call id. */
async function daveCalls(identity: DeviceIdentity): Promise<string> {
  await dave.client.request('keys.publish', { bundle: identity.bundle });
  const { devices } = await dave.client.request('keys.get', { username: 'bob' });
  const callId = randomUUID();
  const envelopes = Object.fromEntries(
    devices.map((d: { deviceId: string; bundle: KeyBundle }) => [
      d.deviceId,
      seal(identity, d.bundle, { callId, role: 'caller', n: 0 }, { content: { type: 'offer', sdp: 'v=0\r\n', sentAt: Date.now() }, bundle: identity.bundle }),
    ]),
  );
  await dave.client.request('call.invite', { callId, callee: 'bob', envelopes });
  return callId;
}

describe('trust on first use', () => {
  it('pins a contact device at the first call, blocks a changed key until accepted, and clears the verified mark', async () => {
    const first = DeviceIdentity.ephemeral('dave', dave.deviceId);
    const call1 = await daveCalls(first);
    await bob.waitForCall(call1, (s) => s.state === 'incoming');
    await dave.client.request('call.cancel', { callId: call1 });
    await bob.waitForCall(call1, (s) => s.state === 'ended');
    const pinned = await bob.request<{ verified: boolean; blocked: boolean; devices: { identityKey: string }[] }>('get_trust', { username: 'dave' });
    expect(pinned).toMatchObject({ verified: false, blocked: false });
    expect(pinned.devices.map((d) => d.identityKey)).toEqual([first.identityKey]);
    expect((await bob.request<{ verified: boolean }>('mark_verified', { username: 'dave' })).verified).toBe(true);

    // Dave's device comes back with another identity key (reinstalled — or a server lying).
    const second = DeviceIdentity.ephemeral('dave', dave.deviceId);
    const call2 = await daveCalls(second);
    const refused = await bob.waitForCall(call2, (s) => s.state === 'ended');
    expect(refused).toMatchObject({ endReason: 'failed', security: 'key_mismatch' });
    expect(refused.error).toMatch(/security keys of dave changed/);
    expect(bob.events.some((e) => e.callId === call2 && e.state === 'incoming')).toBe(false);
    const ended = await dave.client.nextNotification('call.ended', { callId: call2 });
    expect(ended).toMatchObject({ reason: 'failed', security: 'key_mismatch' });
    const blocked = await bob.request<{ verified: boolean; blocked: boolean; devices: { pending?: { kind: string; identityKey: string } }[] }>('get_trust', { username: 'dave' });
    expect(blocked.verified).toBe(false);
    expect(blocked.blocked).toBe(true);
    expect(blocked.devices[0]!.pending).toMatchObject({ kind: 'changed', identityKey: second.identityKey });
    await expect(bob.request('mark_verified', { username: 'dave' })).rejects.toMatchObject({ reason: 'key_changed' });
    // Bob calling Dave is blocked too, with the words the user needs.
    await expect(bob.request('create_call', { to: 'dave' })).rejects.toMatchObject({
      reason: 'key_changed',
      message: expect.stringContaining('safety number'),
    });

    // Bob accepts the change: Dave's calls ring again, the safety number is there, verified can be set anew.
    await bob.request('accept_key_change', { username: 'dave' });
    const call3 = await daveCalls(second);
    await bob.waitForCall(call3, (s) => s.state === 'incoming');
    await dave.client.request('call.cancel', { callId: call3 });
    const sn = await bob.request<{ safetyNumber: string; verified: boolean }>('get_safety_number', { username: 'dave' });
    expect(sn.safetyNumber).toMatch(/^(\d{5} ){11}\d{5}$/);
    expect(sn.verified).toBe(false);
    // The CLI shows the same number and marks the contact verified.
    const out = await runParley(['safety-number', 'dave', '--verify'], { ...keyring.env, PARLEY_DATA_DIR: bob.dataDir, PARLEY_SOCKET: bob.socket });
    expect(out.replace(/\s+/g, ' ')).toContain(sn.safetyNumber);
    expect(out).toContain('dave marked verified');
    expect((await bob.request<{ verified: boolean }>('get_trust', { username: 'dave' })).verified).toBe(true);
  });
});
