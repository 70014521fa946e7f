import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import * as schema from './schema.js';
import { diskFullAt, explainDatabaseFile } from './storage-errors.js';

export type Db = BetterSQLite3Database<typeof schema>;

const MIGRATIONS = fileURLToPath(new URL('../../../aggregator/store/migrations', import.meta.url));

/**
 * Opens (creating if needed) the aggregator's database. WAL lets readers
 * (reports, `crowdfl` status commands) run beside the aggregator; synchronous
 * FULL makes a committed round survive power loss, not just a process kill.
 */
export function openDatabase(path: string): { db: Db; close: () => void } {
  mkdirSync(dirname(path), { recursive: true });
  const sqlite = new Database(path);
  try {
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = FULL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    const db = drizzle(sqlite, { schema });
    migrate(db, { migrationsFolder: MIGRATIONS });
    return { db, close: () => sqlite.close() };
  } catch (err) {
    sqlite.close();
    // A foreign or damaged file, or a full disk, named with what to do instead of SQLite's bare words.
    throw diskFullAt(explainDatabaseFile(err, path), path);
  }
}

/** When the newest migration this build knows was made (drizzle's journal); drizzle applies those newer than the last it applied. */
function newestMigration(): number {
  const journal = JSON.parse(readFileSync(join(MIGRATIONS, 'meta', '_journal.json'), 'utf8')) as { entries: { when: number }[] };
  return Math.max(...journal.entries.map((e) => e.when));
}

/**
 * Opens a run's database for reading only: reports, replays and status
 * commands must not change the record they inspect (no migration, no WAL
 * switch). A database older than this build's schema is copied (SQLite's
 * backup, consistent even while an aggregator writes) to a temporary file,
 * and the copy is migrated and read instead; `migratedCopy` says so.
 */
export function openDatabaseReadOnly(path: string): { db: Db; close: () => void; migratedCopy: boolean } {
  const original = new Database(path, { readonly: true, fileMustExist: true });
  original.pragma('busy_timeout = 5000');
  const hasJournal = original.prepare("select count(*) as n from sqlite_master where type = 'table' and name = '__drizzle_migrations'").get() as { n: number };
  const applied = hasJournal.n ? (original.prepare('select max(created_at) as at from __drizzle_migrations').get() as { at: number | null }).at : null;
  if (applied !== null && applied >= newestMigration()) {
    return { db: drizzle(original, { schema }), close: () => original.close(), migratedCopy: false };
  }
  const scratch = mkdtempSync(join(tmpdir(), 'crowdfl-read-'));
  const copy = join(scratch, 'crowdfl.db');
  try {
    // VACUUM INTO reads through a read-only connection and writes a consistent snapshot elsewhere.
    original.prepare('vacuum into ?').run(copy);
  } finally {
    original.close();
  }
  const opened = openDatabase(copy);
  const close = () => {
    opened.close();
    rmSync(scratch, { recursive: true, force: true });
  };
  return { db: opened.db, close, migratedCopy: true };
}
