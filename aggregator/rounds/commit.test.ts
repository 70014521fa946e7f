// The commit order, against a real checkpoint directory and a real database
// file: a round's checkpoint is durable on disk before the database commits
// the round, and an aggregator that dies between the two resumes from the last
// committed round, the orphan checkpoint doing no harm.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import test from 'ava';
import { generateIdentity, publicKeyToString, type Identity } from '../../core/signing/keys.js';
import { float32ToBytes, sha256Hex, type TensorEntry } from '../../core/tensor-codec.js';
import type { Experiment } from '../experiment/schema.js';
import { Sessions } from '../nodes/sessions.js';
import { resumePoint } from '../resume.js';
import { checkpointDirName, readCheckpointWeights, writeCheckpoint } from '../store/checkpoints.js';
import { openDatabase, type Db } from '../store/db.js';
import { RunStore, type RoundOutcome } from '../store/run-store.js';
import { readSignedRecords, roundRecordFileName } from '../store/signed-records.js';
import { digestHex, signatureFromString, verify } from '../../core/signing/ed25519.js';
import { roundDigest } from '../../core/signing/layouts.js';
import { tempDir, tinyExperiment } from '../../test/support/fixtures.js';
import { commitAggregation, type CommitContext } from './commit.js';

const RUN_ID = 'commit-order';
const MANIFEST: readonly TensorEntry[] = [{ name: 'dense/kernel', shape: [2, 2], dtype: 'float32' }];
const TOPOLOGY = { class_name: 'Sequential' };

/**
 * A real RunStore that notes, as each round's database commit begins, what
 * that round's checkpoint directory holds; told to, it dies there instead of
 * committing, as an aggregator killed at that moment would.
 */
class WatchedStore extends RunStore {
  /** The hash of the checkpoint on disk when each round's commit began, or null when there was none. */
  readonly checkpointAtCommit = new Map<number, string | null>();
  /** Whether each round's signed record file was on disk when its commit began. */
  readonly recordAtCommit = new Map<number, boolean>();

  constructor(
    db: Db,
    private readonly checkpointsDir: string,
    private readonly dieAtRound?: number,
  ) {
    super(db);
  }

  override commitRound(outcome: RoundOutcome): void {
    const dir = join(this.checkpointsDir, checkpointDirName(outcome.round.round));
    this.checkpointAtCommit.set(outcome.round.round, existsSync(join(dir, 'weights.bin')) ? readCheckpointWeights(dir).sha256 : null);
    this.recordAtCommit.set(outcome.round.round, existsSync(join(dirname(this.checkpointsDir), 'records', roundRecordFileName(outcome.round.round))));
    if (outcome.round.round === this.dieAtRound) throw new Error(`killed before committing round ${outcome.round.round}`);
    super.commitRound(outcome);
  }
}

interface Run {
  dir: string;
  checkpointsDir: string;
  databasePath: string;
  experiment: Experiment;
  identity: Identity;
}

/** A started run, as the aggregator leaves it before its first round: the run row and the initial model's checkpoint. */
function startedRun(prefix: string, initial: Float32Array): Run {
  const dir = tempDir(prefix);
  const run: Run = { dir, checkpointsDir: join(dir, 'checkpoints'), databasePath: join(dir, 'crowdfl.db'), experiment: tinyExperiment(), identity: generateIdentity() };
  const { db, close } = openDatabase(run.databasePath);
  new RunStore(db).createRun({
    id: RUN_ID,
    experimentName: run.experiment.name,
    experimentJson: JSON.stringify(run.experiment),
    seed: run.experiment.seed,
    initialModelSha256: sha256Hex(float32ToBytes(initial)),
    backend: 'cpu',
    aggregatorPublicKey: publicKeyToString(run.identity.publicKey),
    software: '{}',
    status: 'running',
    startedAt: Date.now(),
  });
  close();
  writeCheckpoint(run.checkpointsDir, checkpointDirName(0), TOPOLOGY, MANIFEST, initial);
  return run;
}

function context(run: Run, store: RunStore): CommitContext {
  return {
    experiment: run.experiment,
    runId: RUN_ID,
    identity: run.identity,
    store,
    sessions: new Sessions(20_000, () => 1_000),
    checkpointsDir: run.checkpointsDir,
    recordsDir: join(run.dir, 'records'),
    topology: TOPOLOGY,
    manifest: MANIFEST,
    evaluate: async () => ({ accuracy: 0.5, loss: 1 }),
  };
}

/** Commits `weights` as `round` (no updates: the order of the writes does not depend on them). */
function commit(run: Run, store: RunStore, round: number, weights: Float32Array, previous: Float32Array) {
  return commitAggregation(context(run, store), {
    round,
    attempt: store.nextAttempt(RUN_ID, round),
    selected: 0,
    startedAt: Date.now(),
    previousModelSha256: sha256Hex(float32ToBytes(previous)),
    updates: [],
    step: { weights, verdicts: [] },
    refused: [],
  });
}

