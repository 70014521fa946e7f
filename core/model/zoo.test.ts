import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../backend.js';
import { evaluate } from './evaluate.js';
import { buildModel, getFlatWeights, glorotLimit, initialWeights, setFlatWeights } from './build.js';
import { ModelSpecError, numOutputs, numParams, outputsProbabilities, weightManifest, type LayerJson, type ModelSpec } from './spec.js';
import { modelNameSchema, modelSpec, parseModelJson, zooModels, type ModelName } from './zoo.js';
import type { Dataset } from '../dataset.js';
import { sameBits } from '../../test/support/training-data.js';

const mnistInput = { featureShape: [28, 28, 1], numClasses: 10 } as const;

test.before(async () => {
  await initBackend('wasm', { log: () => {} });
});

test('zoo models have the parameter counts of McMahan et al.', async (t) => {
  t.is(numParams(modelSpec('2nn', mnistInput)), 199_210);
  t.is(numParams(modelSpec('cnn', mnistInput)), 1_663_370);
  t.is(numParams(modelSpec('logreg', mnistInput)), 784 * 10 + 10);
  t.is(numParams(modelSpec('logreg', { featureShape: [60], numClasses: 10 })), 610);
  // The same counts from tfjs itself, not only from our shape inference.
  for (const name of ['2nn', 'cnn', 'logreg'] as const) {
    const spec = modelSpec(name, mnistInput);
    const model = await buildModel(spec);
    t.is(model.countParams(), numParams(spec), name);
    model.dispose();
  }
});

test('every registered zoo model is a name in modelNameSchema, builds, outputs logits and comes back through parseModelJson', async (t) => {
  // The schema lists exactly the registry, in its order.
  t.deepEqual([...modelNameSchema.options], zooModels.map((model) => model.name));
  for (const { name } of zooModels) {
    t.is(modelNameSchema.parse(name), name);
    for (const input of [mnistInput, { featureShape: [784], numClasses: 3 }]) {
      const spec = modelSpec(name, input);
      t.is(spec.topology.config.name, `crowdfl_${name}`);
      t.is(numOutputs(spec), input.numClasses, name);
      t.false(outputsProbabilities(spec), `${name} ends in logits; the softmax is the loss's`);
      const model = await buildModel(spec);
      t.is(model.countParams(), numParams(spec), name);
      model.dispose();
      const parsed = parseModelJson(JSON.stringify(spec.topology));
      t.is(parsed.name, name);
      t.deepEqual(parsed.topology, spec.topology);
    }
  }
  t.throws(() => modelSpec('mlp' as ModelName, mnistInput), { instanceOf: RangeError, message: 'unknown model mlp; choose 2nn, cnn or logreg' });
  t.throws(() => parseModelJson(JSON.stringify({ class_name: 'Sequential', config: { name: 'crowdfl_mlp', layers: [] } })), {
    instanceOf: ModelSpecError,
    message: 'model_json describes model "crowdfl_mlp"; nodes train zoo models only (crowdfl_2nn, crowdfl_cnn, crowdfl_logreg)',
  });
});

test('the cnn accepts flat or 2-D images by reshaping them', (t) => {
  t.is(numParams(modelSpec('cnn', { featureShape: [784], numClasses: 10 })), 1_663_370);
  t.is(numParams(modelSpec('cnn', { featureShape: [28, 28], numClasses: 10 })), 1_663_370);
  t.throws(() => modelSpec('cnn', { featureShape: [60], numClasses: 10 }), { message: /image inputs/ });
});

test('the manifest lists weights in getWeights() order with their shapes', async (t) => {
  for (const name of ['2nn', 'cnn', 'logreg'] as const) {
    const spec = modelSpec(name, mnistInput);
    const manifest = weightManifest(spec);
    const model = await buildModel(spec);
    t.deepEqual(
      model.weights.map((w) => w.originalName),
      manifest.map((w) => w.name),
      name,
    );
    t.deepEqual(
      model.getWeights().map((w) => w.shape),
      manifest.map((w) => w.shape),
      name,
    );
    t.true(manifest.every((w) => w.dtype === 'float32'));
    model.dispose();
  }
  t.deepEqual(
    weightManifest(modelSpec('2nn', mnistInput)).map((w) => w.name),
    ['hidden1/kernel', 'hidden1/bias', 'hidden2/kernel', 'hidden2/bias', 'logits/kernel', 'logits/bias'],
  );
});

