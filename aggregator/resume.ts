// Restarting an aggregator on a run it had started (after a crash, a kill -9,
// a reboot) continues that run: from the last committed round, with the global
// model that round committed, checked against its recorded hash. Nothing the
// crashed process had not committed is trusted; its open round is run again.
// What the database is checked against before this runs is in run-directory.ts.
import { existsSync, readFileSync } from 'node:fs';
import { float32ToBytes, sha256Hex } from '../core/tensor-codec.js';
import { join } from 'node:path';
import { ExperimentError, type Experiment } from './experiment/schema.js';
import type { RoundRecord } from './rounds/synchronous.js';
import { checkpointDirName, readCheckpointWeights, SERVER_STATE_FILE } from './store/checkpoints.js';
import { decodeServerState, type ServerOptimizerState } from './strategies/server-optimizers.js';
import type { RunStore } from './store/run-store.js';
import type { RunRow } from './store/schema.js';
import { summarizeVerdicts } from './rounds/verdict-summary.js';

export interface ResumePoint {
  /** The first round still to run. */
  nextRound: number;
  weights: Float32Array;
  /** The model before `weights` (what the strategy's history needs); absent when nothing was committed. */
  previousWeights?: Float32Array;
  /** The server optimizer's state saved with the last committed checkpoint, when the strategy has one. */
  serverState?: ServerOptimizerState;
  /** The rounds committed before the restart, as the round engine would have reported them. */
  records: RoundRecord[];
}

/** Checks that `run` may be continued with this experiment and key, and loads where it stopped. */
export function resumePoint(
  store: RunStore,
  run: RunRow,
  experiment: Experiment,
  aggregatorPublicKey: string,
  checkpointsDir: string,
  /**
   * The run's initial model, made again from its seed: when no round was committed and round-0000 is
   * missing (a start that died between recording the run and writing it), the run starts from this,
   * once its hash matches the initial model the run signed.
   */
  initialModel?: () => Float32Array,
): ResumePoint {
  if (run.status === 'finished') {
    throw new ExperimentError(`run ${run.id} already finished; pass a new --run-id to start another run`);
  }
  if (run.experimentJson !== JSON.stringify(experiment)) {
    throw new ExperimentError(
      `run ${run.id} was started with a different experiment; a run can only be resumed with the same experiment file ` +
        `(and --backend), or started afresh under a new --run-id`,
    );
  }
  if (run.aggregatorPublicKey !== aggregatorPublicKey) {
    throw new ExperimentError(`run ${run.id} was signed by aggregator key ${run.aggregatorPublicKey}; resume it with that key (--key)`);
  }
  const rows = store.committedRounds(run.id);
  const last = rows.at(-1);
  const checkpoint =
    !last && initialModel && !existsSync(join(checkpointsDir, checkpointDirName(0), 'weights.bin'))
      ? remadeInitialModel(run, initialModel)
      : committedCheckpoint(run.id, checkpointsDir, last?.round ?? 0, last?.modelSha256);
  const previous = last ? committedCheckpoint(run.id, checkpointsDir, last.round - 1, last.previousModelSha256) : undefined;
  const records = rows.map((r): RoundRecord => {
    const ups = store.updatesOfAttempt(r);
    return {
      round: r.round,
      accuracy: r.accuracy ?? 0,
      loss: r.loss ?? 0,
      participants: r.participants,
      selected: r.selected,
      rejected: ups.filter((u) => u.verdict === 'rejected').length,
      not_selected: ups.filter((u) => u.verdict === 'not-selected').length,
      examples: r.examples,
      seconds: r.seconds,
      overhead_seconds: r.overheadSeconds,
      model_sha256: r.modelSha256,
      round_digest: r.roundDigest,
      aggregator_signature: r.aggregatorSignature,
      verdicts: summarizeVerdicts(ups),
    };
  });
  const stateFile = join(checkpointsDir, checkpointDirName(last?.round ?? 0), SERVER_STATE_FILE);
  const serverState = existsSync(stateFile) ? decodeServerState(readFileSync(stateFile), checkpoint.weights.length) : undefined;
  return { nextRound: (last?.round ?? 0) + 1, weights: checkpoint.weights, previousWeights: previous?.weights, serverState, records };
}

/** A round's checkpoint, checked against the hash the database committed for it (round 0: the initial model). */
function committedCheckpoint(runId: string, checkpointsDir: string, round: number, sha256: string | undefined): { weights: Float32Array } {
  const dir = join(checkpointsDir, checkpointDirName(round));
  let checkpoint: { weights: Float32Array; sha256: string };
  try {
    checkpoint = readCheckpointWeights(dir);
  } catch (err) {
    throw new ExperimentError(`cannot resume run ${runId}: checkpoint ${dir} is unreadable (${(err as Error).message})`);
  }
  if (sha256 && checkpoint.sha256 !== sha256) {
    throw new ExperimentError(`cannot resume run ${runId}: checkpoint ${dir} hashes to ${checkpoint.sha256}, but round ${round} committed ${sha256}`);
  }
  return checkpoint;
}

/** The initial model made again from the seed, checked against the hash the run signed when it started. */
function remadeInitialModel(run: RunRow, initialModel: () => Float32Array): { weights: Float32Array } {
  const weights = initialModel();
  const sha256 = sha256Hex(float32ToBytes(weights));
  if (sha256 !== run.initialModelSha256) {
    throw new ExperimentError(
      `cannot resume run ${run.id}: its checkpoint round-0000 is missing, and the model its seed gives (${sha256}) is not the initial model the run recorded (${run.initialModelSha256 || 'none'})`,
    );
  }
  return { weights };
}
