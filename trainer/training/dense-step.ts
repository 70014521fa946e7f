// A hand-written SGD step for models that are a stack of Dense layers (after
// an optional Flatten), used by trainLocally in place of the layers API and
// tfjs autodiff. The gradients of dense/relu/softmax-cross-entropy are a few
// matrix products, so writing them out removes the tape, the layers' per-call
// work and most of the ~100 small kernels an autodiff step dispatches.
//
// Activations are kept feature-major ([units, batch]) and kernels transposed
// ([units, inputs]). The reason is the wasm backend: it sends a product to
// XNNPACK only when neither operand is transposed, and XNNPACK re-packs the
// right-hand operand whenever that tensor is new, at ~4 ns a value. A weight
// matrix changes every step, so as the right-hand operand it would be re-packed
// every step (0.6 ms for the 784×200 kernel of the 2NN, more than its product
// takes). In this layout every product has a kernel on the left and a
// batch-sized matrix on the right, which is cheap to pack.
import * as tf from '@tensorflow/tfjs';
import { countCorrect } from '../../core/model/losses.js';
import { inputShape, layerSummary, numParams, type ModelSpec } from '../../core/model/spec.js';
import { sumOfSlices } from './contribution-sum.js';

export interface DenseLayerPlan {
  inputs: number;
  units: number;
  activation: 'linear' | 'relu' | 'softmax';
  bias: boolean;
}

export interface DensePlan {
  /** Values per example (the product of the input shape). */
  inputSize: number;
  layers: readonly DenseLayerPlan[];
  numParams: number;
}

/**
 * The Dense stack `spec` describes, or undefined when the model has any other
 * layer (or activation) and must train through the generic autodiff step.
 * Softmax is accepted on the last layer only, where the loss handles it.
 */
export function densePlan(spec: ModelSpec): DensePlan | undefined {
  const summary = layerSummary(spec);
  const input = inputShape(spec);
  let rank = input.length;
  let width = input.reduce((a, b) => a * b, 1);
  const layers: DenseLayerPlan[] = [];
  for (let i = 0; i < summary.length; i++) {
    const layer = summary[i];
    if (layer.className === 'InputLayer') continue;
    if (layer.className === 'Flatten') {
      rank = 1;
      continue;
    }
    // A Dense on a rank > 1 input maps its last axis only; that stays generic.
    if (layer.className !== 'Dense' || rank !== 1) return undefined;
    const activation = layer.activation ?? 'linear';
    const last = summary.slice(i + 1).every((l) => l.className === 'Flatten' || l.className === 'InputLayer');
    if (!(activation === 'linear' || activation === 'relu' || (activation === 'softmax' && last))) return undefined;
    const kernel = layer.weights.find((w) => w.role === 'kernel');
    if (!kernel || kernel.shape.length !== 2 || kernel.shape[0] !== width) return undefined;
    layers.push({ inputs: width, units: kernel.shape[1], activation, bias: layer.weights.some((w) => w.role === 'bias') });
    width = kernel.shape[1];
  }
  if (layers.length === 0) return undefined;
  return { inputSize: input.reduce((a, b) => a * b, 1), layers, numParams: numParams(spec) };
}

export interface DenseStepResult {
  /** Cross-entropy summed over the batch's examples. */
  loss: tf.Scalar;
  correct: tf.Scalar;
}

function layerTensors(kernels: readonly tf.Tensor2D[], biases: readonly (tf.Tensor2D | undefined)[]): tf.Tensor2D[] {
  return [...kernels, ...biases.filter((b): b is tf.Tensor2D => b !== undefined)];
}

/**
 * FedProx's pull toward the weights training started from, in the trainer's
 * layout, held on the backend for the trainer's lifetime.
 */
interface ProximalAnchor {
  /** learning rate × μ, so the term joins the lr-scaled step directly. */
  rate: tf.Scalar;
  kernels: tf.Tensor2D[];
  biases: (tf.Tensor2D | undefined)[];
}

/**
 * SGD on a Dense stack, with the weights held on the active backend between
 * steps; with proximalMu > 0 each step also descends FedProx's μ/2‖w − w₀‖²,
 * w₀ being the weights it was created with. Create it, call step per batch,
 * read weights, dispose.
 */
export class DenseTrainer {
  private readonly plan: DensePlan;
  private readonly learningRate: number;
  /** Kernels as [units, inputs]. */
  private kernels: tf.Tensor2D[];
  /** Biases as [units, 1] columns, undefined for a layer without one. */
  private biases: (tf.Tensor2D | undefined)[];
  private readonly explicitTranspose: boolean;
  /** Undefined when μ is 0, so plain SGD runs exactly the kernels it always has. */
  private proximal: ProximalAnchor | undefined;

