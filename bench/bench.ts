// `npm run bench [-- NAME ...]`: runs experiments that carry a target and
// prints each measured figure next to its target. Exits non-zero when a target
// is missed, so a regression is visible.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadExperimentFile } from '../aggregator/experiment/schema.js';
import { simulate } from '../lab/simulate.js';

const EXPERIMENTS_DIR = fileURLToPath(new URL('../../experiments/', import.meta.url));
const DEFAULT_BENCH = ['default', 'fmnist-dirichlet'];
const OVERHEAD_TARGET = 0.1;

const names = process.argv.slice(2).length ? process.argv.slice(2) : DEFAULT_BENCH;
const lines: string[] = [];
let missed = 0;
for (const name of names) {
  const path = name.endsWith('.json') ? name : join(EXPERIMENTS_DIR, `${name}.json`);
  const { experiment, text } = loadExperimentFile(path);
  process.stderr.write(`\n=== bench: ${experiment.name} ===\n`);
  const summary = await simulate({ experiment, experimentText: text, runsDir: 'runs/bench' });
  const t = summary.target;
  const perRound = summary.rounds.map(
    (r) => `    round ${String(r.round).padStart(2)}: acc ${(r.accuracy * 100).toFixed(2)}%  ${r.seconds.toFixed(1)} s  overhead ${r.overhead_seconds.toFixed(2)} s (${((100 * r.overhead_seconds) / r.seconds).toFixed(1)}%)`,
  );
  const maxOverhead = Math.max(...summary.rounds.map((r) => r.overhead_seconds / r.seconds));
  const accLine = t
    ? `  accuracy: ${t.met ? 'MET' : 'MISSED'} — target ≥ ${(t.accuracy * 100).toFixed(0)}% within ${t.within_rounds} rounds; ` +
      `measured ${t.reached_at_round ? `reached at round ${t.reached_at_round}` : 'not reached'}, final ${(summary.final_accuracy! * 100).toFixed(2)}%, best ${(summary.best_accuracy! * 100).toFixed(2)}%`
    : `  accuracy: final ${(summary.final_accuracy! * 100).toFixed(2)}% (no target)`;
  const overheadMet = summary.mean_overhead_fraction !== null && summary.mean_overhead_fraction < OVERHEAD_TARGET;
  const overheadLine =
    `  aggregator overhead: ${overheadMet ? 'MET' : 'MISSED'} — target < ${OVERHEAD_TARGET * 100}% of a round; ` +
    `measured mean ${((summary.mean_overhead_fraction ?? 0) * 100).toFixed(1)}%, worst round ${(maxOverhead * 100).toFixed(1)}%`;
  if (t && !t.met) missed++;
  if (!overheadMet) missed++;
  lines.push(
    `${experiment.name} (${summary.backend}, ${summary.rounds.length} rounds, wall ${summary.wall_seconds.toFixed(0)} s, run ${summary.run_dir})`,
    accLine,
    overheadLine,
    ...perRound,
  );
}
const report = lines.join('\n');
process.stdout.write(`\n${report}\n`);
mkdirSync('runs/bench', { recursive: true });
writeFileSync(join('runs/bench', `bench-${Date.now()}.txt`), report + '\n');
process.exitCode = missed ? 1 : 0;
