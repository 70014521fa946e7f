// Keras JSON for the layers the zoo models are made of, in the full form Keras
// writes (nulls spelled out), so a topology reads the same as one Keras saved.
import type { JsonObject, LayerJson } from '../spec.js';

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

export function dense(name: string, units: number, activation: string): LayerJson {
  return {
    class_name: 'Dense',
    config: { ...weightedLayer(name, activation), units },
  };
}

export function conv2d(name: string, filters: number, kernel: number, activation: string): LayerJson {
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

export function maxPool(name: string, size: number): LayerJson {
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

export function flatten(name: string): LayerJson {
  return { class_name: 'Flatten', config: { name, trainable: true, dtype: 'float32' } };
}

export function reshape(name: string, targetShape: number[]): LayerJson {
  return { class_name: 'Reshape', config: { name, trainable: true, dtype: 'float32', target_shape: targetShape } };
}

/** A Flatten layer in front of Dense layers, unless the input is flat already. */
export function flattenUnlessFlat(featureShape: readonly number[]): LayerJson[] {
  return featureShape.length === 1 ? [] : [flatten('flatten')];
}
