// Runs a recorded experiment again and compares the two runs round by round,
// so an evaluator can check a published run instead of trusting it. What
// makes a rerun repeat the original (and where it cannot) is in README.md,
// "Determinism".
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DEFAULT_CROSS_BACKEND_TOLERANCE, type BackendPreference } from '../core/backend.js';
import { loadOrCreateIdentity, nodeIdFromPublicKey } from '../core/signing/keys.js';
import { ACCURACY_CHART, roundChartSvg } from './plot.js';
import { loadRun, type ReportRound, type RunReport } from './report.js';
import { nodeDir, nodeKeyFile, nodeName, simulate } from './simulate.js';
import { newRunId } from '../aggregator/run-id.js';
import { strategyNamed } from '../aggregator/strategies/registry.js';
import { UserError } from '../core/user-error.js';

/** A run that cannot be rerun as asked; the message says why. */
export class RerunError extends UserError {}

export type RecordedRun = Omit<RunReport, 'label'>;

export interface RerunOptions {
  /** The original run's directory. */
  runDir: string;
  /** Name of the new run's directory, written beside the original (default: <experiment>-rerun-<time>-<random>). */
  runId?: string;
  /** Compute on this backend instead of the one the original used. */
  backend?: BackendPreference;
  /** Accuracy difference (a fraction, 0.01 = 1 point) still counted as agreeing when the backends differ. */
  tolerance?: number;
  progress?: boolean;
  log?: (msg: string) => void;
}

export interface RoundComparison {
  round: number;
  original: ReportRound | undefined;
  rerun: ReportRound | undefined;
  /** Rerun minus original accuracy; null when either has none. */
  delta: number | null;
  sameModel: boolean;
  agrees: boolean;
}

export interface RerunResult {
  original: RecordedRun;
  rerun: RecordedRun;
  /** The two runs computed on different tfjs backends, so accuracies were compared with `tolerance`. */
  crossBackend: boolean;
  /** 0 when the backends are the same: then only identical accuracies agree. */
  tolerance: number;
  rounds: RoundComparison[];
  /** Every compared round agrees. */
  agrees: boolean;
  chart: string;
  /** What in either run timing rather than the seed decided, so that rounds may differ even on one backend. */
  notes: string[];
}

/**
 * The backend the original computed on, as a preference that selects it again. The recorded
 * preference may be 'auto', which on this machine (another tfjs-node install) could pick another.
 */
function recordedBackend(run: RecordedRun): BackendPreference {
  switch (run.backend) {
    case 'wasm':
    case 'cpu':
      return run.backend;
    case 'tensorflow':
      // Both native packages register as 'tensorflow'; the software record names the one loaded.
      return run.experiment.backend === 'tensorflow-gpu' || 'tfjs-node-gpu' in run.software ? 'tensorflow-gpu' : 'tensorflow';
    default:
      throw new RerunError(`the original run computed on backend ${JSON.stringify(run.backend)}, which crowdfl cannot select; choose one with --backend`);
  }
}

/**
 * The original's node keys, checked before anything is written: without them the nodes would join
 * under new ids, be given other task seeds and be aggregated in another order.
 */
function checkNodeKeys(run: RecordedRun, log: (msg: string) => void): void {
  // No nodes/ at all: the aggregator served nodes that ran elsewhere, with their own keys and data.
  if (!existsSync(dirname(nodeDir(run.dir, 0)))) {
    throw new RerunError(
      `${run.dir} was not simulated here: it has no nodes/ directory, so its nodes' keys and data are on their own machines. ` +
        'rerun repeats runs of `crowdfl simulate` (and `npm start`); to check this run, use `crowdfl replay` on it, which verifies ' +
        'every signature and recomputes every round from the stored updates',
    );
  }
  const ids = new Set(run.nodeIds);
  for (let i = 0; i < run.experiment.nodes; i++) {
    const file = nodeKeyFile(run.dir, i);
    if (!existsSync(file)) {
      throw new RerunError(
        `${run.dir} has no key for ${nodeName(i)} (${file}); a rerun needs the original nodes' keys, since a node's id picks its training seeds`,
      );
    }
    const id = nodeIdFromPublicKey(loadOrCreateIdentity(file).identity.publicKey);
    // Possible when a node failed to start: in the rerun it may join, so the rounds need not repeat.
    if (!ids.has(id)) log(`note: ${nodeName(i)} (${id}) never joined the original run; the rerun may differ where it takes part`);
  }
}

