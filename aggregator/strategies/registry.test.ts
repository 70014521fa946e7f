import test from 'ava';
import { parseExperiment, strategySchema } from '../experiment/schema.js';
import { strategyFor } from './index.js';
import { STRATEGIES, strategyNamed } from './registry.js';
import type { StrategyDescriptor } from './strategy.js';

const training = { epochs: 1, batch_size: 10, learning_rate: 0.1 };

// The fields a strategy requires (no default); a strategy missing here is tried with its name alone.
const adaptive = { server_learning_rate: 0.1 };
const REQUIRED: Record<string, object> = { fedprox: { mu: 0.1 }, fedadagrad: adaptive, fedadam: adaptive, fedyogi: adaptive, fedbuff: { buffer_size: 2 } };
// Each one as any strategy, the way strategyFor sees it.
const registered: readonly StrategyDescriptor[] = STRATEGIES;
const minimal = (name: string) => ({ name, ...REQUIRED[name] });

test('every registered strategy parses a minimal spec, through its own schema and the experiment\'s union', (t) => {
  for (const descriptor of registered) {
    const own = descriptor.schema.safeParse(minimal(descriptor.name));
    t.true(own.success, `${descriptor.name}: ${own.error?.message}`);
    t.deepEqual(strategySchema.parse(minimal(descriptor.name)), own.data, `${descriptor.name} is in the experiment's strategy union`);
  }
  t.is(new Set(STRATEGIES.map((s) => s.name)).size, STRATEGIES.length, 'names are unique');
});

test('create() returns a strategy named as its registry entry, which asks nodes for the experiment\'s training', (t) => {
  for (const descriptor of registered) {
    const strategy = descriptor.create(descriptor.schema.parse(minimal(descriptor.name)), { training });
    t.is(strategy.name, descriptor.name);
    t.is(strategyNamed(descriptor.name), descriptor);
    const { proximal_mu, ...asked } = strategy.configureTraining(1);
    t.deepEqual(asked, training);
    t.is(proximal_mu, descriptor.name === 'fedprox' ? 0.1 : 0, `${descriptor.name}'s μ`);
  }
});

test('FedBuff, and only FedBuff, runs on the buffered engine', (t) => {
  t.deepEqual(STRATEGIES.filter((s) => s.engine === 'buffered').map((s) => s.name), ['fedbuff']);
  t.true(STRATEGIES.every((s) => s.engine === 'buffered' || s.engine === 'synchronous'));
});

test('an unregistered name is refused, naming the registered ones', (t) => {
  t.throws(() => strategyNamed('fedsgd'), { message: 'no strategy is registered as "fedsgd"; the registered are fedavg, fedprox, fedavgm, fedadagrad, fedadam, fedyogi, fedbuff' });
});

const base = {
  name: 'registry',
  seed: 1,
  dataset: { name: 'synthetic', alpha: 0, beta: 0, dimensions: 4, classes: 2 },
  model: 'logreg',
  nodes: 4,
  rounds: 1,
  selection: { nodes_per_round: 3, min_updates: 3, deadline_seconds: 60 },
  training,
};

test('a FedBuff buffer larger than the nodes working at once is refused when the experiment is parsed', (t) => {
  const message = 'strategy.buffer_size: strategy.buffer_size cannot exceed strategy.concurrency (default selection.nodes_per_round) or nodes';
  // Concurrency defaults to nodes_per_round = 3.
  t.notThrows(() => parseExperiment({ ...base, strategy: { name: 'fedbuff', buffer_size: 3 } }));
  t.true(t.throws(() => parseExperiment({ ...base, strategy: { name: 'fedbuff', buffer_size: 4 } }))!.message.includes(message));
  t.notThrows(() => parseExperiment({ ...base, strategy: { name: 'fedbuff', buffer_size: 4, concurrency: 4 } }));
  // More than the nodes there are, whatever the concurrency.
  t.true(t.throws(() => parseExperiment({ ...base, strategy: { name: 'fedbuff', buffer_size: 5, concurrency: 8 } }))!.message.includes(message));
});

test('a rule that needs more updates than an aggregation gets is refused, naming the field that sets it', (t) => {
  const krum = { rule: 'krum', f: 1 };
  // Krum with f = 1 needs more than 4 updates: a synchronous round's quorum sets how few it may get, FedBuff's buffer otherwise.
  t.throws(() => strategyFor(parseExperiment({ ...base, aggregation: krum })), {
    message: /^aggregation\.rule krum cannot run on a round with selection\.min_updates = 3 updates: .*\. Raise min_updates \(and nodes_per_round\) or lower f\.$/,
  });
  const fedbuff = parseExperiment({ ...base, nodes: 8, selection: { nodes_per_round: 8, min_updates: 8, deadline_seconds: 60 }, aggregation: krum, strategy: { name: 'fedbuff', buffer_size: 4 } });
  t.throws(() => strategyFor(fedbuff), {
    message: /^aggregation\.rule krum cannot run on a round with strategy\.buffer_size = 4 updates: .*\. Raise buffer_size or lower f\.$/,
  });
  t.is(strategyFor(parseExperiment({ ...base, nodes: 8, selection: fedbuff.selection, aggregation: krum, strategy: { name: 'fedbuff', buffer_size: 5 } })).name, 'fedbuff');
});
