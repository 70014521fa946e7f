// Before the aggregator writes anything in a run directory it checks that the
// database and the files beside it tell the same story, and refuses to start —
// saying what disagrees and what the operator can do — when they do not.
//
// SQLite keeps the newest commits in crowdfl.db-wal until it checkpoints them
// into crowdfl.db. Lose or damage that file and SQLite opens a database from
// some rounds ago without a word; delete the database and a new run would be
// started over the old one's checkpoints. The files beside the database are
// written in an order that makes such losses visible (see rounds/commit.ts):
//   - checkpoints/round-N exists only once round N-1 was committed, so a
//     checkpoint more than one round past the database's last commit means the
//     database lost commits (exactly one past is a crash between checkpoint and
//     commit, which resume handles);
//   - records/round-N.json is written right after round N's commit, with no
//     await between, so a record of a round the database lacks means the
//     database lost that commit;
//   - records/run.json is the run's signed start; the database's run row must be
//     the same run.
// The database's own chain is checked too (the audit trail): rounds 1..N each
// start from the model the round before committed, and each round's signature
// verifies over the updates the database credits it with.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../core/user-error.js';
import { digestHex, signatureFromString, verify } from '../core/signing/ed25519.js';
import { publicKeyFromString } from '../core/signing/keys.js';
import { ROUND_TAG, roundDigest, RUN_TAG, runDigest } from '../core/signing/layouts.js';
import { sha256Hex } from '../core/tensor-codec.js';
import { checkpointDirName } from './store/checkpoints.js';
import type { RunStore } from './store/run-store.js';
import type { RunRow } from './store/schema.js';
import {
  readSignedRecords,
  RECORDS_DIR,
  roundRecordFileName,
  writeRoundRecordFile,
  writeRunRecordFile,
  type SignedRecords,
} from './store/signed-records.js';
import { UPDATE_BLOBS_DIR } from './store/update-blobs.js';

export const DATABASE_FILE = 'crowdfl.db';
export const CHECKPOINTS_DIR = 'checkpoints';

/** A run directory that does not agree with its database, or a new run asked for over an existing one. */
export class RunDirectoryError extends UserError {}

