// `npm run bench:load [-- --nodes 1000 --seconds 120]`: one real aggregator
// process holds N light nodes (bench/light-nodes.ts, in client processes
// of 500), each on its own TCP connection, heartbeating for the hold window.
// Samples the aggregator's CPU and RSS from /proc every second and prints the
// figures next to the issue's target ("1,000 concurrently connected nodes with
// heartbeats for 2 minutes"). Results go to runs/bench-load.json; the
// aggregator's run (database, checkpoints, log) to runs/bench-load/<stamp>/.
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { and, count, gte, lte } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import * as schema from '../aggregator/store/schema.js';
import { generateIdentity, nodeIdFromPublicKey } from '../core/signing/keys.js';
import { SOFTWARE } from '../core/version.js';
import { AggregatorConnection } from '../trainer/client.js';
import { establishedConnections, latencySummary, rssMb, type LatencySummary, type LightNodesMessage, type LightNodesResult, type LightNodesSnapshot, type StopMessage, type WindowCounts } from './light-nodes.js';

const CLI = fileURLToPath(new URL('../cli/index.js', import.meta.url));
const LIGHT_NODES = fileURLToPath(new URL('./light-nodes.js', import.meta.url));
const NODES_PER_PROCESS = 500;
const RUN_ID = 'load';

// Rounds must keep running through the hold, so there are far more than it can
// finish. Over-selection lets a round commit without the few nodes that never
// answer (the bench's own hello probes, which join and leave).
const EXPERIMENT = {
  name: 'bench-load',
  description: 'npm run bench:load: light nodes answer every task with a signed update of zeros; the point is holding connections',
  seed: 7,
  dataset: { name: 'synthetic', alpha: 0, beta: 0, dimensions: 60, classes: 10 },
  model: 'logreg',
  nodes: 20,
  rounds: 100_000,
  selection: { nodes_per_round: 20, min_updates: 10, deadline_seconds: 10, over_selection: 1.25 },
  training: { epochs: 1, batch_size: 16, learning_rate: 0.1 },
};

const log = (msg: string) => process.stderr.write(`${msg}\n`);

