// A model or an update is one flat Float32Array; on the wire and on disk it is
// the same bytes, little-endian, described by a manifest. Keeping one buffer
// (tensors are views into it) makes serialising free and hashing one pass.
import { createHash } from 'node:crypto';
import { endianness } from 'node:os';

export type DTypeName = 'float32';

export interface TensorEntry {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: DTypeName;
}

export const BYTES_PER_FLOAT32 = 4;
export const DEFAULT_CHUNK_BYTES = 1 << 20;

if (endianness() !== 'LE') {
  // Every supported platform is little-endian; fail loudly rather than send garbage.
  throw new Error('crowdfl needs a little-endian machine: tensors travel as little-endian bytes');
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function manifestElements(manifest: readonly TensorEntry[]): number {
  return manifest.reduce((sum, t) => sum + elementCount(t.shape), 0);
}

export function manifestBytes(manifest: readonly TensorEntry[]): number {
  return manifestElements(manifest) * BYTES_PER_FLOAT32;
}

/** The bytes of a Float32Array, without copying. */
export function float32ToBytes(values: Float32Array): Buffer {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
}

/**
 * Float32Array over received bytes. protobuf `bytes` often arrive at an offset
 * that is not a multiple of 4, where a view would throw; those are copied once.
 */
export function bytesToFloat32(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % BYTES_PER_FLOAT32 !== 0) {
    throw new CodecError(`${bytes.byteLength} bytes is not a whole number of float32 values`);
  }
  const n = bytes.byteLength / BYTES_PER_FLOAT32;
  if (bytes.byteOffset % BYTES_PER_FLOAT32 === 0) {
    return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  }
  const copy = new Float32Array(n);
  new Uint8Array(copy.buffer).set(bytes);
  return copy;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function* chunks(bytes: Uint8Array, chunkBytes = DEFAULT_CHUNK_BYTES): Generator<Uint8Array> {
  for (let offset = 0; offset < bytes.byteLength; offset += chunkBytes) {
    yield bytes.subarray(offset, Math.min(offset + chunkBytes, bytes.byteLength));
  }
}

export class CodecError extends Error {}

/** Says how `actual` differs from `expected`, or returns undefined when they agree. */
export function manifestMismatch(
  expected: readonly TensorEntry[],
  actual: readonly { name: string; shape: readonly number[]; dtype: string }[],
): string | undefined {
  if (actual.length !== expected.length) {
    return `manifest has ${actual.length} tensors, the model has ${expected.length}`;
  }
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i]!;
    const a = actual[i]!;
    if (a.dtype !== e.dtype) return `tensor ${i} (${e.name}) has dtype ${a.dtype}, expected ${e.dtype}`;
    if (a.shape.length !== e.shape.length || a.shape.some((d, k) => d !== e.shape[k])) {
      return `tensor ${i} (${e.name}) has shape [${a.shape.join(',')}], expected [${e.shape.join(',')}]`;
    }
  }
  return undefined;
}

/**
 * Collects streamed chunks into one preallocated buffer of exactly
 * `expectedBytes`; refuses oversized chunks and anything past the end, so a
 * hostile stream cannot make the receiver allocate without bound.
 */
export class ChunkAssembler {
  private readonly buffer: Uint8Array;
  private received = 0;
  // Hashed as the chunks arrive, so the check after the last one costs nothing extra.
  private readonly hash = createHash('sha256');

  /**
   * `shared`: assemble into a SharedArrayBuffer, as the aggregator does for
   * received updates, so that the aggregation kernels' worker threads can
   * read them in place (aggregator/robust/kernels/pool.ts).
   */
  constructor(
    readonly expectedBytes: number,
    private readonly maxChunkBytes: number,
    options: { readonly shared?: boolean } = {},
  ) {
    this.buffer = new Uint8Array(options.shared ? new SharedArrayBuffer(expectedBytes) : new ArrayBuffer(expectedBytes));
  }

  push(chunk: Uint8Array): void {
    if (chunk.byteLength > this.maxChunkBytes) {
      throw new CodecError(`chunk of ${chunk.byteLength} bytes exceeds the limit of ${this.maxChunkBytes}`);
    }
    if (this.received + chunk.byteLength > this.expectedBytes) {
      throw new CodecError(`stream carries more than the announced ${this.expectedBytes} bytes`);
    }
    this.buffer.set(chunk, this.received);
    this.received += chunk.byteLength;
    this.hash.update(chunk);
  }

  /** SHA-256 (lowercase hex) of every byte pushed; call once, after the last chunk. */
  sha256Hex(): string {
    return this.hash.digest('hex');
  }

  get complete(): boolean {
    return this.received === this.expectedBytes;
  }

  get receivedBytes(): number {
    return this.received;
  }

  /** The assembled values; throws if the stream ended early. */
  finish(): Float32Array {
    if (!this.complete) {
      throw new CodecError(`stream ended after ${this.received} of ${this.expectedBytes} announced bytes`);
    }
    return new Float32Array(this.buffer.buffer, 0, this.expectedBytes / BYTES_PER_FLOAT32);
  }
}

/** Index of the first NaN or ±Inf, or -1. */
export function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    // v - v is NaN exactly for NaN and ±Inf, and cheaper than Number.isFinite per element.
    if (v - v !== 0) return i;
  }
  return -1;
}
