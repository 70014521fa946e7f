import test from 'ava';
import { DatasetError } from './errors.js';
import { dirichlet, iid, partitionIndices, quantity, shards, subset, capPartitions } from './partition.js';
import { Rng } from '../core/rng.js';
import type { Dataset } from '../core/dataset.js';

/** `perClass` examples of each of `classes` labels, in label order. */
function sortedLabels(classes: number, perClass: number): Uint8Array {
  const labels = new Uint8Array(classes * perClass);
  for (let i = 0; i < labels.length; i++) labels[i] = Math.floor(i / perClass);
  return labels;
}

function assertExactCover(t: import('ava').ExecutionContext, parts: Uint32Array[], n: number): void {
  const seen = new Uint8Array(n);
  for (const p of parts) {
    t.true(p.length > 0, 'every node has data');
    for (const i of p) {
      t.true(i < n);
      seen[i]++;
    }
  }
  t.true(seen.every((c) => c === 1), 'every index used exactly once');
}

function classHistogram(labels: Uint8Array, indices: Uint32Array, classes: number): number[] {
  const h = new Array<number>(classes).fill(0);
  for (const i of indices) h[labels[i]]++;
  return h;
}

const labels = sortedLabels(10, 300); // 3,000 examples
const n = labels.length;

const all: Array<[string, (rng: Rng) => Uint32Array[]]> = [
  ['iid', (rng) => iid(n, 17, rng)],
  ['dirichlet', (rng) => dirichlet(labels, 10, 17, 0.3, rng)],
  ['shards', (rng) => shards(labels, 17, 2, rng)],
  ['quantity', (rng) => quantity(n, 17, 0.5, rng)],
];

for (const [name, partition] of all) {
  test(`${name}: exact cover, deterministic per seed, different across seeds`, (t) => {
    const a = partition(new Rng(1));
    t.is(a.length, 17);
    assertExactCover(t, a, n);
    t.deepEqual(partition(new Rng(1)), a);
    t.notDeepEqual(partition(new Rng(2)), a);
  });
}

test('iid: sizes differ by at most one', (t) => {
  const sizes = iid(1003, 10, new Rng(3)).map((p) => p.length);
  t.is(Math.max(...sizes) - Math.min(...sizes), 1);
});

test('dirichlet with small alpha is skewed: most nodes dominated by two classes', (t) => {
  const parts = dirichlet(labels, 10, 20, 0.1, new Rng(4));
  const dominated = parts.filter((p) => {
    const h = classHistogram(labels, p, 10).sort((a, b) => b - a);
    return (h[0] + h[1]) / p.length >= 0.7;
  });
  t.true(dominated.length >= 14, `${dominated.length} of 20 nodes dominated`);
});

test('dirichlet with large alpha is close to uniform', (t) => {
  const big = sortedLabels(10, 1000);
  const parts = dirichlet(big, 10, 10, 1000, new Rng(5));
  for (const p of parts) {
    const h = classHistogram(big, p, 10);
    t.true(Math.max(...h) / p.length < 0.15, `class shares ${h.map((c) => (c / p.length).toFixed(2))}`);
    t.true(Math.abs(p.length - 1000) < 150);
  }
});

test('dirichlet with tiny alpha and many nodes still gives every node the minimum', (t) => {
  const parts = dirichlet(labels, 10, 200, 0.01, new Rng(6));
  assertExactCover(t, parts, n);
  t.true(parts.every((p) => p.length >= 10), `smallest ${Math.min(...parts.map((p) => p.length))}`);
  // The minimum is capped so it stays reachable.
  const tight = dirichlet(labels, 10, 1000, 0.01, new Rng(6));
  t.true(tight.every((p) => p.length === 3));
  const custom = dirichlet(labels, 10, 50, 0.01, new Rng(6), { minPerNode: 30 });
  t.true(custom.every((p) => p.length >= 30));
});

test('dirichlet rejects labels outside the classes', (t) => {
  t.throws(() => dirichlet(Uint8Array.of(0, 1, 5), 3, 2, 1, new Rng(1)), { instanceOf: DatasetError, message: /label 5/ });
});

test('shards: with 2 shards per node on label-sorted data, each node sees at most 2 labels', (t) => {
  // 10 classes × 100 examples, 50 nodes × 2 shards = 100 shards of 10: no
  // shard straddles a class boundary.
  const toy = sortedLabels(10, 100);
  const parts = shards(toy, 50, 2, new Rng(7));
  assertExactCover(t, parts, toy.length);
  for (const p of parts) {
    t.is(p.length, 20);
    t.true(new Set([...p].map((i) => toy[i])).size <= 2);
  }
  // Shuffled labels give the same guarantee: shards sorts first.
  const shuffled = new Rng(8).shuffle(Uint8Array.from(toy));
  for (const p of shards(shuffled, 50, 2, new Rng(9))) t.true(new Set([...p].map((i) => shuffled[i])).size <= 2);
});