function options() {
  const { values } = parseArgs({
    options: {
      nodes: { type: 'string', default: '1000' },
      seconds: { type: 'string', default: '120' },
      'ramp-seconds': { type: 'string', default: '10' },
      'work-ms': { type: 'string', default: '1000' },
    },
    strict: true,
  });
  const positive = (name: string, text: string) => {
    const n = Number(text);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${JSON.stringify(text)}`);
    return n;
  };
  return {
    nodes: Math.round(positive('nodes', values.nodes)),
    seconds: positive('seconds', values.seconds),
    rampSeconds: positive('ramp-seconds', values['ramp-seconds']),
    workMs: positive('work-ms', values['work-ms']),
  };
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

function machineCpu(): { machineBusy: number; machineTotal: number } {
  // First line of /proc/stat: user nice system idle iowait irq softirq steal ...; idle and iowait are not busy.
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3]! + fields[4]!;
  return { machineBusy: (total - idle) / CLK_TCK, machineTotal: total / CLK_TCK };
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === 'object' && address ? address.port : 0));
    });
    server.on('error', reject);
  });
}

interface Sample {
  at: number;
  /** Busy and total CPU time of the whole machine (all cores), in seconds: other work on it shows here. */
  machineBusy: number;
  machineTotal: number;
  aggregatorCpu: number;
  aggregatorRss: number;
  clientsCpu: number;
  sockets: number;
  /** Sum of the client processes' latest counts; undefined until each has reported. */
  connected: number | undefined;
}

interface ClientProcess {
  child: ChildProcess;
  out: string;
  latest?: LightNodesSnapshot;
  holdAt?: number;
  exited: Promise<number | null>;
}

function waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  return new Promise((resolveWait, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (predicate()) {
        clearInterval(timer);
        resolveWait();
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(timer);
        reject(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`));
      }
    }, 100);
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const o = options();
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const benchDir = resolve('runs', 'bench-load', stamp);
  mkdirSync(benchDir, { recursive: true });
  const experimentFile = join(benchDir, 'experiment.json');
  writeFileSync(experimentFile, JSON.stringify(EXPERIMENT, null, 2) + '\n');
  const port = await freePort();
  const address = `127.0.0.1:${port}`;

  log(`bench:load: ${o.nodes} light nodes for ${o.seconds} s against one aggregator on ${address}; run in ${benchDir}`);
  const aggregatorLog = createWriteStream(join(benchDir, 'aggregator.log'));
  const aggregator = spawn(
    process.execPath,
    [CLI, 'aggregator', '--experiment', experimentFile, '--run-id', RUN_ID, '--runs-dir', benchDir, '--port', String(port), '--key', join(benchDir, 'agg-key.json')],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const aggregatorExited = new Promise<number | null>((r) => aggregator.on('exit', (code) => r(code)));
  let listening = false;
  let roundsCommitted = 0;
  const aggregatorTail: string[] = [];
  for (const stream of [aggregator.stdout, aggregator.stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      aggregatorLog.write(line + '\n');
      if (/listening on/.test(line)) listening = true;
      if (/\] round +\d+\//.test(line)) roundsCommitted++;
      aggregatorTail.push(line);
      if (aggregatorTail.length > 20) aggregatorTail.shift();
    });
  }
  const aggregatorPid = aggregator.pid!;
  const clients: ClientProcess[] = [];
  try {
    await Promise.race([
      waitFor(() => listening, 120_000, 'the aggregator to listen'),
      aggregatorExited.then((code) => {
        throw new Error(`the aggregator exited (code ${code}) before listening:\n${aggregatorTail.join('\n')}`);
      }),
    ]);
    // Settled after start-up (backend, test data), before any node: what the connections add is measured against it.
    await sleep(1000);
    const rssBefore = rssMb(aggregatorPid) ?? NaN;

    const processes = Math.ceil(o.nodes / NODES_PER_PROCESS);
    for (let i = 0; i < processes; i++) {
      const share = Math.floor(o.nodes / processes) + (i < o.nodes % processes ? 1 : 0);
      const out = join(benchDir, `light-nodes-${i}.json`);
      const child = fork(
        LIGHT_NODES,
        ['--aggregator', address, '--count', String(share), '--seconds', String(o.seconds), '--ramp-seconds', String(o.rampSeconds), '--work-ms', String(o.workMs), '--until-stopped', '--out', out],
        { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], execArgv: [] },
      );
      const childLog = createWriteStream(join(benchDir, `light-nodes-${i}.log`));
      child.stdout!.pipe(childLog);
      child.stderr!.pipe(childLog);
      const c: ClientProcess = { child, out, exited: new Promise((r) => child.on('exit', (code) => r(code))) };
      child.on('message', (raw) => {
        const m = raw as LightNodesMessage;
        c.latest = m.snapshot;
        if (m.kind === 'phase' && m.phase === 'hold') c.holdAt = m.snapshot.at;
      });
      clients.push(c);
    }
    log(`started ${processes} client processes (${clients.map((c) => c.child.pid).join(', ')}); ramping up over ${o.rampSeconds} s`);

    const samples: Sample[] = [];
    const sample = () => {
      const connected = clients.every((c) => c.latest) ? clients.reduce((sum, c) => sum + c.latest!.connected, 0) : undefined;
      samples.push({
        at: Date.now(),
        ...machineCpu(),
        aggregatorCpu: cpuSeconds(aggregatorPid) ?? NaN,
        aggregatorRss: rssMb(aggregatorPid) ?? NaN,
        clientsCpu: clients.reduce((sum, c) => sum + (cpuSeconds(c.child.pid!) ?? 0), 0),
        sockets: establishedConnections(port),
        connected,
      });
    };
    const benchStarted = Date.now();
    sample();
    const sampler = setInterval(sample, 1000);
    let lastProgress = 0;
    const progress = setInterval(() => {
      const s = samples.at(-1);
      if (!s || s.at - lastProgress < 9500) return;
      lastProgress = s.at;
      const prev = samples.find((p) => p.at >= s.at - 10_500) ?? samples[0]!;
      const cpu = (100 * (s.aggregatorCpu - prev.aggregatorCpu)) / Math.max(0.001, (s.at - prev.at) / 1000);
      const hb = clients.reduce((a, c) => [a[0]! + (c.latest?.heartbeats_answered ?? 0), a[1]! + (c.latest?.heartbeats_failed ?? 0)], [0, 0]);
      const phase = clients.every((c) => c.holdAt) ? 'hold' : 'joining';
      log(
        `[${String(Math.round((s.at - benchStarted) / 1000)).padStart(4)} s] ${phase}: ${s.connected ?? 0}/${o.nodes} connected, ` +
          `${s.sockets} TCP connections, heartbeats ${hb[0]} answered / ${hb[1]} failed, aggregator CPU ${cpu.toFixed(0)}% RSS ${s.aggregatorRss.toFixed(0)} MB, ` +
          `${roundsCommitted} rounds committed`,
      );
    }, 500);

    let stopping = false;
    const exitedEarly = new Promise<never>((_, reject) =>
      clients.forEach((c, i) =>
        c.exited.then((code) => {
          if (!stopping) reject(new Error(`client process ${i} exited (code ${code}) before the hold ended; see ${join(benchDir, `light-nodes-${i}.log`)}`));
        }),
      ),
    );
    // Every process has ramped and settled; the window starts now and ends, for all of them at once, o.seconds later.
    await Promise.race([waitFor(() => clients.every((c) => c.holdAt !== undefined), (o.rampSeconds + 90) * 1000, 'the clients to finish joining'), exitedEarly]);
    const windowStart = Date.now();
    sample();
    log(`hold window started: ${samples.at(-1)!.connected}/${o.nodes} connected`);

    // A node joining now must still be answered promptly: one fresh hello, as a real node says it, every 10 s.
    const probes: number[] = [];
    const probeErrors: string[] = [];
    const probing = (async () => {
      while (Date.now() - windowStart < o.seconds * 1000 - 10_000) {
        await sleep(10_000);
        if (stopping) break;
        const identity = generateIdentity();
        const conn = new AggregatorConnection(address);
        const t0 = performance.now();
        try {
          await conn.hello(identity, nodeIdFromPublicKey(identity.publicKey), { backends: ['none'], cores: 1, memory_bytes: 0, num_examples: 1, feature_shape: [], num_classes: 0 }, `${SOFTWARE} load-probe`);
          probes.push(performance.now() - t0);
        } catch (err) {
          probeErrors.push((err as Error).message);
        } finally {
          conn.close();
        }
      }
    })();
    await Promise.race([sleep(o.seconds * 1000 - (Date.now() - windowStart)), exitedEarly]);
    sample();
    const windowEnd = Date.now();
    stopping = true;
    for (const c of clients) c.child.send({ kind: 'stop' } satisfies StopMessage);
    await probing;
    clearInterval(sampler);
    clearInterval(progress);
    log('hold window ended; clients are hanging up');
    const codes = await Promise.all(clients.map((c) => c.exited));
    if (codes.some((code) => code !== 0)) throw new Error(`client processes exited with codes ${codes.join(', ')}; see their logs in ${benchDir}`);
    const results = clients.map((c) => JSON.parse(readFileSync(c.out, 'utf8')) as LightNodesResult);

    aggregator.kill('SIGINT');
    let timer: NodeJS.Timeout | undefined;
    const stopped = await Promise.race([aggregatorExited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 30_000)))]);
    clearTimeout(timer);
    if (stopped === 'timeout') {
      aggregator.kill('SIGKILL');
      log('the aggregator did not stop within 30 s of SIGINT; killed');
    }
    const rounds = roundsBetween(join(benchDir, RUN_ID, 'crowdfl.db'), windowStart, windowEnd);

    const inWindow = samples.filter((s) => s.at >= windowStart && s.at <= windowEnd);
    const first = inWindow[0]!;
    const last = inWindow.at(-1)!;
    const seconds = (last.at - first.at) / 1000;
    const cpuPercent = (100 * (last.aggregatorCpu - first.aggregatorCpu)) / seconds;
    const perSecond = inWindow.slice(1).map((s, i) => (100 * (s.aggregatorCpu - inWindow[i]!.aggregatorCpu)) / ((s.at - inWindow[i]!.at) / 1000));
    const clientsCpuPercent = (100 * (last.clientsCpu - first.clientsCpu)) / seconds;
    const machineBusyPercent = (100 * (last.machineBusy - first.machineBusy)) / seconds;
    const othersPercent = machineBusyPercent - cpuPercent - clientsCpuPercent;
    const connectedCounts = inWindow.map((s) => s.connected ?? 0);
    // Each process counts its own minimum exactly (at every session lost); their sum bounds the total from below,
    // and catches a dip shorter than the 1 s sampling.
    const minConnected = Math.min(...connectedCounts, results.reduce((n, r) => n + r.min_connected_during_hold, 0));
    const sockets = inWindow.map((s) => s.sockets);
    const hold = merge(results.map((r) => r.hold));
    const wholeRun = merge(results.map((r) => r.whole_run));
    const latency = latencySummary(results.flatMap((r) => r.latency_samples_ms));
    const hello = latencySummary(probes);
    const helloFailures = results.reduce((n, r) => n + r.hello_failures, 0);
    const joinedAfter = results.some((r) => r.all_joined_after_seconds === null) ? null : Math.max(...results.map((r) => r.all_joined_after_seconds!));
    const held = minConnected >= o.nodes && hold.sessions_lost === 0 && windowEnd - windowStart >= o.seconds * 1000;
    const heartbeats = hold.heartbeats;
    const allAnswered = heartbeats.failed === 0 && heartbeats.answered === heartbeats.sent && heartbeats.sent > 0;
    const errorList = (errors: Record<string, number>) =>
      Object.keys(errors).length ? Object.entries(errors).map(([k, v]) => `${k} ${v}`).join(', ') : 'none';
    const ms = (x: number) => (Number.isFinite(x) ? `${x.toFixed(1)} ms` : 'n/a');
    const lat = (l: LatencySummary) => `${ms(l.p50)} / ${ms(l.p99)} / ${ms(l.max)}`;
    const fmt = (n: number) => n.toLocaleString('en-US');
    const row = (figure: string, measured: string, target = '') => `  ${figure.padEnd(50)} ${measured.padEnd(34)} ${target}`;
    const table = [
      `bench:load — ${fmt(o.nodes)} light nodes in ${results.length} processes, each node on its own TCP connection, one aggregator process`,
      `hold window ${((windowEnd - windowStart) / 1000).toFixed(1)} s after a ${o.rampSeconds} s ramp; heartbeat every ${results[0]!.heartbeat_interval_ms / 1000} s; ` +
        `${cpus().length} cores shared by the aggregator and the client processes`,
      row('figure', 'measured', 'target'),
      row('joining: every node had a session after', joinedAfter === null ? 'never' : `${joinedAfter.toFixed(1)} s`, `(ramp ${o.rampSeconds} s; ${fmt(helloFailures)} hellos failed and were retried)`),
      row('nodes connected (min over the hold)', `${fmt(minConnected)} / ${fmt(o.nodes)}`, `${fmt(o.nodes)} nodes held for ${o.seconds} s: ${held ? 'MET' : 'MISSED'}`),
      row('sessions lost during the hold (whole run)', `${hold.sessions_lost} (${wholeRun.sessions_lost})`),
      row('TCP connections at the aggregator (min/max)', `${fmt(Math.min(...sockets))} / ${fmt(Math.max(...sockets))}`),
      row('heartbeats of the hold answered / sent', `${fmt(heartbeats.answered)} / ${fmt(heartbeats.sent)} (${heartbeats.failed} failed)`, `every heartbeat answered: ${allAnswered ? 'MET' : 'MISSED'}`),
      row('heartbeat latency p50 / p99 / max', lat(latency), `(${fmt(latency.count)} heartbeats of the hold)`),
      row(`fresh Hello while loaded (${hello.count} probes) p50 / max`, `${ms(hello.p50)} / ${ms(hello.max)}`, probeErrors.length ? `${probeErrors.length} failed: ${probeErrors[0]}` : ''),
      row('aggregator CPU, mean over the hold', `${cpuPercent.toFixed(1)}% of one core`, `(busiest second ${Math.max(...perSecond).toFixed(0)}%)`),
      row('aggregator RSS max / at the end', `${Math.max(...inWindow.map((s) => s.aggregatorRss)).toFixed(0)} / ${last.aggregatorRss.toFixed(0)} MB`, `(${rssBefore.toFixed(0)} MB before any node)`),
      row('rounds during the hold', `${rounds.committed} committed, ${rounds.abandoned} abandoned`),
      row('client processes: CPU / event-loop delay p99', `${clientsCpuPercent.toFixed(1)}% of one core / ${Math.max(...results.map((r) => r.client_event_loop_delay_ms.p99)).toFixed(1)} ms`, '(worst process; part of every latency above)'),
      row('machine CPU: all processes / not this bench', `${machineBusyPercent.toFixed(0)}% / ${Math.max(0, othersPercent).toFixed(0)}% of one core`, `(of ${cpus().length * 100}%)`),
      row('failed calls during the hold', errorList(hold.errors_by_status)),
      row('failed calls in the whole run', errorList(wholeRun.errors_by_status)),
    ].join('\n');
    process.stdout.write(`\n${table}\n`);
    const report = {
      options: o,
      experiment: EXPERIMENT,
      run_dir: benchDir,
      window: { start: windowStart, end: windowEnd, seconds: (windowEnd - windowStart) / 1000 },
      held,
      all_heartbeats_answered: allAnswered,
      min_connected: minConnected,
      all_joined_after_seconds: joinedAfter,
      hello_failures: helloFailures,
      hold,
      whole_run: wholeRun,
      tcp_connections: { min: Math.min(...sockets), max: Math.max(...sockets) },
      heartbeat_latency_ms: latency,
      hello_probe_ms: { ...hello, errors: probeErrors },
      aggregator: {
        cpu_percent_of_one_core: cpuPercent,
        cpu_percent_busiest_second: Math.max(...perSecond),
        rss_mb_before_nodes: rssBefore,
        rss_mb_max: Math.max(...inWindow.map((s) => s.aggregatorRss)),
        rss_mb_end: last.aggregatorRss,
      },
      rounds,
      clients_cpu_percent_of_one_core: clientsCpuPercent,
      machine_cpu_percent_of_one_core: { all: machineBusyPercent, other_processes: othersPercent },
      client_results: results.map(({ latency_samples_ms: _samples, ...rest }) => rest),
      samples,
      table,
    };
    writeFileSync(resolve('runs', 'bench-load.json'), JSON.stringify(report, null, 2) + '\n');
    log(`results in runs/bench-load.json; aggregator log, database and client logs in ${benchDir}`);
    process.exitCode = held && allAnswered ? 0 : 1;
  } finally {
    for (const c of clients) if (c.child.exitCode === null) c.child.kill('SIGKILL');
    if (aggregator.exitCode === null && aggregator.signalCode === null) aggregator.kill('SIGKILL');
    aggregatorLog.end();
  }
}

