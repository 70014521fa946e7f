// A flood of connections that never say hello, against a real aggregator process: the ones over the
// bounds are closed on arrival, the rest at their hello timeout, /metrics says so, and an honest node
// from another address trains every round while the aggregator is flooded again.
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import test from 'ava';
import { openDatabaseReadOnly } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { freePort, spawnCli } from './support/cli.js';
import { joinAs, nextTask, submitSmallUpdate } from './support/grpc.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

function metric(text: string, line: RegExp): number | undefined {
  const m = line.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Resolves once `n` of the connections have closed. */
function closes(connections: readonly { closed: Promise<void> }[], n: number): Promise<void> {
  return new Promise((resolve) => {
    let count = 0;
    if (n === 0) resolve();
    for (const c of connections) void c.closed.then(() => ++count === n && resolve());
  });
}

/** A TCP connection from `localAddress` that sends nothing, and a promise of its close. */
function silent(port: number, localAddress: string): { socket: Socket; closed: Promise<void> } {
  const socket = connect({ port, host: '127.0.0.1', localAddress });
  socket.on('error', () => {});
  // Reading (and dropping) what the server sends, so that its close is seen.
  socket.resume();
  return { socket, closed: new Promise((r) => socket.once('close', () => r())) };
}

test('connections that never say hello are bounded and timed out while an honest node trains every round', async (t) => {
  const dir = tempDir('flood');
  const file = join(dir, 'one.json');
  writeFileSync(file, JSON.stringify(tinyExperiment({ nodes: 1, rounds: 3, selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 60 } })));
  const [port, metricsPort] = [await freePort(), await freePort()];
  const aggregator = spawnCli([
    'aggregator', '--experiment', file, '--port', String(port), '--metrics-port', String(metricsPort), '--runs-dir', join(dir, 'runs'),
    '--run-id', 'flood', '--key', join(dir, 'key.json'), '--linger', '0',
    '--max-unproven-per-address', '8', '--max-unproven-connections', '12', '--hello-timeout', '6',
  ]);
  const scrape = () => fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text(), () => '');
  try {
    // The aggregator is up once it says where it listens.
    await new Promise<void>((resolve) => {
      const look = () => (/listening on 127\.0\.0\.1:\d+/.test(aggregator.output()) ? resolve() : undefined);
      aggregator.stderr!.on('data', look);
      look();
    });
    // 40 silent connections from 127.0.0.2: 8 are held, the other 32 closed on arrival. Then 10 from 127.0.0.3:
    // 4 fit under the bound on all unproven connections (12); the 5th and 6th each push out 127.0.0.2's
    // oldest (which holds more), until both hold 6; the other 4 are closed on arrival.
    const fromTwo = Array.from({ length: 40 }, () => silent(port, '127.0.0.2'));
    await closes(fromTwo, 32);
    const fromThree = Array.from({ length: 10 }, () => silent(port, '127.0.0.3'));
    await closes(fromThree, 4);
    await closes(fromTwo, 34);
    const flood = [...fromTwo, ...fromThree];
    let text = await scrape();
    t.is(metric(text, /^crowdfl_aggregator_connections\{state="unproven"\} (\d+)$/m), 12, text);
    t.is(metric(text, /^crowdfl_aggregator_connections_refused_total\{reason="unproven-per-address"\} (\d+)$/m), 32);
    t.is(metric(text, /^crowdfl_aggregator_connections_refused_total\{reason="unproven"\} (\d+)$/m), 4);
    t.is(metric(text, /^crowdfl_aggregator_connections_evicted_total (\d+)$/m), 2);
    // None of them sent a byte, so none was handed to gRPC.
    t.is(metric(text, /^crowdfl_aggregator_connections_silent (\d+)$/m), 12);
    // The 12 held ones are closed at their hello timeout. A client can see its close before the server has
    // counted it, so the figures are read once the server's own count has caught up.
    await Promise.all(flood.map((c) => c.closed));
    while (metric((text = await scrape()), /^crowdfl_aggregator_connections\{state="unproven"\} (\d+)$/m) !== 0) await new Promise((r) => setTimeout(r, 50));
    t.is(metric(text, /^crowdfl_aggregator_connections_timed_out_total (\d+)$/m), 12, text);
    t.is(metric(text, /^crowdfl_aggregator_connections\{state="unproven"\} (\d+)$/m), 0);
    const limit = metric(text, /^crowdfl_aggregator_open_files_limit (\d+)$/m)!;
    t.is(metric(text, /^crowdfl_aggregator_connections_max (\d+)$/m), Math.min(8192, limit - 256));
    t.true((metric(text, /^crowdfl_aggregator_open_files (\d+)$/m) ?? 0) > 0);

    // A node from 127.0.0.1 says hello: its connection is proven, so it outlives the hello timeout that
    // closes the next 8 silent connections opened after it; it then answers every round's task while
    // 127.0.0.2 floods again.
    const node = await joinAs(`127.0.0.1:${port}`);
    const later = Array.from({ length: 8 }, () => silent(port, '127.0.0.2'));
    await Promise.all(later.map((c) => c.closed));
    while (metric((text = await scrape()), /^crowdfl_aggregator_connections\{state="unproven"\} (\d+)$/m) !== 0) await new Promise((r) => setTimeout(r, 50));
    t.is(metric(text, /^crowdfl_aggregator_connections_timed_out_total (\d+)$/m), 20, text);
    t.is(metric(text, /^crowdfl_aggregator_connections\{state="proven"\} (\d+)$/m), 1);
    const again = Array.from({ length: 40 }, () => silent(port, '127.0.0.2'));
    await closes(again, 32);
    for (let round = 1; round <= 3; round++) {
      const task = await nextTask(node.conn);
      t.is(task.round, round);
      await submitSmallUpdate(node, task);
    }
    node.conn.close();
    await new Promise((r) => aggregator.once('exit', r));
    const summary = JSON.parse(readFileSync(join(dir, 'runs', 'flood', 'summary.json'), 'utf8')) as { rounds: unknown[] };
    t.is(summary.rounds.length, 3);
    const { db, close } = openDatabaseReadOnly(join(dir, 'runs', 'flood', 'crowdfl.db'));
    t.is(new RunStore(db).roundAttempts('flood').filter((r) => r.status === 'abandoned').length, 0);
    close();
    for (const c of again) c.socket.destroy();
  } finally {
    aggregator.kill('SIGKILL');
  }
});
