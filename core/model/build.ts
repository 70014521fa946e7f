// Turning a ModelSpec (pure JSON, checked by core/model/spec.ts) into a tfjs
// model, lending built models out of a pool, and moving weights in and out of
// a model as one flat Float32Array in manifest order.
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../rng.js';
import { describeShape, product } from './shapes.js';
import { layerSummary, ModelSpecError, numParams, specKey, weightManifest, type ModelSpec } from './spec.js';

/**
 * Instantiates the topology with tfjs. Async because tf.models.modelFromJSON is.
 * The weights tfjs initialises are placeholders: callers set real ones with
 * setFlatWeights (initialWeights or weights from the aggregator).
 */
export async function buildModel(spec: ModelSpec): Promise<tf.LayersModel> {
  const manifest = weightManifest(spec);
  // modelFromJSON takes ownership of parts of its argument; give it a copy.
  const topology = JSON.parse(specKey(spec)) as tf.serialization.ConfigDict;
  const model = await tf.models.modelFromJSON(topology);
  const built = model.weights;
  const mismatch =
    built.length !== manifest.length ||
    built.some((w, i) => w.originalName !== manifest[i].name || describeShape(w.shape as number[]) !== describeShape(manifest[i].shape));
  if (mismatch) {
    model.dispose();
    throw new ModelSpecError(
      `model ${spec.name}: tfjs built weights ${built.map((w) => `${w.originalName}${describeShape(w.shape as number[])}`).join(', ')} ` +
        `but the topology implies ${manifest.map((w) => `${w.name}${describeShape(w.shape)}`).join(', ')}`,
    );
  }
  return model;
}

/** All weights of `model` copied into one Float32Array, in manifest order. */
export function getFlatWeights(model: tf.LayersModel): Float32Array {
  const weights = model.weights;
  const total = weights.reduce((sum, w) => sum + product(w.shape as number[]), 0);
  const flat = new Float32Array(total);
  let offset = 0;
  for (const w of weights) {
    // read() returns the variable itself, not a copy: it must not be disposed.
    const values = w.read().dataSync();
    flat.set(values, offset);
    offset += values.length;
  }
  return flat;
}

/** Loads a flat Float32Array (manifest order) into `model`. */
export function setFlatWeights(model: tf.LayersModel, flat: Float32Array): void {
  const weights = model.weights;
  const total = weights.reduce((sum, w) => sum + product(w.shape as number[]), 0);
  if (flat.length !== total) {
    throw new RangeError(`weights have ${flat.length} values but model ${model.name} has ${total} parameters`);
  }
  let offset = 0;
  const tensors = weights.map((w) => {
    const shape = w.shape as number[];
    const n = product(shape);
    // slice, not subarray: the cpu backend keeps the array it is given, so a view
    // would let the caller's later writes change the model's weights.
    const t = tf.tensor(flat.slice(offset, offset + n), shape, 'float32');
    offset += n;
    return t;
  });
  try {
    model.setWeights(tensors);
  } finally {
    tf.dispose(tensors);
  }
}

/**
 * Initial weights for `seed`, computed in plain TypeScript so every backend and
 * machine gets the same bits: Glorot-uniform kernels, zero biases.
 */
export function initialWeights(spec: ModelSpec, seed: number): Float32Array {
  const flat = new Float32Array(numParams(spec));
  const rng = Rng.derive(seed, 'initial-weights');
  let offset = 0;
  // Layer by layer, each layer's weights in manifest order.
  const weights = layerSummary(spec).flatMap((layer) => layer.weights);
  weights.forEach((w) => {
    const n = product(w.shape);
    if (w.role === 'kernel') {
      const limit = glorotLimit(w.shape);
      for (let j = 0; j < n; j++) flat[offset + j] = (2 * rng.uniform() - 1) * limit;
    }
    offset += n;
  });
  return flat;
}

/**
 * Glorot/Xavier uniform bound sqrt(6 / (fan_in + fan_out)). For conv kernels
 * [kh, kw, in, out] both fans include the receptive field kh·kw, as in Keras.
 */
export function glorotLimit(shape: readonly number[]): number {
  if (shape.length < 2) throw new RangeError(`a kernel needs at least 2 dimensions, got ${describeShape(shape)}`);
  const receptive = product(shape.slice(0, -2));
  const fanIn = shape[shape.length - 2] * receptive;
  const fanOut = shape[shape.length - 1] * receptive;
  return Math.sqrt(6 / (fanIn + fanOut));
}

// Built models are pooled per backend and topology: building (and placeholder
// initialisation of) a 1.6M-parameter CNN is not free, and the aggregator
// evaluates every round. A model is lent to one user at a time, so concurrent
// training and evaluation never share variables.
const pool = new Map<string, tf.LayersModel[]>();
const MAX_IDLE_PER_KEY = 4;

function poolKey(spec: ModelSpec): string {
  return `${tf.getBackend()}\n${specKey(spec)}`;
}

/** Lends a built model for `spec` to `fn` and takes it back afterwards. */
export async function withModel<T>(spec: ModelSpec, fn: (model: tf.LayersModel) => Promise<T>): Promise<T> {
  const key = poolKey(spec);
  const idle = pool.get(key);
  const model = idle?.pop() ?? (await buildModel(spec));
  try {
    return await fn(model);
  } finally {
    // The backend may have been switched while fn ran; file the model under the one holding its variables.
    const list = pool.get(key) ?? [];
    if (list.length < MAX_IDLE_PER_KEY) {
      list.push(model);
      pool.set(key, list);
    } else {
      model.dispose();
    }
  }
}

/** Frees every pooled model (e.g. before switching backends for good, or in tests). */
export function disposeModelPool(): void {
  for (const models of pool.values()) for (const m of models) m.dispose();
  pool.clear();
}
