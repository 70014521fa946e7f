// The FedAvg family's shared math: every registered strategy (./registry.ts)
// builds a FedOpt with its own options, so the weighted aggregate through the
// robust rule, the server optimizer step and the staleness discount exist once.
import { z } from 'zod';
import type { AggregationSpec } from '../robust/rules.js';
import type { ReputationSpec, TrainingSpec } from '../experiment/sections.js';
import { aggregate, aggregationSchema } from '../robust/index.js';
import { sharedFloat32 } from '../robust/kernels/pool.js';
import { applyServerOptimizer, type ServerOptimizerSpec } from './server-optimizers.js';
import type { ReceivedUpdate, RoundTraining, Strategy, StrategyContext, StrategyHistory, StrategyStep } from './strategy.js';

// A node with reputation 0 still counts a little, so a round of only such nodes can aggregate.
const REPUTATION_FLOOR = 0.01;

/** η, the experiment field of every strategy that scales the server's step (Reddi et al. 2021). */
export const serverLearningRateField = z.number().positive().max(100).describe('η: the server optimizer\'s learning rate');

export interface FedOptOptions {
  readonly name: string;
  readonly training: TrainingSpec;
  /** Default: the example-weighted mean. */
  readonly aggregation?: AggregationSpec;
  readonly reputation?: Pick<ReputationSpec, 'weight_updates'>;
  /** FedProx's μ, sent to the nodes with every task; default 0 (plain local SGD). */
  readonly proximalMu?: number;
  /** Moves the global model along the aggregate; without one, the aggregate is added as it is (times η). */
  readonly serverOptimizer?: ServerOptimizerSpec;
  /** FedBuff's discount of stale updates; default 'none'. */
  readonly staleness?: 'sqrt' | 'none';
  /** η when there is no server optimizer; default 1. */
  readonly serverLearningRate?: number;
}

/** A FedOpt's options from the parts of the experiment every strategy of the family reads. */
export function familyOptions(name: string, experiment: StrategyContext): FedOptOptions {
  return { name, training: experiment.training, aggregation: experiment.aggregation, reputation: experiment.reputation };
}

/**
 * The FedAvg family, as Reddi et al. 2021 frame it: nodes run local SGD from
 * the global model (with FedProx's proximal term when μ > 0); the server
 * aggregates their deltas with the configured rule (the example-weighted mean,
 * or any robust rule of ../robust, which also says per update whether it was
 * kept, down-weighted or rejected, and why) and moves the global model along
 * that aggregate: directly (FedAvg, FedProx, FedBuff) or through a server optimizer
 * (FedAvgM, FedAdagrad, FedAdam, FedYogi) whose state travels in the history.
 */
export class FedOpt implements Strategy {
  readonly name: string;
  private readonly training: TrainingSpec;
  private readonly aggregation: AggregationSpec;
  private readonly reputation: Pick<ReputationSpec, 'weight_updates'> | undefined;
  private readonly optimizer: ServerOptimizerSpec | undefined;
  private readonly proximalMu: number;
  private readonly staleness: 'sqrt' | 'none';
  private readonly serverLearningRate: number;

  constructor(o: FedOptOptions) {
    this.name = o.name;
    this.training = o.training;
    this.aggregation = o.aggregation ?? aggregationSchema.parse({ rule: 'mean' });
    this.reputation = o.reputation;
    this.proximalMu = o.proximalMu ?? 0;
    this.optimizer = o.serverOptimizer;
    this.staleness = o.staleness ?? 'none';
    this.serverLearningRate = o.serverLearningRate ?? 1;
  }

  configureTraining(): RoundTraining {
    return { ...this.training, proximal_mu: this.proximalMu };
  }

  aggregate(global: Float32Array, updates: readonly ReceivedUpdate[], history: StrategyHistory): StrategyStep {
    const examples = updates.map((u) =>
      this.reputation?.weight_updates ? u.numExamples * Math.max(REPUTATION_FLOOR, u.reputation) : u.numExamples,
    );
    // Centered clipping starts from the last round's global step (Karimireddy et al. 2021's momentum centre).
    const centre = history.previousGlobal?.length === global.length ? difference(global, history.previousGlobal) : undefined;
    const { aggregate: step, verdicts } = aggregate(
      this.aggregation,
      updates.map((u) => this.discounted(u)),
      examples,
      centre ? { center: centre } : undefined,
    );
    if (this.optimizer) {
      const { weights, state } = applyServerOptimizer(this.optimizer, global, step, history.serverState);
      return { weights, verdicts, serverState: state };
    }
    const weights = new Float32Array(global.length);
    const eta = this.serverLearningRate;
    // η = 1 skips the product so FedAvg's models stay bit-identical to what they always were.
    if (eta === 1) for (let j = 0; j < global.length; j++) weights[j] = global[j]! + step[j]!;
    else for (let j = 0; j < global.length; j++) weights[j] = global[j]! + eta * step[j]!;
    return { weights, verdicts };
  }

  /**
   * FedBuff's staleness discount, applied to the update itself as Nguyen et al. do rather than to its
   * aggregation weight: robust rules that ignore weights (Krum, median, trimmed mean) still see a stale
   * update shrunk, and a buffer of equally stale updates moves the model less than a fresh one.
   */
  private discounted(u: ReceivedUpdate): Float32Array {
    const s = u.staleness ?? 0;
    if (this.staleness === 'none' || s === 0) return u.delta;
    const w = Math.fround(1 / Math.sqrt(1 + s));
    // Shared, like the received updates, so the round can still use the kernel pool.
    const out = sharedFloat32(u.delta.length);
    for (let j = 0; j < out.length; j++) out[j] = u.delta[j]! * w;
    return out;
  }
}

function difference(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let j = 0; j < a.length; j++) out[j] = a[j]! - b[j]!;
  return out;
}
