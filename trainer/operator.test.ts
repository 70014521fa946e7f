// The node operator's rules as pure functions: each cap refuses what it
// should, hours and idleness decide availability, the config names the field
// that is wrong, the ledger credits only what a valid signed record lists,
// and models that are not plain declarative layers are refused.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { overLimits } from '../aggregator/nodes/node-limits.js';
import { reasonKind } from '../core/contribution-totals.js';
import { generateIdentity } from '../core/signing/keys.js';
import { activationsPerExample, ModelSpecError, numParams } from '../core/model/spec.js';
import { modelSpec, parseModelJson } from '../core/model/zoo.js';
import { digestHex, sign, signatureToString } from '../core/signing/ed25519.js';
import { roundDigest } from '../core/signing/layouts.js';
import { Availability, inSchedule, otherCpuPercent, type CpuTimes } from './availability.js';
import { contributionTotals, Ledger, outcomeEntry, type LedgerEntry } from './ledger.js';
import { mergeConfig, NodeConfigError, parseNodeConfig, readConfigFile } from './node-config.js';
import { limitsForHello, overCap, taskMemoryBytes, type TaskSize } from './operator-caps.js';
import { tempDir } from '../test/support/fixtures.js';

const mnist = { featureShape: [28, 28], numClasses: 10 };
const cnn = modelSpec('cnn', mnist);
const cnnTask: TaskSize = { parameters: numParams(cnn), epochs: 5, batchSize: 32, localExamples: 600, activationsPerExample: activationsPerExample(cnn) };
const MiB = 1024 * 1024;

