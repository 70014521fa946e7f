// Small synthetic problems for the model and training tests, drawn from the
// seeded Rng so every run sees the same data.
import type { Dataset } from '../../core/dataset.js';
import { Rng } from '../../core/rng.js';

/** Two Gaussian blobs in `dims` dimensions, centred at ±`separation`/2 along a random unit direction. */
export function gaussianBlobs(n: number, dims: number, seed: number, separation = 3): Dataset {
  const rng = new Rng(seed);
  const direction = new Float64Array(dims);
  let norm = 0;
  for (let j = 0; j < dims; j++) {
    direction[j] = rng.normal();
    norm += direction[j] * direction[j];
  }
  norm = Math.sqrt(norm);
  const features = new Float32Array(n * dims);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const label = rng.int(2);
    labels[i] = label;
    const sign = label === 1 ? 0.5 : -0.5;
    for (let j = 0; j < dims; j++) features[i * dims + j] = (sign * separation * direction[j]) / norm + rng.normal();
  }
  return { name: 'blobs', featureShape: [dims], numClasses: 2, numExamples: n, features, labels };
}

/**
 * 28×28×1 noise "images"; label 1 brightens a 7×7 block in the top-left
 * corner, so the class is readable from a few pixels only.
 */
export function blockImages(n: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const d = 28 * 28;
  const features = new Float32Array(n * d);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const label = rng.int(2);
    labels[i] = label;
    for (let p = 0; p < d; p++) features[i * d + p] = rng.uniform() * 0.5;
    if (label === 1) {
      for (let r = 0; r < 7; r++) for (let c = 0; c < 7; c++) features[i * d + r * 28 + c] += 0.5;
    }
  }
  return { name: 'block-images', featureShape: [28, 28, 1], numClasses: 2, numExamples: n, features, labels };
}

export function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}
