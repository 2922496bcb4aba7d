/**
 * A man in the middle on the TURN path (test/harness/dtls-mitm.ts) swaps
 * DTLS certificates: it learns both devices' certificates from one honest
 * call, then, in the next call, runs a handshake of its own with each side,
 * showing each the certificate its sealed SDP announced while signing with
 * its own key. With werift as published the call connects, both screens say
 * "End-to-end encrypted" and the relay decrypts the audio; with Parley's
 * patch (patches/werift+0.25.2.patch) the handshake must fail on both sides
 * with the security reason `dtls_unauthenticated`, never connect, and be
 * audited. Real daemons, server, coturn, PulseAudio and gnome-keyring.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeClientContacts, startClient, type RunningClient } from '../harness/client';
import { startCoturn, type Coturn } from '../harness/coturn';
import { startDtlsMitm, type DtlsMitm } from '../harness/dtls-mitm';
import { startKeyring, type Keyring } from '../harness/keyring';
import { startPulse, type Pulse } from '../harness/pulse';
import { adminRequest, startServer, type RunningServer } from '../harness/server';

let pulse: Pulse;
let keyring: Keyring;
let coturn: Coturn;
let mitm: DtlsMitm;
let server: RunningServer;
let alice: RunningClient;
let bob: RunningClient;

beforeAll(async () => {
  [pulse, keyring, coturn] = await Promise.all([startPulse(), startKeyring(), startCoturn()]);
  mitm = await startDtlsMitm({ upstream: { host: coturn.host, port: coturn.port } });
  server = await startServer({ turn: { urls: [mitm.url()], secret: coturn.secret, ttlSeconds: 600 } });
  [alice, bob] = await Promise.all([
    startClient({ name: 'malice', server, relay: true, env: { ...pulse.clientEnv('a'), ...keyring.env }, input: 'a_mic', output: 'a_spk' }),
    startClient({ name: 'mbob', server, relay: true, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' }),
  ]);
  await makeClientContacts(alice, bob);
});

afterAll(async () => {
  await Promise.allSettled([alice?.stop(), bob?.stop()]);
  await server?.stop();
  await mitm?.stop();
  await Promise.allSettled([coturn?.stop(), keyring?.stop(), pulse?.stop()]);
});

async function call(): Promise<string> {
  const { callId } = await alice.request<{ callId: string }>('create_call', { to: 'mbob' });
  await bob.waitForCall(callId, (s) => s.state === 'incoming');
  await bob.request('answer_call', { callId });
  return callId;
}

describe('a relay in the middle swaps DTLS certificates', () => {
  it('an honest call through the relay connects, relayed and fingerprint-bound, and the relay learns both certificates', async () => {
    const callId = await call();
    const [a, b] = await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
      bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt),
    ]);
    expect(a.transport).toBe('relay');
    expect(a.e2ee).toMatchObject({ sealed: true, fingerprintBound: true, mediaKeysBound: true });
    expect(b.e2ee).toMatchObject({ sealed: true, fingerprintBound: true, mediaKeysBound: true });
    await alice.request('end_call', { callId });
    await Promise.all([alice.waitForCall(callId, (s) => s.state === 'ended'), bob.waitForCall(callId, (s) => s.state === 'ended')]);
    expect(mitm.stats.channelData).toBeGreaterThan(0);
    expect(mitm.stats.serverCertificate?.length).toBeGreaterThan(100);
    expect(mitm.stats.clientCertificate?.length).toBeGreaterThan(100);
    expect(mitm.stats.serverCertificate!.equals(mitm.stats.clientCertificate!)).toBe(false);
  });

  it('the next call, attacked: both sides fail with dtls_unauthenticated, never active, the relay hears nothing, the failure is audited', async () => {
    mitm.mode = 'attack';
    const callId = await call();
    const [a, b] = await Promise.all([
      alice.waitForCall(callId, (s) => s.state === 'ended', 30_000),
      bob.waitForCall(callId, (s) => s.state === 'ended', 30_000),
    ]);
    expect(mitm.stats.attacks).toBeGreaterThan(0);
    for (const s of [a, b]) {
      expect(s.endReason).toBe('failed');
      expect(s.connectedAt).toBeUndefined();
      expect(s.security).toBe('dtls_unauthenticated');
      expect(s.error).toMatch(/certificate that is not theirs|security/);
    }
    const events = [...alice.events, ...bob.events].filter((e) => e.callId === callId);
    expect(events.some((e) => e.state === 'active')).toBe(false);
    expect(mitm.stats.legsConnected).toBe(0);
    expect(mitm.stats.decryptedRtp).toBe(0);
    let audit: { detail: { reason?: string } | null }[] = [];
    for (let i = 0; i < 50 && audit.length === 0; i++) {
      ({ events: audit } = await adminRequest<{ events: typeof audit }>(server.adminSocket, 'audit.query', { callId, event: 'call.security_failure' }));
      if (audit.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(audit.map((e) => e.detail?.reason)).toContain('dtls_unauthenticated');
  });
});
