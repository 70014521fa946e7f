import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { newRunId } from '../run-id.js';
import { ExperimentError, loadExperimentFile, MAX_EXPERIMENT_NAME_CHARS, parseExperiment } from './schema.js';

const root = new URL('../../..', import.meta.url);

test('every shipped experiment file is valid and named after its file', (t) => {
  const dir = new URL('experiments/', root).pathname;
  // *-matrix.json files describe many runs (bench/poisoning.ts), not one experiment.
  const files = readdirSync(dir).filter((f) => f.endsWith('.json') && !f.endsWith('-matrix.json'));
  t.true(files.includes('default.json'));
  for (const file of files) {
    const { experiment } = loadExperimentFile(join(dir, file));
    t.is(`${experiment.name}.json`, file);
  }
});

test('a wrong field is named in the error', (t) => {
  const { experiment } = loadExperimentFile(new URL('experiments/default.json', root).pathname);
  const bad = { ...experiment, training: { ...experiment.training, learning_rate: -1 } };
  const err = t.throws(() => parseExperiment(bad, 'test file'), { instanceOf: ExperimentError });
  t.regex(err!.message, /training\.learning_rate/);

  const unknown = { ...experiment, dataset: { name: 'cifar10' } };
  t.regex(t.throws(() => parseExperiment(unknown))!.message, /dataset\.name/);

  const quorum = { ...experiment, selection: { ...experiment.selection, min_updates: 11 } };
  t.regex(t.throws(() => parseExperiment(quorum))!.message, /selection\.min_updates: min_updates cannot exceed nodes_per_round/);

  const extra = { ...experiment, epochs: 3 };
  t.regex(t.throws(() => parseExperiment(extra))!.message, /epochs/);

  const cnnOnSynthetic = { ...experiment, model: 'cnn', dataset: { name: 'synthetic', alpha: 1, beta: 1 } };
  t.regex(t.throws(() => parseExperiment(cnnOnSynthetic))!.message, /model: the cnn model needs 28x28 images/);
});

test('a missing or malformed file gets a message saying what to do', (t) => {
  t.regex(t.throws(() => loadExperimentFile('/nonexistent/exp.json'))!.message, /does not exist; pass the path of a JSON file/);
  const dir = mkdtempSync(join(tmpdir(), 'crowdfl-exp-'));
  const file = join(dir, 'broken.json');
  writeFileSync(file, '{ "name": ');
  t.regex(t.throws(() => loadExperimentFile(file))!.message, /is not valid JSON/);
});

test('a robust rule whose precondition the quorum cannot meet is refused before the run starts', async (t) => {
  const { strategyFor } = await import('../strategies/index.js');
  const { tinyExperiment } = await import('../../test/support/fixtures.js');
  const krum = tinyExperiment({ nodes: 10, selection: { nodes_per_round: 10, min_updates: 8, deadline_seconds: 60 }, aggregation: { rule: 'krum', f: 3 } });
  t.throws(() => strategyFor(krum), { message: /krum cannot run on a round with selection\.min_updates = 8 updates: .*n > 2f \+ 2.*Raise min_updates/ });
  const ok = tinyExperiment({ nodes: 10, selection: { nodes_per_round: 10, min_updates: 9, deadline_seconds: 60 }, aggregation: { rule: 'krum', f: 3 } });
  t.is(strategyFor(ok).name, 'fedavg');
  const bulyan = tinyExperiment({ nodes: 20, selection: { nodes_per_round: 20, min_updates: 18, deadline_seconds: 60 }, aggregation: { rule: 'bulyan', f: 4 } });
  t.throws(() => strategyFor(bulyan), { message: /bulyan/ });
});

test('a file saved with a UTF-8 byte order mark loads like one without', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'crowdfl-exp-'));
  const text = JSON.stringify(loadExperimentFile(new URL('experiments/default.json', root).pathname).experiment);
  writeFileSync(join(dir, 'plain.json'), text);
  writeFileSync(join(dir, 'bom.json'), `\uFEFF${text}`);
  t.deepEqual(loadExperimentFile(join(dir, 'bom.json')).experiment, loadExperimentFile(join(dir, 'plain.json')).experiment);
  // Only a leading mark is the encoding's; one inside the JSON is still an error.
  writeFileSync(join(dir, 'inside.json'), ` \uFEFF${text}`);
  t.regex(t.throws(() => loadExperimentFile(join(dir, 'inside.json')))!.message, /is not valid JSON/);
});

test('an experiment name is bounded, so the run directory it names can be made', (t) => {
  const { experiment } = loadExperimentFile(new URL('experiments/default.json', root).pathname);
  const err = t.throws(() => parseExperiment({ ...experiment, name: 'n'.repeat(100_000) }), { instanceOf: ExperimentError });
  t.regex(err!.message, new RegExp(`name: at most ${MAX_EXPERIMENT_NAME_CHARS} characters`));
  t.true(err!.message.length < 500);
  // The longest name allowed still makes a run directory (a rerun's id is the longest derived from it).
  const longest = parseExperiment({ ...experiment, name: 'n'.repeat(MAX_EXPERIMENT_NAME_CHARS) });
  const runs = mkdtempSync(join(tmpdir(), 'crowdfl-runs-'));
  t.notThrows(() => mkdirSync(join(runs, newRunId(`${longest.name}-rerun`))));
});
