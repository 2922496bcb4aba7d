/**
 * werift's DTLS 1.2 must prove possession of the key behind the certificate it
 * shows (RFC 8827 §6.5; RFC 5246 §7.4.3 ServerKeyExchange, §7.4.8
 * CertificateVerify, §7.4.9 Finished). Upstream werift 0.25 checked none of
 * these, so a peer could show someone else's (public) certificate while
 * signing with its own key and the handshake completed: the relay in the
 * middle of a call then saw each side's expected fingerprint.
 * patches/werift+0.25.2.patch adds the checks; these are the attacks against
 * werift's own DtlsServer and DtlsClient, over an in-memory datagram pair,
 * for both signature schemes werift offers (ecdsa_secp256r1_sha256,
 * rsa_pkcs1_sha256) and for both of its builds (the ESM bundle Parley loads
 * and the CommonJS files).
 */
import { createRequire } from 'node:module';
import * as esm from 'werift';
import { describe, expect, it } from 'vitest';

type Werift = typeof esm;
const cjs = createRequire(import.meta.url)('werift') as Werift;

type Cert = { certPem: string; keyPem: string; signatureHash: { hash: number; signature: number } };

/** One end of a lossless in-memory datagram link (the `transport` werift's DTLS sockets take). */
interface Link {
  onData: (buf: Buffer) => void;
  send(buf: Buffer): Promise<void>;
  close(): void;
}

function linkPair(): [Link, Link] {
  const make = (): Link & { peer?: Link; closed: boolean } => ({
    onData: () => {},
    closed: false,
    send(buf) {
      const peer = this.peer;
      if (!this.closed && peer) setImmediate(() => peer.onData(buf));
      return Promise.resolve();
    },
    close() {
      this.closed = true;
    },
  });
  const a = make();
  const b = make();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

type Outcome = { connected: true } | { connected: false; error: { code?: string; message: string } | undefined; closedByAlert: boolean };

/** Resolves with what a socket came to: connected, failed (its error), or closed by the peer's alert. */
function outcome(socket: { onConnect: { once(f: () => void): void }; onError: { once(f: (e: Error) => void): void }; onClose: { once(f: () => void): void } }, ms = 9000): Promise<Outcome> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ connected: false, error: undefined, closedByAlert: false }), ms);
    socket.onConnect.once(() => {
      clearTimeout(timer);
      resolve({ connected: true });
    });
    socket.onError.once((e) => {
      clearTimeout(timer);
      resolve({ connected: false, error: e as Error & { code?: string }, closedByAlert: false });
    });
    socket.onClose.once(() => {
      clearTimeout(timer);
      resolve({ connected: false, error: undefined, closedByAlert: true });
    });
  });
}

/**
 * Runs one handshake: a DtlsServer that shows `server.cert` and signs with
 * `server.key`'s private key, against a DtlsClient likewise (certificates
 * requested, as WebRTC does).
 */
async function handshake(w: Werift, server: { cert: Cert; key: Cert }, client: { cert: Cert; key: Cert }) {
  const [sLink, cLink] = linkPair();
  const common = { srtpProfiles: [1], extendedMasterSecret: true };
  const s = new w.DtlsServer({
    ...common,
    cert: server.cert.certPem,
    key: server.key.keyPem,
    signatureHash: server.key.signatureHash,
    transport: sLink,
    certificateRequest: true,
  } as never);
  const c = new w.DtlsClient({
    ...common,
    cert: client.cert.certPem,
    key: client.key.keyPem,
    signatureHash: client.key.signatureHash,
    transport: cLink,
  } as never);
  const results = Promise.all([outcome(s), outcome(c)]);
  await c.connect();
  const [so, co] = await results;
  sLink.close();
  cLink.close();
  return { server: so, client: co, s, c };
}

const ecdsa = (w: Werift) =>
  w.CipherContext.createSelfSignedCertificateWithKey(
    { signature: w.SignatureAlgorithm.ecdsa_3, hash: w.HashAlgorithm.sha256_4 },
    w.NamedCurveAlgorithm.secp256r1_23,
  ) as Promise<Cert>;
