// The poisoning matrix: every aggregation rule against every attack at one
// Byzantine fraction, then a sweep of the fraction for plain mean and for the
// best defence. Each cell is a full simulation (real aggregator, real node
// processes, real signatures). Results are appended to results.json as each
// run ends, so an interrupted matrix resumes where it stopped (--resume DIR).
//
//   npm run poisoning [-- experiments/poisoning-matrix.json] [--resume runs/poisoning-…] [--only RULE,…]
//                     [--columns ATTACK,…] [--skip-sweep] [--report-only]
//
// Besides accuracy, each cell reports what the verdicts said: the detection rate (Byzantine updates
// with evidence against them), the false-flag rate (honest updates with evidence against them), and
// which nodes reputation with bans on (`ban_check`) would have banned from that evidence, computed
// over the run's committed rounds with the aggregator's own reputation function. The cells run
// without bans so that every cell keeps all its nodes; a ban that happened would change later rounds.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { aggregationSchema, loadExperimentFile, type AggregationSpec, type Experiment } from '../aggregator/experiment/schema.js';
import { describeIssues } from '../core/user-error.js';
import { attackSchema, type AttackSpec } from '../aggregator/experiment/attack-schema.js';
import { simulate, type AttackReport } from '../lab/simulate.js';
import { newRunId } from '../aggregator/run-id.js';
import { heatmapSvg } from '../lab/heatmap.js';
import { parseMatrixArgs } from './matrix-args.js';
import { openRunStore, runOfDirectory } from '../lab/report.js';
import { reputationChanges, type NodeStanding } from '../aggregator/nodes/reputation.js';
import { reputationSchema, type ReputationSpec } from '../aggregator/experiment/sections.js';

const matrixSchema = z
  .object({
    base: z.string().describe('the clean experiment every cell starts from, relative to this file'),
    byzantine_fraction: z.number().gt(0).lt(1),
    aggregations: z.array(z.object({ label: z.string(), aggregation: aggregationSchema }).strict()).min(1),
    attacks: z.array(attackSchema.or(z.object({ kind: z.string() }).passthrough())).min(1),
    sweep: z
      .object({
        fractions: z.array(z.number().min(0).lt(1)).min(1),
        attack: z.string().describe('the attack kind swept, or "worst": the one that hurt the best defence most'),
      })
      .strict(),
    /** The target of issue 5: with the best defence, every attack ends within this many points of the clean run. */
    tolerance_points: z.number().positive().default(3),
    /** The reputation rule whose bans each cell is checked against (the runs themselves ban no one). */
    ban_check: reputationSchema.prefault({ decay: 0.3, ban_below: 0.5, ban_after: 3 }),
  })
  .strict();
type Matrix = z.infer<typeof matrixSchema>;

interface CellResult {
  rule: string;
  attack: string;
  fraction: number;
  final_accuracy: number | null;
  rounds: number;
  wall_seconds: number;
  run_dir: string;
  byzantine_rejected?: string;
  honest_rejected?: string;
}

/** What the verdicts of one cell said about whom. */
interface Blame {
  byzantine: { updates: number; flagged: number; notSelected: number; banned: number; nodes: number };
  honest: { updates: number; flagged: number; notSelected: number; banned: number; nodes: number };
}

/**
 * Flags and would-be bans in a run: each committed round's verdicts fed, in order, to the aggregator's
 * reputation function under `spec`, starting every node at reputation 1.
 */
function blame(runDir: string, byzantine: ReadonlySet<string>, spec: ReputationSpec): Blame {
  const { store, close } = openRunStore(runDir);
  try {
    const run = runOfDirectory(store, runDir);
    const standing = new Map<string, NodeStanding & { ban?: string }>();
    const out: Blame = {
      byzantine: { updates: 0, flagged: 0, notSelected: 0, banned: 0, nodes: 0 },
      honest: { updates: 0, flagged: 0, notSelected: 0, banned: 0, nodes: 0 },
    };
    for (const round of store.committedRounds(run.id)) {
      const all = store.updatesOfAttempt(round);
      const evidence = (u: (typeof all)[number]) => u.verdict === 'rejected' || u.evidence !== null;
      for (const u of all) {
        const side = byzantine.has(u.nodeId) ? out.byzantine : out.honest;
        side.updates++;
        if (evidence(u)) side.flagged++;
        if (u.verdict === 'not-selected') side.notSelected++;
      }
      // A banned node would have sent nothing more: its later verdicts do not count towards bans.
      const ups = all.filter((u) => !standing.get(u.nodeId)?.ban);
      const changes = reputationChanges(spec, (id) => standing.get(id) ?? { reputation: 1, verdicts: 0 }, ups.map((u) => ({ nodeId: u.nodeId, evidence: evidence(u) })));
      for (const c of changes) standing.set(c.nodeId, c);
    }
    for (const [id, s] of standing) {
      const side = byzantine.has(id) ? out.byzantine : out.honest;
      side.nodes++;
      if (s.ban) side.banned++;
    }
    return out;
  } finally {
    close();
  }
}

