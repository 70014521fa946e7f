// An evaluator's report on one or more runs: read from each run's database
// (not summary.json, which an interrupted run never writes), rendered as
// markdown with per-round charts that put every run on the same axes.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join, relative, resolve } from 'node:path';
import { openDatabaseReadOnly } from '../aggregator/store/db.js';
import { explainDatabaseFile } from '../aggregator/store/storage-errors.js';
import { RunStore } from '../aggregator/store/run-store.js';
import type { RunRow } from '../aggregator/store/schema.js';
import { reasonKind, summarizeVerdicts } from '../aggregator/rounds/verdict-summary.js';
import { parseExperiment, type Experiment } from '../aggregator/experiment/schema.js';
import { markdownTable } from './markdown.js';
import { ACCURACY_CHART, LOSS_CHART, roundChartSvg, type RoundChart } from './plot.js';
import { UserError } from '../core/user-error.js';

/** A path given as a run that is not one; the message says which of the two it is. */
export class NotARunError extends UserError {}

export interface ReportRound {
  round: number;
  accuracy: number | null;
  loss: number | null;
  selected: number;
  /** Updates that went into the model: kept or down-weighted. */
  participants: number;
  rejected: number;
  downWeighted: number;
  /** Left out by the rule without evidence against them. */
  notSelected: number;
  /** Updates with evidence against them: every rejected one, and those the rule used but flagged. */
  flagged: number;
  examples: number;
  seconds: number;
  overheadSeconds: number;
  /** Tries the round took, the committed one included. */
  attempts: number;
  verdicts: string;
  /** The address of the round's model: the SHA-256 of its checkpoint's weights.bin. */
  modelSha256: string;
  /** Updates whose node stopped training early (at its deadline, or when the round no longer wanted it). */
  partial: number;
}

export interface AbandonedAttempt {
  round: number;
  attempt: number;
  seconds: number;
  reason: string;
}

export interface ReasonCount {
  verdict: 'rejected' | 'down-weighted' | 'not-selected';
  kind: string;
  updates: number;
}

export interface RunReport {
  /** How the run is named on charts and headings: its id, or its directory when two runs share an id. */
  label: string;
  dir: string;
  runId: string;
  experimentName: string;
  /** The experiment as the aggregator ran it (from the database, defaults filled in). */
  experiment: Experiment;
  /** The run directory's copy of the experiment file, when it has one. */
  experimentFile: string | null;
  seed: number;
  /** The tfjs backend the aggregator computed on ('tensorflow', 'wasm' or 'cpu'). */
  backend: string;
  /** Versions of crowdfl, Node and the tfjs packages the aggregator loaded. */
  software: Record<string, string>;
  /** Every node that joined, by id. */
  nodeIds: string[];
  status: RunRow['status'];
  /** The aggregation rule with its parameters, e.g. "krum f=1". */
  rule: string;
  nodes: number;
  nodesPerRound: number;
  quorum: number;
  plannedRounds: number;
  target: number | null;
  /** Committed rounds, in order. */
  rounds: ReportRound[];
  abandoned: AbandonedAttempt[];
  /** Verdicts other than kept in committed rounds, by reason without its figures, most frequent first. */
  reasons: ReasonCount[];
  finalAccuracy: number | null;
  best: { accuracy: number; round: number } | null;
  /** Start to finish; null while the run is running or after it was interrupted. */
  wallSeconds: number | null;
  /** Time spent in rounds, abandoned attempts included. */
  roundSeconds: number;
}

function percent(x: number | null): string {
  return x === null ? '—' : `${(x * 100).toFixed(2)}%`;
}

export function openRunStore(dir: string): { store: RunStore; close: () => void } {
  if (!existsSync(dir)) throw new NotARunError(`${dir} does not exist: give a run directory, e.g. runs/<run-id>`);
  const database = join(dir, 'crowdfl.db');
  // Checked before opening: opening would create an empty database where none was.
  if (!existsSync(database)) throw new NotARunError(`no crowdfl.db in ${dir}: is this a run directory?`);
  // Reading a run never writes to it (an older database is read through a migrated copy).
  let opened: ReturnType<typeof openDatabaseReadOnly>;
  try {
    opened = openDatabaseReadOnly(database);
  } catch (err) {
    throw explainDatabaseFile(err, database);
  }
  return { store: new RunStore(opened.db), close: opened.close };
}

/** The run a directory holds: the one named like the directory, or its only run when the directory was renamed. */
export function runOfDirectory(store: RunStore, dir: string): RunRow {
  const byName = store.getRun(basename(resolve(dir)));
  if (byName) return byName;
  const all = store.runRows();
  if (all.length === 1) return all[0]!;
  throw new NotARunError(
    all.length
      ? `the database in ${dir} holds runs ${all.map((r) => r.id).join(', ')}, none named like the directory`
      : `the database in ${dir} holds no run yet`,
  );
}