test('initial weights are a pure function of the seed: Glorot-uniform kernels, zero biases', (t) => {
  for (const name of ['2nn', 'cnn'] as const) {
    const spec = modelSpec(name, mnistInput);
    const a = initialWeights(spec, 42);
    const b = initialWeights(spec, 42);
    const c = initialWeights(spec, 43);
    t.is(a.length, numParams(spec));
    t.true(sameBits(a, b), `${name}: same seed, same bits`);
    t.false(sameBits(a, c), `${name}: another seed, other weights`);
    let offset = 0;
    for (const w of weightManifest(spec)) {
      const size = w.shape.reduce((x, y) => x * y, 1);
      const values = a.subarray(offset, offset + size);
      offset += size;
      if (w.name.endsWith('/bias')) {
        t.true(values.every((v) => v === 0), `${w.name} is zero`);
        continue;
      }
      const limit = glorotLimit(w.shape);
      let max = 0;
      let sum = 0;
      for (const v of values) {
        max = Math.max(max, Math.abs(v));
        sum += v;
      }
      t.true(max <= Math.fround(limit), `${w.name}: |w| ≤ ${limit}`);
      // Uniform over [-limit, limit]: with thousands of draws the extremes come close to the bound.
      t.true(max > 0.95 * limit, `${w.name}: fills the range`);
      t.true(Math.abs(sum / size) < 0.05 * limit, `${w.name}: centred`);
    }
  }
  // Fans include the receptive field for conv kernels: [5,5,1,32] → fan_in 25, fan_out 800.
  t.is(glorotLimit([5, 5, 1, 32]), Math.sqrt(6 / (25 + 800)));
  t.is(glorotLimit([784, 200]), Math.sqrt(6 / (784 + 200)));
});

test('flat weights round-trip through a model, in manifest layout', async (t) => {
  const spec = modelSpec('2nn', mnistInput);
  const model = await buildModel(spec);
  const flat = initialWeights(spec, 7);
  setFlatWeights(model, flat);
  // A later write to the caller's buffer must not reach the model.
  const expected = flat.slice();
  flat[0] += 1;
  t.true(sameBits(getFlatWeights(model), expected));
  const perTensor = model.getWeights();
  t.deepEqual(Array.from(perTensor[2].dataSync().subarray(0, 5)), Array.from(expected.subarray(784 * 200 + 200, 784 * 200 + 205)));
  t.throws(() => setFlatWeights(model, new Float32Array(10)), { instanceOf: RangeError, message: /199210 parameters/ });
  model.dispose();
});

function withLayer(spec: ModelSpec, index: number, layer: LayerJson): ModelSpec {
  const layers = spec.topology.config.layers.slice();
  layers.splice(index, 0, layer);
  return { name: spec.name, topology: { ...spec.topology, config: { ...spec.topology.config, layers } } };
}

test('layer classes outside the allowlist are refused with the reason', async (t) => {
  const spec = modelSpec('2nn', mnistInput);
  const lambda = withLayer(spec, 1, { class_name: 'Lambda', config: { name: 'evil', function: 'process.exit()' } });
  await t.throwsAsync(buildModel(lambda), { instanceOf: ModelSpecError, message: /class "Lambda".*refuse.*allowed layer classes: .*Dense/ });
  const unknown = withLayer(spec, 1, { class_name: 'MyCustomLayer', config: { name: 'x' } });
  await t.throwsAsync(buildModel(unknown), { instanceOf: ModelSpecError, message: /MyCustomLayer/ });
  const regularised = modelSpec('logreg', mnistInput);
  regularised.topology.config.layers[1].config.kernel_regularizer = { class_name: 'L1L2', config: { l1: 0, l2: 0.01 } };
  t.throws(() => weightManifest(regularised), { instanceOf: ModelSpecError, message: /kernel_regularizer is not supported/ });
  const camel = modelSpec('logreg', mnistInput);
  camel.topology.config.layers[1].config.useBias = false;
  t.throws(() => numParams(camel), { instanceOf: ModelSpecError, message: /snake_case/ });
});

