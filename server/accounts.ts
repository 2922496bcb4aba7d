import { createHash, createPublicKey, randomBytes, randomUUID, timingSafeEqual, verify as edVerify } from 'node:crypto';
import { hash as argon2Hash, verify as argon2Verify } from '@node-rs/argon2';
import type { Kysely } from 'kysely';
import { ParleyError } from '../common/errors';
import type { LoginReply, PeerInfo } from '../common/protocol/signaling';
import { AccountKey, DeviceCertificate, KeyBundle, accountKeySigningText, bundleSigningText, deviceCertificateSigningText } from '../common/protocol/envelope';
import type { AuditLog } from './audit';
import type { DB } from './db';
import { clientKey, HashGate } from './front-door';

/** argon2id (the @node-rs/argon2 default algorithm) with OWASP's minimum: 19 MiB, t=2, p=1. */
const ARGON2_OPTIONS = { memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;

/** Device tokens: 32 random bytes, base64url. Stored as hex SHA-256 only. */
const TOKEN_BYTES = 32;

/** Hex SHA-256 of a device token: what the devices table keeps. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Accounts and their devices in the store. Passwords are argon2id hashes;
 * device tokens are returned once at login and only their SHA-256 is kept.
 */
export class Accounts {
  /** A hash to verify against for unknown users, so both failures cost the same time. */
  private dummyHash: Promise<string> | undefined;

  /**
   * @param db the store.
   * @param auditLog where registrations and logins (also failed ones) are recorded.
   * @param tokenTtlMs the device token lifetime now, ms (read at each login and refresh).
   * @param hashes the server-wide cap on concurrent argon2 hashes every hash here goes through.
   */
  constructor(
    private readonly db: Kysely<DB>,
    private readonly auditLog: AuditLog,
    private readonly tokenTtlMs: () => number = () => 30 * 86_400_000,
    private readonly hashes: HashGate = new HashGate(0, 32),
  ) {}

  /**
   * Creates an account.
   * @throws ParleyError `already_exists` when the username is taken; `unavailable` (with
   *   `retryAfter`) when the hash cap and its queue are full.
   */
  async register(
    username: string,
    password: string,
  ): Promise<{ accountId: string; username: string }> {
    const passwordHash = await this.hashes.run(() => argon2Hash(password, ARGON2_OPTIONS));
    const id = randomUUID();
    try {
      await this.db
        .insertInto('accounts')
        .values({ id, username, password_hash: passwordHash, created_at: Date.now() })
        .execute();
    } catch (e) {
      if (isUniqueViolation(e))
        throw new ParleyError('already_exists', `an account named ${username} already exists`);
      throw e;
    }
    await this.auditLog.record({ event: 'account.registered', accountId: id });
    return { accountId: id, username };
  }

  /**
   * Checks a password and creates a new device for this login.
   * A failure is audited as `login.failed`, sampled per client address and
   * username (AuditLog.recordSampled), so repeating it does not add a row each time.
   * @param remote the client's address (audit only).
   * @returns the device id and its token (the only time the token is seen).
   * @throws ParleyError `bad_credentials` for an unknown user or a wrong password (same message
   *   for both); `unavailable` (with `retryAfter`) when the hash cap and its queue are full.
   */
  async login(
    username: string,
    password: string,
    deviceName: string,
    remote: string,
  ): Promise<LoginReply> {
    const account = await this.db
      .selectFrom('accounts')
      .select(['id', 'username', 'password_hash'])
      .where('username', '=', username)
      .executeTakeFirst();
    const ok = await this.hashes.run(async () =>
      account
        ? argon2Verify(account.password_hash, password)
        : (await argon2Verify(await this.getDummyHash(), password), false),
    );
    if (!account || !ok) {
      const address = clientKey(remote);
      await this.auditLog.recordSampled(
        `login.failed:${address}:${username}`,
        { event: 'login.failed', accountId: account?.id ?? null, detail: { username, remote } },
        { key: `login.failed:${address}`, detail: { remote } },
      );
      throw new ParleyError('bad_credentials', 'wrong username or password');
    }
    const deviceId = randomUUID();
    const token = randomBytes(TOKEN_BYTES).toString('base64url');
    await this.db
      .insertInto('devices')
      .values({
        id: deviceId,
        account_id: account.id,
        name: deviceName,
        token_hash: hashToken(token),
        created_at: Date.now(),
        last_seen_at: null,
        expires_at: Date.now() + this.tokenTtlMs(),
      })
      .execute();
    await this.auditLog.record({
      event: 'login',
      accountId: account.id,
      deviceId,
      detail: { deviceName },
    });
    return { accountId: account.id, username: account.username, deviceId, token };
  }

  /**
   * Finds the device a token belongs to and marks it seen.
   * @returns the device and when its token expires (Unix ms).
   * @throws ParleyError `unauthenticated` when the device is unknown (or revoked) or the token
   *   does not match; `token_expired` when the token was right but its lifetime is over.
   */
  async authenticateDevice(
    deviceId: string,
    token: string,
  ): Promise<PeerInfo & { tokenExpiresAt: number }> {
    const row = await this.db
      .selectFrom('devices')
      .innerJoin('accounts', 'accounts.id', 'devices.account_id')
      .select([
        'devices.id as deviceId',
        'devices.token_hash',
        'devices.created_at',
        'devices.expires_at',
        'accounts.id as accountId',
        'accounts.username',
      ])
      .where('devices.id', '=', deviceId)
      .executeTakeFirst();
    const given = Buffer.from(hashToken(token), 'hex');
    const stored = row ? Buffer.from(row.token_hash, 'hex') : Buffer.alloc(given.length);
    if (!row || stored.length !== given.length || !timingSafeEqual(stored, given)) {
      throw new ParleyError('unauthenticated', 'unknown device or wrong token');
    }
    const tokenExpiresAt = this.expiryOf(row);
    if (tokenExpiresAt <= Date.now()) {
      throw new ParleyError(
        'token_expired',
        'this sign-in has expired; sign in again with your password',
      );
    }
    await this.db
      .updateTable('devices')
      .set({ last_seen_at: Date.now() })
      .where('id', '=', deviceId)
      .execute();
    return {
      accountId: row.accountId,
      username: row.username,
      deviceId: row.deviceId,
      tokenExpiresAt,
    };
  }

  /**
   * Finds the device of a bearer token (HTTP API), without a device id.
   * @throws ParleyError `unauthenticated` (unknown, revoked or expired token; one message for all).
   */
  async authenticateToken(token: string): Promise<PeerInfo> {
    const row = await this.db
      .selectFrom('devices')
      .innerJoin('accounts', 'accounts.id', 'devices.account_id')
      .select([
        'devices.id as deviceId',
        'devices.created_at',
        'devices.expires_at',
        'accounts.id as accountId',
        'accounts.username',
      ])
      .where('devices.token_hash', '=', hashToken(token))
      .executeTakeFirst();
    if (!row || this.expiryOf(row) <= Date.now()) {
      throw new ParleyError('unauthenticated', 'sign in first: send a valid device token');
    }
    return { accountId: row.accountId, username: row.username, deviceId: row.deviceId };
  }

  /** Every device of an account, oldest first (no tokens). Times are Unix ms. */
  async listDevices(
    accountId: string,
  ): Promise<
    {
      deviceId: string;
      name: string;
      createdAt: number;
      lastSeenAt: number | null;
      expiresAt: number;
    }[]
  > {
    const rows = await this.db
      .selectFrom('devices')
      .select(['id', 'name', 'created_at', 'last_seen_at', 'expires_at'])
      .where('account_id', '=', accountId)
      .orderBy('created_at')
      .execute();
    return rows.map((r) => ({
      deviceId: r.id,
      name: r.name,
      createdAt: r.created_at,
      lastSeenAt: r.last_seen_at,
      expiresAt: this.expiryOf(r),
    }));
  }

  /**
   * Deletes a device of `accountId`: its token stops working at once.
   * @throws ParleyError `not_found` when the account has no such device (another account's
   *   device gives the same answer).
   */
  async revokeDevice(accountId: string, deviceId: string): Promise<void> {
    const result = await this.db
      .deleteFrom('devices')
      .where('id', '=', deviceId)
      .where('account_id', '=', accountId)
      .executeTakeFirst();
    if (Number(result.numDeletedRows) === 0) {
      throw new ParleyError('not_found', 'you have no device with that id');
    }
  }

  /**
   * Gives a device a new token with a fresh lifetime; the old token stops working at once.
   * @returns the new token (seen only here) and its expiry, Unix ms.
   * @throws ParleyError `not_found` when the device was revoked meanwhile.
   */
  async refreshToken(deviceId: string): Promise<{ token: string; expiresAt: number }> {
    const token = randomBytes(TOKEN_BYTES).toString('base64url');
    const expiresAt = Date.now() + this.tokenTtlMs();
    const result = await this.db
      .updateTable('devices')
      .set({ token_hash: hashToken(token), expires_at: expiresAt })
      .where('id', '=', deviceId)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 0)
      throw new ParleyError('not_found', 'this device was revoked');
    return { token, expiresAt };
  }

  /**
   * Stores a device's public key bundle (replacing its earlier one), with its
   * certificate by the account key and the account key itself when given. The
   * bundle must name this device and account and carry a valid Ed25519
   * signature by its own identity key (RFC 8032); a certificate must name this
   * device, account and identity key and verify under the account key it
   * names; an account key must name this account and verify under itself (it
   * replaces the stored one). These checks keep the store consistent; the
   * clients do the checks that matter (a server could skip these). Public keys only.
   * @returns whether another identity key, or another account key, was replaced.
   * @throws ParleyError `invalid_params` for a bundle, certificate or account key of another device or account, or a bad signature.
   */
  async publishKeys(
    device: PeerInfo,
    bundle: KeyBundle,
    extra: { accountKey?: AccountKey | undefined; certificate?: DeviceCertificate | undefined } = {},
  ): Promise<{ replaced: boolean; accountKeyReplaced: boolean }> {
    if (bundle.deviceId !== device.deviceId || bundle.username !== device.username) {
      throw new ParleyError('invalid_params', 'a key bundle must name the device and account that publish it');
    }
    if (!bundleSignatureValid(bundle)) throw new ParleyError('invalid_params', 'the key bundle signature does not verify');
    const { accountKey, certificate } = extra;
    if (accountKey) {
      const { sig, ...unsigned } = accountKey;
      if (accountKey.username !== device.username || !ed25519Valid(accountKey.key, accountKeySigningText(unsigned), sig)) {
        throw new ParleyError('invalid_params', 'the account key must name this account and carry its own valid signature');
      }
    }
    if (certificate) {
      const { sig, ...unsigned } = certificate;
      if (certificate.username !== device.username || certificate.deviceId !== device.deviceId || certificate.ik !== bundle.ik) {
        throw new ParleyError('invalid_params', 'a device certificate must name the device, account and identity key that publish it');
      }
      if (!ed25519Valid(certificate.accountKey, deviceCertificateSigningText(unsigned), sig)) {
        throw new ParleyError('invalid_params', 'the device certificate signature does not verify');
      }
    }
    const old = await this.db
      .selectFrom('device_keys')
      .select('identity_key')
      .where('device_id', '=', device.deviceId)
      .executeTakeFirst();
    const row = {
      device_id: device.deviceId,
      account_id: device.accountId,
      identity_key: bundle.ik,
      bundle: JSON.stringify(bundle),
      certificate: certificate ? JSON.stringify(certificate) : null,
      updated_at: Date.now(),
    };
    await this.db
      .insertInto('device_keys')
      .values(row)
      .onConflict((oc) =>
        oc.column('device_id').doUpdateSet({ identity_key: row.identity_key, bundle: row.bundle, certificate: row.certificate, updated_at: row.updated_at }),
      )
      .execute();
    let accountKeyReplaced = false;
    if (accountKey) {
      const previous = await this.accountKey(device.accountId);
      accountKeyReplaced = !!previous && previous.key !== accountKey.key;
      const akRow = { account_id: device.accountId, account_key: JSON.stringify(accountKey), updated_at: Date.now() };
      await this.db
        .insertInto('account_keys')
        .values(akRow)
        .onConflict((oc) => oc.column('account_id').doUpdateSet({ account_key: akRow.account_key, updated_at: akRow.updated_at }))
        .execute();
    }
    return { replaced: !!old && old.identity_key !== bundle.ik, accountKeyReplaced };
  }

  /** The account key published for an account, if any. */
  async accountKey(accountId: string): Promise<AccountKey | undefined> {
    const row = await this.db.selectFrom('account_keys').select('account_key').where('account_id', '=', accountId).executeTakeFirst();
    if (!row) return undefined;
    const parsed = AccountKey.safeParse(JSON.parse(row.account_key));
    return parsed.success ? parsed.data : undefined;
  }

  /** The published key bundles (and certificates) of an account's devices, oldest device first. */
  async deviceKeys(accountId: string): Promise<{ deviceId: string; bundle: KeyBundle; certificate?: DeviceCertificate }[]> {
    const rows = await this.db
      .selectFrom('device_keys')
      .innerJoin('devices', 'devices.id', 'device_keys.device_id')
      .select(['device_keys.device_id as deviceId', 'device_keys.bundle as bundle', 'device_keys.certificate as certificate'])
      .where('device_keys.account_id', '=', accountId)
      .orderBy('devices.created_at')
      .execute();
    const out: { deviceId: string; bundle: KeyBundle; certificate?: DeviceCertificate }[] = [];
    for (const r of rows) {
      const parsed = KeyBundle.safeParse(JSON.parse(r.bundle));
      if (!parsed.success) continue;
      const cert = r.certificate ? DeviceCertificate.safeParse(JSON.parse(r.certificate)) : undefined;
      out.push({ deviceId: r.deviceId, bundle: parsed.data, ...(cert?.success ? { certificate: cert.data } : {}) });
    }
    return out;
  }

  /** Whether `accountId` takes calls from contacts only (the default). */
  async contactsOnly(accountId: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('accounts')
      .select('contacts_only')
      .where('id', '=', accountId)
      .executeTakeFirst();
    return row ? row.contacts_only !== 0 : true;
  }

  /** Sets the "only contacts may call me" setting. */
  async setContactsOnly(accountId: string, on: boolean): Promise<void> {
    await this.db
      .updateTable('accounts')
      .set({ contacts_only: on ? 1 : 0 })
      .where('id', '=', accountId)
      .execute();
  }

  private expiryOf(row: { created_at: number; expires_at: number | null }): number {
    return row.expires_at ?? row.created_at + this.tokenTtlMs();
  }

  /** Looks up an account by name; undefined when there is none. */
  async findByUsername(
    username: string,
  ): Promise<{ accountId: string; username: string } | undefined> {
    const row = await this.db
      .selectFrom('accounts')
      .select(['id', 'username'])
      .where('username', '=', username)
      .executeTakeFirst();
    return row ? { accountId: row.id, username: row.username } : undefined;
  }

  private getDummyHash(): Promise<string> {
    this.dummyHash ??= argon2Hash(randomBytes(16).toString('hex'), ARGON2_OPTIONS);
    return this.dummyHash;
  }
}

/** DER prefix of a 32-byte Ed25519 SubjectPublicKeyInfo (RFC 8410 §4). */
const ED25519_SPKI = Buffer.from('302a300506032b6570032100', 'hex');

/** Whether a bundle's signature verifies under its own identity key (Ed25519, RFC 8032 §5.1.7). */
function bundleSignatureValid(b: KeyBundle): boolean {
  const { sig, ...unsigned } = b;
  return ed25519Valid(b.ik, bundleSigningText(unsigned), sig);
}

/** Whether `sig` (base64url) is a valid Ed25519 signature by `publicKey` (32 bytes, base64url) over the UTF-8 `text`. */
function ed25519Valid(publicKey: string, text: string, sig: string): boolean {
  try {
    const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI, Buffer.from(publicKey, 'base64url')]), format: 'der', type: 'spki' });
    return edVerify(null, Buffer.from(text, 'utf8'), key, Buffer.from(sig, 'base64url'));
  } catch {
    return false;
  }
}

/** A unique-constraint failure: SQLite's `SQLITE_CONSTRAINT_UNIQUE`, PostgreSQL's SQLSTATE 23505 (`unique_violation`). */
function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('SQLITE_CONSTRAINT') || code === '23505');
}