const rsa = (w: Werift) =>
  w.CipherContext.createSelfSignedCertificateWithKey(
    { signature: w.SignatureAlgorithm.rsa_1, hash: w.HashAlgorithm.sha256_4 },
    w.NamedCurveAlgorithm.x25519_29,
  ) as Promise<Cert>;

const refused = (o: Outcome) => {
  expect(o.connected).toBe(false);
  if (!o.connected && o.error) expect(o.error.code).toBe('ERR_DTLS_HANDSHAKE_AUTH');
};

describe.each([
  ['ESM bundle', esm],
  ['CommonJS', cjs],
] as const)('werift DTLS handshake authentication (%s)', (_build, w) => {
  describe.each([
    ['ecdsa_secp256r1_sha256', ecdsa],
    ['rsa_pkcs1_sha256', rsa],
  ] as const)('%s', (_scheme, make) => {
    it('an honest handshake connects, both sides see the other certificate and export the same SRTP keys', async () => {
      const [a, b] = await Promise.all([make(w), make(w)]);
      const r = await handshake(w, { cert: a, key: a }, { cert: b, key: b });
      expect(r.server.connected).toBe(true);
      expect(r.client.connected).toBe(true);
      const ks = r.s.extractSessionKeys(16, 14);
      const kc = r.c.extractSessionKeys(16, 14);
      expect(Buffer.from(ks.localKey).equals(Buffer.from(kc.remoteKey))).toBe(true);
      expect(Buffer.from(ks.remoteSalt).equals(Buffer.from(kc.localSalt))).toBe(true);
      expect(Buffer.from(r.c.remoteCertificate!).toString('base64')).toBe(pemBody(a.certPem));
      expect(Buffer.from(r.s.remoteCertificate!).toString('base64')).toBe(pemBody(b.certPem));
    });

    it("the client refuses a server that shows another's certificate and signs its ServerKeyExchange with its own key", async () => {
      const [victim, attacker, client] = await Promise.all([make(w), make(w), make(w)]);
      const r = await handshake(w, { cert: victim, key: attacker }, { cert: client, key: client });
      refused(r.client);
      expect(r.client.connected || r.server.connected).toBe(false);
      if (!r.client.connected) expect(r.client.error?.message).toMatch(/ServerKeyExchange/);
    });

    it("the server refuses a client that shows another's certificate and signs its CertificateVerify with its own key", async () => {
      const [server, victim, attacker] = await Promise.all([make(w), make(w), make(w)]);
      const r = await handshake(w, { cert: server, key: server }, { cert: victim, key: attacker });
      refused(r.server);
      expect(r.server.connected || r.client.connected).toBe(false);
      if (!r.server.connected) expect(r.server.error?.message).toMatch(/CertificateVerify/);
      // The fatal alert tells the client at once instead of leaving it to time out.
      expect(r.client.connected).toBe(false);
    });
  });

  it('the relay in the middle of a call (certificate A on one leg, B on the other, its own key on both) connects neither leg', async () => {
    const [a, b, relayKey] = await Promise.all([ecdsa(w), ecdsa(w), ecdsa(w)]);
    // Toward Alice (the DTLS client) the relay plays Bob's server; toward Bob it plays Alice's client.
    const [towardAlice, towardBob] = await Promise.all([
      handshake(w, { cert: b, key: relayKey }, { cert: a, key: a }),
      handshake(w, { cert: b, key: b }, { cert: a, key: relayKey }),
    ]);
    refused(towardAlice.client);
    refused(towardBob.server);
    expect([towardAlice.client.connected, towardAlice.server.connected, towardBob.client.connected, towardBob.server.connected]).toEqual([false, false, false, false]);
  });

  it('a signature scheme that does not fit the certificate key is refused (an ECDSA signature claimed for an RSA certificate)', async () => {
    const [rsaCert, ecKey, client] = await Promise.all([rsa(w), ecdsa(w), ecdsa(w)]);
    const r = await handshake(w, { cert: rsaCert, key: ecKey }, { cert: client, key: client });
    refused(r.client);
    if (!r.client.connected) expect(r.client.error?.message).toMatch(/does not fit|signature/);
  });
});

/** The base64 DER inside a PEM certificate. */
function pemBody(pem: string): string {
  return pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
}
