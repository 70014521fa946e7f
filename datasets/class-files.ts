// The npm image packages ship one JSON file per class,
// src/<folder>/<label>.json = {"data": [...]}; they differ only in how a file's
// data splits into images and how a pixel value maps to a byte.
import { join } from 'node:path';
import { malformedPackage, PixelAccumulator, readPackageJson, type ImageSource, type LogFn, type ParsedImages } from './cache.js';

export interface ClassFilesPackage<Name extends string> extends Omit<ImageSource, 'parse'> {
  readonly dataset: Name;
  /** Folder under src/ holding <label>.json for every class. */
  readonly folder: string;
  /** Images the package holds, to size the buffer once. */
  readonly expectedImages: number;
  /** One class file's `data` as images; undefined stands for a malformed record. */
  images(data: readonly unknown[]): Iterable<ArrayLike<unknown> | undefined>;
  /** A pixel value as a byte 0..255, or undefined when the value is out of range. */
  toByte(value: unknown): number | undefined;
}

/** The image source of a package laid out as one JSON file per class. */
export function classFilesSource<const Name extends string>(pkg: ClassFilesPackage<Name>): ImageSource & { readonly dataset: Name } {
  const { folder, expectedImages, images, toByte, ...source } = pkg;
  return { ...source, parse: (packageDir, log) => parseClassFiles(packageDir, log, pkg) };
}

/** Reads every class file of the package in `packageDir`, skipping (and counting) malformed images. */
function parseClassFiles(packageDir: string, log: LogFn, pkg: ClassFilesPackage<string>): ParsedImages {
  const pixels = pkg.featureShape.reduce((a, b) => a * b, 1);
  const acc = new PixelAccumulator(pixels, pkg.numClasses, pkg.expectedImages);
  // One class file at a time: the parsed JSON of a file is ~10x its size,
  // so holding all of them at once would need well over a gigabyte.
  for (let label = 0; label < pkg.numClasses; label++) {
    const path = join(packageDir, 'src', pkg.folder, `${label}.json`);
    const json = readPackageJson(path, pkg.packageName) as { data?: unknown } | null;
    const data = json?.data;
    if (!Array.isArray(data)) throw malformedPackage(path, pkg.packageName);
    for (const image of pkg.images(data as unknown[])) {
      if (!image) {
        acc.skip(label);
        continue;
      }
      const slot = acc.next();
      let ok = true;
      for (let i = 0; i < pixels; i++) {
        const byte = pkg.toByte(image[i]);
        if (byte === undefined) {
          ok = false;
          break;
        }
        slot[i] = byte;
      }
      if (ok) acc.commit(label);
      else acc.skip(label);
    }
  }
  return acc.finish(pkg.dataset, log);
}
