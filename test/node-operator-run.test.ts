// The operator's rules against a real aggregator over gRPC: caps keep a node
// from work it must not take (declared at hello, or declined and then not
// offered again), a paused node declines cleanly without breaking its round,
// and after a simulated run every node's ledger agrees with the aggregator's
// record of it.
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { nodeContribution } from '../aggregator/nodes/contribution.js';
import type { EngineEvent } from '../aggregator/rounds/synchronous.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { generateIdentity, nodeIdFromPublicKey, type Identity } from '../core/signing/keys.js';
import { federatedData } from '../datasets/index.js';
import type { Dataset } from '../core/dataset.js';
import { Availability } from '../trainer/availability.js';
import { contributionTotals, Ledger } from '../trainer/ledger.js';
import type { Caps } from '../trainer/node-config.js';
import { runNode } from '../trainer/node.js';
import { runCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

interface TestNode {
  identity: Identity;
  nodeId: string;
  logs: string[];
  ledger: Ledger;
  done: Promise<{ tasksDone: number }>;
}

function startNode(
  address: string,
  aggregatorKey: Uint8Array,
  data: Dataset,
  dir: string,
  extra: { caps?: Caps; availability?: Availability; slowdown?: number; signal?: AbortSignal; onGlobalModel?: () => void } = {},
): TestNode {
  const identity = generateIdentity();
  const nodeId = nodeIdFromPublicKey(identity.publicKey);
  const logs: string[] = [];
  const ledger = new Ledger(join(dir, `${nodeId}.jsonl`));
  const done = runNode({ aggregator: address, identity, aggregatorKey, data, backend: 'auto', exitWhenFinished: true, log: (m) => logs.push(m), ledger, ...extra });
  return { identity, nodeId, logs, ledger, done };
}

function openStore(runDir: string): { store: RunStore; close: () => void } {
  const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
  return { store: new RunStore(db), close };
}

test('caps: a node that declares one the tasks exceed is never offered work; one that declines over a cap is not asked again', async (t) => {
  const experiment = tinyExperiment({ nodes: 4, rounds: 3, selection: { nodes_per_round: 3, min_updates: 2, deadline_seconds: 30 } });
  const data = await federatedData(experiment.dataset, 4, experiment.seed);
  const runDir = tempDir('caps-run');
  const identity = generateIdentity();
  // The capped nodes poll rarely; lingering lets them hear that the run is over.
  const agg = await startAggregator({ experiment, runDir, runId: 'caps', test: data.test, identity, firstRoundGraceMs: 20_000, lingerMs: 30_000 });
  const address = `127.0.0.1:${agg.port}`;
  // logreg on 60 features × 10 classes has 610 parameters.
  const declared = startNode(address, identity.publicKey, data.partitions[0]!, runDir, { caps: { max_parameters: 100 } });
  // 1 MiB of resident memory: every task is over it, which only the node can tell.
  const memory = startNode(address, identity.publicKey, data.partitions[1]!, runDir, { caps: { memory_mb: 1 } });
  const honest = [2, 3].map((i) => startNode(address, identity.publicKey, data.partitions[i]!, runDir));
  try {
    const summary = await agg.done;
    await Promise.all([declared, memory, ...honest].map((n) => n.done));
    t.is(summary.rounds.length, 3);
    t.true(summary.rounds.every((r) => r.participants === 2));
    const { store, close } = openStore(runDir);
    try {
      t.is(store.tasksOfNode('caps', declared.nodeId).length, 0, 'never offered a task');
      const registered = JSON.parse(store.node(declared.nodeId)!.capabilities) as { limits: { max_parameters: number } };
      t.is(registered.limits.max_parameters, 100, 'the registry keeps the caps the node declared');
      const memoryTasks = store.tasksOfNode('caps', memory.nodeId);
      t.is(memoryTasks.length, 1, 'offered one task, then no more');
      t.is(memoryTasks[0]!.declineKind, 'OVER_CAP');
      t.regex(memoryTasks[0]!.declineReason ?? '', /over the memory cap: the node uses .* MiB and the task needs about .* more, the cap is 1 MiB/);
      t.is(store.updatesOfNode('caps', memory.nodeId).length, 0);
    } finally {
      close();
    }
    t.true(declared.logs.some((l) => /the aggregator gives this node no work: the model has 610 parameters; this node's cap is 100/.test(l)), declared.logs.join('\n'));
    t.true(memory.logs.some((l) => /the aggregator gives this node no work: this node declined a task as over its caps/.test(l)), memory.logs.join('\n'));
    const memoryLedger = contributionTotals(memory.ledger.read().entries);
    t.is(memoryLedger.declined.size, 1);
    t.regex([...memoryLedger.declined.keys()][0]!, /^OVER_CAP: over the memory cap/);
  } finally {
    await agg.stop();
  }
});

test('a node paused mid-task declines it at once, its round commits without it, and it works again once resumed', async (t) => {
  const experiment = tinyExperiment({
    nodes: 3,
    rounds: 4,
    selection: { nodes_per_round: 3, min_updates: 2, deadline_seconds: 60 },
    training: { epochs: 100, batch_size: 16, learning_rate: 0.05 },
  });
  const data = await federatedData(experiment.dataset, 3, experiment.seed);
  const runDir = tempDir('pause-run');
  const identity = generateIdentity();
  const events: EngineEvent[] = [];
  const agg = await startAggregator({
    experiment,
    runDir,
    runId: 'pause',
    test: data.test,
    identity,
    firstRoundGraceMs: 20_000,
    lingerMs: 30_000,
    onEvent: (e) => events.push(e),
  });
  const address = `127.0.0.1:${agg.port}`;
  const pauseFile = join(runDir, 'paused');
  const availability = new Availability({ schedule: {}, pauseFile });
  // Stragglers (fault injection) stretch each task over seconds, so the pause lands mid-task and the resumed node is back for a later round.
  const paused = startNode(address, identity.publicKey, data.partitions[0]!, runDir, { availability, slowdown: 5 });
  const others = [1, 2].map((i) => startNode(address, identity.publicKey, data.partitions[i]!, runDir, { slowdown: 3 }));
  try {
    const waitFor = async (what: () => boolean, label: string) => {
      const end = Date.now() + 60_000;
      while (!what()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${label}\n${paused.logs.join('\n')}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await waitFor(() => events.some((e) => e.type === 'round-started' && e.round === 1), 'round 1');
    // Its task is in hand, and the model downloaded, well within this.
    await new Promise((r) => setTimeout(r, 700));
    writeFileSync(pauseFile, 'paused by the test');
    availability.refresh();
    await waitFor(() => events.some((e) => e.type === 'round-committed' && e.record.round === 1), 'round 1 to commit');
    const declined = events.find((e) => e.type === 'task-declined');
    t.is(declined?.type === 'task-declined' ? declined.nodeId : '', paused.nodeId);
    t.regex(declined?.type === 'task-declined' ? declined.reason : '', /paused by the operator/);
    const first = events.find((e) => e.type === 'round-committed');
    t.is(first?.type === 'round-committed' ? first.record.participants : 0, 2);
    await waitFor(() => paused.logs.some((l) => /not taking work: paused by the operator/.test(l)), 'the node to rest');
    rmSync(pauseFile);
    availability.refresh();
    const summary = await agg.done;
    await Promise.all([paused, ...others].map((n) => n.done));
    t.is(summary.rounds.length, 4);
    const { store, close } = openStore(runDir);
    try {
      // A resting node says goodbye, so no round waits out its deadline for a node that is not there:
      // every round closed before the deadline its round-started event announced.
      const deadlines = new Map(events.flatMap((e) => (e.type === 'round-started' ? [[`${e.round}/${e.attempt}`, e.deadline] as const] : [])));
      for (const r of store.committedRounds('pause')) t.true(r.closedAt < deadlines.get(`${r.round}/${r.attempt}`)!, `round ${r.round} waited out its deadline`);
      const tasks = store.tasksOfNode('pause', paused.nodeId);
      t.is(tasks[0]!.declineKind, 'PAUSED');
      t.true(store.updatesOfNode('pause', paused.nodeId).length >= 1, `the resumed node (same key) contributed again\n${paused.logs.join('\n')}`);
    } finally {
      close();
    }
    t.true(paused.logs.some((l) => /taking work again/.test(l)));
  } finally {
    availability.close();
    await agg.stop();
  }
});

test("after a simulated run each node's `crowdfl node status` agrees with the aggregator's `crowdfl nodes show`, and pause/resume work from the CLI", async (t) => {
  const dir = tempDir('ledger-run');
  const file = join(dir, 'tiny.json');
  writeFileSync(file, JSON.stringify(tinyExperiment({ nodes: 3, rounds: 3 })));
  const sim = await runCli(['simulate', file, '--runs-dir', join(dir, 'runs')]);
  t.is(sim.code, 0, sim.stderr);
  const runDir = join(dir, 'runs', readdirSync(join(dir, 'runs'))[0]!);
  const { store, close } = openStore(runDir);
  try {
    const runId = store.runRows()[0]!.id;
    for (const node of readdirSync(join(runDir, 'nodes'))) {
      const state = join(runDir, 'nodes', node, 'state');
      const status = await runCli(['node', 'status', '--state-dir', state, '--json']);
      t.is(status.code, 0, status.stderr);
      const mine = JSON.parse(status.stdout) as Record<string, number | string | boolean | Record<string, number>>;
      const theirs = nodeContribution(store, runId, mine.node_id as string);
      t.true(theirs.updatesSubmitted > 0);
      for (const key of ['tasks', 'roundsJoined', 'updatesSubmitted', 'kept', 'downWeighted', 'credited', 'examples'] as const) {
        t.is(mine[key], theirs[key], `${node} ${key}`);
      }
      t.is(mine.computeSeconds, theirs.computeSeconds);
      t.is(mine.awaitingVerdict, 0);
      const shown = await runCli(['nodes', 'show', runDir, mine.node_id as string]);
      t.regex(shown.stdout, new RegExp(`credited \\(signed\\)\\s+${theirs.credited}\\n`));
    }
    const state = join(runDir, 'nodes', 'node-000', 'state');
    const pause = await runCli(['node', 'pause', '--state-dir', state]);
    t.regex(pause.stdout, /paused the node .* \(not running now; this holds when it starts\)/);
    t.true(existsSync(join(state, 'paused')));
    t.regex((await runCli(['node', 'status', '--state-dir', state])).stdout, /not running, PAUSED/);
    await runCli(['node', 'resume', '--state-dir', state]);
    t.false(existsSync(join(state, 'paused')));
    const noNode = await runCli(['node', 'pause', '--state-dir', join(dir, 'nothing')]);
    t.is(noNode.code, 2);
    t.regex(noNode.stderr, /no node in .* \(no key\.json\)/);
  } finally {
    close();
  }
});

test.serial('the memory cap holds during training: resident memory passing it mid-task stops training and declines the task OVER_CAP', async (t) => {
  // Long enough local training that it is still running when the memory grows.
  const experiment = tinyExperiment({
    nodes: 1,
    rounds: 1,
    selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 600 },
    training: { epochs: 1000, batch_size: 16, learning_rate: 0.1 },
  });
  const data = await federatedData(experiment.dataset, 1, experiment.seed);
  const runDir = tempDir('memory-cap');
  const identity = generateIdentity();
  let ballast: Buffer | undefined;
  let declined: (reason: string) => void = () => {};
  const decline = new Promise<string>((resolve) => (declined = resolve));
  const agg = await startAggregator({
    experiment,
    runDir,
    runId: 'memcap',
    test: data.test,
    identity,
    onEvent: (e: EngineEvent) => {
      if (e.type === 'task-declined') declined(e.reason);
      // A node that ignored the cap trains to the end and its round commits: fail then, not at the test's timeout.
      if (e.type === 'round-committed') declined('(no decline: the round committed)');
    },
  });
  const stop = new AbortController();
  // Room for the task as the node estimates it before training (it passes the check at the start), not for the ballast.
  const capMb = Math.ceil(process.memoryUsage.rss() / (1024 * 1024)) + 256;
  const node = startNode(`127.0.0.1:${agg.port}`, identity.publicKey, data.partitions[0]!, runDir, {
    caps: { memory_mb: capMb },
    signal: stop.signal,
    // The task passed the node's checks and its base model is in: training starts next, and from now on
    // this process holds 512 MiB more than the cap allowed for.
    onGlobalModel: () => void (ballast = Buffer.alloc(512 * 1024 * 1024, 1)),
  });
  try {
    const reason = await decline;
    t.regex(reason, new RegExp(`^over the memory cap: the node passed ${capMb} MiB while training$`));
    t.true(node.logs.some((l) => /declined task .*over the memory cap: the node passed/.test(l)), node.logs.join('\n'));
    t.false(node.logs.some((l) => /trained \d+ examples/.test(l)), 'the task was not trained to the end');
  } finally {
    ballast = undefined;
    stop.abort();
    await agg.stop();
    await node.done.catch(() => undefined);
  }
});
