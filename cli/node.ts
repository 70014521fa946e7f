import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { backendPreferenceSchema, type BackendPreference } from '../core/experiment.js';
import { readLocalData } from '../datasets/local-dir.js';
import { runNode } from '../trainer/node.js';
import { Rng } from '../datasets/random.js';
import { adversary, poisonData, readAttackFile } from '../experiments/byzantine-node.js';
import { action, UsageError } from './errors.js';
import { readPinnedKey } from './keys.js';
import { fingerprint, loadOrCreateIdentity, nodeIdFromPublicKey, publicKeyToString } from '../core/keys.js';
import { parseAddress, parseChoice, parseFraction, parsePort } from './options.js';
import { startServing, type Serving } from '../serving/serve.js';

interface Options {
  aggregator: string;
  data: string;
  backend: BackendPreference;
  stateDir: string;
  aggregatorKey?: string;
  invitation?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  exitWhenFinished: boolean;
  quiet: boolean;
  attack?: string;
  vanishProbability?: number;
  slowdown?: number;
  faultSeed?: number;
  minEpochFraction: number;
  serve?: number;
}

/** Aggregator keys pinned on first use, per address, kept across restarts. */
function pinFile(stateDir: string): string {
  return join(stateDir, 'pinned-aggregators.json');
}

function readPins(stateDir: string): Record<string, string> {
  const file = pinFile(stateDir);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>) : {};
}

