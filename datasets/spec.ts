// The `dataset` section of an experiment file: which dataset, and how it is split among nodes.
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

export const datasetSchema = z.discriminatedUnion('name', [
  z.object({ name: z.literal('fashion-mnist'), partition: partitionSchema.default({ kind: 'iid' }) }).strict(),
  z.object({ name: z.literal('mnist'), partition: partitionSchema.default({ kind: 'iid' }) }).strict(),
  z
    .object({
      name: z.literal('synthetic'),
      alpha: z.number().nonnegative().describe('FedProx\'s model-heterogeneity parameter (see datasets/README.md: it does not change the labels)'),
      beta: z.number().nonnegative().describe('how much the nodes\' inputs differ'),
      dimensions: z.number().int().positive().default(60),
      classes: z.number().int().min(2).default(10),
      partition: z.object({ kind: z.literal('natural') }).strict().default({ kind: 'natural' }),
    })
    .strict(),
]);
export type DatasetSpec = z.infer<typeof datasetSchema>;
export type DatasetName = DatasetSpec['name'];
