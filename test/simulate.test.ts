// The whole system at small scale: the aggregator's gRPC server and three node
// processes started with the same `crowdfl node` command an operator runs.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { readCheckpointWeights } from '../aggregator/store/checkpoints.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { simulate } from '../lab/simulate.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

test('a simulated run trains over real gRPC between real processes and records everything', async (t) => {
  const experiment = tinyExperiment({ rounds: 4 });
  const runsDir = tempDir('sim');
  const summary = await simulate({ experiment, runsDir, runId: 'sim', progress: false, log: () => {} });
  const runDir = join(runsDir, 'sim');

  t.is(summary.rounds.length, 4);
  t.deepEqual(
    summary.rounds.map((r) => r.round),
    [1, 2, 3, 4],
  );
  for (const r of summary.rounds) {
    t.is(r.participants, 3);
    t.true(r.examples > 0);
    t.true(r.seconds > 0 && r.overhead_seconds >= 0 && r.overhead_seconds <= r.seconds);
  }
  // Learning happened: far above chance (10 classes) and improving.
  t.true(summary.final_accuracy! > 0.4, `final accuracy ${summary.final_accuracy}`);
  t.true(summary.rounds[3]!.loss < summary.rounds[0]!.loss);

  const written = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8'));
  for (const key of ['experiment', 'backend', 'rounds', 'final_accuracy', 'wall_seconds']) t.true(key in written, key);
  for (const key of ['round', 'accuracy', 'loss', 'participants', 'seconds', 'model_sha256']) t.true(key in written.rounds[0], key);

  // Every round's checkpoint is a tfjs model whose weights hash to the recorded address.
  for (const r of summary.rounds) {
    const dir = join(runDir, 'checkpoints', `round-000${r.round}`);
    t.is(readCheckpointWeights(dir).sha256, r.model_sha256);
    const modelJson = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
    t.is(modelJson.format, 'layers-model');
    t.deepEqual(modelJson.weightsManifest[0].paths, ['weights.bin']);
  }
  t.true(existsSync(join(runDir, 'checkpoints', 'round-0000', 'weights.bin')));

  // The database holds the same rounds and one kept update per node per round.
  const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
  const store = new RunStore(db);
  t.deepEqual(
    store.committedRounds('sim').map((r) => r.modelSha256),
    summary.rounds.map((r) => r.model_sha256),
  );
  const ups = store.updatesOfRound('sim', 2);
  t.is(ups.length, 3);
  t.true(ups.every((u) => u.verdict === 'kept'));
  t.is(store.getRun('sim')?.status, 'finished');
  t.is(store.nodeRows().length, 3);
  close();

  // Each node process logged its work.
  const log = readFileSync(join(runDir, 'nodes', 'node-000', 'node.log'), 'utf8');
  t.regex(log, /round 4: trained \d+ examples/);
});
