// Light nodes: many protocol-complete nodes that compute nothing, in ONE
// process, for load tests of the aggregator. Each has its own Ed25519
// identity, its own gRPC channel and TCP connection, signs its hello, long-polls
// for tasks and heartbeats at the interval the aggregator asked for, measuring
// every heartbeat's round trip. A task is answered like a free-rider would: a
// correctly signed update of zeros claiming one example.
//
// Run as a script it writes its results as JSON:
//   node dist/bench/light-nodes.js --aggregator 127.0.0.1:7070 --count 500 --seconds 120 --out /tmp/x.json
// Forked with an IPC channel (bench/bench-load.ts does), it also sends its
// counts every second and as each phase starts; with --until-stopped the
// parent ends the hold, so several processes hold over the same window.
import { readFileSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { generateIdentity, nodeIdFromPublicKey, type Identity } from '../core/signing/keys.js';
import { weightManifest } from '../core/model/spec.js';
import { parseModelJson } from '../core/model/zoo.js';
import { manifestElements } from '../core/tensor-codec.js';
import { SOFTWARE } from '../core/version.js';
import type { HelloReply__Output } from '../proto/generated/crowdfl/v1/HelloReply.js';
import type { PollTaskReply__Output } from '../proto/generated/crowdfl/v1/PollTaskReply.js';
import type { Task__Output } from '../proto/generated/crowdfl/v1/Task.js';
import { AggregatorConnection } from '../trainer/client.js';
import { Backoff } from '../trainer/node.js';
import { taskProblem } from '../trainer/task-check.js';

export interface LightNodesOptions {
  /** host:port of a plaintext aggregator. */
  aggregator: string;
  count: number;
  /** The nodes' first hellos are spread evenly over this, so the run measures holding, not a thundering herd. */
  rampMs: number;
  /** The measured window, starting once every node has joined after the ramp (or a grace period has passed). */
  holdMs: number;
  /**
   * After the ramp, how long to wait for every node to have joined before the hold starts anyway
   * (default 60 s): the hold measures holding, and joining is reported on its own.
   */
  settleMs?: number;
  /** How long a node "trains" on a task (heartbeating with its task id) before it uploads its zeros. */
  workMs?: number;
  /** How long a node waits in one PollTask; the aggregator caps it (20 s by default). */
  pollWaitMs?: number;
  log?: (msg: string) => void;
  /** Called every second. */
  onTick?: (snapshot: LightNodesSnapshot) => void;
  /** Called as each phase starts, with the counts at that moment. */
  onPhase?: (snapshot: LightNodesSnapshot) => void;
  signal?: AbortSignal;
}

export type Phase = 'ramp' | 'hold' | 'drain' | 'done';

export interface LightNodesSnapshot {
  phase: Phase;
  at: number;
  connected: number;
  sessions_lost: number;
  heartbeats_sent: number;
  heartbeats_answered: number;
  heartbeats_failed: number;
  updates_accepted: number;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export interface WindowCounts {
  /** Times a node that had joined had to say hello again, by what ended its session. */
  sessions_lost: number;
  sessions_lost_by_cause: Record<string, number>;
  heartbeats: { sent: number; answered: number; failed: number };
  /** Failed calls, keyed "Rpc STATUS". */
  errors_by_status: Record<string, number>;
}

export interface LightNodesResult {
  aggregator: string;
  count: number;
  ramp_seconds: number;
  hold_seconds: number;
  /** Wall-clock bounds of the hold window (Unix ms), for lining up with other measurements. */
  hold_started_at: number;
  hold_ended_at: number;
  /** As the aggregator's HelloReply set it. */
  heartbeat_interval_ms: number;
  connected_at_end: number;
  /** Lowest number of nodes with a live session at any moment of the hold window. */
  min_connected_during_hold: number;
  /** From the first hello until every node had a session; null if that never happened. */
  all_joined_after_seconds: number | null;
  hellos: number;
  hello_failures: number;
  /** The ramp, the hold and the hang-up together. */
  whole_run: WindowCounts;
  /** The hold window alone: what "held" is judged on. */
  hold: WindowCounts;
  /** Round trips of the heartbeats sent during the hold window, in ms. */
  heartbeat_latency_ms: LatencySummary;
  hello_latency_ms: LatencySummary;
  tasks: { received: number; refused: number; updates_accepted: number; updates_refused: number; not_wanted: number };
  /** This process's own event-loop delay: the part of a measured latency that is the clients' own queueing. */
  client_event_loop_delay_ms: { p50: number; p99: number; max: number };
  /** The hold's heartbeat round trips (0.01 ms steps), so percentiles can be taken over several processes. */
  latency_samples_ms: number[];
}

// Own subchannel pool: with the global one, grpc-js gives every channel with the
// same target and options ONE shared TCP connection, and 500 "nodes" would be a
// single client to the aggregator (and its 16-stream limit per connection).
const CHANNEL_OPTIONS: grpc.ChannelOptions = { 'grpc.use_local_subchannel_pool': 1 };

// A light node declares what it has: no backend, no data beyond the one example it claims.
const CAPABILITIES = { backends: ['none'], cores: 1, memory_bytes: 0, num_examples: 1, feature_shape: [], num_classes: 0 };
const LIGHT_SOFTWARE = `${SOFTWARE} light-node`.slice(0, 200);

function statusName(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'number' && grpc.status[code as grpc.status] !== undefined) return grpc.status[code as grpc.status];
  return err instanceof Error ? err.name : 'Error';
}

function isStatus(err: unknown, code: grpc.status): boolean {
  return (err as { code?: unknown } | undefined)?.code === code;
}

/** Nearest-rank percentiles; NaN (null in JSON) without samples. */
export function latencySummary(samples: readonly number[]): LatencySummary {
  if (samples.length === 0) return { count: 0, p50: NaN, p99: NaN, max: NaN };
  const sorted = Float64Array.from(samples).sort();
  // Nearest rank: the p-quantile is a sample that was actually observed.
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
  return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1]! };
}

