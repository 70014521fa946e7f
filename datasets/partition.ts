// Splits one dataset's examples among simulated nodes. Every partitioner is a
// pure function of its arguments and the Rng it is given, returns one
// Uint32Array of example indices per node, uses each index exactly once, and
// gives every node at least one example (so every node can train).
import type { PartitionSpec } from './partition-spec.js';
import { DatasetError } from './errors.js';
import { Rng } from '../core/rng.js';
import { featureSize, type Dataset } from '../core/dataset.js';

function checkCounts(numExamples: number, numNodes: number): void {
  if (!Number.isInteger(numNodes) || numNodes < 1) {
    throw new DatasetError(`the number of nodes must be a positive integer, got ${numNodes}`);
  }
  if (numExamples < numNodes) {
    throw new DatasetError(
      `cannot give each of ${numNodes} nodes at least one of ${numExamples} examples; use at most ${numExamples} nodes`,
    );
  }
}

function checkAlpha(alpha: number, what: string): void {
  if (!(alpha > 0) || !Number.isFinite(alpha)) {
    throw new DatasetError(`${what} alpha must be a positive number, got ${alpha}`);
  }
}

/** Consecutive runs of `order` with the given lengths (which sum to order.length). */
function cut(order: Uint32Array, sizes: ArrayLike<number>): Uint32Array[] {
  const parts: Uint32Array[] = [];
  let start = 0;
  for (let k = 0; k < sizes.length; k++) {
    parts.push(order.slice(start, start + sizes[k]));
    start += sizes[k];
  }
  return parts;
}

/**
 * Integer shares of `total` proportional to `p` (which sums to 1), summing to
 * exactly `total`: boundaries are the rounded cumulative proportions.
 */
function apportion(total: number, p: ArrayLike<number>): Uint32Array {
  const sizes = new Uint32Array(p.length);
  let cumulative = 0;
  let previous = 0;
  for (let k = 0; k < p.length; k++) {
    cumulative += p[k];
    const boundary = k === p.length - 1 ? total : Math.min(total, Math.round(cumulative * total));
    sizes[k] = Math.max(0, boundary - previous);
    previous = Math.max(previous, boundary);
  }
  return sizes;
}

function checkLabels(labels: ArrayLike<number>, numClasses: number): void {
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i];
    if (!Number.isInteger(y) || y < 0 || y >= numClasses) {
      throw new DatasetError(`example ${i} has label ${y}, outside 0..${numClasses - 1}`);
    }
  }
}

/** Uniformly random, equal-size (±1) shards: every node sees the global label mix. */
export function iid(numExamples: number, numNodes: number, rng: Rng): Uint32Array[] {
  checkCounts(numExamples, numNodes);
  const base = Math.floor(numExamples / numNodes);
  const extra = numExamples % numNodes;
  const sizes = Array.from({ length: numNodes }, (_, k) => base + (k < extra ? 1 : 0));
  return cut(rng.permutation(numExamples), sizes);
}

export interface DirichletOptions {
  /**
   * Smallest node size after the top-up described on dirichlet(); capped at
   * floor(examples / nodes) so it is always reachable. Default 10.
   */
  readonly minPerNode?: number;
}

/**
 * Label skew (Hsu et al. 2019): for each class independently, a draw
 * q ~ Dirichlet(alpha, ..., alpha) over nodes decides what fraction of that
 * class each node gets. Small alpha (0.1) gives most nodes a few dominant
 * classes; large alpha (100) approaches IID.
 *
 * With small alpha many nodes can draw almost nothing from every class.
 * Resampling until all are big enough can take unboundedly long for many
 * nodes, so instead nodes below the minimum are topped up with random
 * examples taken one at a time from whichever node is currently largest.
 * That moves few examples (at most nodes × minimum) and takes them from the
 * nodes least affected by losing some, so the skew is kept.
 */
