import type { RunSummary } from '../aggregator/aggregator.js';

export function printSummary(summary: RunSummary, runDir: string): void {
  const out = process.stdout;
  const pct = (x: number | null) => (x === null ? '—' : `${(x * 100).toFixed(2)}%`);
  out.write(`\nrun ${summary.run_id} (${summary.experiment.name}, backend ${summary.backend})\n`);
  out.write(`  rounds committed : ${summary.rounds.length}/${summary.experiment.rounds}\n`);
  out.write(`  final accuracy   : ${pct(summary.final_accuracy)} (best ${pct(summary.best_accuracy)})\n`);
  if (summary.target) {
    const t = summary.target;
    out.write(
      `  target           : ${pct(t.accuracy)} within ${t.within_rounds} rounds — ` +
        (t.met ? `met at round ${t.reached_at_round}` : t.reached_at_round ? `reached late, at round ${t.reached_at_round}` : 'NOT met') +
        '\n',
    );
  }
  if (summary.mean_overhead_fraction !== null) {
    out.write(`  aggregator overhead: ${(summary.mean_overhead_fraction * 100).toFixed(1)}% of a round on average\n`);
  }
  out.write(`  wall time        : ${summary.wall_seconds.toFixed(1)} s\n`);
  out.write(`  summary          : ${runDir}/summary.json\n`);
  if (summary.rounds.length) out.write(`  curves           : ${runDir}/curves.svg\n`);
  out.write(`  final model      : ${summary.checkpoints}/round-${String(summary.rounds.at(-1)?.round ?? 0).padStart(4, '0')}/model.json\n`);
}