  constructor(plan: DensePlan, flat: Float32Array, learningRate: number, proximalMu = 0) {
    if (flat.length !== plan.numParams) {
      throw new RangeError(`weights have ${flat.length} values but the model has ${plan.numParams} parameters`);
    }
    this.plan = plan;
    this.learningRate = learningRate;
    // Stock wasm runs any product with a transposed operand through a scalar
    // loop (~2 GFLOP/s); a separate transpose keeps the product on XNNPACK.
    // core/tfjs-wasm-kernels.ts reroutes such products too, but this step should
    // not depend on that having been registered. Other backends read
    // transposed operands in place.
    this.explicitTranspose = tf.getBackend() === 'wasm';
    this.kernels = [];
    this.biases = [];
    let offset = 0;
    for (const layer of plan.layers) {
      const n = layer.inputs * layer.units;
      this.kernels.push(
        tf.tidy(() => tf.transpose(tf.tensor2d(flat.slice(offset, offset + n), [layer.inputs, layer.units], 'float32'))),
      );
      offset += n;
      if (layer.bias) {
        this.biases.push(tf.tensor2d(flat.slice(offset, offset + layer.units), [layer.units, 1], 'float32'));
        offset += layer.units;
      } else {
        this.biases.push(undefined);
      }
    }
    if (proximalMu > 0) {
      // Copies, not the tensors themselves: step() disposes the weights it replaces.
      this.proximal = {
        rate: tf.scalar(learningRate * proximalMu),
        kernels: this.kernels.map((k) => tf.clone(k)),
        biases: this.biases.map((b) => (b ? tf.clone(b) : undefined)),
      };
    }
  }

  /**
   * `weight − update`, `update` being the learning rate times the loss's
   * gradient; with the proximal term, `weight − (update + lr·μ·(weight − base))`.
   */
  private descend(weight: tf.Tensor2D, update: tf.Tensor2D, base: tf.Tensor2D | undefined): tf.Tensor2D {
    if (!this.proximal || !base) return tf.sub(weight, update);
    // Intermediates are freed as soon as they are used rather than when
    // step's tidy ends, so the next one reuses a cache-warm block; on wasm
    // that roughly halves the term's cost (2NN, batch 32: ~30% of a step
    // down to ~15–20%). Written as w·(1 − lr·μ) + lr·μ·w₀ − update it would
    // take one pass fewer, but 1 − lr·μ rounded to float32 shifts μ itself
    // (by up to 0.3% at lr = 0.01, μ = 0.001).
    const drift = tf.sub(weight, base);
    const pull = tf.mul(drift, this.proximal.rate);
    drift.dispose();
    const total = tf.add(update, pull);
    pull.dispose();
    const next = tf.sub<tf.Tensor2D>(weight, total);
    total.dispose();
    return next;
  }

  private matMul(a: tf.Tensor2D, b: tf.Tensor2D, transposeA: boolean, transposeB: boolean): tf.Tensor2D {
    if (!this.explicitTranspose) return tf.matMul(a, b, transposeA, transposeB);
    return tf.matMul(transposeA ? tf.transpose(a) : a, transposeB ? tf.transpose(b) : b);
  }

  /**
   * One SGD step on `x` ([size, inputSize]) with one-hot `y` ([size, classes]),
   * minimising the batch-mean cross-entropy as the generic step does. Returns
   * tensors the caller disposes.
   */
  step(x: tf.Tensor2D, y: tf.Tensor2D): DenseStepResult {
    const result = tf.tidy(() => {
      const u = this.updates(x, y, x.shape[0]);
      const kernels = u.kernels.map((update, l) => this.descend(this.kernels[l], update, this.proximal?.kernels[l]));
      const biases = u.biases.map((update, l) => (update ? this.descend(this.biases[l]!, update, this.proximal?.biases[l]) : undefined));
      return { kernels, biases, loss: u.loss, correct: u.correct };
    });
    this.replaceWeights(result.kernels, result.biases);
    return { loss: result.loss, correct: result.correct };
  }

  /** Values in a contribution (contribute / applyContribution): every weight once. */
  get contributionSize(): number {
    return this.plan.numParams;
  }

  /**
   * This share's part of a data-parallel step over a batch of `batchSize`
   * examples (x holds some of them): the learning-rate-scaled updates, as
   * [units, inputs] kernels then bias columns, written to `out`. The parts of
   * all shares add up to the whole batch's update. Returns the share's summed
   * loss and correct count.
   */
  contribute(x: tf.Tensor2D, y: tf.Tensor2D, batchSize: number, out: Float32Array): { loss: number; correct: number } {
    const u = tf.tidy(() => this.updates(x, y, batchSize));
    try {
      let offset = 0;
      for (const t of layerTensors(u.kernels, u.biases)) {
        const values = t.dataSync();
        out.set(values, offset);
        offset += values.length;
      }
      return { loss: u.loss.dataSync()[0]!, correct: u.correct.dataSync()[0]! };
    } finally {
      tf.dispose([...layerTensors(u.kernels, u.biases), u.loss, u.correct]);
    }
  }

