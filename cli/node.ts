import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { backendPreferenceSchema } from '../core/backend.js';
import { readLocalData } from '../datasets/local-dir.js';
import type { Dataset } from '../core/dataset.js';
import { runNode, type UpdateAdversary } from '../trainer/node.js';
import { lineLog } from '../core/log.js';
import type { ContributionTotals } from '../core/contribution-totals.js';
import { Rng } from '../core/rng.js';
import { action, UsageError } from './errors.js';
import { readPinnedKey } from './keys.js';
import { fingerprint, loadOrCreateIdentity, nodeIdFromPublicKey, publicKeyToString } from '../core/signing/keys.js';
import { parseAddress, parseChoice, parseFraction, parsePort } from './options.js';
import { startServing, type Serving } from '../serving/serve.js';
import { Availability } from '../trainer/availability.js';
import { contributionTotals, Ledger, LEDGER_FILE } from '../trainer/ledger.js';
import { mergeConfig, parseNodeConfig, readConfigFile, type NodeConfig } from '../trainer/node-config.js';
import { formatStatus } from './format-contribution.js';

/** The flags commander parses; they are mapped onto the node config's shape (trainer/node-config.ts). */
interface Flags {
  config?: string;
  aggregator?: string;
  data?: string;
  backend?: string;
  stateDir?: string;
  aggregatorKey?: string;
  invitation?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  exitWhenFinished?: boolean;
  quiet?: boolean;
  logFormat?: string;
  minEpochFraction?: number;
  serve?: number;
  maxCores?: number;
  maxMemoryMb?: number;
  maxParameters?: number;
  maxModelMb?: number;
  maxExamplesPerTask?: number;
  maxTaskSeconds?: number;
  hours?: string;
  days?: string;
  idleCpuPercent?: number;
  vanishProbability?: number;
  slowdown?: number;
  faultSeed?: number;
}

const list = (v: string | undefined) => (v === undefined ? undefined : v.split(',').map((x) => x.trim()).filter(Boolean));

/** The flags as a partial node config: what they set wins over the file. */
function flagsAsConfig(f: Flags): Record<string, unknown> {
  return {
    aggregator: f.aggregator,
    data: f.data,
    backend: f.backend,
    state_dir: f.stateDir,
    aggregator_key: f.aggregatorKey,
    invitation: f.invitation,
    tls: f.tlsCa || f.tlsCert || f.tlsKey ? { ca: f.tlsCa, cert: f.tlsCert, key: f.tlsKey } : undefined,
    min_epoch_fraction: f.minEpochFraction,
    serve: f.serve,
    exit_when_finished: f.exitWhenFinished,
    quiet: f.quiet,
    log_format: f.logFormat,
    caps: {
      cores: f.maxCores,
      memory_mb: f.maxMemoryMb,
      max_parameters: f.maxParameters,
      max_model_mb: f.maxModelMb,
      max_examples_per_task: f.maxExamplesPerTask,
      max_task_seconds: f.maxTaskSeconds,
    },
    schedule: {
      hours: list(f.hours),
      days: list(f.days),
      idle: f.idleCpuPercent !== undefined ? { max_other_cpu_percent: f.idleCpuPercent } : undefined,
    },
  };
}

/** The configuration a `crowdfl node` invocation runs with: --config's file under the flags, validated as one. */
export function nodeConfigOf(flags: Flags): NodeConfig {
  const file = flags.config ? readConfigFile(flags.config) : {};
  const source = flags.config ? `the node configuration (${flags.config} and the flags)` : 'the node configuration from the flags';
  return parseNodeConfig(mergeConfig(file, flagsAsConfig(flags)), source);
}

const DEFAULT_STATE_DIR = join(homedir(), '.crowdfl', 'node');
const PAUSE_FILE = 'paused';
const PID_FILE = 'node.pid';

/** The pid of the node running on `stateDir`, if one is. */
function runningPid(stateDir: string): number | undefined {
  const file = join(stateDir, PID_FILE);
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

/** Aggregator keys pinned on first use, per address, kept across restarts. */
function pinFile(stateDir: string): string {
  return join(stateDir, 'pinned-aggregators.json');
}

function readPins(stateDir: string): Record<string, string> {
  const file = pinFile(stateDir);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>) : {};
}

const positiveNumber = (v: string) => Number(v);

/**
 * What a node run may be given besides its configuration. The operator's binary passes none; the
 * Byzantine nodes of attack simulations (attacks/byzantine-node-main.ts) run this same command with
 * an adversary, so no attack code is reachable from `crowdfl node`.
 */
