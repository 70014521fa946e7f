// The kernels core/tfjs-wasm-kernels.ts registers for the wasm backend, checked
// against the cpu backend's own implementations on the same inputs. Every test
// is serial: the tfjs backend is process-wide state.
import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { ensureBackendFor, initBackend, missingTrainingKernels, trainingKernels } from './backend.js';
import { initialWeights } from './model/build.js';
import { modelSpec } from './model/zoo.js';
import { registerWasmTrainingKernels } from './tfjs-wasm-kernels.js';
import { Rng } from './rng.js';
import type { Dataset } from './dataset.js';
import { trainLocally } from '../trainer/training/local-training.js';

const TOLERANCE = 1e-4;
const cnn = modelSpec('cnn', { featureShape: [28, 28, 1], numClasses: 10 });

test.before(async () => {
  await initBackend('wasm', { log: () => {} });
});

function randomValues(size: number, seed: number, integers = false): Float32Array {
  const rng = new Rng(seed);
  const values = new Float32Array(size);
  // Small integers make ties inside pooling windows, and all-negative windows, common.
  for (let i = 0; i < size; i++) values[i] = integers ? rng.int(5) - 3 : rng.uniform() * 2 - 1;
  return values;
}

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** max |actual − expected| over max |expected|: elementwise error relative to the gradient's scale. */
function relativeError(actual: Float32Array, expected: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return scale === 0 ? diff : diff / scale;
}

/** Runs `f` on cpu and on wasm and returns each backend's outputs as arrays, leaving wasm active. */
async function onBothBackends(f: () => tf.Tensor[]): Promise<{ cpu: Float32Array[]; wasm: Float32Array[]; shapes: number[][] }> {
  const results: Record<string, Float32Array[]> = {};
  let shapes: number[][] = [];
  for (const backend of ['cpu', 'wasm'] as const) {
    await tf.setBackend(backend);
    const outs = f();
    results[backend] = await Promise.all(outs.map(async (t) => (await t.data()) as Float32Array));
    shapes = outs.map((t) => t.shape);
    tf.dispose(outs);
  }
  return { cpu: results.cpu, wasm: results.wasm, shapes };
}

type Pad = 'same' | 'valid' | [[0, 0], [number, number], [number, number], [0, 0]];
interface ConvCase {
  x: [number, number, number, number];
  filter: [number, number, number, number];
  strides: number | [number, number];
  pad: Pad;
}

const convCases: ConvCase[] = [
  // The zoo CNN's two layers.
  { x: [3, 28, 28, 1], filter: [5, 5, 1, 32], strides: 1, pad: 'same' },
  { x: [2, 14, 14, 32], filter: [5, 5, 32, 64], strides: 1, pad: 'same' },
  // Batch 1, odd sizes, stride 2 with 'same' and 'valid', kernel larger than the stride.
  { x: [1, 9, 7, 3], filter: [3, 3, 3, 4], strides: 2, pad: 'same' },
  { x: [1, 9, 7, 3], filter: [3, 3, 3, 4], strides: 2, pad: 'valid' },
  // A stride that leaves the last row and column unread by the forward pass.
  { x: [2, 8, 8, 2], filter: [3, 3, 2, 5], strides: 2, pad: 'valid' },
  { x: [2, 10, 11, 1], filter: [4, 3, 1, 2], strides: [2, 3], pad: 'same' },
  { x: [1, 5, 5, 1], filter: [5, 5, 1, 1], strides: 1, pad: 'valid' },
  { x: [3, 13, 6, 2], filter: [2, 4, 2, 3], strides: 1, pad: 'same' },
  { x: [2, 7, 6, 3], filter: [2, 2, 3, 3], strides: 1, pad: [[0, 0], [1, 2], [0, 3], [0, 0]] },
  { x: [2, 7, 6, 3], filter: [3, 3, 3, 3], strides: 2, pad: [[0, 0], [1, 2], [0, 3], [0, 0]] },
];

test.serial('registering is idempotent and leaves the cnn no kernel short on wasm', (t) => {
  const before = tf.getKernel(tf.Conv2DBackpropFilter, 'wasm');
  t.truthy(before);
  registerWasmTrainingKernels();
  t.is(tf.getKernel(tf.Conv2DBackpropFilter, 'wasm'), before);
  t.deepEqual(missingTrainingKernels(cnn, 'wasm'), []);
});

