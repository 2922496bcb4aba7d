import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect, sql, type Generated } from 'kysely';
import { Migrator, type Migration, type MigrationProvider } from 'kysely/migration';

/** Row shapes of the server's SQLite store. Times are Unix milliseconds. */
export interface DB {
  accounts: {
    id: string;
    username: string;
    /** argon2id PHC string. */
    password_hash: string;
    created_at: number;
    /** 1: only contacts may call this account (the default), 0: anyone. */
    contacts_only: Generated<number>;
  };
  devices: {
    id: string;
    account_id: string;
    name: string;
    /** Hex SHA-256 of the device token; the token itself is never stored. */
    token_hash: string;
    created_at: number;
    last_seen_at: number | null;
    /** When the token stops working; null (rows from before 0003): created_at + the configured TTL. */
    expires_at: number | null;
  };
  /** One row per direction: a contact relation is two rows (a→b and b→a). */
  contacts: { account_id: string; contact_id: string; created_at: number };
  /** A pending contact request from `from_id` to `to_id`. */
  contact_requests: { from_id: string; to_id: string; created_at: number };
  /** `account_id` blocked `blocked_id`. */
  blocks: { account_id: string; blocked_id: string; created_at: number };
  /**
   * Calls in progress (ringing or active), so that after a crash the server can
   * tell their devices how they ended. `devices` is a JSON array of device ids.
   */
  open_calls: {
    call_id: string;
    caller_account_id: string;
    devices: string;
    created_at: number;
    /** When the call was answered (Unix ms); null while ringing. An answered call may be resumed after a crash. */
    answered_at: number | null;
  };
  /** `callee_id` approved `caller_id` as a caller (first-time caller approval). */
  approved_callers: { callee_id: string; caller_id: string; created_at: number };
  /**
   * A device's public key bundle (end-to-end security, docs/SECURITY.md): JSON
   * of a signed KeyBundle — public keys only; the server never sees a private key.
   * Deleted with its device.
   */
  device_keys: {
    device_id: string;
    account_id: string;
    /** The bundle's Ed25519 identity key, base64url (also inside `bundle`). */
    identity_key: string;
    bundle: string;
    updated_at: number;
    /** JSON of the device's DeviceCertificate by the account key, when it published one (0008). */
    certificate: string | null;
  };
  /**
   * An account's published account key (JSON of a self-signed AccountKey,
   * public only): it signs the account's device certificates; the server
   * stores and returns it but cannot make one.
   */
  account_keys: { account_id: string; account_key: string; updated_at: number };
  /** Call time used per account and UTC day (`YYYY-MM-DD`), for the daily duration budget. */
  call_usage: { account_id: string; day: string; seconds: number };
  audit: {
    id: Generated<number>;
    at: number;
    event: string;
    account_id: string | null;
    device_id: string | null;
    /** The call the event is about, if any (indexed for `audit.query`). */
    call_id: string | null;
    /** Short JSON with non-secret facts (call id, reason); never envelopes or secrets. */
    detail: string | null;
  };
}

