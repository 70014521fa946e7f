import test from 'ava';
import { initBackend } from '../core/backend.js';
import { modelSpec } from '../core/model/zoo.js';
import { trainingFlopsPerSample } from '../core/model/flops.js';
import { BENCH_INPUT, measureTraining } from './train-throughput.js';

test.before(async () => {
  await initBackend('cpu', { log: () => {} });
});

test('the training benchmark measures a positive, finite samples/s for the 2NN on cpu', async (t) => {
  t.timeout(20_000);
  const spec = modelSpec('2nn', BENCH_INPUT);
  const r = await measureTraining({ spec, batchSize: 10, warmupBatches: 1, minSeconds: 0, minBatches: 2 });
  t.is(r.backend, 'cpu');
  t.is(r.batches, 2);
  t.is(r.samples, 20);
  t.true(Number.isFinite(r.samplesPerSecond) && r.samplesPerSecond > 0, `samples/s ${r.samplesPerSecond}`);
  t.true(Number.isFinite(r.loss), `loss ${r.loss}`);
});

test('FLOPs per training sample follow from the layer shapes', (t) => {
  // 3 × forward; forward = 2 × multiply-adds of the dense and conv layers.
  t.is(trainingFlopsPerSample(modelSpec('2nn', BENCH_INPUT)), 6 * (784 * 200 + 200 * 200 + 200 * 10));
  t.is(trainingFlopsPerSample(modelSpec('cnn', BENCH_INPUT)), 6 * (28 * 28 * 32 * 25 + 14 * 14 * 64 * 25 * 32 + 7 * 7 * 64 * 512 + 512 * 10));
  t.is(Math.round(trainingFlopsPerSample(modelSpec('2nn', BENCH_INPUT)) / 1e4) / 100, 1.19);
  t.is(Math.round(trainingFlopsPerSample(modelSpec('cnn', BENCH_INPUT)) / 1e5) / 10, 73.6);
});
