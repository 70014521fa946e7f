// Local SGD on a node's own data: a hand-written loop instead of model.fit, so
// the example order comes from our seeded Rng (same seed → same weights on a
// given backend), batches are assembled in one reused buffer, and the loop can
// stop at a deadline with the work done so far.
//
// The step itself comes in two forms: models that are a stack of Dense layers
// (2nn, logreg) take the hand-written step of trainer/dense-step.ts, several
// times faster; anything else (the CNN) goes through the layers API and tfjs
// autodiff. Both minimise the same loss and agree up to float rounding.
//
// With proximalMu = μ > 0 the loss is FedProx's local objective (Li et al.
// 2020), F_k(w) + μ/2‖w − w₀‖² with w₀ = baseWeights: every step adds
// μ(w − w₀) to the gradient, so a node whose data pulls far from the global
// model drifts less. The reported loss stays the data's cross-entropy.
import * as tf from '@tensorflow/tfjs';
import { countCorrect, crossEntropy, inputShape, numOutputs, outputsProbabilities, setFlatWeights, getFlatWeights, withModel } from '../core/model.js';
import type { ModelSpec } from '../core/model-zoo.js';
import { DenseTrainer, densePlan, type DensePlan } from './dense-step.js';
import { Rng } from '../datasets/random.js';
import { featureSize, type Dataset } from '../datasets/types.js';

export interface TrainingProgress {
  /** 0-based epoch the batch belongs to. */
  epoch: number;
  /** Batches done in this epoch (1-based after the first batch). */
  batch: number;
  batches: number;
  /** Examples processed since training started, over all epochs. */
  examplesSeen: number;
}

export interface TrainLocallyOptions {
  spec: ModelSpec;
  baseWeights: Float32Array;
  data: Dataset;
  epochs: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  /**
   * FedProx's μ: the weight of μ/2‖w − baseWeights‖² in the local objective.
   * 0 (the default) is plain local SGD, as in FedAvg.
   */
  proximalMu?: number;
  /** Epoch milliseconds: stop before starting a batch after this time and report the partial work. */
  deadline?: number;
  /** Checked between batches like the deadline, e.g. when the aggregator no longer wants the update. */
  shouldStop?: () => boolean;
  onProgress?: (p: TrainingProgress) => void;
  /**
   * Which training step to run: 'auto' (the default) takes the dense step
   * when the model allows it; 'dense' insists on it (RangeError otherwise);
   * 'generic' forces the autodiff step, e.g. to compare the two.
   */
  path?: TrainingPath | 'auto';
}

export type TrainingPath = 'dense' | 'generic';

export interface TrainingMetricsResult {
  /** Mean training cross-entropy over the last (possibly partial) epoch; NaN if no batch ran. */
  loss: number;
  /** Training accuracy over the same batches; NaN if no batch ran. */
  accuracy: number;
  seconds: number;
  examples_per_second: number;
}

export interface TrainLocallyResult {
  weights: Float32Array;
  /** Example-gradients computed: examples × epochs, counting a cut-short epoch's batches. */
  examplesTrained: number;
  epochsCompleted: number;
  /** Stopped early by the deadline or shouldStop. */
  partial: boolean;
  /** The training step that ran. */
  path: TrainingPath;
  metrics: TrainingMetricsResult;
}

// Between yields the loop holds the event loop; 20 ms keeps gRPC heartbeats
// and timers prompt without measurable cost to throughput.
const YIELD_EVERY_MS = 20;

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

