// A strategy owns the round lifecycle (what to ask of nodes, how to turn
// their updates into the next global model); the math lives in ../robust as
// pure functions over Float32Arrays.
import type { TrainingSpec } from '../../core/experiment.js';
import type { Verdict } from '../robust/verdict.js';

export interface ReceivedUpdate {
  readonly nodeId: string;
  readonly taskId: string;
  readonly numExamples: number;
  /** The node's reputation when the update arrived (1 = every earlier update kept). */
  readonly reputation: number;
  /** trained − base weights, flat. */
  readonly delta: Float32Array;
}

export interface StrategyHistory {
  /** The global model before `global` (the previous round's base); absent in round 1. */
  readonly previousGlobal?: Float32Array;
}

export interface StrategyStep {
  readonly weights: Float32Array;
  readonly verdicts: readonly Verdict[];
}

export interface Strategy {
  readonly name: string;
  /** The training hyperparameters sent with this round's tasks. */
  configureTraining(round: number): TrainingSpec;
  /**
   * The next global model from the current one and the round's updates. A
   * strategy keeps no state between calls: whatever it needs of the past comes
   * in `history` (which the engine restores on resume and replay rebuilds from
   * checkpoints), so a round's result depends only on its recorded inputs.
   */
  aggregate(global: Float32Array, updates: readonly ReceivedUpdate[], history: StrategyHistory): StrategyStep;
}
