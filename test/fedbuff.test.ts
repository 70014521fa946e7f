// FedBuff: models are published every K updates without waiting for a
// straggler, whose late update still counts (discounted by its staleness);
// the run replays bit for bit, and an aggregator killed mid-run resumes from
// its last published model.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { auditRun } from '../lab/audit.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { fedbuffStrategy } from '../aggregator/strategies/fedbuff.js';
import { replayRun } from '../lab/replay.js';
import { simulate } from '../lab/simulate.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { freePort, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

const fedbuff = { name: 'fedbuff', buffer_size: 2, concurrency: 4, max_staleness: 40 } as const;

test('a straggler does not hold up publishing, and its late update counts with its staleness', async (t) => {
  const ROUNDS = 24;
  const experiment = tinyExperiment({
    nodes: 5,
    rounds: ROUNDS,
    strategy: fedbuff,
    // One node of five takes 6× as long per task: slow enough that it never keeps pace, quick enough that its
    // first task ends within the run even on a loaded machine (at 8× it once outlasted all 24 rounds there).
    faults: { slow_fraction: 0.2, slowdown: 6 },
    selection: { nodes_per_round: 4, min_updates: 2, deadline_seconds: 60 },
  });
  const root = tempDir('fedbuff');
  const logs: string[] = [];
  const summary = await simulate({ experiment, runsDir: root, runId: 'fb', progress: false, log: (m) => logs.push(m) });
  t.is(summary.rounds.length, ROUNDS);
  const slowName = /nodes are 6× slower \((node-\d+)\)/.exec(logs.join('\n'))?.[1];
  t.truthy(slowName, logs.join('\n'));
  const straggler = /\[(n-[0-9a-f]+)\]/.exec(readFileSync(join(root, 'fb', 'nodes', slowName!, 'node.log'), 'utf8'))![1]!;
  const { db, close } = openDatabase(join(root, 'fb', 'crowdfl.db'));
  try {
    const store = new RunStore(db);
    const rounds = store.committedRounds('fb');
    t.deepEqual(rounds.map((r) => r.round), Array.from({ length: ROUNDS }, (_, i) => i + 1));
    const inputs = rounds.flatMap((r) => store.updatesOfAttempt(r).filter((u) => u.inputReputation !== null));
    // Every published model folded exactly K updates, none of them waiting for the straggler.
    t.true(rounds.every((r) => inputs.filter((u) => u.round === r.round).length === 2));
    const late = inputs.filter((u) => u.nodeId === straggler);
    const others = inputs.filter((u) => u.nodeId !== straggler);
    t.true(late.length >= 1, 'the straggler contributed');
    t.true(late.length < others.length / 4, `the straggler contributed ${late.length} updates, the other four ${others.length}`);
    // Models were published while it trained, and its update was kept with that staleness recorded (replay below re-applies the discount).
    t.true(late.every((u) => u.verdict === 'kept' && u.staleness! >= 1), `straggler staleness ${late.map((u) => u.staleness).join(', ')}`);
    t.log(`straggler ${straggler}: ${late.length} updates, staleness ${late.map((u) => u.staleness).join(', ')}`);
  } finally {
    close();
  }
  const replay = await replayRun({ runDir: join(root, 'fb') });
  t.deepEqual([...replay.runProblems, ...replay.rounds.flatMap((r) => r.problems)], []);
  t.true(replay.rounds.every((r) => r.aggregation === 'identical'));
});

test('the staleness discount scales an update by 1/√(1+s) before the rule aggregates it', (t) => {
  const strategy = fedbuffStrategy.create({ ...fedbuff, staleness: 'sqrt', server_learning_rate: 1 }, { training: { epochs: 1, batch_size: 1, learning_rate: 1 } });
  const update = (nodeId: string, staleness: number, value: number) => ({
    nodeId,
    taskId: nodeId,
    numExamples: 1,
    reputation: 1,
    delta: new Float32Array([value]),
    staleness,
  });
  const step = strategy.aggregate(new Float32Array([0]), [update('a', 0, 1), update('b', 3, 1)], {});
  // Example-weighted mean of 1 and 1/√4 = 0.5.
  t.is(step.weights[0], Math.fround(0.75));
  const plain = fedbuffStrategy.create({ ...fedbuff, staleness: 'none', server_learning_rate: 0.5 }, { training: { epochs: 1, batch_size: 1, learning_rate: 1 } });
  t.is(plain.aggregate(new Float32Array([0]), [update('a', 0, 1), update('b', 3, 1)], {}).weights[0], 0.5);
});

