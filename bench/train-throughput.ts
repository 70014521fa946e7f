// Training throughput of one model on whichever tfjs backend is active, measured
// through trainLocally itself so the figure is what a node gets (batch assembly,
// forward, backward, SGD step, weights in and out), not a kernel microbenchmark.
// Shared by bench/bench-train.ts and its smoke test.
import * as tf from '@tensorflow/tfjs';
import { missingTrainingKernels } from '../core/backend.js';
import { initialWeights } from '../core/model/build.js';
import type { ModelSpec } from '../core/model/spec.js';
import { Rng } from '../core/rng.js';
import type { Dataset } from '../core/dataset.js';
import { trainLocally } from '../trainer/training/local-training.js';

/** MNIST-shaped inputs, the shape the targets are stated for. */
export const BENCH_INPUT = { featureShape: [28, 28, 1], numClasses: 10 } as const;

export class MissingKernelsError extends Error {
  override name = 'MissingKernelsError';
  constructor(
    readonly backend: string,
    readonly kernels: readonly string[],
  ) {
    super(`backend ${backend} lacks ${kernels.join(', ')}`);
  }
}

export interface MeasureOptions {
  spec: ModelSpec;
  batchSize: number;
  /** Batches trained (and thrown away) before timing; 0 skips the warm-up call. */
  warmupBatches: number;
  /** Timing stops once both minSeconds have passed and minBatches have run... */
  minSeconds: number;
  minBatches: number;
  /** ...or, after at least one batch, once this much time has passed. */
  maxSeconds?: number;
  seed?: number;
  learningRate?: number;
  /** trainLocally's threads (data-parallel replicas); 1 by default. */
  threads?: number;
}

export interface Throughput {
  backend: string;
  samplesPerSecond: number;
  samples: number;
  batches: number;
  seconds: number;
  /** Mean training loss over the timed batches of the last epoch; finite unless training diverged. */
  loss: number;
  /** Threads trainLocally trained with (fewer than asked where a share would be too small). */
  threads: number;
}

// A few dozen batches are enough variety; the loop reshuffles them every epoch.
const DATASET_BATCHES = 32;

/** Uniform [0, 1) pixels and uniform labels: throughput does not depend on content. */
export function randomImages(numExamples: number, seed: number, input: { featureShape: readonly number[]; numClasses: number } = BENCH_INPUT): Dataset {
  const d = input.featureShape.reduce((a, b) => a * b, 1);
  const rng = Rng.derive(seed, 'bench-train-data');
  const features = new Float32Array(numExamples * d);
  for (let i = 0; i < features.length; i++) features[i] = rng.uniform();
  const labels = new Uint8Array(numExamples);
  for (let i = 0; i < numExamples; i++) labels[i] = rng.int(input.numClasses);
  return { name: 'bench-random', featureShape: [...input.featureShape], numClasses: input.numClasses, numExamples, features, labels };
}

/**
 * Samples per second of `trainLocally` for `o.spec` at `o.batchSize` on the
 * current backend. Throws MissingKernelsError rather than letting tfjs fail
 * mid-step when the backend cannot train the model.
 */
export async function measureTraining(o: MeasureOptions): Promise<Throughput> {
  const backend = tf.getBackend();
  const missing = missingTrainingKernels(o.spec, backend);
  if (missing.length > 0) throw new MissingKernelsError(backend, missing);
  const seed = o.seed ?? 1;
  const data = randomImages(o.batchSize * DATASET_BATCHES, seed);
  const base = initialWeights(o.spec, seed);
  const common = {
    spec: o.spec,
    baseWeights: base,
    data,
    // The stop condition ends training; epochs only has to be large enough never to.
    epochs: 1_000_000,
    batchSize: o.batchSize,
    // Small enough that random labels do not drive the weights to overflow, which would slow every kernel.
    learningRate: o.learningRate ?? 0.01,
    seed,
    threads: o.threads ?? 1,
  };

  if (o.warmupBatches > 0) {
    let done = 0;
    await trainLocally({ ...common, onProgress: () => done++, shouldStop: () => done >= o.warmupBatches });
  }

  let batches = 0;
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  const result = await trainLocally({
    ...common,
    onProgress: () => batches++,
    shouldStop: () =>
      (batches >= o.minBatches && elapsed() >= o.minSeconds) || (o.maxSeconds !== undefined && batches >= 1 && elapsed() >= o.maxSeconds),
  });
  const seconds = elapsed();
  return {
    backend,
    samplesPerSecond: result.examplesTrained / seconds,
    samples: result.examplesTrained,
    batches,
    seconds,
    loss: result.metrics.loss,
    threads: result.threads,
  };
}
