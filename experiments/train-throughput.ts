// Training throughput of one model on whichever tfjs backend is active, measured
// through trainLocally itself so the figure is what a node gets (batch assembly,
// forward, backward, SGD step, weights in and out), not a kernel microbenchmark.
// Shared by experiments/bench-train.ts and its smoke test.
import * as tf from '@tensorflow/tfjs';
import { missingTrainingKernels } from '../core/backend.js';
import { initialWeights } from '../core/model.js';
import type { JsonObject, JsonValue, ModelSpec } from '../core/model-zoo.js';
import { Rng } from '../datasets/random.js';
import type { Dataset } from '../datasets/types.js';
import { trainLocally } from '../trainer/local-training.js';

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
}

export interface Throughput {
  backend: string;
  samplesPerSecond: number;
  samples: number;
  batches: number;
  seconds: number;
  /** Mean training loss over the timed batches of the last epoch; finite unless training diverged. */
  loss: number;
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
  };
}

function numberField(config: JsonObject, key: string, layer: string): number {
  const v = config[key];
  if (typeof v !== 'number') throw new RangeError(`layer ${layer}: ${key} is not a number`);
  return v;
}

function pairField(config: JsonObject, key: string, layer: string, fallback?: [number, number]): [number, number] {
  const v: JsonValue | undefined = config[key];
  if (v === undefined && fallback) return fallback;
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'number' && typeof v[1] === 'number') return [v[0], v[1]];
  throw new RangeError(`layer ${layer}: ${key} is not a number pair`);
}

function spatialOut(size: number, window: number, stride: number, padding: JsonValue | undefined): number {
  return padding === 'same' ? Math.ceil(size / stride) : Math.floor((size - window) / stride) + 1;
}

/**
 * Forward multiply-adds per example, from the layer shapes: dense and
 * convolution products only. Bias adds, activations and pooling are a
 * fraction of a percent for these models and are left out, as is usual when
 * quoting a network's FLOPs.
 */
export function forwardMacsPerSample(spec: ModelSpec): number {
  const layers = spec.topology.config.layers;
  const first = layers[0]?.config.batch_input_shape;
  if (!Array.isArray(first)) throw new RangeError(`model ${spec.name}: first layer has no batch_input_shape`);
  let shape = first.slice(1).map((d) => {
    if (typeof d !== 'number') throw new RangeError(`model ${spec.name}: input shape has a non-numeric dimension`);
    return d;
  });
  let macs = 0;
  for (const { class_name: cls, config } of layers) {
    const name = typeof config.name === 'string' ? config.name : cls;
    switch (cls) {
      case 'InputLayer':
      case 'Dropout':
      case 'Activation':
        break;
      case 'Flatten':
        shape = [shape.reduce((a, b) => a * b, 1)];
        break;
      case 'Reshape': {
        const target = config.target_shape;
        if (!Array.isArray(target) || !target.every((d): d is number => typeof d === 'number')) {
          throw new RangeError(`layer ${name}: target_shape is not a list of numbers`);
        }
        shape = [...target];
        break;
      }
      case 'Dense': {
        const units = numberField(config, 'units', name);
        const inner = shape[shape.length - 1];
        const outer = shape.slice(0, -1).reduce((a, b) => a * b, 1);
        macs += outer * inner * units;
        shape = [...shape.slice(0, -1), units];
        break;
      }
      case 'Conv2D': {
        const [h, w, c] = shape;
        const filters = numberField(config, 'filters', name);
        const [kh, kw] = pairField(config, 'kernel_size', name);
        const [sh, sw] = pairField(config, 'strides', name, [1, 1]);
        const [dh, dw] = pairField(config, 'dilation_rate', name, [1, 1]);
        const oh = spatialOut(h, (kh - 1) * dh + 1, sh, config.padding);
        const ow = spatialOut(w, (kw - 1) * dw + 1, sw, config.padding);
        macs += oh * ow * filters * kh * kw * c;
        shape = [oh, ow, filters];
        break;
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const [h, w, c] = shape;
        const [ph, pw] = pairField(config, 'pool_size', name);
        const [sh, sw] = pairField(config, 'strides', name, [ph, pw]);
        shape = [spatialOut(h, ph, sh, config.padding), spatialOut(w, pw, sw, config.padding), c];
        break;
      }
      default:
        throw new RangeError(`layer ${name}: no FLOP count for layer class ${cls}`);
    }
  }
  return macs;
}

/**
 * FLOPs of one training example: forward is 2 FLOPs per multiply-add, and the
 * backward pass costs about twice the forward (gradients with respect to both
 * activations and weights), hence 3 × forward.
 */
export function trainingFlopsPerSample(spec: ModelSpec): number {
  return 3 * 2 * forwardMacsPerSample(spec);
}