test('an aggregator killed mid-commit resumes from its last published model and finishes the run', async (t) => {
  const NODES = 3;
  const ROUNDS = 6;
  const experiment = tinyExperiment({
    nodes: NODES,
    rounds: ROUNDS,
    strategy: { ...fedbuff, concurrency: NODES },
    selection: { nodes_per_round: NODES, min_updates: 2, deadline_seconds: 30 },
  });
  const dir = tempDir('fedbuff-crash');
  const file = join(dir, 'fb.json');
  writeFileSync(file, JSON.stringify(experiment));
  const data = await federatedData(experiment.dataset, NODES, experiment.seed);
  data.partitions.forEach((p, i) => writeLocalData(join(dir, `data-${i}`), p));
  const port = await freePort();
  const args = ['aggregator', '--experiment', file, '--run-id', 'k', '--runs-dir', dir, '--port', String(port), '--key', join(dir, 'agg-key.json'), '--linger', '40'];
  const exited = (p: ReturnType<typeof spawnCli>) =>
    new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      p.exitCode !== null || p.signalCode !== null ? r({ code: p.exitCode, signal: p.signalCode }) : p.once('exit', (code, signal) => r({ code, signal })),
    );
  const killed = spawnCli(args, { CROWDFL_CRASH_AT: 'mid-commit:3' });
  const nodes = Array.from({ length: NODES }, (_, i) =>
    spawnCli(['node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, `data-${i}`), '--state-dir', join(dir, `state-${i}`), '--exit-when-finished']),
  );
  try {
    const first = await exited(killed);
    t.is(first.signal, 'SIGKILL', killed.output());
    t.regex(killed.output(), /fault injection: SIGKILL at mid-commit of round 3/);
    const again = spawnCli(args);
    const { code } = await exited(again);
    t.is(code, 0, again.output());
    t.regex(again.output(), new RegExp(`resuming run k at round 3 of ${ROUNDS}`));
    const results = await Promise.all(nodes.map(exited));
    t.true(results.every((r) => r.code === 0), 'nodes carried on through the kill');
  } finally {
    for (const n of nodes) if (n.exitCode === null) n.kill('SIGKILL');
  }
  const { db, close } = openDatabase(join(dir, 'k', 'crowdfl.db'));
  try {
    const store = new RunStore(db);
    const rounds = store.committedRounds('k');
    t.deepEqual(rounds.map((r) => r.round), Array.from({ length: ROUNDS }, (_, i) => i + 1));
    for (let i = 1; i < rounds.length; i++) t.is(rounds[i]!.previousModelSha256, rounds[i - 1]!.modelSha256);
    t.deepEqual(auditRun(store, 'k').flatMap((a) => a.problems), []);
  } finally {
    close();
  }
  const replay = await replayRun({ runDir: join(dir, 'k') });
  t.deepEqual([...replay.runProblems, ...replay.rounds.flatMap((r) => r.problems)], []);
});

test('a buffer that could never fill is refused with the field named', (t) => {
  const error = t.throws(() => tinyExperiment({ nodes: 3, strategy: { name: 'fedbuff', buffer_size: 4 } }));
  t.regex(error!.message, /strategy\.buffer_size.*cannot exceed strategy\.concurrency/s);
});

test('with a robust rule on the buffer, an update older than max_staleness is rejected with the reason, and the run replays', async (t) => {
  const ROUNDS = 12;
  const experiment = tinyExperiment({
    nodes: 5,
    rounds: ROUNDS,
    strategy: { name: 'fedbuff', buffer_size: 4, concurrency: 5, max_staleness: 1 },
    aggregation: { rule: 'trimmed-mean', beta: 0.25 },
    faults: { slow_fraction: 0.2, slowdown: 8 },
    selection: { nodes_per_round: 5, min_updates: 4, deadline_seconds: 60 },
  });
  const root = tempDir('fedbuff-stale');
  await simulate({ experiment, runsDir: root, runId: 'fb', progress: false, log: () => {} });
  const { db, close } = openDatabase(join(root, 'fb', 'crowdfl.db'));
  try {
    const store = new RunStore(db);
    const rows = store.committedRounds('fb').flatMap((r) => store.updatesOfAttempt(r));
    t.true(store.committedRounds('fb').every((r) => rows.filter((u) => u.round === r.round && u.inputReputation !== null).length === 4));
    const stale = rows.filter((u) => /too stale/.test(u.reason));
    t.true(stale.length >= 1, 'the straggler was too stale at least once');
    t.true(stale.every((u) => u.verdict === 'rejected' && u.inputReputation === null && /max_staleness is 1/.test(u.reason)));
    t.true(rows.filter((u) => u.inputReputation !== null).every((u) => u.staleness! <= 1));
  } finally {
    close();
  }
  const replay = await replayRun({ runDir: join(root, 'fb') });
  t.deepEqual([...replay.runProblems, ...replay.rounds.flatMap((r) => r.problems)], []);
});
