// A run directory whose database lost commits, or was lost, or was damaged:
// the aggregator refuses to resume it, says what disagrees and how to recover,
// and changes nothing in the directory.
//
// One real run is made and killed with SIGKILL right after round 4 of 6 is
// committed, as the crash test does, so every commit is still in crowdfl.db-wal
// (SQLite copies the WAL into crowdfl.db only at a checkpoint, which a killed
// process never reaches). Each test copies that directory, damages the copy as
// a failing disk or a careless operator would, and starts the aggregator on it
// with the same command that resumes a run.
import { createHash } from 'node:crypto';
import { cpSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import test from 'ava';
import Database from 'better-sqlite3';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

const NODES = 3;
const ROUNDS = 6;
const KILLED_AFTER = 4;
const RUN_ID = 'k';

type Child = ReturnType<typeof spawnCli>;

const exited = (p: Child) =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve({ code: p.exitCode, signal: p.signalCode })
    : new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => p.once('exit', (code, signal) => r({ code, signal })));

/** Resolves once the process has printed a line matching `pattern` (true), or has exited without (false). */
function printed(p: Child, pattern: RegExp): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    const check = () => {
      if (!pattern.test(p.output())) return;
      done(true);
    };
    const onExit = () => done(pattern.test(p.output()));
    const done = (value: boolean) => {
      if (settled) return;
      settled = true;
      p.stdout!.off('data', check);
      p.stderr!.off('data', check);
      p.off('exit', onExit);
      resolve(value);
    };
    p.stdout!.on('data', check);
    p.stderr!.on('data', check);
    p.once('exit', onExit);
    check();
    if (p.exitCode !== null || p.signalCode !== null) onExit();
  });
}

/** Every file under `dir` with the SHA-256 of its bytes. */
function snapshot(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else files[relative(dir, path)] = createHash('sha256').update(readFileSync(path)).digest('hex');
    }
  };
  walk(dir);
  return files;
}

const work = tempDir('damaged-run');
const experimentFile = join(work, 'tiny.json');
const keyFile = join(work, 'agg-key.json');
const original = join(work, 'original');

const aggregatorArgs = (runsDir: string, runId = RUN_ID) => ['aggregator', '--experiment', experimentFile, '--run-id', runId, '--runs-dir', runsDir, '--port', '0', '--key', keyFile];

test.before('a run killed with SIGKILL right after committing round 4 of 6', async () => {
  const experiment = tinyExperiment({ nodes: NODES, rounds: ROUNDS, selection: { nodes_per_round: NODES, min_updates: NODES, deadline_seconds: 30 } });
  writeFileSync(experimentFile, JSON.stringify(experiment));
  const data = await federatedData(experiment.dataset, NODES, experiment.seed);
  data.partitions.forEach((p, i) => writeLocalData(join(work, `data-${i}`), p));
  const agg = spawnCli(aggregatorArgs(original), { CROWDFL_CRASH_AT: `after-commit:${KILLED_AFTER}` });
  const listening = /listening on 127\.0\.0\.1:(\d+)/;
  if (!(await printed(agg, listening))) throw new Error(`the aggregator did not start: ${agg.output()}`);
  const port = listening.exec(agg.output())![1]!;
  const nodes = Array.from({ length: NODES }, (_, i) =>
    spawnCli(['node', '--aggregator', `127.0.0.1:${port}`, '--data', join(work, `data-${i}`), '--state-dir', join(work, `state-${i}`)]),
  );
  try {
    const { signal } = await exited(agg);
    if (signal !== 'SIGKILL') throw new Error(`the aggregator was to be killed after round ${KILLED_AFTER}: ${agg.output()}`);
  } finally {
    for (const n of nodes) n.kill('SIGKILL');
    await Promise.all(nodes.map(exited));
  }
});

let copies = 0;
/** A copy of the killed run's directory, as runs/<id>/ under a runs directory of its own. */
function copyOfRun(): { runsDir: string; runDir: string } {
  const runsDir = join(work, `copy-${++copies}`);
  const runDir = join(runsDir, RUN_ID);
  cpSync(join(original, RUN_ID), runDir, { recursive: true });
  return { runsDir, runDir };
}

/** Starts the aggregator on a run directory the way an operator resumes a run; stops it if it gets as far as listening. */
async function startOn(runsDir: string): Promise<{ code: number | null; output: string; listened: boolean }> {
  const agg = spawnCli(aggregatorArgs(runsDir));
  const listened = await printed(agg, /listening on/);
  if (listened) agg.kill('SIGKILL');
  const { code } = await exited(agg);
  return { code, output: agg.output(), listened };
}

/** The refusal every damaged copy must get: exit 2, the message, and not one byte of the directory changed. */
async function refused(t: import('ava').ExecutionContext, runsDir: string, runDir: string, ...says: RegExp[]): Promise<string> {
  const before = snapshot(runDir);
  const { code, output, listened } = await startOn(runsDir);
  t.false(listened, `the aggregator started on the damaged run:\n${output}`);
  t.is(code, 2, output);
  for (const s of says) t.regex(output, s);
  t.regex(output, /Nothing in .* was changed\. To recover:/);
  t.notRegex(output, /^\s+at /m, 'a message, not a stack trace');
  t.deepEqual(snapshot(runDir), before, 'nothing in the run directory was changed');
  return output;
}

