// An evaluator's independent check of a finished run, from its directory
// alone: every signature and hash, every round's aggregation re-run from the
// stored update bytes with the recorded rule (the new model must be
// bit-identical to the committed one, and every verdict the same), and every
// reported accuracy re-measured on the test set.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { auditRun } from './audit.js';
import { byNodeThenTask } from '../aggregator/rounds/engine.js';
import { checkpointDirName, readCheckpointWeights, SERVER_STATE_FILE } from '../aggregator/store/checkpoints.js';
import type { RunStore } from '../aggregator/store/run-store.js';
import { inModel, type RunRow } from '../aggregator/store/schema.js';
import { UPDATE_BLOBS_DIR, UpdateBlobs } from '../aggregator/store/update-blobs.js';
import { strategyFor } from '../aggregator/strategies/index.js';
import type { ReceivedUpdate, Strategy, StrategyHistory } from '../aggregator/strategies/strategy.js';
import { decodeServerState, encodeServerState, type ServerOptimizerState } from '../aggregator/strategies/server-optimizers.js';
import { initBackend } from '../core/backend.js';
import { evaluate } from '../core/model/evaluate.js';
import { parseExperiment, type Experiment } from '../aggregator/experiment/schema.js';
import { type BackendPreference } from '../core/backend.js';
import { publicKeyFromString } from '../core/signing/keys.js';
import { initialWeights } from '../core/model/build.js';
import { modelSpec } from '../core/model/zoo.js';
import { signatureFromString, verify } from '../core/signing/ed25519.js';
import { runDigest } from '../core/signing/layouts.js';
import { bytesToFloat32, float32ToBytes, sha256Hex } from '../core/tensor-codec.js';
import { testData, type Dataset } from '../datasets/index.js';
import { openRunStore, runOfDirectory } from './report.js';
import { StepProgress } from './progress.js';

export interface RoundReplay {
  round: number;
  /** Updates that entered the aggregation, and how many of those the stored bytes were found for. */
  inputs: number;
  /** 'identical' | 'differs' | 'not recorded' (the run kept no update bytes) | 'skipped' (inputs missing). */
  aggregation: 'identical' | 'differs' | 'not recorded' | 'skipped';
  recordedAccuracy: number | null;
  replayedAccuracy: number;
  problems: string[];
}

export interface ReplayResult {
  runId: string;
  backend: string;
  /** Problems with the run as a whole (its signed record, its initial model). */
  runProblems: string[];
  rounds: RoundReplay[];
  seconds: number;
  /** The run's own wall time, for comparison. */
  runSeconds: number | null;
  ok: boolean;
}

export interface ReplayOptions {
  runDir: string;
  /** Evaluate on this backend instead of the run's own (bit-equality across backends is not promised). */
  backend?: BackendPreference;
  /** The test set; loaded from the experiment's dataset when absent. */
  test?: Dataset;
  progress?: boolean;
  log?: (msg: string) => void;
}