/** Resident memory of process `pid` from /proc, in MiB; undefined once it has exited. */
export function rssMb(pid: number): number | undefined {
  try {
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb ? Number(kb) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Open TCP connections accepted on `port` on this machine (ESTABLISHED, local
 * port = `port`), read from the kernel's tables: the check that each light node
 * really has its own connection.
 */
export function establishedConnections(port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[1]?.endsWith(`:${hexPort}`) && cols[3] === '01') n++;
    }
  }
  return n;
}

/** Why a joined node left its session; the node says hello again after it. */
class SessionEnded extends Error {
  constructor(readonly why: string) {
    super(`session ended: ${why}`);
  }
}

/** Counts of one stretch of the run (all of it, or the hold window alone). */
class Counts {
  sessionsLost = 0;
  readonly lostByCause: Record<string, number> = {};
  heartbeatsSent = 0;
  heartbeatsAnswered = 0;
  heartbeatsFailed = 0;
  readonly errors: Record<string, number> = {};
}

function countsOut(c: Counts): WindowCounts {
  return {
    sessions_lost: c.sessionsLost,
    sessions_lost_by_cause: c.lostByCause,
    heartbeats: { sent: c.heartbeatsSent, answered: c.heartbeatsAnswered, failed: c.heartbeatsFailed },
    errors_by_status: c.errors,
  };
}

/** What all nodes of the process count together. */
class Tally {
  connected = 0;
  heartbeatIntervalMs = 0;
  /** Set when every node has a session for the first time. */
  allJoinedAt: number | undefined;
  minConnectedDuringHold = Infinity;
  hellos = 0;
  helloFailures = 0;
  readonly all = new Counts();
  /** Undefined outside the hold window. */
  hold: Counts | undefined;
  readonly holdLatencies: number[] = [];
  readonly helloLatencies: number[] = [];
  tasksReceived = 0;
  tasksRefused = 0;
  updatesAccepted = 0;
  updatesRefused = 0;
  notWanted = 0;

  constructor(private readonly count: number) {}

  /** Applies `f` to the whole run's counts and, inside the hold window, to the hold's. */
  private both(f: (c: Counts) => void): void {
    f(this.all);
    if (this.hold) f(this.hold);
  }

  error(rpc: string, err: unknown): void {
    const key = `${rpc} ${statusName(err)}`;
    this.both((c) => (c.errors[key] = (c.errors[key] ?? 0) + 1));
  }

