// The node's contribution ledger: an append-only JSON-lines file in its state
// directory, one line per event (a task declined or dropped, an update
// submitted, the aggregator's verdict on it). An update counts as credited
// only when the aggregator's signed round record lists it, checked here
// against the aggregator key the node pinned, so the totals rest on
// signatures rather than on anyone's word. Appending whole lines keeps every
// earlier line intact if the node dies mid-write; a torn last line is skipped.
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import { digestHex, signatureFromString, verify } from '../core/signing/ed25519.js';
import { roundDigest } from '../core/signing/layouts.js';
import { bump, emptyTotals, type ContributionTotals } from '../core/contribution-totals.js';
import type { TaskOutcomeReply__Output } from '../proto/generated/crowdfl/v1/TaskOutcomeReply.js';

const base = {
  at: z.number(),
  /** Fingerprint of the aggregator key the node pinned: whose word the entry rests on. */
  aggregator: z.string(),
  experiment: z.string(),
  round: z.number().int(),
  task: z.string(),
};

export const ledgerEntrySchema = z.discriminatedUnion('event', [
  z.object({ event: z.literal('declined'), ...base, kind: z.string(), reason: z.string() }),
  z.object({ event: z.literal('dropped'), ...base, reason: z.string() }),
  z.object({
    event: z.literal('submitted'),
    ...base,
    /** The update's weight in FedAvg: local examples it was trained on. */
    examples: z.number().int(),
    /** Examples processed, epochs included. */
    examples_trained: z.number().int(),
    compute_seconds: z.number(),
    update_digest: z.string(),
    accepted: z.boolean(),
    message: z.string(),
  }),
  z.object({
    event: z.literal('outcome'),
    ...base,
    verdict: z.string(),
    reason: z.string(),
    weight: z.number(),
    /** The signed round record verified under the pinned key and lists this update. */
    confirmed: z.boolean(),
    /** Why it is not confirmed, when it should have been. */
    problem: z.string().optional(),
  }),
]);
export type LedgerEntry = z.infer<typeof ledgerEntrySchema>;
type Submitted = Extract<LedgerEntry, { event: 'submitted' }>;
type Outcome = Extract<LedgerEntry, { event: 'outcome' }>;

export const LEDGER_FILE = 'ledger.jsonl';

/** The one verdict that is not final: the update's round is still open. */
const PENDING = 'pending';

export class Ledger {
  /** The file's entries once read; the running node appends to both, so it reads the file only once. */
  private cache: { entries: LedgerEntry[]; problems: string[] } | undefined;

  constructor(readonly path: string) {}

  append(entry: LedgerEntry): void {
    appendFileSync(this.path, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
    this.cache?.entries.push(entry);
  }

  /** Every readable entry; `problems` names lines that are not (a torn last line, a hand edit). */
  read(): { entries: LedgerEntry[]; problems: string[] } {
    this.cache ??= readLedgerFile(this.path);
    return { entries: [...this.cache.entries], problems: [...this.cache.problems] };
  }

  /** Updates of `experiment` the aggregator took but has not given a final verdict on yet. */
  awaitingOutcome(experiment: string): Submitted[] {
    const { entries } = this.read();
    const settled = new Set(entries.filter((e) => e.event === 'outcome' && e.verdict !== PENDING).map((e) => e.task));
    return entries.filter((e): e is Submitted => e.event === 'submitted' && e.accepted && e.experiment === experiment && !settled.has(e.task));
  }
}

function readLedgerFile(path: string): { entries: LedgerEntry[]; problems: string[] } {
  if (!existsSync(path)) return { entries: [], problems: [] };
  const entries: LedgerEntry[] = [];
  const problems: string[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (!line.trim()) return;
      try {
        const parsed = ledgerEntrySchema.safeParse(JSON.parse(line));
        if (parsed.success) entries.push(parsed.data);
        else problems.push(`line ${i + 1}: ${parsed.error.issues[0]?.message ?? 'not a ledger entry'}`);
      } catch {
        problems.push(`line ${i + 1}: not JSON`);
      }
    });
  return { entries, problems };
}

