import test from 'ava';
import { DatasetError, federatedData, loadSplit, type ImageDatasetName } from './index.js';
import { datasetNamed, datasets } from './registry.js';
import { datasetSchema, type DatasetName, type DatasetSpec } from './spec.js';

// The least an experiment file can write for each dataset, and what it parses to.
// Typed by DatasetName, so registering a dataset without a row here does not compile.
const minimal: Record<DatasetName, { section: Record<string, unknown>; parsed: DatasetSpec }> = {
  'fashion-mnist': { section: { name: 'fashion-mnist' }, parsed: { name: 'fashion-mnist', partition: { kind: 'iid' } } },
  mnist: { section: { name: 'mnist' }, parsed: { name: 'mnist', partition: { kind: 'iid' } } },
  synthetic: {
    section: { name: 'synthetic', alpha: 0, beta: 0 },
    parsed: { name: 'synthetic', alpha: 0, beta: 0, dimensions: 60, classes: 10, partition: { kind: 'natural' } },
  },
};

test('every registered dataset parses its minimal section with its own schema and through datasetSchema', (t) => {
  t.deepEqual(
    datasets.map((dataset) => dataset.name),
    Object.keys(minimal),
  );
  for (const dataset of datasets) {
    const { section, parsed } = minimal[dataset.name];
    t.deepEqual(dataset.schema.parse(section), parsed, dataset.name);
    t.deepEqual(datasetSchema.parse(section), parsed, dataset.name);
    t.is(datasetNamed(dataset.name), dataset);
  }
  t.false(datasetSchema.safeParse({ name: 'cifar' }).success);
  t.is(datasetNamed('cifar'), undefined);
  t.is(datasetNamed('toString'), undefined);
});

test('asked for an unregistered dataset, the loaders name the packaged ones', async (t) => {
  const message = 'unknown dataset "cifar"; the packaged datasets are fashion-mnist and mnist';
  await t.throwsAsync(loadSplit('cifar' as ImageDatasetName, 'test'), { instanceOf: DatasetError, message });
  await t.throwsAsync(federatedData({ name: 'cifar' } as unknown as DatasetSpec, 2, 1), { instanceOf: DatasetError, message });
  // Synthetic data is registered but generated, not packaged.
  await t.throwsAsync(loadSplit('synthetic' as ImageDatasetName, 'test'), {
    instanceOf: DatasetError,
    message: 'unknown dataset "synthetic"; the packaged datasets are fashion-mnist and mnist',
  });
});
