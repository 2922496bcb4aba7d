/**
 * A malicious signaling server (issue 5): the real server process started with
 * the test-only interception hook (PARLEY_TEST_INTERCEPT, server/intercept.ts;
 * the attacks are in test/fixtures/malicious-intercept.ts) rewrites the sealed
 * SDP and its fingerprint, forges a plain offer, replays, reorders and drops
 * the sealed messages of a call in progress (its ICE restarts), cross-delivers envelopes between the callee's devices, replays an
 * old invite, substitutes device key bundles and account keys, and adds a
 * device of its own to an account. Real `parley` daemons,
 * PulseAudio devices and gnome-keyring. No call may connect unnoticed; each
 * failure carries a security reason on both sides and is audited.
 */
import { readFile, readdir } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AccountDevicesStatus, CallStatus, DeviceAlarm, TrustInfo } from '../../common/protocol/control';
import { accountKeyName } from '../../main/core/e2ee/account-key';
import { INJECTED_DEVICE_ID } from '../fixtures/malicious-intercept';
import { KEYCHAIN_SERVICE } from '../../main/core/keychain-store';
import { identityKeyName } from '../../main/core/e2ee/identity';
import { getSecret } from '../../native/keychain';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir } from '../harness/process';
import { startPulse, type Pulse } from '../harness/pulse';
import { REPO_ROOT, adminRequest, startServer, type RunningServer } from '../harness/server';

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let dir: string;
let modeFile: string;
let alice: RunningClient;
let bob: RunningClient;

/** Chooses the attack the server runs from now on. */
const attack = (mode: string) => writeFileSync(modeFile, JSON.stringify({ mode }));

