// The strategy comparison: every strategy of strategies-matrix.json on every
// base experiment (skewed Fashion-MNIST, Synthetic(1, 1)), each a full
// simulation. Writes per base a table of rounds and wall time to the base's
// target accuracy, and one accuracy/loss chart with every strategy on it.
// Results are appended as runs end, so --resume DIR continues a stopped run.
//
//   npm run strategies [-- experiments/strategies-matrix.json] [--resume runs/strategies-…] [--only LABEL,…] [--report-only]
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { loadExperimentFile, strategySchema, type Experiment } from '../aggregator/experiment/schema.js';
import { describeIssues } from '../core/user-error.js';
import { markdownTable } from '../lab/markdown.js';
import { writeCurves, type CurveRun } from '../lab/plot.js';
import { simulate } from '../lab/simulate.js';
import { newRunId } from '../aggregator/run-id.js';
import { parseMatrixArgs } from './matrix-args.js';

const matrixSchema = z
  .object({
    comparisons: z
      .array(
        z
          .object({
            base: z.string().describe('an experiment file (relative to this file) with a target accuracy'),
            // Per base, because server learning rates are tuned per task (as Reddi et al. 2021 do).
            strategies: z.array(z.object({ label: z.string(), strategy: strategySchema }).strict()).min(1),
          })
          .strict(),
      )
      .min(1),
  })
  .strict();

interface StrategyResult {
  base: string;
  strategy: string;
  target: number;
  /** First round at or above the target; null when never reached. */
  rounds_to_target: number | null;
  seconds_to_target: number | null;
  final_accuracy: number | null;
  best_accuracy: number | null;
  rounds: CurveRun['rounds'];
  wall_seconds: number;
  run_dir: string;
}

const pct = (x: number | null) => (x === null ? '—' : `${(100 * x).toFixed(2)}%`);

function baseTable(results: readonly StrategyResult[], labels: readonly string[]): string[] {
  const rows = labels.flatMap((label) => {
    const r = results.find((x) => x.strategy === label);
    if (!r) return [];
    return [[
      label,
      r.rounds_to_target === null ? `not within ${r.rounds.length}` : String(r.rounds_to_target),
      r.seconds_to_target === null ? '—' : `${r.seconds_to_target.toFixed(0)} s`,
      pct(r.final_accuracy),
      pct(r.best_accuracy),
      `${r.wall_seconds.toFixed(0)} s`,
    ]];
  });
  return markdownTable(['strategy', 'rounds to target', 'time to target', 'final accuracy', 'best accuracy', 'wall time'], rows, [1, 2, 3, 4, 5]);
}

async function main(): Promise<void> {
  const args = parseMatrixArgs(process.argv.slice(2), 'experiments/strategies-matrix.json', 'LABEL');
  const parsed = matrixSchema.safeParse(JSON.parse(readFileSync(args.file, 'utf8')));
  if (!parsed.success) throw new Error(`${args.file} is not a valid strategy comparison:\n${describeIssues(parsed.error)}`);
  const matrix = parsed.data;
  const comparisons = matrix.comparisons.map((c) => ({ base: loadExperimentFile(resolve(args.file, '..', c.base)).experiment, strategies: c.strategies }));
  for (const { base } of comparisons) if (!base.target) throw new Error(`${base.name} has no target accuracy; the comparison measures rounds to it`);
  const outDir = resolve(args.resume ?? join('runs', newRunId('strategies')));
  mkdirSync(outDir, { recursive: true });
  const resultsPath = join(outDir, 'results.json');
  const results: StrategyResult[] = existsSync(resultsPath) ? (JSON.parse(readFileSync(resultsPath, 'utf8')) as StrategyResult[]) : [];
  const cells = comparisons.flatMap(({ base, strategies }) =>
    strategies.filter((s) => !args.only || args.only.has(s.label)).map((s) => ({ base, ...s })),
  );
  const started = Date.now();
  let ran = 0;
  for (const [index, cell] of cells.entries()) {
    if (args.reportOnly || results.some((r) => r.base === cell.base.name && r.strategy === cell.label)) continue;
    const experiment: Experiment = { ...cell.base, name: `${cell.base.name}-${cell.strategy.name}`, strategy: cell.strategy };
    const eta = ran ? ` — ETA ${Math.round((((Date.now() - started) / ran) * (cells.length - index)) / 60000)} min` : '';
    process.stderr.write(`[${index + 1}/${cells.length}] ${cell.label} on ${cell.base.name}${eta}\n`);
    const summary = await simulate({ experiment, runsDir: join(outDir, 'runs'), progress: false, log: () => {} });
    ran++;
    const target = cell.base.target!.accuracy;
    const reached = summary.rounds.find((r) => r.accuracy >= target);
    results.push({
      base: cell.base.name,
      strategy: cell.label,
      target,
      rounds_to_target: reached?.round ?? null,
      seconds_to_target: reached?.cumulative_seconds ?? null,
      final_accuracy: summary.final_accuracy,
      best_accuracy: summary.best_accuracy,
      rounds: summary.rounds.map((r) => ({ round: r.round, accuracy: r.accuracy, loss: r.loss })),
      wall_seconds: summary.wall_seconds,
      run_dir: summary.run_dir,
    });
    writeFileSync(resultsPath, JSON.stringify(results, null, 2));
    process.stderr.write(`    final ${pct(summary.final_accuracy)}, target ${pct(target)} ${reached ? `reached at round ${reached.round}` : 'not reached'}\n`);
  }

  const sections: string[] = ['# Strategies on skewed data', ''];
  for (const { base, strategies } of comparisons) {
    const labels = strategies.map((s) => s.label);
    const mine = results.filter((r) => r.base === base.name);
    if (mine.length === 0) continue;
    const chart = `${base.name}-curves.svg`;
    await writeCurves(
      join(outDir, chart),
      labels.flatMap((label) => mine.filter((r) => r.strategy === label).map((r) => ({ label, rounds: r.rounds, target: r.target }))),
      `${base.name}: test accuracy and loss per round`,
    );
    sections.push(
      `## ${base.name}`,
      '',
      `${base.description ?? ''} Target: ${pct(base.target!.accuracy)} test accuracy. Time is the sum of round times up to the round that reached it.`,
      '',
      ...baseTable(mine, labels),
      '',
      `![${base.name} curves](${chart})`,
      '',
    );
  }
  const report = sections.join('\n');
  writeFileSync(join(outDir, 'table.md'), report);
  process.stdout.write(`\n${report}\nwritten: ${join(outDir, 'table.md')} and the curves next to it\n`);
}

await main();