const rate = (part: number, whole: number) => (whole === 0 ? '—' : `${((100 * part) / whole).toFixed(1)}%`);

const CLEAN = 'none';

/** The attack report simulate wrote next to the run (attack.json), if the run had an attack. */
function readAttackReport(runDir: string): AttackReport | undefined {
  const path = join(runDir, 'attack.json');
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as AttackReport) : undefined;
}

function loadMatrix(path: string): { matrix: Matrix; base: Experiment; attacks: AttackSpec[] } {
  const parsed = matrixSchema.safeParse(JSON.parse(readFileSync(path, 'utf8')));
  if (!parsed.success) throw new Error(`${path} is not a valid poisoning matrix:\n${describeIssues(parsed.error)}`);
  const matrix = parsed.data;
  const { experiment: base } = loadExperimentFile(resolve(path, '..', matrix.base));
  const attacks = matrix.attacks.map((a) => attackSchema.parse({ ...a, fraction: matrix.byzantine_fraction }));
  return { matrix, base, attacks };
}

function cellExperiment(base: Experiment, label: string, aggregation: AggregationSpec, attack: AttackSpec | undefined): Experiment {
  const name = `${base.name}-${label}-${attack ? `${attack.kind}-${Math.round(attack.fraction * 100)}` : 'clean'}`;
  const { attack: _ignored, ...rest } = base;
  return { ...rest, name, aggregation, ...(attack && attack.fraction > 0 ? { attack } : {}) };
}

const pct = (x: number | null) => (x === null ? '—' : `${(x * 100).toFixed(1)}`);

function markdownTable(results: readonly CellResult[], rules: readonly string[], attacks: readonly string[], fraction: number): string {
  const cell = (rule: string, attack: string) =>
    results.find((r) => r.rule === rule && r.attack === attack && (attack === CLEAN ? r.fraction === 0 : r.fraction === fraction));
  const head = `| rule \\ attack (${Math.round(fraction * 100)}% Byzantine) | clean | ${attacks.join(' | ')} |`;
  const sep = `|---|${'---|'.repeat(attacks.length + 1)}`;
  const rows = rules.map((rule) => `| ${rule} | ${[CLEAN, ...attacks].map((a) => pct(cell(rule, a)?.final_accuracy ?? null)).join(' | ')} |`);
  return [head, sep, ...rows].join('\n');
}

/** The defence whose worst attack result is best (plain mean excluded: it is the baseline). */
function bestDefence(results: readonly CellResult[], rules: readonly string[], attacks: readonly string[], fraction: number): string | undefined {
  let best: { rule: string; worst: number } | undefined;
  for (const rule of rules.slice(1)) {
    const accs = attacks.map((a) => results.find((r) => r.rule === rule && r.attack === a && r.fraction === fraction)?.final_accuracy ?? null);
    if (accs.some((x) => x === null)) continue;
    const worst = Math.min(...(accs as number[]));
    if (!best || worst > best.worst) best = { rule, worst };
  }
  return best?.rule;
}