beforeAll(async () => {
  dir = makeTempDir('malicious');
  modeFile = join(dir, 'mode.json');
  attack('pass');
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer({
    ringTimeoutSeconds: 10,
    intercept: join(REPO_ROOT, 'test/fixtures/malicious-intercept.ts'),
    env: { PARLEY_MALICIOUS_MODE_FILE: modeFile },
  });
  [alice, bob] = await Promise.all([
    startClient({ name: 'alice', server, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
});

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

/** The audit records of a call's security failures (polled: audit writes are asynchronous). */
async function securityAudit(callId: string): Promise<{ event: string; detail: { reason?: string } | null }[]> {
  for (let i = 0; i < 50; i++) {
    const { events } = await adminRequest<{ events: { event: string; detail: { reason?: string } | null }[] }>(
      server.adminSocket,
      'audit.query',
      { callId, event: 'call.security_failure' },
    );
    if (events.length > 0) return events;
    await new Promise((r) => setTimeout(r, 100));
  }
  return [];
}

const ended = (c: RunningClient, callId: string) => c.waitForCall(callId, (s) => s.state === 'ended', 20_000);

/** Alice calls Bob under `mode`; both ends must end `failed` with `reason`, never active, and the failure is audited. */
async function refusedCall(mode: string, reason: string, opts: { answer?: boolean } = {}): Promise<{ a: CallStatus; b: CallStatus }> {
  attack(mode);
  try {
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
    if (opts.answer) {
      await bob.waitForCall(callId, (s) => s.state === 'incoming');
      await bob.request('answer_call', { callId }).catch(() => {});
    }
    const [a, b] = await Promise.all([ended(alice, callId), ended(bob, callId)]);
    for (const s of [a, b]) {
      expect(s.endReason).toBe('failed');
      expect(s.connectedAt).toBeUndefined();
    }
    expect([a.security, b.security]).toContain(reason);
    expect(a.security).toBeDefined();
    expect(b.security).toBeDefined();
    const events = [...alice.events, ...bob.events].filter((e) => e.callId === callId);
    expect(events.some((e) => e.state === 'active')).toBe(false);
    const audit = await securityAudit(callId);
    expect(audit.map((e) => e.detail?.reason)).toContain(reason);
    return { a, b };
  } finally {
    attack('pass');
  }
}

/**
 * An answered call under `mode`: Bob's daemon is frozen (SIGSTOP) long enough
 * for Alice, the caller, to restart ICE twice (her audio stalls after 1 s; a
 * restart that has not connected is tried again after 5 s); her sealed
 * restart offers wait for him on the candidate channel, where the server
 * attacks them. Continued, Bob must refuse what he is handed: both ends
 * `failed` with `reason`, audited.
 */
async function refusedMidCall(mode: string, reason: string): Promise<void> {
  const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
  await bob.waitForCall(callId, (s) => s.state === 'incoming');
  await bob.request('answer_call', { callId });
  await Promise.all([alice.waitForCall(callId, (s) => s.state === 'active'), bob.waitForCall(callId, (s) => s.state === 'active')]);
  attack(mode);
  try {
    bob.kill('SIGSTOP');
    try {
      // Two restart offers from Alice: the first when her audio stalls, the second 5 s later.
      await alice.waitForCall(callId, (s) => s.media === 'reconnecting', 5_000);
      await new Promise((r) => setTimeout(r, 6_000));
    } finally {
      bob.kill('SIGCONT');
    }
    const [a, b] = await Promise.all([ended(alice, callId), ended(bob, callId)]);
    for (const s of [a, b]) expect(s.endReason).toBe('failed');
    expect(b.security).toBe(reason);
    expect(a.security).toBeDefined();
    const audit = await securityAudit(callId);
    expect(audit.map((e) => e.detail?.reason)).toContain(reason);
  } finally {
    bob.kill('SIGCONT');
    attack('pass');
  }
}

describe('malicious server', () => {
  it('malicious-server baseline: an honest run of the same server gives a sealed, fingerprint-bound call and the same safety number on both ends', async () => {
    expect(server.stderr()).toContain('TEST INTERCEPTION HOOK ACTIVE');
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('answer_call', { callId });
    const [a, b] = await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active'),
      bob.waitForCall(callId, (s) => s.state === 'active'),
    ]);
    expect(a.e2ee).toMatchObject({ sealed: true, fingerprintBound: true });
    expect(b.e2ee).toMatchObject({ sealed: true, fingerprintBound: true });
    await alice.request('end_call', { callId });
    await Promise.all([ended(alice, callId), ended(bob, callId)]);
    const [sa, sb] = await Promise.all([
      alice.request<{ safetyNumber: string }>('get_safety_number', { username: 'bob' }),
      bob.request<{ safetyNumber: string }>('get_safety_number', { username: 'alice' }),
    ]);
    expect(sa.safetyNumber).toMatch(/^(\d{5} ){11}\d{5}$/);
    expect(sa.safetyNumber).toBe(sb.safetyNumber);
  });

  it('malicious server rewrites the sealed offer (SDP and fingerprint): the callee never rings, both sides fail with a security reason', async () => {
    const { b } = await refusedCall('tamper_offer', 'envelope_invalid');
    expect(bob.events.some((e) => e.callId === b.callId && e.state === 'incoming')).toBe(false);
  });

  it('malicious server replaces the offer with its own plain SDP and fingerprint: refused as unsealed', async () => {
    await refusedCall('plain_offer', 'unsealed');
  });

  it('malicious server rewrites the sealed answer: the caller refuses it and the call never connects', async () => {
    await refusedCall('tamper_answer', 'envelope_invalid', { answer: true });
  });

  // The candidates travel inside the sealed offer and answer (werift gathers before it writes the
  // description), so a call's set-up sends nothing on the candidate channel. What does travel there, sealed
  // and numbered, are the ICE restarts of a call whose path broke: these three attack that.
  it('malicious server replays a sealed in-call message (an ICE restart offer): refused as replayed', async () => {
    await refusedMidCall('replay_candidates', 'replayed');
  });

  it('malicious server reorders (swaps) sealed in-call messages: refused', async () => {
    await refusedMidCall('reorder_candidates', 'replayed');
  });

  it('malicious server drops a sealed in-call message: noticed, the call fails', async () => {
    await refusedMidCall('drop_first_candidate', 'replayed');
  });

  it('malicious server replays an old invite under a new call id: refused', async () => {
    await refusedCall('replay_invite', 'envelope_invalid');
  });

  it('malicious server replays a recorded invite after the callee restarts Parley: it never rings again, refused as replayed', async () => {
    const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
    await bob.waitForCall(callId, (s) => s.state === 'incoming');
    await bob.request('reject_call', { callId });
    await Promise.all([ended(alice, callId), ended(bob, callId)]);
    attack('replay_invite_after_restart');
    try {
      const before = bob.events.length;
      await bob.restart();
      // The server plays the recorded invite on bob's new connection, right after
      // hello (possibly before the test's control client is back): ask the daemon.
      let status: CallStatus | undefined;
      for (let i = 0; i < 100 && status?.state !== 'ended' && status?.state !== 'incoming'; i++) {
        status = await bob.request<CallStatus>('get_call_status', { callId }).catch(() => undefined);
        if (status?.state !== 'ended' && status?.state !== 'incoming') await new Promise((r) => setTimeout(r, 100));
      }
      expect(status?.state).toBe('ended');
      expect(status?.security).toBe('replayed');
      expect(status?.error).toMatch(/delivered before/);
      expect(bob.events.slice(before).some((e) => e.callId === callId && e.state === 'incoming')).toBe(false);
    } finally {
      attack('pass');
    }
  });

  it('malicious server cross-delivers sealed invites between two devices of the callee: a payload opens only on its own device', async () => {
    // Bob's second device, linked by his first (which holds his account key), so that callers ring it.
    const bob2 = await startClient({ name: 'bob', register: false, linkFrom: bob, server, env: { ...pulse.env, ...keyring.env } });
    try {
      const { b } = await refusedCall('cross_deliver', 'envelope_invalid');
      // The device that got its own envelope opened it (it rang) before the other device's report ended the call.
      const other = await ended(bob2, b.callId);
      expect([b.security, other.security]).toContain('envelope_invalid');
      expect(bob.events.some((e) => e.callId === b.callId && e.state === 'incoming') !== bob2.events.some((e) => e.callId === b.callId && e.state === 'incoming')).toBe(true);
    } finally {
      await bob2.stop();
    }
  });

  it('malicious server injects a device into bob\'s account: alice never rings it and is told why, bob\'s own device still rings, and bob\'s client raises a device alarm', async () => {
    attack('inject_device');
    try {
      const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'bob' });
      // Alice: the injected device was not sealed for (not rung), with the security reason, in the call status and a notice.
      const a = await alice.request<CallStatus>('get_call_status', { callId });
      expect(a.e2ee?.refusedDevices).toContain(INJECTED_DEVICE_ID);
      const refused = await alice.waitForNotification<{ username: string; deviceId: string; reason: string; message: string }>(
        'trust.device_refused',
        (p) => p.deviceId === INJECTED_DEVICE_ID,
      );
      expect(refused).toMatchObject({ username: 'bob', reason: 'device_uncertified', message: expect.stringContaining("not signed by bob's account key") });
      // Bob's real device rings as before.
      await bob.waitForCall(callId, (s) => s.state === 'incoming');
      await alice.request('end_call', { callId });
      await Promise.all([ended(alice, callId), ended(bob, callId)]);
      // Nothing of the injected device is pinned as bob's, and calls with bob are not blocked.
      const trust = await alice.request<TrustInfo>('get_trust', { username: 'bob' });
      expect(trust.devices.map((d) => d.deviceId)).not.toContain(INJECTED_DEVICE_ID);
      expect(trust.blocked).toBe(false);
      // Bob: an alarm about a device none of his devices linked, in the CLI-visible status and as a notification.
      const own = await bob.request<AccountDevicesStatus>('get_account_devices');
      expect(own.role).toBe('holder');
      expect(own.alarms).toContainEqual(expect.objectContaining({ kind: 'device_uncertified', deviceId: INJECTED_DEVICE_ID }));
      expect(own.approved.map((d) => d.deviceId)).not.toContain(INJECTED_DEVICE_ID);
      const alarm = await bob.waitForNotification<DeviceAlarm>('account.device_alarm', (p) => p.deviceId === INJECTED_DEVICE_ID);
      expect(alarm.message).toMatch(/revoke/);
    } finally {
      attack('pass');
    }
    // Once the server lists the device no more, the alarm clears; bob's trust data was never touched.
    const own = await bob.request<AccountDevicesStatus>('get_account_devices');
    expect(own.alarms).toEqual([]);
    await expect(bob.request<TrustInfo>('get_trust', { username: 'alice' })).resolves.toMatchObject({ blocked: false });
  });

  it('malicious server turns bob\'s invite into one from a device it injected into his account: alice\'s phone never rings, both ends fail with device_uncertified and alice is told', async () => {
    attack('invite_from_injected');
    try {
      const { callId } = await bob.request<{ callId: string }>('create_call', { to: 'alice' });
      const [a, b] = await Promise.all([ended(alice, callId), ended(bob, callId)]);
      for (const s of [a, b]) {
        expect(s.endReason).toBe('failed');
        expect(s.connectedAt).toBeUndefined();
      }
      expect(a.security).toBe('device_uncertified');
      expect(b.security).toBe('device_uncertified');
      expect(a.error).toMatch(/not signed by bob's account key/);
      expect(alice.events.some((e) => e.callId === callId && e.state === 'incoming')).toBe(false);
      await alice.waitForNotification<{ deviceId: string }>('trust.device_refused', (p) => p.deviceId === INJECTED_DEVICE_ID);
      const audit = await securityAudit(callId);
      expect(audit.map((e) => e.detail?.reason)).toContain('device_uncertified');
    } finally {
      attack('pass');
    }
  });

  it('malicious server substitutes device key bundles: a pinned contact is blocked with key_changed; a first contact sees different safety numbers', async () => {
    attack('substitute_bundle');
    try {
      await expect(alice.request('create_call', { to: 'bob' })).rejects.toMatchObject({ reason: 'key_changed' });
      const trust = await alice.request<{ blocked: boolean; verified: boolean; devices: { pending?: { kind: string } }[] }>('get_trust', { username: 'bob' });
      expect(trust.blocked).toBe(true);
      expect(trust.devices.some((d) => d.pending?.kind === 'changed')).toBe(true);
      await expect(alice.request('get_safety_number', { username: 'bob' })).rejects.toMatchObject({ reason: 'key_changed' });
      // First contact (trust on first use): the substitution shows as different safety numbers.
      const carol = await startClient({ name: 'carol', server, env: { ...pulse.env, ...keyring.env } });
      try {
        await makeClientContacts(carol, bob);
        const [sc, sb] = await Promise.all([
          carol.request<{ safetyNumber: string }>('get_safety_number', { username: 'bob' }),
          bob.request<{ safetyNumber: string }>('get_safety_number', { username: 'carol' }),
        ]);
        expect(sc.safetyNumber).not.toBe(sb.safetyNumber);
      } finally {
        await carol.stop();
      }
    } finally {
      attack('pass');
    }
    // Still blocked once the server behaves: only the user's acceptance lifts it.
    await expect(alice.request('create_call', { to: 'bob' })).rejects.toMatchObject({
      reason: 'key_changed',
      message: expect.stringContaining('safety number'),
    });
  });

  it('malicious-server aftermath: no private key or device token in the data folders, the logs or the server database', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, keyring.env);
    const secrets: string[] = [];
    try {
      for (const c of [alice, bob]) {
        const profile = JSON.parse(await readFile(join(c.dataDir, 'profile.json'), 'utf8')) as { serverUrl: string; deviceId: string };
        const host = new URL(profile.serverUrl).host;
        const token = await getSecret(KEYCHAIN_SERVICE, `${c.name}@${host}`);
        const identity = await getSecret(KEYCHAIN_SERVICE, identityKeyName({ username: c.name, deviceId: profile.deviceId, serverHost: host }));
        const account = await getSecret(KEYCHAIN_SERVICE, accountKeyName({ username: c.name, serverHost: host }));
        expect(token).toBeTruthy();
        expect(identity).toBeTruthy();
        expect(account).toBeTruthy(); // each first device holds its account key, in the keychain only
        secrets.push(token!);
        const accountSeed = (JSON.parse(account!) as { ed25519: string }).ed25519;
        secrets.push(accountSeed, Buffer.from(accountSeed, 'base64url').toString('base64'), Buffer.from(accountSeed, 'base64url').toString('hex'));
        const keys = JSON.parse(identity!) as { ed25519: string; x25519: string; mlkem: string };
        for (const k of [keys.ed25519, keys.x25519, keys.mlkem]) {
          const raw = Buffer.from(k, 'base64url');
          secrets.push(k, raw.toString('base64'), raw.toString('hex'));
        }
      }
    } finally {
      process.env = saved;
    }
    const haystacks: { name: string; data: Buffer }[] = [
      { name: 'alice log', data: Buffer.from(alice.log()) },
      { name: 'bob log', data: Buffer.from(bob.log()) },
      { name: 'server stdout', data: Buffer.from(server.stdout()) },
      { name: 'server stderr', data: Buffer.from(server.stderr()) },
    ];
    for (const folder of [alice.dataDir, bob.dataDir, server.dataDir]) {
      for (const f of await readdir(folder, { recursive: true })) {
        const data = await readFile(join(folder, f)).catch(() => undefined);
        if (data) haystacks.push({ name: join(folder, f), data });
      }
    }
    // The grep works: the public identity keys are in the server database.
    const db = Buffer.concat(haystacks.filter((h) => h.name.includes('parley.sqlite')).map((h) => h.data));
    const trust = await alice.request<{ devices: { identityKey: string }[] }>('get_trust', { username: 'bob' });
    expect(db.includes(trust.devices[0]!.identityKey)).toBe(true);
    for (const h of haystacks) {
      for (const s of secrets) expect(h.data.includes(s), `${h.name} holds a secret`).toBe(false);
    }
  });
});
