// Arithmetic cost of a model, from its declarative layer shapes: what the
// training benchmark quotes against the machine's peak, and what a node uses
// to judge whether a batch is worth splitting across threads.
import type { JsonObject, JsonValue, ModelSpec } from './spec.js';

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
