// Minimal typing for better-sqlite3 (no @types package is installed): only
// what server/db.ts uses. Kysely's SqliteDatabase interface describes the rest.
declare module 'better-sqlite3' {
  import type { SqliteDatabase } from 'kysely';

  interface Database extends SqliteDatabase {
    pragma(source: string): unknown;
    readonly open: boolean;
  }
  interface DatabaseConstructor {
    new (
      filename: string,
      options?: { readonly?: boolean; fileMustExist?: boolean; timeout?: number },
    ): Database;
  }
  const Database: DatabaseConstructor;
  export default Database;
}