test('parseModelJson accepts what the aggregator sends and refuses the rest', (t) => {
  const spec = modelSpec('cnn', mnistInput);
  const parsed = parseModelJson(JSON.stringify(spec.topology));
  t.is(parsed.name, 'cnn');
  t.deepEqual(parsed.topology, spec.topology);
  t.throws(() => parseModelJson('{'), { instanceOf: ModelSpecError, message: /not valid JSON/ });
  const evil = withLayer(spec, 2, { class_name: 'Lambda', config: { name: 'evil' } });
  t.throws(() => parseModelJson(JSON.stringify(evil.topology)), { instanceOf: ModelSpecError, message: /Lambda/ });
  t.throws(() => parseModelJson(JSON.stringify({ ...spec.topology, config: { ...spec.topology.config, name: 'other' } })), {
    message: /zoo models only/,
  });
});

// A 3-feature, 3-class logistic regression small enough to compute by hand.
const tinyKernel = [
  [0.5, -1, 0.25],
  [2, 0, -0.5],
  [-1, 1, 1.5],
];
const tinyBias = [0.1, -0.2, 0.3];
const tinyData: Dataset = {
  name: 'tiny',
  featureShape: [3],
  numClasses: 3,
  numExamples: 4,
  features: Float32Array.from([1, 0, 0, 0, 1, 0, 0.5, -1, 2, -3, 0.25, 1]),
  labels: Uint8Array.from([0, 2, 2, 1]),
};

function handEvaluation(): { loss: number; accuracy: number } {
  let loss = 0;
  let correct = 0;
  for (let i = 0; i < tinyData.numExamples; i++) {
    const x = tinyData.features.subarray(i * 3, i * 3 + 3);
    const z = [0, 1, 2].map((k) => tinyBias[k] + x[0] * tinyKernel[0][k] + x[1] * tinyKernel[1][k] + x[2] * tinyKernel[2][k]);
    const logSumExp = Math.log(z.reduce((s, v) => s + Math.exp(v), 0));
    loss += logSumExp - z[tinyData.labels[i]];
    if (z.indexOf(Math.max(...z)) === tinyData.labels[i]) correct++;
  }
  return { loss: loss / tinyData.numExamples, accuracy: correct / tinyData.numExamples };
}

test('evaluate matches a hand computation, across a partial last batch', async (t) => {
  const spec = modelSpec('logreg', { featureShape: [3], numClasses: 3 });
  const weights = Float32Array.from([...tinyKernel.flat(), ...tinyBias]);
  const expected = handEvaluation();
  t.is(expected.accuracy, 0.75);
  for (const batchSize of [1000, 3, 1]) {
    const result = await evaluate(spec, weights, tinyData, batchSize);
    t.is(result.examples, 4);
    t.is(result.accuracy, expected.accuracy);
    t.true(Math.abs(result.loss - expected.loss) < 1e-5, `batch ${batchSize}: ${result.loss} vs ${expected.loss}`);
  }
});

test('a model ending in softmax probabilities evaluates to the same loss as its logits twin', async (t) => {
  const logits = modelSpec('logreg', { featureShape: [3], numClasses: 3 });
  const probabilities = withLayer(logits, 1, { class_name: 'Activation', config: { name: 'probabilities', activation: 'softmax' } });
  const weights = Float32Array.from([...tinyKernel.flat(), ...tinyBias]);
  const a = await evaluate(logits, weights, tinyData);
  const b = await evaluate(probabilities, weights, tinyData);
  t.is(a.accuracy, b.accuracy);
  t.true(Math.abs(a.loss - b.loss) < 1e-5);
});

// Serial: AVA runs serial tests before the concurrent ones, so no other test's tensors come and go meanwhile.
test.serial('evaluate reuses its model and leaves no tensors behind', async (t) => {
  const spec = modelSpec('logreg', { featureShape: [3], numClasses: 3 });
  const weights = Float32Array.from([...tinyKernel.flat(), ...tinyBias]);
  await evaluate(spec, weights, tinyData, 2);
  const before = tf.memory().numTensors;
  for (let i = 0; i < 5; i++) await evaluate(spec, weights, tinyData, 2);
  t.is(tf.memory().numTensors, before);
});
