// `npm run bench:faults`' connection flood: a real aggregator process with one honest node training a
// tiny model round after round, measured without load, then while flooding processes try to hold
// 20,000 silent connections from 127.0.0.2 and 20,000 from 200 addresses (127.0.1.1 … 127.0.1.200),
// then after. Rounds per minute, abandoned rounds and the aggregator's RSS in each phase.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tinyExperiment } from '../test/support/fixtures.js';
import { freePort, runCli, spawnCli } from '../test/support/cli.js';

export interface FloodOptions {
  baselineSeconds: number;
  floodSeconds: number;
  afterSeconds: number;
  /** Connections each of the two floods tries to hold. */
  connections: number;
  /** How long a flooding slot waits before opening a new connection after one was closed. */
  reopenMs: number;
  /**
   * Pin the aggregator and the honest node to CPU `serve` and the flooding processes to CPU `flood`
   * (Linux taskset), so that what is measured is the aggregator's cost of turning connections away,
   * not the flooders' own CPU: on a real deployment they run elsewhere.
   */
  pin?: { serve: number; flood: number };
  log: (msg: string) => void;
}

export interface PhaseFigures {
  seconds: number;
  roundsPerMinute: number;
  abandoned: number;
  rssMiB: { first: number; max: number; last: number };
}

export interface FloodFigures {
  baseline: PhaseFigures;
  /**
   * The control: a process spinning where the flooders will run (their CPU with --pin), no flood. On
   * this VM two vCPUs share hardware, so a busy neighbour alone slows the aggregator and node; the
   * flood's own cost is the flood phase against this one.
   */
  neighbour: PhaseFigures;
  flood: PhaseFigures;
  after: PhaseFigures;
  /** Connections the aggregator closed (refused on arrival, evicted, or at their hello timeout) per second of flood. */
  turnedAwayPerSecond: number;
  refused: number;
  timedOut: number;
  /** Unproven connections closed to make room for a newcomer from an address holding fewer. */
  evicted: number;
  /** Times the listener closed to shed the flood, and the seconds it stayed closed. */
  sheds: number;
  shedSeconds: number;
  maxUnprovenSeen: number;
}

const WORKER = fileURLToPath(new URL('./flood-worker.js', import.meta.url));
const metric = (text: string, line: RegExp) => Number(line.exec(text)?.[1] ?? NaN);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? NaN) / 1024;
}