function describeRule(aggregation: Record<string, unknown> & { rule: string }): string {
  const parameters = Object.entries(aggregation)
    .filter(([key, value]) => key !== 'rule' && value !== undefined)
    .map(([key, value]) => `${key}=${String(value)}`);
  return [aggregation.rule, ...parameters].join(' ');
}

function countReasons(verdicts: readonly { verdict: string; reason: string; evidence?: string | null }[]): ReasonCount[] {
  const counts = new Map<string, ReasonCount>();
  for (const v of verdicts) {
    if (v.verdict !== 'rejected' && v.verdict !== 'down-weighted' && v.verdict !== 'not-selected') continue;
    const kind = reasonKind(v.evidence ?? v.reason);
    const key = `${v.verdict}\u0000${kind}`;
    const entry = counts.get(key) ?? { verdict: v.verdict, kind, updates: 0 };
    entry.updates++;
    counts.set(key, entry);
  }
  return [...counts.values()].sort((a, b) => b.updates - a.updates || a.kind.localeCompare(b.kind));
}

export function loadRun(dir: string): Omit<RunReport, 'label'> {
  const { store, close } = openRunStore(dir);
  try {
    const run = runOfDirectory(store, dir);
    const experiment = parseExperiment(JSON.parse(run.experimentJson), `the experiment stored in ${dir}/crowdfl.db`);
    const attempts = store.roundAttempts(run.id);
    const committed = attempts
      .filter((a) => a.status === 'committed')
      .map((attempt) => ({ attempt, updates: store.updatesOfAttempt(attempt) }));
    const rounds = committed.map(({ attempt: a, updates }): ReportRound => ({
      round: a.round,
      accuracy: a.accuracy,
      loss: a.loss,
      selected: a.selected,
      participants: a.participants,
      rejected: updates.filter((u) => u.verdict === 'rejected').length,
      downWeighted: updates.filter((u) => u.verdict === 'down-weighted').length,
      notSelected: updates.filter((u) => u.verdict === 'not-selected').length,
      flagged: updates.filter((u) => u.verdict === 'rejected' || u.evidence !== null).length,
      examples: a.examples,
      seconds: a.seconds,
      overheadSeconds: a.overheadSeconds,
      attempts: attempts.filter((other) => other.round === a.round).length,
      verdicts: updates.length
        ? summarizeVerdicts(updates)
        : 'no updates',
      modelSha256: a.modelSha256,
      partial: updates.filter((u) => (JSON.parse(u.metrics) as { partial?: unknown }).partial === true).length,
    }));
    const evaluated = rounds.filter((r): r is ReportRound & { accuracy: number } => r.accuracy !== null);
    const best = evaluated.reduce<RunReport['best']>((top, r) => (top && top.accuracy >= r.accuracy ? top : { accuracy: r.accuracy, round: r.round }), null);
    const experimentFile = join(dir, 'experiment.json');
    return {
      dir,
      runId: run.id,
      experimentName: run.experimentName,
      experiment,
      experimentFile: existsSync(experimentFile) ? experimentFile : null,
      seed: run.seed,
      backend: run.backend,
      software: JSON.parse(run.software) as Record<string, string>,
      nodeIds: store.nodeRows().map((n) => n.nodeId),
      status: run.status,
      rule: describeRule(experiment.aggregation),
      nodes: experiment.nodes,
      nodesPerRound: experiment.selection.nodes_per_round,
      quorum: experiment.selection.min_updates,
      plannedRounds: experiment.rounds,
      target: experiment.target?.accuracy ?? null,
      rounds,
      abandoned: attempts
        .filter((a) => a.status === 'abandoned')
        .map((a) => ({ round: a.round, attempt: a.attempt, seconds: a.seconds, reason: a.reason })),
      reasons: countReasons(committed.flatMap((c) => c.updates)),
      finalAccuracy: rounds.at(-1)?.accuracy ?? null,
      best,
      wallSeconds: run.finishedAt === null ? null : (run.finishedAt - run.startedAt) / 1000,
      roundSeconds: attempts.reduce((sum, a) => sum + a.seconds, 0),
    };
  } finally {
    close();
  }
}

/** Loads every run; two runs with the same id (from different runs directories) are told apart by their directories. */
export function loadRuns(dirs: readonly string[]): RunReport[] {
  const loaded = dirs.map(loadRun);
  return loaded.map((run) => ({
    ...run,
    label: loaded.filter((other) => other.runId === run.runId).length > 1 ? run.dir : run.runId,
  }));
}

export interface ReportChart {
  file: string;
  chart: RoundChart<ReportRound>;
}

export const REPORT_CHARTS: readonly ReportChart[] = [
  { file: 'accuracy.svg', chart: { ...ACCURACY_CHART, title: 'test accuracy per round (dashed: target)' } },
  { file: 'loss.svg', chart: { ...LOSS_CHART, title: 'test loss per round' } },
  {
    file: 'participation.svg',
    chart: {
      title: 'updates per round: used in the model and rejected',
      yTitle: 'updates',
      measures: [{ field: 'participants', label: 'participants' }, { field: 'rejected', label: 'rejected' }],
      yFormat: 'd',
      yFromZero: true,
    },
  },
  {
    file: 'time.svg',
    chart: {
      title: 'time per round',
      yTitle: 'seconds',
      measures: [{ field: 'seconds', label: 'round' }, { field: 'overheadSeconds', label: 'aggregator overhead' }],
      yFromZero: true,
    },
  },
];

