// The `crowdfl` command as users meet it: help, clear messages for mistakes,
// and an evaluator's look at a finished run.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { freePort, runCli, spawnCli } from './support/cli.js';

test('--help lists every subcommand and each has its own help', async (t) => {
  const help = await runCli(['--help']);
  t.is(help.code, 0);
  for (const sub of ['simulate', 'aggregator', 'node', 'data', 'runs', 'rerun', 'validate']) t.regex(help.stdout, new RegExp(`\\b${sub}\\b`));
  const nodeHelp = await runCli(['node', '--help']);
  t.regex(nodeHelp.stdout, /--aggregator <host:port>/);
  t.regex(nodeHelp.stdout, /--backend <name>/);
  const aggHelp = await runCli(['aggregator', '--help']);
  t.regex(aggHelp.stdout, /--experiment <file>/);
});

test('usage mistakes exit 2, an unknown command too, even with --help after it', async (t) => {
  const unknown = await runCli(['nosuchcommand', '--help']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /^crowdfl: unknown command 'nosuchcommand'; the commands are simulate, aggregator, node,/);
  t.is(unknown.stdout, '', 'no top-level help, which would read as success');
  t.is((await runCli(['nosuchcommand'])).code, 2);
  const badOption = await runCli(['runs', 'show', '--bogus']);
  t.is(badOption.code, 2);
  t.regex(badOption.stderr, /unknown option '--bogus'/);
  const missingArgument = await runCli(['simulate']);
  t.is(missingArgument.code, 2);
  t.regex(missingArgument.stderr, /missing required argument 'experiment'/);
  for (const fine of [['--help'], ['--version'], ['runs', '--help'], ['help', 'runs']]) t.is((await runCli(fine)).code, 0, fine.join(' '));
});

test("keys show tells a node's key from an aggregator's; invite takes a run id with --run and refuses an experiment file", async (t) => {
  const dir = tempDir('cli-keys');
  const node = await runCli(['keys', 'show', '--key', join(dir, 'node.json')]);
  t.is(node.code, 0, node.stderr);
  t.regex(node.stdout, /^key of +a node$/m);
  t.regex(node.stdout, /^node id +n-[0-9a-f]{20}$/m);
  const aggregator = await runCli(['keys', 'show', '--aggregator', '--key', join(dir, 'aggregator.json')]);
  t.regex(aggregator.stdout, /^key of +an aggregator$/m);
  t.notRegex(aggregator.stdout, /node id/, 'an aggregator has no node id');
  const invite = await runCli(['invite', '--key', join(dir, 'aggregator.json'), '--run', 'r1']);
  t.is(invite.code, 0, invite.stderr);
  t.regex(invite.stdout, /^crowdfl-invite:\S+\n$/);
  const file = await runCli(['invite', '--key', join(dir, 'aggregator.json'), '--experiment', 'experiments/default.json']);
  t.is(file.code, 2);
  t.regex(file.stderr, /an invitation is for a run, not an experiment file; give the run id with --run/);
});

