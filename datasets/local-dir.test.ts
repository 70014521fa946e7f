import test from 'ava';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatasetError } from './errors.js';
import { importCsv, LOCAL_DATA_MANIFEST, readLocalData, writeLocalData } from './local-dir.js';
import type { Dataset } from '../core/dataset.js';

const root = mkdtempSync(join(tmpdir(), 'crowdfl-local-'));
test.after.always(() => rmSync(root, { recursive: true, force: true }));
let count = 0;
const fresh = (): string => join(root, `case-${count++}`);

const toy: Dataset = {
  name: 'toy',
  featureShape: [2, 3],
  numClasses: 4,
  numExamples: 3,
  features: Float32Array.from({ length: 18 }, (_, i) => i / 7 - 1),
  labels: Uint8Array.of(3, 0, 2),
};

/** A written copy of `toy` whose manifest or files a test then damages. */
function written(): string {
  const dir = fresh();
  writeLocalData(dir, toy);
  return dir;
}

function editManifest(dir: string, edit: (m: Record<string, unknown>) => void): void {
  const path = join(dir, LOCAL_DATA_MANIFEST);
  const m = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  edit(m);
  writeFileSync(path, JSON.stringify(m));
}

function floatsLE(values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => b.writeFloatLE(v, i * 4));
  return b;
}

test('round trip through the directory format', (t) => {
  const dir = written();
  const manifest = JSON.parse(readFileSync(join(dir, LOCAL_DATA_MANIFEST), 'utf8')) as Record<string, unknown>;
  t.like(manifest, { format: 'crowdfl-data/1', examples: 3, feature_shape: [2, 3], num_classes: 4, features: 'features.f32', labels: 'labels.u8' });
  t.is(readFileSync(join(dir, 'features.f32')).length, 3 * 6 * 4);
  t.deepEqual(readFileSync(join(dir, 'features.f32')), floatsLE([...toy.features]));
  const back = readLocalData(dir);
  t.is(back.name, 'toy');
  t.deepEqual(back.featureShape, [2, 3]);
  t.is(back.numClasses, 4);
  t.is(back.numExamples, 3);
  t.deepEqual([...back.features], [...toy.features]);
  t.deepEqual([...back.labels], [3, 0, 2]);
});

test('hand-written directory without a name is read, named after the directory', (t) => {
  const dir = join(fresh(), 'clinic-a');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'x.bin'), floatsLE([1, 2, 3, 4]));
  writeFileSync(join(dir, 'y.bin'), Uint8Array.of(1, 0));
  writeFileSync(
    join(dir, LOCAL_DATA_MANIFEST),
    JSON.stringify({ format: 'crowdfl-data/1', examples: 2, feature_shape: [2], num_classes: 2, features: 'x.bin', labels: 'y.bin', note: 'extra keys are fine' }),
  );
  const ds = readLocalData(dir);
  t.is(ds.name, 'clinic-a');
  t.deepEqual([...ds.features], [1, 2, 3, 4]);
});

const errorCases: Array<[string, (dir: string) => string, RegExp]> = [
  ['missing directory', () => join(root, 'nope'), /data directory .*nope does not exist/],
  [
    'missing manifest',
    (dir) => {
      rmSync(join(dir, LOCAL_DATA_MANIFEST));
      return dir;
    },
    /has no crowdfl-data\.json/,
  ],
  [
    'manifest not JSON',
    (dir) => {
      writeFileSync(join(dir, LOCAL_DATA_MANIFEST), '{ examples: 3');
      return dir;
    },
    /is not valid JSON/,
  ],
  [
    'wrong format string',
    (dir) => {
      editManifest(dir, (m) => (m['format'] = 'crowdfl-data/2'));
      return dir;
    },
    /"format": "crowdfl-data\/2".*reads "crowdfl-data\/1"/,
  ],
  [
    'bad feature_shape',
    (dir) => {
      editManifest(dir, (m) => (m['feature_shape'] = [2, 0]));
      return dir;
    },
    /"feature_shape" must be a non-empty list of positive integers/,
  ],
  [
    'features file size does not match examples × feature size',
    (dir) => {
      editManifest(dir, (m) => (m['examples'] = 4));
      return dir;
    },
    /features\.f32 is 72 bytes, but 4 examples × 6 features × 4 bytes = 96 \(its size fits exactly 3 examples\)/,
  ],
  [
    'labels file size does not match',
    (dir) => {
      writeFileSync(join(dir, 'labels.u8'), Uint8Array.of(1, 2));
      return dir;
    },
    /labels\.u8 is 2 bytes, but it needs one byte per example \(3\)/,
  ],
  [
    'missing features file',
    (dir) => {
      rmSync(join(dir, 'features.f32'));
      return dir;
    },
    /features\.f32 does not exist.*names it as "features"/,
  ],
  [
    'label out of range',
    (dir) => {
      writeFileSync(join(dir, 'labels.u8'), Uint8Array.of(1, 9, 4));
      return dir;
    },
    /2 labels not below num_classes 4 \(first: example 1 has label 9\)/,
  ],
  [
    'NaN feature',
    (dir) => {
      const values = [...toy.features];
      values[8] = NaN;
      writeFileSync(join(dir, 'features.f32'), floatsLE(values));
      return dir;
    },
    /1 value is NaN or infinite \(first: example 1, feature 2 is NaN\)/,
  ],
  [
    'infinite features',
    (dir) => {
      const values = [...toy.features];
      values[3] = Infinity;
      values[17] = -Infinity;
      writeFileSync(join(dir, 'features.f32'), floatsLE(values));
      return dir;
    },
    /2 values are NaN or infinite \(first: example 0, feature 3 is Infinity\)/,
  ],
  [
    'data file outside the directory',
    (dir) => {
      editManifest(dir, (m) => (m['labels'] = '../labels.u8'));
      return dir;
    },
    /"labels" is "\.\.\/labels\.u8"; it must be a file name inside/,
  ],
];

