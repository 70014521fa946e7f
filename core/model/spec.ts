// A model as data, and the checks a node runs before it builds anything: a
// ModelSpec is a Keras/tfjs Sequential "modelTopology" (the JSON
// tf.models.modelFromJSON reads), and validateSpec holds it to a layer
// allowlist and shape rules, so a node never runs code it was sent.
//
// The manifest is derived from the topology here, in plain TypeScript (shape
// inference over the allowlisted layers), so the aggregator can size, hash and
// initialise a model without building it; core/model/build.ts cross-checks the
// result against what tfjs actually built.
import { describeShape, product } from './shapes.js';

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

/** A model to train: its name (for messages) and its topology. */
export interface ModelSpec {
  readonly name: string;
  readonly topology: SequentialTopology;
}

export interface WeightSpec {
  name: string;
  shape: number[];
  dtype: 'float32';
}

export class ModelSpecError extends Error {
  override name = 'ModelSpecError';
}

/** Layer classes a node will instantiate from a topology it was sent. */
export const ALLOWED_LAYER_CLASSES: readonly string[] = [
  'InputLayer',
  'Dense',
  'Conv2D',
  'MaxPooling2D',
  'AveragePooling2D',
  'Flatten',
  'Dropout',
  'Activation',
  'Reshape',
];

export const ALLOWED_ACTIVATIONS: readonly string[] = ['linear', 'relu', 'sigmoid', 'tanh', 'softmax'];

/** Initializers a layer may name; they run in tfjs's own code with numeric arguments only. */
export const ALLOWED_INITIALIZERS: readonly string[] = ['GlorotUniform', 'GlorotNormal', 'HeNormal', 'HeUniform', 'Zeros', 'Ones', 'RandomNormal', 'RandomUniform', 'TruncatedNormal', 'Constant'];

// Every config key a layer class may carry. Anything else is refused: a key
// the shape rules here do not read could still change what tfjs builds.
const COMMON_KEYS = ['name', 'trainable', 'dtype', 'batch_input_shape', 'input_shape', 'batch_size', 'input_dtype'];
const WEIGHTED_KEYS = ['activation', 'use_bias', 'kernel_initializer', 'bias_initializer', 'kernel_regularizer', 'bias_regularizer', 'activity_regularizer', 'kernel_constraint', 'bias_constraint'];
const WINDOW_KEYS = ['strides', 'padding', 'data_format'];
const LAYER_KEYS: Record<string, readonly string[]> = {
  InputLayer: [...COMMON_KEYS, 'sparse', 'ragged'],
  Dense: [...COMMON_KEYS, ...WEIGHTED_KEYS, 'units'],
  Conv2D: [...COMMON_KEYS, ...WEIGHTED_KEYS, ...WINDOW_KEYS, 'filters', 'kernel_size', 'dilation_rate', 'groups'],
  MaxPooling2D: [...COMMON_KEYS, ...WINDOW_KEYS, 'pool_size'],
  AveragePooling2D: [...COMMON_KEYS, ...WINDOW_KEYS, 'pool_size'],
  Flatten: [...COMMON_KEYS, 'data_format'],
  Dropout: [...COMMON_KEYS, 'rate', 'noise_shape', 'seed'],
  Activation: [...COMMON_KEYS, 'activation'],
  Reshape: [...COMMON_KEYS, 'target_shape'],
};
const TOPOLOGY_KEYS = ['class_name', 'config', 'keras_version', 'backend'];
const SEQUENTIAL_KEYS = ['name', 'layers', 'trainable'];

/**
 * Sizes no zoo-like model comes near; past them a topology is refused as
 * absurd before anything is allocated (a node's own caps are usually lower).
 */
export const MAX_PARAMETERS = 100_000_000;
export const MAX_ACTIVATIONS_PER_EXAMPLE = 50_000_000;
const MAX_DIMENSION = 1 << 20;

// The custom training loop adds no regularisation losses and applies no
// constraints, so a topology asking for them would silently train a different
// model; refuse it instead.
const UNSUPPORTED_WHEN_SET = [
  'kernel_regularizer',
  'bias_regularizer',
  'activity_regularizer',
  'kernel_constraint',
  'bias_constraint',
] as const;

