// What the serving tests check predictions against: class probabilities from
// core's own model code, not the server's.
import * as tf from '@tensorflow/tfjs';
import { setFlatWeights, withModel } from '../../core/model/build.js';
import type { ModelSpec } from '../../core/model/spec.js';

export async function coreProbabilities(spec: ModelSpec, weights: Float32Array, rows: number[][]): Promise<number[][]> {
  return withModel(spec, async (model) => {
    setFlatWeights(model, weights);
    const probs = tf.tidy(() => tf.softmax(model.apply(tf.tensor2d(rows), { training: false }) as tf.Tensor2D));
    const out = (await probs.array()) as number[][];
    probs.dispose();
    return out;
  });
}

export function assertClose(t: { true: (v: boolean, m?: string) => void }, actual: number[][], expected: number[][]): void {
  t.true(actual.length === expected.length, `${actual.length} rows, expected ${expected.length}`);
  expected.forEach((row, i) => row.forEach((v, j) => t.true(Math.abs(actual[i][j] - v) < 1e-5, `row ${i} class ${j}: ${actual[i][j]} vs ${v}`)));
}