test('the undamaged copy resumes after the last committed round (the checks refuse only what disagrees)', async (t) => {
  const { runsDir } = copyOfRun();
  const { output, listened } = await startOn(runsDir);
  t.true(listened, output);
  t.regex(output, new RegExp(`resuming run ${RUN_ID} at round ${KILLED_AFTER + 1} of ${ROUNDS} \\(${KILLED_AFTER} rounds committed before\\)`));
});

test('a truncated WAL: the aggregator refuses to resume, naming the committed rounds the database lost', async (t) => {
  const { runsDir, runDir } = copyOfRun();
  const wal = join(runDir, 'crowdfl.db-wal');
  truncateSync(wal, Math.floor(statSync(wal).size / 2));
  const output = await refused(
    t,
    runsDir,
    runDir,
    /cannot resume run k: its database and its run directory .* disagree/,
    new RegExp(`records/ holds the signed records? of rounds? [\\d–, ]*${KILLED_AFTER}, written as each was committed`),
    /the database has lost committed rounds \(crowdfl\.db-wal \(\d+ bytes\), which holds the newest commits .* is damaged or was cut short\)/,
    new RegExp(`put back a copy of crowdfl\\.db .* taken at or after round ${KILLED_AFTER}`),
  );
  t.regex(output, new RegExp(`checkpoints/round-000${KILLED_AFTER} is its last model`));
});

test('flipped bytes in the WAL: the aggregator refuses to resume, naming the committed rounds the database lost', async (t) => {
  const { runsDir, runDir } = copyOfRun();
  const wal = join(runDir, 'crowdfl.db-wal');
  const bytes = readFileSync(wal);
  // Past the WAL header, in the frames: SQLite stops replaying at the first frame whose checksum fails.
  const at = Math.floor(bytes.length * 0.6);
  for (let i = at; i < at + 4; i++) bytes[i] = bytes[i]! ^ 0xff;
  writeFileSync(wal, bytes);
  await refused(t, runsDir, runDir, /(the database's last committed round is \d+|the database holds no committed round), but .*records\/ holds the signed records? of rounds? /, /the database has lost committed rounds/);
});

test('WAL and shm deleted: the aggregator refuses to start a new run over the old one', async (t) => {
  const { runsDir, runDir } = copyOfRun();
  rmSync(join(runDir, 'crowdfl.db-wal'));
  rmSync(join(runDir, 'crowdfl.db-shm'));
  await refused(
    t,
    runsDir,
    runDir,
    /refusing to start run k in .*: the directory already holds a run, which a new one would overwrite/,
    /crowdfl\.db, holding no tables at all \(what the run wrote was still in crowdfl\.db-wal, which is missing\)/,
    new RegExp(`checkpoints in checkpoints/ \\(round-0000 … round-000${KILLED_AFTER}\\)`),
    new RegExp(`signed records of run k \\(started [^)]+\\) and of rounds 1–${KILLED_AFTER} in records/`),
  );
});

test('the database deleted: the aggregator refuses to start a new run over the checkpoints, updates and records left', async (t) => {
  const { runsDir, runDir } = copyOfRun();
  for (const f of ['crowdfl.db', 'crowdfl.db-wal', 'crowdfl.db-shm']) rmSync(join(runDir, f));
  const output = await refused(
    t,
    runsDir,
    runDir,
    /refusing to start run k in .*: the directory already holds a run/,
    /update blobs? in updates\//,
    /Rebuilding the database from the checkpoints and signed records is not supported/,
  );
  t.notRegex(output, /crowdfl\.db,/);
});

test('a corrupt page in the updates table: the aggregator refuses to resume, quoting SQLite\'s integrity check', async (t) => {
  const { runsDir, runDir } = copyOfRun();
  const path = join(runDir, 'crowdfl.db');
  // Bring every commit into crowdfl.db (so the page is damaged in the file, not in the WAL) …
  const sqlite = new Database(path);
  sqlite.pragma('wal_checkpoint(TRUNCATE)');
  const pageSize = sqlite.pragma('page_size', { simple: true }) as number;
  const leaf = sqlite.prepare("select pageno from dbstat where name = 'updates' and pagetype = 'leaf' and ncell >= 2 order by pageno").get() as { pageno: number };
  sqlite.close();
  // … then swap the first two cell pointers of one of the updates table's leaf pages: its rowids are out of order.
  const bytes = readFileSync(path);
  const pointers = (leaf.pageno - 1) * pageSize + 8;
  const first = bytes.readUInt16BE(pointers);
  bytes.writeUInt16BE(bytes.readUInt16BE(pointers + 2), pointers);
  bytes.writeUInt16BE(first, pointers + 2);
  writeFileSync(path, bytes);
  await refused(
    t,
    runsDir,
    runDir,
    /cannot resume run k: .*crowdfl\.db is damaged; SQLite's integrity_check reports:/,
    /Tree \d+ \(table updates\) page \d+ cell \d+: Rowid \d+ out of order/,
    /sqlite3 crowdfl\.db \.recover/,
  );
});
