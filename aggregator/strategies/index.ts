import { ExperimentError, type Experiment } from '../experiment/schema.js';
import { precondition } from '../robust/index.js';
import { strategyNamed } from './registry.js';
import type { SmallestAggregation, Strategy } from './strategy.js';

/**
 * The experiment's strategy. Refuses, before any node is asked to train, an
 * aggregation rule that could not run on a round that reaches only its quorum.
 */
export function strategyFor(experiment: Experiment): Strategy {
  const descriptor = strategyNamed(experiment.strategy.name);
  // A synchronous round may close with only its quorum; a strategy that aggregates otherwise (FedBuff's whole buffers) says so.
  const smallest: SmallestAggregation = descriptor.smallestAggregation?.(experiment.strategy) ?? {
    field: 'selection.min_updates',
    updates: experiment.selection.min_updates,
    raise: 'min_updates (and nodes_per_round)',
  };
  const problem = precondition(experiment.aggregation, smallest.updates);
  if (problem) {
    throw new ExperimentError(
      `aggregation.rule ${experiment.aggregation.rule} cannot run on a round with ${smallest.field} = ` +
        `${smallest.updates} updates: ${problem}. Raise ${smallest.raise} or lower f.`,
    );
  }
  return descriptor.create(experiment.strategy, experiment);
}
