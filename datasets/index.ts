// Entry point for everything data: the runner asks for federatedData(), a
// trainer node for loadSplit() or readLocalData().
import type { DatasetSpec } from './spec.js';
import { ensureImageCache, loadImageSplit, type CacheOptions, type ImageCacheHeader, type ImageSource, type Split } from './cache.js';
import { DatasetError } from './errors.js';
import { fashionMnistSource } from './fashion-mnist.js';
import { mnistSource } from './mnist.js';
import { partitionIndices, subset } from './partition.js';
import { generateSynthetic } from './synthetic.js';
import type { Dataset } from '../core/dataset.js';

export { cacheDir, resolveDatasetPackage, type CacheOptions, type ImageCacheHeader, type LogFn, type Split } from './cache.js';
export { DatasetError } from './errors.js';
export { FASHION_MNIST_CLASS_NAMES } from './fashion-mnist.js';
export {
  importCsv,
  LOCAL_DATA_FORMAT,
  LOCAL_DATA_MANIFEST,
  readLocalData,
  writeLocalData,
  type CsvImportOptions,
  type LocalDataManifest,
} from './local-dir.js';
export * as partitioners from './partition.js';
export { partitionIndices, subset } from './partition.js';
export { Rng } from '../core/rng.js';
export { generateSynthetic, type SyntheticData, type SyntheticNode, type SyntheticOptions } from './synthetic.js';
export { featureSize, type Dataset } from '../core/dataset.js';

export type ImageDatasetName = 'fashion-mnist' | 'mnist';

const sources = { 'fashion-mnist': fashionMnistSource, mnist: mnistSource } as const;

/**
 * One split of a packaged image dataset: fashion-mnist (60,000 / 10,000) or
 * mnist (8,000 / 2,000). The first call on a machine builds the cache.
 */
export async function loadSplit(name: ImageDatasetName, split: Split, opts: CacheOptions = {}): Promise<Dataset> {
  return loadImageSplit(sourceFor(name), split, opts);
}

// Callers outside TypeScript (CLI flags, JSON) can pass any string.
function sourceFor(name: ImageDatasetName): ImageSource {
  const source = Object.hasOwn(sources, name) ? sources[name] : undefined;
  if (!source) {
    throw new DatasetError(`unknown dataset "${String(name)}"; the packaged datasets are ${Object.keys(sources).join(' and ')}`);
  }
  return source;
}

/** Builds the dataset's cache if needed and returns its header (counts, skipped records, source version). */
export async function cacheInfo(name: ImageDatasetName, opts: CacheOptions = {}): Promise<ImageCacheHeader> {
  return (await ensureImageCache(sourceFor(name), opts)).header;
}

export interface FederatedData {
  /** Held-out data the aggregator evaluates the global model on. */
  readonly test: Dataset;
  /** partitions[k] is node k's training data. */
  readonly partitions: Dataset[];
}

/**
 * The data of a simulated federation: the train split partitioned among
 * `numNodes` nodes per spec.partition, plus the test split. For synthetic
 * data each node's data is generated separately and the test set is the
 * union of the nodes' held-out 20%. Deterministic in (spec, numNodes, seed).
 */
export async function federatedData(
  spec: DatasetSpec,
  numNodes: number,
  seed: number,
  opts: CacheOptions = {},
): Promise<FederatedData> {
  if (spec.name === 'synthetic') {
    const data = generateSynthetic({
      alpha: spec.alpha,
      beta: spec.beta,
      dims: spec.dimensions,
      classes: spec.classes,
      numNodes,
      seed,
    });
    return { test: data.test, partitions: data.nodes.map((n) => n.train) };
  }
  const train = await loadSplit(spec.name, 'train', opts);
  const parts = partitionIndices(spec.partition, train.labels, train.numClasses, numNodes, seed);
  const partitions = parts.map((indices) => subset(train, indices));
  const test = await loadSplit(spec.name, 'test', opts);
  return { test, partitions };
}

/**
 * Only the held-out set the aggregator evaluates on: for packaged datasets the
 * test split alone, without loading and partitioning the train split.
 */
export async function testData(spec: DatasetSpec, numNodes: number, seed: number, opts: CacheOptions = {}): Promise<Dataset> {
  // Synthetic test data is the union of the nodes' held-out parts, so it needs the nodes.
  if (spec.name === 'synthetic') return (await federatedData(spec, numNodes, seed, opts)).test;
  return loadSplit(spec.name, 'test', opts);
}
