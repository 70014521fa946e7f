// The descriptor every npm-packaged image dataset shares: an experiment names
// it and how to partition it; a simulation loads the cached train split,
// partitions it, and evaluates on the cached test split.
import { z } from 'zod';
import { loadImageSplit, type ImageSource } from './cache.js';
import type { DatasetDescriptor } from './descriptor.js';
import { capPartitions, partitionIndices, subset } from './partition.js';
import { partitionSchema } from './partition-spec.js';

export function packagedImageDataset<const Name extends string>(images: ImageSource & { readonly dataset: Name }) {
  const schema = z
    .object({
      name: z.literal(images.dataset),
      partition: partitionSchema.default({ kind: 'iid' }),
      examples_per_node: z
        .number()
        .int()
        .positive()
        .optional()
        .describe("each node keeps at most this many of its partition's examples, drawn at random (e.g. McMahan et al.'s 600); all when absent"),
    })
    .strict();
  const descriptor: DatasetDescriptor<typeof schema> & { readonly images: ImageSource } = {
    name: images.dataset,
    schema,
    images,
    async federatedData(spec, numNodes, seed, opts) {
      const train = await loadImageSplit(images, 'train', opts);
      const all = partitionIndices(spec.partition, train.labels, train.numClasses, numNodes, seed);
      const parts = spec.examples_per_node === undefined ? all : capPartitions(all, spec.examples_per_node, seed);
      const partitions = parts.map((indices) => subset(train, indices));
      const test = await loadImageSplit(images, 'test', opts);
      return { test, partitions };
    },
    testData: (_spec, _numNodes, _seed, opts) => loadImageSplit(images, 'test', opts),
  };
  return descriptor;
}
