import { z } from 'zod';
import { FedOpt, familyOptions } from './fedopt.js';
import type { StrategyDescriptor } from './strategy.js';

const schema = z.object({ name: z.literal('fedavg') }).strict().describe('McMahan et al. 2017: the new model is the old plus the aggregate');

export const fedavgStrategy: StrategyDescriptor<typeof schema> = {
  name: 'fedavg',
  schema,
  engine: 'synchronous',
  create: (spec, experiment) => new FedOpt(familyOptions(spec.name, experiment)),
};