export async function replayRun(o: ReplayOptions): Promise<ReplayResult> {
  const started = Date.now();
  const { store, close } = openRunStore(o.runDir);
  try {
    const run = runOfDirectory(store, o.runDir);
    const runProblems = checkRunRecord(run);
    let experiment: Experiment;
    try {
      experiment = parseExperiment(JSON.parse(run.experimentJson));
    } catch (err) {
      return finish(run, [...runProblems, `the stored experiment is not a valid experiment: ${(err as Error).message}`], [], '', started);
    }
    const backend = await initBackend(o.backend ?? (run.backend as BackendPreference), { log: o.log });
    const test = o.test ?? (await testData(experiment.dataset, experiment.nodes, experiment.seed, { log: o.log }));
    const spec = modelSpec(experiment.model, { featureShape: test.featureShape, numClasses: test.numClasses });
    const checkpoints = join(o.runDir, 'checkpoints');

    // The run starts from the model its seed gives, as the aggregator signed.
    const initial = initialWeights(spec, experiment.seed);
    const initialSha = sha256Hex(float32ToBytes(initial));
    if (initialSha !== run.initialModelSha256) {
      runProblems.push(`the seed gives initial model ${initialSha.slice(0, 12)}, the run recorded ${run.initialModelSha256.slice(0, 12) || 'none'}`);
    }
    const roundZero = readCheckpoint(checkpoints, 0);
    if (roundZero && roundZero.sha256 !== initialSha) runProblems.push(`checkpoint round-0000 is not the initial model the seed gives`);

    const audits = new Map(auditRun(store, run.id).map((a) => [a.round, a.problems]));
    const reported = reportedAccuracies(o.runDir, runProblems);
    let strategy: Strategy;
    try {
      strategy = strategyFor(experiment);
    } catch (err) {
      return finish(run, [...runProblems, `the recorded experiment's strategy cannot run: ${(err as Error).message}`], [], backend, started);
    }
    const blobs = new UpdateBlobs(join(o.runDir, UPDATE_BLOBS_DIR));
    const committed = store.committedRounds(run.id);
    const progress = o.progress ? new StepProgress('replay', committed.length) : undefined;
    const sameBackend = backend === run.backend;
    const rounds: RoundReplay[] = [];
    let global = initial;
    let previousGlobal: Float32Array | undefined;
    let serverState: ServerOptimizerState | undefined;
    for (const r of committed) {
      const problems = [...(audits.get(r.round) ?? [])];
      const replay = replayAggregation(store, blobs, experiment, strategy, r, { previousGlobal, serverState }, global, problems);
      serverState = replay.serverState ?? storedServerState(checkpoints, r.round, global.length);
      const stored = storedServerStateBytes(checkpoints, r.round);
      if (replay.serverState && stored && Buffer.compare(Buffer.from(encodeServerState(replay.serverState)), stored) !== 0) {
        problems.push(`the server optimizer state saved with ${checkpointDirName(r.round)} is not the one the replayed round produces`);
      }
      const checkpoint = readCheckpoint(checkpoints, r.round);
      if (!checkpoint) problems.push(`checkpoint ${checkpointDirName(r.round)} is missing`);
      else if (checkpoint.sha256 !== r.modelSha256) {
        problems.push(`checkpoint ${checkpointDirName(r.round)} hashes to ${checkpoint.sha256.slice(0, 12)}, the round committed ${r.modelSha256.slice(0, 12)}`);
      }
      // Go on from the model the round committed, so one bad round does not fail every later one.
      const next = checkpoint?.sha256 === r.modelSha256 ? checkpoint.weights : replay.weights ?? global;
      const measured = await evaluate(spec, next, test);
      problems.push(...accuracyProblems(r.round, r.accuracy, r.loss, measured, sameBackend));
      const inSummary = reported.get(r.round);
      if (inSummary !== undefined && inSummary !== r.accuracy) {
        problems.push(`summary.json reports accuracy ${pct(inSummary)}, the database ${pct(r.accuracy)}`);
      }
      rounds.push({
        round: r.round,
        inputs: replay.inputs,
        aggregation: replay.outcome,
        recordedAccuracy: r.accuracy,
        replayedAccuracy: measured.accuracy,
        problems,
      });
      previousGlobal = global;
      global = next;
      progress?.step(`round ${r.round}: ${problems.length ? `${problems.length} problem(s)` : 'ok'}`);
    }
    progress?.close();
    return finish(run, runProblems, rounds, backend, started);
  } finally {
    close();
  }
}

function finish(run: RunRow, runProblems: string[], rounds: RoundReplay[], backend: string, started: number): ReplayResult {
  return {
    runId: run.id,
    backend,
    runProblems,
    rounds,
    seconds: (Date.now() - started) / 1000,
    runSeconds: run.finishedAt ? (run.finishedAt - run.startedAt) / 1000 : null,
    ok: runProblems.length === 0 && rounds.every((r) => r.problems.length === 0),
  };
}