interface LayerInfo {
  className: string;
  name: string;
  activation: string | undefined;
  /** Kernel first, then bias: the order tfjs creates (and getWeights returns) them. */
  weights: { name: string; shape: number[]; role: 'kernel' | 'bias' }[];
}

interface Analysis {
  layers: LayerInfo[];
  inputShape: number[];
  outputShape: number[];
  manifest: WeightSpec[];
  roles: ('kernel' | 'bias')[];
  numParams: number;
  /** Values every layer outputs for one example, summed: what a batch's activations cost per example. */
  activationsPerExample: number;
  /** True when the last layer already applies softmax, so outputs are probabilities, not logits. */
  probabilities: boolean;
}

const analysisCache = new Map<string, Analysis>();

/** The topology as one string: what identifies a model to the analysis cache and the model pool. */
export function specKey(spec: ModelSpec): string {
  return JSON.stringify(spec.topology);
}

function isObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads `key` as one positive integer or a pair of them (Keras allows both). */
function pair(config: JsonObject, key: string, fallback: [number, number] | undefined, where: string): [number, number] {
  const v = config[key];
  if (v === undefined || v === null) {
    if (fallback) return fallback;
    throw new ModelSpecError(`${where}: missing ${key}`);
  }
  const ok = (x: JsonValue): x is number => typeof x === 'number' && Number.isInteger(x) && x > 0;
  if (ok(v)) return [v, v];
  if (Array.isArray(v) && v.length === 2 && ok(v[0]) && ok(v[1])) return [v[0], v[1]];
  throw new ModelSpecError(`${where}: ${key} must be a positive integer or a pair of them, got ${JSON.stringify(v)}`);
}

function positiveInt(config: JsonObject, key: string, where: string): number {
  const v = config[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw new ModelSpecError(`${where}: ${key} must be a positive integer, got ${JSON.stringify(v ?? null)}`);
  }
  return v;
}

