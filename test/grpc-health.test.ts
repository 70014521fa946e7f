// The standard health service and server reflection on a real aggregator process, through the same
// clients grpcurl or a Kubernetes probe would use: SERVING while the run takes work, NOT_SERVING once
// its experiment has ended (while it lingers), NOT_FOUND for a service it does not have.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { freePort, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { joinAs, nextTask, statusOf, submitSmallUpdate } from './support/grpc.js';
import { healthClient } from './support/health.js';

test('the aggregator answers grpc.health.v1 and reflection: serving during the run, not serving once it is over', async (t) => {
  const dir = tempDir('health');
  const file = join(dir, 'one.json');
  writeFileSync(file, JSON.stringify(tinyExperiment({ nodes: 1, rounds: 1, selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 60 } })));
  const port = await freePort();
  const aggregator = spawnCli([
    'aggregator', '--experiment', file, '--port', String(port), '--runs-dir', join(dir, 'runs'), '--run-id', 'health',
    '--key', join(dir, 'key.json'), '--linger', '600', '--hello-timeout', '600', '--log-format', 'json',
  ]);
  const client = healthClient(`127.0.0.1:${port}`);
  try {
    await new Promise<void>((resolve) => {
      const look = () => (/listening on 127\.0\.0\.1:\d+/.test(aggregator.output()) ? resolve() : undefined);
      aggregator.stderr!.on('data', look);
      look();
    });
    const watch = client.watch('');
    await watch.until('SERVING');
    t.is(await client.check('crowdfl.v1.Aggregator'), 'SERVING');
    t.is(await client.check(''), 'SERVING');
    t.like(await statusOf(client.check('no.such.Service')), { code: grpc.status.NOT_FOUND });
    const services = await client.listServices();
    t.true(services.includes('crowdfl.v1.Aggregator'), services.join(', '));
    t.true(services.includes('grpc.health.v1.Health'), services.join(', '));
    t.true((await client.fileContaining('crowdfl.v1.Aggregator')).length > 0, 'reflection serves the descriptor of crowdfl.proto');

    // One round, and the experiment is over: the aggregator lingers (the node never polls again) and says NOT_SERVING.
    const node = await joinAs(`127.0.0.1:${port}`);
    await submitSmallUpdate(node, await nextTask(node.conn));
    await watch.until('NOT_SERVING');
    t.is(await client.check('crowdfl.v1.Aggregator'), 'NOT_SERVING');
    t.deepEqual(watch.statuses.filter((s, i) => s !== watch.statuses[i - 1]).slice(-2), ['SERVING', 'NOT_SERVING']);
    watch.cancel();
    node.conn.close();
    // --log-format json: every line the aggregator logged is one object with its time and source.
    const lines = aggregator.output().split('\n').filter(Boolean);
    t.true(lines.length >= 3, aggregator.output());
    for (const line of lines) {
      const entry = JSON.parse(line) as { time: string; source: string; msg: string };
      t.regex(entry.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, line);
      t.is(entry.source, 'aggregator');
    }
    t.true(lines.some((l) => /listening on 127\.0\.0\.1/.test((JSON.parse(l) as { msg: string }).msg)));
  } finally {
    client.close();
    aggregator.kill('SIGKILL');
  }
});
