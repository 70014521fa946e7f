// Over-selection (Bonawitz et al. 2019): ask more nodes than the round needs
// and commit once enough updates are in, so stragglers do not hold the round.
import { join } from 'node:path';
import test from 'ava';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { simulate } from '../experiments/simulate.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

test('a round asks ceil(target × over_selection) nodes and commits as soon as the target number of updates is in', async (t) => {
  const experiment = tinyExperiment({
    nodes: 5,
    rounds: 3,
    selection: { nodes_per_round: 3, min_updates: 2, deadline_seconds: 60, over_selection: 1.5 },
  });
  const runsDir = tempDir('oversel');
  const summary = await simulate({ experiment, runsDir, runId: 'oversel', progress: false, log: () => {} });
  t.is(summary.rounds.length, 3);
  const { db, close } = openDatabase(join(runsDir, 'oversel', 'crowdfl.db'));
  const store = new RunStore(db);
  for (const r of store.committedRounds('oversel')) {
    t.is(r.selected, 5, `round ${r.round} asked every node (ceil(3 × 1.5) = 5)`);
    t.is(r.participants, 3, `round ${r.round} committed with exactly the target`);
    t.is(store.updatesOfRound('oversel', r.round).filter((u) => u.verdict === 'kept').length, 3);
  }
  close();
});
