// Each committed global model is saved as a standard tfjs layers model
// (model.json + weights.bin), loadable with tf.loadLayersModel. weights.bin is
// exactly the flat weight bytes, so its SHA-256 is the model's content address.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { bytesToFloat32, float32ToBytes, sha256Hex, type TensorEntry } from '../../core/tensor-codec.js';
import { diskFullAt } from './storage-errors.js';

export interface Checkpoint {
  dir: string;
  sha256: string;
}

export function writeFileDurably(path: string, data: Uint8Array | string): void {
  const fd = openSync(path, 'w');
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    let written = 0;
    while (written < bytes.byteLength) written += writeSync(fd, bytes, written);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export const SERVER_STATE_FILE = 'server-state.bin';

export function checkpointDirName(round: number): string {
  return `round-${String(round).padStart(4, '0')}`;
}

/** Writes to a temporary directory, fsyncs, then renames: a reader never sees half a checkpoint. A full disk throws DiskFullError. */
export function writeCheckpoint(
  parent: string,
  name: string,
  topology: object,
  manifest: readonly TensorEntry[],
  weights: Float32Array,
  /** The server optimizer's state after this model, when the strategy has one. */
  serverState?: Uint8Array,
): Checkpoint {
  const final = join(parent, name);
  const temp = join(parent, `.${name}.tmp-${process.pid}`);
  const bytes = float32ToBytes(weights);
  const modelJson = {
    format: 'layers-model',
    generatedBy: 'crowdfl',
    convertedBy: null,
    modelTopology: topology,
    weightsManifest: [{ paths: ['weights.bin'], weights: manifest.map((t) => ({ ...t, shape: [...t.shape] })) }],
  };
  try {
    mkdirSync(parent, { recursive: true });
    rmSync(temp, { recursive: true, force: true });
    mkdirSync(temp);
    writeFileDurably(join(temp, 'weights.bin'), bytes);
    writeFileDurably(join(temp, 'model.json'), JSON.stringify(modelJson));
    if (serverState) writeFileDurably(join(temp, SERVER_STATE_FILE), serverState);
    fsyncDir(temp);
    rmSync(final, { recursive: true, force: true });
    renameSync(temp, final);
    fsyncDir(parent);
  } catch (err) {
    // The temporary directory is left as it is (the next write of this checkpoint clears it): past the
    // rmSync of `final`, it holds the only copy.
    throw diskFullAt(err, parent);
  }
  return { dir: final, sha256: sha256Hex(bytes) };
}

export function readCheckpointWeights(dir: string): { weights: Float32Array; sha256: string } {
  const bytes = readFileSync(join(dir, 'weights.bin'));
  return { weights: bytesToFloat32(bytes), sha256: sha256Hex(bytes) };
}
