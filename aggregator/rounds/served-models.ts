// What nodes download: the global models still served, by hash, and the
// manifest describing their tensors on the wire. Both round engines keep one
// ServedModels; they differ only in how many models they keep.
import { float32ToBytes, sha256Hex, type TensorEntry } from '../../core/tensor-codec.js';
import type { TensorSpec } from '../../proto/generated/crowdfl/v1/TensorSpec.js';
import { echo, notFound } from '../rpc-error.js';

export function manifestForWire(manifest: readonly TensorEntry[]): TensorSpec[] {
  return manifest.map((t) => ({ name: t.name, dtype: 'FLOAT32', shape: [...t.shape] }));
}

/** The models nodes may still download, by hash: the newest `keep` published. */
export class ServedModels {
  private readonly models = new Map<string, Buffer>();
  current: { weights: Float32Array; sha256: string } = { weights: new Float32Array(0), sha256: '' };

  constructor(private readonly keep: number) {}

  publish(weights: Float32Array): string {
    const bytes = float32ToBytes(weights);
    const sha256 = sha256Hex(bytes);
    this.models.delete(sha256);
    this.models.set(sha256, bytes);
    // A Map iterates in insertion order: the first keys are the oldest models.
    for (const key of this.models.keys()) if (this.models.size > this.keep) this.models.delete(key);
    this.current = { weights, sha256 };
    return sha256;
  }

  bytes(sha256: string): Buffer {
    const bytes = this.models.get(sha256);
    if (!bytes) throw notFound(`model ${echo(sha256)} is not served (it is not one of the last ${this.keep} global models)`);
    return bytes;
  }
}
