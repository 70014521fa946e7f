import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { startAggregator } from '../aggregator/aggregator.js';
import { AggregatorMetrics, serveMetrics } from '../aggregator/prometheus.js';
import { loadExperimentFile } from '../aggregator/experiment/schema.js';
import { backendPreferenceSchema, type BackendPreference } from '../core/backend.js';
import { testData } from '../datasets/index.js';
import { newRunId } from '../aggregator/run-id.js';
import { RunProgress } from '../lab/progress.js';
import { writeRunPlot } from '../lab/plot.js';
import { action, UsageError } from './errors.js';
import { DEFAULT_AGGREGATOR_KEY } from './keys.js';
import { fingerprint, loadOrCreateIdentity, publicKeyFromString, publicKeyToString } from '../core/signing/keys.js';
import type { AdmissionPolicy } from '../aggregator/nodes/joining.js';
import { isLoopback, type ServerTlsFiles } from '../core/tls.js';
import { InvalidArgumentError } from 'commander';
import { parseChoice, parsePort, parseSeconds, parseWhole } from './options.js';
import { printSummary } from './summary.js';
import { DEFAULT_CONNECTION_LIMITS } from '../aggregator/transport/connection-guard.js';
import { lineLog, logFormatSchema, type LogFormat } from '../core/log.js';

interface Options {
  experiment: string;
  host: string;
  port: number;
  runsDir: string;
  runId?: string;
  metricsPort?: number;
  backend?: BackendPreference;
  key: string;
  admission: 'open' | 'allowlist' | 'invitation';
  allowlist?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  insecure: boolean;
  linger: number;
  maxConnections: number;
  maxUnprovenConnections: number;
  maxUnprovenPerAddress: number;
  helloTimeout: number;
  shedAbove: number;
  shedPause: number;
  logFormat: LogFormat;
}

function tlsFiles(opts: Options, log: (msg: string) => void): ServerTlsFiles | undefined {
  if (opts.tlsCert || opts.tlsKey) {
    if (!opts.tlsCert || !opts.tlsKey) throw new UsageError('TLS needs both --tls-cert and --tls-key (make them with `crowdfl certs create`)');
    return { cert: opts.tlsCert, key: opts.tlsKey, clientCa: opts.tlsClientCa };
  }
  if (opts.tlsClientCa) throw new UsageError('--tls-client-ca needs --tls-cert and --tls-key as well');
  if (!isLoopback(opts.host)) {
    if (!opts.insecure) {
      throw new UsageError(
        `refusing plaintext gRPC on ${opts.host}: updates and tasks would cross the network unencrypted. ` +
          'Create certificates with `crowdfl certs create --out certs --host <name>` and pass --tls-cert/--tls-key, or force plaintext with --insecure',
      );
    }
    log(`WARNING: serving plaintext gRPC on ${opts.host} (--insecure): anyone on the network can read the traffic`);
  }
  return undefined;
}