export function register(program: Command): void {
  program
    .command('node')
    .description('contribute local training: join an aggregator and train on the data in --data')
    .requiredOption('--aggregator <host:port>', 'the aggregator to join', parseAddress)
    .requiredOption('--data <dir>', 'local training data (format: datasets/README.md; make one with `crowdfl data import-csv`)')
    .option('--backend <name>', 'auto|tensorflow|tensorflow-gpu|wasm|cpu', parseChoice(backendPreferenceSchema), 'auto')
    .option('--state-dir <dir>', "where the node keeps its key (key.json, mode 0600) and the aggregator keys it pinned", join(homedir(), '.crowdfl', 'node'))
    .option('--aggregator-key <key>', "the aggregator's public key to trust: base64, or a file holding it (default: pin the first key seen)")
    .option('--invitation <token>', 'an invitation from the aggregator (crowdfl-invite:...); also pins its key')
    .option('--tls-ca <file>', "the deployment CA (PEM) to check a TLS aggregator's certificate against")
    .option('--tls-cert <file>', "this node's client certificate, for an aggregator that requires mutual TLS")
    .option('--tls-key <file>', 'the private key of --tls-cert')
    .option('--exit-when-finished', 'exit when the aggregator finishes its experiment, instead of waiting for the next', false)
    .option(
      '--min-epoch-fraction <share>',
      'decline a task (freeing its slot at once) when its deadline leaves time for less than this share of one local epoch; ' +
        'with more time a slow node sends a partial update',
      parseFraction,
      0.25,
    )
    .option('--serve <port>', 'also serve the newest global model this node received, on the TF Serving REST API at 127.0.0.1:PORT (model name "global")', parsePort)
    .option('--quiet', 'log only errors', false)
    // Attack experiments only (written by `crowdfl simulate` for Byzantine nodes); hidden from operators.
    .addOption(new Option('--attack <file>', 'run as a Byzantine node of an attack experiment').hideHelp())
    .addOption(new Option('--vanish-probability <p>', 'fault injection: vanish mid-round with this probability per task').argParser(parseFraction).hideHelp())
    .addOption(new Option('--slowdown <x>', 'fault injection: take this many times as long per task').argParser(Number).hideHelp())
    .addOption(new Option('--fault-seed <n>', 'seed of the fault injection').argParser(Number).default(0).hideHelp())
    .addHelpText(
      'after',
      '\nThe node never runs code it is sent: a task carries a declarative tfjs layers model (JSON), built\n' +
        'only from an allowlist of layer classes, and is trained only if the pinned aggregator signed it.\n' +
        'Its identity is an Ed25519 key created on first run in --state-dir; `crowdfl keys show --key DIR/key.json`\n' +
        'prints it. It reconnects by itself if the aggregator goes away.',
    )
    .action(
      action(async (opts: Options) => {
        if (!existsSync(opts.data)) {
          throw new UsageError(`--data ${opts.data} does not exist; point it at a directory in the crowdfl-data format (see datasets/README.md)`);
        }
        const attack = opts.attack ? readAttackFile(opts.attack) : undefined;
        const data = attack ? poisonData(attack.attack, readLocalData(opts.data)) : readLocalData(opts.data);
        if ((opts.tlsCert || opts.tlsKey) && !opts.tlsCa) throw new UsageError('--tls-cert/--tls-key need --tls-ca too');
        mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
        const { identity, created } = loadOrCreateIdentity(join(opts.stateDir, 'key.json'), { create: true });
        const nodeId = nodeIdFromPublicKey(identity.publicKey);
        const log = opts.quiet ? () => {} : (msg: string) => process.stderr.write(`[${nodeId}] ${msg}\n`);
        if (created) log(`created this node's key in ${join(opts.stateDir, 'key.json')} (fingerprint ${fingerprint(identity.publicKey)})`);
        const pins = readPins(opts.stateDir);
        const explicit = opts.aggregatorKey ?? opts.invitation;
        const aggregatorKey = explicit ? readPinnedKey(explicit) : pins[opts.aggregator] ? readPinnedKey(pins[opts.aggregator]!) : undefined;
        log(`${data.numExamples} local examples of shape [${data.featureShape.join(',')}], ${data.numClasses} classes`);
        const controller = new AbortController();
        const stop = () => {
          log('stopping');
          controller.abort();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        let serving: Serving | undefined;
        if (opts.serve !== undefined) {
          serving = await startServing({
            sources: [],
            batching: { maxBatch: 64, maxWaitMs: 2, maxQueue: 1024 },
            // Training keeps this process's event loop busy, so loop utilization says nothing about serving load here.
            admission: { maxPending: 1024, maxDelayMs: 500, maxUtilization: 1 },
            http: { host: '127.0.0.1', port: opts.serve, maxBodyBytes: 16 * 1024 * 1024 },
            keepVersions: 2,
            log,
          });
          log(`serving the global model on http://127.0.0.1:${serving.port}/v1/models/global once the first task brings it`);
        }
        const { tasksDone } = await runNode({
          aggregator: opts.aggregator,
          identity,
          aggregatorKey,
          invitation: opts.invitation,
          tls: opts.tlsCa ? { ca: opts.tlsCa, cert: opts.tlsCert, key: opts.tlsKey } : undefined,
          onPinned: (key) =>
            writeFileSync(pinFile(opts.stateDir), JSON.stringify({ ...readPins(opts.stateDir), [opts.aggregator]: publicKeyToString(key) }, null, 2), {
              mode: 0o600,
            }),
          data,
          backend: opts.backend,
          exitWhenFinished: opts.exitWhenFinished,
          log,
          signal: controller.signal,
          adversary: attack ? adversary(attack, nodeId, log) : undefined,
          minEpochFraction: opts.minEpochFraction,
          onGlobalModel: serving
            ? ({ round, spec, weights, sha256 }) =>
                void serving!.registry.loadContents('global', round, { spec, weights, sha256 }).then(
                  () => log(`serving the global model of round ${round} (${sha256.slice(0, 12)})`),
                  (err: unknown) => log(`could not serve the global model of round ${round}: ${(err as Error).message}`),
                )
            : undefined,
          slowdown: opts.slowdown,
          vanishes: opts.vanishProbability
            ? // Per task, not per round: a retried round is a fresh draw, as a real machine's luck would be.
              ({ taskId }) => Rng.derive(opts.faultSeed ?? 0, 'vanish', nodeId, taskId).uniform() < opts.vanishProbability!
            : undefined,
        });
        log(`done: ${tasksDone} tasks`);
        process.exit(0);
      }),
    );
}