export interface NodeRunHooks {
  /** Replaces the local data before any training (label flipping). */
  data?: (data: Dataset) => Dataset;
  /** The adversary that replaces each honest update just before it is signed. */
  adversary?: (nodeId: string, log: (msg: string) => void) => UpdateAdversary;
  /** The example count to declare and claim instead of the real one (example inflation). */
  claimedExamples?: number;
}

export function register(program: Command, hooks: NodeRunHooks = {}): void {
  const node = program
    .command('node')
    .description('contribute local training (crowdfl node --aggregator HOST:PORT --data DIR); status, pause and resume a node');
  const run = node
    .command('run', { isDefault: true })
    .description('join an aggregator and train on the data in --data (the default: `crowdfl node --aggregator ...`)')
    .option('--config <file>', 'a node configuration file (JSON; README, "Node operators"); flags override it')
    .option('--aggregator <host:port>', 'the aggregator to join', parseAddress)
    .option('--data <dir>', 'local training data (format: datasets/README.md; make one with `crowdfl data import-csv`)')
    .option('--backend <name>', 'auto|tensorflow|tensorflow-gpu|wasm|cpu (default auto)', parseChoice(backendPreferenceSchema))
    .option('--state-dir <dir>', `where the node keeps its key (key.json, mode 0600), pinned aggregator keys and its ledger (default ${DEFAULT_STATE_DIR})`)
    .option('--aggregator-key <key>', "the aggregator's public key to trust: base64, or a file holding it (default: pin the first key seen)")
    .option('--invitation <token>', 'an invitation from the aggregator (crowdfl-invite:...); also pins its key')
    .option('--tls-ca <file>', "the deployment CA (PEM) to check a TLS aggregator's certificate against")
    .option('--tls-cert <file>', "this node's client certificate, for an aggregator that requires mutual TLS")
    .option('--tls-key <file>', 'the private key of --tls-cert')
    .option('--exit-when-finished', 'exit when the aggregator finishes its experiment, instead of waiting for the next')
    .option(
      '--min-epoch-fraction <share>',
      'decline a task (freeing its slot at once) when its deadline leaves time for less than this share of one local epoch ' +
        '(default 0.25); with more time a slow node sends a partial update',
      parseFraction,
    )
    .option('--serve <port>', 'also serve the newest global model this node received, on the TF Serving REST API at 127.0.0.1:PORT (model name "global")', parsePort)
    .option('--max-cores <n>', 'cap: threads the node keeps busy (training replicas on wasm/cpu, thread pools on tfjs-node); default: all cores', positiveNumber)
    .option('--max-memory-mb <mb>', 'cap: resident memory of the node; tasks that would pass it are declined', positiveNumber)
    .option('--max-parameters <n>', 'cap: model parameters', positiveNumber)
    .option('--max-model-mb <mb>', 'cap: model weight size in MiB', positiveNumber)
    .option('--max-examples-per-task <n>', 'cap: epochs × local examples a task may ask for', positiveNumber)
    .option('--max-task-seconds <s>', 'cap: wall time of local training per task', positiveNumber)
    .option('--hours <windows>', 'train only in these local-time windows, e.g. "22:00-07:00" or "09:00-12:00,14:00-17:00"')
    .option('--days <days>', 'the days --hours applies to, e.g. "mon,tue,wed,thu,fri" (default every day)')
    .option('--idle-cpu-percent <p>', 'take work only while other processes use at most this % of the CPU', positiveNumber)
    .option('--quiet', 'log only errors')
    .option('--log-format <format>', 'text (default): "TIME [NODE] message" lines; json: one object per line, for log shippers')
    .addOption(new Option('--vanish-probability <p>', 'fault injection: vanish mid-round with this probability per task').argParser(parseFraction).hideHelp())
    .addOption(new Option('--slowdown <x>', 'fault injection: take this many times as long per task').argParser(Number).hideHelp())
    .addOption(new Option('--fault-seed <n>', 'seed of the fault injection').argParser(Number).default(0).hideHelp())
    .addHelpText(
      'after',
      '\nThe node never runs code it is sent: a task carries a declarative tfjs layers model (JSON), built\n' +
        'only from an allowlist of layer classes, and is trained only if the pinned aggregator signed it.\n' +
        'Its identity is an Ed25519 key created on first run in --state-dir; `crowdfl keys show --key DIR/key.json`\n' +
        'prints it. It reconnects by itself if the aggregator goes away. `crowdfl node pause` (or SIGUSR1)\n' +
        'pauses it, `crowdfl node resume` (or SIGUSR2) resumes it, `crowdfl node status` shows what it contributed.',
    )
    .action(action((flags: Flags) => runNodeCommand(flags, hooks)));
  // `crowdfl node --help` is what operators type: show the options of the default command too.
  node.addHelpText('after', () => `\n${run.helpInformation()}`);

  node
    .command('status')
    .description("what this node contributed: rounds, updates credited by the aggregator's signed records, rejections and why, compute time")
    .option('--state-dir <dir>', 'the node\'s state directory', DEFAULT_STATE_DIR)
    .option('--json', 'print the totals as JSON')
    .option('--run <run-id>', 'only this run (the ledger keeps every run the node took part in)')
    .action(action((opts: { stateDir: string; json?: boolean; run?: string }) => printStatus(opts.stateDir, opts.json ?? false, opts.run)));

  for (const [name, pause] of [['pause', true], ['resume', false]] as const) {
    node
      .command(name)
      .description(
        pause
          ? 'pause the node: it declines the task it is on, takes no work, keeps its identity (also across restarts)'
          : 'resume a paused node',
      )
      .option('--state-dir <dir>', 'the node\'s state directory', DEFAULT_STATE_DIR)
      .action(
        action((opts: { stateDir: string }) => {
          if (!existsSync(join(opts.stateDir, 'key.json'))) throw new UsageError(`no node in ${opts.stateDir} (no key.json); pass the node's --state-dir`);
          setPaused(opts.stateDir, pause);
          const pid = runningPid(opts.stateDir);
          if (pid !== undefined) process.kill(pid, pause ? 'SIGUSR1' : 'SIGUSR2');
          process.stdout.write(
            `${pause ? 'paused' : 'resumed'} the node in ${opts.stateDir}${pid !== undefined ? ` (running as pid ${pid})` : ' (not running now; this holds when it starts)'}\n`,
          );
        }),
      );
  }
}

