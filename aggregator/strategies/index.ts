import { ExperimentError, type Experiment } from '../experiment/schema.js';
import { precondition } from '../robust/index.js';
import { FedOpt } from './fedopt.js';
import type { Strategy } from './strategy.js';

/**
 * The experiment's strategy. Refuses, before any node is asked to train, an
 * aggregation rule that could not run on a round that reaches only its quorum.
 */
export function strategyFor(experiment: Experiment): Strategy {
  // FedBuff aggregates whole buffers; a synchronous round may close with only its quorum.
  const [field, n] =
    experiment.strategy.name === 'fedbuff'
      ? ['strategy.buffer_size', experiment.strategy.buffer_size]
      : ['selection.min_updates', experiment.selection.min_updates];
  const problem = precondition(experiment.aggregation, n);
  if (problem) {
    throw new ExperimentError(
      `aggregation.rule ${experiment.aggregation.rule} cannot run on a round with ${field} = ` +
        `${n} updates: ${problem}. Raise ${field === 'strategy.buffer_size' ? 'buffer_size' : 'min_updates (and nodes_per_round)'} or lower f.`,
    );
  }
  return new FedOpt(experiment.strategy, experiment.training, experiment.aggregation, experiment.reputation);
}
