// Declining a task over real gRPC: the slot is freed at once (the round does
// not wait for the deadline), the decline and its reason are recorded, and
// every wrong decline gets its own status. Busy aggregators pace Hellos.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import type { EngineEvent } from '../aggregator/rounds/synchronous.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { generateIdentity, nodeIdFromPublicKey } from '../core/signing/keys.js';
import { weightManifest } from '../core/model/spec.js';
import { parseModelJson } from '../core/model/zoo.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { AggregatorConnection, retryAfterMs } from '../trainer/client.js';
import { spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { caps, joinAs, nextTask, statusOf } from './support/grpc.js';

test('a declined task frees its slot at once and is recorded with its reason; wrong declines get clear statuses', async (t) => {
  const experiment = tinyExperiment({ rounds: 1, selection: { nodes_per_round: 2, min_updates: 1, deadline_seconds: 60 } });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const runDir = tempDir('decline');
  const events: EngineEvent[] = [];
  const agg = await startAggregator({ experiment, runDir, runId: 'decline', test: testSet, identity: generateIdentity(), onEvent: (e) => events.push(e) });
  try {
    const address = `127.0.0.1:${agg.port}`;
    const a = await joinAs(address);
    const b = await joinAs(address);
    const [taskA, taskB] = await Promise.all([nextTask(a.conn), nextTask(b.conn)]);

    let s = await statusOf(b.conn.declineTask(taskA.task_id, 'not mine'));
    t.is(s.code, grpc.status.PERMISSION_DENIED);
    t.regex(s.details, /was not assigned to this node/);
    s = await statusOf(a.conn.declineTask(taskA.task_id, '   '));
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    t.regex(s.details, /must say why/);
    s = await statusOf(a.conn.declineTask(taskA.task_id, 'x'.repeat(501)));
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    s = await statusOf(a.conn.declineTask('no-such-task', 'busy'));
    t.is(s.code, grpc.status.NOT_FOUND);

    const retry = await a.conn.declineTask(taskA.task_id, 'the operator paused this node');
    t.true(retry > 0, 'the reply says when to poll again');
    s = await statusOf(a.conn.declineTask(taskA.task_id, 'again'));
    t.is(s.code, grpc.status.ALREADY_EXISTS);

    // B answers; with A's slot freed nothing is pending, so the round commits now, not in 60 s.
    const manifest = weightManifest(parseModelJson(taskB.model_json));
    await b.conn.submitUpdate(
      {
        taskId: taskB.task_id,
        experimentId: taskB.experiment_id,
        round: taskB.round,
        baseModelSha256: taskB.base_model_sha256,
        numExamples: 50,
        metrics: { loss: 1, accuracy: 0.5, train_seconds: 0.1, examples_per_second: 500, epochs_completed: 1, partial: false },
        manifest,
        delta: new Float32Array(manifest.reduce((n, e) => n + e.shape.reduce((p, d) => p * d, 1), 0)),
      },
      b.identity,
    );
    const summary = await agg.done;
    t.is(summary.rounds.length, 1);
    t.true(events.some((e) => e.type === 'task-declined' && e.reason === 'the operator paused this node'));
    s = await statusOf(a.conn.declineTask(taskA.task_id, 'late'));
    t.not(s.code, grpc.status.OK, 'after the run, a decline has nothing to free');

    const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
    const store = new RunStore(db);
    // The round closed as soon as B answered, before its deadline, which a round waiting on A's slot would have reached.
    const started = events.find((e): e is Extract<EngineEvent, { type: 'round-started' }> => e.type === 'round-started')!;
    t.true(store.committedRound('decline', 1)!.closedAt < started.deadline, 'the round did not wait for its deadline');
    const row = store.task(taskA.task_id)!;
    t.is(row.declineReason, 'the operator paused this node');
    t.truthy(row.declinedAt);
    t.is(store.node(nodeIdFromPublicKey(a.identity.publicKey))!.declined, 1);
    t.is(store.node(nodeIdFromPublicKey(a.identity.publicKey))!.reputation, 1, 'a decline is not a rejection: reputation is untouched');
    close();
    a.conn.close();
    b.conn.close();
  } finally {
    await agg.stop();
  }
});

test('a busy aggregator refuses a wave of Hellos with RESOURCE_EXHAUSTED and a retry-after-ms hint, and takes them when they come back', async (t) => {
  const experiment = tinyExperiment({ rounds: 1, nodes: 8, selection: { nodes_per_round: 8, min_updates: 8, deadline_seconds: 60 } });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const agg = await startAggregator({
    experiment,
    runDir: tempDir('pace'),
    runId: 'pace',
    test: testSet,
    identity: generateIdentity(),
    pace: { hellosPerSecond: 3 },
  });
  try {
    const address = `127.0.0.1:${agg.port}`;
    const identities = Array.from({ length: 8 }, () => generateIdentity());
    const conns = identities.map(() => new AggregatorConnection(address));
    const hello = (i: number) => conns[i]!.hello(identities[i]!, nodeIdFromPublicKey(identities[i]!.publicKey), caps, 'test');
    const first = await Promise.allSettled(identities.map((_, i) => hello(i)));
    const refused = first.flatMap((r, i) => (r.status === 'rejected' ? [{ i, err: r.reason as grpc.ServiceError }] : []));
    t.true(refused.length >= 4, `${refused.length} of 8 refused at 3 Hellos/s`);
    for (const { err } of refused) {
      t.is(err.code, grpc.status.RESOURCE_EXHAUSTED);
      t.regex(err.details, /taking 3 new nodes per second; say hello again in \d+ ms/);
      t.true((retryAfterMs(err) ?? 0) > 0);
    }
    // Coming back when told, every one of them gets in.
    await Promise.all(
      refused.map(async ({ i, err }) => {
        let wait = retryAfterMs(err)!;
        for (;;) {
          await new Promise((r) => setTimeout(r, wait));
          try {
            return await hello(i);
          } catch (again) {
            wait = retryAfterMs(again) ?? 1000;
          }
        }
      }),
    );
    t.true(conns.every((c) => c.session !== undefined));
    for (const c of conns) c.close();
  } finally {
    await agg.stop();
  }
});

test('a real node with no time to train declines instead of going silent, and the abandoned round says so', async (t) => {
  // A 2 s deadline leaves nothing once the node keeps its 3 s for the upload.
  const experiment = tinyExperiment({ nodes: 1, rounds: 1, selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 2 } });
  const data = await federatedData(experiment.dataset, 1, experiment.seed);
  const dir = tempDir('decline-node');
  writeLocalData(join(dir, 'data'), data.partitions[0]!);
  const events: EngineEvent[] = [];
  const agg = await startAggregator({ experiment, runDir: dir, runId: 'd', test: data.test, identity: generateIdentity(), onEvent: (e) => events.push(e) });
  const node = spawnCli(['node', '--aggregator', `127.0.0.1:${agg.port}`, '--data', join(dir, 'data'), '--state-dir', join(dir, 'state')]);
  try {
    const end = Date.now() + 60_000;
    while (!events.some((e) => e.type === 'round-abandoned') && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    const declined = events.find((e) => e.type === 'task-declined');
    t.truthy(declined, node.output());
    t.regex(declined?.type === 'task-declined' ? declined.reason : '', /no time to train a single batch before the deadline/);
    const abandoned = events.find((e) => e.type === 'round-abandoned');
    t.regex(abandoned?.type === 'round-abandoned' ? abandoned.reason : '', /1 declined, 0 dropped/);
    t.true(
      abandoned?.type === 'round-abandoned' && events.indexOf(abandoned) > events.indexOf(declined!),
      'the round closed on the decline',
    );
    t.regex(node.output(), /declined task .*: no time to train a single batch/);
  } finally {
    node.kill('SIGKILL');
    await agg.stop();
  }
});