function admissionPolicy(opts: Options): AdmissionPolicy {
  if (opts.admission === 'allowlist') {
    if (!opts.allowlist) throw new UsageError('--admission allowlist needs --allowlist FILE (one base64 public key per line)');
    const keys = readFileSync(opts.allowlist, 'utf8')
      .split('\n')
      .map((l) => l.replace(/#.*/, '').trim())
      .filter(Boolean)
      .map((k, i) => {
        try {
          return publicKeyToString(publicKeyFromString(k));
        } catch {
          throw new UsageError(`${opts.allowlist} line ${i + 1}: ${k} is not a base64 Ed25519 public key`);
        }
      });
    return { mode: 'allowlist', publicKeys: new Set(keys) };
  }
  return { mode: opts.admission };
}

export function register(program: Command): void {
  program
    .command('aggregator')
    .description('serve an experiment: wait for nodes, run its rounds, checkpoint every global model')
    .requiredOption('--experiment <file>', 'experiment file (JSON)')
    .option('--host <host>', 'address to listen on (0.0.0.0 for every interface)', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0 picks a free one)', parsePort, 7070)
    .option('--runs-dir <dir>', 'where runs/<run-id>/ is written', 'runs')
    .option('--run-id <id>', 'name of the run directory')
    .option('--backend <name>', 'tfjs backend for evaluation: auto|tensorflow|tensorflow-gpu|wasm|cpu', parseChoice(backendPreferenceSchema))
    .option('--key <file>', "the aggregator's Ed25519 key (created on first run, mode 0600)", DEFAULT_AGGREGATOR_KEY)
    .option('--admission <mode>', 'who may join: open, allowlist or invitation', (v: string) => {
      if (!['open', 'allowlist', 'invitation'].includes(v)) throw new InvalidArgumentError('choose open, allowlist or invitation');
      return v;
    }, 'open')
    .option('--allowlist <file>', 'with --admission allowlist: one base64 node public key per line')
    .option('--tls-cert <file>', 'TLS certificate (PEM) of this aggregator, e.g. certs/server.crt')
    .option('--tls-key <file>', 'its private key (PEM), e.g. certs/server.key')
    .option('--tls-client-ca <file>', 'require nodes to present a certificate signed by this CA (mutual TLS)')
    .option('--insecure', 'allow plaintext gRPC on a non-loopback address (not recommended)', false)
    .option(
      '--linger <seconds>',
      'after the last round, stay up this long (at most) until every registered node has heard the run is over',
      parseSeconds(true),
      0,
    )
    .option('--max-connections <n>', 'connections held at once (also bounded by the open-file limit less a reserve for the store)', parseWhole(1), DEFAULT_CONNECTION_LIMITS.maxConnections)
    .option('--max-unproven-connections <n>', 'connections held at once that have not yet shown a session (said hello)', parseWhole(1), DEFAULT_CONNECTION_LIMITS.maxUnproven)
    .option(
      '--max-unproven-per-address <n>',
      'of those, from one address (proven connections have no per-address bound: volunteers may share one behind a NAT)',
      parseWhole(1),
      DEFAULT_CONNECTION_LIMITS.maxUnprovenPerAddress,
    )
    .option(
      '--hello-timeout <seconds>',
      'close a connection that has not shown a session this long after it opened',
      parseSeconds(),
      DEFAULT_CONNECTION_LIMITS.helloTimeoutMs / 1000,
    )
    .option(
      '--shed-above <n>',
      'stop listening for --shed-pause seconds when more than n connections a second are turned away (0: never)',
      parseWhole(0),
      DEFAULT_CONNECTION_LIMITS.shedAbovePerSecond,
    )
    .option(
      '--shed-pause <seconds>',
      'how long the listener stays closed each time it sheds a flood (connections already held are kept)',
      parseSeconds(),
      (DEFAULT_CONNECTION_LIMITS.shedPauseMs ?? 2000) / 1000,
    )
    .option('--log-format <format>', 'text: "TIME [aggregator] message" lines; json: one object per line, for log shippers', parseChoice(logFormatSchema), 'text')
    .option('--metrics-port <port>', 'serve Prometheus metrics (updates, rounds, round duration, model version) at http://HOST:PORT/metrics', parsePort)
    .addHelpText(
      'after',
      '\nNodes join with: crowdfl node --aggregator HOST:PORT --data DIR --aggregator-key <this key>\n' +
        'or, with --admission invitation, --invitation $(crowdfl invite --uses 10)',
    )
    .action(
      action(async (opts: Options) => {
        const { experiment: parsed, text } = loadExperimentFile(opts.experiment);
        const experiment = opts.backend ? { ...parsed, backend: opts.backend } : parsed;
        const runId = opts.runId ?? newRunId(experiment.name);
        const runDir = resolve(opts.runsDir, runId);
        const log = lineLog('aggregator', opts.logFormat);
        const admission = admissionPolicy(opts);
        const tls = tlsFiles(opts, log);
        const { identity, created } = loadOrCreateIdentity(opts.key, { create: true });
        log(`${created ? 'created' : 'using'} aggregator key ${opts.key}: ${publicKeyToString(identity.publicKey)} (fingerprint ${fingerprint(identity.publicKey)})`);
        const test = await testData(experiment.dataset, experiment.nodes, experiment.seed, { log });
        const progress = new RunProgress(experiment.rounds, process.stderr, log, experiment.selection.nodes_per_round);
        const metrics = opts.metricsPort === undefined ? undefined : new AggregatorMetrics();
        if (metrics && opts.metricsPort !== undefined) {
          const endpoint = await serveMetrics(metrics, opts.host, opts.metricsPort).catch((err: NodeJS.ErrnoException) => {
            throw new UsageError(
              err.code === 'EADDRINUSE'
                ? `metrics port ${opts.metricsPort} on ${opts.host} is already in use: stop what listens there or choose another --metrics-port`
                : `cannot serve metrics on ${opts.host}:${opts.metricsPort}: ${err.message}`,
            );
          });
          log(`metrics on http://${opts.host}:${endpoint.port}/metrics`);
        }
        const running = await startAggregator({
          experiment,
          runDir,
          runId,
          experimentText: text,
          test,
          identity,
          admission,
          tls,
          host: opts.host,
          port: opts.port,
          lingerMs: opts.linger * 1000,
          log,
          onEvent: metrics
            ? (event) => {
                progress.handle(event);
                metrics.handle(event);
              }
            : progress.handle,
          onCall: metrics?.observeCall,
          connections: {
            maxConnections: opts.maxConnections,
            maxUnproven: opts.maxUnprovenConnections,
            maxUnprovenPerAddress: opts.maxUnprovenPerAddress,
            helloTimeoutMs: opts.helloTimeout * 1000,
            shedAbovePerSecond: opts.shedAbove,
            shedWindowMs: DEFAULT_CONNECTION_LIMITS.shedWindowMs,
            shedPauseMs: opts.shedPause * 1000,
          },
        });
        metrics?.watchConnections(running.connections);
        process.once('SIGINT', () => {
          log('interrupted: closing the aggregator (committed rounds are kept)');
          void running.stop();
        });
        const summary = await running.done;
        progress.close();
        if (summary.rounds.length) await writeRunPlot(summary, runDir);
        printSummary(summary, runDir);
      }),
    );
}
