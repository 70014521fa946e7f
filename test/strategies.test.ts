// The strategies end to end: FedProx's μ reaches the nodes' training through
// the signed task, and a server optimizer's state is saved with every
// checkpoint so that replay reproduces each round bit for bit.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { UPDATE_BLOBS_DIR, UpdateBlobs } from '../aggregator/store/update-blobs.js';
import { decodeServerState } from '../aggregator/strategies/server-optimizers.js';
import type { StrategySpec } from '../aggregator/experiment/schema.js';
import { bytesToFloat32 } from '../core/tensor-codec.js';
import { replayRun } from '../lab/replay.js';
import { simulate } from '../lab/simulate.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

async function run(name: string, strategy: StrategySpec, rounds = 1) {
  const experiment = tinyExperiment({ name, rounds, strategy, training: { epochs: 5, batch_size: 16, learning_rate: 0.1 } });
  const runsDir = tempDir(name);
  await simulate({ experiment, runsDir, runId: name, progress: false, log: () => {} });
  return join(runsDir, name);
}

/** The mean L2 norm of round 1's update deltas, read back from the run's stored update bytes. */
function meanDeltaNorm(runDir: string, runId: string): number {
  const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
  const blobs = new UpdateBlobs(join(runDir, UPDATE_BLOBS_DIR));
  const norms = new RunStore(db).updatesOfRound(runId, 1).map((u) => {
    const delta = bytesToFloat32(blobs.get(u.updateSha256)!);
    return Math.sqrt(delta.reduce((s, x) => s + x * x, 0));
  });
  close();
  return norms.reduce((a, b) => a + b, 0) / norms.length;
}

test("FedProx's μ travels in the signed task and keeps the nodes' models near the global one", async (t) => {
  const [plain, proximal] = await Promise.all([run('plain', { name: 'fedavg' }), run('prox', { name: 'fedprox', mu: 5 })]);
  const plainNorm = meanDeltaNorm(plain, 'plain');
  const proxNorm = meanDeltaNorm(proximal, 'prox');
  t.log(`mean ‖Δ‖ after 5 local epochs: ${plainNorm.toFixed(3)} plain, ${proxNorm.toFixed(3)} with μ = 5`);
  t.true(proxNorm < 0.5 * plainNorm, 'the proximal term held the local models back');
});

test('a server optimizer saves its state with each checkpoint, and replay reproduces every round and state bit for bit', async (t) => {
  const dir = await run('adam', { name: 'fedadam', server_learning_rate: 0.05, beta1: 0.9, beta2: 0.99, tau: 1e-3 }, 3);
  for (const round of [1, 2, 3]) {
    const file = join(dir, 'checkpoints', `round-000${round}`, 'server-state.bin');
    t.true(existsSync(file), `round ${round} saved its state`);
    const state = decodeServerState(readFileSync(file), 610);
    t.truthy(state.m && state.v, 'fedadam keeps m and v');
  }
  const result = await replayRun({ runDir: dir });
  t.deepEqual([...result.runProblems, ...result.rounds.flatMap((r) => r.problems)], []);
  t.true(result.rounds.every((r) => r.aggregation === 'identical'));
});
