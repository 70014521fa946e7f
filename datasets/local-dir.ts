/**
 * On-disk format for a node operator's own data ("crowdfl-data/1").
 *
 * A directory holding three files:
 *
 *   crowdfl-data.json   the manifest:
 *     {
 *       "format": "crowdfl-data/1",
 *       "examples": N,                 // number of examples, ≥ 1
 *       "feature_shape": [28, 28, 1],  // shape of one example; F = product
 *       "num_classes": C,              // 2..256
 *       "features": "features.f32",    // file names, relative to the directory
 *       "labels": "labels.u8",
 *       "name": "my-data"              // optional
 *     }
 *   features.f32        N × F little-endian IEEE-754 float32 values, one
 *                       example after another, row-major within an example;
 *                       exactly N × F × 4 bytes, no header, all finite
 *   labels.u8           N bytes, one class index per example, each < C
 *
 * Other manifest keys are ignored, so tools may add their own.
 * readLocalData() checks all of this and says how to fix what is wrong;
 * importCsv() converts a CSV file (label first, then features) and
 * writeLocalData() stores any Dataset in this format.
 */
import { readFileSync, statSync } from 'node:fs';
import { endianness } from 'node:os';
import { basename, extname, isAbsolute, join, normalize, sep } from 'node:path';
import { writeAtomically } from './cache.js';
import { DatasetError } from './errors.js';
import { featureSize, type Dataset } from '../core/dataset.js';

export const LOCAL_DATA_FORMAT = 'crowdfl-data/1';
export const LOCAL_DATA_MANIFEST = 'crowdfl-data.json';

export interface LocalDataManifest {
  readonly format: typeof LOCAL_DATA_FORMAT;
  readonly examples: number;
  readonly feature_shape: readonly number[];
  readonly num_classes: number;
  readonly features: string;
  readonly labels: string;
  readonly name?: string;
}

const LITTLE_ENDIAN_HOST = endianness() === 'LE';
const SEE_FORMAT = 'see datasets/README.md for the format';

function float32ToLittleEndianBytes(values: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN_HOST) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i], true);
  return out;
}

function littleEndianBytesToFloat32(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.length / 4);
  // Copy rather than view: a Buffer from readFileSync need not be 4-byte aligned.
  if (LITTLE_ENDIAN_HOST) {
    new Uint8Array(out.buffer).set(bytes);
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  }
  return out;
}

/** Checks a Dataset's internal consistency; `what` prefixes the messages. */
function checkDataset(ds: Dataset, what: string): void {
  const f = featureSize(ds);
  if (!Number.isInteger(ds.numExamples) || ds.numExamples < 1) throw new DatasetError(`${what}: it has no examples`);
  if (!Number.isInteger(ds.numClasses) || ds.numClasses < 2 || ds.numClasses > 256) {
    throw new DatasetError(`${what}: num_classes must be an integer in 2..256 (labels are bytes), got ${ds.numClasses}`);
  }
  if (ds.features.length !== ds.numExamples * f) {
    throw new DatasetError(
      `${what}: ${ds.features.length} feature values, but ${ds.numExamples} examples × ${f} features = ${ds.numExamples * f}`,
    );
  }
  if (ds.labels.length !== ds.numExamples) {
    throw new DatasetError(`${what}: ${ds.labels.length} labels for ${ds.numExamples} examples`);
  }
}

