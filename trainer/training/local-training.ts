// Local SGD on a node's own data: a hand-written loop instead of model.fit, so
// the example order comes from our seeded Rng (same seed → same weights on a
// given backend), batches are assembled in one reused buffer, and the loop can
// stop at a deadline with the work done so far.
//
// The step itself comes in two forms: models that are a stack of Dense layers
// (2nn, logreg) take the hand-written step of trainer/training/dense-step.ts, several
// times faster; anything else (the CNN) goes through the layers API and tfjs
// autodiff. Both minimise the same loss and agree up to float rounding.
//
// With proximalMu = μ > 0 the loss is FedProx's local objective (Li et al.
// 2020), F_k(w) + μ/2‖w − w₀‖² with w₀ = baseWeights: every step adds
// μ(w − w₀) to the gradient, so a node whose data pulls far from the global
// model drifts less. The reported loss stays the data's cross-entropy.
import * as tf from '@tensorflow/tfjs';
import { countCorrect, crossEntropy } from '../../core/model/losses.js';
import { inputShape, numOutputs, numParams, outputsProbabilities, type ModelSpec } from '../../core/model/spec.js';
import { getFlatWeights, setFlatWeights, withModel } from '../../core/model/build.js';
import { trainingFlopsPerSample } from '../../core/model/flops.js';
import { DataParallel } from './data-parallel.js';
import { DenseTrainer, densePlan, type DensePlan } from './dense-step.js';
import { batchTensors, DenseReplica, GenericReplica, type Replica, type ReplicaSetup } from './replicas.js';
import { Rng } from '../../core/rng.js';
import { featureSize, type Dataset } from '../../core/dataset.js';

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
  /**
   * Threads to train with (default 1). Above 1, on the wasm and cpu backends,
   * each batch is split across this thread and threads − 1 worker threads
   * holding replicas of the model (trainer/training/data-parallel.ts); the same seed
   * and thread count give the same weights. tfjs-node has thread pools of
   * its own, so there it stays 1.
   */
  threads?: number;
}

export type TrainingPath = 'dense' | 'generic';

export interface TrainingMetricsResult {
  /** Mean training cross-entropy over the last (possibly partial) epoch; NaN if no batch ran. */
  loss: number;
  /**
   * Mean cross-entropy of the first batch, computed before any step moved the weights: the loss the
   * node started from, against which a diverged run is recognised (trainer/update-checks.ts). NaN if no batch ran.
   */
  start_loss: number;
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
  /** Threads that trained (data-parallel replicas); see TrainLocallyOptions.threads. */
  threads: number;
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
  /**
   * Trains on the first `size` examples of x (batch-major features) and y
   * (one-hot labels); returns the batch's summed loss and correct count,
   * which the caller disposes.
   */
  step(x: Float32Array, y: Float32Array, size: number): { loss: tf.Scalar; correct: tf.Scalar };
  weights(): Promise<Float32Array>;
}

/** fn on the batch as tensors of `shape` (batch-major) and one-hot labels, disposed afterwards. */
function onBatch<T>(x: Float32Array, y: Float32Array, size: number, shape: readonly number[], classes: number, fn: (x: tf.Tensor, y: tf.Tensor2D) => T): T {
  // The cpu backend keeps the array it is handed rather than copying, so
  // these tensors view the loop's buffers: they must be gone before the
  // next batch overwrites them, which the dispose below guarantees.
  const [xt, yt] = batchTensors(x, y, size, shape, classes);
  try {
    return fn(xt, yt);
  } finally {
    tf.dispose([xt, yt]);
  }
}

/** The batch size training uses: the asked one, or all the data when there is less. */
function batchSizeOf(o: Pick<TrainLocallyOptions, 'batchSize' | 'data'>): number {
  return Math.min(o.batchSize, Math.max(o.data.numExamples, 1));
}

/**
 * A thread's share of a batch must do at least this many training FLOPs per
 * model parameter, or the step's exchange (every thread's update is read and
 * summed by every replica) costs more than splitting saves. Measured on 2
 * cores (wasm): the 2NN (6 FLOPs per parameter per example) gained nothing
 * at 32 examples a thread and 1.2× at 64; the CNN (44) lost at 5 and gained
 * 1.2× at 8.
 */
const MIN_SHARE_FLOPS_PER_PARAM = 300;

