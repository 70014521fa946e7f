// `crowdfl aggregator --metrics-port`: Prometheus metrics of a real run, scraped while it runs.
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import test from 'ava';
import { freePort, runCli, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

function metric(text: string, line: RegExp): number | undefined {
  const m = line.exec(text);
  return m ? Number(m[1]) : undefined;
}

test('the aggregator serves /metrics: updates, rounds, round duration and the model version, as rounds commit', async (t) => {
  const dir = tempDir('agg-metrics');
  const file = join(dir, 'one.json');
  writeFileSync(file, JSON.stringify(tinyExperiment({ nodes: 1, rounds: 3, selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 60 } })));
  const prepared = await runCli(['data', 'prepare', '--experiment', file, '--out', join(dir, 'parts')]);
  t.is(prepared.code, 0, prepared.stderr);
  const [port, metricsPort] = [await freePort(), await freePort()];
  const aggregator = spawnCli([
    'aggregator', '--experiment', file, '--port', String(port), '--metrics-port', String(metricsPort),
    '--runs-dir', join(dir, 'runs'), '--run-id', 'm1', '--key', join(dir, 'key.json'), '--linger', '5',
  ]);
  const node = spawnCli(['node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, 'parts', 'node-000'), '--state-dir', join(dir, 'state'), '--exit-when-finished']);
  try {
    let text = '';
    const end = Date.now() + 90_000;
    while (Date.now() < end) {
      text = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text(), () => '');
      if ((metric(text, /^crowdfl_aggregator_model_version (\d+)$/m) ?? 0) >= 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.regex(aggregator.output(), /metrics on http:\/\/127\.0\.0\.1:\d+\/metrics/);
    const version = metric(text, /^crowdfl_aggregator_model_version (\d+)$/m) ?? 0;
    t.true(version >= 2, text);
    const committed = metric(text, /^crowdfl_aggregator_rounds_total\{outcome="committed"\} (\d+)$/m);
    t.is(committed, version);
    t.is(metric(text, /^crowdfl_aggregator_round_seconds_count (\d+)$/m), committed);
    t.is(metric(text, /^crowdfl_aggregator_round_participants_sum (\d+)$/m), committed);
    t.true((metric(text, /^crowdfl_aggregator_updates_total\{outcome="accepted"\} (\d+)$/m) ?? 0) >= version);
    t.regex(text, /^# TYPE crowdfl_aggregator_round_seconds histogram$/m);
    t.regex(text, /^crowdfl_aggregator_model_accuracy \d/m);
    // Every gRPC call is counted with its status, and timed.
    t.true((metric(text, /^crowdfl_aggregator_requests_total\{method="SubmitUpdate",code="OK"\} (\d+)$/m) ?? 0) >= version, text);
    t.true((metric(text, /^crowdfl_aggregator_requests_total\{method="Hello",code="OK"\} (\d+)$/m) ?? 0) >= 1);
    t.true((metric(text, /^crowdfl_aggregator_requests_total\{method="DownloadModel",code="OK"\} (\d+)$/m) ?? 0) >= 1);
    t.is(
      metric(text, /^crowdfl_aggregator_request_seconds_count\{method="SubmitUpdate"\} (\d+)$/m),
      metric(text, /^crowdfl_aggregator_requests_total\{method="SubmitUpdate",code="OK"\} (\d+)$/m),
    );
    t.regex(text, /^crowdfl_aggregator_request_seconds_bucket\{method="PollTask",le="\+Inf"\} \d+$/m);
  } finally {
    node.kill('SIGKILL');
    aggregator.kill('SIGKILL');
  }
});