/** Writes `ds` to `dir` in crowdfl-data/1 format, creating the directory if needed. */
export function writeLocalData(dir: string, ds: Dataset): void {
  const what = `cannot write ${ds.name} to ${dir}`;
  checkDataset(ds, what);
  for (let i = 0; i < ds.labels.length; i++) {
    if (ds.labels[i] >= ds.numClasses) {
      throw new DatasetError(`${what}: example ${i} has label ${ds.labels[i]}, not below num_classes ${ds.numClasses}`);
    }
  }
  const bad = firstNonFinite(ds.features);
  if (bad >= 0) {
    const f = featureSize(ds);
    throw new DatasetError(`${what}: example ${Math.floor(bad / f)} feature ${bad % f} is ${ds.features[bad]}`);
  }
  const manifest: LocalDataManifest = {
    format: LOCAL_DATA_FORMAT,
    examples: ds.numExamples,
    feature_shape: [...ds.featureShape],
    num_classes: ds.numClasses,
    features: 'features.f32',
    labels: 'labels.u8',
    name: ds.name,
  };
  // Data first, manifest last: a reader that sees the new manifest also sees
  // the data it describes.
  writeAtomically(join(dir, manifest.features), [float32ToLittleEndianBytes(ds.features)]);
  writeAtomically(join(dir, manifest.labels), [ds.labels]);
  writeAtomically(join(dir, LOCAL_DATA_MANIFEST), [Buffer.from(JSON.stringify(manifest, null, 2) + '\n', 'utf8')]);
}

function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) return i;
  }
  return -1;
}

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/** A manifest file name must stay inside the data directory. */
function dataFile(dir: string, manifestPath: string, key: 'features' | 'labels', value: unknown, example: string): string {
  if (typeof value !== 'string' || value === '') {
    throw new DatasetError(`${manifestPath}: "${key}" must name the ${key} file, e.g. "${key}": "${example}"; ${SEE_FORMAT}`);
  }
  const rel = normalize(value);
  if (isAbsolute(rel) || rel === '..' || rel.startsWith(`..${sep}`)) {
    throw new DatasetError(`${manifestPath}: "${key}" is "${value}"; it must be a file name inside ${dir}, e.g. "${example}"`);
  }
  return join(dir, rel);
}

interface ReadManifest {
  readonly manifestPath: string;
  readonly manifest: LocalDataManifest;
  readonly featuresPath: string;
  readonly labelsPath: string;
}

