// Volunteers vanish mid-round: a killed node must not stall the run, and the
// round commits with the nodes that answered.
import { join } from 'node:path';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { freePort, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { generateIdentity, publicKeyToString } from '../core/signing/keys.js';

test('a node killed mid-round frees its slot and the round commits without it', async (t) => {
  const experiment = tinyExperiment({
    nodes: 3,
    rounds: 3,
    selection: { nodes_per_round: 3, min_updates: 2, deadline_seconds: 8 },
  });
  const dir = tempDir('dropout');
  const data = await federatedData(experiment.dataset, 3, experiment.seed);
  const port = await freePort();
  const identity = generateIdentity();
  const nodes = data.partitions.map((p, i) => {
    writeLocalData(join(dir, `data-${i}`), p);
    return spawnCli([
      'node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, `data-${i}`),
      '--state-dir', join(dir, `state-${i}`), '--aggregator-key', publicKeyToString(identity.publicKey), '--exit-when-finished',
    ]);
  });
  let killedAt = 0;
  try {
    const agg = await startAggregator({
      experiment,
      runDir: join(dir, 'run'),
      runId: 'dropout',
      identity,
      test: data.test,
      port,
      heartbeatIntervalMs: 500,
      // Round 1 waits for all three however long their processes take to start (a loaded machine can take
      // seconds), so the node killed during it is one the round asked.
      firstRoundNodes: 3,
      firstRoundGraceMs: 600_000,
      onEvent: (e) => {
        if (e.type === 'round-started' && e.round === 1 && !killedAt) {
          killedAt = Date.now();
          nodes[0]!.kill('SIGKILL');
        }
      },
    });
    const summary = await agg.done;
    t.true(killedAt > 0);
    t.is(summary.rounds.length, 3, 'every round committed despite the dead node');
    t.true(summary.rounds.every((r) => r.participants === 2), JSON.stringify(summary.rounds.map((r) => r.participants)));
    // Once its lease ran out the dead node was not asked, nor waited for, again.
    t.is(summary.rounds[0]!.selected, 3);
    t.deepEqual(summary.rounds.slice(1).map((r) => r.selected), [2, 2]);
  } finally {
    for (const n of nodes) n.kill('SIGTERM');
  }
});
