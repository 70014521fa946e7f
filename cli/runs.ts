import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { RunSummary } from '../aggregator/aggregator.js';
import { checkpointDirName, readCheckpointWeights } from '../aggregator/store/checkpoints.js';
import { auditRun } from '../lab/audit.js';
import { action, UsageError } from './errors.js';
import { reasonKind, summarizeVerdicts } from '../aggregator/rounds/verdict-summary.js';
import { openRunStore, runOfDirectory } from '../lab/report.js';

export function resolveRun(runsDir: string, run: string): string {
  for (const candidate of [run, join(runsDir, run)]) {
    if (existsSync(join(candidate, 'crowdfl.db'))) return candidate;
  }
  throw new UsageError(`no run ${run}: expected a directory holding crowdfl.db (see \`crowdfl runs list\`)`);
}

export function register(program: Command): void {
  const runs = program.command('runs').description('inspect finished and running runs');

  runs
    .command('list')
    .description('one line per run: name, rounds, final accuracy, wall time')
    .option('--runs-dir <dir>', 'where runs are', 'runs')
    .action(
      action((opts: { runsDir: string }) => {
        if (!existsSync(opts.runsDir)) throw new UsageError(`${opts.runsDir} does not exist: no runs yet (start one with crowdfl simulate)`);
        for (const name of readdirSync(opts.runsDir).sort()) {
          const summaryPath = join(opts.runsDir, name, 'summary.json');
          if (!existsSync(summaryPath)) {
            if (existsSync(join(opts.runsDir, name, 'crowdfl.db'))) process.stdout.write(`${name}  (running or interrupted)\n`);
            continue;
          }
          const s = JSON.parse(readFileSync(summaryPath, 'utf8')) as RunSummary;
          const acc = s.final_accuracy === null ? '—' : `${(s.final_accuracy * 100).toFixed(2)}%`;
          process.stdout.write(`${name}  ${s.rounds.length} rounds  final ${acc}  ${s.wall_seconds.toFixed(0)} s  ${s.backend}\n`);
        }
      }),
    );

  runs
    .command('show')
    .description("per-round table from the run's database, with every update's verdict, and a check of each checkpoint's hash")
    .argument('<run>', 'run directory or its name under --runs-dir')
    .option('--runs-dir <dir>', 'where runs are', 'runs')
    .option('--updates', 'list every update with its node, examples, verdict and reason', false)
    .action(
      action((run: string, opts: { runsDir: string; updates: boolean }) => {
        const dir = resolveRun(opts.runsDir, run);
        const { store, close } = openRunStore(dir);
        const out = process.stdout;
        let mismatches = 0;
        out.write('round  accuracy    loss  nodes  rejected  seconds  overhead  model_sha256  checkpoint  signatures\n');
        const runId = runOfDirectory(store, dir).id;
        const audits = new Map(auditRun(store, runId).map((a) => [a.round, a.problems]));
        for (const r of store.committedRounds(runId)) {
          // The committing attempt's updates only: an abandoned attempt's are not this round's rejections.
          const ups = store.updatesOfAttempt(r);
          const rejected = ups.filter((u) => u.verdict === 'rejected').length;
          const ckpt = join(dir, 'checkpoints', checkpointDirName(r.round));
          let check = 'missing';
          if (existsSync(ckpt)) {
            check = readCheckpointWeights(ckpt).sha256 === r.modelSha256 ? 'ok' : 'HASH MISMATCH';
          }
          if (check !== 'ok') mismatches++;
          const problems = audits.get(r.round) ?? [];
          if (problems.length) mismatches++;
          out.write(
            `${String(r.round).padStart(5)}  ${((r.accuracy ?? 0) * 100).toFixed(2).padStart(7)}%  ${(r.loss ?? 0).toFixed(4)}  ` +
              `${String(r.participants).padStart(2)}/${String(r.selected).padEnd(2)}  ${String(rejected).padStart(8)}  ${r.seconds.toFixed(1).padStart(7)}  ` +
              `${((100 * r.overheadSeconds) / Math.max(r.seconds, 1e-9)).toFixed(1).padStart(7)}%  ${r.modelSha256.slice(0, 12)}  ${check.padEnd(10)}  ${problems.length ? 'FAIL' : 'ok'}\n`,
          );
          for (const p of problems) out.write(`         ! ${p}\n`);
          const verdicts = summarizeVerdicts(ups.map((u) => ({ verdict: u.verdict, weight: u.weight, reason: u.reason })));
          if (!verdicts.startsWith('all ')) out.write(`         verdicts: ${verdicts}\n`);
          if (opts.updates) {
            for (const u of ups) {
              out.write(`         ${u.nodeId}  ${u.numExamples} examples  ${u.verdict} (weight ${u.weight.toFixed(3)}${u.score === null ? '' : `, score ${u.score.toPrecision(4)}`})  ${u.reason}\n`);
            }
          }
        }
        // Calls refused before they could be any round's update: hellos turned away, uploads for unknown or
        // foreign tasks, stale bases, broken streams. Kept per source up to a bound.
        const refused = store.refusalRows();
        if (refused.length) {
          out.write(`refused before any round: ${refused.length} call(s)\n`);
          const kinds = new Map<string, number>();
          for (const r of refused) kinds.set(`${r.kind}: ${reasonKind(r.reason)}`, (kinds.get(`${r.kind}: ${reasonKind(r.reason)}`) ?? 0) + 1);
          for (const [kind, n] of [...kinds].sort((a, b) => b[1] - a[1])) out.write(`  ${String(n).padStart(5)}  ${kind}\n`);
          if (opts.updates) {
            for (const r of refused) {
              out.write(`         ${r.nodeId}  ${r.kind}${r.round === null ? '' : ` round ${r.round}`}${r.taskId ? ` task ${r.taskId}` : ''}  ${r.reason}\n`);
            }
          }
        }
        close();
        if (mismatches > 0) {
          process.stderr.write(`crowdfl: ${mismatches} round(s) failed a check: a checkpoint missing or not matching its hash, or a signature that does not verify\n`);
          process.exit(1);
        }
      }),
    );
}
