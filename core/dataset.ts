/**
 * A labelled dataset held in two flat typed arrays: `features` has
 * `numExamples * product(featureShape)` float32 values (row-major, one example
 * after another), `labels` has one class index per example.
 */
export interface Dataset {
  readonly name: string;
  readonly featureShape: readonly number[];
  readonly numClasses: number;
  readonly numExamples: number;
  readonly features: Float32Array;
  readonly labels: Uint8Array;
}

export function featureSize(ds: Pick<Dataset, 'featureShape'>): number {
  return ds.featureShape.reduce((a, b) => a * b, 1);
}
