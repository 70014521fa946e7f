// When the run directory's storage fails under crowdfl: a full disk (or quota),
// or a database file that is not crowdfl's or is damaged. Each becomes a
// UserError naming the file and what to do, so the operator reads one line,
// not a stack trace, and it is the first failure that is reported: a second
// one on the way out (marking the run failed on the same full disk, say)
// never hides it.
import { UserError } from '../../core/user-error.js';

/** The disk (or the quota) holding `path` is full. The run stops; committed rounds are kept. */
export class DiskFullError extends UserError {
  constructor(readonly path: string) {
    super(
      `disk full at ${path}: free space there (or raise the quota), then start the aggregator again with the same ` +
        '--run-id; it resumes from the last committed round',
    );
  }
}

/** The database file is not one crowdfl can use: not SQLite at all, or damaged. */
export class DatabaseFileError extends UserError {}

const codeOf = (err: unknown): unknown => (typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined);

/** A write failed for want of space: ENOSPC or EDQUOT from the file system, SQLITE_FULL from SQLite. */
export function isDiskFull(err: unknown): boolean {
  const code = codeOf(err);
  return err instanceof DiskFullError || code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
}

/** `err` as a DiskFullError at `path` when it is a full disk, else `err` itself. */
export function diskFullAt(err: unknown, path: string): unknown {
  return isDiskFull(err) && !(err instanceof DiskFullError) ? new DiskFullError(path) : err;
}

/** `err` explained when SQLite says the file at `path` is not a database, or a damaged one; else `err` itself. */
export function explainDatabaseFile(err: unknown, path: string): unknown {
  const code = codeOf(err);
  const said = err instanceof Error ? err.message : String(err);
  if (code === 'SQLITE_NOTADB') {
    return new DatabaseFileError(
      `${path} is not a crowdfl database (SQLite says: ${said}). If it held a run, it was overwritten: restore it from a backup. ` +
        'Otherwise move it away, or use another run directory (--run-id, --runs-dir)',
    );
  }
  if (code === 'SQLITE_CORRUPT' || (typeof code === 'string' && code.startsWith('SQLITE_CORRUPT_'))) {
    return new DatabaseFileError(
      `${path} is damaged (SQLite says: ${said}). Restore it from a backup, or save what is readable with ` +
        `\`sqlite3 ${path} .recover | sqlite3 recovered.db\` and put recovered.db in its place; a new run needs a new --run-id`,
    );
  }
  return err;
}

/** A failure of the run directory's storage, which stops a run: its disk full, or its database unusable. */
export function isStorageFailure(err: unknown): boolean {
  return isDiskFull(err) || err instanceof DatabaseFileError || explainDatabaseFile(err, '') !== err;
}

/**
 * `err` explained when it is the storage's failure: SQLite's errors name the database, a file system's its
 * own path when it has one, else the run directory. Anything else is returned as it is.
 */
export function explainStorageFailure(err: unknown, where: { database: string; runDir: string }): unknown {
  if (err instanceof UserError) return err;
  const code = codeOf(err);
  if (typeof code === 'string' && code.startsWith('SQLITE_')) return diskFullAt(explainDatabaseFile(err, where.database), where.database);
  const path = typeof err === 'object' && err !== null ? (err as { path?: unknown }).path : undefined;
  return diskFullAt(err, typeof path === 'string' ? path : where.runDir);
}
