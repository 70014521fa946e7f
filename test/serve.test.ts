// Inference serving over real HTTP on loopback, from a real simulated run's checkpoints.
// Serial: the tfjs backend and the run's database are shared by the tests.
import test from 'ava';
import { writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { checkpointDirName, readCheckpointWeights } from '../aggregator/store/checkpoints.js';
import { initBackend } from '../core/backend.js';
import { modelSpec } from '../core/model/zoo.js';
import { startServing, type ServeOptions, type Serving } from '../serving/serve.js';
import { runCli } from './support/cli.js';
import { assertClose, coreProbabilities } from './support/inference.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

const FEATURES = 60;
const spec = modelSpec('logreg', { featureShape: [FEATURES], numClasses: 10 });
let runDir = '';

test.before(async () => {
  await initBackend('auto', { log: () => undefined });
  const dir = tempDir('serve');
  const file = join(dir, 'tiny.json');
  writeFileSync(file, JSON.stringify({ ...tinyExperiment({ rounds: 2 }), name: 'tiny' }));
  const sim = await runCli(['simulate', file, '--runs-dir', dir, '--run-id', 'r', '--no-progress']);
  if (sim.code !== 0) throw new Error(`simulate failed: ${sim.stderr}`);
  runDir = join(dir, 'r');
});

function checkpoint(round: number): string {
  return join(runDir, 'checkpoints', checkpointDirName(round));
}

function serve(overrides: Partial<ServeOptions> = {}): Promise<Serving> {
  return startServing({
    sources: [{ name: 'default', checkpoint: checkpoint(2) }],
    batching: { maxBatch: 64, maxWaitMs: 2, maxQueue: 1024 },
    // A generous delay budget: these tests are about correctness, not about the machine's speed.
    admission: { maxPending: 1024, maxDelayMs: 60_000 },
    http: { host: '127.0.0.1', port: 0, maxBodyBytes: 1 << 20 },
    keepVersions: 2,
    log: () => undefined,
    ...overrides,
  });
}

function instance(seed: number): number[] {
  return Array.from({ length: FEATURES }, (_, i) => Math.sin(seed * 7.1 + i));
}

async function post(port: number, path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

test.serial('predictions equal core inference of the same checkpoint, in row and columnar form; status follows TF Serving', async (t) => {
  const serving = await serve();
  try {
    const rows = [instance(1), instance(2), instance(3)];
    const expected = await coreProbabilities(spec, readCheckpointWeights(checkpoint(2)).weights, rows);
    const row = await post(serving.port, '/v1/models/default:predict', { instances: rows });
    t.is(row.status, 200);
    assertClose(t, row.json.predictions as number[][], expected);
    const versioned = await post(serving.port, '/v1/models/default/versions/2:predict', { inputs: rows });
    t.is(versioned.status, 200);
    assertClose(t, versioned.json.outputs as number[][], expected);

    const status = await fetch(`http://127.0.0.1:${serving.port}/v1/models/default`);
    t.deepEqual(await status.json(), { model_version_status: [{ version: '2', state: 'AVAILABLE', status: { error_code: 'OK', error_message: '' } }] });
  } finally {
    await serving.close();
  }
});

test.serial('each malformed request is refused with a message naming its problem', async (t) => {
  const serving = await serve({ batching: { maxBatch: 64, maxWaitMs: 2, maxQueue: 8 }, http: { host: '127.0.0.1', port: 0, maxBodyBytes: 16384 } });
  const cases: [string, unknown, number, RegExp][] = [
    ['/v1/models/default:predict', { instances: [instance(0), instance(1), instance(2), instance(3).slice(0, 58)] }, 400, /^instance 3 has 58 values; model default takes 60 \(shape \[60\]\)$/],
    ['/v1/models/default:predict', { instances: [[...instance(0).slice(1), 'x']] }, 400, /instance 0, value 59 is a string \("x"\); default takes float32 numbers/],
    ['/v1/models/default:predict', { instances: [[[1, 2], [3, 4]]] }, 400, /instance 0 has shape \[2, 2\]; model default takes 60 float32 values \(shape \[60\]\)/],
    ['/v1/models/default:predict', { instances: [] }, 400, /"instances" is empty/],
    ['/v1/models/default:predict', { instance: [instance(0)] }, 400, /no "instances" \(row format\) or "inputs"/],
    ['/v1/models/default:predict', '{"instances": [', 400, /not valid JSON/],
    ['/v1/models/default:predict', { instances: Array.from({ length: 9 }, () => [1]) }, 413, /9 instances; this server queues at most 8/],
    ['/v1/models/default:predict', { instances: Array.from({ length: 40 }, (_, i) => instance(i)) }, 413, /exceeds 16384 bytes/],
    ['/v1/models/other:predict', { instances: [instance(0)] }, 404, /no model named "other"; serving "default"/],
    ['/v1/models/default/versions/7:predict', { instances: [instance(0)] }, 404, /^model default has no version 7 to serve; versions: 2 \(AVAILABLE\)$/],
  ];
  try {
    for (const [path, body, status, message] of cases) {
      const res = await post(serving.port, path, body);
      t.is(res.status, status, JSON.stringify(res.json));
      t.regex(String(res.json.error), message);
    }
    const unknown = await fetch(`http://127.0.0.1:${serving.port}/v1/models/other`);
    t.is(unknown.status, 404);
  } finally {
    await serving.close();
  }
});

test.serial('concurrent requests share batches; a full queue answers 429 and every request is answered', async (t) => {
  // After a batch of more than one row the batcher expects company and holds the next partial batch
  // up to max-wait (100 ms here), so the 4-instance queue fills and the rest are refused.
  const serving = await serve({ batching: { maxBatch: 64, maxWaitMs: 100, maxQueue: 4 } });
  try {
    t.is((await post(serving.port, '/v1/models/default:predict', { instances: [instance(0), instance(1)] })).status, 200);
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => post(serving.port, '/v1/models/default:predict', { instances: [instance(i)] })));
    const ok = answers.filter((a) => a.status === 200).length;
    const refused = answers.filter((a) => a.status === 429);
    t.is(ok + refused.length, 40, `statuses: ${answers.map((a) => a.status).join(',')}`);
    t.true(ok >= 4 && refused.length > 0, `${ok} answered, ${refused.length} refused`);
    t.regex(String(refused[0].json.error), /^overloaded: 4 instances already queued \(limit 4\)/);

    const metrics = await (await fetch(`http://127.0.0.1:${serving.port}/metrics`)).text();
    t.regex(metrics, /crowdfl_serving_requests_total\{model="default",api="http",code="429"\} \d+/);
    t.regex(metrics, /crowdfl_serving_model_version\{model="default"\} 2/);
    // Batches larger than 1 ran: fewer batches than answered instances (the first request had 2).
    const batches = Number(/crowdfl_serving_batch_size_count\{model="default"\} (\d+)/.exec(metrics)?.[1]);
    const rows = Number(/crowdfl_serving_batch_size_sum\{model="default"\} (\d+)/.exec(metrics)?.[1]);
    t.is(rows, ok + 2);
    t.true(batches < rows - 1, `${batches} batches for ${rows} instances`);
  } finally {
    await serving.close();
  }
});

