// Synthetic(α, β) from FedProx (Li et al., "Federated Optimization in
// Heterogeneous Networks", MLSys 2020). Each node k has its own softmax-linear
// model and its own input distribution:
//   u_k ~ N(0, α²), B_k ~ N(0, β²)
//   W_k[c][j], b_k[c] ~ N(u_k, 1);  v_k[j] ~ N(B_k, 1)
//   x ~ N(v_k, Σ), Σ diagonal with Σ_jj = j^(-1.2) for j = 1..dims
//   y = argmax(W_k x + b_k)
// α controls how much the nodes' models differ, β how much their inputs do.
// As in the FedProx reference code, α and β are standard deviations (the
// paper writes N(0, α), which reads like a variance).
//
// Caveat, inherent in that definition: u_k is added to every entry of W_k and
// b_k alike, so every logit gains the same u_k·(Σ_j x_j + 1) and the argmax
// does not change. α therefore has no effect on the generated (x, y); only β
// (input shift) and the per-node N(·, 1) draws make nodes differ. This module
// reproduces the definition faithfully rather than silently altering it.
//
// Node sizes are lognormal(4, 2) + 50 as in FedProx, capped because the
// lognormal's tail occasionally yields tens of thousands of samples.
import { z } from 'zod';
import type { DatasetDescriptor } from './descriptor.js';
import { DatasetError } from './errors.js';
import { Rng } from '../core/rng.js';
import type { Dataset } from '../core/dataset.js';

export interface SyntheticOptions {
  readonly alpha: number;
  readonly beta: number;
  readonly numNodes: number;
  readonly seed: number;
  /** Input dimensions; default 60. */
  readonly dims?: number;
  /** Number of classes; default 10. */
  readonly classes?: number;
  /** Upper bound on one node's sample count (train + test); default 5,000. */
  readonly maxSamplesPerNode?: number;
}

export interface SyntheticNode {
  readonly train: Dataset;
  readonly test: Dataset;
}

export interface SyntheticData {
  /** Per node: the first 80% of its samples to train on, the rest to test on. */
  readonly nodes: readonly SyntheticNode[];
  /** Union of all nodes' test portions, in node order. */
  readonly test: Dataset;
}

const TRAIN_FRACTION = 0.8;
const MIN_SAMPLES = 50;

/**
 * Generates every node's data. Node k draws only from
 * Rng.derive(seed, 'synthetic', k), so its data does not depend on how many
 * other nodes there are, and changing α or β rescales the same underlying
 * draws instead of reshuffling everything.
 */
export function generateSynthetic(opts: SyntheticOptions): SyntheticData {
  const dims = opts.dims ?? 60;
  const classes = opts.classes ?? 10;
  const cap = opts.maxSamplesPerNode ?? 5000;
  const { alpha, beta, numNodes, seed } = opts;
  if (!(alpha >= 0) || !(beta >= 0) || !Number.isFinite(alpha) || !Number.isFinite(beta)) {
    throw new DatasetError(`synthetic alpha and beta must be finite and non-negative, got alpha=${alpha}, beta=${beta}`);
  }
  if (!Number.isInteger(dims) || dims < 1) throw new DatasetError(`synthetic dimensions must be a positive integer, got ${dims}`);
  if (!Number.isInteger(classes) || classes < 2 || classes > 256) {
    throw new DatasetError(`synthetic classes must be an integer in 2..256 (labels are stored as bytes), got ${classes}`);
  }
  if (!Number.isInteger(numNodes) || numNodes < 1) throw new DatasetError(`the number of nodes must be a positive integer, got ${numNodes}`);
  if (!Number.isInteger(cap) || cap < MIN_SAMPLES) {
    throw new DatasetError(`maxSamplesPerNode must be an integer of at least ${MIN_SAMPLES}, got ${cap}`);
  }

  const std = new Float64Array(dims);
  for (let j = 0; j < dims; j++) std[j] = Math.pow(j + 1, -0.6); // sqrt(j^-1.2)

  const nodes: SyntheticNode[] = [];
  for (let k = 0; k < numNodes; k++) {
    const rng = Rng.derive(seed, 'synthetic', k);
    const samples = Math.min(cap, Math.floor(rng.lognormal(4, 2)) + MIN_SAMPLES);
    const u = rng.normal(0, alpha);
    const shift = rng.normal(0, beta);
    const w = new Float64Array(classes * dims);
    for (let i = 0; i < w.length; i++) w[i] = rng.normal(u, 1);
    const b = new Float64Array(classes);
    for (let c = 0; c < classes; c++) b[c] = rng.normal(u, 1);
    const v = new Float64Array(dims);
    for (let j = 0; j < dims; j++) v[j] = rng.normal(shift, 1);

    const features = new Float32Array(samples * dims);
    const labels = new Uint8Array(samples);
    const x = new Float64Array(dims);
    for (let s = 0; s < samples; s++) {
      for (let j = 0; j < dims; j++) {
        x[j] = v[j] + std[j] * rng.normal();
        features[s * dims + j] = x[j];
      }
      // softmax is monotone, so its argmax is the logits' argmax.
      let best = 0;
      let bestLogit = -Infinity;
      for (let c = 0; c < classes; c++) {
        let logit = b[c];
        for (let j = 0; j < dims; j++) logit += w[c * dims + j] * x[j];
        if (logit > bestLogit) {
          bestLogit = logit;
          best = c;
        }
      }
      labels[s] = best;
    }

    // Samples are i.i.d. within a node, so a contiguous cut is a random split.
    const nTrain = Math.round(samples * TRAIN_FRACTION);
    const slice = (from: number, to: number): Dataset => ({
      name: 'synthetic',
      featureShape: [dims],
      numClasses: classes,
      numExamples: to - from,
      features: features.slice(from * dims, to * dims),
      labels: labels.slice(from, to),
    });
    nodes.push({ train: slice(0, nTrain), test: slice(nTrain, samples) });
  }

  const total = nodes.reduce((a, n) => a + n.test.numExamples, 0);
  const features = new Float32Array(total * dims);
  const labels = new Uint8Array(total);
  let off = 0;
  for (const { test } of nodes) {
    features.set(test.features, off * dims);
    labels.set(test.labels, off);
    off += test.numExamples;
  }
  return {
    nodes,
    test: { name: 'synthetic', featureShape: [dims], numClasses: classes, numExamples: total, features, labels },
  };
}

const syntheticSchema = z
  .object({
    name: z.literal('synthetic'),
    alpha: z.number().nonnegative().describe('FedProx\'s model-heterogeneity parameter (see datasets/README.md: it does not change the labels)'),
    beta: z.number().nonnegative().describe('how much the nodes\' inputs differ'),
    dimensions: z.number().int().positive().default(60),
    classes: z.number().int().min(2).default(10),
    partition: z.object({ kind: z.literal('natural') }).strict().default({ kind: 'natural' }),
  })
  .strict();

/** Each node's data is generated separately; the test set is the union of the nodes' held-out 20%. */
export const synthetic: DatasetDescriptor<typeof syntheticSchema> = {
  name: 'synthetic',
  schema: syntheticSchema,
  async federatedData(spec, numNodes, seed) {
    const data = generateSynthetic({
      alpha: spec.alpha,
      beta: spec.beta,
      dims: spec.dimensions,
      classes: spec.classes,
      numNodes,
      seed,
    });
    return { test: data.test, partitions: data.nodes.map((n) => n.train) };
  },
  // The test data is the union of the nodes' held-out parts, so it needs the nodes.
  async testData(spec, numNodes, seed, opts) {
    return (await synthetic.federatedData(spec, numNodes, seed, opts)).test;
  },
};