  heartbeat(outcome: 'sent' | 'answered' | 'failed', counts: readonly Counts[]): void {
    for (const c of counts) {
      if (outcome === 'sent') c.heartbeatsSent++;
      else if (outcome === 'answered') c.heartbeatsAnswered++;
      else c.heartbeatsFailed++;
    }
  }

  join(): void {
    this.connected++;
    if (this.connected === this.count) this.allJoinedAt ??= Date.now();
  }

  leave(cause: string): void {
    this.connected--;
    this.both((c) => {
      c.sessionsLost++;
      c.lostByCause[cause] = (c.lostByCause[cause] ?? 0) + 1;
    });
    if (this.hold) this.minConnectedDuringHold = Math.min(this.minConnectedDuringHold, this.connected);
  }
}

class LightNode {
  private readonly conn: AggregatorConnection;
  private identity: Identity | undefined;
  private pinned: Uint8Array | undefined;
  private session: HelloReply__Output | undefined;
  private taskId = '';
  private wanted = true;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private nextBeatAt = 0;
  private cancelPoll: (() => void) | undefined;
  /** Set by a heartbeat that finds the session gone; the poll loop turns it into SessionEnded. */
  private lost: string | undefined;
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly stop = new AbortController();
  private stopped = false;

  constructor(
    address: string,
    private readonly tally: Tally,
    private readonly o: { workMs: number; pollWaitMs: number; log: (msg: string) => void },
  ) {
    this.conn = new AggregatorConnection(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  }

  private sleep(ms: number): Promise<void> {
    const signal = this.stop.signal;
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Joins after `startDelayMs` and keeps a session until stopped, saying hello again whenever it loses one. */
  async run(startDelayMs: number): Promise<void> {
    await this.sleep(startDelayMs);
    // Generated here rather than up front: key generation is ~3 ms of CPU each, spread over the ramp like the hellos.
    this.identity = generateIdentity();
    const backoff = new Backoff();
    while (!this.stopped) {
      const t0 = performance.now();
      try {
        const identity = this.identity;
        this.session = await this.conn.hello(identity, nodeIdFromPublicKey(identity.publicKey), CAPABILITIES, LIGHT_SOFTWARE, this.pinned);
      } catch (err) {
        if (this.stopped) break;
        this.tally.helloFailures++;
        this.tally.error('Hello', err);
        await this.sleep(backoff.next());
        continue;
      }
      this.tally.hellos++;
      this.tally.helloLatencies.push(performance.now() - t0);
      // Pinned on first use, like a node without --aggregator-key; later hellos are bound to it.
      this.pinned ??= new Uint8Array(this.session.aggregator_public_key);
      backoff.reset();
      this.lost = undefined;
      this.tally.join();
      this.tally.heartbeatIntervalMs = this.session.heartbeat_interval_ms;
      this.startHeartbeats(this.session.heartbeat_interval_ms);
      let cause = 'stopped';
      try {
        await this.serve(this.session);
      } catch (err) {
        cause = err instanceof SessionEnded ? err.why : `PollTask ${statusName(err)}`;
      }
      this.stopHeartbeats();
      this.session = undefined;
      if (this.stopped) {
        this.tally.connected--;
        break;
      }
      this.tally.leave(cause);
      this.o.log(`node ${nodeIdFromPublicKey(this.identity.publicKey)}: ${cause}; saying hello again`);
      // A session the aggregator forgot is re-joined at once; a failing aggregator is given room.
      if (!cause.endsWith('NOT_FOUND')) await this.sleep(backoff.next());
    }
  }

  /** Polls for tasks until stopped (returns) or the session ends (throws). */
  private async serve(session: HelloReply__Output): Promise<void> {
    while (!this.stopped) {
      if (this.lost) throw new SessionEnded(this.lost);
      const poll = new AbortController();
      this.cancelPoll = () => poll.abort();
      let reply: PollTaskReply__Output;
      try {
        reply = await this.conn.pollTask(this.o.pollWaitMs, poll.signal);
      } catch (err) {
        if (this.stopped) return;
        if (this.lost) throw new SessionEnded(this.lost);
        this.tally.error('PollTask', err);
        throw new SessionEnded(`PollTask ${statusName(err)}`);
      } finally {
        this.cancelPoll = undefined;
      }
      if (reply.experiment_finished) {
        await this.sleep(5000);
      } else if (reply.task) {
        await this.work(session, reply.task);
      } else {
        await this.sleep(reply.retry_after_ms);
      }
    }
  }

  /** A free-rider's answer to a task: checked like a real node checks it, then zeros, signed. */
  private async work(session: HelloReply__Output, task: Task__Output): Promise<void> {
    this.tally.tasksReceived++;
    const identity = this.identity!;
    const problem = taskProblem(task, nodeIdFromPublicKey(identity.publicKey), this.pinned!);
    if (problem) {
      this.tally.tasksRefused++;
      this.o.log(`refused task ${task.task_id}: ${problem}`);
      return;
    }
    const manifest = weightManifest(parseModelJson(task.model_json));
    this.taskId = task.task_id;
    this.wanted = true;
    try {
      // Stop "training" with room for the upload before the deadline, as trainer/node.ts does.
      const until = Math.min(Date.now() + this.o.workMs, Number(task.deadline_unix_ms) - 3000);
      await this.sleep(Math.max(0, until - Date.now()));
      if (this.stopped) return;
      if (!this.wanted) {
        this.tally.notWanted++;
        return;
      }
      const training = task.training!;
      const upload = this.conn.submitUpdate(
        {
          taskId: task.task_id,
          experimentId: task.experiment_id,
          round: task.round,
          baseModelSha256: task.base_model_sha256,
          numExamples: 1,
          manifest,
          delta: new Float32Array(manifestElements(manifest)),
          metrics: {
            loss: 0,
            accuracy: 0,
            train_seconds: this.o.workMs / 1000,
            examples_per_second: 0,
            epochs_completed: training.epochs,
            partial: false,
          },
        },
        identity,
      );
      this.inFlight.add(upload);
      try {
        await upload;
        this.tally.updatesAccepted++;
      } catch (err) {
        this.tally.error('SubmitUpdate', err);
        if (isStatus(err, grpc.status.NOT_FOUND)) throw new SessionEnded('SubmitUpdate NOT_FOUND');
        // Refused (round closed, already answered...) or failed in transit: the next task is a fresh start.
        this.tally.updatesRefused++;
      } finally {
        this.inFlight.delete(upload);
      }
    } finally {
      this.taskId = '';
    }
  }

  private startHeartbeats(intervalMs: number): void {
    // A random phase, so the nodes' beats are spread over the interval rather than aligned to their hellos.
    this.nextBeatAt = Date.now() + Math.random() * intervalMs;
    const tick = () => {
      this.beat();
      this.nextBeatAt += intervalMs;
      this.heartbeatTimer = setTimeout(tick, Math.max(0, this.nextBeatAt - Date.now()));
    };
    this.heartbeatTimer = setTimeout(tick, Math.max(0, this.nextBeatAt - Date.now()));
  }

  private stopHeartbeats(): void {
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  private beat(): void {
    const session = this.session;
    if (!session) return;
    const tally = this.tally;
    // A heartbeat belongs to the window it was sent in, whenever its answer comes.
    const counts = tally.hold ? [tally.all, tally.hold] : [tally.all];
    const inHold = tally.hold !== undefined;
    const taskId = this.taskId;
    tally.heartbeat('sent', counts);
    const t0 = performance.now();
    const call = this.conn.heartbeat(taskId, 0).then(
      (wanted) => {
        const ms = performance.now() - t0;
        tally.heartbeat('answered', counts);
        if (inHold) tally.holdLatencies.push(ms);
        if (taskId && taskId === this.taskId) this.wanted = wanted;
      },
      (err: unknown) => {
        tally.heartbeat('failed', counts);
        tally.error('Heartbeat', err);
        if (isStatus(err, grpc.status.NOT_FOUND) && this.session === session) {
          this.lost = 'Heartbeat NOT_FOUND';
          this.cancelPoll?.();
        }
      },
    );
    this.inFlight.add(call);
    void call.finally(() => this.inFlight.delete(call));
  }

  /** Stops polling and beating, lets calls already sent finish (each has a deadline), then hangs up. */
  async shutdown(): Promise<void> {
    this.stopped = true;
    this.stop.abort();
    this.stopHeartbeats();
    this.cancelPoll?.();
    await Promise.allSettled([...this.inFlight]);
    this.conn.close();
  }
}

export async function runLightNodes(o: LightNodesOptions): Promise<LightNodesResult> {
  const log = o.log ?? (() => {});
  const tally = new Tally(o.count);
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  let phase: Phase = 'ramp';
  const snapshot = (): LightNodesSnapshot => ({
    phase,
    at: Date.now(),
    connected: tally.connected,
    sessions_lost: tally.all.sessionsLost,
    heartbeats_sent: tally.all.heartbeatsSent,
    heartbeats_answered: tally.all.heartbeatsAnswered,
    heartbeats_failed: tally.all.heartbeatsFailed,
    updates_accepted: tally.updatesAccepted,
  });
  const setPhase = (p: Phase) => {
    phase = p;
    o.onPhase?.(snapshot());
  };
  const started = Date.now();
  const ticker = setInterval(() => o.onTick?.(snapshot()), 1000);
  setPhase('ramp');
  const nodeOptions = { workMs: o.workMs ?? 1000, pollWaitMs: o.pollWaitMs ?? 20_000, log };
  const nodes = Array.from({ length: o.count }, () => new LightNode(o.aggregator, tally, nodeOptions));
  const running = nodes.map((node, i) => node.run(((i + 0.5) * o.rampMs) / o.count));
  const aborted = new Promise<void>((resolve) => {
    if (o.signal?.aborted) resolve();
    o.signal?.addEventListener('abort', () => resolve(), { once: true });
  });
  // The timer is cleared on abort: a pending one would keep the process alive after its work is done.
  const wait = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      void aborted.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });

  await wait(o.rampMs);
  // The ramp's last hellos are still in flight when it ends: the hold starts once every node has joined, or
  // after a grace period, in which case it measures those that made it (and says so in its minimum).
  const graceEnds = Date.now() + (o.settleMs ?? 60_000);
  while (tally.connected < o.count && Date.now() < graceEnds && !o.signal?.aborted) await wait(50);
  // Event-loop delay is reported for the hold window only: the ramp's key generation is not the clients' steady state.
  loopDelay.reset();
  const hold = new Counts();
  tally.hold = hold;
  tally.minConnectedDuringHold = tally.connected;
  const holdStartedAt = Date.now();
  setPhase('hold');
  await wait(o.holdMs);
  tally.hold = undefined;
  const holdEndedAt = Date.now();
  const connectedAtEnd = tally.connected;
  loopDelay.disable();
  setPhase('drain');
  await Promise.all(nodes.map((n) => n.shutdown()));
  await Promise.all(running);
  clearInterval(ticker);
  o.onTick?.(snapshot());
  setPhase('done');
  const ms = (ns: number) => ns / 1e6;
  return {
    aggregator: o.aggregator,
    count: o.count,
    ramp_seconds: o.rampMs / 1000,
    hold_seconds: (holdEndedAt - holdStartedAt) / 1000,
    hold_started_at: holdStartedAt,
    hold_ended_at: holdEndedAt,
    heartbeat_interval_ms: tally.heartbeatIntervalMs,
    connected_at_end: connectedAtEnd,
    min_connected_during_hold: tally.minConnectedDuringHold,
    all_joined_after_seconds: tally.allJoinedAt === undefined ? null : (tally.allJoinedAt - started) / 1000,
    hellos: tally.hellos,
    hello_failures: tally.helloFailures,
    whole_run: countsOut(tally.all),
    hold: countsOut(hold),
    heartbeat_latency_ms: latencySummary(tally.holdLatencies),
    hello_latency_ms: latencySummary(tally.helloLatencies),
    tasks: {
      received: tally.tasksReceived,
      refused: tally.tasksRefused,
      updates_accepted: tally.updatesAccepted,
      updates_refused: tally.updatesRefused,
      not_wanted: tally.notWanted,
    },
    client_event_loop_delay_ms: {
      p50: ms(loopDelay.percentile(50)),
      p99: ms(loopDelay.percentile(99)),
      max: ms(loopDelay.max),
    },
    latency_samples_ms: tally.holdLatencies.map((x) => Math.round(x * 100) / 100),
  };
}

/** Messages a forked light-nodes process sends its parent. */
export type LightNodesMessage =
  | { kind: 'phase'; phase: Phase; snapshot: LightNodesSnapshot }
  | { kind: 'tick'; snapshot: LightNodesSnapshot };

/** With --until-stopped, the parent ends the hold by sending this. */
export interface StopMessage {
  kind: 'stop';
}

const USAGE =
  'usage: node dist/bench/light-nodes.js --aggregator HOST:PORT [--count 500] [--seconds 120] ' +
  '[--ramp-seconds 10] [--settle-seconds 60] [--work-ms 1000] [--until-stopped] --out FILE.json';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      aggregator: { type: 'string' },
      count: { type: 'string', default: '500' },
      seconds: { type: 'string', default: '120' },
      'ramp-seconds': { type: 'string', default: '10' },
      'work-ms': { type: 'string', default: '1000' },
      'settle-seconds': { type: 'string', default: '60' },
      'until-stopped': { type: 'boolean', default: false },
      out: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const number = (name: string, text: string, min: number) => {
    const n = Number(text);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number ≥ ${min}, got ${JSON.stringify(text)}\n${USAGE}`);
    return n;
  };
  if (!values.aggregator || !values.out) throw new Error(USAGE);
  const count = number('count', values.count, 1);
  // --seconds still bounds the hold under --until-stopped, in case the stop never comes.
  const holdMs = number('seconds', values.seconds, 0) * 1000 * (values['until-stopped'] ? 2 : 1);
  const rampMs = number('ramp-seconds', values['ramp-seconds'], 0) * 1000;
  const workMs = number('work-ms', values['work-ms'], 0);
  const settleMs = number('settle-seconds', values['settle-seconds'], 0) * 1000;
  const send = (m: LightNodesMessage) => process.send?.(m);
  // A parent running several of these processes ends their holds together, so its window is inside each one's.
  const stop = new AbortController();
  const onMessage = (m: unknown) => {
    if ((m as Partial<StopMessage> | undefined)?.kind === 'stop') stop.abort();
  };
  const onDisconnect = () => stop.abort();
  const untilStopped = values['until-stopped'];
  if (untilStopped) {
    if (!process.send) throw new Error('--until-stopped needs a parent process with an IPC channel (fork)');
    process.on('message', onMessage);
    process.on('disconnect', onDisconnect);
  }
  const log = (msg: string) => process.stderr.write(`light-nodes[${process.pid}]: ${msg}\n`);
  const started = Date.now();
  let lastLine = 0;
  const result = await runLightNodes({
    aggregator: values.aggregator,
    count,
    rampMs,
    holdMs,
    workMs,
    settleMs,
    log,
    signal: stop.signal,
    onPhase: (snapshot) => send({ kind: 'phase', phase: snapshot.phase, snapshot }),
    onTick: (s) => {
      send({ kind: 'tick', snapshot: s });
      // Under a parent the parent reports progress; alone, a line every 10 s says this is alive.
      if (!process.send && s.at - lastLine >= 10_000) {
        lastLine = s.at;
        log(
          `${Math.round((s.at - started) / 1000)} s (${s.phase}): ${s.connected}/${count} connected, ${s.sessions_lost} sessions lost, ` +
            `heartbeats ${s.heartbeats_answered} answered / ${s.heartbeats_failed} failed, ${s.updates_accepted} updates accepted`,
        );
      }
    },
  });
  // Without listeners the IPC channel no longer keeps this process alive.
  process.off('message', onMessage);
  process.off('disconnect', onDisconnect);
  writeFileSync(values.out, JSON.stringify(result) + '\n');
  const hb = result.heartbeat_latency_ms;
  log(
    `done: ${result.connected_at_end}/${count} connected at the end (min ${result.min_connected_during_hold} during the hold), ` +
      `${result.hold.sessions_lost} sessions lost during the hold (${result.whole_run.sessions_lost} in all), heartbeat p50 ${hb.p50.toFixed(1)} ms p99 ${hb.p99.toFixed(1)} ms max ${hb.max.toFixed(1)} ms; ` +
      `results in ${values.out}`,
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    process.stderr.write(`light-nodes: ${(err as Error).message ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
