// The deadline closes a round: a node that stays connected, heartbeats and
// never uploads must not hold the round past it. A round closed without its
// quorum is abandoned, and the honest update it had is recorded as
// 'abandoned' — in no model, and counted neither for nor against its node.
import { join } from 'node:path';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { nodeContribution } from '../aggregator/nodes/contribution.js';
import type { EngineEvent } from '../aggregator/rounds/synchronous.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { generateIdentity, nodeIdFromPublicKey } from '../core/signing/keys.js';
import { federatedData } from '../datasets/index.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { joinAs, nextTask, submitSmallUpdate } from './support/grpc.js';

test('a node that heartbeats but never uploads is not waited for past the deadline; the round is abandoned and the honest update is recorded as abandoned', async (t) => {
  const experiment = tinyExperiment({ nodes: 2, rounds: 1, selection: { nodes_per_round: 2, min_updates: 2, deadline_seconds: 3 } });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const runDir = tempDir('deadline');
  let abandoned: (reason: string) => void = () => {};
  const roundAbandoned = new Promise<string>((resolve) => (abandoned = resolve));
  const events: EngineEvent[] = [];
  const agg = await startAggregator({
    experiment,
    runDir,
    runId: 'deadline',
    test: testSet,
    identity: generateIdentity(),
    onEvent: (e) => {
      events.push(e);
      if (e.type === 'round-abandoned') abandoned(e.reason);
    },
  });
  let stalling = true;
  try {
    const address = `127.0.0.1:${agg.port}`;
    const [honest, staller] = await Promise.all([joinAs(address), joinAs(address)]);
    const [task, stalled] = await Promise.all([nextTask(honest.conn), nextTask(staller.conn)]);
    // The staller keeps its session and task alive, reporting progress, and never uploads.
    const heartbeatErrors: string[] = [];
    const heartbeats = (async () => {
      while (stalling) {
        await staller.conn.heartbeat(stalled.task_id, 0.5).catch((err: Error) => heartbeatErrors.push(err.message));
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    await submitSmallUpdate(honest, task);
    const reason = await roundAbandoned;
    stalling = false;
    await heartbeats;
    // The staller's task was still open when the round closed (closing drops it): its session never lapsed,
    // so the deadline, not a lease, closed the round.
    t.regex(reason, /^1 of 2 updates when the round closed \(deadline passed, or every task answered or dropped\): 0 declined, 1 dropped, 0 rejected; quorum is 2$/);
    t.deepEqual(heartbeatErrors, []);
    const started = events.find((e): e is Extract<EngineEvent, { type: 'round-started' }> => e.type === 'round-started')!;
    t.is(started.selected, 2);
    await agg.stop();
    await agg.done;

    const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
    try {
      const store = new RunStore(db);
      const honestId = nodeIdFromPublicKey(honest.identity.publicKey);
      const [row] = store.updatesOfRound('deadline', 1);
      t.like(row, { nodeId: honestId, verdict: 'abandoned', weight: 0 });
      t.regex(row!.reason, /^round abandoned: 1 of 2 updates/);
      t.like(store.node(honestId), { accepted: 0, rejected: 0, reputation: 1 });
      const totals = nodeContribution(store, 'deadline', honestId);
      t.is(totals.abandoned, 1);
      t.is(totals.rejected.size, 0);
      t.is(totals.credited, 0);
    } finally {
      close();
    }
  } finally {
    stalling = false;
    await agg.stop();
  }
});
