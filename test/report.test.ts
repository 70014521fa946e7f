// `crowdfl report` on real runs: two tiny simulations (different seed and
// aggregation rule), then the report read back against what their databases
// and summaries say.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import type { RunSummary } from '../aggregator/aggregator.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { loadRuns, REPORT_CHARTS, reportMarkdown } from '../lab/report.js';
import { runCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

const dir = tempDir('report');
const runsDir = join(dir, 'runs');
const elsewhere = join(dir, 'elsewhere');
const RUNS = {
  mean: tinyExperiment({ name: 'tiny-mean', rounds: 2 }),
  // Krum keeps one update a round, so the report has rejections to count; with f=0 it needs 3 updates.
  krum: tinyExperiment({
    name: 'tiny-krum',
    seed: 8,
    rounds: 2,
    selection: { nodes_per_round: 3, min_updates: 3, deadline_seconds: 60 },
    aggregation: { rule: 'krum', f: 0 },
  }),
};

test.before(async () => {
  await Promise.all(
    Object.entries(RUNS).map(async ([runId, experiment]) => {
      const file = join(dir, `${runId}.json`);
      writeFileSync(file, JSON.stringify(experiment));
      const sim = await runCli(['simulate', file, '--runs-dir', runsDir, '--run-id', runId, '--no-progress']);
      if (sim.code !== 0) throw new Error(`simulate ${runId} failed: ${sim.stderr}`);
    }),
  );
  // Copied before any test reads the run, so no copy catches a database mid-read.
  cpSync(join(runsDir, 'mean'), join(elsewhere, 'mean'), { recursive: true });
  cpSync(join(runsDir, 'mean'), join(elsewhere, 'renamed'), { recursive: true });
});

function finalAccuracyInDatabase(runId: string): number {
  const { db, close } = openDatabase(join(runsDir, runId, 'crowdfl.db'));
  try {
    return new RunStore(db).committedRounds(runId).at(-1)!.accuracy!;
  } finally {
    close();
  }
}

/** Well-formed enough to be an SVG document: one svg root in the SVG namespace, every tag closed in order. */
function assertSvgDocument(svg: string): string | undefined {
  if (!/^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/.test(svg)) return 'does not start with an <svg> root in the SVG namespace';
  const open: string[] = [];
  for (const [, closing, name, selfClosing] of svg.matchAll(/<(\/?)([a-zA-Z][\w:-]*)[^>]*?(\/?)>/g)) {
    if (selfClosing) continue;
    if (!closing) open.push(name!);
    else if (open.pop() !== name) return `</${name}> closes the wrong element`;
  }
  return open.length ? `${open.join(', ')} left open` : undefined;
}

test('the report states each run from its database and draws every run on every chart', async (t) => {
  const out = join(dir, 'report');
  const report = await runCli(['report', 'mean', join(runsDir, 'krum'), '--runs-dir', runsDir, '--out', out]);
  t.is(report.code, 0, report.stderr);
  t.regex(report.stdout, new RegExp(`report on 2 run\\(s\\) written to ${out}`));
  const markdown = readFileSync(join(out, 'report.md'), 'utf8');

  for (const runId of Object.keys(RUNS)) {
    const finalAccuracy = `${(finalAccuracyInDatabase(runId) * 100).toFixed(2)}%`;
    const summaryRow = markdown.split('\n').find((line) => line.startsWith(`| \`${runId}\` |`));
    t.truthy(summaryRow?.includes(`| ${finalAccuracy} |`), `${runId}'s row should hold ${finalAccuracy}: ${summaryRow}`);
    t.true(markdown.includes(`## \`${runId}\`: ${RUNS[runId as keyof typeof RUNS].name}`));
    t.true(markdown.includes(`- final accuracy: ${finalAccuracy};`));
    t.true(markdown.includes(`[experiment.json](../runs/${runId}/experiment.json)`));
  }
  t.regex(markdown, /- aggregation: krum f=0 outlier_distance_ratio=2 duplicate_distance_ratio=0.1 reject_flagged=false\n/);
  // The mean as the schema fills it in: the safe defaults an experiment did not write are stated.
  t.regex(markdown, /- aggregation: mean outlier_distance_ratio=2 duplicate_distance_ratio=0.1 reject_flagged=false max_norm_ratio=10 max_examples_ratio=2\n/);

  // The aggregator's own count of updates Krum left out, from summary.json, against the report's reasons table.
  const krumSummary = JSON.parse(readFileSync(join(runsDir, 'krum', 'summary.json'), 'utf8')) as RunSummary;
  const notSelected = krumSummary.rounds.reduce((sum, r) => sum + r.not_selected, 0);
  t.true(notSelected > 0);
  t.true(markdown.includes(`| not-selected | krum score | ${notSelected} |`), markdown);
  t.true(markdown.includes('none: every update was kept.'));

  for (const { file } of REPORT_CHARTS) {
    t.true(markdown.includes(`](${file})`), `report.md links ${file}`);
    const svg = readFileSync(join(out, file), 'utf8');
    t.is(assertSvgDocument(svg), undefined, file);
    for (const runId of Object.keys(RUNS)) t.regex(svg, new RegExp(`>${runId}</text>`), `${file} names run ${runId}`);
  }
});

test('without --out the report goes beside the first run; runs sharing an id are told apart by directory', async (t) => {
  const report = await runCli(['report', join(runsDir, 'mean'), join(elsewhere, 'mean')]);
  t.is(report.code, 0, report.stderr);
  const reports = readdirSync(runsDir).filter((name) => name.startsWith('report-'));
  t.is(reports.length, 1);
  t.true(report.stdout.includes(join(runsDir, reports[0]!, 'report.md')));
  const markdown = readFileSync(join(runsDir, reports[0]!, 'report.md'), 'utf8');
  t.true(markdown.includes(`## \`${join(runsDir, 'mean')}\``));
  t.true(markdown.includes(`## \`${join(elsewhere, 'mean')}\``));

  // A renamed run directory still holds one run, and that run is reported.
  t.is(loadRuns([join(elsewhere, 'renamed')])[0]!.runId, 'mean');
});

test('a missing run or a directory that is not a run is a clear error, exit code 2', async (t) => {
  const notARun = join(dir, 'not-a-run');
  mkdirSync(notARun);
  const [missing, refused] = await Promise.all([runCli(['report', join(dir, 'absent')]), runCli(['report', join(runsDir, 'mean'), notARun])]);
  t.is(missing.code, 2);
  t.is(missing.stderr, `crowdfl: ${join(dir, 'absent')} does not exist: give a run directory, e.g. runs/<run-id>\n`);
  t.is(refused.code, 2);
  t.is(refused.stderr, `crowdfl: no crowdfl.db in ${notARun}: is this a run directory?\n`);
  t.false(existsSync(join(notARun, 'crowdfl.db')), 'reporting must not create a database where there was none');
});

test('an abandoned attempt is listed with its reason, and its updates are not counted against the round that committed', (t) => {
  // Written through the aggregator's own store: a round that is abandoned and then committed
  // takes real node churn and a deadline to happen in a simulation.
  const runDir = join(dir, 'churn');
  const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
  const store = new RunStore(db);
  const experiment = tinyExperiment({ name: 'churn', rounds: 1, target: { accuracy: 0.9, within_rounds: 1 } });
  store.createRun({
    id: 'churn', experimentName: 'churn', experimentJson: JSON.stringify(experiment), seed: 7, backend: 'cpu',
    aggregatorPublicKey: '', software: '{}', status: 'running', startedAt: 0,
  });
  const attempt = (n: number, status: 'committed' | 'abandoned', verdict: 'kept' | 'rejected', reason: string) => {
    const startedAt = 1000 * (n + 1);
    store.recordTask({ taskId: `task-${n}`, runId: 'churn', round: 1, attempt: n, nodeId: 'n-1', issuedAt: startedAt, deadline: startedAt + 60_000 });
    store.commitRound({
      round: {
        runId: 'churn', round: 1, attempt: n, status, reason: status === 'abandoned' ? reason : '', selected: 3,
        participants: status === 'committed' ? 1 : 0, examples: 30, accuracy: status === 'committed' ? 0.5 : null,
        loss: status === 'committed' ? 1.25 : null, modelSha256: 'm', startedAt, closedAt: startedAt + 500, seconds: 0.5, overheadSeconds: 0.1,
      },
      updates: [{
        runId: 'churn', round: 1, taskId: `task-${n}`, nodeId: 'n-1', numExamples: 30, baseModelSha256: 'm', updateSha256: 'u',
        metrics: '{}', verdict, weight: verdict === 'kept' ? 1 : 0, reason, receivedAt: startedAt + 400,
      }],
    });
  };
  attempt(0, 'abandoned', 'rejected', 'round abandoned: 1 of 3 updates when the round closed; quorum is 2');
  attempt(1, 'committed', 'kept', '');
  close();

  const [run] = loadRuns([runDir]);
  t.is(run!.rounds[0]!.rejected, 0);
  t.deepEqual(run!.reasons, []);
  const markdown = reportMarkdown([run!], join(dir, 'churn-report'));
  t.true(markdown.includes('- abandoned attempts: 1'), markdown);
  t.true(markdown.includes('| 1 | 0 | 0.5 | round abandoned: 1 of 3 updates when the round closed; quorum is 2 |'), markdown);
  t.true(markdown.includes('- time: — start to finish, 1.0 s in rounds'), markdown);
  t.true(markdown.includes('- final accuracy: 50.00%; best 50.00% at round 1; target 90.00%'), markdown);
  t.true(markdown.includes('| 1 | 50.00% | 1.2500 | 1 | 3 | 0 | 30 | 0.5 | 0.1 | 2 | all 1 kept |'), markdown);
  t.true(markdown.includes('no copy of the experiment file in the run directory'), markdown);
});
