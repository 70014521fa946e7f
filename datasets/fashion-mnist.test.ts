import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cacheInfo, federatedData, loadSplit } from './index.js';

// One fresh cache per run, so the build path (and its log) is exercised every
// time; all tests in this file share it and run serially for honest timings.
const dir = mkdtempSync(join(tmpdir(), 'crowdfl-fmnist-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function fnv(bytes: ArrayLike<number>): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
  return h;
}

test.serial('first load builds the cache and reports the malformed records', async (t) => {
  const messages: string[] = [];
  const start = performance.now();
  const train = await loadSplit('fashion-mnist', 'train', { cacheDir: dir, log: (m) => messages.push(m) });
  t.log(`cache build + first load: ${Math.round(performance.now() - start)} ms`);
  t.is(train.numExamples, 60_000);
  t.true(messages.some((m) => m.includes('building')));
  t.true(messages.includes('fashion-mnist: skipped 2 malformed records (class 0)'), messages.join('\n'));
});

test.serial('a cached load reads only the cache and is fast', async (t) => {
  const messages: string[] = [];
  const start = performance.now();
  const train = await loadSplit('fashion-mnist', 'train', { cacheDir: dir, log: (m) => messages.push(m) });
  const ms = performance.now() - start;
  t.log(`cached train load: ${Math.round(ms)} ms`);
  t.is(train.numExamples, 60_000);
  t.deepEqual(messages, []);
  // No build message above is the proof the cache was used; the time bound only catches
  // pathological slowness, loosely, since a loaded 2-core machine can be slow for a moment.
  t.true(ms < 10_000, `cached load took ${ms} ms`);
});

test.serial('60,000 train + 10,000 test, labels 0..9, pixels in [0, 1]', async (t) => {
  for (const [split, count] of [['train', 60_000], ['test', 10_000]] as const) {
    const ds = await loadSplit('fashion-mnist', split, { cacheDir: dir });
    t.is(ds.name, 'fashion-mnist');
    t.deepEqual(ds.featureShape, [28, 28, 1]);
    t.is(ds.numClasses, 10);
    t.is(ds.numExamples, count);
    t.is(ds.features.length, count * 784);
    t.is(ds.labels.length, count);
    const perClass = new Array<number>(10).fill(0);
    for (const y of ds.labels) perClass[y]++;
    t.true(perClass.every((c) => c > count * 0.08), `class counts ${perClass}`);
    let min = Infinity;
    let max = -Infinity;
    for (const v of ds.features) {
      if (v < min) min = v;
      if (v > max) max = v;
    }
    t.is(min, 0);
    t.is(max, 1);
  }
});

test.serial('the header records counts, skipped records and the source version', async (t) => {
  const h = await cacheInfo('fashion-mnist', { cacheDir: dir });
  t.is(h.train.examples, 60_000);
  t.is(h.test.examples, 10_000);
  t.is(h.skipped.total, 2);
  t.is(h.skipped.byClass[0], 2);
  t.is(h.source.package, 'fashion-mnist');
  t.regex(h.source.version, /^\d+\.\d+\.\d+/);
});

test.serial('the split is the same on every machine', async (t) => {
  // Pinned fingerprints: if these change, every fashion-mnist result changes.
  const testSplit = await loadSplit('fashion-mnist', 'test', { cacheDir: dir });
  t.is(fnv(testSplit.labels), 1987073282);
  t.is(fnv(testSplit.features.subarray(0, 784).map((v) => Math.round(v * 255))), 185766319);
});

test.serial('federatedData partitions the train split and returns the test split', async (t) => {
  const data = await federatedData({ name: 'fashion-mnist', partition: { kind: 'shards', shards_per_node: 2 } }, 100, 3, {
    cacheDir: dir,
  });
  t.is(data.partitions.length, 100);
  t.is(data.partitions.reduce((a, p) => a + p.numExamples, 0), 60_000);
  t.is(data.test.numExamples, 10_000);
  for (const p of data.partitions) t.true(new Set(p.labels).size <= 3);
});