test('node status breaks its totals down per run, and --run shows one run', async (t) => {
  const state = tempDir('cli-status');
  await runCli(['keys', 'show', '--key', join(state, 'key.json')]);
  const base = (run: string, task: string) => ({ at: 1, aggregator: 'ab12', experiment: run, round: 1, task });
  const submitted = (run: string, task: string) => ({
    event: 'submitted', ...base(run, task), examples: 100, examples_trained: 100, compute_seconds: 2, update_digest: 'd', accepted: true, message: '',
  });
  const outcome = (run: string, task: string, verdict: string) => ({ event: 'outcome', ...base(run, task), verdict, reason: '', weight: 0.5, confirmed: true });
  const ledger = [
    submitted('run-a', 't1'), outcome('run-a', 't1', 'kept'),
    submitted('run-b', 't2'), outcome('run-b', 't2', 'kept'),
    submitted('run-b', 't3'), outcome('run-b', 't3', 'rejected'),
  ];
  writeFileSync(join(state, 'ledger.jsonl'), ledger.map((e) => JSON.stringify(e)).join('\n') + '\n');
  const all = await runCli(['node', 'status', '--state-dir', state]);
  t.is(all.code, 0, all.stderr);
  t.regex(all.stdout, /^per run:$/m);
  t.regex(all.stdout, /^ {2}run-a +1 +1 +0 +0 +0 {2}2\.0 s$/m);
  t.regex(all.stdout, /^ {2}run-b +2 +1 +0 +0 +1 {2}4\.0 s$/m);
  const one = await runCli(['node', 'status', '--state-dir', state, '--run', 'run-b', '--json']);
  const json = JSON.parse(one.stdout) as { tasks: number; kept: number; runs: Record<string, { tasks: number }> };
  t.like(json, { tasks: 2, kept: 1 });
  t.deepEqual(Object.keys(json.runs), ['run-b']);
  const none = await runCli(['node', 'status', '--state-dir', state, '--run', 'run-z']);
  t.is(none.code, 2);
  t.regex(none.stderr, /--run run-z: this node's ledger has no task of that run; it has run-a, run-b/);
});

test('mistakes get a message that says what to do', async (t) => {
  const missing = await runCli(['simulate', '/nonexistent/experiment.json']);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /does not exist; pass the path of a JSON file/);

  const dir = tempDir('cli');
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ ...tinyExperiment(), rounds: 0 }));
  const invalid = await runCli(['validate', bad]);
  t.is(invalid.code, 2);
  t.regex(invalid.stderr, /rounds: /);

  const badBackend = await runCli(['simulate', bad, '--backend', 'quantum']);
  t.not(badBackend.code, 0);
  t.regex(badBackend.stderr, /choose one of auto, tensorflow, tensorflow-gpu, wasm, cpu/);

  const badAddress = await runCli(['node', '--aggregator', 'nowhere', '--data', dir]);
  t.not(badAddress.code, 0);
  t.regex(badAddress.stderr, /expected HOST:PORT/);

  const noData = await runCli(['node', '--aggregator', '127.0.0.1:1', '--data', join(dir, 'absent')]);
  t.is(noData.code, 2);
  t.regex(noData.stderr, /does not exist; point it at a directory in the crowdfl-data format/);

  mkdirSync(join(dir, 'empty'));
  const notData = await runCli(['data', 'inspect', join(dir, 'empty')]);
  t.is(notData.code, 2);
  t.regex(notData.stderr, /crowdfl-data\.json/);
});

test('a CSV of raw 0..255 pixels is warned about with its range and the fix; --scale 1/255 imports it in range; an existing --out needs --force', async (t) => {
  const dir = tempDir('cli-csv');
  const csv = join(dir, 'pixels.csv');
  // Two 4-pixel examples of raw bytes, labels first.
  writeFileSync(csv, 'label,p0,p1,p2,p3\n0,0,128,255,17\n1,255,0,64,200\n');
  const raw = await runCli(['data', 'import-csv', csv, '--out', join(dir, 'raw')]);
  t.is(raw.code, 0, raw.stderr);
  t.regex(raw.stderr, /^crowdfl: warning: 4 of 4 features have values outside \[0, 1\], the range the models expect \(values span 0 to 255\); a node training on them may diverge\. Rescale with --scale \(e\.g\. --scale 1\/255 if these are 0\.\.255 pixels\)/);
  t.regex(raw.stdout, /2 examples, features \[4\], 2 classes; .*feature values 0 to 255/);

  const again = await runCli(['data', 'import-csv', csv, '--out', join(dir, 'raw'), '--scale', '1/255']);
  t.is(again.code, 2);
  t.regex(again.stderr, /raw already exists; choose another --out, or pass --force to overwrite it/);

  const scaled = await runCli(['data', 'import-csv', csv, '--out', join(dir, 'raw'), '--scale', '1/255', '--force']);
  t.is(scaled.code, 0, scaled.stderr);
  t.notRegex(scaled.stderr, /warning/);
  t.regex(scaled.stdout, /feature values 0 to 1\b/);

  // inspect reports the range too, and warns against the range given.
  const inspect = await runCli(['data', 'inspect', join(dir, 'raw'), '--expect-range', '0,0.5']);
  t.is(inspect.code, 0, inspect.stderr);
  t.regex(inspect.stdout, /feature values 0 to 1\b/);
  t.regex(inspect.stderr, /warning: 4 of 4 features have values outside \[0, 0\.5\], the range the models expect \(values span 0 to 1\); a node training on them may diverge\. Rescale with --scale, or state/);
});

