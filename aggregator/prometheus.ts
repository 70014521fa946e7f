// `crowdfl aggregator --metrics-port PORT`: the run's progress in the
// Prometheus text format, built from the engine's events (the same stream the
// progress display reads), so nothing in the round engine or the gRPC handlers
// changes, plus every gRPC call's method, status and duration, which the
// handlers in server.ts report.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Histogram, labelText } from '../core/prometheus-text.js';
import { status } from '@grpc/grpc-js';
import type { EngineEvent } from './rounds/synchronous.js';
import { RESERVED_FDS, type ConnectionStats } from './transport/connection-guard.js';

const ROUND_SECONDS_BUCKETS = [1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];
const PARTICIPANT_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
// Up to PollTask's 20 s long poll and a large upload.
const CALL_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60];

export class AggregatorMetrics {
  private readonly updates = new Map<string, number>();
  private readonly rounds = new Map<string, number>();
  private declined = 0;
  private banned = 0;
  private readonly roundSeconds = new Histogram(ROUND_SECONDS_BUCKETS);
  private readonly participants = new Histogram(PARTICIPANT_BUCKETS);
  private modelRound: number | undefined;
  private accuracy: number | undefined;
  private currentRound: number | undefined;
  /** Calls by "method code", and their durations by method. */
  private readonly calls = new Map<string, { method: string; code: string; count: number }>();
  private readonly callSeconds = new Map<string, Histogram>();
  private connectionStats: (() => ConnectionStats) | undefined;

  /** Where the connection and file-descriptor figures come from (the running aggregator). */
  watchConnections(source: () => ConnectionStats): void {
    this.connectionStats = source;
  }

  /** A gRPC call answered (aggregator/server.ts reports every one). */
  readonly observeCall = (method: string, code: status, seconds: number): void => {
    const codeName = status[code] ?? String(code);
    const key = `${method} ${codeName}`;
    const entry = this.calls.get(key) ?? { method, code: codeName, count: 0 };
    entry.count++;
    this.calls.set(key, entry);
    let histogram = this.callSeconds.get(method);
    if (!histogram) this.callSeconds.set(method, (histogram = new Histogram(CALL_SECONDS_BUCKETS)));
    histogram.observe(seconds);
  };

  readonly handle = (event: EngineEvent): void => {
    switch (event.type) {
      case 'round-started':
        this.currentRound = event.round;
        break;
      case 'update': {
        const outcome = event.accepted ? 'accepted' : 'rejected';
        this.updates.set(outcome, (this.updates.get(outcome) ?? 0) + 1);
        break;
      }
      case 'round-committed':
        this.rounds.set('committed', (this.rounds.get('committed') ?? 0) + 1);
        this.roundSeconds.observe(event.record.seconds);
        this.participants.observe(event.record.participants);
        this.modelRound = event.record.round;
        this.accuracy = event.record.accuracy;
        break;
      case 'round-abandoned':
        this.rounds.set('abandoned', (this.rounds.get('abandoned') ?? 0) + 1);
        break;
      case 'task-declined':
        this.declined++;
        break;
      case 'node-banned':
        this.banned++;
        break;
      case 'waiting-for-nodes':
        break;
    }
  };

