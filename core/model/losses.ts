// The loss training minimises and evaluation reports, and the accuracy count
// beside it. Zoo models output logits (the softmax lives here, in the loss);
// a topology ending in softmax outputs probabilities instead.
import * as tf from '@tensorflow/tfjs';

/**
 * Cross-entropy of `output` against one-hot `labels`, averaged or summed over
 * the batch. Logit outputs go through tfjs' fused log-softmax (stable, with its
 * own gradient); probability outputs are clipped before the log, as Keras does.
 */
export function crossEntropy(
  output: tf.Tensor2D,
  labels: tf.Tensor2D,
  probabilities: boolean,
  reduction: 'mean' | 'sum',
): tf.Scalar {
  return tf.tidy(() => {
    if (!probabilities) {
      return tf.losses.softmaxCrossEntropy(labels, output, undefined, 0, reduction === 'sum' ? tf.Reduction.SUM : tf.Reduction.MEAN) as tf.Scalar;
    }
    const perExample = tf.neg(tf.sum(tf.mul(labels, tf.log(tf.clipByValue(output, 1e-7, 1))), 1));
    return reduction === 'sum' ? tf.sum(perExample) : tf.mean(perExample);
  });
}

/** How many rows of `output` have their largest score at the label's class. */
export function countCorrect(output: tf.Tensor2D, labels: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => tf.sum(tf.cast(tf.equal(tf.argMax(output, 1), tf.argMax(labels, 1)), 'float32')));
}