/**
 * Pairs the runs' committed rounds. A round the original did not commit is judged only when the
 * original finished: an interrupted original is compared on the rounds it got to.
 */
export function compareRounds(original: RecordedRun, rerun: RecordedRun, tolerance: number): RoundComparison[] {
  const last = Math.max(0, ...original.rounds.map((r) => r.round), ...rerun.rounds.map((r) => r.round));
  const comparisons: RoundComparison[] = [];
  for (let round = 1; round <= last; round++) {
    const a = original.rounds.find((r) => r.round === round);
    const b = rerun.rounds.find((r) => r.round === round);
    const delta = a?.accuracy != null && b?.accuracy != null ? b.accuracy - a.accuracy : null;
    const sameAccuracy = a !== undefined && b !== undefined && (a.accuracy === b.accuracy || (delta !== null && Math.abs(delta) <= tolerance));
    comparisons.push({
      round,
      original: a,
      rerun: b,
      delta,
      sameModel: a !== undefined && a.modelSha256 === b?.modelSha256,
      agrees: sameAccuracy || (a === undefined && original.status !== 'finished'),
    });
  }
  return comparisons;
}

export async function rerun(o: RerunOptions): Promise<RerunResult> {
  const log = o.log ?? ((msg: string) => process.stderr.write(`${msg}\n`));
  const original = loadRun(o.runDir);
  const backend = o.backend ?? recordedBackend(original);
  checkNodeKeys(original, log);
  const runId = o.runId ?? newRunId(`${original.experimentName}-rerun`);
  // Beside the original, named the way the original was given, so the two print alike.
  const runsDir = dirname(original.dir);
  if (existsSync(join(runsDir, runId))) throw new RerunError(`${join(runsDir, runId)} already exists; choose another --run-id`);

  log(
    `rerunning ${original.runId} (${original.experimentName}, seed ${original.seed}, ${original.experiment.rounds} rounds, ` +
      `backend ${original.backend}) on backend ${backend} as ${runId}, with the original nodes' keys`,
  );
  await simulate({
    // The experiment from the database, not the file: it is what the aggregator ran, defaults included.
    experiment: { ...original.experiment, backend },
    runsDir,
    runId,
    progress: o.progress,
    log,
    nodeKeysFrom: original.dir,
  });
  const repeated = loadRun(join(runsDir, runId));
  const crossBackend = repeated.backend !== original.backend;
  const tolerance = crossBackend ? (o.tolerance ?? DEFAULT_CROSS_BACKEND_TOLERANCE) : 0;
  const rounds = compareRounds(original, repeated, tolerance);

  const chart = join(repeated.dir, 'rerun-accuracy.svg');
  writeFileSync(
    chart,
    await roundChartSvg(
      [
        { label: `original ${original.runId}`, rounds: original.rounds, target: original.experiment.target?.accuracy },
        { label: `rerun ${repeated.runId}`, rounds: repeated.rounds },
      ],
      { ...ACCURACY_CHART, title: 'test accuracy per round: original and rerun (identical runs draw one line)' },
    ),
  );
  const notes = [...timingNotes(original), ...cutShort('original', original), ...cutShort('rerun', repeated)];
  return { original, rerun: repeated, crossBackend, tolerance, rounds, agrees: rounds.every((r) => r.agrees), chart, notes };
}

