// What a dataset is to the rest of crowdfl: the schema of its `dataset`
// section in an experiment file and the entry points a simulation loads it
// through. Every dataset exports one descriptor; registry.ts lists them.
import type { z } from 'zod';
import type { CacheOptions, ImageSource } from './cache.js';
import type { Dataset } from '../core/dataset.js';

export interface FederatedData {
  /** Held-out data the aggregator evaluates the global model on. */
  readonly test: Dataset;
  /** partitions[k] is node k's training data. */
  readonly partitions: Dataset[];
}

export interface DatasetDescriptor<Schema extends z.ZodObject = z.ZodObject> {
  /** The `name` the schema's literal holds: what an experiment file writes. */
  readonly name: z.output<Schema>['name'];
  /** The `dataset` section for this dataset; datasetSchema (spec.ts) is the union of all of them. */
  readonly schema: Schema;
  /** The npm-packaged images loadSplit and cacheInfo read; absent for generated data. */
  readonly images?: ImageSource;
  /**
   * The train data partitioned among `numNodes` nodes, plus the held-out
   * test data. Deterministic in (spec, numNodes, seed).
   */
  federatedData(spec: z.output<Schema>, numNodes: number, seed: number, opts: CacheOptions): Promise<FederatedData>;
  /** Only the held-out data federatedData would return, loading no more than it needs. */
  testData(spec: z.output<Schema>, numNodes: number, seed: number, opts: CacheOptions): Promise<Dataset>;
}