test('an evaluator can list a run, see every verdict and catch a tampered checkpoint', async (t) => {
  const dir = tempDir('cli-run');
  const file = join(dir, 'tiny.json');
  writeFileSync(file, JSON.stringify(tinyExperiment({ rounds: 2 })));
  const runsDir = join(dir, 'runs');
  const sim = await runCli(['simulate', file, '--runs-dir', runsDir, '--run-id', 'r1', '--no-progress']);
  t.is(sim.code, 0, sim.stderr);
  t.regex(sim.stdout, /rounds committed : 2\/2/);
  t.regex(readFileSync(join(runsDir, 'r1', 'curves.svg'), 'utf8'), /^<svg/);

  // `crowdfl runs show … | head`: the reader is gone before the first write; a quiet exit, no stack trace.
  const piped = spawnCli(['runs', 'show', 'r1', '--runs-dir', runsDir, '--updates']);
  piped.stdout!.destroy();
  const pipedCode = await new Promise<number | null>((resolve) => piped.once('exit', resolve));
  t.is(pipedCode, 0, piped.output());
  t.notRegex(piped.output(), /EPIPE|at .*\.js:\d+/);

  const list = await runCli(['runs', 'list', '--runs-dir', runsDir]);
  t.regex(list.stdout, /r1 {2}2 rounds {2}final \d+\.\d+%/);

  const show = await runCli(['runs', 'show', 'r1', '--runs-dir', runsDir, '--updates']);
  t.is(show.code, 0, show.stderr);
  t.is(show.stdout.match(/ ok +ok\n/g)?.length, 2, show.stdout);
  t.is(show.stdout.match(/n-[0-9a-f]{20} +\d+ examples +kept/g)?.length, 6);

  const nodes = await runCli(['nodes', 'list', 'r1', '--runs-dir', runsDir]);
  const ids = nodes.stdout.match(/n-[0-9a-f]{20}/g) ?? [];
  t.is(ids.length, 3);
  t.is(nodes.stdout.match(/ admitted +2 +0 +1\.000 /g)?.length, 3, nodes.stdout);
  t.regex(nodes.stdout, /^run r1 finished at \d{4}-\d\d-\d\dT[\d:.]+Z: no node takes part any more$/m, 'after the run, no node reads as taking part');
  const ban = await runCli(['nodes', 'ban', 'r1', ids[0]!, '--reason', 'sent poisoned updates', '--runs-dir', runsDir]);
  t.is(ban.code, 0, ban.stderr);
  t.regex((await runCli(['nodes', 'list', 'r1', '--runs-dir', runsDir])).stdout, /banned .*\(sent poisoned updates\)/);
  const badBan = await runCli(['nodes', 'ban', 'r1', 'nonsense', '--reason', 'x', '--runs-dir', runsDir]);
  t.is(badBan.code, 2);
  t.regex(badBan.stderr, /neither a node id/);

  const weights = join(runsDir, 'r1', 'checkpoints', 'round-0002', 'weights.bin');
  const bytes = readFileSync(weights);
  bytes[10] = bytes[10]! ^ 0xff;
  writeFileSync(weights, bytes);
  const tampered = await runCli(['runs', 'show', 'r1', '--runs-dir', runsDir]);
  t.is(tampered.code, 1);
  t.regex(tampered.stdout, /HASH MISMATCH/);
});

test('crowdfl aggregator serves nodes started by hand with crowdfl node', async (t) => {
  const dir = tempDir('cli-agg');
  const file = join(dir, 'two.json');
  writeFileSync(
    file,
    JSON.stringify(tinyExperiment({ nodes: 2, rounds: 2, selection: { nodes_per_round: 2, min_updates: 2, deadline_seconds: 60 } })),
  );
  const prepared = await runCli(['data', 'prepare', '--experiment', file, '--out', join(dir, 'parts')]);
  t.is(prepared.code, 0, prepared.stderr);
  t.regex(prepared.stdout, /node-001: \d+ examples, features \[60\], 10 classes/);

  const port = await freePort();
  const keyFile = join(dir, 'aggregator-key.json');
  const aggregator = spawnCli([
    'aggregator', '--experiment', file, '--port', String(port), '--runs-dir', join(dir, 'runs'), '--run-id', 'a1', '--key', keyFile,
  ]);
  const nodes = [0, 1].map((i) =>
    spawnCli([
      'node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, 'parts', `node-00${i}`),
      '--state-dir', join(dir, `state-${i}`), '--exit-when-finished',
    ]),
  );
  const exitCode = (c: ReturnType<typeof spawnCli>) =>
    c.exitCode !== null ? Promise.resolve(c.exitCode) : new Promise<number | null>((r) => c.once('exit', (code) => r(code)));
  t.is(await exitCode(aggregator), 0, aggregator.output());
  t.regex(aggregator.output(), /rounds committed : 2\/2/);
  t.regex(aggregator.output(), /listening on 127\.0\.0\.1:\d+/);
  for (const n of nodes) t.is(await exitCode(n), 0, n.output());
  t.regex(nodes[1]!.output(), /round 2: trained \d+ examples/);
  // With no key given, each node pinned the aggregator's key on first use and kept it.
  const aggregatorKey = JSON.parse(readFileSync(keyFile, 'utf8')).public_key as string;
  t.deepEqual(JSON.parse(readFileSync(join(dir, 'state-0', 'pinned-aggregators.json'), 'utf8')), { [`127.0.0.1:${port}`]: aggregatorKey });
});
