// Storage failures as the system really raises them: ENOSPC from writing to
// /dev/full (the kernel's always-full device, writable without root), SQLITE_FULL
// from a database held to a page limit, and real foreign and damaged files.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import test from 'ava';
import { float32ToBytes, sha256Hex } from '../../core/tensor-codec.js';
import { tempDir } from '../../test/support/fixtures.js';
import { openDatabase } from './db.js';
import { RunStore } from './run-store.js';
import { DatabaseFileError, DiskFullError, explainStorageFailure, isStorageFailure } from './storage-errors.js';
import { UpdateBlobs } from './update-blobs.js';

const withFullDisk = existsSync('/dev/full') ? test : test.skip;

/** The error writing to /dev/full raises: ENOSPC, as on a full disk. */
function enospc(): unknown {
  const fd = openSync('/dev/full', 'w');
  try {
    writeSync(fd, Buffer.alloc(16));
  } catch (err) {
    return err;
  } finally {
    closeSync(fd);
  }
  throw new Error('/dev/full accepted a write');
}

/** The error SQLite raises when a write needs a page the database may not have: SQLITE_FULL. */
function sqliteFull(): unknown {
  const sqlite = new Database(':memory:');
  sqlite.pragma('max_page_count = 2');
  try {
    sqlite.exec('create table t (x); insert into t values (randomblob(100000))');
  } catch (err) {
    return err;
  } finally {
    sqlite.close();
  }
  throw new Error('SQLite wrote past max_page_count');
}

const where = { database: '/runs/r/crowdfl.db', runDir: '/runs/r' };

withFullDisk('a full disk is named by the path being written: the file system error its own or the run directory, SQLite the database', (t) => {
  const full = enospc();
  t.true(isStorageFailure(full));
  t.like(explainStorageFailure(full, where), { path: '/runs/r' });
  t.like(explainStorageFailure(Object.assign(full as Error, { path: '/runs/r/summary.json' }), where), { path: '/runs/r/summary.json' });
  const db = sqliteFull();
  t.true(isStorageFailure(db));
  const explained = explainStorageFailure(db, where);
  t.true(explained instanceof DiskFullError);
  t.regex((explained as Error).message, /^disk full at \/runs\/r\/crowdfl\.db: free space there .*start the aggregator again with the same --run-id; it resumes from the last committed round$/);
});

test('other errors pass through unexplained', (t) => {
  const bug = new TypeError('x is undefined');
  t.is(explainStorageFailure(bug, where), bug);
  t.false(isStorageFailure(bug));
  const busy = Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
  t.is(explainStorageFailure(busy, where), busy);
});

test('a file that is not SQLite, or a damaged database, is named with what to do', (t) => {
  const dir = tempDir('foreign-db');
  const foreign = join(dir, 'foreign.db');
  writeFileSync(foreign, 'these are the notes of somebody else, not a database at all '.repeat(100));
  const notADatabase = t.throws(() => openDatabase(foreign), { instanceOf: DatabaseFileError });
  t.regex(notADatabase!.message, new RegExp(`^${foreign} is not a crowdfl database \\(SQLite says: file is not a database\\)\\. .*restore it from a backup\\. Otherwise move it away`));

  const damaged = join(dir, 'crowdfl.db');
  const { db, close } = openDatabase(damaged);
  new RunStore(db).createRun({ id: 'r', experimentName: 'x', experimentJson: '{}', seed: 1, backend: 'cpu', aggregatorPublicKey: 'k', software: 's', status: 'running', startedAt: 1 });
  close();
  // Garbage over the first page's table of contents, past the 100-byte header that makes it SQLite.
  const fd = openSync(damaged, 'r+');
  writeSync(fd, Buffer.alloc(3000, 0xff), 0, 3000, 100);
  closeSync(fd);
  const malformed = t.throws(() => openDatabase(damaged), { instanceOf: DatabaseFileError });
  t.regex(malformed!.message, new RegExp(`^${damaged} is damaged \\(SQLite says: database disk image is malformed\\)\\. Restore it from a backup, or save what is readable with`));
  t.true(isStorageFailure(malformed));
});

withFullDisk('update bytes that meet a full disk throw DiskFullError naming the update store, and leave no partial file', (t) => {
  const blobs = new UpdateBlobs(join(tempDir('blobs-full'), 'updates'));
  const bytes = float32ToBytes(new Float32Array(64).fill(0.5));
  const sha = sha256Hex(bytes);
  // The write lands on /dev/full: the kernel's ENOSPC, as a full disk gives it.
  mkdirSync(dirname(blobs.tempPath(sha)), { recursive: true });
  symlinkSync('/dev/full', blobs.tempPath(sha));
  const err = t.throws(() => blobs.put(sha, bytes), { instanceOf: DiskFullError });
  t.is(err!.path, blobs.dir);
  t.deepEqual(readdirSync(dirname(blobs.tempPath(sha))), []);
  t.is(blobs.get(sha), undefined);
  // Space again: the same bytes are stored.
  blobs.put(sha, bytes);
  t.deepEqual(blobs.get(sha), Buffer.from(bytes));
});
