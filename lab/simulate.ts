// A simulation is a real deployment on one machine: the aggregator's gRPC
// server on loopback and one OS process per node, each reading its own
// partition from disk. Nothing is shortcut: the nodes use the same command an
// operator runs.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, constants, copyFileSync, createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAggregator, type RunSummary } from '../aggregator/aggregator.js';
import type { Experiment } from '../aggregator/experiment/schema.js';
import type { BackendPreference } from '../core/backend.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { writeRunPlot } from './plot.js';
import { chooseByzantine, detection, writeAttackFile } from '../attacks/byzantine-node.js';
import { RunProgress } from './progress.js';
import { loadOrCreateIdentity, nodeIdFromPublicKey, publicKeyToString } from '../core/signing/keys.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { newRunId } from '../aggregator/run-id.js';
import { RunDirectoryError, runEvidence, surveyRunDirectory } from '../aggregator/run-directory.js';

const CLI = fileURLToPath(new URL('../cli/index.js', import.meta.url));
/** Byzantine nodes run the same node command through the attack hook's entry point. */
const BYZANTINE_NODE = fileURLToPath(new URL('../attacks/byzantine-node-main.js', import.meta.url));

export interface SimulateOptions {
  experiment: Experiment;
  experimentText?: string;
  runsDir?: string;
  runId?: string;
  backend?: BackendPreference;
  /** Seconds between node heartbeats; shorter in tests. */
  heartbeatIntervalMs?: number;
  log?: (msg: string) => void;
  progress?: boolean;
  /**
   * A run directory whose node keys the nodes take (node i gets that run's node i's key), so they
   * join under the same ids as in that run and are given the same task seeds: how a rerun repeats a run.
   */
  nodeKeysFrom?: string;
}

/** A simulated node's name: node-000, node-001, … in the order of the data partitions. */
export function nodeName(index: number): string {
  return `node-${String(index).padStart(3, '0')}`;
}

export function nodeDir(runDir: string, index: number): string {
  return join(runDir, 'nodes', nodeName(index));
}

/** Where a simulated node keeps its key: node processes create it on first start. */
export function nodeKeyFile(runDir: string, index: number): string {
  return join(nodeDir(runDir, index), 'state', 'key.json');
}

export interface AttackReport {
  kind: string;
  fraction: number;
  byzantine_nodes: string[];
  /** Verdicts of committed rounds on Byzantine and on honest updates. */
  detection: ReturnType<typeof detection>;
}