export async function floodScenario(o: FloodOptions): Promise<FloodFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'crowdfl-flood-'));
  const file = join(dir, 'endless.json');
  // 200 local epochs, so that a round takes a good part of a second: at ~20 rounds a second (2 epochs) the
  // aggregator's memory grew with the rounds themselves (~25 MiB a minute), which would hide the flood's.
  const experiment = tinyExperiment({
    name: 'endless',
    nodes: 1,
    rounds: 100_000,
    selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 60 },
    training: { epochs: 200, batch_size: 16, learning_rate: 0.1 },
  });
  writeFileSync(file, JSON.stringify(experiment));
  const prepared = await runCli(['data', 'prepare', '--experiment', file, '--out', join(dir, 'parts')]);
  if (prepared.code !== 0) throw new Error(prepared.stderr);
  const [port, metricsPort] = [await freePort(), await freePort()];
  const aggregator = spawnCli(['aggregator', '--experiment', file, '--port', String(port), '--metrics-port', String(metricsPort), '--runs-dir', join(dir, 'runs'), '--run-id', 'flood', '--key', join(dir, 'key.json')]);
  const node = spawnCli(['node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, 'parts', 'node-000'), '--state-dir', join(dir, 'state')]);
  const workers: ChildProcess[] = [];
  if (o.pin) for (const pid of [aggregator.pid!, node.pid!]) execFileSync('taskset', ['-a', '-cp', String(o.pin.serve), String(pid)], { stdio: 'ignore' });
  const flooder = (args: string[]) =>
    o.pin ? spawn('taskset', ['-c', String(o.pin.flood), process.execPath, WORKER, ...args], { stdio: 'ignore' }) : spawn(process.execPath, [WORKER, ...args], { stdio: 'ignore' });
  const scrape = () => fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text(), () => '');
  try {
    let text = '';
    while (!((metric((text = await scrape()), /^crowdfl_aggregator_rounds_total\{outcome="committed"\} (\d+)$/m) || 0) >= 3)) await sleep(500);
    let maxUnproven = 0;
    const phase = async (name: string, seconds: number): Promise<PhaseFigures> => {
      const start = await scrape();
      const t0 = Date.now();
      const rss: number[] = [rssMiB(aggregator.pid!)];
      while (Date.now() - t0 < seconds * 1000) {
        await sleep(1000);
        rss.push(rssMiB(aggregator.pid!));
        const now = await scrape();
        maxUnproven = Math.max(maxUnproven, metric(now, /^crowdfl_aggregator_connections\{state="unproven"\} (\d+)$/m) || 0);
        if ((Date.now() - t0) % 30_000 < 1000) {
          o.log(`${new Date().toISOString().slice(11, 19)} ${name}: ${metric(now, /^crowdfl_aggregator_rounds_total\{outcome="committed"\} (\d+)$/m)} rounds committed, RSS ${rss.at(-1)!.toFixed(0)} MiB`);
        }
      }
      const end = await scrape();
      const committed = (t: string) => metric(t, /^crowdfl_aggregator_rounds_total\{outcome="committed"\} (\d+)$/m);
      const abandoned = (t: string) => metric(t, /^crowdfl_aggregator_rounds_total\{outcome="abandoned"\} (\d+)$/m);
      const elapsed = (Date.now() - t0) / 1000;
      return {
        seconds: elapsed,
        roundsPerMinute: ((committed(end) - committed(start)) * 60) / elapsed,
        abandoned: abandoned(end) - abandoned(start),
        rssMiB: { first: rss[0]!, max: Math.max(...rss), last: rss.at(-1)! },
      };
    };
    o.log(`baseline: ${o.baselineSeconds} s without load`);
    const baseline = await phase('baseline', o.baselineSeconds);
    o.log(`busy neighbour: ${o.baselineSeconds} s with a process spinning${o.pin ? ` on CPU ${o.pin.flood}` : ''}, no flood`);
    const spinner = o.pin
      ? spawn('taskset', ['-c', String(o.pin.flood), process.execPath, '-e', 'for (;;) {}'], { stdio: 'ignore' })
      : spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
    workers.push(spinner);
    const neighbour = await phase('busy neighbour', o.baselineSeconds);
    spinner.kill('SIGKILL');
    const before = await scrape();
    // Each flood in 4 processes, so that no flooding process runs out of descriptors.
    const perWorker = Math.ceil(o.connections / 4);
    const many = Array.from({ length: 200 }, (_, i) => `127.0.1.${i + 1}`);
    for (let w = 0; w < 4; w++) {
      workers.push(flooder([String(port), String(perWorker), '127.0.0.2', String(o.reopenMs)]));
      workers.push(flooder([String(port), String(perWorker), many.slice(w * 50, w * 50 + 50).join(','), String(o.reopenMs)]));
    }
    o.log(`flood: ${o.connections} silent connections from 127.0.0.2 and ${o.connections} from 200 addresses, for ${o.floodSeconds} s`);
    const flood = await phase('flood', o.floodSeconds);
    for (const w of workers) w.kill('SIGTERM');
    const during = await scrape();
    const refusedTotal = (t: string) =>
      [...t.matchAll(/^crowdfl_aggregator_connections_refused_total\{reason="[^"]+"\} (\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
    const timedOut = (t: string) => metric(t, /^crowdfl_aggregator_connections_timed_out_total (\d+)$/m);
    const evicted = (t: string) => metric(t, /^crowdfl_aggregator_connections_evicted_total (\d+)$/m);
    const turnedAway =
      refusedTotal(during) - refusedTotal(before) + timedOut(during) - timedOut(before) + evicted(during) - evicted(before);
    o.log(`after: ${o.afterSeconds} s with the flood stopped`);
    const after = await phase('after', o.afterSeconds);
    return {
      baseline,
      neighbour,
      flood,
      after,
      turnedAwayPerSecond: turnedAway / flood.seconds,
      refused: refusedTotal(during) - refusedTotal(before),
      timedOut: timedOut(during) - timedOut(before),
      evicted: evicted(during) - evicted(before),
      sheds: metric(during, /^crowdfl_aggregator_listener_sheds_total (\d+)$/m) - metric(before, /^crowdfl_aggregator_listener_sheds_total (\d+)$/m),
      shedSeconds:
        metric(during, /^crowdfl_aggregator_listener_shed_seconds_total ([\d.]+)$/m) - metric(before, /^crowdfl_aggregator_listener_shed_seconds_total ([\d.]+)$/m),
      maxUnprovenSeen: maxUnproven,
    };
  } finally {
    for (const w of workers) w.kill('SIGKILL');
    node.kill('SIGKILL');
    aggregator.kill('SIGKILL');
  }
}