for (const [name, damage, message] of errorCases) {
  test(`readLocalData error: ${name}`, (t) => {
    const dir = damage(written());
    const err = t.throws(() => readLocalData(dir), { instanceOf: DatasetError });
    t.regex(err.message, message);
  });
}

test('writeLocalData refuses inconsistent datasets', (t) => {
  t.throws(() => writeLocalData(fresh(), { ...toy, labels: Uint8Array.of(0, 4, 1) }), { message: /example 1 has label 4/ });
  t.throws(() => writeLocalData(fresh(), { ...toy, numExamples: 4 }), { message: /18 feature values, but 4 examples × 6 features = 24/ });
});

function csv(text: string): string {
  const path = join(fresh() + '.csv');
  writeFileSync(path, text);
  return path;
}

test('CSV with a header line', (t) => {
  const ds = importCsv(csv('label,a,b,c\n2,0.5,1,1.5\n0,-1,0,1e-3\n'));
  t.is(ds.numExamples, 2);
  t.deepEqual(ds.featureShape, [3]);
  t.is(ds.numClasses, 3);
  t.deepEqual([...ds.labels], [2, 0]);
  t.deepEqual([...ds.features], [0.5, 1, 1.5, -1, 0, Math.fround(1e-3)]);
});

test('CSV without a header, CRLF line ends, blank lines and explicit shape/classes', (t) => {
  const path = csv('1, 0, 1, 2, 3\r\n\r\n0, 4, 5, 6, 7\r\n');
  const ds = importCsv(path, { featureShape: [2, 2], numClasses: 10 });
  t.is(ds.numExamples, 2);
  t.deepEqual(ds.featureShape, [2, 2]);
  t.is(ds.numClasses, 10);
  t.deepEqual([...ds.features], [0, 1, 2, 3, 4, 5, 6, 7]);
  // And it round-trips through the directory format.
  const dir = fresh();
  writeLocalData(dir, ds);
  t.deepEqual([...readLocalData(dir).features], [0, 1, 2, 3, 4, 5, 6, 7]);
});

test('CSV errors name the line', (t) => {
  const wrongCount = csv('label,x,y\n0,1,2\n1,3,4\n1,5\n');
  t.throws(() => importCsv(wrongCount), { instanceOf: DatasetError, message: /line 4: 1 feature value after the label, expected 2/ });
  const notNumber = csv('0,1,2\n\n1,3,abc\n');
  t.throws(() => importCsv(notNumber), { message: /line 3: feature 2 is "abc", not a finite number/ });
  const badLabel = csv('0,1\n1.5,2\n');
  t.throws(() => importCsv(badLabel), { message: /line 2: the first field must be a class index 0\.\.255, got "1\.5"/ });
  const tooBig = csv('0,1\n7,2\n');
  t.throws(() => importCsv(tooBig, { numClasses: 5 }), { message: /line 2: label 7 is not below numClasses 5/ });
  const shape = csv('0,1,2,3\n');
  t.throws(() => importCsv(shape, { featureShape: [2, 2] }), { message: /line 1: 3 feature values after the label, expected 4/ });
  t.throws(() => importCsv(csv('label,x\n')), { message: /has no data lines/ });
  t.throws(() => importCsv(join(root, 'absent.csv')), { message: /absent\.csv does not exist/ });
});