test.serial('conv2d gradients on wasm match the cpu backend', async (t) => {
  for (const [i, c] of convCases.entries()) {
    const xValues = randomValues(size(c.x), 10 + i);
    const filterValues = randomValues(size(c.filter), 20 + i);
    const { cpu, wasm, shapes } = await onBothBackends(() => {
      const x = tf.tensor4d(xValues, c.x);
      const filter = tf.tensor4d(filterValues, c.filter);
      const y = tf.conv2d(x, filter, c.strides, c.pad);
      const dy = tf.tensor(randomValues(y.size, 30 + i), y.shape);
      const [dx, dFilter] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.strides, c.pad))([x, filter], dy);
      tf.dispose([x, filter, y, dy]);
      return [dFilter, dx];
    });
    const label = `x ${c.x.join('×')}, filter ${c.filter.join('×')}, strides ${String(c.strides)}, pad ${JSON.stringify(c.pad)}`;
    t.deepEqual(shapes[0], c.filter, label);
    t.true(relativeError(wasm[0], cpu[0]) <= TOLERANCE, `filter gradient, ${label}: relative error ${relativeError(wasm[0], cpu[0])}`);
    t.true(relativeError(wasm[1], cpu[1]) <= TOLERANCE, `input gradient, ${label}: relative error ${relativeError(wasm[1], cpu[1])}`);
  }
});

test.serial('the rewritten kernels free every intermediate', (t) => {
  const backend = tf.backend() as tf.KernelBackend & { numDataIds(): number };
  const x = tf.tensor4d(randomValues(2 * 8 * 8 * 2, 1), [2, 8, 8, 2]);
  const filter = tf.tensor4d(randomValues(3 * 3 * 2 * 5, 2), [3, 3, 2, 5]);
  const a = tf.tensor2d(randomValues(6 * 4, 3), [6, 4]);
  const b = tf.tensor2d(randomValues(6 * 5, 4), [6, 5]);
  const tensors = tf.memory().numTensors;
  const dataIds = backend.numDataIds();
  for (const strides of [1, 2]) {
    tf.tidy(() => {
      tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.maxPool(tf.conv2d(p as tf.Tensor4D, q as tf.Tensor4D, strides, 'valid'), 2, 2, 'valid'))([x, filter]);
      tf.matMul(a, b, true, false);
      tf.matMul(b, a, true, false);
      tf.matMul(b, a.transpose(), true, true);
      tf.matMul(a.transpose(), b.transpose(), false, true);
      tf.sum(x, [0, 1, 2]);
    });
  }
  t.is(tf.memory().numTensors, tensors);
  t.is(backend.numDataIds(), dataIds);
  tf.dispose([x, filter, a, b]);
});

test.serial('matMul with transposed operands on wasm matches the cpu backend', async (t) => {
  const cases: [number[], number[], boolean, boolean][] = [
    [[8, 31], [8, 17], true, false], // a Dense layer's kernel gradient, xᵀ·dy
    [[8, 17], [31, 17], false, true], // its input gradient, dy·Wᵀ
    [[5, 7], [9, 5], true, true],
    [[1, 7, 5], [1, 7, 3], true, false],
    [[2, 4, 7], [2, 9, 7], false, true], // batched: left to the backend's own kernel
    [[3, 1], [3, 1], true, false],
  ];
  for (const [i, [aShape, bShape, transposeA, transposeB]] of cases.entries()) {
    const aValues = randomValues(size(aShape), 40 + i);
    const bValues = randomValues(size(bShape), 50 + i);
    const { cpu, wasm, shapes } = await onBothBackends(() => [tf.matMul(tf.tensor(aValues, aShape), tf.tensor(bValues, bShape), transposeA, transposeB)]);
    const label = `${aShape.join('×')}${transposeA ? 'ᵀ' : ''} · ${bShape.join('×')}${transposeB ? 'ᵀ' : ''} → ${shapes[0].join('×')}`;
    t.true(relativeError(wasm[0], cpu[0]) <= TOLERANCE, `${label}: relative error ${relativeError(wasm[0], cpu[0])}`);
  }
});

