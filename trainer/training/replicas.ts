// A replica of the model under training, for data-parallel local training
// (trainer/training/data-parallel.ts): every thread holds one, computes its share of a
// batch's update (contribute), and applies the sum of all shares (apply), so
// the replicas stay identical step after step.
//
// Contributions are flat Float32Arrays in a layout private to the replica
// kind; every thread of a run holds the same kind, built from the same setup.
import * as tf from '@tensorflow/tfjs';
import { countCorrect, crossEntropy } from '../../core/model/losses.js';
import { outputsProbabilities, type ModelSpec } from '../../core/model/spec.js';
import { sumOfSlices } from './contribution-sum.js';
import type { DenseTrainer } from './dense-step.js';

export interface ShareResult {
  /** Cross-entropy summed over the share's examples. */
  loss: number;
  correct: number;
}

export interface Replica {
  /** Values in one contribution. */
  readonly contributionSize: number;
  /**
   * Writes to `out` this share's part of the update for a batch of
   * `batchSize` examples, `rows` of which are in x and y (batch-major,
   * one-hot labels). All shares' parts sum to the whole batch's update.
   */
  contribute(x: Float32Array, y: Float32Array, rows: number, batchSize: number, out: Float32Array): ShareResult;
  /**
   * Applies the sum of a step's contributions, one per thread in thread
   * order, summed in that order on the backend: every replica of a run does
   * exactly the same operations, so all stay bit-identical.
   */
  apply(parts: readonly Float32Array[]): void;
}

/** What a thread needs to build its replica; structured-cloneable, so it crosses to worker threads. */
export interface ReplicaSetup {
  spec: ModelSpec;
  path: 'dense' | 'generic';
  featureShape: number[];
  classes: number;
  learningRate: number;
  proximalMu: number;
}

/**
 * The first `rows` examples of batch-major features x (each of `shape`) and
 * one-hot labels y as tensors, viewing the arrays on the cpu backend: the
 * caller disposes them before the arrays are reused.
 */
export function batchTensors(x: Float32Array, y: Float32Array, rows: number, shape: readonly number[], classes: number): [tf.Tensor, tf.Tensor2D] {
  const width = shape.reduce((a, b) => a * b, 1);
  return [
    tf.tensor(x.subarray(0, rows * width), [rows, ...shape], 'float32'),
    tf.tensor2d(y.subarray(0, rows * classes), [rows, classes], 'float32'),
  ];
}

/** The Dense step takes features flattened to [rows, width]. */
function flatShape(setup: ReplicaSetup): number[] {
  return [setup.featureShape.reduce((a, b) => a * b, 1)];
}

/** The hand-written Dense step's replica: contributions are its learning-rate-scaled updates. */
export class DenseReplica implements Replica {
  constructor(
    private readonly setup: ReplicaSetup,
    readonly trainer: DenseTrainer,
  ) {}

  get contributionSize(): number {
    return this.trainer.contributionSize;
  }

  contribute(x: Float32Array, y: Float32Array, rows: number, batchSize: number, out: Float32Array): ShareResult {
    const [xt, yt] = batchTensors(x, y, rows, flatShape(this.setup), this.setup.classes);
    try {
      return this.trainer.contribute(xt as tf.Tensor2D, yt, batchSize, out);
    } finally {
      tf.dispose([xt, yt]);
    }
  }

  apply(parts: readonly Float32Array[]): void {
    this.trainer.applyContribution(parts);
  }
}

/**
 * A layers model trained through tfjs autodiff: contributions are gradients
 * of the summed loss over the batch size, in trainable-variable order; apply
 * is plain SGD on their sum, with FedProx's μ(w − w₀) added when μ > 0.
 */
export class GenericReplica implements Replica {
  readonly contributionSize: number;
  private readonly variables: tf.Variable[];
  private readonly probabilities: boolean;
  private readonly rate: tf.Scalar;
  private readonly mu: tf.Scalar | undefined;
  private readonly base: tf.Tensor[];

  constructor(
    private readonly setup: ReplicaSetup,
    private readonly model: tf.LayersModel,
  ) {
    this.variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
    this.contributionSize = this.variables.reduce((sum, v) => sum + v.size, 0);
    this.probabilities = outputsProbabilities(setup.spec);
    this.rate = tf.scalar(setup.learningRate);
    this.mu = setup.proximalMu > 0 ? tf.scalar(setup.proximalMu) : undefined;
    this.base = this.mu ? this.variables.map((v) => tf.clone(v)) : [];
  }

  contribute(x: Float32Array, y: Float32Array, rows: number, batchSize: number, out: Float32Array): ShareResult {
    const [xt, yt] = batchTensors(x, y, rows, this.setup.featureShape, this.setup.classes);
    let correct: tf.Scalar | undefined;
    let result: { value: tf.Scalar; grads: tf.NamedTensorMap } | undefined;
    try {
      result = tf.variableGrads(() => {
        const output = this.model.apply(xt, { training: true }) as tf.Tensor2D;
        correct = tf.keep(countCorrect(output, yt));
        return tf.div(crossEntropy(output, yt, this.probabilities, 'sum'), batchSize);
      }, this.variables);
      let offset = 0;
      for (const v of this.variables) {
        const g = result.grads[v.name];
        if (!g) throw new Error(`no gradient for ${v.name}`);
        out.set(g.dataSync(), offset);
        offset += v.size;
      }
      return { loss: result.value.dataSync()[0]! * batchSize, correct: correct!.dataSync()[0]! };
    } finally {
      tf.dispose([xt, yt, ...(correct ? [correct] : []), ...(result ? [result.value, ...Object.values(result.grads)] : [])]);
    }
  }

  apply(parts: readonly Float32Array[]): void {
    let offset = 0;
    tf.tidy(() => {
      this.variables.forEach((v, i) => {
        let g = sumOfSlices(parts, offset, v.shape);
        offset += v.size;
        if (this.mu) g = tf.add(g, tf.mul(tf.sub(v, this.base[i]!), this.mu));
        v.assign(tf.sub(v, tf.mul(g, this.rate)));
      });
    });
  }

  dispose(): void {
    tf.dispose([this.rate, ...(this.mu ? [this.mu] : []), ...this.base]);
  }
}
