import type { TrainingSpec } from '../../core/experiment.js';
import { weightedMean } from '../robust/mean.js';
import type { ReceivedUpdate, Strategy, StrategyStep } from './strategy.js';

/** McMahan et al. 2017: the new model is the example-weighted mean of the nodes' models. */
export class FedAvg implements Strategy {
  readonly name = 'fedavg';

  constructor(private readonly training: TrainingSpec) {}

  configureTraining(): TrainingSpec {
    return this.training;
  }

  aggregate(global: Float32Array, updates: readonly ReceivedUpdate[]): StrategyStep {
    const { aggregate, verdicts } = weightedMean(
      updates.map((u) => u.delta),
      updates.map((u) => u.numExamples),
    );
    const weights = new Float32Array(global.length);
    for (let j = 0; j < global.length; j++) weights[j] = global[j]! + aggregate[j]!;
    return { weights, verdicts };
  }
}
