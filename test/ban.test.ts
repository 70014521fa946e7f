// An operator bans a node while it is connected (`crowdfl nodes ban`, from
// another process, on the running aggregator's database): the node's task
// in flight is refused at upload, and it is given no task again, though its
// session is still open.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import type { EngineEvent } from '../aggregator/rounds/synchronous.js';
import { generateIdentity, nodeIdFromPublicKey } from '../core/signing/keys.js';
import { federatedData } from '../datasets/index.js';
import { runCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { joinAs, nextTask, statusOf, submitSmallUpdate } from './support/grpc.js';

test('a node banned by the operator while connected is refused at upload and given no more tasks', async (t) => {
  const experiment = tinyExperiment({ nodes: 2, rounds: 2, selection: { nodes_per_round: 2, min_updates: 1, deadline_seconds: 600 } });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const runsDir = tempDir('ban');
  const events: EngineEvent[] = [];
  const agg = await startAggregator({ experiment, runDir: join(runsDir, 'ban'), runId: 'ban', test: testSet, identity: generateIdentity(), onEvent: (e) => events.push(e) });
  try {
    const address = `127.0.0.1:${agg.port}`;
    const [banned, honest] = await Promise.all([joinAs(address), joinAs(address)]);
    const [t1, h1] = await Promise.all([nextTask(banned.conn), nextTask(honest.conn)]);
    const bannedId = nodeIdFromPublicKey(banned.identity.publicKey);
    // The banned node keeps its session alive throughout, as a live node would.
    let alive = true;
    const heartbeats = (async () => {
      while (alive) {
        await banned.conn.heartbeat(t1.task_id, 0.5).catch(() => false);
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const ban = await runCli(['nodes', 'ban', 'ban', bannedId, '--reason', 'sent garbage to the operator', '--runs-dir', runsDir]);
    t.is(ban.code, 0, ban.stderr);

    const refused = await statusOf(submitSmallUpdate(banned, t1));
    t.is(refused.code, grpc.status.PERMISSION_DENIED);
    t.regex(refused.details, new RegExp(`^node ${bannedId} is banned: sent garbage to the operator$`));
    t.regex(await submitSmallUpdate(honest, h1), /accepted into round 1/);

    // Round 2 goes to the honest node only; the banned one, still connected, polls and gets nothing.
    const h2 = await nextTask(honest.conn);
    t.is(h2.round, 2);
    const poll = await banned.conn.pollTask(200);
    t.falsy(poll.task, 'no task for a banned node');
    const started = events.filter((e): e is Extract<EngineEvent, { type: 'round-started' }> => e.type === 'round-started');
    t.is(started.at(-1)!.selected, 1);
    alive = false;
    await heartbeats;
  } finally {
    await agg.stop();
  }
});