/** What a run directory holds besides its database: the evidence the database is checked against. */
export interface RunDirectoryEvidence {
  runDir: string;
  /** crowdfl.db exists. */
  database: boolean;
  /** Size of crowdfl.db-wal, when it exists. */
  walBytes?: number;
  /** Rounds with a checkpoint directory (round-NNNN), ascending. */
  checkpoints: number[];
  /** Update blobs under updates/. */
  updateBlobs: number;
  records: SignedRecords;
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export function surveyRunDirectory(runDir: string): RunDirectoryEvidence {
  const wal = join(runDir, `${DATABASE_FILE}-wal`);
  const checkpoints = listDir(join(runDir, CHECKPOINTS_DIR))
    .map((name) => /^round-(\d+)$/.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  const blobsDir = join(runDir, UPDATE_BLOBS_DIR);
  const updateBlobs = listDir(blobsDir).reduce((n, sub) => n + listDir(join(blobsDir, sub)).filter((f) => f.endsWith('.f32')).length, 0);
  return {
    runDir,
    database: existsSync(join(runDir, DATABASE_FILE)),
    walBytes: existsSync(wal) ? statSync(wal).size : undefined,
    checkpoints,
    updateBlobs,
    records: readSignedRecords(join(runDir, RECORDS_DIR)),
  };
}

/** "1–3, 5, 7–9" */
export function roundRanges(rounds: readonly number[]): string {
  const sorted = [...rounds].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}–${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** What in the directory shows a run was here, one phrase each; empty for a directory a new run may start in. */
export function runEvidence(e: RunDirectoryEvidence): string[] {
  const found: string[] = [];
  if (e.database) found.push(DATABASE_FILE);
  if (e.walBytes !== undefined) found.push(`${DATABASE_FILE}-wal (${e.walBytes} bytes)`);
  if (e.checkpoints.length > 0) {
    const first = checkpointDirName(e.checkpoints[0]!);
    const last = checkpointDirName(e.checkpoints.at(-1)!);
    found.push(`${plural(e.checkpoints.length, 'checkpoint')} in ${CHECKPOINTS_DIR}/ (${first === last ? first : `${first} … ${last}`})`);
  }
  if (e.updateBlobs > 0) found.push(`${plural(e.updateBlobs, 'update blob')} in ${UPDATE_BLOBS_DIR}/`);
  const rounds = [...e.records.rounds.keys()];
  if (e.records.run || rounds.length > 0) {
    const what = [e.records.run ? `of run ${e.records.run.experiment_id} (started ${new Date(e.records.run.started_at).toISOString()})` : undefined, rounds.length ? `of rounds ${roundRanges(rounds)}` : undefined];
    found.push(`signed records ${what.filter(Boolean).join(' and ')} in ${RECORDS_DIR}/`);
  }
  if (e.records.unreadable.length > 0) found.push(`${plural(e.records.unreadable.length, 'unreadable record file')} in ${RECORDS_DIR}/`);
  return found;
}

/** The last round the directory shows evidence of (a checkpoint or a signed record), 0 when none. */
function lastEvidencedRound(e: RunDirectoryEvidence): number {
  return Math.max(0, e.checkpoints.at(-1) ?? 0, ...e.records.rounds.keys());
}

const bullets = (lines: readonly string[]) => lines.map((l) => `  - ${l}`).join('\n');

/** What keeping the directory as the run's record means, for the recovery advice. */
function keepAsRecord(e: RunDirectoryEvidence): string {
  const lastCheckpoint = e.checkpoints.at(-1);
  const model =
    lastCheckpoint === undefined
      ? ''
      : `: ${CHECKPOINTS_DIR}/${checkpointDirName(lastCheckpoint)} is its last model (serve it with \`crowdfl serve --model ${join(e.runDir, CHECKPOINTS_DIR, checkpointDirName(lastCheckpoint))}\`)`;
  const records = e.records.rounds.size > 0 ? `, and ${RECORDS_DIR}/ holds each committed round's record, signed with the aggregator's key and verifiable without the database` : '';
  return `keep this directory as the run's record${model}${records}; start a new run with another --run-id (or none, for a fresh one)`;
}

/**
 * Refuses a new run in a directory that holds one (checkpoints, update blobs,
 * signed records, a database or its WAL without this run): starting there would
 * overwrite what the old run left. `databaseNote` says what the database holds
 * instead, when there is one.
 */
export function refuseNewRunOver(runId: string, e: RunDirectoryEvidence, databaseNote?: string): RunDirectoryError {
  const found = runEvidence(e);
  const last = lastEvidencedRound(e);
  const lines = [
    `refusing to start run ${runId} in ${e.runDir}: the directory already holds a run, which a new one would overwrite:`,
    bullets([...(databaseNote ? [databaseNote] : []), ...found.filter((f) => !(databaseNote && f === DATABASE_FILE))]),
    `Nothing in ${e.runDir} was changed. To recover:`,
    bullets([
      `if the database was lost or damaged: put back a copy of ${DATABASE_FILE} (with its ${DATABASE_FILE}-wal, if the copy has one) taken at or after round ${last} and start again; it is checked against this directory before the run resumes`,
      keepAsRecord(e),
      `if this directory holds nothing you need, delete it and start again`,
    ]),
    `Rebuilding the database from the checkpoints and signed records is not supported: they name each round's model and the updates it credits, but not the verdicts, node reputations, bans and tasks the run's later rounds depend on.`,
  ];
  return new RunDirectoryError(lines.join('\n'));
}

/** Refuses to resume over a database SQLite's own check finds damaged. */
export function damagedDatabase(runId: string, e: RunDirectoryEvidence, check: { pragma: string; problems: string[] }): RunDirectoryError {
  const shown = check.problems.slice(0, 5).map((p) => p.replace(/\s*\n\s*/g, ' '));
  const more = check.problems.length > shown.length ? [`… and ${check.problems.length - shown.length} more`] : [];
  const lines = [
    `cannot resume run ${runId}: ${join(e.runDir, DATABASE_FILE)} is damaged; SQLite's ${check.pragma} reports:`,
    bullets([...shown, ...more]),
    `Nothing in ${e.runDir} was changed. To recover:`,
    bullets([
      `put back a copy of ${DATABASE_FILE} (with its ${DATABASE_FILE}-wal, if the copy has one) and start again; it is checked against this directory before the run resumes`,
      `or salvage what SQLite can still read: \`sqlite3 ${DATABASE_FILE} .recover | sqlite3 recovered.db\`, move ${DATABASE_FILE}, ${DATABASE_FILE}-wal and ${DATABASE_FILE}-shm aside and put recovered.db in their place as ${DATABASE_FILE}; the next start checks what was salvaged against the checkpoints and signed records`,
      `or ${keepAsRecord(e)}`,
    ]),
  ];
  return new RunDirectoryError(lines.join('\n'));
}

export interface Disagreement {
  what: string;
  /** The database lacks commits the directory shows were made. */
  lostCommits: boolean;
}

/** Where a committed run's database and its directory disagree; empty when they agree. */
export function crossCheck(store: RunStore, run: RunRow, e: RunDirectoryEvidence): Disagreement[] {
  const found: Disagreement[] = [];
  const mismatch = (what: string) => found.push({ what, lostCommits: false });
  let key: Uint8Array | undefined;
  try {
    key = publicKeyFromString(run.aggregatorPublicKey);
  } catch {
    mismatch(`the database's run record names no usable aggregator key (${JSON.stringify(run.aggregatorPublicKey)})`);
  }

  // The run record: the database's row is the run the aggregator signed, and the same run as records/run.json.
  if (run.runSignature && key) {
    const digest = runDigest({ experiment_id: run.id, experiment_sha256: sha256Hex(Buffer.from(run.experimentJson)), seed: run.seed, initial_model_sha256: run.initialModelSha256 });
    const signature = signatureFromString(run.runSignature);
    if (!signature || !verify(digest, signature, key)) mismatch(`the database's run record does not verify under its aggregator key: its experiment, seed or initial model were changed after the run started`);
  }
  const fileRun = e.records.run;
  if (fileRun) {
    const differs = [
      fileRun.experiment_id !== run.id && `run id ${fileRun.experiment_id}`,
      fileRun.run_signature !== run.runSignature && 'signature',
      fileRun.initial_model_sha256 !== run.initialModelSha256 && 'initial model',
      fileRun.experiment_sha256 !== sha256Hex(Buffer.from(run.experimentJson)) && 'experiment',
      fileRun.seed !== run.seed && 'seed',
      fileRun.aggregator_public_key !== run.aggregatorPublicKey && 'aggregator key',
      fileRun.started_at !== run.startedAt && 'start time',
    ].filter((d): d is string => typeof d === 'string');
    if (differs.length > 0) {
      mismatch(
        `${RECORDS_DIR}/run.json records a run started ${new Date(fileRun.started_at).toISOString()}, but the database holds one started ` +
          `${new Date(run.startedAt).toISOString()} (they differ in: ${differs.join(', ')}): the database is not the one this directory's run was recorded in`,
      );
    }
  }

  // The audit trail: rounds 1..N, each from the model before, each signature over the updates the database credits.
  const rounds = store.committedRounds(run.id);
  const numbers = rounds.map((r) => r.round);
  const last = numbers.at(-1) ?? 0;
  const have = new Set(numbers);
  const missing = Array.from({ length: last }, (_, i) => i + 1).filter((n) => !have.has(n));
  if (missing.length > 0) mismatch(`the database holds committed rounds ${roundRanges(numbers)} but not ${roundRanges(missing)}`);
  let previous = run.initialModelSha256 || undefined;
  const broken: number[] = [];
  const unsigned: number[] = [];
  for (const r of rounds) {
    if (previous !== undefined && r.previousModelSha256 && r.previousModelSha256 !== previous) broken.push(r.round);
    previous = r.modelSha256;
    if (!r.roundDigest || !key) continue; // databases from before rounds were signed
    const digest = roundDigest({
      experiment_id: run.id,
      round: r.round,
      previous_model_sha256: r.previousModelSha256,
      model_sha256: r.modelSha256,
      accepted: store.creditedUpdates(run.id, r.round),
    });
    const signature = signatureFromString(r.aggregatorSignature);
    if (digestHex(digest) !== r.roundDigest || !signature || !verify(digest, signature, key)) unsigned.push(r.round);
  }
  if (broken.length > 0) mismatch(`in the database, round${broken.length > 1 ? 's' : ''} ${roundRanges(broken)} do not start from the model the round before committed`);
  if (unsigned.length > 0) {
    mismatch(`in the database, the signed record of round${unsigned.length > 1 ? 's' : ''} ${roundRanges(unsigned)} does not match the updates and models stored for it (rows lost or changed)`);
  }

  // The directory against the database's last commit.
  const beyond = e.checkpoints.filter((n) => n > last + 1);
  const recordsBeyond = [...e.records.rounds.keys()].filter((n) => n > last);
  if (beyond.length > 0 || recordsBeyond.length > 0) {
    const shows = [
      beyond.length > 0 &&
        `${CHECKPOINTS_DIR}/ holds ` +
          (beyond.length === 1
            ? `${checkpointDirName(beyond[0]!)}, written only once round ${beyond[0]! - 1} was committed`
            : `${checkpointDirName(beyond[0]!)} … ${checkpointDirName(beyond.at(-1)!)}, each written only once the round before it was committed`),
      recordsBeyond.length > 0 && `${RECORDS_DIR}/ holds the signed record${recordsBeyond.length > 1 ? 's' : ''} of round${recordsBeyond.length > 1 ? 's' : ''} ${roundRanges(recordsBeyond)}, written as each was committed`,
    ].filter((s): s is string => typeof s === 'string');
    const wal =
      e.walBytes === undefined
        ? `${DATABASE_FILE}-wal, which holds the newest commits until SQLite copies them into ${DATABASE_FILE}, is missing`
        : `${DATABASE_FILE}-wal (${e.walBytes} bytes), which holds the newest commits until SQLite copies them into ${DATABASE_FILE}, is damaged or was cut short`;
    found.push({
      what: `${last === 0 ? 'the database holds no committed round' : `the database's last committed round is ${last}`}, but ${shows.join(', and ')}: the database has lost committed rounds (${wal})`,
      lostCommits: true,
    });
  }
  const differing = [...e.records.rounds.values()].filter((f) => {
    const r = rounds.find((x) => x.round === f.round);
    return r && (r.roundDigest !== f.round_digest || r.aggregatorSignature !== f.aggregator_signature || r.modelSha256 !== f.model_sha256);
  });
  if (differing.length > 0) {
    mismatch(
      `the signed record${differing.length > 1 ? 's' : ''} ${differing.map((f) => `${RECORDS_DIR}/${roundRecordFileName(f.round)}`).join(', ')} ` +
        `differ${differing.length > 1 ? '' : 's'} from what the database holds for ${differing.length > 1 ? 'those rounds' : 'that round'}: the database is not the one these rounds were recorded in`,
    );
  }
  for (const u of e.records.unreadable) mismatch(`${u.file} is not a readable signed record (${u.why}); if it is a stray file, move it out of ${RECORDS_DIR}/`);
  return found;
}

/** Refuses to resume a run whose database and directory disagree. */
export function disagreement(runId: string, e: RunDirectoryEvidence, store: RunStore, found: readonly Disagreement[]): RunDirectoryError {
  const last = lastEvidencedRound(e);
  const committed = store.committedRounds(runId).at(-1)?.round ?? 0;
  const lost = found.some((d) => d.lostCommits);
  const lines = [
    `cannot resume run ${runId}: its database and its run directory ${e.runDir} disagree:`,
    bullets(found.map((d) => d.what)),
    `Nothing in ${e.runDir} was changed. To recover:`,
    bullets([
      `put back a copy of ${DATABASE_FILE} (with its ${DATABASE_FILE}-wal, if the copy has one) taken at or after round ${last} and start again; it is checked against this directory before the run resumes`,
      `or ${keepAsRecord(e)}`,
    ]),
    ...(lost
      ? [
          `Resuming from the database as it is would run rounds ${committed + 1}–${last} again and sign different records for them than those already on disk and given to nodes, so it is not offered.`,
        ]
      : []),
  ];
  return new RunDirectoryError(lines.join('\n'));
}

/**
 * Writes the signed records the database holds but records/ lacks: every round of a run from before
 * records/ existed, or the round a crash stopped between its commit and its record. Run only once
 * the directory has been checked against the database. Returns how many files it wrote.
 */
export function completeSignedRecords(store: RunStore, run: RunRow, present: SignedRecords, recordsDir: string): number {
  let written = 0;
  if (!present.run && run.runSignature && run.initialModelSha256) {
    writeRunRecordFile(recordsDir, {
      layout: RUN_TAG,
      experiment_id: run.id,
      experiment_sha256: sha256Hex(Buffer.from(run.experimentJson)),
      seed: run.seed,
      initial_model_sha256: run.initialModelSha256,
      run_signature: run.runSignature,
      aggregator_public_key: run.aggregatorPublicKey,
      started_at: run.startedAt,
    });
    written++;
  }
  for (const r of store.committedRounds(run.id)) {
    if (present.rounds.has(r.round) || !r.roundDigest) continue;
    writeRoundRecordFile(recordsDir, {
      layout: ROUND_TAG,
      experiment_id: run.id,
      round: r.round,
      previous_model_sha256: r.previousModelSha256,
      model_sha256: r.modelSha256,
      accepted: store.creditedUpdates(run.id, r.round),
      round_digest: r.roundDigest,
      aggregator_signature: r.aggregatorSignature,
      aggregator_public_key: run.aggregatorPublicKey,
      attempt: r.attempt,
      committed_at: r.closedAt,
      accuracy: r.accuracy !== null && Number.isFinite(r.accuracy) ? r.accuracy : null,
      loss: r.loss !== null && Number.isFinite(r.loss) ? r.loss : null,
    });
    written++;
  }
  return written;
}