function readManifest(dir: string): ReadManifest {
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new DatasetError(
        `data directory ${dir} does not exist; point to a directory holding ${LOCAL_DATA_MANIFEST}, features.f32 and labels.u8 (${SEE_FORMAT})`,
      );
    }
    throw err;
  }
  if (!isDir) throw new DatasetError(`${dir} is a file, not a data directory; point to the directory holding ${LOCAL_DATA_MANIFEST}`);

  const manifestPath = join(dir, LOCAL_DATA_MANIFEST);
  let text: string;
  try {
    text = readFileSync(manifestPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new DatasetError(
        `${dir} has no ${LOCAL_DATA_MANIFEST}; write one describing features.f32 and labels.u8, ` +
          `or create the directory with importCsv()/writeLocalData() (${SEE_FORMAT})`,
      );
    }
    throw err;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new DatasetError(`${manifestPath} is not valid JSON: ${(err as Error).message}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new DatasetError(`${manifestPath} must hold a JSON object; ${SEE_FORMAT}`);
  }
  const m = raw as Record<string, unknown>;
  if (m['format'] !== LOCAL_DATA_FORMAT) {
    throw new DatasetError(
      `${manifestPath} has "format": ${JSON.stringify(m['format'] ?? null)}; this crowdfl reads "${LOCAL_DATA_FORMAT}" ` +
        `(add "format": "${LOCAL_DATA_FORMAT}" if the files follow that layout)`,
    );
  }
  if (!isPositiveInt(m['examples'])) {
    throw new DatasetError(`${manifestPath}: "examples" must be the number of examples (a positive integer), got ${JSON.stringify(m['examples'])}`);
  }
  const shape = m['feature_shape'];
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every(isPositiveInt)) {
    throw new DatasetError(
      `${manifestPath}: "feature_shape" must be a non-empty list of positive integers such as [28, 28, 1] or [60], got ${JSON.stringify(shape)}`,
    );
  }
  const classes = m['num_classes'];
  if (typeof classes !== 'number' || !Number.isInteger(classes) || classes < 2 || classes > 256) {
    throw new DatasetError(`${manifestPath}: "num_classes" must be an integer in 2..256 (labels are bytes), got ${JSON.stringify(classes)}`);
  }
  const featuresPath = dataFile(dir, manifestPath, 'features', m['features'], 'features.f32');
  const labelsPath = dataFile(dir, manifestPath, 'labels', m['labels'], 'labels.u8');
  const name = m['name'];
  return {
    manifestPath,
    featuresPath,
    labelsPath,
    manifest: {
      format: LOCAL_DATA_FORMAT,
      examples: m['examples'],
      feature_shape: shape as number[],
      num_classes: classes,
      features: m['features'] as string,
      labels: m['labels'] as string,
      ...(typeof name === 'string' ? { name } : {}),
    },
  };
}

function readDataFile(path: string, manifestPath: string, key: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new DatasetError(`${path} does not exist, but ${manifestPath} names it as "${key}"; add the file or fix the name`);
    }
    throw err;
  }
}

/** Reads and validates a crowdfl-data/1 directory. */
export function readLocalData(dir: string): Dataset {
  const { manifestPath, manifest, featuresPath, labelsPath } = readManifest(dir);
  const n = manifest.examples;
  const f = featureSize({ featureShape: manifest.feature_shape });

  const featureBytes = readDataFile(featuresPath, manifestPath, 'features');
  const expected = n * f * 4;
  if (featureBytes.length !== expected) {
    const fits = featureBytes.length % (f * 4) === 0 ? ` (its size fits exactly ${featureBytes.length / (f * 4)} examples)` : '';
    throw new DatasetError(
      `${featuresPath} is ${featureBytes.length} bytes, but ${n} examples × ${f} features × 4 bytes = ${expected}${fits}; ` +
        `make "examples" and "feature_shape" in ${manifestPath} match the file, or rewrite it as little-endian float32`,
    );
  }
  const labelBytes = readDataFile(labelsPath, manifestPath, 'labels');
  if (labelBytes.length !== n) {
    throw new DatasetError(
      `${labelsPath} is ${labelBytes.length} bytes, but it needs one byte per example (${n}); ` +
        `make "examples" in ${manifestPath} match, or rewrite the labels as one uint8 per example`,
    );
  }
  const labels = new Uint8Array(labelBytes);
  let outOfRange = 0;
  let firstBad = -1;
  for (let i = 0; i < n; i++) {
    if (labels[i] >= manifest.num_classes) {
      outOfRange++;
      if (firstBad < 0) firstBad = i;
    }
  }
  if (outOfRange > 0) {
    throw new DatasetError(
      `${labelsPath}: ${outOfRange} label${outOfRange === 1 ? '' : 's'} not below num_classes ${manifest.num_classes} ` +
        `(first: example ${firstBad} has label ${labels[firstBad]}); raise "num_classes" in ${manifestPath} or fix the labels`,
    );
  }
  const features = littleEndianBytesToFloat32(featureBytes);
  const bad = firstNonFinite(features);
  if (bad >= 0) {
    let count = 0;
    for (let i = bad; i < features.length; i++) if (!Number.isFinite(features[i])) count++;
    throw new DatasetError(
      `${featuresPath}: ${count} value${count === 1 ? ' is' : 's are'} NaN or infinite ` +
        `(first: example ${Math.floor(bad / f)}, feature ${bad % f} is ${features[bad]}); ` +
        `replace them with finite numbers (e.g. 0 or the feature's mean) and rewrite the file`,
    );
  }
  return {
    name: manifest.name ?? basename(dir),
    featureShape: [...manifest.feature_shape],
    numClasses: manifest.num_classes,
    numExamples: n,
    features,
    labels,
  };
}

export interface CsvImportOptions {
  /** Shape of one example; its product must equal the number of feature columns. Default [columns]. */
  readonly featureShape?: readonly number[];
  /** Number of classes; default largest label + 1 (at least 2). */
  readonly numClasses?: number;
  /** Dataset name; default the file name without extension. */
  readonly name?: string;
}