export function dirichlet(
  labels: ArrayLike<number>,
  numClasses: number,
  numNodes: number,
  alpha: number,
  rng: Rng,
  opts: DirichletOptions = {},
): Uint32Array[] {
  const n = labels.length;
  checkCounts(n, numNodes);
  checkAlpha(alpha, 'dirichlet partition');
  checkLabels(labels, numClasses);
  const minimum = Math.min(opts.minPerNode ?? 10, Math.floor(n / numNodes));

  const byClass: number[][] = Array.from({ length: numClasses }, () => []);
  for (let i = 0; i < n; i++) byClass[labels[i]].push(i);

  const nodes: number[][] = Array.from({ length: numNodes }, () => []);
  const alphas = new Float64Array(numNodes).fill(alpha);
  for (const members of byClass) {
    if (members.length === 0) continue;
    rng.shuffle(members);
    const sizes = apportion(members.length, rng.dirichlet(alphas));
    let start = 0;
    for (let k = 0; k < numNodes; k++) {
      for (let j = start; j < start + sizes[k]; j++) nodes[k].push(members[j]);
      start += sizes[k];
    }
  }

  topUp(nodes, minimum, rng);
  return nodes.map((list) => rng.shuffle(Uint32Array.from(list)));
}

/** Moves random examples from the largest nodes to those below `minimum`. */
function topUp(nodes: number[][], minimum: number, rng: Rng): void {
  // Max-heap of donor node ids keyed by size; only nodes above the minimum
  // can donate, and a donor leaves the heap when it reaches the minimum.
  const heap: number[] = [];
  const size = (k: number): number => nodes[k].length;
  const swap = (i: number, j: number): void => {
    const t = heap[i];
    heap[i] = heap[j];
    heap[j] = t;
  };
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && size(heap[l]) > size(heap[m])) m = l;
      if (r < heap.length && size(heap[r]) > size(heap[m])) m = r;
      if (m === i) return;
      swap(i, m);
      i = m;
    }
  };
  for (let k = 0; k < nodes.length; k++) if (size(k) > minimum) heap.push(k);
  for (let i = (heap.length >> 1) - 1; i >= 0; i--) siftDown(i);

  for (let k = 0; k < nodes.length; k++) {
    while (size(k) < minimum) {
      // Non-empty by counting: all nodes at or below minimum with one below
      // it would hold fewer than nodes × minimum ≤ total examples.
      const donor = nodes[heap[0]];
      const j = rng.int(donor.length);
      nodes[k].push(donor[j]);
      donor[j] = donor[donor.length - 1];
      donor.pop();
      if (donor.length <= minimum) {
        heap[0] = heap[heap.length - 1];
        heap.pop();
      }
      if (heap.length > 0) siftDown(0);
    }
  }
}

/**
 * McMahan et al. 2017's pathological non-IID split: sort examples by label,
 * cut the sorted order into numNodes × shardsPerNode equal (±1) shards, and
 * give each node shardsPerNode random shards, so a node sees at most
 * shardsPerNode classes when shards do not straddle a class boundary.
 * Within a class the order is random, so a shard is a random sample of it.
 */
export function shards(labels: ArrayLike<number>, numNodes: number, shardsPerNode: number, rng: Rng): Uint32Array[] {
  const n = labels.length;
  if (!Number.isInteger(shardsPerNode) || shardsPerNode < 1) {
    throw new DatasetError(`shards_per_node must be a positive integer, got ${shardsPerNode}`);
  }
  checkCounts(n, numNodes);
  const numShards = numNodes * shardsPerNode;
  if (n < numShards) {
    throw new DatasetError(
      `${numNodes} nodes × ${shardsPerNode} shards need at least ${numShards} examples, but there are ${n}; ` +
        `use fewer nodes or a smaller shards_per_node`,
    );
  }
  let maxLabel = 0;
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    if (!Number.isInteger(y) || y < 0) throw new DatasetError(`example ${i} has label ${y}, not a class index`);
    if (y > maxLabel) maxLabel = y;
  }
  // Counting sort of a random permutation: stable, so each class's block
  // keeps the random order.
  const perm = rng.permutation(n);
  const start = new Uint32Array(maxLabel + 2);
  for (let i = 0; i < n; i++) start[labels[i] + 1]++;
  for (let c = 1; c < start.length; c++) start[c] += start[c - 1];
  const sorted = new Uint32Array(n);
  for (const i of perm) sorted[start[labels[i]]++] = i;

  const shardOrder = rng.permutation(numShards);
  const parts: Uint32Array[] = [];
  for (let k = 0; k < numNodes; k++) {
    const pieces: Uint32Array[] = [];
    for (let j = 0; j < shardsPerNode; j++) {
      const s = shardOrder[k * shardsPerNode + j];
      pieces.push(sorted.subarray(Math.floor((s * n) / numShards), Math.floor(((s + 1) * n) / numShards)));
    }
    const node = new Uint32Array(pieces.reduce((a, p) => a + p.length, 0));
    let off = 0;
    for (const p of pieces) {
      node.set(p, off);
      off += p.length;
    }
    parts.push(rng.shuffle(node));
  }
  return parts;
}

