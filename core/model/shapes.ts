// Tensor-shape arithmetic the model modules share.

/** Number of values in a tensor of `shape`. */
export function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** `[28, 28, 1]`: a shape as messages print it. */
export function describeShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