/** Schema migrations, in order. Append only; never edit a shipped one. */
const migrations: Record<string, Migration> = {
  '0001_accounts_devices_audit': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('accounts')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('username', 'text', (c) => c.notNull().unique())
        .addColumn('password_hash', 'text', (c) => c.notNull())
        .addColumn('created_at', 'integer', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('devices')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('account_id', 'text', (c) =>
          c.notNull().references('accounts.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('token_hash', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'integer', (c) => c.notNull())
        .addColumn('last_seen_at', 'integer')
        .execute();
      await db.schema.createIndex('devices_account').on('devices').column('account_id').execute();
      await db.schema
        .createTable('audit')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('at', 'integer', (c) => c.notNull())
        .addColumn('event', 'text', (c) => c.notNull())
        .addColumn('account_id', 'text')
        .addColumn('device_id', 'text')
        .addColumn('detail', 'text')
        .execute();
      await db.schema.createIndex('audit_at').on('audit').column('at').execute();
    },
  },
  '0002_audit_call_id': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('audit').addColumn('call_id', 'text').execute();
      await db.schema.createIndex('audit_call').on('audit').column('call_id').execute();
      await db.schema.createIndex('audit_account').on('audit').column('account_id').execute();
      await db.schema.createIndex('audit_event').on('audit').column('event').execute();
    },
  },
  '0003_devices_contacts': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('devices').addColumn('expires_at', 'integer').execute();
      await db.schema
        .alterTable('accounts')
        .addColumn('contacts_only', 'integer', (c) => c.notNull().defaultTo(1))
        .execute();
      for (const [table, a, b] of [
        ['contacts', 'account_id', 'contact_id'],
        ['contact_requests', 'from_id', 'to_id'],
        ['blocks', 'account_id', 'blocked_id'],
      ] as const) {
        await db.schema
          .createTable(table)
          .addColumn(a, 'text', (c) => c.notNull().references('accounts.id').onDelete('cascade'))
          .addColumn(b, 'text', (c) => c.notNull().references('accounts.id').onDelete('cascade'))
          .addColumn('created_at', 'integer', (c) => c.notNull())
          .addPrimaryKeyConstraint(`${table}_pk`, [a, b])
          .execute();
        await db.schema.createIndex(`${table}_rev`).on(table).column(b).execute();
      }
    },
  },
  '0004_call_usage': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('call_usage')
        .addColumn('account_id', 'text', (c) =>
          c.notNull().references('accounts.id').onDelete('cascade'),
        )
        .addColumn('day', 'text', (c) => c.notNull())
        .addColumn('seconds', 'real', (c) => c.notNull())
        .addPrimaryKeyConstraint('call_usage_pk', ['account_id', 'day'])
        .execute();
    },
  },
  '0005_open_calls': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('open_calls')
        .addColumn('call_id', 'text', (c) => c.primaryKey())
        .addColumn('caller_account_id', 'text', (c) => c.notNull())
        .addColumn('devices', 'text', (c) => c.notNull())
        .addColumn('created_at', 'integer', (c) => c.notNull())
        .execute();
    },
  },
  '0006_approved_callers': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('approved_callers')
        .addColumn('callee_id', 'text', (c) =>
          c.notNull().references('accounts.id').onDelete('cascade'),
        )
        .addColumn('caller_id', 'text', (c) =>
          c.notNull().references('accounts.id').onDelete('cascade'),
        )
        .addColumn('created_at', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('approved_callers_pk', ['callee_id', 'caller_id'])
        .execute();
    },
  },
  '0007_open_calls_answered': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('open_calls').addColumn('answered_at', 'integer').execute();
    },
  },
};

migrations['0007_device_keys'] = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('device_keys')
      .addColumn('device_id', 'text', (c) => c.primaryKey().references('devices.id').onDelete('cascade'))
      .addColumn('account_id', 'text', (c) => c.notNull().references('accounts.id').onDelete('cascade'))
      .addColumn('identity_key', 'text', (c) => c.notNull())
      .addColumn('bundle', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'integer', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('device_keys_account').on('device_keys').column('account_id').execute();
  },
};

migrations['0008_account_keys'] = {
  async up(db: Kysely<unknown>) {
    await db.schema.alterTable('device_keys').addColumn('certificate', 'text').execute();
    await db.schema
      .createTable('account_keys')
      .addColumn('account_id', 'text', (c) => c.primaryKey().references('accounts.id').onDelete('cascade'))
      .addColumn('account_key', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'integer', (c) => c.notNull())
      .execute();
  },
};

const provider: MigrationProvider = { getMigrations: async () => migrations };

/**
 * Opens (creating if needed) the SQLite store `parley.sqlite` in `dataDir`
 * and brings its schema up to date.
 * @param dataDir folder for the data file; created with its parents. `:memory:` keeps everything in memory.
 * @throws Error when the folder cannot be created or a migration fails.
 */
export async function openDatabase(dataDir: string): Promise<Kysely<DB>> {
  let file = ':memory:';
  if (dataDir !== ':memory:') {
    mkdirSync(dataDir, { recursive: true });
    file = join(dataDir, 'parley.sqlite');
  }
  const sqlite = new Database(file);
  sqlite.pragma('journal_mode = WAL');
  // With WAL, NORMAL syncs at checkpoints, not at every commit: a killed process
  // (kill -9) loses nothing committed; only an OS crash or power loss can drop the
  // last transactions. FULL costs ~2 ms of blocked event loop per insert here (each
  // audit record), NORMAL ~0.01 ms (SQLite docs, "pragma synchronous").
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('busy_timeout = 5000');
  const db = new Kysely<DB>({ dialect: new SqliteDialect({ database: sqlite }) });
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    await db.destroy();
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${String(error)}`);
  }
  await sql`select 1`.execute(db);
  return db;
}