const seconds = (s: number | null) => (s === null ? '—' : `${s.toFixed(1)} s`);
const linkFrom = (outDir: string, path: string) => relative(resolve(outDir), resolve(path));

function runSection(run: RunReport, outDir: string): string[] {
  const lines = [`## \`${run.label}\`: ${run.experimentName}`, ''];
  const file = run.experimentFile ? `[experiment.json](${linkFrom(outDir, run.experimentFile)})` : 'no copy of the experiment file in the run directory';
  const reached = run.best ? `${percent(run.best.accuracy)} at round ${run.best.round}` : '—';
  lines.push(
    `- directory: \`${run.dir}\``,
    `- experiment: ${run.experimentName} (${file}), seed ${run.seed}, backend ${run.backend}`,
    `- aggregation: ${run.rule}`,
    `- nodes: ${run.nodes}, ${run.nodesPerRound} asked per round, quorum ${run.quorum}`,
    `- rounds committed: ${run.rounds.length} of ${run.plannedRounds} (run ${run.status})`,
    `- final accuracy: ${percent(run.finalAccuracy)}; best ${reached}${run.target === null ? '' : `; target ${percent(run.target)}`}`,
    `- time: ${seconds(run.wallSeconds)} start to finish, ${seconds(run.roundSeconds)} in rounds`,
    `- abandoned attempts: ${run.abandoned.length}`,
    '',
  );
  if (run.abandoned.length) {
    lines.push(
      ...markdownTable(
        ['round', 'attempt', 'seconds', 'why abandoned'],
        run.abandoned.map((a) => [String(a.round), String(a.attempt), a.seconds.toFixed(1), a.reason]),
        [0, 1, 2],
      ),
      '',
    );
  }
  lines.push('Updates not kept in committed rounds, by reason:', '');
  if (run.reasons.length) {
    lines.push(...markdownTable(['verdict', 'reason', 'updates'], run.reasons.map((r) => [r.verdict, r.kind, String(r.updates)]), [2]), '');
  } else {
    lines.push('none: every update was kept.', '');
  }
  lines.push(
    ...markdownTable(
      ['round', 'accuracy', 'loss', 'participants', 'selected', 'rejected', 'examples', 'seconds', 'overhead', 'attempts', 'verdicts'],
      run.rounds.map((r) => [
        String(r.round),
        percent(r.accuracy),
        r.loss === null ? '—' : r.loss.toFixed(4),
        String(r.participants),
        String(r.selected),
        String(r.rejected),
        String(r.examples),
        r.seconds.toFixed(1),
        r.overheadSeconds.toFixed(1),
        String(r.attempts),
        r.verdicts,
      ]),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    ),
    '',
  );
  return lines;
}

export function reportMarkdown(runs: readonly RunReport[], outDir: string, generatedAt = new Date()): string {
  const lines = [
    `# crowdfl report: ${runs.map((r) => `\`${r.label}\``).join(', ')}`,
    '',
    `Generated ${generatedAt.toISOString()} from each run's crowdfl.db. Charts put every run on the same axes, one colour per run.`,
    '',
    ...markdownTable(
      ['run', 'experiment', 'aggregation', 'nodes', 'rounds', 'final accuracy', 'best accuracy', 'wall time', 'abandoned attempts', 'rejected updates'],
      runs.map((r) => [
        `\`${r.label}\``,
        r.experimentName,
        r.rule,
        String(r.nodes),
        `${r.rounds.length}/${r.plannedRounds}`,
        percent(r.finalAccuracy),
        percent(r.best?.accuracy ?? null),
        seconds(r.wallSeconds),
        String(r.abandoned.length),
        String(r.rounds.reduce((sum, round) => sum + round.rejected, 0)),
      ]),
      [3, 5, 6, 7, 8, 9],
    ),
    '',
    ...REPORT_CHARTS.flatMap((c) => [`![${c.chart.title}](${c.file})`, '']),
    ...runs.flatMap((run) => runSection(run, outDir)),
  ];
  return lines.join('\n');
}

/** Writes report.md and one SVG per chart into outDir; returns the paths written, report.md first. */
export async function writeReport(runs: readonly RunReport[], outDir: string): Promise<string[]> {
  mkdirSync(outDir, { recursive: true });
  const chartRuns = runs.map((r) => ({ label: r.label, rounds: r.rounds, target: r.target ?? undefined }));
  const charts = await Promise.all(
    REPORT_CHARTS.map(async (c) => {
      const path = join(outDir, c.file);
      writeFileSync(path, await roundChartSvg(chartRuns, c.chart));
      return path;
    }),
  );
  const markdown = join(outDir, 'report.md');
  writeFileSync(markdown, reportMarkdown(runs, outDir));
  return [markdown, ...charts];
}
