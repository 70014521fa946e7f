import type { AggregationSpec, ReputationSpec, TrainingSpec } from '../../core/experiment.js';
import { aggregate } from '../robust/index.js';
import type { ReceivedUpdate, Strategy, StrategyHistory, StrategyStep } from './strategy.js';

// A node with reputation 0 still counts a little, so a round of only such nodes can aggregate.
const REPUTATION_FLOOR = 0.01;

/**
 * McMahan et al. 2017: the new model is the global model plus the aggregate
 * of the nodes' deltas. The aggregate is the example-weighted mean by
 * default, or any robust rule of ../robust, which also says per update
 * whether it was kept, down-weighted or rejected, and why.
 */
export class FedAvg implements Strategy {
  readonly name = 'fedavg';

  constructor(
    private readonly training: TrainingSpec,
    private readonly aggregation: AggregationSpec = { rule: 'mean' },
    private readonly reputation?: Pick<ReputationSpec, 'weight_updates'>,
  ) {}

  configureTraining(): TrainingSpec {
    return this.training;
  }

  aggregate(global: Float32Array, updates: readonly ReceivedUpdate[], history: StrategyHistory): StrategyStep {
    const examples = updates.map((u) =>
      this.reputation?.weight_updates ? u.numExamples * Math.max(REPUTATION_FLOOR, u.reputation) : u.numExamples,
    );
    // Centered clipping starts from the last round's global step (Karimireddy et al. 2021's momentum centre).
    const centre = history.previousGlobal?.length === global.length ? difference(global, history.previousGlobal) : undefined;
    const { aggregate: step, verdicts } = aggregate(
      this.aggregation,
      updates.map((u) => u.delta),
      examples,
      centre ? { center: centre } : undefined,
    );
    const weights = new Float32Array(global.length);
    for (let j = 0; j < global.length; j++) weights[j] = global[j]! + step[j]!;
    return { weights, verdicts };
  }
}

function difference(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let j = 0; j < a.length; j++) out[j] = a[j]! - b[j]!;
  return out;
}
