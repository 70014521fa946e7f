// Reading a run (reports, replays, `runs show`, `nodes list`) never writes to
// its database; a database older than the code is read through a migrated
// copy, and the original stays byte for byte as it was.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import test from 'ava';
import { openDatabase, openDatabaseReadOnly } from './db.js';
import { MAX_REFUSALS_PER_SOURCE, RunStore } from './run-store.js';
import { tempDir } from '../../test/support/fixtures.js';

const digest = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

function makeRun(path: string): void {
  const { db, close } = openDatabase(path);
  const store = new RunStore(db);
  store.createRun({
    id: 'r', experimentName: 'x', experimentJson: '{}', seed: 1, backend: 'cpu', aggregatorPublicKey: 'k', software: 's', status: 'finished', startedAt: 1,
  });
  store.recordTask({ taskId: 't1', runId: 'r', round: 1, nodeId: 'n-1', issuedAt: 1, deadline: 2 });
  store.recordRefusal('n-2', 'k', 'not on the allowlist');
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
  // Roll the file back to the schema before the newest migration (verdict evidence), with a rejection and a
  // kept update as that schema recorded them.
  const raw = new Database(path);
  raw.exec('alter table updates drop column evidence');
  raw.exec('delete from __drizzle_migrations where created_at = (select max(created_at) from __drizzle_migrations)');
  const insert = raw.prepare(
    `insert into updates (run_id, round, task_id, node_id, num_examples, base_model_sha256, update_sha256, metrics, verdict, weight, reason, received_at)
     values ('r', 1, ?, 'n-1', 10, 'b', 'u', '{}', ?, ?, ?, 1)`,
  );
  insert.run('t1', 'rejected', 0, 'krum score 9, not among the 1 selected');
  insert.run('t2', 'kept', 1, 'krum score 1, among the 1 selected');
  raw.close();
  const before = digest(path);
  const { db, close, migratedCopy } = openDatabaseReadOnly(path);
  t.true(migratedCopy);
  const rows = new RunStore(db).updatesOfNode('r', 'n-1');
  t.like(rows.find((u) => u.taskId === 't1'), { evidence: 'krum score 9, not among the 1 selected' }, 'an old rejection still counts as evidence');
  t.like(rows.find((u) => u.taskId === 't2'), { evidence: null });
  close();
  t.is(digest(path), before);
});

test('refusals are kept per source up to a bound, across store instances, so a flood cannot fill the disk', (t) => {
  const path = join(tempDir('refusals'), 'crowdfl.db');
  const { db, close } = openDatabase(path);
  const store = new RunStore(db);
  let kept = 0;
  for (let i = 0; i < MAX_REFUSALS_PER_SOURCE + 50; i++) if (store.recordRefusal('peer 127.0.0.1:1', '', `garbage ${i}`, { kind: 'upload' })) kept++;
  t.is(kept, MAX_REFUSALS_PER_SOURCE);
  t.true(store.recordRefusal('n-other', 'k', 'wrong round', { kind: 'upload', taskId: 't', round: 3 }), 'another source is still recorded');
  close();
  // A restarted aggregator counts what is already on disk.
  const again = openDatabase(path);
  const reopened = new RunStore(again.db);
  t.false(reopened.recordRefusal('peer 127.0.0.1:1', '', 'more garbage', { kind: 'upload' }));
  const rows = reopened.refusalRows();
  again.close();
  t.is(rows.length, MAX_REFUSALS_PER_SOURCE + 1);
  t.like(rows.at(-1), { nodeId: 'n-other', kind: 'upload', taskId: 't', round: 3, reason: 'wrong round' });
});
