// The run directory's storage failing under a real aggregator: a full disk
// ends the run with one line saying where and what to do (not a stack trace,
// and not a second error from marking the run failed on the same full disk),
// the store stays whole, and the run resumes once there is space; a database
// file that is not crowdfl's, or is damaged, is named with what to do.
//
// The full disk is real ENOSPC from the kernel: the update's temporary file is
// made a symbolic link to /dev/full, the device every write to which fails for
// want of space. That needs no root (a small tmpfs would) and holds as root too
// (an unwritable directory would not).
import { existsSync, mkdirSync, openSync, closeSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { DiskFullError } from '../aggregator/store/storage-errors.js';
import { UPDATE_BLOBS_DIR, UpdateBlobs } from '../aggregator/store/update-blobs.js';
import { weightManifest } from '../core/model/spec.js';
import { parseModelJson } from '../core/model/zoo.js';
import { generateIdentity, type Identity } from '../core/signing/keys.js';
import { float32ToBytes, sha256Hex } from '../core/tensor-codec.js';
import { federatedData } from '../datasets/index.js';
import type { Task__Output } from '../proto/generated/crowdfl/v1/Task.js';
import { freePort, runCli, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { joinAs, nextTask, statusOf, submitSmallUpdate } from './support/grpc.js';

const withFullDisk = existsSync('/dev/full') ? test : test.skip;

const experiment = tinyExperiment({ rounds: 1, nodes: 1, selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 600 } });

/** Makes the update submitSmallUpdate would send for `task` land on /dev/full when process `pid` stores it. */
function fillDiskUnder(runDir: string, task: Task__Output, pid: number): string {
  const n = weightManifest(parseModelJson(task.model_json)).reduce((sum, m) => sum + m.shape.reduce((x, y) => x * y, 1), 0);
  const sha = sha256Hex(float32ToBytes(new Float32Array(n).fill(1e-3)));
  const blobs = new UpdateBlobs(join(runDir, UPDATE_BLOBS_DIR));
  const temp = blobs.tempPath(sha, pid);
  mkdirSync(dirname(temp), { recursive: true });
  symlinkSync('/dev/full', temp);
  return blobs.dir;
}

function exited(p: ReturnType<typeof spawnCli>): Promise<number | null> {
  return p.exitCode !== null ? Promise.resolve(p.exitCode) : new Promise((resolve) => p.once('exit', (code) => resolve(code)));
}

function printed(p: ReturnType<typeof spawnCli>, pattern: RegExp): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (pattern.test(p.output())) resolve();
    };
    p.stdout!.on('data', check);
    p.stderr!.on('data', check);
    p.once('exit', () => (pattern.test(p.output()) ? resolve() : reject(new Error(`exited without printing ${pattern}:\n${p.output()}`))));
    check();
  });
}

function runRow(runDir: string, runId: string) {
  const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
  try {
    const store = new RunStore(db);
    return { status: store.getRun(runId)?.status, committed: store.committedRounds(runId).length };
  } finally {
    close();
  }
}