export async function simulate(o: SimulateOptions): Promise<RunSummary & { run_dir: string; attack?: AttackReport }> {
  const experiment = o.backend ? { ...o.experiment, backend: o.backend } : o.experiment;
  const log = o.log ?? ((msg: string) => process.stderr.write(`${msg}\n`));
  const runId = o.runId ?? newRunId(experiment.name);
  const runDir = resolve(o.runsDir ?? 'runs', runId);
  // Before the node data and keys are written into it: a simulation starts a new run, never one over another.
  const found = runEvidence(surveyRunDirectory(runDir));
  if (found.length > 0) throw new RunDirectoryError(`a simulation starts a new run, but ${runDir} already holds one (${found.join('; ')}); pass another --run-id`);
  mkdirSync(runDir, { recursive: true });
  writeFileSync(join(runDir, 'experiment.json'), o.experimentText ?? JSON.stringify(experiment, null, 2));

  log(`preparing ${experiment.dataset.name} for ${experiment.nodes} nodes (${experiment.dataset.partition.kind} partition)…`);
  const data = await federatedData(experiment.dataset, experiment.nodes, experiment.seed, { log });
  const nodeDirs = data.partitions.map((partition, i) => {
    const dir = nodeDir(runDir, i);
    writeLocalData(join(dir, 'data'), partition);
    if (o.nodeKeysFrom) {
      const key = nodeKeyFile(runDir, i);
      mkdirSync(dirname(key), { recursive: true, mode: 0o700 });
      // The node refuses a key file others can read.
      copyFileSync(nodeKeyFile(o.nodeKeysFrom, i), key, constants.COPYFILE_EXCL);
      chmodSync(key, 0o600);
    }
    return dir;
  });
  const sizes = data.partitions.map((p) => p.numExamples);
  log(`node data: ${sizes.length} partitions, ${Math.min(...sizes)}–${Math.max(...sizes)} examples each; test set ${data.test.numExamples}`);

  // A simulation's aggregator gets a key of its own, which every node pins.
  const { identity } = loadOrCreateIdentity(join(runDir, 'aggregator-key.json'), { create: true });
  const progress = o.progress === false ? undefined : new RunProgress(experiment.rounds, process.stderr, undefined, experiment.selection.nodes_per_round);
  const aggregator = await startAggregator({
    experiment,
    runDir,
    runId,
    test: data.test,
    identity,
    // Every node process is starting at once; on a loaded machine that takes a while.
    firstRoundGraceMs: 120_000,
    // Round 1 selects among every node started, not the first to connect, so the seed alone decides who trains it.
    firstRoundNodes: experiment.nodes,
    heartbeatIntervalMs: o.heartbeatIntervalMs,
    log,
    onEvent: progress?.handle,
  });

  const byzantine = new Set(experiment.attack ? chooseByzantine(experiment.nodes, experiment.attack.fraction, experiment.seed) : []);
  const slow = new Set(experiment.faults ? chooseByzantine(experiment.nodes, experiment.faults.slow_fraction, experiment.seed, 'slow-nodes') : []);
  if (slow.size > 0) log(`faults: ${slow.size} of ${experiment.nodes} nodes are ${experiment.faults!.slowdown}× slower (${[...slow].map(nodeName).join(', ')})`);
  const byzantineIds = new Set<string>();
  if (experiment.attack) {
    const npr = experiment.selection.nodes_per_round;
    log(
      `attack: ${experiment.attack.kind} on ${byzantine.size} of ${experiment.nodes} nodes ` +
        `(${[...byzantine].map(nodeName).join(', ') || 'none'})`,
    );
    for (const i of byzantine) {
      // The key is made here rather than by the node, so the run knows which node ids are Byzantine.
      mkdirSync(join(nodeDirs[i]!, 'state'), { recursive: true, mode: 0o700 });
      byzantineIds.add(nodeIdFromPublicKey(loadOrCreateIdentity(join(nodeDirs[i]!, 'state', 'key.json'), { create: true }).identity.publicKey));
      writeAttackFile(join(nodeDirs[i]!, 'attack.json'), {
        attack: experiment.attack,
        seed: experiment.seed,
        n: npr,
        f: Math.round((byzantine.size * npr) / experiment.nodes),
        colluders: Math.min(byzantine.size, npr),
        collusion_dir: join(runDir, 'collusion'),
        collusion_wait_ms: 20_000,
      });
    }
  }

  const nodes: ChildProcess[] = nodeDirs.map((dir, i) => {
    const logFile = createWriteStream(join(dir, 'node.log'));
    const child = spawn(
      process.execPath,
      [
        ...(byzantine.has(i) ? [BYZANTINE_NODE, '--attack', join(dir, 'attack.json')] : [CLI]),
        'node',
        '--aggregator',
        `127.0.0.1:${aggregator.port}`,
        '--data',
        join(dir, 'data'),
        '--state-dir',
        join(dir, 'state'),
        '--aggregator-key',
        publicKeyToString(identity.publicKey),
        '--backend',
        experiment.backend,
        '--exit-when-finished',
        // Simulated nodes are processes sharing this machine's cores already; a thread each keeps runs comparable.
        '--max-cores',
        '1',
        ...(experiment.faults
          ? ['--vanish-probability', String(experiment.faults.vanish_probability), '--fault-seed', String(experiment.seed)]
          : []),
        ...(slow.has(i) ? ['--slowdown', String(experiment.faults!.slowdown)] : []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout!.pipe(logFile);
    child.stderr!.pipe(logFile);
    return child;
  });
  log(`started ${nodes.length} node processes (logs in ${join(runDir, 'nodes', '*', 'node.log')})`);

  const stopNodes = () => {
    for (const child of nodes) if (child.exitCode === null) child.kill('SIGTERM');
  };
  process.once('SIGINT', () => {
    log('interrupted: stopping nodes and the aggregator');
    stopNodes();
    void aggregator.stop();
  });
  try {
    const summary = await aggregator.done;
    if (summary.rounds.length) await writeRunPlot(summary, runDir);
    if (!experiment.attack) return { ...summary, run_dir: runDir };
    const attack: AttackReport = {
      kind: experiment.attack.kind,
      fraction: experiment.attack.fraction,
      byzantine_nodes: [...byzantineIds].sort(),
      detection: committedVerdicts(summary.database, summary.run_id, byzantineIds),
    };
    writeFileSync(join(runDir, 'attack.json'), JSON.stringify(attack, null, 2));
    log(
      `attack ${attack.kind}: ${attack.detection.byzantine.flagged} of ${attack.detection.byzantine.updates} Byzantine updates flagged on evidence ` +
        `(${attack.detection.byzantine.rejected} rejected), ${attack.detection.byzantine.down_weighted} down-weighted, ` +
        `${attack.detection.byzantine.not_selected} not selected; ${attack.detection.honest.flagged} of ${attack.detection.honest.updates} honest updates flagged`,
    );
    return { ...summary, run_dir: runDir, attack };
  } finally {
    progress?.close();
    // Nodes exit by themselves when told the experiment finished; make sure of it.
    const exits = nodes.map((c) => (c.exitCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', r))));
    const grace = setTimeout(stopNodes, 5000);
    await Promise.all(exits);
    clearTimeout(grace);
  }
}

function committedVerdicts(database: string, runId: string, byzantineIds: ReadonlySet<string>): AttackReport['detection'] {
  const { db, close } = openDatabase(database);
  try {
    const store = new RunStore(db);
    return detection(store.committedRounds(runId).flatMap((r) => store.updatesOfAttempt(r)), byzantineIds);
  } finally {
    close();
  }
}
