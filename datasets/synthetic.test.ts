import test from 'ava';
import { federatedData } from './index.js';
import { generateSynthetic, type SyntheticData } from './synthetic.js';

const sameBytes = (a: ArrayBufferView, b: ArrayBufferView): boolean =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

function identical(a: SyntheticData, b: SyntheticData): boolean {
  return (
    a.nodes.length === b.nodes.length &&
    a.nodes.every(
      (n, k) =>
        sameBytes(n.train.features, b.nodes[k].train.features) &&
        sameBytes(n.train.labels, b.nodes[k].train.labels) &&
        sameBytes(n.test.features, b.nodes[k].test.features),
    ) &&
    sameBytes(a.test.features, b.test.features) &&
    sameBytes(a.test.labels, b.test.labels)
  );
}

const base = { alpha: 1, beta: 1, numNodes: 30, seed: 11 };

test('deterministic in its inputs; another seed or beta changes the data', (t) => {
  const a = generateSynthetic(base);
  t.true(identical(a, generateSynthetic(base)));
  t.false(identical(a, generateSynthetic({ ...base, seed: 12 })));
  t.false(identical(a, generateSynthetic({ ...base, beta: 0.5 })));
});

test('alpha cannot change the data: its shift u_k is common to every class (a property of FedProx\'s definition)', (t) => {
  // W_k x + b_k gains u_k·(Σx + 1) in every class, so the argmax is the same.
  // Pinned so that a deliberate change to the generator shows up here.
  t.true(identical(generateSynthetic(base), generateSynthetic({ ...base, alpha: 5 })));
});

test('shapes, sizes and the 80/20 split', (t) => {
  const data = generateSynthetic({ ...base, dims: 20, classes: 5 });
  t.is(data.nodes.length, 30);
  let testTotal = 0;
  for (const { train, test: held } of data.nodes) {
    for (const ds of [train, held]) {
      t.deepEqual(ds.featureShape, [20]);
      t.is(ds.numClasses, 5);
      t.is(ds.features.length, ds.numExamples * 20);
      t.is(ds.labels.length, ds.numExamples);
      t.true(ds.labels.every((y) => y < 5));
      t.true(ds.features.every(Number.isFinite));
    }
    const total = train.numExamples + held.numExamples;
    t.true(total >= 50 && total <= 5000, `node size ${total}`);
    t.is(train.numExamples, Math.round(total * 0.8));
    testTotal += held.numExamples;
  }
  t.is(data.test.numExamples, testTotal);
  t.is(data.test.features.length, testTotal * 20);
  const sizes = data.nodes.map((n) => n.train.numExamples);
  t.true(Math.max(...sizes) > 3 * Math.min(...sizes), 'lognormal sizes are unequal');
  const defaults = generateSynthetic({ ...base, numNodes: 2 });
  t.deepEqual(defaults.test.featureShape, [60]);
  t.is(defaults.test.numClasses, 10);
});

test('label distributions differ from node to node', (t) => {
  const data = generateSynthetic({ alpha: 1, beta: 1, numNodes: 20, seed: 3 });
  const majority = data.nodes.map(({ train }) => {
    const h = new Array<number>(10).fill(0);
    for (const y of train.labels) h[y]++;
    return h.indexOf(Math.max(...h));
  });
  t.true(new Set(majority).size >= 4, `majority classes ${majority}`);
  // Across the federation every class occurs.
  t.is(new Set(data.test.labels).size, 10);
});

test('node k does not depend on how many nodes there are', (t) => {
  const small = generateSynthetic({ ...base, numNodes: 3 });
  const large = generateSynthetic({ ...base, numNodes: 8 });
  for (let k = 0; k < 3; k++) t.true(sameBytes(small.nodes[k].train.features, large.nodes[k].train.features));
});

test('generates a large federation: 200 nodes, each with train and test examples', (t) => {
  const data = generateSynthetic({ alpha: 0.5, beta: 0.5, numNodes: 200, seed: 1 });
  t.is(data.nodes.length, 200);
  t.true(data.nodes.every((n) => n.train.numExamples > 0 && n.test.numExamples > 0));
});

test('federatedData for synthetic returns node train sets and the union test set', async (t) => {
  const spec = { name: 'synthetic', alpha: 0.5, beta: 0.5, dimensions: 60, classes: 10, partition: { kind: 'natural' } } as const;
  const fed = await federatedData(spec, 10, 4);
  const direct = generateSynthetic({ alpha: 0.5, beta: 0.5, numNodes: 10, seed: 4 });
  t.is(fed.partitions.length, 10);
  fed.partitions.forEach((p, k) => t.true(sameBytes(p.features, direct.nodes[k].train.features)));
  t.true(sameBytes(fed.test.labels, direct.test.labels));
});

test('invalid parameters are clear errors', (t) => {
  t.throws(() => generateSynthetic({ ...base, alpha: -1 }), { message: /non-negative/ });
  t.throws(() => generateSynthetic({ ...base, numNodes: 0 }), { message: /number of nodes/ });
  t.throws(() => generateSynthetic({ ...base, classes: 1 }), { message: /classes/ });
});