async function main(): Promise<void> {
  const args = parseMatrixArgs(process.argv.slice(2), 'experiments/poisoning-matrix.json', 'RULE', 'ATTACK');
  const { matrix, base, attacks } = loadMatrix(args.file);
  const outDir = resolve(args.resume ?? join('runs', newRunId('poisoning')));
  mkdirSync(outDir, { recursive: true });
  const resultsPath = join(outDir, 'results.json');
  const results: CellResult[] = existsSync(resultsPath) ? (JSON.parse(readFileSync(resultsPath, 'utf8')) as CellResult[]) : [];
  const rules = matrix.aggregations.map((a) => a.label);
  const columns = args.columns;
  if (columns) {
    const unknown = [...columns].filter((c) => !attacks.some((a) => a.kind === c));
    if (unknown.length) throw new Error(`--columns ${unknown.join(',')}: not an attack of ${args.file} (${attacks.map((a) => a.kind).join(', ')})`);
  }
  const attackKinds = attacks.map((a) => a.kind).filter((k) => !columns || columns.has(k));
  const f = matrix.byzantine_fraction;

  type Cell = { label: string; aggregation: AggregationSpec; attack?: AttackSpec };
  const matrixCells: Cell[] = matrix.aggregations
    .filter((a) => !args.only || args.only.has(a.label))
    .flatMap((a) => [
      { label: a.label, aggregation: a.aggregation },
      ...attacks.filter((attack) => attackKinds.includes(attack.kind)).map((attack) => ({ label: a.label, aggregation: a.aggregation, attack })),
    ]);
  const started = Date.now();
  let ran = 0;
  const runCell = async (cell: Cell, index: number, total: number): Promise<void> => {
    const attack = cell.attack && cell.attack.fraction > 0 ? cell.attack : undefined;
    const key = { rule: cell.label, attack: attack?.kind ?? CLEAN, fraction: attack?.fraction ?? 0 };
    if (results.some((r) => r.rule === key.rule && r.attack === key.attack && r.fraction === key.fraction)) return;
    if (args.reportOnly) return; // a table of what has run so far
    const experiment = cellExperiment(base, cell.label, cell.aggregation, attack);
    const eta = ran ? ` — ETA ${Math.round((((Date.now() - started) / ran) * (total - index)) / 60000)} min` : '';
    process.stderr.write(`\n[${index + 1}/${total}] ${key.rule} × ${key.attack} at ${Math.round(key.fraction * 100)}%${eta}\n`);
    const summary = await simulate({ experiment, runsDir: join(outDir, 'runs'), progress: false, log: () => {} });
    ran++;
    const d = summary.attack?.detection;
    const result: CellResult = {
      ...key,
      final_accuracy: summary.final_accuracy,
      rounds: summary.rounds.length,
      wall_seconds: summary.wall_seconds,
      run_dir: summary.run_dir,
      ...(d
        ? {
            byzantine_rejected: `${d.byzantine.rejected}/${d.byzantine.updates}`,
            honest_rejected: `${d.honest.rejected}/${d.honest.updates}`,
          }
        : {}),
    };
    results.push(result);
    writeFileSync(resultsPath, JSON.stringify(results, null, 2));
    process.stderr.write(
      `    final accuracy ${pct(result.final_accuracy)}% in ${summary.wall_seconds.toFixed(0)} s` +
        (d ? `; Byzantine updates rejected ${result.byzantine_rejected}, honest rejected ${result.honest_rejected}` : '') +
        '\n',
    );
  };

  const sweepRuns = args.skipSweep ? 0 : matrix.sweep.fractions.length * 2;
  const total = matrixCells.length + sweepRuns;
  for (const [i, cell] of matrixCells.entries()) await runCell(cell, i, total);

  const best = bestDefence(results, rules, attackKinds, f);
  const cleanAcc = results.find((r) => r.rule === rules[0] && r.attack === CLEAN)?.final_accuracy ?? null;
  const worstForBest = best
    ? attackKinds
        .map((a) => ({ a, acc: results.find((r) => r.rule === best && r.attack === a && r.fraction === f)?.final_accuracy ?? 1 }))
        .sort((x, y) => x.acc - y.acc)[0]!.a
    : attackKinds[0]!;
  const sweepKind = matrix.sweep.attack === 'worst' ? worstForBest : matrix.sweep.attack;
  const sweepAttack = attacks.find((a) => a.kind === sweepKind);
  if (!sweepAttack) throw new Error(`sweep.attack ${sweepKind} is not one of the matrix's attacks (${attackKinds.join(', ')})`);
  const sweepRules = args.skipSweep ? [] : [rules[0]!, ...(best ? [best] : [])];
  let index = matrixCells.length;
  for (const label of sweepRules) {
    const aggregation = matrix.aggregations.find((a) => a.label === label)!.aggregation;
    for (const fraction of matrix.sweep.fractions) {
      await runCell({ label, aggregation, attack: fraction > 0 ? { ...sweepAttack, fraction } : undefined }, index++, total);
    }
  }

  // The report.
  const lines: string[] = [];
  lines.push(`# Poisoning matrix: ${base.name} (${base.model} on ${base.dataset.name}, ${base.nodes} nodes, ${base.rounds} rounds, ${base.training.epochs} local epoch(s))`, '');
  lines.push(`Final test accuracy (%) after ${base.rounds} rounds. Results: ${resultsPath}`, '');
  lines.push(markdownTable(results, rules, attackKinds, f), '');
  lines.push(`## Byzantine fraction sweep (${sweepKind})`, '');
  lines.push(`| rule | ${matrix.sweep.fractions.map((x) => `${Math.round(x * 100)}%`).join(' | ')} |`, `|---|${'---|'.repeat(matrix.sweep.fractions.length)}`);
  for (const label of sweepRules) {
    const accs = matrix.sweep.fractions.map((fr) =>
      pct(results.find((r) => r.rule === label && (fr === 0 ? r.attack === CLEAN && r.fraction === 0 : r.attack === sweepKind && r.fraction === fr))?.final_accuracy ?? null),
    );
    lines.push(`| ${label} | ${accs.join(' | ')} |`);
  }
  lines.push(
    '',
    '## Detection: whom the verdicts blamed (committed rounds)',
    '',
    `Detection rate: Byzantine updates with evidence against them (rejected, or used but flagged). False-flag rate: honest updates with ` +
      `evidence against them. Not selected: left out by the rule's capacity, no evidence. Bans: nodes that reputation ` +
      `(decay ${matrix.ban_check.decay}, ban_below ${matrix.ban_check.ban_below}, ban_after ${matrix.ban_check.ban_after}) would have banned ` +
      `from these verdicts (the runs ban no one).`,
    '',
    '| rule | attack | detection | false flags | Byzantine not selected | honest not selected | Byzantine banned | honest banned |',
    '|---|---|---|---|---|---|---|---|',
  );
  let honestBanned = 0;
  const falseFlagMisses: string[] = [];
  for (const r of results) {
    const report = readAttackReport(r.run_dir);
    const byz = new Set(report?.byzantine_nodes ?? []);
    let b: Blame;
    try {
      b = blame(r.run_dir, byz, matrix.ban_check);
    } catch {
      continue; // a run directory moved or deleted since
    }
    honestBanned += b.honest.banned;
    const attack = r.attack === CLEAN ? 'clean' : `${r.attack} ${Math.round(r.fraction * 100)}%`;
    lines.push(
      `| ${r.rule} | ${attack} | ${r.attack === CLEAN ? '—' : `${rate(b.byzantine.flagged, b.byzantine.updates)} (${b.byzantine.flagged}/${b.byzantine.updates})`} | ` +
        `${rate(b.honest.flagged, b.honest.updates)} (${b.honest.flagged}/${b.honest.updates}) | ${r.attack === CLEAN ? '—' : b.byzantine.notSelected} | ${b.honest.notSelected} | ` +
        `${r.attack === CLEAN ? '—' : `${b.byzantine.banned}/${b.byzantine.nodes}`} | ${b.honest.banned}/${b.honest.nodes} |`,
    );
    if (b.honest.updates > 0 && b.honest.flagged / b.honest.updates > 0.05) falseFlagMisses.push(`${r.rule} × ${attack} ${rate(b.honest.flagged, b.honest.updates)}`);
  }
  lines.push('', '## Targets', '');
  lines.push(`- No honest node banned in any cell: ${honestBanned === 0 ? 'MET' : `MISSED — ${honestBanned} honest bans over all cells (table above)`}`);
  lines.push(
    `- False-flag rate ≤ 5%: ${falseFlagMisses.length === 0 ? 'MET in every cell' : `above 5% in ${falseFlagMisses.length} cell(s): ${falseFlagMisses.join('; ')}`}`,
  );
  if (best && cleanAcc !== null) {
    const misses = attackKinds
      .map((a) => ({ a, acc: results.find((r) => r.rule === best && r.attack === a && r.fraction === f)?.final_accuracy ?? null }))
      .filter((x) => x.acc === null || (cleanAcc - x.acc) * 100 > matrix.tolerance_points);
    lines.push(
      `- Best defence (${best}) within ${matrix.tolerance_points} points of the clean run (${pct(cleanAcc)}%) under every attack at ${Math.round(f * 100)}%: ` +
        (misses.length ? `MISSED — ${misses.map((m) => `${m.a} ${pct(m.acc)}%`).join(', ')}` : 'MET'),
    );
  }
  for (const kind of ['sign-flip', 'scaling']) {
    const acc = results.find((r) => r.rule === rules[0] && r.attack === kind && r.fraction === f)?.final_accuracy ?? null;
    if (acc !== null && cleanAcc !== null) {
      lines.push(`- Plain ${rules[0]} under ${kind}: ${pct(acc)}% vs clean ${pct(cleanAcc)}% (${((cleanAcc - acc) * 100).toFixed(1)} points lower)`);
    }
  }
  const wall = results.reduce((s, r) => s + r.wall_seconds, 0);
  lines.push('', `Total simulated wall time: ${(wall / 60).toFixed(1)} min over ${results.length} runs.`);
  const report = lines.join('\n') + '\n';
  writeFileSync(join(outDir, 'table.md'), report);
  writeFileSync(
    join(outDir, 'heatmap.svg'),
    await heatmapSvg(
      results.filter((r) => r.fraction === f || (r.attack === CLEAN && r.fraction === 0)).map((r) => ({ row: r.rule, column: r.attack === CLEAN ? 'clean' : r.attack, value: r.final_accuracy })),
      { rows: rules, columns: ['clean', ...attackKinds], title: `final accuracy, ${Math.round(f * 100)}% Byzantine nodes` },
    ),
  );
  process.stdout.write(`\n${report}\nwritten: ${join(outDir, 'table.md')}, ${join(outDir, 'heatmap.svg')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`poisoning: ${(err as Error).message}\n`);
  process.exitCode = 2;
});
