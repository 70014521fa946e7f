// The run's signed records as files beside the database: records/run.json (the
// "crowdfl/run/v1" record signed when the run started) and
// records/round-NNNN.json (each committed round's "crowdfl/round/v1" record).
// Each is written durably right after the database transaction it mirrors, with
// no await in between, so no node can have been told of a commit whose record is
// not on disk. They are the evidence the database is checked against at start
// (run-directory.ts): a record of a round the database does not hold means the
// database lost a commit (a missing or damaged crowdfl.db-wal), and each file
// carries its digest, signature and key, so it can be verified without the
// database at all.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ROUND_TAG, RUN_TAG } from '../../core/signing/layouts.js';
import { fsyncDir, writeFileDurably } from './checkpoints.js';

export const RECORDS_DIR = 'records';
export const RUN_RECORD_FILE = 'run.json';

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);

export const runRecordFileSchema = z.object({
  layout: z.literal(RUN_TAG),
  experiment_id: z.string(),
  experiment_sha256: sha256Hex,
  seed: z.number().int(),
  initial_model_sha256: sha256Hex,
  run_signature: z.string(),
  aggregator_public_key: z.string(),
  started_at: z.number(),
});
export type RunRecordFile = z.infer<typeof runRecordFileSchema>;

export const roundRecordFileSchema = z.object({
  layout: z.literal(ROUND_TAG),
  experiment_id: z.string(),
  round: z.number().int().nonnegative(),
  /** "" when the round started from no previous model. */
  previous_model_sha256: z.string(),
  model_sha256: sha256Hex,
  accepted: z.array(z.object({ task_id: z.string(), update_digest_hex: z.string(), signature_b64: z.string() })),
  round_digest: sha256Hex,
  aggregator_signature: z.string(),
  aggregator_public_key: z.string(),
  // Not signed: which attempt committed, when, and how the model did.
  attempt: z.number().int().nonnegative(),
  committed_at: z.number(),
  accuracy: z.number().nullable(),
  loss: z.number().nullable(),
});
export type RoundRecordFile = z.infer<typeof roundRecordFileSchema>;

export function roundRecordFileName(round: number): string {
  return `round-${String(round).padStart(4, '0')}.json`;
}

const ROUND_RECORD_NAME = /^round-(\d+)\.json$/;

/** Writes `name` in `dir` durably: a temporary file, fsynced, renamed, the directory fsynced. A reader never sees half a record. */
function writeRecord(dir: string, name: string, record: object): void {
  mkdirSync(dir, { recursive: true });
  const temp = join(dir, `.${name}.tmp-${process.pid}`);
  writeFileDurably(temp, JSON.stringify(record, null, 2) + '\n');
  renameSync(temp, join(dir, name));
  fsyncDir(dir);
}

export function writeRunRecordFile(recordsDir: string, record: RunRecordFile): void {
  writeRecord(recordsDir, RUN_RECORD_FILE, record);
}

export function writeRoundRecordFile(recordsDir: string, record: RoundRecordFile): void {
  writeRecord(recordsDir, roundRecordFileName(record.round), record);
}

export interface SignedRecords {
  run?: RunRecordFile;
  /** Round records by round number. */
  rounds: Map<number, RoundRecordFile>;
  /** Files that should be records but cannot be read as one, each with why. */
  unreadable: { file: string; why: string }[];
}

function readRecord<T>(path: string, schema: z.ZodType<T>): { record: T } | { why: string } {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    return { why: (err as Error).message };
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? { record: parsed.data } : { why: parsed.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ') };
}

/** Every signed record under `recordsDir` (none when it does not exist). */
export function readSignedRecords(recordsDir: string): SignedRecords {
  const records: SignedRecords = { rounds: new Map(), unreadable: [] };
  if (!existsSync(recordsDir)) return records;
  for (const name of readdirSync(recordsDir).sort()) {
    const path = join(recordsDir, name);
    const file = join(RECORDS_DIR, name);
    if (name === RUN_RECORD_FILE) {
      const read = readRecord(path, runRecordFileSchema);
      if ('record' in read) records.run = read.record;
      else records.unreadable.push({ file, why: read.why });
      continue;
    }
    const m = ROUND_RECORD_NAME.exec(name);
    if (!m) continue; // a temporary file a crash left, or something the operator put there
    const read = readRecord(path, roundRecordFileSchema);
    if (!('record' in read)) records.unreadable.push({ file, why: read.why });
    else if (read.record.round !== Number(m[1])) records.unreadable.push({ file, why: `it holds the record of round ${read.record.round}` });
    else records.rounds.set(read.record.round, read.record);
  }
  return records;
}
