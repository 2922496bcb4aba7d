import { createHmac } from 'node:crypto';
import type { IceServer } from '../common/protocol/signaling';

/**
 * Time-limited TURN credentials by the coturn "TURN REST API" scheme
 * (draft-uberti-behave-turn-rest-00 §2.2, coturn `--use-auth-secret`):
 * `username = "<unix expiry seconds>:<account id>"`,
 * `credential = base64(HMAC-SHA1(shared secret, username))`.
 *
 * @param secret coturn's `--static-auth-secret`; never logged.
 * @param accountId the account the credential is for (becomes part of the username).
 * @param ttlSeconds lifetime; coturn refuses the credential after `now + ttlSeconds`.
 * @param nowMs current time in Unix ms (injectable for tests).
 */
export function issueTurnCredential(
  secret: string,
  accountId: string,
  ttlSeconds: number,
  nowMs: number = Date.now(),
): { username: string; credential: string; expiresAt: number } {
  const expiresAt = Math.floor(nowMs / 1000) + ttlSeconds;
  const username = `${expiresAt}:${accountId}`;
  const credential = createHmac('sha1', secret).update(username).digest('base64');
  return { username, credential, expiresAt };
}

/** The RTCIceServer entries for the configured TURN URLs with a fresh credential. */
export function relayIceServers(
  urls: string[],
  secret: string,
  accountId: string,
  ttlSeconds: number,
  nowMs: number = Date.now(),
): { iceServers: IceServer[]; expiresAt: number } {
  const c = issueTurnCredential(secret, accountId, ttlSeconds, nowMs);
  return {
    iceServers: urls.length ? [{ urls, username: c.username, credential: c.credential }] : [],
    expiresAt: c.expiresAt,
  };
}
