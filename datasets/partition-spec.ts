// The `partition` field of an experiment's `dataset` section: how a dataset's
// examples are split among simulated nodes (the partitioners are in partition.ts).
import { z } from 'zod';

export const partitionSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('iid') }).strict(),
  z
    .object({
      kind: z.literal('dirichlet'),
      alpha: z.number().positive().describe('concentration of the per-node label distribution; small = skewed'),
    })
    .strict(),
  z
    .object({
      kind: z.literal('shards'),
      shards_per_node: z.number().int().positive().default(2),
    })
    .strict(),
  z
    .object({
      kind: z.literal('quantity'),
      alpha: z.number().positive().describe('Dirichlet concentration over node sizes; small = very unequal sizes'),
    })
    .strict(),
  // Synthetic data is generated per node, so its partition is the generator's own.
  z.object({ kind: z.literal('natural') }).strict(),
]);
export type PartitionSpec = z.infer<typeof partitionSchema>;