/** What in the experiment or the original let timing, not the seed, decide a round (README.md, "Determinism"). */
function timingNotes(run: RecordedRun): string[] {
  const { selection, faults } = run.experiment;
  const notes: string[] = [];
  const asked = Math.ceil(selection.nodes_per_round * selection.over_selection - 1e-9);
  if (asked > selection.nodes_per_round) {
    notes.push(`over-selection: a round asks ${asked} nodes and keeps the first ${selection.nodes_per_round} updates to arrive, so timing picks them`);
  }
  const strategy = run.experiment.strategy.name;
  if (strategyNamed(strategy).engine === 'buffered') {
    notes.push(`${strategy}: each published model folds the first updates to arrive, so timing fills every buffer and sets each staleness`);
  }
  if (faults) notes.push('injected faults: whether a node vanishes is drawn per task, and task ids are new in every run');
  if (run.abandoned.length) notes.push(`the original abandoned ${run.abandoned.length} attempt(s): a retry, and who it asks, depend on timing`);
  return notes;
}

/** Rounds in which a node trained only as far as its time allowed: how far depended on its speed. */
function cutShort(which: string, run: RecordedRun): string[] {
  return run.rounds
    .filter((r) => r.partial > 0)
    .map((r) => `round ${r.round} of the ${which} had ${r.partial} update(s) whose training the deadline cut short`);
}

const percent = (x: number | null | undefined) => (x == null ? '—' : `${(x * 100).toFixed(2)}%`);

/** Percentage points with a sign; exactly 0 only for equal accuracies, so a tiny difference never reads as none. */
function points(delta: number | null): string {
  if (delta === null) return '—';
  if (delta === 0) return '0';
  const text = (delta * 100).toFixed(2);
  return `${delta > 0 ? '+' : ''}${Number(text) === 0 ? (delta * 100).toExponential(1) : text}`;
}

/** The comparison table and the verdict line, as `crowdfl rerun` prints them. */
export function describeRerun(r: RerunResult): string {
  const rows = r.rounds.map((c) => [
    String(c.round),
    percent(c.original?.accuracy),
    percent(c.rerun?.accuracy),
    points(c.delta),
    c.original === undefined || c.rerun === undefined ? '—' : c.sameModel ? 'yes' : 'no',
    c.agrees ? '' : 'DIFFERS',
  ]);
  const header = ['round', 'original', 'rerun', 'Δ points', 'same model', ''];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padStart(widths[i]!))).join('  ').trimEnd();
  const lines = [`original ${r.original.dir} (backend ${r.original.backend})`, `rerun    ${r.rerun.dir} (backend ${r.rerun.backend})`, '', line(header), ...rows.map(line), ''];
  const compared = r.rounds.filter((c) => c.original !== undefined).length;
  const firstOtherModel = r.rounds.find((c) => c.original !== undefined && !c.sameModel);
  const models = firstOtherModel ? `model hashes differ from round ${firstOtherModel.round} on` : 'model hashes match in every round too';
  const firstDifference = r.rounds.find((c) => !c.agrees);
  for (const note of r.notes) lines.push(`note: ${note}`);
  if (r.original.status !== 'finished') lines.push(`note: the original is ${r.original.status}; only the ${compared} round(s) it committed are compared`);
  if (r.crossBackend) {
    const within = `±${(r.tolerance * 100).toFixed(2)} points`;
    const across = `backend ${r.rerun.backend} against the original's ${r.original.backend}: only reruns on the same backend are promised identical`;
    lines.push(
      firstDifference
        ? `differs beyond ${within} at round ${firstDifference.round} (${describeRound(firstDifference)}); ${across}`
        : `agrees within ${within} in all ${compared} rounds; ${models} (${across})`,
    );
  } else {
    lines.push(
      firstDifference
        ? `differs: round ${firstDifference.round} is the first whose accuracy is not the original's (${describeRound(firstDifference)}); ` +
            `${r.rounds.filter((c) => !c.agrees).length} of ${r.rounds.length} rounds differ`
        : `identical: all ${compared} rounds have the original's accuracy; ${models}`,
    );
  }
  lines.push(`chart: ${r.chart}`);
  return lines.join('\n') + '\n';
}

function describeRound(c: RoundComparison): string {
  if (c.original === undefined) return 'the original did not commit it';
  if (c.rerun === undefined) return 'the rerun did not commit it';
  return `original ${percent(c.original.accuracy)}, rerun ${percent(c.rerun.accuracy)}`;
}