/** The aggregator signed the experiment, seed and initial model when the run started. */
function checkRunRecord(run: RunRow): string[] {
  const signature = signatureFromString(run.runSignature);
  if (!signature) return ['the run record carries no aggregator signature'];
  let ok = false;
  try {
    const digest = runDigest({
      experiment_id: run.id,
      experiment_sha256: sha256Hex(Buffer.from(run.experimentJson)),
      seed: run.seed,
      initial_model_sha256: run.initialModelSha256,
    });
    ok = verify(digest, signature, publicKeyFromString(run.aggregatorPublicKey));
  } catch {
    ok = false;
  }
  return ok ? [] : ["the experiment, seed or initial model differ from what the aggregator signed when the run started (an edited experiment or parameter?)"];
}

function replayAggregation(
  store: RunStore,
  blobs: UpdateBlobs,
  experiment: Experiment,
  strategy: Strategy,
  r: ReturnType<RunStore['committedRounds']>[number],
  history: StrategyHistory,
  global: Float32Array,
  problems: string[],
): { inputs: number; outcome: RoundReplay['aggregation']; weights?: Float32Array; serverState?: ServerOptimizerState } {
  const baseSha = sha256Hex(float32ToBytes(global));
  if (r.previousModelSha256 !== baseSha) {
    problems.push(`the round says it started from ${r.previousModelSha256.slice(0, 12)}, the previous round committed ${baseSha.slice(0, 12)}`);
  }
  // The aggregation's inputs, in the order the aggregator used (by node, then task).
  const rows = store
    .updatesOfAttempt(r)
    .filter((u) => u.inputReputation !== null)
    .sort(byNodeThenTask);
  if (!experiment.record.update_tensors) return { inputs: rows.length, outcome: 'not recorded' };
  const inputs: ReceivedUpdate[] = [];
  for (const u of rows) {
    const bytes = blobs.get(u.updateSha256);
    if (!bytes) {
      problems.push(`update ${u.taskId} from ${u.nodeId}: its bytes are missing from ${UPDATE_BLOBS_DIR}/`);
      continue;
    }
    const sha = sha256Hex(bytes);
    if (sha !== u.updateSha256) {
      problems.push(`update ${u.taskId} from ${u.nodeId}: stored bytes hash to ${sha.slice(0, 12)}, the node signed ${u.updateSha256.slice(0, 12)}`);
      continue;
    }
    inputs.push({
      nodeId: u.nodeId,
      taskId: u.taskId,
      numExamples: u.numExamples,
      reputation: u.inputReputation!,
      delta: bytesToFloat32(bytes),
      ...(u.staleness === null ? {} : { staleness: u.staleness }),
    });
  }
  if (inputs.length !== rows.length) return { inputs: inputs.length, outcome: 'skipped' };
  if (rows.length === 0) {
    problems.push('no update of this round is recorded as an input of its aggregation');
    return { inputs: 0, outcome: 'skipped' };
  }
  let step;
  try {
    step = strategy.aggregate(global, inputs, history);
  } catch (err) {
    problems.push(`the recorded rule refuses the recorded updates: ${(err as Error).message}`);
    return { inputs: inputs.length, outcome: 'differs' };
  }
  const sha = sha256Hex(float32ToBytes(step.weights));
  let outcome: RoundReplay['aggregation'] = 'identical';
  if (sha !== r.modelSha256) {
    problems.push(`re-aggregating the ${inputs.length} recorded updates gives model ${sha.slice(0, 12)}, the round committed ${r.modelSha256.slice(0, 12)}`);
    outcome = 'differs';
  }
  step.verdicts.forEach((v, i) => {
    const u = rows[i]!;
    if (v.verdict !== u.verdict || v.reason !== u.reason || (v.evidence ?? null) !== u.evidence || Math.abs(v.weight - u.weight) > 1e-12) {
      problems.push(`update ${u.taskId} from ${u.nodeId}: recorded ${u.verdict} (${u.reason || 'no reason'}), the rule now says ${v.verdict} (${v.reason || 'no reason'})`);
      outcome = 'differs';
    }
  });
  const used = step.verdicts.filter((v) => inModel(v.verdict)).length;
  if (r.participants !== used) problems.push(`the round records ${r.participants} participants, the verdicts keep ${used}`);
  return { inputs: inputs.length, outcome, weights: step.weights, serverState: step.serverState };
}

