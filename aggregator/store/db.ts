import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
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

/** Up to this size (database and WAL together) start-up runs SQLite's full integrity_check; beyond it, quick_check. */
export const INTEGRITY_CHECK_MAX_BYTES = 256 * 1024 * 1024;

export interface DatabaseInspection {
  /** Which check ran, and the problems it reported (none when the database is sound). */
  check: { pragma: 'integrity_check' | 'quick_check'; problems: string[] };
  /** Tables the database held before this build's migrations (0: the file holds no schema at all). */
  tables: number;
  /** Rows in all its tables but SQLite's and the migrations' own (0: it records nothing). */
  rows: number;
  /** The copy, migrated to this build's schema; absent when it could not be opened or migrated (`unreadable` says why). */
  db?: Db;
  unreadable?: string;
  close(): void;
}

/**
 * Looks at a run's database without touching it: copies the file and its WAL
 * (not the -shm, which SQLite rebuilds from the WAL as a restart would) to a
 * temporary directory and inspects the copy. Even a read-only connection would
 * write: it creates a missing -wal and -shm and rewrites the -shm index, and a
 * read-write one checkpoints the WAL into the file on close and deletes it,
 * destroying what a damaged WAL still holds. The copy runs SQLite's integrity
 * check (quick_check past INTEGRITY_CHECK_MAX_BYTES) and, when sound, is
 * migrated to this build's schema so the usual queries can read it.
 */
export function inspectDatabaseCopy(path: string): DatabaseInspection {
  const scratch = mkdtempSync(join(tmpdir(), 'crowdfl-inspect-'));
  const copy = join(scratch, 'crowdfl.db');
  let closeCopy = () => {};
  const close = () => {
    closeCopy();
    rmSync(scratch, { recursive: true, force: true });
  };
  try {
    copyFileSync(path, copy);
    const wal = `${path}-wal`;
    if (existsSync(wal)) copyFileSync(wal, `${copy}-wal`);
    const bytes = statSync(copy).size + (existsSync(`${copy}-wal`) ? statSync(`${copy}-wal`).size : 0);
    const pragma = bytes <= INTEGRITY_CHECK_MAX_BYTES ? 'integrity_check' : 'quick_check';
    let problems: string[];
    let tables = 0;
    let rows = 0;
    const sqlite = new Database(copy);
    try {
      const reported = sqlite.pragma(pragma) as Record<string, string>[];
      problems = namedTrees(
        sqlite,
        reported.flatMap((r) => String(Object.values(r)[0]).split('\n')).filter((p) => p !== 'ok' && !/^\*\*\* in database \w+ \*\*\*$/.test(p)),
      );
      if (problems.length === 0) {
        tables = (sqlite.prepare("select count(*) as n from sqlite_master where type = 'table'").get() as { n: number }).n;
        rows = countRows(sqlite);
      }
    } catch (err) {
      // Not a database at all, or damaged past what the check can walk.
      problems = [(err as Error).message];
    } finally {
      sqlite.close();
    }
    if (problems.length > 0) return { check: { pragma, problems }, tables, rows: 0, close };
    try {
      const opened = openDatabase(copy);
      closeCopy = opened.close;
      return { check: { pragma, problems }, tables, rows, db: opened.db, close };
    } catch (err) {
      return { check: { pragma, problems }, tables, rows: 0, unreadable: `this build cannot bring its schema up to date (${(err as Error).message})`, close };
    }
  } catch (err) {
    close();
    throw err;
  }
}

/** SQLite names a damaged b-tree by its root page ("Tree 16 page 21 …"); add the table or index it is, when the schema can still be read. */
function namedTrees(sqlite: Database.Database, problems: string[]): string[] {
  if (problems.length === 0) return problems;
  try {
    const rows = sqlite.prepare('select rootpage, type, name from sqlite_master where rootpage > 0').all() as { rootpage: number; type: string; name: string }[];
    const trees = new Map(rows.map((r) => [r.rootpage, `${r.type} ${r.name}`]));
    return problems.map((p) => p.replace(/\bTree (\d+)/g, (tree: string, root: string) => (trees.has(Number(root)) ? `${tree} (${trees.get(Number(root))})` : tree)));
  } catch {
    return problems;
  }
}

/** Rows in every table but SQLite's own and the migrations' journal. */
function countRows(sqlite: Database.Database): number {
  const tables = sqlite.prepare("select name from sqlite_master where type = 'table' and name not like 'sqlite_%' and name <> '__drizzle_migrations'").all() as { name: string }[];
  return tables.reduce((n, t) => n + (sqlite.prepare(`select count(*) as n from "${t.name.replace(/"/g, '""')}"`).get() as { n: number }).n, 0);
}
