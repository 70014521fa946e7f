// The datasets an experiment file can name. Adding a dataset is one module
// exporting a DatasetDescriptor and one line in `datasets` below: the
// experiment schema (spec.ts datasetSchema), federatedData, testData and
// loadSplit all read this list.
import type { DatasetDescriptor } from './descriptor.js';
import { fashionMnist } from './fashion-mnist.js';
import { mnist } from './mnist.js';
import { synthetic } from './synthetic.js';

/** Every dataset, in the order the schema and messages list them. */
export const datasets = [fashionMnist, mnist, synthetic] as const;

export type RegisteredDataset = (typeof datasets)[number];

/** The descriptor registered as `name`; callers outside TypeScript (JSON, CLI flags) can pass any string. */
export function datasetNamed(name: string): DatasetDescriptor | undefined {
  return datasets.find((dataset) => dataset.name === name);
}
