// Every aggregated update's bytes, kept by content address (SHA-256 of the
// bytes, as signed by the node) under the run directory, so an evaluator can
// re-run each round's aggregation from the run directory alone. Identical
// updates (free riders sending the base model back, say) are stored once.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fsyncDir, writeFileDurably } from './checkpoints.js';
import { diskFullAt } from './storage-errors.js';

export const UPDATE_BLOBS_DIR = 'updates';

export class UpdateBlobs {
  constructor(readonly dir: string) {}

  path(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`not a SHA-256 content address: ${JSON.stringify(sha256)}`);
    return join(this.dir, sha256.slice(0, 2), `${sha256}.f32`);
  }

  /** Where `put` writes the bytes before renaming them into place (in the process `pid`). */
  tempPath(sha256: string, pid = process.pid): string {
    return `${this.path(sha256)}.tmp-${pid}`;
  }

  /** Stores the bytes durably (written, fsynced, renamed) unless that content is already there. A full disk throws DiskFullError. */
  put(sha256: string, bytes: Uint8Array): void {
    const final = this.path(sha256);
    if (existsSync(final)) return;
    const parent = join(this.dir, sha256.slice(0, 2));
    const temp = this.tempPath(sha256);
    try {
      mkdirSync(parent, { recursive: true });
      writeFileDurably(temp, bytes);
      renameSync(temp, final);
      fsyncDir(parent);
    } catch (err) {
      // What was written of the bytes is no use, and on a full disk its space is wanted.
      rmSync(temp, { force: true });
      throw diskFullAt(err, this.dir);
    }
  }

  /** The stored bytes, unchecked (the caller compares their hash with the record); undefined when absent. */
  get(sha256: string): Buffer | undefined {
    const path = this.path(sha256);
    return existsSync(path) ? readFileSync(path) : undefined;
  }
}