function storedServerStateBytes(checkpoints: string, round: number): Buffer | undefined {
  const file = join(checkpoints, checkpointDirName(round), SERVER_STATE_FILE);
  return existsSync(file) ? readFileSync(file) : undefined;
}

/** When a round could not be re-run, the next goes on from the state the run saved. */
function storedServerState(checkpoints: string, round: number, length: number): ServerOptimizerState | undefined {
  const bytes = storedServerStateBytes(checkpoints, round);
  return bytes ? decodeServerState(bytes, length) : undefined;
}

function accuracyProblems(
  round: number,
  accuracy: number | null,
  loss: number | null,
  measured: { accuracy: number; loss: number },
  sameBackend: boolean,
): string[] {
  // On the run's own backend evaluation is deterministic; across backends a few near-ties may flip.
  const tolerance = sameBackend ? 0 : 1e-3;
  const problems: string[] = [];
  if (accuracy === null || Math.abs(measured.accuracy - accuracy) > tolerance) {
    problems.push(`round ${round} reports accuracy ${pct(accuracy)}, its model scores ${pct(measured.accuracy)}`);
  }
  if (loss !== null && Math.abs(measured.loss - loss) > (sameBackend ? 1e-9 : 1e-3) * Math.max(1, Math.abs(loss))) {
    problems.push(`round ${round} reports loss ${loss.toFixed(6)}, its model scores ${measured.loss.toFixed(6)}`);
  }
  return problems;
}

function readCheckpoint(dir: string, round: number): { weights: Float32Array; sha256: string } | undefined {
  const path = join(dir, checkpointDirName(round));
  if (!existsSync(join(path, 'weights.bin'))) return undefined;
  return readCheckpointWeights(path);
}

/** What the run's summary.json told its reader, per round (absent for runs not started by simulate); a problem when it cannot be read. */
function reportedAccuracies(runDir: string, problems: string[]): Map<number, number> {
  const file = join(runDir, 'summary.json');
  if (!existsSync(file)) return new Map();
  try {
    const summary = JSON.parse(readFileSync(file, 'utf8')) as { rounds?: { round: number; accuracy: number }[] };
    return new Map((summary.rounds ?? []).map((r) => [r.round, r.accuracy]));
  } catch (err) {
    problems.push(`summary.json cannot be read, so its reported accuracies cannot be checked: ${(err as Error).message}`);
    return new Map();
  }
}

function pct(x: number | null): string {
  return x === null ? 'none' : `${(100 * x).toFixed(2)}%`;
}

/** The per-round table and verdict `crowdfl replay` prints. */
export function formatReplay(result: ReplayResult): string {
  const lines = [
    `replay of run ${result.runId} on ${result.backend || 'no backend'}`,
    'round  inputs  aggregation   recorded  replayed  problems',
  ];
  for (const r of result.rounds) {
    lines.push(
      `${String(r.round).padStart(5)}  ${String(r.inputs).padStart(6)}  ${r.aggregation.padEnd(12)}  ${pct(r.recordedAccuracy).padStart(8)}  ${pct(r.replayedAccuracy).padStart(8)}  ${r.problems.length ? r.problems.length : 'none'}`,
    );
  }
  for (const p of result.runProblems) lines.push(`MISMATCH run: ${p}`);
  for (const r of result.rounds) for (const p of r.problems) lines.push(`MISMATCH round ${r.round}: ${p}`);
  const timing = result.runSeconds ? ` in ${result.seconds.toFixed(1)} s (${((100 * result.seconds) / result.runSeconds).toFixed(0)}% of the run's ${result.runSeconds.toFixed(1)} s)` : ` in ${result.seconds.toFixed(1)} s`;
  lines.push(
    result.ok
      ? `OK: ${result.rounds.length} rounds, every signature, hash, aggregation and accuracy checks out${timing}`
      : `FAILED: ${result.runProblems.length + result.rounds.reduce((n, r) => n + r.problems.length, 0)} mismatches${timing}`,
  );
  return lines.join('\n') + '\n';
}