/** A predict request whose headers and first half of body are sent; the rest waits for finish(). */
function halfSent(port: number, body: unknown): { answer: Promise<{ status: number; json: Record<string, unknown> }>; finish: () => void } {
  const bytes = Buffer.from(JSON.stringify(body));
  const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/v1/models/default:predict', headers: { 'content-length': bytes.length } });
  const answer = new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> }));
    });
    req.on('error', reject);
  });
  req.write(bytes.subarray(0, bytes.length >> 1));
  return { answer, finish: () => req.end(bytes.subarray(bytes.length >> 1)) };
}

test.serial('more predict requests in progress than --max-pending are refused 429 on their headers, before their body is read', async (t) => {
  const serving = await serve({ admission: { maxPending: 3, maxDelayMs: 60_000 } });
  try {
    const held = Array.from({ length: 3 }, (_, i) => halfSent(serving.port, { instances: [instance(i)] }));
    const end = Date.now() + 5000;
    while (serving.admission.pending < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    t.is(serving.admission.pending, 3);
    // Its body never completes, yet it is answered: the refusal needed only the headers.
    const fourth = halfSent(serving.port, { instances: [instance(9)] });
    const refused = await fourth.answer;
    t.is(refused.status, 429);
    t.regex(String(refused.json.error), /^overloaded: 3 predict requests in progress \(limit 3\); retry later$/);
    const more = await Promise.all(Array.from({ length: 5 }, (_, i) => post(serving.port, '/v1/models/default:predict', { instances: [instance(i)] })));
    t.deepEqual(more.map((a) => a.status), [429, 429, 429, 429, 429]);
    for (const h of held) h.finish();
    t.deepEqual((await Promise.all(held.map((h) => h.answer))).map((a) => a.status), [200, 200, 200]);
    fourth.finish();
    t.is((await post(serving.port, '/v1/models/default:predict', { instances: [instance(0)] })).status, 200);
  } finally {
    await serving.close();
  }
});

test.serial('a client that disconnects before sending its whole body frees its place', async (t) => {
  const serving = await serve({ admission: { maxPending: 1, maxDelayMs: 60_000 } });
  try {
    const socket = connect(serving.port, '127.0.0.1');
    socket.write('POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"inst');
    const end = Date.now() + 5000;
    while (serving.admission.pending < 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    t.is((await post(serving.port, '/v1/models/default:predict', { instances: [instance(0)] })).status, 429);
    socket.destroy();
    while (serving.admission.pending > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    t.is((await post(serving.port, '/v1/models/default:predict', { instances: [instance(0)] })).status, 200);
  } finally {
    await serving.close();
  }
});

test.serial('shutting down does not wait forever for a client that never finishes its request', async (t) => {
  const serving = await serve();
  const stuck = halfSent(serving.port, { instances: [instance(0)] });
  stuck.answer.catch(() => undefined); // its connection is closed under it
  const end = Date.now() + 5000;
  while (serving.admission.pending < 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  // close() returning at all is the behaviour (a close that waited for the client would hang
  // until the test's timeout); and the stuck client's connection was closed under it.
  await serving.close();
  await t.throwsAsync(stuck.answer);
});

test.serial('a request is refused 429 at once when the expected wait exceeds half the deadline the client sent', async (t) => {
  const serving = await serve({ admission: { maxPending: 1024, maxDelayMs: 60_000 } });
  try {
    // Teach admission a service rate: requests answered one after another.
    for (let i = 0; i < 5; i++) t.is((await post(serving.port, '/v1/models/default:predict', { instances: [instance(i)] })).status, 200);
    const held = Array.from({ length: 20 }, (_, i) => halfSent(serving.port, { instances: [instance(i)] }));
    const end = Date.now() + 5000;
    while (serving.admission.pending < 20 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 50)); // the held requests' busy time lowers the measured rate further
    const expected = serving.admission.expectedDelayMs();
    t.true(expected > 1, `expected wait ${expected} ms`);
    const res = await fetch(`http://127.0.0.1:${serving.port}/v1/models/default:predict`, {
      method: 'POST',
      headers: { 'x-deadline-ms': '1' },
      body: JSON.stringify({ instances: [instance(0)] }),
    });
    t.is(res.status, 429);
    t.regex(((await res.json()) as { error: string }).error, /^overloaded: expected wait \d+ ms exceeds half the request's deadline \(1 ms\); retry later$/);
    const bad = await fetch(`http://127.0.0.1:${serving.port}/v1/models/default:predict`, { method: 'POST', headers: { 'x-deadline-ms': 'soon' }, body: '{}' });
    t.is(bad.status, 400);
    for (const h of held) h.finish();
    t.true((await Promise.all(held.map((h) => h.answer))).every((a) => a.status === 200));
  } finally {
    await serving.close();
  }
});

test.serial('--follow started before the run commits answers 503 until its first round, then serves it; without --follow that is an error', async (t) => {
  const db = new Database(join(runDir, 'crowdfl.db'));
  db.prepare("UPDATE rounds SET status = 'abandoned' WHERE status = 'committed'").run();
  try {
    await t.throwsAsync(serve({ sources: [{ name: 'default', run: runDir }] }), { message: /has no committed round yet; add --follow/ });
    const serving = await serve({ sources: [{ name: 'default', run: runDir }], followIntervalMs: 20 });
    try {
      const waiting = await post(serving.port, '/v1/models/default:predict', { instances: [instance(1)] });
      t.is(waiting.status, 503);
      t.regex(String(waiting.json.error), /model default has no version yet: its run has not committed a round/);
      db.prepare("UPDATE rounds SET status = 'committed' WHERE round = 1").run();
      const deadline = Date.now() + 5000;
      while (!serving.registry.newest('default') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const served = await post(serving.port, '/v1/models/default:predict', { instances: [instance(1)] });
      t.is(served.status, 200);
      t.is(serving.registry.newest('default')?.version, 1);
    } finally {
      await serving.close();
    }
  } finally {
    db.prepare("UPDATE rounds SET status = 'committed' WHERE status = 'abandoned'").run();
    db.close();
  }
});

test.serial('--follow serves a newly committed round without failing requests in flight', async (t) => {
  // Hide round 2 so the run's newest committed round is 1, then commit it back while requests flow.
  const db = new Database(join(runDir, 'crowdfl.db'));
  db.prepare("UPDATE rounds SET status = 'abandoned' WHERE round = 2 AND status = 'committed'").run();
  const serving = await serve({ sources: [{ name: 'default', run: runDir }], followIntervalMs: 20 });
  try {
    t.is(serving.registry.newest('default')?.version, 1);
    let stop = false;
    const statuses: number[] = [];
    const clients = Array.from({ length: 8 }, async (_, c) => {
      for (let i = 0; !stop; i++) statuses.push((await post(serving.port, '/v1/models/default:predict', { instances: [instance(c * 1000 + i)] })).status);
    });
    // Requests are in flight before the swap, across it and after it: each phase waits for answers, not for time.
    const answers = (n: number) => new Promise<void>((resolve) => {
      const target = statuses.length + n;
      const check = () => (statuses.length >= target ? resolve() : setTimeout(check, 5));
      check();
    });
    await answers(8);
    db.prepare("UPDATE rounds SET status = 'committed' WHERE round = 2 AND status = 'abandoned'").run();
    while (serving.registry.newest('default')?.version !== 2) await new Promise((r) => setTimeout(r, 10));
    await answers(8);
    stop = true;
    await Promise.all(clients);
    t.is(serving.registry.newest('default')?.version, 2);
    t.true(statuses.length >= 16);
    t.deepEqual([...new Set(statuses)], [200]);
    const rows = [instance(5)];
    const res = await post(serving.port, '/v1/models/default:predict', { instances: rows });
    assertClose(t, res.json.predictions as number[][], await coreProbabilities(spec, readCheckpointWeights(checkpoint(2)).weights, rows));
    const old = await post(serving.port, '/v1/models/default/versions/1:predict', { instances: rows });
    assertClose(t, old.json.predictions as number[][], await coreProbabilities(spec, readCheckpointWeights(checkpoint(1)).weights, rows));
  } finally {
    db.close();
    await serving.close();
  }
});