function optionalString(config: JsonObject, key: string, allowed: readonly string[], fallback: string, where: string): string {
  const v = config[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'string' || !allowed.includes(v)) {
    throw new ModelSpecError(`${where}: ${key} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function useBias(config: JsonObject, where: string): boolean {
  const v = config.use_bias;
  if (v === undefined || v === null) return true;
  if (typeof v !== 'boolean') throw new ModelSpecError(`${where}: use_bias must be true or false`);
  return v;
}

/** Spatial output size of a conv/pool window, as tf.conv2d / tf.maxPool compute it. */
function windowOutput(size: number, window: number, stride: number, dilation: number, padding: string): number {
  const effective = (window - 1) * dilation + 1;
  return padding === 'same' ? Math.ceil(size / stride) : Math.ceil((size - effective + 1) / stride);
}

function batchInputShape(config: JsonObject, where: string): number[] | undefined {
  let dims: JsonValue | undefined;
  if (config.batch_input_shape !== undefined && config.batch_input_shape !== null) {
    const v = config.batch_input_shape;
    if (!Array.isArray(v) || v.length < 2) throw new ModelSpecError(`${where}: batch_input_shape must be [null, ...dims]`);
    dims = v.slice(1);
  } else if (config.input_shape !== undefined && config.input_shape !== null) {
    dims = config.input_shape;
  } else {
    return undefined;
  }
  if (!Array.isArray(dims) || dims.length === 0 || !dims.every((d) => typeof d === 'number' && Number.isInteger(d) && d > 0)) {
    throw new ModelSpecError(`${where}: the input shape must list positive integer dimensions, got ${JSON.stringify(dims)}`);
  }
  return dims as number[];
}

function analyse(spec: ModelSpec): Analysis {
  const topology: unknown = spec.topology;
  if (!isObject(topology as JsonValue) || (topology as JsonObject).class_name !== 'Sequential') {
    throw new ModelSpecError(`model ${spec.name}: the topology must be a Keras Sequential model ({class_name: 'Sequential', config: {...}})`);
  }
  const config = (topology as JsonObject).config;
  if (!isObject(config) || !Array.isArray(config.layers) || config.layers.length === 0) {
    throw new ModelSpecError(`model ${spec.name}: the topology needs config.layers, a non-empty list of layers`);
  }
  unknownKeys(topology as JsonObject, TOPOLOGY_KEYS, `model ${spec.name}: the topology`);
  unknownKeys(config, SEQUENTIAL_KEYS, `model ${spec.name}: the Sequential config`);
  if (config.trainable === false) {
    throw new ModelSpecError(`model ${spec.name}: the model is marked trainable: false; crowdfl trains every weight`);
  }

  const layers: LayerInfo[] = [];
  let activations = 0;
  let parameters = 0;
  const names = new Set<string>();
  let shape: number[] | undefined;
  let modelInput: number[] = [];
  config.layers.forEach((raw, index) => {
    if (!isObject(raw) || typeof raw.class_name !== 'string' || !isObject(raw.config)) {
      throw new ModelSpecError(`model ${spec.name}: layer #${index + 1} must look like {class_name: string, config: {...}}`);
    }
    const className = raw.class_name;
    const c = raw.config;
    if (!ALLOWED_LAYER_CLASSES.includes(className)) {
      throw new ModelSpecError(
        `model ${spec.name}: layer #${index + 1} has class ${JSON.stringify(className)}, which nodes refuse to build; ` +
          `allowed layer classes: ${ALLOWED_LAYER_CLASSES.join(', ')}`,
      );
    }
    const name = c.name;
    if (typeof name !== 'string' || name.length === 0) {
      // tfjs would invent a process-global name (dense_Dense3), which would make weight names differ between builds.
      throw new ModelSpecError(`model ${spec.name}: layer #${index + 1} (${className}) needs a config.name`);
    }
    if (names.has(name)) throw new ModelSpecError(`model ${spec.name}: two layers are named ${JSON.stringify(name)}`);
    names.add(name);
    const where = `model ${spec.name}, layer ${name} (${className})`;
    unknownKeys(raw, ['class_name', 'config', 'name', 'inbound_nodes'], `${where}: the layer`);
    for (const key of Object.keys(c)) {
      // modelFromJSON camel-cases keys itself, so a camelCase key would reach tfjs
      // while the shape inference here (reading snake_case) missed it.
      if (!/^[a-z0-9_]+$/.test(key)) throw new ModelSpecError(`${where}: config key ${JSON.stringify(key)} is not Keras snake_case`);
    }
    for (const key of UNSUPPORTED_WHEN_SET) {
      if (c[key] !== undefined && c[key] !== null) {
        throw new ModelSpecError(`${where}: ${key} is not supported (the training loop ignores it); set it to null`);
      }
    }
    unknownKeys(c, LAYER_KEYS[className]!, where);
    for (const key of ['kernel_initializer', 'bias_initializer'] as const) checkInitializer(c[key], `${where}: ${key}`);
    if (c.trainable === false) throw new ModelSpecError(`${where}: trainable: false is not supported; crowdfl trains every weight`);
    if (c.dtype !== undefined && c.dtype !== null && c.dtype !== 'float32') {
      throw new ModelSpecError(`${where}: dtype must be float32, got ${JSON.stringify(c.dtype)}`);
    }

    const declared = batchInputShape(c, where);
    if (index === 0) {
      if (!declared) throw new ModelSpecError(`${where}: the first layer must declare batch_input_shape (or input_shape)`);
      shape = declared;
      modelInput = declared;
    } else if (declared && shape && describeShape(declared) !== describeShape(shape)) {
      throw new ModelSpecError(`${where}: declares input shape ${describeShape(declared)} but receives ${describeShape(shape)}`);
    }
    const input = shape as number[];

    let activation: string | undefined;
    const weights: LayerInfo['weights'] = [];
    switch (className) {
      case 'InputLayer':
        break;
      case 'Dense': {
        const units = positiveInt(c, 'units', where);
        activation = optionalString(c, 'activation', ALLOWED_ACTIVATIONS, 'linear', where);
        const inDim = input[input.length - 1];
        weights.push({ name: `${name}/kernel`, shape: [inDim, units], role: 'kernel' });
        if (useBias(c, where)) weights.push({ name: `${name}/bias`, shape: [units], role: 'bias' });
        shape = [...input.slice(0, -1), units];
        break;
      }
      case 'Conv2D': {
        if (input.length !== 3) throw new ModelSpecError(`${where}: needs H×W×C input, receives ${describeShape(input)}`);
        optionalString(c, 'data_format', ['channels_last'], 'channels_last', where);
        const filters = positiveInt(c, 'filters', where);
        const [kh, kw] = pair(c, 'kernel_size', undefined, where);
        const [sh, sw] = pair(c, 'strides', [1, 1], where);
        const [dh, dw] = pair(c, 'dilation_rate', [1, 1], where);
        if ((sh > 1 || sw > 1) && (dh > 1 || dw > 1)) throw new ModelSpecError(`${where}: strides and dilation_rate cannot both exceed 1`);
        const padding = optionalString(c, 'padding', ['same', 'valid'], 'valid', where);
        activation = optionalString(c, 'activation', ALLOWED_ACTIVATIONS, 'linear', where);
        weights.push({ name: `${name}/kernel`, shape: [kh, kw, input[2], filters], role: 'kernel' });
        if (useBias(c, where)) weights.push({ name: `${name}/bias`, shape: [filters], role: 'bias' });
        shape = [windowOutput(input[0], kh, sh, dh, padding), windowOutput(input[1], kw, sw, dw, padding), filters];
        break;
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        if (input.length !== 3) throw new ModelSpecError(`${where}: needs H×W×C input, receives ${describeShape(input)}`);
        optionalString(c, 'data_format', ['channels_last'], 'channels_last', where);
        const [ph, pw] = pair(c, 'pool_size', [2, 2], where);
        const [sh, sw] = pair(c, 'strides', [ph, pw], where);
        const padding = optionalString(c, 'padding', ['same', 'valid'], 'valid', where);
        shape = [windowOutput(input[0], ph, sh, 1, padding), windowOutput(input[1], pw, sw, 1, padding), input[2]];
        break;
      }
      case 'Flatten':
        shape = [product(input)];
        break;
      case 'Dropout': {
        const rate = c.rate;
        if (typeof rate !== 'number' || !(rate >= 0 && rate < 1)) throw new ModelSpecError(`${where}: rate must be in [0, 1)`);
        break;
      }
      case 'Activation':
        activation = optionalString(c, 'activation', ALLOWED_ACTIVATIONS, 'linear', where);
        if (c.activation === undefined) throw new ModelSpecError(`${where}: missing activation`);
        break;
      case 'Reshape': {
        const target = c.target_shape;
        if (!Array.isArray(target) || target.length === 0 || !target.every((d) => typeof d === 'number' && Number.isInteger(d) && (d > 0 || d === -1))) {
          throw new ModelSpecError(`${where}: target_shape must list positive integers (at most one -1)`);
        }
        const dims = target as number[];
        const unknown = dims.filter((d) => d === -1).length;
        const known = product(dims.filter((d) => d !== -1));
        const total = product(input);
        if (unknown > 1 || (unknown === 0 && known !== total) || (unknown === 1 && total % known !== 0)) {
          throw new ModelSpecError(`${where}: cannot reshape ${describeShape(input)} to ${describeShape(dims)}`);
        }
        shape = dims.map((d) => (d === -1 ? total / known : d));
        break;
      }
      default:
        throw new ModelSpecError(`${where}: no shape rule for this class`);
    }
    if (!(shape as number[]).every((d) => Number.isInteger(d) && d > 0)) {
      throw new ModelSpecError(`${where}: output shape ${describeShape(shape as number[])} is empty; the input ${describeShape(input)} is too small`);
    }
    if ((shape as number[]).some((d) => d > MAX_DIMENSION) || weights.some((w) => w.shape.some((d) => d > MAX_DIMENSION))) {
      throw new ModelSpecError(`${where}: a dimension above ${MAX_DIMENSION.toLocaleString('en-US')} is absurd for a model nodes train; refused`);
    }
    parameters += weights.reduce((sum, w) => sum + product(w.shape), 0);
    if (parameters > MAX_PARAMETERS) {
      throw new ModelSpecError(`${where}: the model passes ${MAX_PARAMETERS.toLocaleString('en-US')} parameters here; nodes refuse models that large`);
    }
    layers.push({ className, name, activation, weights });
    activations += product(shape as number[]);
  });

  if (activations + product(modelInput) > MAX_ACTIVATIONS_PER_EXAMPLE) {
    throw new ModelSpecError(`model ${spec.name}: its layers output ${activations.toLocaleString('en-US')} values per example; nodes refuse more than ${MAX_ACTIVATIONS_PER_EXAMPLE.toLocaleString('en-US')}`);
  }
  const outputShape = shape as number[];
  if (outputShape.length !== 1) {
    throw new ModelSpecError(`model ${spec.name}: must output one vector of class scores per example, outputs ${describeShape(outputShape)}`);
  }
  const manifest: WeightSpec[] = [];
  const roles: ('kernel' | 'bias')[] = [];
  for (const layer of layers) {
    for (const w of layer.weights) {
      manifest.push({ name: w.name, shape: w.shape, dtype: 'float32' });
      roles.push(w.role);
    }
  }
  const last = layers[layers.length - 1];
  return {
    layers,
    inputShape: modelInput,
    outputShape,
    manifest,
    roles,
    numParams: manifest.reduce((sum, w) => sum + product(w.shape), 0),
    activationsPerExample: activations + product(modelInput),
    probabilities: last.activation === 'softmax',
  };
}