  /** Descends by the sum of all shares' contributions (laid out as contribute writes them), added in the order given. */
  applyContribution(parts: readonly Float32Array[]): void {
    let offset = 0;
    const slice = (rows: number, cols: number) => {
      const t = sumOfSlices(parts, offset, [rows, cols]) as tf.Tensor2D;
      offset += rows * cols;
      return t;
    };
    const next = tf.tidy(() => {
      const kernels = this.plan.layers.map((layer, l) => this.descend(this.kernels[l], slice(layer.units, layer.inputs), this.proximal?.kernels[l]));
      const biases = this.plan.layers.map((layer, l) => {
        const bias = this.biases[l];
        return bias ? this.descend(bias, slice(layer.units, 1), this.proximal?.biases[l]) : undefined;
      });
      return { kernels, biases };
    });
    this.replaceWeights(next.kernels, next.biases);
  }

  private replaceWeights(kernels: tf.Tensor2D[], biases: (tf.Tensor2D | undefined)[]): void {
    tf.dispose(layerTensors(this.kernels, this.biases));
    this.kernels = kernels;
    this.biases = biases;
  }

  /**
   * The learning-rate-scaled update of every kernel ([units, inputs]) and bias
   * for the mean loss over `scaleSize` examples, of which x holds some; with
   * the batch's loss (summed) and correct count. Call inside a tidy.
   */
  private updates(x: tf.Tensor2D, y: tf.Tensor2D, scaleSize: number) {
    const { layers } = this.plan;
    // inputs[l]: what layer l reads, feature-major.
    const inputs: tf.Tensor2D[] = [];
    let a: tf.Tensor2D = tf.transpose(x);
    for (let l = 0; l < layers.length; l++) {
      inputs.push(a);
      let z: tf.Tensor2D = tf.matMul(this.kernels[l], a);
      const bias = this.biases[l];
      if (bias) z = tf.add<tf.Tensor2D>(z, bias);
      if (layers[l].activation === 'relu') z = tf.relu(z);
      a = z;
    }
    const scores = tf.transpose(a);
    const probabilities = layers[layers.length - 1].activation === 'softmax';
    let output: tf.Tensor2D;
    let loss: tf.Scalar;
    // d(mean cross-entropy)/d(pre-softmax scores) is (p − y)/size; the
    // learning rate is folded in here so the products below yield updates.
    let delta: tf.Tensor2D;
    const scale = tf.scalar(this.learningRate / scaleSize);
    if (probabilities) {
      output = tf.softmax(scores);
      loss = tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(output, 1e-7, 1))))) as tf.Scalar;
      // The loss clips probabilities at 1e-7, so an example whose label has
      // a smaller probability contributes no gradient (as under autodiff).
      const live = tf.cast(tf.greaterEqual(tf.sum(tf.mul(y, output), 1, true), 1e-7), 'float32');
      delta = tf.mul(tf.mul(tf.sub(output, y), live), scale);
    } else {
      output = scores;
      const logProbabilities = tf.logSoftmax(scores);
      loss = tf.neg(tf.sum(tf.mul(y, logProbabilities))) as tf.Scalar;
      delta = tf.mul(tf.sub(tf.exp(logProbabilities), y), scale);
    }
    const correct = countCorrect(output, y);

    const kernels: tf.Tensor2D[] = [];
    const biases: (tf.Tensor2D | undefined)[] = [];
    let deltaT = tf.transpose(delta);
    for (let l = layers.length - 1; l >= 0; l--) {
      // The first layer's input is x itself, already batch-major.
      kernels[l] = l === 0 ? this.matMul(deltaT, x, false, false) : this.matMul(deltaT, inputs[l], false, true);
      biases[l] = this.biases[l] ? tf.sum<tf.Tensor2D>(deltaT, 1, true) : undefined;
      if (l > 0) {
        const back = this.matMul(this.kernels[l], deltaT, true, false);
        // inputs[l] is relu's output, positive exactly where its input was.
        deltaT = layers[l - 1].activation === 'relu' ? tf.mul(back, tf.step(inputs[l])) : back;
      }
    }
    return { kernels, biases, loss, correct };
  }

  /** The current weights, flat in manifest order (kernels [inputs, units], then biases). */
  async weights(): Promise<Float32Array> {
    const flat = new Float32Array(this.plan.numParams);
    let offset = 0;
    for (let l = 0; l < this.plan.layers.length; l++) {
      const kernel = tf.transpose(this.kernels[l]);
      try {
        const values = await kernel.data();
        flat.set(values, offset);
        offset += values.length;
      } finally {
        kernel.dispose();
      }
      const bias = this.biases[l];
      if (bias) {
        const values = await bias.data();
        flat.set(values, offset);
        offset += values.length;
      }
    }
    return flat;
  }

  dispose(): void {
    tf.dispose(layerTensors(this.kernels, this.biases));
    this.kernels = [];
    this.biases = [];
    if (this.proximal) {
      const { rate, kernels, biases } = this.proximal;
      tf.dispose([rate, ...layerTensors(kernels, biases)]);
      this.proximal = undefined;
    }
  }
}
