// An evaluator's replay of a recorded run: an untouched run checks out, and
// each way of tampering with the record that matters is caught and named.
import { cpSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import test from 'ava';
import { replayRun, type ReplayResult } from '../lab/replay.js';
import { simulate } from '../lab/simulate.js';
import { runCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

const experiment = tinyExperiment({
  nodes: 4,
  rounds: 3,
  selection: { nodes_per_round: 4, min_updates: 3, deadline_seconds: 60 },
  aggregation: { rule: 'trimmed-mean', beta: 0.25 },
});
const root = tempDir('replay');
const original = join(root, 'orig');
const recorded = simulate({ experiment, runsDir: root, runId: 'orig', progress: false, log: () => {} });

/** A copy of the recorded run to tamper with, as an evaluator's copy would be. */
async function copyOfRun(name: string): Promise<{ dir: string; db: Database.Database }> {
  await recorded;
  const dir = join(root, name, 'orig');
  cpSync(original, dir, { recursive: true });
  return { dir, db: new Database(join(dir, 'crowdfl.db')) };
}

const problems = (r: ReplayResult) => [...r.runProblems, ...r.rounds.flatMap((x) => x.problems.map((p) => `round ${x.round}: ${p}`))];

test('an untouched run replays: every aggregation bit-identical, every accuracy re-measured the same', async (t) => {
  await recorded;
  const result = await replayRun({ runDir: original });
  t.deepEqual(problems(result), []);
  t.true(result.ok);
  t.is(result.rounds.length, 3);
  t.true(result.rounds.every((r) => r.aggregation === 'identical' && r.inputs === 4 && r.replayedAccuracy === r.recordedAccuracy));
  const cli = await runCli(['replay', original, '--no-progress']);
  t.is(cli.code, 0, cli.stderr);
  t.regex(cli.stdout, /OK: 3 rounds, every signature, hash, aggregation and accuracy checks out/);
});

test('a changed byte of a stored update is caught and named', async (t) => {
  const { dir, db } = await copyOfRun('byte');
  const row = db.prepare("SELECT update_sha256 AS sha, task_id AS task FROM updates WHERE round = 2 AND input_reputation IS NOT NULL LIMIT 1").get() as { sha: string; task: string };
  db.close();
  const file = join(dir, 'updates', row.sha.slice(0, 2), `${row.sha}.f32`);
  const bytes = readFileSync(file);
  bytes[17] ^= 0x01;
  writeFileSync(file, bytes);
  const result = await replayRun({ runDir: dir });
  t.false(result.ok);
  t.true(problems(result).some((p) => p.startsWith('round 2:') && p.includes(`update ${row.task}`) && /stored bytes hash to .*, the node signed/.test(p)), problems(result).join('\n'));
  const cli = await runCli(['replay', dir, '--no-progress']);
  t.is(cli.code, 1);
  t.regex(cli.stdout, /MISMATCH round 2: update .* stored bytes hash to/);
});

test('two updates with swapped signatures are caught', async (t) => {
  const { dir, db } = await copyOfRun('signature');
  const rows = db.prepare('SELECT id, signature FROM updates WHERE round = 1 AND input_reputation IS NOT NULL ORDER BY id LIMIT 2').all() as { id: number; signature: string }[];
  const swap = db.prepare('UPDATE updates SET signature = ? WHERE id = ?');
  swap.run(rows[1]!.signature, rows[0]!.id);
  swap.run(rows[0]!.signature, rows[1]!.id);
  db.close();
  const result = await replayRun({ runDir: dir });
  t.false(result.ok);
  t.true(problems(result).some((p) => p.startsWith('round 1:') && /signature does not verify under node/.test(p)), problems(result).join('\n'));
});

test('an edited accuracy is caught: in the database and in summary.json', async (t) => {
  const { dir, db } = await copyOfRun('accuracy');
  db.prepare('UPDATE rounds SET accuracy = accuracy + 0.05 WHERE round = 3').run();
  db.close();
  let result = await replayRun({ runDir: dir });
  t.true(problems(result).some((p) => /^round 3: round 3 reports accuracy .*, its model scores/.test(p)), problems(result).join('\n'));

  const other = await copyOfRun('summary');
  other.db.close();
  const summaryFile = join(other.dir, 'summary.json');
  const summary = JSON.parse(readFileSync(summaryFile, 'utf8')) as { rounds: { round: number; accuracy: number }[] };
  summary.rounds[0]!.accuracy += 0.1;
  writeFileSync(summaryFile, JSON.stringify(summary));
  result = await replayRun({ runDir: other.dir });
  t.true(problems(result).some((p) => /^round 1: summary\.json reports accuracy/.test(p)), problems(result).join('\n'));
});

test('a removed update is caught: the round record no longer matches and the aggregation differs', async (t) => {
  const { dir, db } = await copyOfRun('removed');
  const row = db.prepare("SELECT id FROM updates WHERE round = 2 AND verdict = 'kept' LIMIT 1").get() as { id: number };
  db.prepare('DELETE FROM updates WHERE id = ?').run(row.id);
  db.close();
  const result = await replayRun({ runDir: dir });
  const found = problems(result);
  t.true(found.some((p) => p.startsWith('round 2:') && /the aggregator's signature over the round does not verify|does not match its recorded digest/.test(p)), found.join('\n'));
  t.true(found.some((p) => /^round 2: re-aggregating the 3 recorded updates gives model/.test(p)), found.join('\n'));
});

test('a changed aggregator parameter is caught: the run record no longer matches what the aggregator signed', async (t) => {
  const { dir, db } = await copyOfRun('parameter');
  const { json } = db.prepare('SELECT experiment_json AS json FROM runs').get() as { json: string };
  const edited = json.replace('"beta":0.25', '"beta":0.4');
  t.not(edited, json);
  db.prepare('UPDATE runs SET experiment_json = ?').run(edited);
  db.close();
  const result = await replayRun({ runDir: dir });
  t.false(result.ok);
  t.true(result.runProblems.some((p) => /differ from what the aggregator signed/.test(p)), result.runProblems.join('\n'));
});

test('replay needs only the run directory: the tensors it re-aggregates are stored in it, once per content', async (t) => {
  await recorded;
  const stored = readdirSync(join(original, 'updates')).flatMap((d) => readdirSync(join(original, 'updates', d)));
  t.true(stored.length > 0 && stored.length <= 12, `${stored.length} update files for 3 rounds × 4 nodes`);
  t.true(stored.every((f) => /^[0-9a-f]{64}\.f32$/.test(f)));
});