test('each cap declines a task over it, names the cap and the figures, and lets a task within every cap through', (t) => {
  const now = { rssBytes: 200 * MiB, examplesPerSecond: 100 };
  t.is(cnnTask.parameters, 1_663_370);
  t.regex(overCap({ max_parameters: 1_000_000 }, cnnTask, now) ?? '', /parameter cap: the model has 1,663,370 parameters, the cap is 1,000,000/);
  t.regex(overCap({ max_model_mb: 5 }, cnnTask, now) ?? '', /model-size cap: the weights take 6\.3 MiB, the cap is 5 MiB/);
  t.regex(overCap({ max_examples_per_task: 2000 }, cnnTask, now) ?? '', /work cap: 5 epochs × 600 examples = 3,000, the cap is 2,000/);
  // 200 MiB in use plus ~38 MiB of weights and ~19 MiB of activations for the CNN at batch 32.
  t.true(taskMemoryBytes(cnnTask) > 40 * MiB && taskMemoryBytes(cnnTask) < 80 * MiB);
  t.regex(overCap({ memory_mb: 220 }, cnnTask, now) ?? '', /memory cap: the node uses 200\.0 MiB and the task needs about .* more, the cap is 220 MiB/);
  t.regex(overCap({ max_task_seconds: 20 }, cnnTask, now) ?? '', /time cap: 3,000 examples at this node's 100 examples\/s take about 30 s, the cap is 20 s/);
  // Without a measured speed the time cap cannot be judged in advance (training stops at it instead).
  t.is(overCap({ max_task_seconds: 20 }, cnnTask, { rssBytes: now.rssBytes }), undefined);
  const roomy = { cores: 2, memory_mb: 1024, max_parameters: 2_000_000, max_model_mb: 7, max_examples_per_task: 3000, max_task_seconds: 31 };
  t.is(overCap(roomy, cnnTask, now), undefined);
  t.deepEqual(limitsForHello(roomy), {
    max_parameters: 2_000_000,
    max_model_bytes: 7 * MiB,
    max_examples_per_task: 3000,
    max_task_seconds: 31,
    max_memory_bytes: 1024 * MiB,
  });
});

test('the aggregator checks the caps a node declares against what its tasks ask', (t) => {
  const demand = { parameters: 1_663_370, epochs: 5 };
  const none = { max_parameters: 0, max_model_bytes: 0, max_examples_per_task: 0, max_task_seconds: 0, max_memory_bytes: 0 };
  t.is(overLimits(undefined, demand, 600), undefined);
  t.is(overLimits(none, demand, 600), undefined);
  t.regex(overLimits({ ...none, max_parameters: 1000 }, demand, 600) ?? '', /1,663,370 parameters; this node's cap is 1,000/);
  t.regex(overLimits({ ...none, max_model_bytes: 6_000_000 }, demand, 600) ?? '', /6,653,480 bytes; this node's cap is 6,000,000/);
  t.regex(overLimits({ ...none, max_examples_per_task: 2999 }, demand, 600) ?? '', /5 epochs × 600 examples = 3,000; this node's cap is 2,999/);
  t.is(overLimits({ ...none, max_examples_per_task: 3000 }, demand, 600), undefined);
});

test('hours windows, days and midnight crossings decide when a node works', (t) => {
  const at = (day: number, h: number, m = 0) => new Date(2026, 10, 22 + day, h, m); // 22 Nov 2026 is a Sunday
  const night = { hours: ['22:00-07:00'] };
  t.true(inSchedule(night, at(1, 23, 30)));
  t.true(inSchedule(night, at(2, 6, 59)));
  t.false(inSchedule(night, at(2, 7, 0)));
  t.false(inSchedule(night, at(2, 12, 0)));
  const office = { hours: ['09:00-12:00', '14:00-17:00'], days: ['mon', 'tue', 'wed', 'thu', 'fri'] as ('mon' | 'tue' | 'wed' | 'thu' | 'fri')[] };
  t.true(inSchedule(office, at(1, 9, 0)));
  t.false(inSchedule(office, at(1, 13, 0)));
  t.false(inSchedule(office, at(0, 10, 0)), 'Sunday');
  // A Friday-night window runs into Saturday morning; a Sunday-night one does not start on a weekday list without Sunday.
  const weeknights = { hours: ['22:00-06:00'], days: ['fri'] as 'fri'[] };
  t.true(inSchedule(weeknights, at(6, 3, 0)), 'Saturday 03:00 belongs to Friday night');
  t.false(inSchedule(weeknights, at(5, 3, 0)), 'Friday 03:00 belongs to Thursday night');
  t.true(inSchedule({}, at(3, 4, 0)));
});

test("idleness is other processes' CPU: the node's own training does not count against it", (t) => {
  const a: CpuTimes = { busyMs: 1000, totalMs: 10_000, ownMs: 0 };
  // 2 cores for 1 s = 2000 ms; 1500 ms busy, 1000 of them this process: others used 25%.
  t.is(otherCpuPercent(a, { busyMs: 2500, totalMs: 12_000, ownMs: 1000 }), 25);
  t.is(otherCpuPercent(a, { busyMs: 2000, totalMs: 12_000, ownMs: 1000 }), 0);
  let clock = new Date(2026, 10, 23, 12, 0);
  let times = a;
  const dir = tempDir('availability');
  const pauseFile = join(dir, 'paused');
  const availability = new Availability({
    schedule: { hours: ['08:00-18:00'], idle: { max_other_cpu_percent: 30, sample_seconds: 60 } },
    pauseFile,
    now: () => clock,
    cpuTimes: () => times,
  });
  try {
    t.is(availability.blocked(), undefined);
    times = { busyMs: 1900, totalMs: 12_000, ownMs: 100 }; // others 40%
    availability.sampleCpu();
    t.regex(availability.blocked()?.reason ?? '', /the machine is busy: other processes used 40% of the CPU, the node works below 30%/);
    t.is(availability.blocked()?.kind, 'OUTSIDE_SCHEDULE');
    times = { busyMs: 2100, totalMs: 14_000, ownMs: 100 }; // others 10%
    availability.sampleCpu();
    t.is(availability.blocked(), undefined);
    clock = new Date(2026, 10, 23, 19, 0);
    t.regex(availability.blocked()?.reason ?? '', /outside the operator's hours \(08:00-18:00\)/);
    clock = new Date(2026, 10, 23, 12, 0);
    writeFileSync(pauseFile, 'paused');
    availability.refresh();
    t.is(availability.blocked()?.kind, 'PAUSED');
  } finally {
    availability.close();
  }
});

test('a node config file and flags are validated as one, and errors name the field', (t) => {
  const dir = tempDir('node-config');
  mkdirSync(join(dir, 'conf'));
  const file = join(dir, 'conf', 'node.json');
  writeFileSync(file, JSON.stringify({ aggregator: 'agg.example:7070', data: 'data', caps: { memory_mb: 2048, cores: 1 }, schedule: { hours: ['22:00-07:00'] } }));
  const fromFile = readConfigFile(file);
  const config = parseNodeConfig(mergeConfig(fromFile, { caps: { memory_mb: 1024, cores: undefined }, backend: 'cpu' }), 'test');
  t.is(config.data, join(dir, 'conf', 'data'), 'paths in a file are relative to the file');
  t.deepEqual(config.caps, { memory_mb: 1024, cores: 1 }, 'a flag wins over the file; an unset flag leaves it');
  t.is(config.backend, 'cpu');
  t.is(config.min_epoch_fraction, 0.25);
  const bad = (value: Record<string, unknown>) => t.throws(() => parseNodeConfig(mergeConfig(fromFile, value), 'node.json'), { instanceOf: NodeConfigError });
  t.regex(bad({ caps: { memory_mb: -1 } })?.message ?? '', /node\.json is not a valid node configuration:\n {2}caps\.memory_mb: /);
  t.regex(bad({ caps: { gpus: 1 } })?.message ?? '', /caps: .*gpus/);
  t.regex(bad({ schedule: { hours: ['7pm-9pm'] } })?.message ?? '', /schedule\.hours\.0: expected "HH:MM-HH:MM"/);
  t.regex(bad({ schedule: { days: ['someday'] } })?.message ?? '', /schedule\.days\.0/);
  t.regex(bad({ aggregator: 'nowhere' })?.message ?? '', /aggregator: expected HOST:PORT/);
  t.regex(bad({ tls: { ca: 'ca.pem', cert: 'c.pem' } })?.message ?? '', /tls: cert and key go together/);
  t.regex(t.throws(() => parseNodeConfig({ data: 'x' }, 'flags'))?.message ?? '', /aggregator: missing: the aggregator to join/);
  writeFileSync(file, '{"aggregator": ');
  t.regex(t.throws(() => readConfigFile(file))?.message ?? '', /is not valid JSON/);
  t.regex(t.throws(() => readConfigFile(join(dir, 'absent.json')))?.message ?? '', /does not exist/);
});

test('nodes refuse models that are not plain declarative layers: code, unknown fields, foreign initializers, absurd shapes', (t) => {
  const topology = () => JSON.parse(JSON.stringify(modelSpec('2nn', mnist).topology)) as { config: { layers: { config: Record<string, unknown> }[] } } & Record<string, unknown>;
  const refuse = (value: unknown, message: RegExp) => t.throws(() => parseModelJson(JSON.stringify(value)), { instanceOf: ModelSpecError, message });
  let m = topology();
  m.config.layers[1]!.config.function = 'return process.exit()';
  refuse(m, /layer hidden1 \(Dense\) has field "function" that nodes do not accept/);
  m = topology();
  m.config.layers[1]!.config.kernel_initializer = { class_name: 'MyInit', config: {} };
  refuse(m, /kernel_initializer must be one of GlorotUniform/);
  m = topology();
  m.config.layers[1]!.config.kernel_initializer = { class_name: 'GlorotUniform', config: { seed: { code: 'x' } } };
  refuse(m, /config holds numbers/);
  m = topology();
  m.modelTopologyCode = 'x';
  refuse(m, /the topology has field "modelTopologyCode"/);
  m = topology();
  m.config.layers[1]!.config.units = 200_000;
  refuse(m, /passes 100,000,000 parameters/);
  m = topology();
  m.config.layers[1]!.config.units = 2_000_000;
  refuse(m, /a dimension above 1,048,576 is absurd/);
  t.notThrows(() => parseModelJson(JSON.stringify(topology())));
});

test('the ledger credits an update only when a signed round record lists it and the signature verifies under the pinned key', (t) => {
  const aggregator = generateIdentity();
  const submitted = {
    event: 'submitted' as const,
    at: 1,
    aggregator: 'ab12',
    experiment: 'exp',
    round: 3,
    task: 't-3',
    examples: 60,
    examples_trained: 120,
    compute_seconds: 1.5,
    update_digest: 'a'.repeat(64),
    accepted: true,
    message: 'accepted into round 3',
  };
  const accepted = [
    { task_id: 't-3', update_digest: 'a'.repeat(64), signature: signatureToString(new Uint8Array(64).fill(1)) },
    { task_id: 't-4', update_digest: 'b'.repeat(64), signature: signatureToString(new Uint8Array(64).fill(2)) },
  ];
  const fields = { experiment_id: 'exp', round: 3, previous_model_sha256: 'c'.repeat(64), model_sha256: 'd'.repeat(64) };
  const digest = roundDigest({ ...fields, accepted: accepted.map((a) => ({ task_id: a.task_id, update_digest_hex: a.update_digest, signature_b64: a.signature })) });
  const record = { ...fields, accepted, aggregator_signature: signatureToString(sign(digest, aggregator)) };
  const reply = { verdict: 'kept', reason: '', weight: 0.5, update_digest: 'a'.repeat(64), round: 3, record };
  const good = outcomeEntry(submitted, reply, aggregator.publicKey);
  t.true(good?.confirmed);
  t.is(outcomeEntry(submitted, { ...reply, verdict: 'pending', record: null }, aggregator.publicKey), undefined);
  const forged = outcomeEntry(submitted, { ...reply, record: { ...record, model_sha256: 'e'.repeat(64) } }, aggregator.publicKey);
  t.false(forged?.confirmed);
  t.regex(forged?.problem ?? '', /does not verify under the pinned aggregator key/);
  t.regex(outcomeEntry(submitted, reply, generateIdentity().publicKey)?.problem ?? '', /does not verify/);
  const omitted = outcomeEntry(submitted, { ...reply, record: { ...record, accepted: accepted.slice(1) } }, aggregator.publicKey);
  t.regex(omitted?.problem ?? '', /does not list this update/);
  t.is(digestHex(digest).length, 64);

  const dir = tempDir('ledger');
  const ledger = new Ledger(join(dir, 'ledger.jsonl'));
  ledger.append(submitted);
  ledger.append({ ...submitted, task: 't-5', round: 4, accepted: false, message: 'bad signature' });
  ledger.append({ event: 'declined', at: 2, aggregator: 'ab12', experiment: 'exp', round: 5, task: 't-6', kind: 'PAUSED', reason: 'paused by the operator' });
  t.is(ledger.awaitingOutcome('exp').length, 1);
  ledger.append(good as LedgerEntry);
  t.is(ledger.awaitingOutcome('exp').length, 0);
  // A node killed mid-write leaves a torn last line: the lines before it still count.
  writeFileSync(join(dir, 'torn.jsonl'), `${JSON.stringify(submitted)}\n${JSON.stringify(good)}\n{"event":"subm`);
  const torn = new Ledger(join(dir, 'torn.jsonl'));
  const { entries, problems } = torn.read();
  t.is(entries.length, 2);
  t.deepEqual(problems, ['line 3: not JSON']);
  t.is(torn.awaitingOutcome('exp').length, 0);
  const totals = contributionTotals([...entries, { ...submitted, task: 't-5', round: 4, accepted: false, message: 'bad signature' }]);
  t.is(totals.updatesSubmitted, 2);
  t.is(totals.kept, 1);
  t.is(totals.credited, 1);
  t.is(totals.refusedAtUpload.get('bad signature'), 1);
  t.is(totals.roundsJoined, 2);
  t.is(totals.computeSeconds, 3);
  // Reasons group by kind: numbers masked, ids kept, a gRPC status prefix dropped.
  t.is(reasonKind('krum score 50.31, not among the 4 selected (rank 7 of 8)'), 'krum score …, not among the … selected (rank … of …)');
  t.is(reasonKind('3 INVALID_ARGUMENT: task t-7-3 of n-3f2a has a NaN at 1,234'), 'task t-7-3 of n-3f2a has a NaN at …');
});

test('training on more threads is counted against the memory cap: a worker, its replica and the exchange buffers each', (t) => {
  const one = taskMemoryBytes(cnnTask);
  const two = taskMemoryBytes({ ...cnnTask, threads: 2 });
  // A second replica's six weight copies (38 MiB), four exchange buffers (25 MiB) and the worker's 64 MiB.
  t.is(two - one, 4 * (6 + 4) * cnnTask.parameters + 64 * MiB);
  const now = { rssBytes: 200 * MiB };
  t.is(overCap({ memory_mb: 300 }, cnnTask, now), undefined);
  t.regex(overCap({ memory_mb: 300 }, { ...cnnTask, threads: 2 }, now) ?? '', /memory cap/);
});
