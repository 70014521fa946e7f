// Reading a run (reports, replays, `runs show`, `nodes list`) never writes to
// its database; a database older than the code is read through a migrated
// copy, and the original stays byte for byte as it was.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import test from 'ava';
import { openDatabase, openDatabaseReadOnly } from './db.js';
import { RunStore } from './run-store.js';
import { tempDir } from '../../test/support/fixtures.js';

const digest = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

function makeRun(path: string): void {
  const { db, close } = openDatabase(path);
  const store = new RunStore(db);
  store.createRun({
    id: 'r', experimentName: 'x', experimentJson: '{}', seed: 1, backend: 'cpu', aggregatorPublicKey: 'k', software: 's', status: 'finished', startedAt: 1,
  });
  store.recordTask({ taskId: 't1', runId: 'r', round: 1, nodeId: 'n-1', issuedAt: 1, deadline: 2 });
  close();
}

test('a current database is read in place and cannot be written through the reader', (t) => {
  const path = join(tempDir('readonly'), 'crowdfl.db');
  makeRun(path);
  const before = digest(path);
  const { db, close, migratedCopy } = openDatabaseReadOnly(path);
  const store = new RunStore(db);
  t.false(migratedCopy);
  t.is(store.runRows()[0]!.id, 'r');
  t.throws(() => store.finishRun('r', 'failed'), { any: true, message: /readonly/ });
  close();
  t.is(digest(path), before);
});

test('an older database is read through a migrated copy and left untouched', (t) => {
  const path = join(tempDir('readonly-old'), 'crowdfl.db');
  makeRun(path);
  // Roll the file back to the schema before the newest migration (decline kinds).
  const raw = new Database(path);
  raw.exec('alter table tasks drop column decline_kind');
  raw.exec('delete from __drizzle_migrations where created_at = (select max(created_at) from __drizzle_migrations)');
  raw.close();
  const before = digest(path);
  const { db, close, migratedCopy } = openDatabaseReadOnly(path);
  t.true(migratedCopy);
  const task = new RunStore(db).task('t1');
  t.is(task?.declineKind, null, 'the copy has the new column');
  close();
  t.is(digest(path), before);
});
