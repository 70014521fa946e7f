import type { AggregationSpec, ReputationSpec, StrategySpec, TrainingSpec } from '../experiment/schema.js';
import { aggregate } from '../robust/index.js';
import { sharedFloat32 } from '../robust/kernels/pool.js';
import { applyServerOptimizer, type ServerOptimizerSpec } from './server-optimizers.js';
import type { ReceivedUpdate, RoundTraining, Strategy, StrategyHistory, StrategyStep } from './strategy.js';

// A node with reputation 0 still counts a little, so a round of only such nodes can aggregate.
const REPUTATION_FLOOR = 0.01;

/**
 * The FedAvg family, as Reddi et al. 2021 frame it: nodes run local SGD from
 * the global model (with FedProx's proximal term when μ > 0); the server
 * aggregates their deltas with the configured rule (the example-weighted mean,
 * or any robust rule of ../robust, which also says per update whether it was
 * kept, down-weighted or rejected, and why) and moves the global model along
 * that aggregate: directly (FedAvg, FedProx) or through a server optimizer
 * (FedAvgM, FedAdagrad, FedAdam, FedYogi) whose state travels in the history.
 */
export class FedOpt implements Strategy {
  readonly name: StrategySpec['name'];
  private readonly optimizer: ServerOptimizerSpec | undefined;
  private readonly proximalMu: number;
  private readonly staleness: 'sqrt' | 'none';
  private readonly serverLearningRate: number;

  constructor(
    strategy: StrategySpec,
    private readonly training: TrainingSpec,
    private readonly aggregation: AggregationSpec = { rule: 'mean' },
    private readonly reputation?: Pick<ReputationSpec, 'weight_updates'>,
  ) {
    this.name = strategy.name;
    this.proximalMu = strategy.name === 'fedprox' ? strategy.mu : 0;
    this.optimizer = serverOptimizer(strategy);
    this.staleness = strategy.name === 'fedbuff' ? strategy.staleness : 'none';
    this.serverLearningRate = strategy.name === 'fedbuff' ? strategy.server_learning_rate : 1;
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

/** The server optimizer a strategy names; none for FedAvg and FedProx, which add the aggregate as it is. */
function serverOptimizer(s: StrategySpec): ServerOptimizerSpec | undefined {
  switch (s.name) {
    case 'fedavg':
    case 'fedprox':
    case 'fedbuff':
      return undefined;
    case 'fedavgm':
      return { name: 'fedavgm', server_learning_rate: s.server_learning_rate, momentum: s.momentum };
    case 'fedadagrad':
    case 'fedadam':
    case 'fedyogi':
      return { name: s.name, server_learning_rate: s.server_learning_rate, beta1: s.beta1, beta2: s.beta2, tau: s.tau };
  }
}

function difference(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let j = 0; j < a.length; j++) out[j] = a[j]! - b[j]!;
  return out;
}