test('shards: too few examples is a clear error', (t) => {
  t.throws(() => shards(sortedLabels(2, 5), 4, 3, new Rng(1)), {
    instanceOf: DatasetError,
    message: /4 nodes × 3 shards need at least 12 examples/,
  });
});

test('quantity: unequal sizes that sum to the total, at least one each', (t) => {
  const parts = quantity(10_000, 20, 0.5, new Rng(10));
  const sizes = parts.map((p) => p.length);
  t.is(sizes.reduce((a, b) => a + b, 0), 10_000);
  t.true(Math.min(...sizes) >= 1);
  t.true(Math.max(...sizes) > 4 * Math.min(...sizes), `sizes ${sizes}`);
  // Tiny alpha: most mass on few nodes, the others keep their one example.
  const extreme = quantity(1000, 50, 0.01, new Rng(11)).map((p) => p.length);
  t.true(extreme.every((s) => s >= 1));
  t.is(extreme.reduce((a, b) => a + b, 0), 1000);
});

test('more nodes than examples is a clear error', (t) => {
  t.throws(() => iid(5, 6, new Rng(1)), { instanceOf: DatasetError, message: /6 nodes.*5 examples/ });
});

test('partitionIndices dispatches on the spec and is deterministic in the seed', (t) => {
  const a = partitionIndices({ kind: 'dirichlet', alpha: 0.5 }, labels, 10, 8, 123);
  assertExactCover(t, a, n);
  t.deepEqual(partitionIndices({ kind: 'dirichlet', alpha: 0.5 }, labels, 10, 8, 123), a);
  t.notDeepEqual(partitionIndices({ kind: 'dirichlet', alpha: 0.5 }, labels, 10, 8, 124), a);
  t.is(partitionIndices({ kind: 'iid' }, labels, 10, 8, 1).length, 8);
  const s = partitionIndices({ kind: 'shards', shards_per_node: 1 }, labels, 10, 10, 1);
  for (const p of s) t.is(new Set([...p].map((i) => labels[i])).size, 1);
  assertExactCover(t, partitionIndices({ kind: 'quantity', alpha: 1 }, labels, 10, 8, 1), n);
});

test('partitionIndices: "natural" is only for synthetic data', (t) => {
  t.throws(() => partitionIndices({ kind: 'natural' }, labels, 10, 4, 1), {
    instanceOf: DatasetError,
    message: /only for synthetic data/,
  });
});

test('subset copies the chosen examples in order', (t) => {
  const ds: Dataset = {
    name: 'toy',
    featureShape: [2],
    numClasses: 3,
    numExamples: 4,
    features: Float32Array.of(0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5),
    labels: Uint8Array.of(0, 1, 2, 0),
  };
  const s = subset(ds, [3, 1]);
  t.is(s.numExamples, 2);
  t.deepEqual([...s.features], [3, 3.5, 1, 1.5]);
  t.deepEqual([...s.labels], [0, 1]);
  t.deepEqual(s.featureShape, [2]);
  t.throws(() => subset(ds, [4]), { instanceOf: RangeError });
});

test('capPartitions keeps at most n examples per node, from its own, at random but reproducibly', (t) => {
  // Label-sorted partitions: a cap that took the first n would keep one label.
  const parts = [Uint32Array.from({ length: 100 }, (_, i) => i), Uint32Array.from({ length: 100 }, (_, i) => 100 + i), Uint32Array.from([7, 8])];
  const capped = capPartitions(parts, 10, 3);
  t.deepEqual(capped.map((p) => p.length), [10, 10, 2]);
  capped.forEach((p, node) => t.true([...p].every((i) => parts[node]!.includes(i)), `node ${node} keeps only its own examples`));
  t.true(new Set(capped[0]).size === 10);
  t.true(Math.max(...capped[0]!) >= 50, 'drawn from the whole partition, not its head');
  t.deepEqual(capPartitions(parts, 10, 3), capped);
  t.notDeepEqual(capPartitions(parts, 10, 4)[0], capped[0]);
  t.throws(() => capPartitions(parts, 0, 3), { message: /examples_per_node must be a positive integer/ });
});
