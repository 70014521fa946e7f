// Summing the threads' contributions of one data-parallel step. Both replica
// kinds (trainer/training/replicas.ts) and the Dense step's own apply
// (trainer/training/dense-step.ts) add them up the same way, so it lives apart
// from both.
import * as tf from '@tensorflow/tfjs';

/** Σ_k parts[k][offset, offset + size) as one tensor of `shape`, added in k order. Call inside a tidy. */
export function sumOfSlices(parts: readonly Float32Array[], offset: number, shape: readonly number[]): tf.Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  let sum: tf.Tensor | undefined;
  for (const part of parts) {
    const t = tf.tensor(part.subarray(offset, offset + size), [...shape], 'float32');
    sum = sum ? tf.add(sum, t) : t;
  }
  if (!sum) throw new RangeError('no contributions to sum');
  return sum;
}
