// The adaptive server optimizers of Reddi et al. 2021 ("Adaptive Federated
// Optimization"): the round's aggregate Δ is a pseudo-gradient the server
// applies with its own optimizer and learning rate η. The three differ only in
// the second moment's update (./server-optimizers.ts), so they share fields.
import { z } from 'zod';
import { FedOpt, familyOptions, serverLearningRateField } from './fedopt.js';
import { SERVER_OPTIMIZER_DEFAULTS } from './server-optimizers.js';
import type { StrategyDescriptor } from './strategy.js';

const adaptiveFields = {
  server_learning_rate: serverLearningRateField,
  beta1: z.number().min(0).lt(1).default(SERVER_OPTIMIZER_DEFAULTS.beta1).describe('decay of the first moment m'),
  beta2: z.number().min(0).lt(1).default(SERVER_OPTIMIZER_DEFAULTS.beta2).describe('decay of the second moment v (not used by fedadagrad)'),
  tau: z.number().positive().max(1).default(SERVER_OPTIMIZER_DEFAULTS.tau).describe('τ: adaptivity; v starts at τ² and steps divide by √v + τ'),
};

function adaptiveStrategy<Name extends 'fedadagrad' | 'fedadam' | 'fedyogi'>(name: Name) {
  const schema = z.object({ name: z.literal(name), ...adaptiveFields }).strict();
  const descriptor: StrategyDescriptor<typeof schema> = {
    name,
    schema,
    engine: 'synchronous',
    create: (spec, experiment) =>
      new FedOpt({
        ...familyOptions(spec.name, experiment),
        serverOptimizer: { name: spec.name, server_learning_rate: spec.server_learning_rate, beta1: spec.beta1, beta2: spec.beta2, tau: spec.tau },
      }),
  };
  return descriptor;
}

export const fedadagradStrategy = adaptiveStrategy('fedadagrad');
export const fedadamStrategy = adaptiveStrategy('fedadam');
export const fedyogiStrategy = adaptiveStrategy('fedyogi');