  render(): string {
    const out: string[] = [];
    const family = (name: string, type: string, help: string): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    };
    family('crowdfl_aggregator_requests_total', 'counter', 'gRPC calls answered, by method and status code.');
    for (const c of this.calls.values()) out.push(`crowdfl_aggregator_requests_total${labelText({ method: c.method, code: c.code })} ${c.count}`);
    family('crowdfl_aggregator_request_seconds', 'histogram', 'Time from a call\'s arrival to its answer, by method (PollTask includes its long-poll wait).');
    for (const [method, h] of this.callSeconds) out.push(...h.render('crowdfl_aggregator_request_seconds', { method }));
    family('crowdfl_aggregator_updates_total', 'counter', 'Model updates received, by whether the round accepted them.');
    for (const outcome of ['accepted', 'rejected']) out.push(`crowdfl_aggregator_updates_total${labelText({ outcome })} ${this.updates.get(outcome) ?? 0}`);
    family('crowdfl_aggregator_rounds_total', 'counter', 'Round attempts that ended, by outcome.');
    for (const outcome of ['committed', 'abandoned']) out.push(`crowdfl_aggregator_rounds_total${labelText({ outcome })} ${this.rounds.get(outcome) ?? 0}`);
    family('crowdfl_aggregator_tasks_declined_total', 'counter', 'Tasks nodes declined.');
    out.push(`crowdfl_aggregator_tasks_declined_total ${this.declined}`);
    family('crowdfl_aggregator_nodes_banned_total', 'counter', 'Nodes banned by reputation.');
    out.push(`crowdfl_aggregator_nodes_banned_total ${this.banned}`);
    family('crowdfl_aggregator_round_seconds', 'histogram', 'Duration of each committed round.');
    out.push(...this.roundSeconds.render('crowdfl_aggregator_round_seconds', {}));
    family('crowdfl_aggregator_round_participants', 'histogram', 'Updates averaged into each committed round.');
    out.push(...this.participants.render('crowdfl_aggregator_round_participants', {}));
    if (this.currentRound !== undefined) {
      family('crowdfl_aggregator_round', 'gauge', 'Round in progress (or last started).');
      out.push(`crowdfl_aggregator_round ${this.currentRound}`);
    }
    if (this.modelRound !== undefined) {
      family('crowdfl_aggregator_model_version', 'gauge', 'Round of the newest committed global model.');
      out.push(`crowdfl_aggregator_model_version ${this.modelRound}`);
      family('crowdfl_aggregator_model_accuracy', 'gauge', 'Test accuracy of the newest committed global model.');
      out.push(`crowdfl_aggregator_model_accuracy ${this.accuracy}`);
    }
    const c = this.connectionStats?.();
    if (c) {
      family('crowdfl_aggregator_connections', 'gauge', 'Open connections, by whether a call on them has shown a live session (proven) or not yet (unproven).');
      out.push(`crowdfl_aggregator_connections${labelText({ state: 'proven' })} ${c.proven}`);
      out.push(`crowdfl_aggregator_connections${labelText({ state: 'unproven' })} ${c.unproven}`);
      family('crowdfl_aggregator_connections_silent', 'gauge', 'Unproven connections that have sent no byte yet (not handed to gRPC).');
      out.push(`crowdfl_aggregator_connections_silent ${c.silent}`);
      family('crowdfl_aggregator_connections_max', 'gauge', 'Connections held at most: the configured cap, or the open-file limit less the reserve if lower.');
      out.push(`crowdfl_aggregator_connections_max ${c.max}`);
      family('crowdfl_aggregator_connections_refused_total', 'counter', 'Connections closed on arrival, by the bound they would have broken.');
      for (const [reason, count] of Object.entries(c.refused)) out.push(`crowdfl_aggregator_connections_refused_total${labelText({ reason })} ${count}`);
      family('crowdfl_aggregator_connections_timed_out_total', 'counter', 'Connections closed because no call on them showed a session in time.');
      out.push(`crowdfl_aggregator_connections_timed_out_total ${c.timedOut}`);
      family('crowdfl_aggregator_connections_evicted_total', 'counter', 'Unproven connections closed to make room for a newcomer from an address holding fewer unproven connections.');
      out.push(`crowdfl_aggregator_connections_evicted_total ${c.evicted}`);
      family('crowdfl_aggregator_listening', 'gauge', 'Whether the listener is open (0 while it sheds a flood of connections).');
      out.push(`crowdfl_aggregator_listening ${c.listening ? 1 : 0}`);
      family('crowdfl_aggregator_listener_sheds_total', 'counter', 'Times the listener was closed because too many connections a second were turned away.');
      out.push(`crowdfl_aggregator_listener_sheds_total ${c.sheds}`);
      family('crowdfl_aggregator_listener_shed_seconds_total', 'counter', 'Seconds the listener has been closed to shed floods.');
      out.push(`crowdfl_aggregator_listener_shed_seconds_total ${c.shedSeconds.toFixed(3)}`);
      family('crowdfl_aggregator_open_files_limit', 'gauge', "The process's open-file limit.");
      out.push(`crowdfl_aggregator_open_files_limit ${c.fdLimit}`);
      family('crowdfl_aggregator_open_files_reserved', 'gauge', 'File descriptors never given to connections (database, checkpoints, update blobs, logs).');
      out.push(`crowdfl_aggregator_open_files_reserved ${RESERVED_FDS}`);
      if (c.fdsInUse !== undefined) {
        family('crowdfl_aggregator_open_files', 'gauge', 'File descriptors the process holds.');
        out.push(`crowdfl_aggregator_open_files ${c.fdsInUse}`);
      }
    }
    return `${out.join('\n')}\n`;
  }
}

export interface MetricsEndpoint {
  port: number;
  close(): Promise<void>;
}

/** GET /metrics on host:port; the server does not keep the process alive. */
export function serveMetrics(metrics: AggregatorMetrics, host: string, port: number): Promise<MetricsEndpoint> {
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url ?? '').split('?')[0] === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(metrics.render());
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('see /metrics\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      server.unref();
      resolve({ port: (server.address() as AddressInfo).port, close: () => new Promise((done) => server.close(() => done())) });
    });
  });
}