/** Where a restarted aggregator would continue the run, read from the files alone. */
function resumeFromDisk(run: Run) {
  const { db, close } = openDatabase(run.databasePath);
  try {
    const store = new RunStore(db);
    return resumePoint(store, store.getRun(RUN_ID)!, run.experiment, publicKeyToString(run.identity.publicKey), run.checkpointsDir);
  } finally {
    close();
  }
}

const model = (...values: number[]) => new Float32Array(values);
const hash = (weights: Float32Array) => sha256Hex(float32ToBytes(weights));

test('a round is on disk as a checkpoint before the database commits it', async (t) => {
  const initial = model(0, 0, 0, 0);
  const run = startedRun('commit-order', initial);
  const { db, close } = openDatabase(run.databasePath);
  const store = new WatchedStore(db, run.checkpointsDir);
  const round1 = model(1, 2, 3, 4);
  const round2 = model(5, 6, 7, 8);
  const { record } = await commit(run, store, 1, round1, initial);
  await commit(run, store, 2, round2, round1);
  close();

  t.is(record.model_sha256, hash(round1));
  t.deepEqual(
    [...store.checkpointAtCommit],
    [
      [1, hash(round1)],
      [2, hash(round2)],
    ],
    "each round's checkpoint, with the model the round commits, was there when its database commit began",
  );
  t.deepEqual(
    resumeFromDisk(run).records.map((r) => [r.round, r.model_sha256]),
    [
      [1, hash(round1)],
      [2, hash(round2)],
    ],
  );
});

test("a round's signed record is written beside the database once the database has committed it, and verifies on its own", async (t) => {
  const initial = model(0, 0, 0, 0);
  const run = startedRun('commit-record', initial);
  const { db, close } = openDatabase(run.databasePath);
  const store = new WatchedStore(db, run.checkpointsDir);
  const round1 = model(1, 2, 3, 4);
  const { record } = await commit(run, store, 1, round1, initial);
  close();

  t.false(store.recordAtCommit.get(1), 'no record before the commit: a record proves its round was committed');
  const file = readSignedRecords(join(run.dir, 'records')).rounds.get(1);
  t.truthy(file, 'the record is on disk once the commit returns');
  t.like(file, { round: 1, model_sha256: hash(round1), previous_model_sha256: hash(initial), round_digest: record.round_digest, aggregator_signature: record.aggregator_signature });
  const digest = roundDigest(file!);
  t.is(digestHex(digest), file!.round_digest);
  t.true(verify(digest, signatureFromString(file!.aggregator_signature)!, run.identity.publicKey), "its signature verifies under the aggregator's key");
});

test('an aggregator killed between the checkpoint and the database commit resumes from the last committed round', async (t) => {
  const initial = model(0, 0, 0, 0);
  const run = startedRun('commit-crash', initial);
  const round1 = model(1, 2, 3, 4);
  const lost = model(9, 9, 9, 9);
  {
    const { db, close } = openDatabase(run.databasePath);
    const store = new WatchedStore(db, run.checkpointsDir, 2);
    await commit(run, store, 1, round1, initial);
    await t.throwsAsync(commit(run, store, 2, lost, round1), { message: 'killed before committing round 2' });
    close();
    t.is(store.checkpointAtCommit.get(2), hash(lost), 'the checkpoint was durable before the commit that never happened');
  }
  t.false(existsSync(join(run.dir, 'records', roundRecordFileName(2))), 'a round that was not committed has no signed record');
  // What the dead aggregator left: a checkpoint for round 2, which no committed round names.
  t.is(readCheckpointWeights(join(run.checkpointsDir, checkpointDirName(2))).sha256, hash(lost));

  const resumed = resumeFromDisk(run);
  t.is(resumed.nextRound, 2);
  t.deepEqual(resumed.weights, round1, 'the restarted aggregator continues from the model round 1 committed');
  t.deepEqual(resumed.previousWeights, initial);
  t.deepEqual(
    resumed.records.map((r) => r.round),
    [1],
  );

  // Round 2 runs again, and its checkpoint replaces the orphan.
  const round2 = model(5, 6, 7, 8);
  {
    const { db, close } = openDatabase(run.databasePath);
    await commit(run, new RunStore(db), 2, round2, resumed.weights);
    close();
  }
  const after = resumeFromDisk(run);
  t.is(after.nextRound, 3);
  t.deepEqual(after.weights, round2);
  t.deepEqual(after.previousWeights, round1);
  t.deepEqual(
    after.records.map((r) => [r.round, r.model_sha256]),
    [
      [1, hash(round1)],
      [2, hash(round2)],
    ],
  );
});