function checkOptions(o: TrainLocallyOptions): void {
  if (!Number.isInteger(o.epochs) || o.epochs < 0) throw new RangeError(`epochs must be a non-negative integer, got ${o.epochs}`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${o.batchSize}`);
  if (!(o.learningRate > 0) || !Number.isFinite(o.learningRate)) throw new RangeError(`learningRate must be positive, got ${o.learningRate}`);
  const mu = o.proximalMu ?? 0;
  if (!(mu >= 0) || !Number.isFinite(mu)) throw new RangeError(`proximalMu must be a finite number ≥ 0, got ${mu}`);
  const expected = inputShape(o.spec);
  if (expected.join(',') !== o.data.featureShape.join(',')) {
    throw new RangeError(
      `model ${o.spec.name} takes inputs of shape [${expected.join(', ')}] but dataset ${o.data.name} has [${o.data.featureShape.join(', ')}]`,
    );
  }
  const outputs = numOutputs(o.spec);
  if (outputs !== o.data.numClasses) {
    throw new RangeError(`model ${o.spec.name} outputs ${outputs} classes but dataset ${o.data.name} has ${o.data.numClasses}`);
  }
  const d = featureSize(o.data);
  if (o.data.features.length !== o.data.numExamples * d || o.data.labels.length !== o.data.numExamples) {
    throw new RangeError(`dataset ${o.data.name}: features/labels lengths do not match ${o.data.numExamples} examples`);
  }
  for (let i = 0; i < o.data.labels.length; i++) {
    if (o.data.labels[i] >= outputs) throw new RangeError(`dataset ${o.data.name}: example ${i} has label ${o.data.labels[i]}, beyond ${outputs} classes`);
  }
}

/** One SGD step per call; the training loop around it is shared. */
interface Stepper {
  /** Tensor shape the step takes a batch of `size` examples in. */
  batchShape(size: number): number[];
  /** Trains on one batch; returns the batch's summed loss and correct count, which the caller disposes. */
  step(x: tf.Tensor, y: tf.Tensor2D, size: number): { loss: tf.Scalar; correct: tf.Scalar };
  weights(): Promise<Float32Array>;
}

function choosePlan(o: TrainLocallyOptions): DensePlan | undefined {
  const wanted = o.path ?? 'auto';
  if (wanted === 'generic') return undefined;
  const plan = densePlan(o.spec);
  if (!plan && wanted === 'dense') throw new RangeError(`model ${o.spec.name} is not a stack of Dense layers; it cannot take the dense training step`);
  return plan;
}

/**
 * The generic step's SGD with FedProx's proximal term: the trainable
 * variables' starting values and μ stay on the backend for the whole call.
 */
class ProximalSgd {
  private readonly base: tf.Tensor[];
  private readonly mu: tf.Scalar;

  constructor(
    private readonly optimizer: tf.SGDOptimizer,
    private readonly variables: tf.Variable[],
    mu: number,
  ) {
    this.base = variables.map((v) => tf.clone(v));
    this.mu = tf.scalar(mu);
  }

  /** optimizer.minimize(f, true, variables), with μ(w − w₀) added to each gradient. */
  minimize(f: () => tf.Scalar): tf.Scalar {
    const { value, grads } = this.optimizer.computeGradients(f, this.variables);
    let pulled: tf.NamedTensorMap = {};
    try {
      pulled = tf.tidy(() =>
        Object.fromEntries(this.variables.map((v, i) => [v.name, tf.add(grads[v.name], tf.mul(tf.sub(v, this.base[i]), this.mu))])),
      );
      this.optimizer.applyGradients(pulled);
    } finally {
      tf.dispose([...Object.values(grads), ...Object.values(pulled)]);
    }
    return value;
  }

  dispose(): void {
    tf.dispose([...this.base, this.mu]);
  }
}

/** Trains `spec` from `baseWeights` on `data` with SGD (FedProx's when proximalMu > 0); see TrainLocallyOptions. */
export async function trainLocally(o: TrainLocallyOptions): Promise<TrainLocallyResult> {
  checkOptions(o);
  const plan = choosePlan(o);
  if (plan) {
    const started = performance.now();
    const trainer = new DenseTrainer(plan, o.baseWeights, o.learningRate, o.proximalMu);
    try {
      const stepper: Stepper = {
        batchShape: (size) => [size, plan.inputSize],
        step: (x, y) => trainer.step(x as tf.Tensor2D, y),
        weights: () => trainer.weights(),
      };
      return await runLoop(o, stepper, 'dense', started);
    } finally {
      trainer.dispose();
    }
  }
  return withModel(o.spec, async (model) => {
    const started = performance.now();
    setFlatWeights(model, o.baseWeights);
    const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
    const optimizer = tf.train.sgd(o.learningRate);
    // Only built for μ > 0, so plain SGD keeps optimizer.minimize and its exact kernels.
    const proximal = o.proximalMu ? new ProximalSgd(optimizer, variables, o.proximalMu) : undefined;
    const minimize = (f: () => tf.Scalar): tf.Scalar => (proximal ? proximal.minimize(f) : (optimizer.minimize(f, true, variables) as tf.Scalar));
    const probabilities = outputsProbabilities(o.spec);
    try {
      const stepper: Stepper = {
        batchShape: (size) => [size, ...o.data.featureShape],
        step: (x, y, size) => {
          let correct: tf.Scalar | undefined;
          const cost = minimize(() => {
            const output = model.apply(x, { training: true }) as tf.Tensor2D;
            correct = tf.keep(countCorrect(output, y));
            return crossEntropy(output, y, probabilities, 'mean');
          });
          const loss = tf.mul(cost, size) as tf.Scalar;
          cost.dispose();
          return { loss, correct: correct as tf.Scalar };
        },
        weights: async () => getFlatWeights(model),
      };
      return await runLoop(o, stepper, 'generic', started);
    } finally {
      proximal?.dispose();
      optimizer.dispose();
    }
  });
}

/** `sum + term` as a new scalar; both inputs are consumed. */
function accumulate(sum: tf.Scalar | undefined, term: tf.Scalar): tf.Scalar {
  if (!sum) return term;
  const total = tf.add(sum, term) as tf.Scalar;
  tf.dispose([sum, term]);
  return total;
}

async function runLoop(o: TrainLocallyOptions, stepper: Stepper, path: TrainingPath, started: number): Promise<TrainLocallyResult> {
  const { data } = o;
  const n = data.numExamples;
  const d = featureSize(data);
  const classes = data.numClasses;
  const batchSize = Math.min(o.batchSize, Math.max(n, 1));
  const batches = Math.ceil(n / batchSize);
  const rng = Rng.derive(o.seed, 'local-training-order');
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;

  const xBuffer = new Float32Array(batchSize * d);
  const yBuffer = new Float32Array(batchSize * classes);

  let examplesTrained = 0;
  let epochsCompleted = 0;
  let partial = false;
  let loss = Number.NaN;
  let accuracy = Number.NaN;
  // Sums over the current epoch, kept on the backend so no batch waits on a
  // device read; they are read once when the epoch ends.
  let lossSum: tf.Scalar | undefined;
  let correctSum: tf.Scalar | undefined;
  let epochExamples = 0;
  let lastYield = performance.now();

  const stopRequested = () => (o.deadline !== undefined && Date.now() >= o.deadline) || (o.shouldStop?.() ?? false);

  const readEpochMetrics = async () => {
    if (!lossSum || !correctSum || epochExamples === 0) return;
    const [l, c] = await Promise.all([lossSum.data(), correctSum.data()]);
    loss = l[0] / epochExamples;
    accuracy = c[0] / epochExamples;
  };
  const resetEpochSums = () => {
    tf.dispose([lossSum, correctSum].filter((t): t is tf.Scalar => t !== undefined));
    lossSum = undefined;
    correctSum = undefined;
    epochExamples = 0;
  };

  try {
    epochs: for (let epoch = 0; epoch < o.epochs; epoch++) {
      rng.shuffle(order);
      for (let b = 0; b < batches; b++) {
        if (stopRequested()) {
          partial = true;
          break epochs;
        }
        const start = b * batchSize;
        const size = Math.min(batchSize, n - start);
        yBuffer.fill(0, 0, size * classes);
        for (let i = 0; i < size; i++) {
          const row = order[start + i];
          xBuffer.set(data.features.subarray(row * d, row * d + d), i * d);
          yBuffer[i * classes + data.labels[row]] = 1;
        }
        // The cpu backend keeps the array it is handed rather than copying, so
        // these tensors view the shared buffers: they must be gone before the
        // next batch overwrites them, which the dispose below guarantees.
        const x = tf.tensor(xBuffer.subarray(0, size * d), stepper.batchShape(size), 'float32');
        const y = tf.tensor2d(yBuffer.subarray(0, size * classes), [size, classes], 'float32');
        let batch: { loss: tf.Scalar; correct: tf.Scalar };
        try {
          batch = stepper.step(x, y, size);
        } finally {
          tf.dispose([x, y]);
        }
        lossSum = accumulate(lossSum, batch.loss);
        correctSum = accumulate(correctSum, batch.correct);

        examplesTrained += size;
        epochExamples += size;
        o.onProgress?.({ epoch, batch: b + 1, batches, examplesSeen: examplesTrained });
        if (performance.now() - lastYield >= YIELD_EVERY_MS) {
          await yieldToEventLoop();
          lastYield = performance.now();
        }
      }
      await readEpochMetrics();
      resetEpochSums();
      epochsCompleted++;
    }
    // A cut-short epoch reports its own batches; with none, the last full epoch stands.
    await readEpochMetrics();
    const weights = await stepper.weights();
    const seconds = (performance.now() - started) / 1000;
    return {
      weights,
      examplesTrained,
      epochsCompleted,
      partial,
      path,
      metrics: { loss, accuracy, seconds, examples_per_second: seconds > 0 ? examplesTrained / seconds : 0 },
    };
  } finally {
    resetEpochSums();
  }
}