/**
 * The ledger entry for an aggregator's answer about `submitted`, or undefined
 * while its round is open. Credit needs the record's signature to verify
 * under `aggregatorKey` and the record to list this very update.
 */
export function outcomeEntry(submitted: Submitted, reply: TaskOutcomeReply__Output, aggregatorKey: Uint8Array, at = Date.now()): Outcome | undefined {
  if (reply.verdict === PENDING) return undefined;
  const entry: Outcome = {
    event: 'outcome',
    at,
    aggregator: submitted.aggregator,
    experiment: submitted.experiment,
    round: reply.round,
    task: submitted.task,
    verdict: reply.verdict,
    reason: reply.reason,
    weight: reply.weight,
    confirmed: false,
  };
  // Only kept and down-weighted updates are in the round's signed record.
  if (reply.verdict === 'rejected' || reply.verdict === 'not-selected' || reply.verdict === 'missing' || reply.verdict === 'declined' || reply.verdict === 'abandoned') return entry;
  const problem = recordProblem(submitted, reply, aggregatorKey);
  return problem ? { ...entry, problem } : { ...entry, confirmed: true };
}

function recordProblem(submitted: Submitted, reply: TaskOutcomeReply__Output, aggregatorKey: Uint8Array): string | undefined {
  const r = reply.record;
  if (!r) return `the aggregator says ${reply.verdict} but sent no signed round record`;
  if (r.experiment_id !== submitted.experiment) return `the round record is of experiment ${r.experiment_id}, not ${submitted.experiment}`;
  if (!r.accepted.some((a) => a.task_id === submitted.task && a.update_digest === submitted.update_digest)) {
    return `the signed record of round ${r.round} does not list this update (digest ${submitted.update_digest.slice(0, 12)})`;
  }
  let digest: Uint8Array;
  try {
    digest = roundDigest({
      experiment_id: r.experiment_id,
      round: r.round,
      previous_model_sha256: r.previous_model_sha256,
      model_sha256: r.model_sha256,
      accepted: r.accepted.map((a) => ({ task_id: a.task_id, update_digest_hex: a.update_digest, signature_b64: a.signature })),
    });
  } catch (err) {
    return `the round record cannot be signed data: ${(err as Error).message}`;
  }
  const signature = signatureFromString(r.aggregator_signature);
  if (!signature || !verify(digest, signature, aggregatorKey)) {
    return `the signature over round ${r.round}'s record (${digestHex(digest).slice(0, 12)}) does not verify under the pinned aggregator key`;
  }
  return undefined;
}

export function contributionTotals(entries: readonly LedgerEntry[]): ContributionTotals {
  const t = emptyTotals();
  const outcomes = new Map<string, Outcome>();
  for (const e of entries) if (e.event === 'outcome') outcomes.set(e.task, e);
  const rounds = new Set<string>();
  const tasks = new Set<string>();
  for (const e of entries) {
    if (e.event === 'outcome') continue;
    tasks.add(e.task);
    if (e.event === 'declined') bump(t.declined, `${e.kind}: ${e.reason}`);
    else if (e.event === 'dropped') t.dropped++;
    else {
      t.updatesSubmitted++;
      t.computeSeconds += e.compute_seconds;
      t.examples += e.examples;
      t.examplesTrained = (t.examplesTrained ?? 0) + e.examples_trained;
      rounds.add(`${e.aggregator}/${e.experiment}/${e.round}`);
      if (!e.accepted) {
        bump(t.refusedAtUpload, e.message);
        continue;
      }
      const o = outcomes.get(e.task);
      if (!o) t.awaitingVerdict++;
      else if (o.verdict === 'kept') t.kept++;
      else if (o.verdict === 'down-weighted') t.downWeighted++;
      else if (o.verdict === 'not-selected') t.notSelected++;
      else if (o.verdict === 'rejected') bump(t.rejected, o.reason || 'no reason given');
      else if (o.verdict === 'abandoned') t.abandoned++;
      else t.missing++;
      if (o?.confirmed) t.credited++;
      else if (o?.problem) t.unconfirmed.push(`${e.task}: ${o.problem}`);
    }
  }
  t.tasks = tasks.size;
  t.roundsJoined = rounds.size;
  return t;
}