function unknownKeys(object: JsonObject, allowed: readonly string[], where: string): void {
  const unknown = Object.keys(object).filter((k) => !allowed.includes(k));
  if (unknown.length) {
    throw new ModelSpecError(`${where} has field${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')} that nodes do not accept; allowed: ${allowed.join(', ')}`);
  }
}

function checkInitializer(value: JsonValue | undefined, where: string): void {
  if (value === undefined || value === null) return;
  if (!isObject(value) || typeof value.class_name !== 'string' || !ALLOWED_INITIALIZERS.includes(value.class_name)) {
    throw new ModelSpecError(`${where} must be one of ${ALLOWED_INITIALIZERS.join(', ')}, got ${JSON.stringify(value).slice(0, 100)}`);
  }
  const config = value.config ?? {};
  if (!isObject(config) || !Object.values(config).every((v) => v === null || typeof v === 'number' || typeof v === 'string')) {
    throw new ModelSpecError(`${where}: an initializer's config holds numbers (and a mode or distribution name) only`);
  }
  unknownKeys(value, ['class_name', 'config'], where);
}

function analysis(spec: ModelSpec): Analysis {
  const key = specKey(spec);
  let a = analysisCache.get(key);
  if (!a) {
    a = analyse(spec);
    analysisCache.set(key, a);
  }
  return a;
}