/** How many of the threads the options allow are worth using for this model, batch and backend. */
export function trainingThreads(o: Pick<TrainLocallyOptions, 'threads' | 'spec' | 'batchSize' | 'data'>): number {
  const allowed = Math.max(1, Math.floor(o.threads ?? 1));
  const backend = tf.getBackend();
  if (allowed === 1 || !(backend === 'wasm' || backend === 'cpu')) return 1;
  const batch = batchSizeOf(o);
  let perExample: number;
  try {
    perExample = trainingFlopsPerSample(o.spec) / numParams(o.spec);
  } catch {
    // A layer with no FLOP count: the operator's setting stands.
    return allowed;
  }
  let threads = allowed;
  while (threads > 1 && (batch / threads) * perExample < MIN_SHARE_FLOPS_PER_PARAM) threads--;
  return threads;
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
  const threads = trainingThreads(o);
  if (threads > 1) return trainInParallel(o, plan, threads);
  if (plan) {
    const started = performance.now();
    const trainer = new DenseTrainer(plan, o.baseWeights, o.learningRate, o.proximalMu);
    try {
      const stepper: Stepper = {
        step: (x, y, size) => onBatch(x, y, size, [plan.inputSize], o.data.numClasses, (xt, yt) => trainer.step(xt as tf.Tensor2D, yt)),
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
        step: (xs, ys, size) =>
          onBatch(xs, ys, size, o.data.featureShape, o.data.numClasses, (x, y) => {
            let correct: tf.Scalar | undefined;
            const cost = minimize(() => {
              const output = model.apply(x, { training: true }) as tf.Tensor2D;
              correct = tf.keep(countCorrect(output, y));
              return crossEntropy(output, y, probabilities, 'mean');
            });
            const loss = tf.mul(cost, size) as tf.Scalar;
            cost.dispose();
            return { loss, correct: correct as tf.Scalar };
          }),
        weights: async () => getFlatWeights(model),
      };
      return await runLoop(o, stepper, 'generic', started);
    } finally {
      proximal?.dispose();
      optimizer.dispose();
    }
  });
}

/**
 * trainLocally with `threads` replicas (trainer/training/data-parallel.ts): this
 * thread's replica is the dense trainer or the pooled layers model, as on one
 * thread, and its weights are the result.
 */
async function trainInParallel(o: TrainLocallyOptions, plan: DensePlan | undefined, threads: number): Promise<TrainLocallyResult> {
  const setup: ReplicaSetup = {
    spec: o.spec,
    path: plan ? 'dense' : 'generic',
    featureShape: [...o.data.featureShape],
    classes: o.data.numClasses,
    learningRate: o.learningRate,
    proximalMu: o.proximalMu ?? 0,
  };
  const batchSize = batchSizeOf(o);
  const run = async (main: Replica, weights: () => Promise<Float32Array>, started: number) => {
    const parallel = await DataParallel.start(main, setup, o.baseWeights, tf.getBackend(), threads, batchSize);
    try {
      const stepper: Stepper = {
        step: (x, y, size) => {
          const share = parallel.step(x, y, size);
          return { loss: tf.scalar(share.loss), correct: tf.scalar(share.correct) };
        },
        weights,
      };
      return await runLoop(o, stepper, setup.path, started, threads);
    } finally {
      await parallel.end();
    }
  };
  if (plan) {
    const started = performance.now();
    const trainer = new DenseTrainer(plan, o.baseWeights, o.learningRate, o.proximalMu);
    try {
      return await run(new DenseReplica(setup, trainer), () => trainer.weights(), started);
    } finally {
      trainer.dispose();
    }
  }
  return withModel(o.spec, async (model) => {
    const started = performance.now();
    setFlatWeights(model, o.baseWeights);
    const replica = new GenericReplica(setup, model);
    try {
      return await run(replica, async () => getFlatWeights(model), started);
    } finally {
      replica.dispose();
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

async function runLoop(o: TrainLocallyOptions, stepper: Stepper, path: TrainingPath, started: number, threads = 1): Promise<TrainLocallyResult> {
  const { data } = o;
  const n = data.numExamples;
  const d = featureSize(data);
  const classes = data.numClasses;
  const batchSize = batchSizeOf(o);
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
  let startLoss = Number.NaN;
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
        const batch = stepper.step(xBuffer, yBuffer, size);
        // One device read for the whole run: the loss before training moved anything.
        if (examplesTrained === 0) startLoss = (await batch.loss.data())[0]! / size;
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
      threads,
      metrics: { loss, start_loss: startLoss, accuracy, seconds, examples_per_second: seconds > 0 ? examplesTrained / seconds : 0 },
    };
  } finally {
    resetEpochSums();
  }
}
