import { z } from 'zod';
import { FedOpt, familyOptions } from './fedopt.js';
import type { StrategyDescriptor } from './strategy.js';

const schema = z
  .object({
    name: z.literal('fedprox'),
    mu: z.number().nonnegative().max(100).describe('μ of the proximal term μ/2·‖w − w_global‖² added to every node\'s local loss'),
  })
  .strict()
  .describe('Li et al. 2020: FedAvg whose nodes stay near the global model, for skewed data and partial work');

/** FedAvg on the server; the nodes' local loss gets the proximal term, whose μ travels in every task. */
export const fedproxStrategy: StrategyDescriptor<typeof schema> = {
  name: 'fedprox',
  schema,
  engine: 'synchronous',
  create: (spec, experiment) => new FedOpt({ ...familyOptions(spec.name, experiment), proximalMu: spec.mu }),
};