const STACK_LINE = /^\s+at .+[(:]\d+/m;

withFullDisk('a full disk stops `crowdfl aggregator` with "disk full at PATH" and exit 2; with space again the run resumes and finishes', async (t) => {
  const dir = tempDir('disk-full');
  const file = join(dir, 'tiny.json');
  writeFileSync(file, JSON.stringify(experiment));
  const runDir = join(dir, 'full');
  const port = await freePort();
  const args = ['aggregator', '--experiment', file, '--run-id', 'full', '--runs-dir', dir, '--port', String(port), '--key', join(dir, 'agg-key.json')];
  const identity: Identity = generateIdentity();

  const first = spawnCli(args);
  try {
    await printed(first, /listening on/);
    const node = await joinAs(`127.0.0.1:${port}`, identity);
    const task = await nextTask(node.conn);
    const updates = fillDiskUnder(runDir, task, first.pid!);
    const refused = await statusOf(submitSmallUpdate(node, task));
    node.conn.close();
    t.is(refused.code, grpc.status.UNAVAILABLE, refused.details);
    t.regex(refused.details, /cannot write to its storage and is stopping; try again after it restarts/);
    if (refused.code !== grpc.status.UNAVAILABLE) return; // it would not stop by itself
    t.is(await exited(first), 2, first.output());
    t.true(first.output().includes(`crowdfl: disk full at ${updates}: free space there`), first.output());
    t.false(STACK_LINE.test(first.output()), first.output());
  } finally {
    if (first.exitCode === null) first.kill('SIGKILL');
  }
  t.deepEqual(runRow(runDir, 'full'), { status: 'failed', committed: 0 });

  // The partial write was removed with the failure; the same command carries on, and the same node's retry is taken.
  const second = spawnCli(args);
  try {
    await printed(second, /listening on/);
    t.regex(second.output(), /resuming run full at round 1 of 1/);
    const again = await joinAs(`127.0.0.1:${port}`, identity);
    const retry = await nextTask(again.conn);
    t.regex(await submitSmallUpdate(again, retry), /accepted into round 1/);
    again.conn.close();
    t.is(await exited(second), 0, second.output());
  } finally {
    if (second.exitCode === null) second.kill('SIGKILL');
  }
  t.deepEqual(runRow(runDir, 'full'), { status: 'finished', committed: 1 });
});

withFullDisk('the run ends with the disk-full error even when marking it failed fails too', async (t) => {
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const runDir = tempDir('disk-full-finish');
  const said: string[] = [];
  const agg = await startAggregator({ experiment, runDir, runId: 'r', test: testSet, identity: generateIdentity(), log: (m) => said.push(m) });
  // Another connection holds the database's write lock, so the aggregator's last write (the run's status)
  // fails as it would on a full disk, after its busy timeout.
  const holder = new Database(join(runDir, 'crowdfl.db'));
  try {
    const node = await joinAs(`127.0.0.1:${agg.port}`);
    const task = await nextTask(node.conn);
    const updates = fillDiskUnder(runDir, task, process.pid);
    holder.exec('begin immediate');
    t.is((await statusOf(submitSmallUpdate(node, task))).code, grpc.status.UNAVAILABLE);
    node.conn.close();
    const err = await t.throwsAsync(agg.done, { instanceOf: DiskFullError });
    t.is(err!.path, updates);
    t.true(said.some((m) => /^could not mark run r failed in .*crowdfl\.db: database is locked/.test(m)), said.join('\n'));
  } finally {
    if (holder.inTransaction) holder.exec('rollback');
    holder.close();
    await agg.stop();
  }
});

test('a foreign or damaged database file is named with what to do, by the aggregator and by the commands that read runs', async (t) => {
  const dir = tempDir('bad-db');
  const file = join(dir, 'tiny.json');
  writeFileSync(file, JSON.stringify(experiment));

  mkdirSync(join(dir, 'foreign'));
  writeFileSync(join(dir, 'foreign', 'crowdfl.db'), 'a spreadsheet, say, saved over the database '.repeat(200));
  mkdirSync(join(dir, 'damaged'));
  const damaged = join(dir, 'damaged', 'crowdfl.db');
  const { db, close } = openDatabase(damaged);
  new RunStore(db).createRun({ id: 'damaged', experimentName: 'tiny', experimentJson: '{}', seed: 1, backend: 'cpu', aggregatorPublicKey: 'k', software: 's', status: 'running', startedAt: 1 });
  close();
  const fd = openSync(damaged, 'r+');
  writeSync(fd, Buffer.alloc(3000, 0xff), 0, 3000, 100);
  closeSync(fd);

  // `runs show` opens the file and says what SQLite said; the aggregator checks the run directory before it
  // opens anything (aggregator/run-directory.ts) and names the file, what SQLite's check found, and how to recover.
  const cases = [
    {
      run: 'foreign',
      show: /is not a crowdfl database \(SQLite says: file is not a database\)\. .*move it away/,
      aggregator: /cannot resume run foreign: .* is damaged; SQLite's integrity_check reports:\n\s+- file is not a database\n.*To recover:/s,
    },
    {
      run: 'damaged',
      show: /is damaged \(SQLite says: database disk image is malformed\)\. Restore it from a backup/,
      aggregator: /cannot resume run damaged: .* is damaged; SQLite's integrity_check reports:.*To recover:/s,
    },
  ];
  for (const { run, show: showSays, aggregator: aggregatorSays } of cases) {
    const path = join(dir, run, 'crowdfl.db');
    const aggregator = await runCli(['aggregator', '--experiment', file, '--run-id', run, '--runs-dir', dir, '--port', '0', '--key', join(dir, 'agg-key.json')]);
    const show = await runCli(['runs', 'show', join(dir, run)]);
    for (const [command, result, says] of [['aggregator', aggregator, aggregatorSays], ['runs show', show, showSays]] as const) {
      t.is(result.code, 2, `${command} on the ${run} file: ${result.stderr}`);
      t.true(result.stderr.includes(path), `${command}: ${result.stderr}`);
      t.regex(result.stderr, says, command);
      t.false(STACK_LINE.test(result.stderr), `${command}: ${result.stderr}`);
    }
  }
});