function merge(parts: readonly WindowCounts[]): WindowCounts {
  const sum = (into: Record<string, number>, from: Record<string, number>) => {
    for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
    return into;
  };
  return parts.reduce<WindowCounts>(
    (a, p) => ({
      sessions_lost: a.sessions_lost + p.sessions_lost,
      sessions_lost_by_cause: sum(a.sessions_lost_by_cause, p.sessions_lost_by_cause),
      heartbeats: {
        sent: a.heartbeats.sent + p.heartbeats.sent,
        answered: a.heartbeats.answered + p.heartbeats.answered,
        failed: a.heartbeats.failed + p.heartbeats.failed,
      },
      errors_by_status: sum(a.errors_by_status, p.errors_by_status),
    }),
    { sessions_lost: 0, sessions_lost_by_cause: {}, heartbeats: { sent: 0, answered: 0, failed: 0 }, errors_by_status: {} },
  );
}

/** Rounds that closed inside the window, from the aggregator's own record. */
function roundsBetween(databasePath: string, from: number, to: number): { committed: number; abandoned: number } {
  const sqlite = new Database(databasePath, { readonly: true });
  try {
    const db = drizzle(sqlite, { schema });
    const rows = db
      .select({ status: schema.rounds.status, n: count() })
      .from(schema.rounds)
      .where(and(gte(schema.rounds.closedAt, from), lte(schema.rounds.closedAt, to)))
      .groupBy(schema.rounds.status)
      .all();
    return {
      committed: rows.find((r) => r.status === 'committed')?.n ?? 0,
      abandoned: rows.find((r) => r.status === 'abandoned')?.n ?? 0,
    };
  } finally {
    sqlite.close();
  }
}

await main();
