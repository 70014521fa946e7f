// One careless volunteer: its data was imported without scaling (raw 0..255
// values where the model expects unit-scale features). Its local training
// explodes; the node must decline the task with that reason rather than
// submit, and the run must end as if the node had not been there.
import { join } from 'node:path';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { generateIdentity, nodeIdFromPublicKey, loadOrCreateIdentity, publicKeyToString } from '../core/signing/keys.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { freePort, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

// Image data, where features are pixels the model expects in [0, 1].
const experiment = tinyExperiment({
  dataset: { name: 'mnist', partition: { kind: 'iid' } },
  model: '2nn',
  training: { epochs: 1, batch_size: 32, learning_rate: 0.05 },
  nodes: 4,
  rounds: 3,
  selection: { nodes_per_round: 4, min_updates: 3, deadline_seconds: 60 },
});

async function run(label: string, careless: boolean) {
  const dir = tempDir(`careless-${label}`);
  const data = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const port = await freePort();
  const identity = generateIdentity();
  const nodeIds: string[] = [];
  const nodes = data.partitions.map((p, i) => {
    // Node 0 of the careless run multiplies its features by 255, as an unscaled pixel import would.
    const partition = careless && i === 0 ? { ...p, features: p.features.map((x) => x * 255) } : p;
    writeLocalData(join(dir, `data-${i}`), partition);
    nodeIds.push(nodeIdFromPublicKey(loadOrCreateIdentity(join(dir, `state-${i}`, 'key.json'), { create: true }).identity.publicKey));
    return spawnCli([
      'node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, `data-${i}`),
      '--state-dir', join(dir, `state-${i}`), '--aggregator-key', publicKeyToString(identity.publicKey), '--exit-when-finished',
    ]);
  });
  try {
    const agg = await startAggregator({ experiment, runDir: join(dir, 'run'), runId: label, identity, test: data.test, port, firstRoundNodes: experiment.nodes });
    const summary = await agg.done;
    const { db, close } = openDatabase(join(dir, 'run', 'crowdfl.db'));
    try {
      const store = new RunStore(db);
      return { summary, tasks: store.tasksOfNode(label, nodeIds[0]!), updates: store.updatesOfNode(label, nodeIds[0]!), log: nodes[0]!.output() };
    } finally {
      close();
    }
  } finally {
    for (const n of nodes) n.kill('SIGTERM');
  }
}

test('a node whose unscaled data makes its training explode declines with the reason, and the run ends as a clean one does', async (t) => {
  const clean = await run('clean', false);
  const careless = await run('careless', true);
  t.is(careless.summary.rounds.length, experiment.rounds);
  t.true(careless.tasks.length > 0, 'the careless node was given tasks');
  for (const task of careless.tasks) {
    t.is(task.declineKind, 'DIVERGED');
    t.regex(task.declineReason ?? '', /local training diverged.*scaled/);
  }
  t.is(careless.updates.length, 0, 'no update of the careless node reached the aggregator');
  t.regex(careless.log, /declined task .*local training diverged/);
  const accuracy = (r: typeof clean) => r.summary.rounds.at(-1)!.accuracy;
  t.true(Math.abs(accuracy(careless) - accuracy(clean)) <= 0.02, `clean ${accuracy(clean)}, careless ${accuracy(careless)}`);
});
