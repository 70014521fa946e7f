// Models are declared as data: Keras/tfjs "modelTopology" JSON, the format
// tf.models.modelFromJSON reads. The aggregator sends this JSON to nodes, and a
// node only instantiates layer classes from an allowlist (see core/model/model.ts),
// so a node never runs code it was sent.
//
// Every zoo model ends in a linear Dense layer that outputs logits; the softmax
// lives in the loss (core/model/model.ts crossEntropy), which is the numerically
// stable form and keeps training and evaluation on one definition.
import { z } from 'zod';
import { ModelSpecError, validateSpec } from './model.js';

export const modelNameSchema = z.enum(['2nn', 'cnn', 'logreg']);
export type ModelName = z.infer<typeof modelNameSchema>;

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/** One layer in Keras JSON form: `{class_name: 'Dense', config: {...}}`. */
export interface LayerJson {
  class_name: string;
  config: JsonObject;
}

/** A Keras/tfjs Sequential model topology, as accepted by tf.models.modelFromJSON. */
export interface SequentialTopology {
  class_name: 'Sequential';
  config: { name: string; layers: LayerJson[] };
}

export interface ModelSpec {
  readonly name: ModelName;
  readonly topology: SequentialTopology;
}

export interface ModelInput {
  readonly featureShape: readonly number[];
  readonly numClasses: number;
}

// Functions rather than shared constants, so no two specs share a mutable object.
const glorotUniform = (): JsonObject => ({ class_name: 'GlorotUniform', config: { seed: null } });
const zeros = (): JsonObject => ({ class_name: 'Zeros', config: {} });

/** The config every layer with a kernel and a bias shares (Keras's full form, nulls spelled out). */
function weightedLayer(name: string, activation: string): JsonObject {
  return {
    name,
    trainable: true,
    dtype: 'float32',
    activation,
    use_bias: true,
    kernel_initializer: glorotUniform(),
    bias_initializer: zeros(),
    kernel_regularizer: null,
    bias_regularizer: null,
    activity_regularizer: null,
    kernel_constraint: null,
    bias_constraint: null,
  };
}

function dense(name: string, units: number, activation: string): LayerJson {
  return {
    class_name: 'Dense',
    config: { ...weightedLayer(name, activation), units },
  };
}

function conv2d(name: string, filters: number, kernel: number, activation: string): LayerJson {
  return {
    class_name: 'Conv2D',
    config: {
      ...weightedLayer(name, activation),
      filters,
      kernel_size: [kernel, kernel],
      strides: [1, 1],
      padding: 'same',
      data_format: 'channels_last',
      dilation_rate: [1, 1],
    },
  };
}

function maxPool(name: string, size: number): LayerJson {
  return {
    class_name: 'MaxPooling2D',
    config: {
      name,
      trainable: true,
      dtype: 'float32',
      pool_size: [size, size],
      strides: [size, size],
      padding: 'valid',
      data_format: 'channels_last',
    },
  };
}

function flatten(name: string): LayerJson {
  return { class_name: 'Flatten', config: { name, trainable: true, dtype: 'float32' } };
}

function reshape(name: string, targetShape: number[]): LayerJson {
  return { class_name: 'Reshape', config: { name, trainable: true, dtype: 'float32', target_shape: targetShape } };
}

function checkInput(name: ModelName, input: ModelInput): void {
  const { featureShape, numClasses } = input;
  if (featureShape.length === 0 || !featureShape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new RangeError(`model ${name}: feature shape must be a non-empty list of positive integers, got [${featureShape.join(', ')}]`);
  }
  if (!Number.isInteger(numClasses) || numClasses < 2) {
    throw new RangeError(`model ${name}: needs at least 2 classes, got ${numClasses}`);
  }
}

/** The CNN convolves H×W×C images; plain H×W or square flat inputs get a channel axis. */
function imageShape(featureShape: readonly number[]): [number, number, number] {
  if (featureShape.length === 3) return [featureShape[0], featureShape[1], featureShape[2]];
  if (featureShape.length === 2) return [featureShape[0], featureShape[1], 1];
  if (featureShape.length === 1) {
    const side = Math.round(Math.sqrt(featureShape[0]));
    if (side * side === featureShape[0]) return [side, side, 1];
  }
  throw new RangeError(
    `model cnn needs image inputs (H×W, H×W×C, or a square number of features), got feature shape [${featureShape.join(', ')}]`,
  );
}

function withInputShape(layers: LayerJson[], featureShape: readonly number[]): LayerJson[] {
  const [first, ...rest] = layers;
  return [{ class_name: first.class_name, config: { ...first.config, batch_input_shape: [null, ...featureShape] } }, ...rest];
}

/**
 * The topology of a zoo model for inputs of `featureShape` and `numClasses`
 * classes. Pure data; build it with core/model/model.ts buildModel.
 */
export function modelSpec(name: ModelName, input: ModelInput): ModelSpec {
  checkInput(name, input);
  const { featureShape, numClasses } = input;
  const flatInput = featureShape.length === 1;
  let layers: LayerJson[];
  switch (name) {
    case '2nn':
      // McMahan et al. 2017, "2NN": two hidden layers of 200 ReLU units.
      layers = [
        ...(flatInput ? [] : [flatten('flatten')]),
        dense('hidden1', 200, 'relu'),
        dense('hidden2', 200, 'relu'),
        dense('logits', numClasses, 'linear'),
      ];
      break;
    case 'cnn': {
      // McMahan et al. 2017, the FedAvg CNN.
      const image = imageShape(featureShape);
      const needsReshape = featureShape.length !== 3;
      layers = [
        ...(needsReshape ? [reshape('to_image', image)] : []),
        conv2d('conv1', 32, 5, 'relu'),
        maxPool('pool1', 2),
        conv2d('conv2', 64, 5, 'relu'),
        maxPool('pool2', 2),
        flatten('flatten'),
        dense('fc1', 512, 'relu'),
        dense('logits', numClasses, 'linear'),
      ];
      break;
    }
    case 'logreg':
      // Multinomial logistic regression: softmax of one affine map.
      layers = [...(flatInput ? [] : [flatten('flatten')]), dense('logits', numClasses, 'linear')];
      break;
    default: {
      const unknown: never = name;
      throw new RangeError(`unknown model ${String(unknown)}; choose 2nn, cnn or logreg`);
    }
  }
  return {
    name,
    topology: {
      class_name: 'Sequential',
      config: { name: `crowdfl_${name}`, layers: withInputShape(layers, featureShape) },
    },
  };
}

const ZOO_NAME = /^crowdfl_(2nn|cnn|logreg)$/;

/**
 * Reads a topology received over the wire (`Task.model_json`, which is
 * `JSON.stringify(spec.topology)`) and checks it against the layer allowlist
 * and shape rules before anything is built. Throws ModelSpecError saying why a
 * topology is refused.
 */
export function parseModelJson(json: string): ModelSpec {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (err) {
    throw new ModelSpecError(`model_json is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ModelSpecError('model_json must be a Keras Sequential topology object');
  }
  const topology = value as SequentialTopology;
  const modelName = typeof topology.config === 'object' && topology.config !== null ? topology.config.name : undefined;
  const match = typeof modelName === 'string' ? ZOO_NAME.exec(modelName) : null;
  if (!match) {
    throw new ModelSpecError(
      `model_json describes model ${JSON.stringify(modelName ?? null)}; nodes train zoo models only (crowdfl_2nn, crowdfl_cnn, crowdfl_logreg)`,
    );
  }
  const spec: ModelSpec = { name: match[1] as ModelName, topology };
  validateSpec(spec);
  return spec;
}
