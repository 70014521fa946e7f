// The start-up cross-check against a real database and a real run directory
// made by the real commit: what agrees passes, and each kind of disagreement is
// named. (test/damaged-run.test.ts starts the aggregator on damaged copies of
// a real run.)
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { sql } from 'drizzle-orm';
import { sign, signatureToString } from '../core/signing/ed25519.js';
import { generateIdentity, publicKeyToString } from '../core/signing/keys.js';
import { RUN_TAG, runDigest } from '../core/signing/layouts.js';
import { float32ToBytes, sha256Hex } from '../core/tensor-codec.js';
import { tempDir, tinyExperiment } from '../test/support/fixtures.js';
import { Sessions } from './nodes/sessions.js';
import { commitAggregation } from './rounds/commit.js';
import { crossCheck, roundRanges, surveyRunDirectory } from './run-directory.js';
import { checkpointDirName, writeCheckpoint } from './store/checkpoints.js';
import { openDatabase } from './store/db.js';
import { RunStore } from './store/run-store.js';
import { readSignedRecords, roundRecordFileName, writeRunRecordFile } from './store/signed-records.js';

const RUN_ID = 'cross';
const MANIFEST = [{ name: 'dense/kernel', shape: [2, 2], dtype: 'float32' as const }];
const TOPOLOGY = { class_name: 'Sequential' };
const model = (v: number) => new Float32Array([v, v, v, v]);

/** A run with three committed rounds, made as the aggregator makes one; its database stays open. */
async function committedRun(prefix: string) {
  const dir = tempDir(prefix);
  const experiment = tinyExperiment();
  const identity = generateIdentity();
  const { db, close } = openDatabase(join(dir, 'crowdfl.db'));
  const store = new RunStore(db);
  const experimentJson = JSON.stringify(experiment);
  const signed = { experiment_id: RUN_ID, experiment_sha256: sha256Hex(Buffer.from(experimentJson)), seed: experiment.seed, initial_model_sha256: sha256Hex(float32ToBytes(model(0))) };
  const runSignature = signatureToString(sign(runDigest(signed), identity));
  const key = publicKeyToString(identity.publicKey);
  store.createRun({ id: RUN_ID, experimentName: experiment.name, experimentJson, seed: experiment.seed, initialModelSha256: signed.initial_model_sha256, runSignature, backend: 'cpu', aggregatorPublicKey: key, software: '{}', status: 'running', startedAt: 1000 });
  writeRunRecordFile(join(dir, 'records'), { layout: RUN_TAG, ...signed, run_signature: runSignature, aggregator_public_key: key, started_at: 1000 });
  const checkpointsDir = join(dir, 'checkpoints');
  writeCheckpoint(checkpointsDir, checkpointDirName(0), TOPOLOGY, MANIFEST, model(0));
  const context = {
    experiment,
    runId: RUN_ID,
    identity,
    store,
    sessions: new Sessions(20_000, () => 1_000),
    checkpointsDir,
    recordsDir: join(dir, 'records'),
    topology: TOPOLOGY,
    manifest: MANIFEST,
    evaluate: async () => ({ accuracy: 0.5, loss: 1 }),
  };
  for (const round of [1, 2, 3]) {
    await commitAggregation(context, {
      round,
      attempt: 0,
      selected: 0,
      startedAt: Date.now(),
      previousModelSha256: sha256Hex(float32ToBytes(model(round - 1))),
      updates: [],
      step: { weights: model(round), verdicts: [] },
      refused: [],
    });
  }
  const check = () => crossCheck(store, store.getRun(RUN_ID)!, surveyRunDirectory(dir)).map((d) => d.what);
  return { dir, checkpointsDir, db, store, close, check };
}

test('a run directory that agrees with its database passes, a checkpoint one round past the last commit included', async (t) => {
  const run = await committedRun('cross-ok');
  t.deepEqual(run.check(), []);
  // A crash between round 4's checkpoint and its commit leaves exactly this.
  writeCheckpoint(run.checkpointsDir, checkpointDirName(4), TOPOLOGY, MANIFEST, model(4));
  t.deepEqual(run.check(), []);
  run.close();
});

test('a checkpoint two rounds past the last commit, or a record of a round the database lacks, is a lost commit', async (t) => {
  const run = await committedRun('cross-lost');
  writeCheckpoint(run.checkpointsDir, checkpointDirName(5), TOPOLOGY, MANIFEST, model(5));
  const records = join(run.dir, 'records');
  const three = readSignedRecords(records).rounds.get(3)!;
  writeFileSync(join(records, roundRecordFileName(4)), JSON.stringify({ ...three, round: 4 }));
  const found = crossCheck(run.store, run.store.getRun(RUN_ID)!, surveyRunDirectory(run.dir));
  t.is(found.length, 1);
  t.true(found[0]!.lostCommits);
  t.regex(found[0]!.what, /the database's last committed round is 3, but checkpoints\/ holds round-0005, written only once round 4 was committed, and records\/ holds the signed record of round 4/);
  t.regex(found[0]!.what, /crowdfl\.db-wal \(\d+ bytes\), .* is damaged or was cut short/);
  run.close();
});

test("a record that differs from the database's round, and a run record of another run, are named", async (t) => {
  const run = await committedRun('cross-mismatch');
  const other = await committedRun('cross-other');
  other.close();
  // Another run's round 2 and run record, as if this database were not the one this directory was recorded in.
  cpSync(join(other.dir, 'records', roundRecordFileName(2)), join(run.dir, 'records', roundRecordFileName(2)));
  const runRecord = JSON.parse(readFileSync(join(run.dir, 'records', 'run.json'), 'utf8'));
  writeFileSync(join(run.dir, 'records', 'run.json'), JSON.stringify({ ...runRecord, started_at: 2000 }));
  const found = run.check();
  t.is(found.length, 2, found.join('\n'));
  t.regex(found[0]!, /records\/run\.json records a run started .* \(they differ in: start time\)/);
  t.regex(found[1]!, /the signed record records\/round-0002\.json differs from what the database holds for that round/);
  run.close();
});

test('the audit trail: a round row changed after it was signed breaks its signature and the chain after it', async (t) => {
  const run = await committedRun('cross-audit');
  run.db.run(sql.raw(`update rounds set model_sha256 = '${'e'.repeat(64)}' where round = 2`));
  const found = run.check();
  t.true(found.some((f) => /round 3 do not start from the model the round before committed/.test(f)), found.join('\n'));
  t.true(found.some((f) => /the signed record of round 2 does not match the updates and models stored for it/.test(f)), found.join('\n'));
  t.true(found.some((f) => /records\/round-0002\.json differs from what the database holds/.test(f)), found.join('\n'));
  run.close();
});

test('an unreadable record is named, with how to clear it', async (t) => {
  const run = await committedRun('cross-unreadable');
  mkdirSync(join(run.dir, 'records'), { recursive: true });
  writeFileSync(join(run.dir, 'records', roundRecordFileName(9)), '{');
  t.deepEqual(run.check().filter((f) => /round-0009/.test(f)).length, 1);
  t.regex(run.check().join('\n'), /records\/round-0009\.json is not a readable signed record .* move it out of records\//);
  run.close();
});

test('round ranges read as an operator writes them', (t) => {
  t.is(roundRanges([1, 2, 3, 5, 7, 8]), '1–3, 5, 7–8');
  t.is(roundRanges([4]), '4');
  t.is(roundRanges([]), '');
});
