// Held-out evaluation of a flat weight vector. The aggregator calls this every
// round, so the built model is reused (core/model/build.ts pools it per topology and
// backend) and only the weights are loaded each time.
import * as tf from '@tensorflow/tfjs';
import { countCorrect, crossEntropy } from './losses.js';
import { inputShape, numOutputs, outputsProbabilities, type ModelSpec } from './spec.js';
import { setFlatWeights, withModel } from './build.js';
import { featureSize, type Dataset } from '../dataset.js';

export interface EvaluationResult {
  /** Fraction of examples whose highest score is the label; NaN for an empty dataset. */
  accuracy: number;
  /** Mean cross-entropy (natural log), the same loss training minimises; NaN for an empty dataset. */
  loss: number;
  examples: number;
}

const YIELD_EVERY_MS = 20;

export async function evaluate(spec: ModelSpec, weights: Float32Array, data: Dataset, batchSize = 1000): Promise<EvaluationResult> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  const expected = inputShape(spec);
  if (expected.join(',') !== data.featureShape.join(',')) {
    throw new RangeError(
      `model ${spec.name} takes inputs of shape [${expected.join(', ')}] but dataset ${data.name} has [${data.featureShape.join(', ')}]`,
    );
  }
  const classes = numOutputs(spec);
  if (classes !== data.numClasses) {
    throw new RangeError(`model ${spec.name} outputs ${classes} classes but dataset ${data.name} has ${data.numClasses}`);
  }
  const n = data.numExamples;
  if (n === 0) return { accuracy: Number.NaN, loss: Number.NaN, examples: 0 };
  const d = featureSize(data);
  const probabilities = outputsProbabilities(spec);
  const yBuffer = new Float32Array(Math.min(batchSize, n) * classes);

  return withModel(spec, async (model) => {
    setFlatWeights(model, weights);
    let lossSum: tf.Scalar | undefined;
    let correctSum: tf.Scalar | undefined;
    let lastYield = performance.now();
    try {
      for (let start = 0; start < n; start += batchSize) {
        const size = Math.min(batchSize, n - start);
        yBuffer.fill(0);
        for (let i = 0; i < size; i++) {
          const label = data.labels[start + i];
          if (label >= classes) throw new RangeError(`dataset ${data.name}: example ${start + i} has label ${label}, beyond ${classes} classes`);
          yBuffer[i * classes + label] = 1;
        }
        const prevLoss = lossSum;
        const prevCorrect = correctSum;
        [lossSum, correctSum] = tf.tidy(() => {
          // Rows are contiguous, so the batch is a view of the dataset: no copy.
          const x = tf.tensor(data.features.subarray(start * d, (start + size) * d), [size, ...data.featureShape], 'float32');
          const y = tf.tensor2d(yBuffer.subarray(0, size * classes), [size, classes], 'float32');
          const output = model.apply(x, { training: false }) as tf.Tensor2D;
          const batchLoss = crossEntropy(output, y, probabilities, 'sum');
          const batchCorrect = countCorrect(output, y);
          return [prevLoss ? tf.add(prevLoss, batchLoss) : batchLoss, prevCorrect ? tf.add(prevCorrect, batchCorrect) : batchCorrect] as [
            tf.Scalar,
            tf.Scalar,
          ];
        });
        tf.dispose([prevLoss, prevCorrect].filter((t): t is tf.Scalar => t !== undefined));
        if (performance.now() - lastYield >= YIELD_EVERY_MS) {
          await new Promise<void>((resolve) => setImmediate(resolve));
          lastYield = performance.now();
        }
      }
      const [l, c] = await Promise.all([(lossSum as tf.Scalar).data(), (correctSum as tf.Scalar).data()]);
      return { accuracy: c[0] / n, loss: l[0] / n, examples: n };
    } finally {
      tf.dispose([lossSum, correctSum].filter((t): t is tf.Scalar => t !== undefined));
    }
  });
}
