import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mixSrtpKeys, type SrtpKeys } from '../../main/media/srtp-binding';
import { INVITE_FRESHNESS_MS, SeenInvites } from '../../main/core/e2ee/seen-invites';
import { SealError } from '../../main/core/e2ee/seal';

const bytes = (n: number, fill: number) => Buffer.alloc(n, fill);
/** What the DTLS exporter hands the client and the server of one association (RFC 5764 §4.2). */
const exported = (keyLen: number, saltLen: number): { client: SrtpKeys; server: SrtpKeys } => {
  const [ck, sk, cs, ss] = [bytes(keyLen, 1), bytes(keyLen, 2), bytes(saltLen, 3), bytes(saltLen, 4)];
  return {
    client: { localKey: ck, localSalt: cs, remoteKey: sk, remoteSalt: ss },
    server: { localKey: sk, localSalt: ss, remoteKey: ck, remoteSalt: cs },
  };
};
const binding = (secretFill: number, context = 'call-1') => ({ secret: bytes(32, secretFill), context: Buffer.from(context) });

describe('SRTP keys bound to the sealed secret (mixSrtpKeys)', () => {
  it.each([
    ['AES_CM_128_HMAC_SHA1_80', 16, 14],
    ['AEAD_AES_128_GCM', 16, 12],
  ])('%s: both ends derive the same key for each direction, of the profile lengths, unlike the DTLS keys', (_p, keyLen, saltLen) => {
    const e = exported(keyLen, saltLen);
    const c = mixSrtpKeys(e.client, 'client', binding(9));
    const s = mixSrtpKeys(e.server, 'server', binding(9));
    expect(c.localKey.equals(s.remoteKey)).toBe(true);
    expect(c.localSalt.equals(s.remoteSalt)).toBe(true);
    expect(s.localKey.equals(c.remoteKey)).toBe(true);
    expect(s.localSalt.equals(c.remoteSalt)).toBe(true);
    expect([c.localKey.length, c.localSalt.length, c.remoteKey.length, c.remoteSalt.length]).toEqual([keyLen, saltLen, keyLen, saltLen]);
    expect(c.localKey.equals(e.client.localKey)).toBe(false);
    expect(c.localKey.equals(c.remoteKey)).toBe(false); // the two directions differ
  });

  it.each([
    ['another secret (a relay that joined the DTLS handshake but cannot open the sealed shares)', binding(8)],
    ['another call or shares (the context)', binding(9, 'call-2')],
  ])('%s gives other keys', (_what, other) => {
    const e = exported(16, 14);
    const mine = mixSrtpKeys(e.client, 'client', binding(9));
    const theirs = mixSrtpKeys(e.server, 'server', other);
    expect(mine.localKey.equals(theirs.remoteKey)).toBe(false);
  });

  it('refuses a secret that is not 32 bytes', () => {
    expect(() => mixSrtpKeys(exported(16, 14).client, 'client', { secret: bytes(16, 1), context: Buffer.from('x') })).toThrow(/32 bytes/);
  });
});

describe('seen invites (replay protection across restarts)', () => {
  const dir = () => mkdtempSync(join(tmpdir(), 'parley-seen-'));

  it('admits an invite once; the same call id again is refused as replayed, also after reopening (a restart)', () => {
    const d = dir();
    try {
      const now = 1_800_000_000_000;
      SeenInvites.open(d).admit('call-a', now - 2000, now);
      expect(() => SeenInvites.open(d).admit('call-a', now - 2000, now + 1000)).toThrow(SealError);
      try {
        SeenInvites.open(d).admit('call-a', now, now);
      } catch (e) {
        expect((e as SealError).reason).toBe('replayed');
        expect((e as Error).message).toMatch(/delivered before/);
      }
      SeenInvites.open(d).admit('call-b', now, now); // another call is fine
      expect(statSync(join(d, 'seen-invites.json')).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(d, 'seen-invites.json'), 'utf8')).not.toMatch(/sdp|offer/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it.each([
    ['sealed longer ago than the window', -INVITE_FRESHNESS_MS - 1000, /min ago/],
    ['dated in the future beyond the window', INVITE_FRESHNESS_MS + 60_000, /future/],
    ['without a signed time', undefined, /no signed time/],
  ])('refuses an invite %s', (_what, offset, message) => {
    const d = dir();
    try {
      const now = 1_800_000_000_000;
      expect(() => SeenInvites.open(d).admit('call-x', offset === undefined ? undefined : now + offset, now)).toThrow(message);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('forgets call ids older than the window (the timestamp refuses those) and survives a damaged file', () => {
    const d = dir();
    try {
      const now = 1_800_000_000_000;
      const s = SeenInvites.open(d);
      s.admit('old', now - 60_000, now - 60_000);
      s.admit('new', now + INVITE_FRESHNESS_MS, now + INVITE_FRESHNESS_MS);
      expect(readFileSync(join(d, 'seen-invites.json'), 'utf8')).not.toContain('"old"');
      let why = '';
      writeFileSync(join(d, 'seen-invites.json'), '{not json');
      SeenInvites.open(d, (w) => (why = w)).admit('fresh', now, now);
      expect(why).toMatch(/cannot read|expected shape|JSON/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