test.serial('sums on wasm match the cpu backend', async (t) => {
  const cases: [number[], number | number[], boolean][] = [
    [[4, 6, 6, 5], [0, 1, 2], false], // a conv bias gradient
    [[4, 6, 6, 5], [2, 0, 1], true],
    [[7, 3], 0, false], // a Dense bias gradient
    [[7, 3], [0], true],
    [[4, 6, 5], [1, 2], false], // not over leading axes: the backend's own kernel
    [[9], 0, false],
  ];
  for (const [i, [shape, axis, keepDims]] of cases.entries()) {
    const values = randomValues(size(shape), 80 + i);
    const { cpu, wasm, shapes } = await onBothBackends(() => [tf.sum(tf.tensor(values, shape), axis, keepDims)]);
    const expected = tf.tidy(() => tf.sum(tf.zeros(shape), axis, keepDims).shape);
    const label = `sum of ${shape.join('×')} over ${String(axis)}${keepDims ? ', keepDims' : ''}`;
    t.deepEqual(shapes[0], expected, label);
    t.true(relativeError(wasm[0], cpu[0]) <= TOLERANCE, `${label}: relative error ${relativeError(wasm[0], cpu[0])}`);
  }
});

test.serial('maxPool gradients on wasm match the cpu backend, ties and negative windows included', async (t) => {
  const cases: { x: [number, number, number, number]; filter: number | [number, number]; strides: number | [number, number]; pad: 'same' | 'valid' }[] = [
    { x: [2, 28, 28, 4], filter: 2, strides: 2, pad: 'valid' },
    { x: [1, 7, 9, 3], filter: 3, strides: 2, pad: 'same' },
    { x: [2, 7, 9, 3], filter: 3, strides: 1, pad: 'same' },
    { x: [1, 5, 5, 2], filter: 2, strides: 1, pad: 'valid' },
    { x: [2, 9, 8, 1], filter: [3, 2], strides: [2, 3], pad: 'same' },
  ];
  for (const [i, c] of cases.entries()) {
    for (const integers of [false, true]) {
      const xValues = randomValues(size(c.x), 60 + i, integers);
      const { cpu, wasm } = await onBothBackends(() => {
        const x = tf.tensor4d(xValues, c.x);
        const y = tf.maxPool(x, c.filter, c.strides, c.pad);
        const dy = tf.tensor(randomValues(y.size, 70 + i), y.shape);
        const dx = tf.grad((p: tf.Tensor) => tf.maxPool(p as tf.Tensor4D, c.filter, c.strides, c.pad))(x, dy);
        tf.dispose([x, y, dy]);
        return [dx];
      });
      const label = `x ${c.x.join('×')}, filter ${String(c.filter)}, strides ${String(c.strides)}, pad ${c.pad}${integers ? ', with ties' : ''}`;
      t.true(relativeError(wasm[0], cpu[0]) <= TOLERANCE, `${label}: relative error ${relativeError(wasm[0], cpu[0])}`);
    }
  }
});

function randomImages(n: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const features = new Float32Array(n * 28 * 28);
  for (let i = 0; i < features.length; i++) features[i] = rng.uniform();
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) labels[i] = rng.int(10);
  return { name: 'random', featureShape: [28, 28, 1], numClasses: 10, numExamples: n, features, labels };
}

test.serial('the cnn trains on wasm without falling back to cpu', async (t) => {
  const logs: string[] = [];
  t.is(await ensureBackendFor(cnn, { log: (m) => logs.push(m) }), 'wasm');
  t.deepEqual(logs, []);

  const data = randomImages(8, 5);
  const base = initialWeights(cnn, 3);
  const options = { spec: cnn, baseWeights: base, data, batchSize: 8, learningRate: 0.05, seed: 7 };
  // One batch per epoch, so an epoch's loss is the loss before that epoch's step.
  const first = await trainLocally({ ...options, epochs: 1 });
  let result: Awaited<ReturnType<typeof trainLocally>> | undefined;
  const info = await tf.profile(async () => {
    result = await trainLocally({ ...options, epochs: 6 });
    return [];
  });
  if (!result) throw new Error('training did not run');
  t.is(tf.getBackend(), 'wasm');
  t.true(result.weights.every(Number.isFinite));
  t.true(result.metrics.loss < first.metrics.loss, `loss ${first.metrics.loss} → ${result.metrics.loss}`);

  const used = [...new Set(info.kernelNames)].filter((k) => tf.getKernel(k, 'wasm') !== undefined);
  t.true(used.includes(tf.Conv2DBackpropFilter));
  const listed = new Set(trainingKernels(cnn));
  t.deepEqual(
    used.filter((k) => !listed.has(k)),
    [],
  );
});
