// A node keeps trying until an aggregator is there, and finds the next one
// when the first goes away, without anyone restarting it.
import { join } from 'node:path';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { freePort, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { generateIdentity } from '../core/signing/keys.js';

test('a node waits for the aggregator, and rejoins a restarted one', async (t) => {
  const experiment = tinyExperiment({
    nodes: 1,
    rounds: 2,
    selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 30 },
  });
  const dir = tempDir('reconnect');
  const data = await federatedData(experiment.dataset, 1, experiment.seed);
  writeLocalData(join(dir, 'data'), data.partitions[0]!);
  const port = await freePort();
  // The node pins this key on first use and must accept it again after the restart.
  const identity = generateIdentity();
  const node = spawnCli(['node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, 'data'), '--state-dir', join(dir, 'state')]);
  try {
    // Nothing listens yet: the node backs off and retries.
    for (let i = 0; i < 200 && !/retrying in/.test(node.output()); i++) await new Promise((r) => setTimeout(r, 100));
    t.regex(node.output(), /aggregator unreachable .* retrying in/);
    t.is(node.exitCode, null);

    for (const runId of ['first', 'second']) {
      const agg = await startAggregator({ experiment, runDir: join(dir, runId), runId, test: data.test, port, identity });
      const summary = await agg.done;
      t.is(summary.rounds.length, 2, `${runId} ran both rounds with the one node`);
      t.true(summary.rounds.every((r) => r.participants === 1));
    }
    // The same persistent identity joined both runs.
    const joins = node.output().match(/joined experiment (first|second) at \S+ as (n-[0-9a-f]+)/g) ?? [];
    t.is(joins.length, 2);
    t.is(new Set(joins.map((j) => j.split(' as ')[1])).size, 1);
  } finally {
    node.kill('SIGTERM');
  }
});