/** A CSV field as a number, or NaN when it is empty or not numeric. */
function csvNumber(field: string): number {
  const t = field.trim();
  return t === '' ? NaN : Number(t);
}

/**
 * Reads a CSV file with one example per line: the class index first, then the
 * feature values, comma-separated. Blank lines are skipped. The first line is
 * taken as a header when its first field is not a number (e.g. "label,x1,x2").
 */
export function importCsv(csvPath: string, opts: CsvImportOptions = {}): Dataset {
  let text: string;
  try {
    text = readFileSync(csvPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new DatasetError(`CSV file ${csvPath} does not exist`);
    throw err;
  }
  if (opts.numClasses !== undefined && (!Number.isInteger(opts.numClasses) || opts.numClasses < 2 || opts.numClasses > 256)) {
    throw new DatasetError(`numClasses must be an integer in 2..256 (labels are bytes), got ${opts.numClasses}`);
  }
  let f: number | undefined;
  if (opts.featureShape) {
    if (opts.featureShape.length === 0 || !opts.featureShape.every(isPositiveInt)) {
      throw new DatasetError(`featureShape must be a non-empty list of positive integers, got ${JSON.stringify(opts.featureShape)}`);
    }
    f = featureSize({ featureShape: opts.featureShape });
  }

  const lines = text.split('\n');
  let features = new Float32Array(1024);
  let labels = new Uint8Array(64);
  let n = 0;
  let maxLabel = 0;
  let sawContent = false;
  for (let li = 0; li < lines.length; li++) {
    const line = lines[li].endsWith('\r') ? lines[li].slice(0, -1) : lines[li];
    if (line.trim() === '') continue;
    const lineNo = li + 1;
    const fields = line.split(',');
    if (!sawContent) {
      sawContent = true;
      if (Number.isNaN(csvNumber(fields[0]))) continue; // header line
    }
    const where = `${csvPath} line ${lineNo}`;
    const label = csvNumber(fields[0]);
    if (!Number.isInteger(label) || label < 0 || label > 255) {
      throw new DatasetError(`${where}: the first field must be a class index 0..255, got "${fields[0].trim()}"`);
    }
    if (opts.numClasses !== undefined && label >= opts.numClasses) {
      throw new DatasetError(`${where}: label ${label} is not below numClasses ${opts.numClasses}`);
    }
    const count = fields.length - 1;
    if (f === undefined) {
      if (count === 0) throw new DatasetError(`${where}: no feature values after the label`);
      f = count;
    } else if (count !== f) {
      throw new DatasetError(
        `${where}: ${count} feature value${count === 1 ? '' : 's'} after the label, expected ${f}` +
          (opts.featureShape ? ` (featureShape ${JSON.stringify(opts.featureShape)})` : ' (as on the first data line)'),
      );
    }
    if (n === labels.length) {
      const grown = new Uint8Array(labels.length * 2);
      grown.set(labels);
      labels = grown;
    }
    if ((n + 1) * f > features.length) {
      const grown = new Float32Array(Math.max(features.length * 2, (n + 1) * f));
      grown.set(features);
      features = grown;
    }
    for (let j = 0; j < f; j++) {
      const v = csvNumber(fields[j + 1]);
      if (!Number.isFinite(v)) {
        throw new DatasetError(`${where}: feature ${j + 1} is "${fields[j + 1].trim()}", not a finite number`);
      }
      features[n * f + j] = v;
    }
    labels[n++] = label;
    if (label > maxLabel) maxLabel = label;
  }
  if (n === 0 || f === undefined) throw new DatasetError(`CSV file ${csvPath} has no data lines`);
  return {
    name: opts.name ?? basename(csvPath, extname(csvPath)),
    featureShape: opts.featureShape ? [...opts.featureShape] : [f],
    numClasses: opts.numClasses ?? Math.max(2, maxLabel + 1),
    numExamples: n,
    features: features.slice(0, n * f),
    labels: labels.slice(0, n),
  };
}
