// The model zoo: the models an experiment file can name. The aggregator sends
// a zoo model's topology to nodes as JSON, and a node builds it only after
// core/model/spec.ts has checked it against the layer allowlist, so a node
// never runs code it was sent.
//
// Adding a model is one file in core/model/zoo/ and one line in `zooModels`:
// the experiment schema's `model` field, modelSpec and the check of a
// received topology's name all read the list.
import { z } from 'zod';
import { ModelSpecError, validateSpec, type LayerJson, type ModelSpec, type SequentialTopology } from './spec.js';
import { cnn } from './zoo/cnn.js';
import { logreg } from './zoo/logreg.js';
import { twoNN } from './zoo/two-nn.js';
import type { ModelInput } from './zoo/zoo-model.js';

export type { ModelInput, ZooModel } from './zoo/zoo-model.js';

/** Every zoo model, in the order the schema and messages list them. */
export const zooModels = [twoNN, cnn, logreg] as const;

export type ModelName = (typeof zooModels)[number]['name'];

const modelNames = zooModels.map((model) => model.name) as [ModelName, ...ModelName[]];

export const modelNameSchema = z.enum(modelNames);

/** Zoo topologies are named `crowdfl_<model name>`; a node trains no other. */
const TOPOLOGY_PREFIX = 'crowdfl_';

// Callers outside TypeScript (JSON, the wire) can pass any string.
export function zooModel(name: string): (typeof zooModels)[number] | undefined {
  return zooModels.find((model) => model.name === name);
}

/** "2nn, cnn or logreg" */
function choiceOf(names: readonly string[]): string {
  return names.length === 1 ? names[0] : `${names.slice(0, -1).join(', ')} or ${names[names.length - 1]}`;
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

function withInputShape(layers: LayerJson[], featureShape: readonly number[]): LayerJson[] {
  const [first, ...rest] = layers;
  return [{ class_name: first.class_name, config: { ...first.config, batch_input_shape: [null, ...featureShape] } }, ...rest];
}

/**
 * The topology of a zoo model for inputs of `featureShape` and `numClasses`
 * classes. Pure data; build it with core/model/build.ts buildModel.
 */
export function modelSpec(name: ModelName, input: ModelInput): ModelSpec {
  checkInput(name, input);
  const model = zooModel(name);
  if (!model) throw new RangeError(`unknown model ${String(name)}; choose ${choiceOf(modelNames)}`);
  return {
    name,
    topology: {
      class_name: 'Sequential',
      config: { name: `${TOPOLOGY_PREFIX}${name}`, layers: withInputShape(model.layers(input), input.featureShape) },
    },
  };
}

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
  const model =
    typeof modelName === 'string' && modelName.startsWith(TOPOLOGY_PREFIX) ? zooModel(modelName.slice(TOPOLOGY_PREFIX.length)) : undefined;
  if (!model) {
    throw new ModelSpecError(
      `model_json describes model ${JSON.stringify(modelName ?? null)}; nodes train zoo models only (${modelNames.map((n) => `${TOPOLOGY_PREFIX}${n}`).join(', ')})`,
    );
  }
  const spec: ModelSpec = { name: model.name, topology };
  validateSpec(spec);
  return spec;
}
