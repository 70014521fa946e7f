import { z } from 'zod';
import { FedOpt, familyOptions, serverLearningRateField } from './fedopt.js';
import type { StrategyDescriptor } from './strategy.js';

const schema = z
  .object({
    name: z.literal('fedbuff'),
    buffer_size: z.number().int().positive().max(10000).describe('K: a new model is published every K buffered updates'),
    concurrency: z
      .number()
      .int()
      .positive()
      .max(10000)
      .optional()
      .describe('C: tasks in flight at once (default selection.nodes_per_round)'),
    staleness: z
      .enum(['sqrt', 'none'])
      .default('sqrt')
      .describe("how an update trained s versions ago is discounted: 'sqrt' scales it by 1/√(1+s)"),
    server_learning_rate: serverLearningRateField.default(1),
    max_staleness: z
      .number()
      .int()
      .nonnegative()
      .max(1000)
      .default(10)
      .describe('updates trained on a model more than this many versions old are rejected'),
  })
  .strict()
  .describe('Nguyen et al. 2022: asynchronous buffered aggregation; no round waits for a straggler');

/** FedAvg's math on buffers of K updates, each discounted by its staleness; the buffered engine runs it. */
export const fedbuffStrategy: StrategyDescriptor<typeof schema> = {
  name: 'fedbuff',
  schema,
  engine: 'buffered',
  create: (spec, experiment) =>
    new FedOpt({ ...familyOptions(spec.name, experiment), staleness: spec.staleness, serverLearningRate: spec.server_learning_rate }),
  // Every aggregation folds a whole buffer, never fewer.
  smallestAggregation: (spec) => ({ field: 'strategy.buffer_size', updates: spec.buffer_size, raise: 'buffer_size' }),
  // A node trains each published model at most once (its task seed would repeat), so a buffer larger
  // than the nodes working at once would never fill.
  checkExperiment: (spec, experiment) =>
    spec.buffer_size <= Math.min(experiment.nodes, spec.concurrency ?? experiment.selection.nodes_per_round)
      ? undefined
      : { message: 'strategy.buffer_size cannot exceed strategy.concurrency (default selection.nodes_per_round) or nodes', path: ['buffer_size'] },
};