/**
 * Quantity skew: node sizes follow Dirichlet(alpha, ..., alpha) over nodes
 * (plus one example each, so none is empty); which examples go where is
 * uniformly random, so labels stay IID. Small alpha gives very unequal sizes.
 */
export function quantity(numExamples: number, numNodes: number, alpha: number, rng: Rng): Uint32Array[] {
  checkCounts(numExamples, numNodes);
  checkAlpha(alpha, 'quantity partition');
  const shares = apportion(numExamples - numNodes, rng.dirichlet(new Float64Array(numNodes).fill(alpha)));
  for (let k = 0; k < numNodes; k++) shares[k] += 1;
  return cut(rng.permutation(numExamples), shares);
}

/**
 * Partitions per an experiment's spec. The Rng is derived from `seed` and the
 * partition kind, so the same experiment seed used elsewhere (weight init,
 * node sampling) draws an unrelated stream.
 */
export function partitionIndices(
  spec: PartitionSpec,
  labels: ArrayLike<number>,
  numClasses: number,
  numNodes: number,
  seed: number,
): Uint32Array[] {
  const rng = Rng.derive(seed, 'partition', spec.kind);
  switch (spec.kind) {
    case 'iid':
      return iid(labels.length, numNodes, rng);
    case 'dirichlet':
      return dirichlet(labels, numClasses, numNodes, spec.alpha, rng);
    case 'shards':
      return shards(labels, numNodes, spec.shards_per_node, rng);
    case 'quantity':
      return quantity(labels.length, numNodes, spec.alpha, rng);
    case 'natural':
      throw new DatasetError(
        'the "natural" partition exists only for synthetic data, whose nodes are generated separately; ' +
          'for fashion-mnist or mnist use iid, dirichlet, shards or quantity',
      );
  }
}

/**
 * Each node's partition cut to at most `perNode` examples, drawn at random (seeded by `seed` and the
 * node's position) so that a label-sorted partition keeps its label mix; a smaller partition is kept whole.
 */
export function capPartitions(parts: readonly Uint32Array[], perNode: number, seed: number): Uint32Array[] {
  if (!Number.isInteger(perNode) || perNode < 1) throw new RangeError(`examples_per_node must be a positive integer; got ${perNode}`);
  return parts.map((indices, node) => {
    if (indices.length <= perNode) return indices;
    const order = Rng.derive(seed, 'examples_per_node', node).permutation(indices.length);
    return Uint32Array.from(order.subarray(0, perNode), (k) => indices[k]!).sort();
  });
}

/** A new Dataset holding copies of the given examples, in the given order. */
export function subset(ds: Dataset, indices: ArrayLike<number>): Dataset {
  const f = featureSize(ds);
  const m = indices.length;
  const features = new Float32Array(m * f);
  const labels = new Uint8Array(m);
  for (let i = 0; i < m; i++) {
    const src = indices[i];
    if (!Number.isInteger(src) || src < 0 || src >= ds.numExamples) {
      throw new RangeError(`subset: index ${src} is outside 0..${ds.numExamples - 1}`);
    }
    features.set(ds.features.subarray(src * f, src * f + f), i * f);
    labels[i] = ds.labels[src];
  }
  return { name: ds.name, featureShape: [...ds.featureShape], numClasses: ds.numClasses, numExamples: m, features, labels };
}
