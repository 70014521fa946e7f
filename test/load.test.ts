// The short form of the load test (`npm run bench:load` is the long one): a
// real aggregator process holds 200 light nodes, each on its own TCP
// connection, heartbeating; none loses its session, every heartbeat is
// answered, and a newcomer's hello is still answered promptly.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { establishedConnections, runLightNodes } from '../bench/light-nodes.js';
import { freePort, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { joinAs } from './support/grpc.js';

const NODES = 200;

const until = async (what: string, check: () => boolean, timeoutMs: number) => {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

test('one aggregator process holds 200 light nodes with heartbeats and still answers a fresh hello promptly', async (t) => {
  // Rounds keep running through the test; over-selection lets them commit without the probe, which never polls.
  const experiment = tinyExperiment({
    nodes: 20,
    rounds: 100_000,
    selection: { nodes_per_round: 10, min_updates: 5, deadline_seconds: 10, over_selection: 1.25 },
  });
  const dir = tempDir('load');
  const file = join(dir, 'load.json');
  writeFileSync(file, JSON.stringify(experiment));
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const aggregator = spawnCli(['aggregator', '--experiment', file, '--run-id', 'load', '--runs-dir', dir, '--port', String(port), '--key', join(dir, 'agg-key.json')]);
  try {
    await until('the aggregator to listen', () => /listening on/.test(aggregator.output()), 60_000);
    let probe: Promise<number> | undefined;
    let sockets = 0;
    const result = await runLightNodes({
      aggregator: address,
      count: NODES,
      rampMs: 5000,
      holdMs: 10_000,
      // Joining is slow when other tests load the cores too (20 s seen beside two simulations); the hold waits for it.
      settleMs: 40_000,
      workMs: 500,
      onPhase: (s) => {
        if (s.phase !== 'hold') return;
        sockets = establishedConnections(port);
        probe = (async () => {
          await new Promise((r) => setTimeout(r, 3000));
          const t0 = performance.now();
          const { conn } = await joinAs(address);
          const ms = performance.now() - t0;
          conn.close();
          return ms;
        })();
      },
    });
    const probeMs = await probe!;
    const lost = result.whole_run.sessions_lost_by_cause;
    t.log(
      `${NODES} nodes: joined after ${result.all_joined_after_seconds} s (${result.hello_failures} hellos retried); ` +
        `heartbeats ${result.hold.heartbeats.answered}/${result.hold.heartbeats.sent}, p50 ${result.heartbeat_latency_ms.p50.toFixed(1)} ms ` +
        `p99 ${result.heartbeat_latency_ms.p99.toFixed(1)} ms max ${result.heartbeat_latency_ms.max.toFixed(1)} ms; ` +
        `${result.tasks.updates_accepted} updates accepted; fresh hello ${probeMs.toFixed(0)} ms; ${sockets} TCP connections`,
    );
    t.not(result.all_joined_after_seconds, null, `every node joined within the settle time (${result.hello_failures} hellos failed)`);
    // Each node has its own connection (grpc-js would otherwise share one per process).
    t.true(sockets >= NODES, `${sockets} TCP connections for ${NODES} nodes`);
    t.is(result.min_connected_during_hold, NODES);
    t.is(result.connected_at_end, NODES);
    t.is(result.whole_run.sessions_lost, 0, `sessions lost: ${JSON.stringify(lost)}`);
    const beats = result.hold.heartbeats;
    // A 5 s interval over a 10 s hold: every node beats at least once.
    t.true(beats.sent >= NODES, `${beats.sent} heartbeats sent`);
    t.is(beats.failed, 0, JSON.stringify(result.hold.errors_by_status));
    t.is(beats.answered, beats.sent);
    // Bounds are loose on purpose: two busy cores run this beside other tests; a lease is 20 s.
    t.true(result.heartbeat_latency_ms.p99 < 3000, `heartbeat p99 ${result.heartbeat_latency_ms.p99} ms`);
    t.true(probeMs < 5000, `a fresh hello took ${probeMs} ms`);
    // The aggregator kept running rounds, answered by the nodes' signed zero updates.
    t.true(result.tasks.updates_accepted > 0);
    t.is(result.tasks.refused, 0, 'every task verified under the pinned aggregator key');
  } finally {
    if (aggregator.exitCode === null && aggregator.signalCode === null) {
      const exited = new Promise((r) => aggregator.once('exit', r));
      aggregator.kill('SIGINT');
      // Cleared once it exits: a pending timer would hold the test worker open for its full length.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 10_000)))]);
      clearTimeout(timer);
      if (aggregator.exitCode === null && aggregator.signalCode === null) aggregator.kill('SIGKILL');
    }
  }
});
