// A strategy owns the round lifecycle (what to ask of nodes, how to turn
// their updates into the next global model); the math lives in ../robust as
// pure functions over Float32Arrays.
import type { TrainingSpec } from '../experiment/schema.js';
import type { Verdict } from '../robust/verdict.js';
import type { ServerOptimizerState } from './server-optimizers.js';

/** What a round's tasks ask of nodes: the experiment's training, plus FedProx's μ (0 = plain local SGD). */
export interface RoundTraining extends TrainingSpec {
  proximal_mu: number;
}

export interface ReceivedUpdate {
  readonly nodeId: string;
  readonly taskId: string;
  readonly numExamples: number;
  /** The node's reputation when the update arrived (1 = every earlier update kept). */
  readonly reputation: number;
  /** trained − base weights, flat. */
  readonly delta: Float32Array;
  /** FedBuff: models published since the update's base model (absent for synchronous rounds). */
  readonly staleness?: number;
}

export interface StrategyHistory {
  /** The global model before `global` (the previous round's base); absent in round 1. */
  readonly previousGlobal?: Float32Array;
  /** The server optimizer's state after the previous round; absent before the first. */
  readonly serverState?: ServerOptimizerState;
}

export interface StrategyStep {
  readonly weights: Float32Array;
  readonly verdicts: readonly Verdict[];
  /** The server optimizer's state after this round, for the next (and for the checkpoint). */
  readonly serverState?: ServerOptimizerState;
}

export interface Strategy {
  readonly name: string;
  /** The training hyperparameters sent with this round's tasks. */
  configureTraining(round: number): RoundTraining;
  /**
   * The next global model from the current one and the round's updates. A
   * strategy keeps no state between calls: whatever it needs of the past comes
   * in `history` (which the engine restores on resume and replay rebuilds from
   * checkpoints), so a round's result depends only on its recorded inputs.
   */
  aggregate(global: Float32Array, updates: readonly ReceivedUpdate[], history: StrategyHistory): StrategyStep;
}
