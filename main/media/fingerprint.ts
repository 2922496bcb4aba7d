import { createHash } from 'node:crypto';

/** Hash algorithms of `a=fingerprint` (RFC 8122 §5) accepted for the binding (SHA-1 is not). */
const FINGERPRINT_HASHES: Record<string, string> = { 'sha-256': 'sha256', 'sha-384': 'sha384', 'sha-512': 'sha512' };

/** The `a=fingerprint` lines of an SDP (RFC 8122 §5): algorithm (lower case) and value (upper-case hex, no colons). */
export function sdpFingerprints(sdp: string): { algorithm: string; value: string }[] {
  const out: { algorithm: string; value: string }[] = [];
  for (const m of sdp.matchAll(/^a=fingerprint:(\S+)\s+([0-9A-Fa-f:]+)\s*$/gm)) {
    out.push({ algorithm: m[1]!.toLowerCase(), value: m[2]!.replace(/:/g, '').toUpperCase() });
  }
  return out;
}

/**
 * Compares the DTLS peer certificate (DER) with the fingerprints of the SDP that
 * arrived sealed (RFC 8827 §6.5 / RFC 5763 §5: the certificate must match a
 * fingerprint from the signaling; here the signaling is end-to-end signed).
 * @returns `match`, `mismatch`, or `none` (no certificate, or no fingerprint with a supported hash).
 */
export function checkFingerprint(certificateDer: Uint8Array | undefined, sealedSdp: string): 'match' | 'mismatch' | 'none' {
  if (!certificateDer) return 'none';
  const fps = sdpFingerprints(sealedSdp).filter((f) => FINGERPRINT_HASHES[f.algorithm]);
  if (fps.length === 0) return 'none';
  const actual = (alg: string) => createHash(FINGERPRINT_HASHES[alg]!).update(certificateDer).digest('hex').toUpperCase();
  return fps.some((f) => actual(f.algorithm) === f.value) ? 'match' : 'mismatch';
}