function setPaused(stateDir: string, paused: boolean): void {
  const file = join(stateDir, PAUSE_FILE);
  if (paused) writeFileSync(file, `paused at ${new Date().toISOString()}\n`);
  else rmSync(file, { force: true });
}

async function runNodeCommand(flags: Flags, hooks: NodeRunHooks): Promise<void> {
  const config = nodeConfigOf(flags);
  if (!existsSync(config.data)) {
    throw new UsageError(`--data ${config.data} does not exist; point it at a directory in the crowdfl-data format (see datasets/README.md)`);
  }
  if (config.caps.cores !== undefined) {
    // tfjs-node reads its thread pools' sizes from these when it loads (after this point).
    process.env.TF_NUM_INTRAOP_THREADS ??= String(config.caps.cores);
    process.env.TF_NUM_INTEROP_THREADS ??= '1';
  }
  const local = readLocalData(config.data);
  const data = hooks.data ? hooks.data(local) : local;
  const stateDir = config.state_dir;
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const { identity, created } = loadOrCreateIdentity(join(stateDir, 'key.json'), { create: true });
  const nodeId = nodeIdFromPublicKey(identity.publicKey);
  const log = config.quiet ? () => {} : lineLog(nodeId, config.log_format);
  if (created) log(`created this node's key in ${join(stateDir, 'key.json')} (fingerprint ${fingerprint(identity.publicKey)})`);
  const pins = readPins(stateDir);
  const explicit = config.aggregator_key ?? config.invitation;
  const aggregatorKey = explicit ? readPinnedKey(explicit) : pins[config.aggregator] ? readPinnedKey(pins[config.aggregator]!) : undefined;
  log(`${data.numExamples} local examples of shape [${data.featureShape.join(',')}], ${data.numClasses} classes`);
  const controller = new AbortController();
  const stop = () => {
    log('stopping');
    controller.abort();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const availability = new Availability({ schedule: config.schedule, pauseFile: join(stateDir, PAUSE_FILE) });
  // The pause state lives in a file, so a paused node stays paused across restarts and `crowdfl node pause` works without a signal.
  process.on('SIGUSR1', () => {
    setPaused(stateDir, true);
    availability.refresh();
  });
  process.on('SIGUSR2', () => {
    setPaused(stateDir, false);
    availability.refresh();
  });
  writeFileSync(join(stateDir, PID_FILE), `${process.pid}\n`);
  let serving: Serving | undefined;
  if (config.serve !== undefined) {
    serving = await startServing({
      sources: [],
      batching: { maxBatch: 64, maxWaitMs: 2, maxQueue: 1024 },
      // Training keeps this process's event loop busy, so loop utilization says nothing about serving load here.
      admission: { maxPending: 1024, maxDelayMs: 500, maxUtilization: 1 },
      http: { host: '127.0.0.1', port: config.serve, maxBodyBytes: 16 * 1024 * 1024 },
      keepVersions: 2,
      log,
    });
    log(`serving the global model on http://127.0.0.1:${serving.port}/v1/models/global once the first task brings it`);
  }
  const { tasksDone } = await runNode({
    aggregator: config.aggregator,
    identity,
    aggregatorKey,
    invitation: config.invitation,
    tls: config.tls,
    onPinned: (key) =>
      writeFileSync(pinFile(stateDir), JSON.stringify({ ...readPins(stateDir), [config.aggregator]: publicKeyToString(key) }, null, 2), {
        mode: 0o600,
      }),
    data,
    backend: config.backend,
    exitWhenFinished: config.exit_when_finished,
    log,
    signal: controller.signal,
    adversary: hooks.adversary?.(nodeId, log),
    claimedExamples: hooks.claimedExamples,
    minEpochFraction: config.min_epoch_fraction,
    caps: config.caps,
    availability,
    ledger: new Ledger(join(stateDir, LEDGER_FILE)),
    onGlobalModel: serving
      ? ({ round, spec, weights, sha256 }) =>
          void serving!.registry.loadContents('global', round, { spec, weights, sha256 }).then(
            () => log(`serving the global model of round ${round} (${sha256.slice(0, 12)})`),
            (err: unknown) => log(`could not serve the global model of round ${round}: ${(err as Error).message}`),
          )
      : undefined,
    slowdown: flags.slowdown,
    vanishes: flags.vanishProbability
      ? // Per task, not per round: a retried round is a fresh draw, as a real machine's luck would be.
        ({ taskId }) => Rng.derive(flags.faultSeed ?? 0, 'vanish', nodeId, taskId).uniform() < flags.vanishProbability!
      : undefined,
  });
  availability.close();
  rmSync(join(stateDir, PID_FILE), { force: true });
  log(`done: ${tasksDone} tasks`);
  process.exit(0);
}

function printStatus(stateDir: string, json: boolean, run: string | undefined): void {
  const keyFile = join(stateDir, 'key.json');
  if (!existsSync(keyFile)) throw new UsageError(`no node in ${stateDir} (no key.json); pass the node's --state-dir`);
  const { identity } = loadOrCreateIdentity(keyFile);
  const nodeId = nodeIdFromPublicKey(identity.publicKey);
  const { entries: all, problems } = new Ledger(join(stateDir, LEDGER_FILE)).read();
  // The ledger's `experiment` is the run id (what the aggregator's tasks carry as experiment_id).
  const runs = [...new Set(all.map((e) => e.experiment))];
  if (run !== undefined && !runs.includes(run)) {
    throw new UsageError(`--run ${run}: this node's ledger has no task of that run${runs.length ? `; it has ${runs.join(', ')}` : ' (it has none yet)'}`);
  }
  const entries = run === undefined ? all : all.filter((e) => e.experiment === run);
  const t = contributionTotals(entries);
  const perRun = new Map(runs.filter((r) => run === undefined || r === run).map((r) => [r, contributionTotals(all.filter((e) => e.experiment === r))]));
  const pid = runningPid(stateDir);
  const paused = existsSync(join(stateDir, PAUSE_FILE));
  const plainTotals = (x: ContributionTotals) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, v instanceof Map ? Object.fromEntries(v) : v]));
  if (json) {
    const out = { node_id: nodeId, running: pid !== undefined, paused, ...plainTotals(t), runs: Object.fromEntries([...perRun].map(([r, x]) => [r, plainTotals(x)])), ledger_problems: problems };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return;
  }
  process.stdout.write(formatStatus(nodeId, t, { running: pid !== undefined, paused, problems }));
  if (perRun.size > 1 || run !== undefined) {
    process.stdout.write(`\n${run === undefined ? 'per run' : `run ${run} only`}:\n  run                                   tasks  kept  down-weighted  not selected  rejected  compute\n`);
    for (const [r, x] of perRun) {
      const rejected = [...x.rejected.values()].reduce((a, b) => a + b, 0);
      process.stdout.write(
        `  ${r.padEnd(36)} ${String(x.tasks).padStart(6)} ${String(x.kept).padStart(5)} ${String(x.downWeighted).padStart(14)} ${String(x.notSelected).padStart(13)} ` +
          `${String(rejected).padStart(9)}  ${x.computeSeconds.toFixed(1)} s\n`,
      );
    }
  }
}
