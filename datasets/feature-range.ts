// What range a dataset's features span, against the range a model expects.
// A careless import (raw 0..255 pixels where the models expect [0, 1]) trains
// to a loss of 1e27 and wrecks an unprotected global model; the import and
// inspect commands say so before any node trains on it.
import { featureSize, type Dataset } from '../core/dataset.js';

/** The models' default expectation: features in [0, 1], as the packaged image datasets give them. */
export const DEFAULT_EXPECTED_RANGE: readonly [number, number] = [0, 1];

export interface FeatureRange {
  readonly min: number;
  readonly max: number;
  /** Features (positions within one example) with at least one value outside the expected range. */
  readonly featuresOutside: number;
  readonly features: number;
}

export function featureRange(ds: Dataset, expected: readonly [number, number] = DEFAULT_EXPECTED_RANGE): FeatureRange {
  const d = featureSize(ds);
  const outside = new Uint8Array(d);
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  const x = ds.features;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v < min) min = v;
    if (v > max) max = v;
    if (v < expected[0] || v > expected[1]) outside[i % d] = 1;
  }
  return { min, max, featuresOutside: outside.reduce((a, b) => a + b, 0), features: d };
}

/** A warning when features fall outside the expected range, saying how to fix it; undefined when they fit. */
export function rangeWarning(r: FeatureRange, expected: readonly [number, number] = DEFAULT_EXPECTED_RANGE): string | undefined {
  if (r.featuresOutside === 0) return undefined;
  // Byte-valued data is the usual mistake: raw pixels where the models expect [0, 1].
  const scale = r.min >= 0 && r.max > 1 && r.max <= 255 ? ' (e.g. --scale 1/255 if these are 0..255 pixels)' : '';
  return (
    `warning: ${r.featuresOutside} of ${r.features} features have values outside [${expected[0]}, ${expected[1]}], the range the models ` +
    `expect (values span ${r.min} to ${r.max}); a node training on them may diverge. Rescale with --scale${scale}, ` +
    `or state the range your model expects with --expect-range LO,HI`
  );
}

export function describeRange(r: FeatureRange): string {
  return `feature values ${r.min} to ${r.max}`;
}