/** Checks a topology against the allowlist and shape rules; throws ModelSpecError with the reason. */
export function validateSpec(spec: ModelSpec): void {
  analysis(spec);
}

/** Weights in the order `model.getWeights()` returns them; names are tfjs' `originalName`s. */
export function weightManifest(spec: ModelSpec): WeightSpec[] {
  return analysis(spec).manifest.map((w) => ({ name: w.name, shape: [...w.shape], dtype: w.dtype }));
}

export function numParams(spec: ModelSpec): number {
  return analysis(spec).numParams;
}

/** Values the layers output for one example, input included (sizes a batch's activations). */
export function activationsPerExample(spec: ModelSpec): number {
  return analysis(spec).activationsPerExample;
}

/** Per-example input shape (without the batch axis). */
export function inputShape(spec: ModelSpec): number[] {
  return [...analysis(spec).inputShape];
}

/** Number of class scores the model outputs. */
export function numOutputs(spec: ModelSpec): number {
  return analysis(spec).outputShape[0];
}

export interface LayerSummary {
  className: string;
  activation: string | undefined;
  /** The layer's weights in manifest order (kernel, then bias if it has one). */
  weights: { shape: number[]; role: 'kernel' | 'bias' }[];
}

/**
 * Layer classes, activations and weight shapes in the topology; backend.ts
 * maps them to kernels, trainer/training/dense-step.ts to a hand-written training step.
 */
export function layerSummary(spec: ModelSpec): LayerSummary[] {
  return analysis(spec).layers.map((l) => ({
    className: l.className,
    activation: l.activation,
    weights: l.weights.map((w) => ({ shape: [...w.shape], role: w.role })),
  }));
}

/** Whether the model's outputs are probabilities (final softmax) rather than logits. */
export function outputsProbabilities(spec: ModelSpec): boolean {
  return analysis(spec).probabilities;
}
