import { z } from 'zod';
import { FedOpt, familyOptions, serverLearningRateField } from './fedopt.js';
import { SERVER_OPTIMIZER_DEFAULTS } from './server-optimizers.js';
import type { StrategyDescriptor } from './strategy.js';

const schema = z
  .object({
    name: z.literal('fedavgm'),
    server_learning_rate: serverLearningRateField.default(1),
    momentum: z.number().min(0).lt(1).default(SERVER_OPTIMIZER_DEFAULTS.momentum).describe('β of the server momentum m ← βm + Δ'),
  })
  .strict()
  .describe('Hsu et al. 2019: FedAvg with server momentum');

export const fedavgmStrategy: StrategyDescriptor<typeof schema> = {
  name: 'fedavgm',
  schema,
  engine: 'synchronous',
  create: (spec, experiment) =>
    new FedOpt({
      ...familyOptions(spec.name, experiment),
      serverOptimizer: { name: 'fedavgm', server_learning_rate: spec.server_learning_rate, momentum: spec.momentum },
    }),
};
