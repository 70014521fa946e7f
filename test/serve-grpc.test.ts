// gRPC Predict and GetModelStatus (TF Serving's shape) over real gRPC on
// loopback, model states while loading, and refusal under overload. Serial:
// the tfjs backend is shared.
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { writeCheckpoint } from '../aggregator/store/checkpoints.js';
import { initBackend } from '../core/backend.js';
import { weightManifest } from '../core/model/spec.js';
import { modelSpec } from '../core/model/zoo.js';
import type { GetModelStatusResponse__Output } from '../proto/generated/tensorflow/serving/GetModelStatusResponse.js';
import type { ModelServiceClient } from '../proto/generated/tensorflow/serving/ModelService.js';
import type { PredictionServiceClient } from '../proto/generated/tensorflow/serving/PredictionService.js';
import type { PredictRequest } from '../proto/generated/tensorflow/serving/PredictRequest.js';
import type { PredictResponse__Output } from '../proto/generated/tensorflow/serving/PredictResponse.js';
import type { TensorProto } from '../proto/generated/tensorflow/serving/TensorProto.js';
import * as protoLoader from '@grpc/proto-loader';
import { LOADER_OPTIONS } from '../core/proto.js';
import { rawH2GrpcClient } from '../bench/raw-clients.js';
import { grpcTimeoutMs, loadServingProto, OUTPUT_NAME, SERVING_PROTO_PATH } from '../serving/grpc.js';
import { startServing, type ServeOptions, type Serving } from '../serving/serve.js';
import { statusOf } from './support/grpc.js';
import { healthClient } from './support/health.js';
import { assertClose, coreProbabilities } from './support/inference.js';
import { tempDir } from './support/fixtures.js';

const FEATURES = 60;
const spec = modelSpec('logreg', { featureShape: [FEATURES], numClasses: 10 });
const params = weightManifest(spec).reduce((n, w) => n + w.shape.reduce((a, b) => a * b, 1), 0);
// Weights that make every class score differ, so a wrong row or class order shows.
const weights = Float32Array.from({ length: params }, (_, i) => Math.sin(i * 0.37) * 0.3);
let checkpointDir = '';

test.before(async () => {
  await initBackend('auto', { log: () => undefined });
  checkpointDir = writeCheckpoint(tempDir('serve-grpc'), 'round-0003', spec.topology, weightManifest(spec), weights).dir;
});

function serve(overrides: Partial<ServeOptions> = {}): Promise<Serving> {
  return startServing({
    sources: [{ name: 'default', checkpoint: checkpointDir }],
    batching: { maxBatch: 64, maxWaitMs: 2, maxQueue: 16 },
    admission: { maxPending: 1024, maxDelayMs: 60_000 },
    http: { host: '127.0.0.1', port: 0, maxBodyBytes: 1 << 20 },
    grpc: { host: '127.0.0.1', port: 0, maxMessageBytes: 1 << 20 },
    keepVersions: 2,
    log: () => undefined,
    ...overrides,
  });
}

interface Clients {
  predict: PredictionServiceClient;
  models: ModelServiceClient;
  close(): void;
}

function clients(port: number): Clients {
  const proto = loadServingProto();
  const predict = new proto.tensorflow.serving.PredictionService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const models = new proto.tensorflow.serving.ModelService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return { predict, models, close: () => (predict.close(), models.close()) };
}

function callPredict(c: Clients, request: PredictRequest, deadlineMs = 10_000): Promise<PredictResponse__Output> {
  return new Promise((resolve, reject) =>
    c.predict.Predict(request, { deadline: Date.now() + deadlineMs }, (err, reply) => (err ? reject(err) : resolve(reply as PredictResponse__Output))),
  );
}

function callStatus(c: Clients, name: string, version?: number): Promise<GetModelStatusResponse__Output> {
  return new Promise((resolve, reject) =>
    c.models.GetModelStatus({ model_spec: { name, version: version === undefined ? null : { value: version } } }, (err, reply) =>
      err ? reject(err) : resolve(reply as GetModelStatusResponse__Output),
    ),
  );
}

function instance(seed: number): number[] {
  return Array.from({ length: FEATURES }, (_, i) => Math.cos(seed * 3.3 + i));
}

function floatTensor(rows: number[][], encoding: 'content' | 'float_val'): TensorProto {
  const flat = Float32Array.from(rows.flat());
  const shape = { dim: [{ size: rows.length }, { size: FEATURES }] };
  return encoding === 'content'
    ? { dtype: 'DT_FLOAT', tensor_shape: shape, tensor_content: Buffer.from(flat.buffer) }
    : { dtype: 'DT_FLOAT', tensor_shape: shape, float_val: Array.from(flat) };
}

function outputRows(reply: PredictResponse__Output): number[][] {
  const out = reply.outputs[OUTPUT_NAME];
  const [batch, classes] = (out.tensor_shape?.dim ?? []).map((d) => d.size);
  const bytes = out.tensor_content;
  const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return Array.from({ length: batch }, (_, r) => Array.from(values.subarray(r * classes, (r + 1) * classes)));
}

test.serial('gRPC Predict equals core inference, from tensor_content or float_val; GetModelStatus reports the version AVAILABLE', async (t) => {
  const serving = await serve();
  const c = clients(serving.grpcPort!);
  try {
    const rows = [instance(1), instance(2), instance(3)];
    const expected = await coreProbabilities(spec, weights, rows);
    for (const encoding of ['content', 'float_val'] as const) {
      const reply = await callPredict(c, { model_spec: { name: 'default' }, inputs: { x: floatTensor(rows, encoding) } });
      t.is(reply.outputs[OUTPUT_NAME].dtype, 'DT_FLOAT');
      t.deepEqual(reply.outputs[OUTPUT_NAME].tensor_shape?.dim.map((d) => d.size), [3, 10]);
      assertClose(t, outputRows(reply), expected);
      t.is(reply.model_spec?.version?.value, 3);
    }
    const pinned = await callPredict(c, { model_spec: { name: 'default', version: { value: 3 } }, inputs: { dense_input: floatTensor(rows.slice(0, 1), 'content') } });
    assertClose(t, outputRows(pinned), expected.slice(0, 1));
    const status = await callStatus(c, 'default');
    t.deepEqual(status.model_version_status, [{ version: 3, state: 'AVAILABLE', status: { error_code: 0, error_message: '' } }]);
    const metrics = await (await fetch(`http://127.0.0.1:${serving.port}/metrics`)).text();
    t.regex(metrics, /crowdfl_serving_requests_total\{model="default",api="grpc",code="OK"\} 3/);
  } finally {
    c.close();
    await serving.close();
  }
});

test.serial('the serving port answers grpc.health.v1 and reflection for TF Serving\'s services', async (t) => {
  const serving = await serve();
  const client = healthClient(`127.0.0.1:${serving.grpcPort!}`);
  try {
    t.is(await client.check(''), 'SERVING');
    for (const service of ['tensorflow.serving.PredictionService', 'tensorflow.serving.ModelService']) t.is(await client.check(service), 'SERVING');
    t.like(await statusOf(client.check('crowdfl.v1.Aggregator')), { code: grpc.status.NOT_FOUND });
    const services = await client.listServices();
    for (const service of ['tensorflow.serving.PredictionService', 'tensorflow.serving.ModelService', 'grpc.health.v1.Health']) {
      t.true(services.includes(service), `${service} in ${services.join(', ')}`);
    }
    t.true((await client.fileContaining('tensorflow.serving.PredictRequest')).length > 0);
  } finally {
    client.close();
    await serving.close();
  }
});

test.serial('each invalid Predict gets INVALID_ARGUMENT naming the problem; unknown model or version NOT_FOUND', async (t) => {
  const serving = await serve();
  const c = clients(serving.grpcPort!);
  const good = floatTensor([instance(0)], 'content');
  const cases: [string, PredictRequest, grpc.status, RegExp][] = [
    ['dtype', { model_spec: { name: 'default' }, inputs: { x: { ...good, dtype: 'DT_INT32' } } }, grpc.status.INVALID_ARGUMENT, /^input "x" has dtype DT_INT32; model default takes one float tensor of shape \[batch, 60\]/],
    ['shape', { model_spec: { name: 'default' }, inputs: { x: { ...good, tensor_shape: { dim: [{ size: 1 }, { size: 58 }] } } } }, grpc.status.INVALID_ARGUMENT, /^input "x" has shape \[1, 58\]; model default takes/],
    ['rank', { model_spec: { name: 'default' }, inputs: { x: { ...good, tensor_shape: { dim: [{ size: 60 }] } } } }, grpc.status.INVALID_ARGUMENT, /has shape \[60\]/],
    ['content size', { model_spec: { name: 'default' }, inputs: { x: { ...good, tensor_content: Buffer.alloc(8) } } }, grpc.status.INVALID_ARGUMENT, /tensor_content holds 8 bytes; shape \[1, 60\] of DT_FLOAT needs 240/],
    ['value count', { model_spec: { name: 'default' }, inputs: { x: { dtype: 'DT_FLOAT', tensor_shape: good.tensor_shape, float_val: [1, 2, 3] } } }, grpc.status.INVALID_ARGUMENT, /has 3 values in float_val; shape \[1, 60\] needs 60/],
    ['no inputs', { model_spec: { name: 'default' }, inputs: {} }, grpc.status.INVALID_ARGUMENT, /^inputs is empty/],
    ['two inputs', { model_spec: { name: 'default' }, inputs: { a: good, b: good } }, grpc.status.INVALID_ARGUMENT, /inputs has 2 tensors \("a", "b"\)/],
    ['batch 0', { model_spec: { name: 'default' }, inputs: { x: { ...good, tensor_shape: { dim: [{ size: 0 }, { size: 60 }] }, tensor_content: Buffer.alloc(0) } } }, grpc.status.INVALID_ARGUMENT, /batch size 0/],
    ['too many', { model_spec: { name: 'default' }, inputs: { x: floatTensor(Array.from({ length: 17 }, (_, i) => instance(i)), 'content') } }, grpc.status.INVALID_ARGUMENT, /17 instances; this server queues at most 16/],
    ['no name', { inputs: { x: good } }, grpc.status.INVALID_ARGUMENT, /model_spec.name is missing/],
    ['label', { model_spec: { name: 'default', version_label: 'stable' }, inputs: { x: good } }, grpc.status.INVALID_ARGUMENT, /version labels are not supported/],
    ['unknown model', { model_spec: { name: 'other' }, inputs: { x: good } }, grpc.status.NOT_FOUND, /no model named "other"; serving "default"/],
    ['unknown version', { model_spec: { name: 'default', version: { value: 7 } }, inputs: { x: good } }, grpc.status.NOT_FOUND, /model default has no version 7 to serve; versions: 3 \(AVAILABLE\)/],
  ];
  try {
    for (const [label, request, code, details] of cases) {
      const outcome = await statusOf(callPredict(c, request));
      t.is(outcome.code, code, `${label}: ${outcome.details}`);
      t.regex(outcome.details, details, label);
    }
    t.is((await statusOf(callStatus(c, 'other'))).code, grpc.status.NOT_FOUND);
  } finally {
    c.close();
    await serving.close();
  }
});

test.serial('a model whose first version is loading answers UNAVAILABLE (gRPC) and 503 (HTTP), reports LOADING, then serves; a failed load ends the version with its reason', async (t) => {
  const serving = await serve();
  const c = clients(serving.grpcPort!);
  try {
    let arrive: () => void = () => undefined;
    const arrived = new Promise<void>((resolve) => (arrive = resolve));
    const loaded = serving.registry.loadContents('later', 5, async () => {
      await arrived;
      return { spec, weights, sha256: 'test' };
    });
    const request: PredictRequest = { model_spec: { name: 'later' }, inputs: { x: floatTensor([instance(0)], 'content') } };
    const early = await statusOf(callPredict(c, request));
    t.is(early.code, grpc.status.UNAVAILABLE);
    t.regex(early.details, /^model later is still loading \(versions: 5 \(LOADING\)\); retry shortly$/);
    t.is((await callStatus(c, 'later')).model_version_status[0]?.state, 'LOADING');
    const http = await fetch(`http://127.0.0.1:${serving.port}/v1/models/later:predict`, { method: 'POST', body: JSON.stringify({ instances: [instance(0)] }) });
    t.is(http.status, 503);
    t.regex(((await http.json()) as { error: string }).error, /still loading/);
    const restStatus = (await (await fetch(`http://127.0.0.1:${serving.port}/v1/models/later`)).json()) as { model_version_status: { state: string }[] };
    t.is(restStatus.model_version_status[0]?.state, 'LOADING');

    arrive();
    await loaded;
    assertClose(t, outputRows(await callPredict(c, request)), await coreProbabilities(spec, weights, [instance(0)]));
    t.is((await callStatus(c, 'later', 5)).model_version_status[0]?.state, 'AVAILABLE');

    await t.throwsAsync(serving.registry.loadContents('broken', 1, () => Promise.reject(new Error('weights.bin is truncated'))));
    const broken = await statusOf(callPredict(c, { ...request, model_spec: { name: 'broken' } }));
    t.is(broken.code, grpc.status.UNAVAILABLE);
    t.regex(broken.details, /model broken has no version available \(versions: 1 \(END\); loading version 1 failed: weights.bin is truncated\)/);
    const endStatus = await callStatus(c, 'broken');
    t.is(endStatus.model_version_status[0]?.state, 'END');
    t.is(endStatus.model_version_status[0]?.status?.error_code, grpc.status.UNKNOWN);
  } finally {
    c.close();
    await serving.close();
  }
});

test.serial('a newer version retires the older: UNLOADING while it drains, then END', async (t) => {
  const serving = await serve({ keepVersions: 1 });
  const c = clients(serving.grpcPort!);
  try {
    await serving.registry.loadContents('default', 4, { spec, weights, sha256: 'v4' });
    const end = Date.now() + 5000;
    let states: string[] = [];
    while (Date.now() < end) {
      states = (await callStatus(c, 'default')).model_version_status.map((s) => `${s.version}:${s.state}`);
      if (states.includes('3:END')) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    t.deepEqual(states, ['4:AVAILABLE', '3:END']);
    const gone = await statusOf(callPredict(c, { model_spec: { name: 'default', version: { value: 3 } }, inputs: { x: floatTensor([instance(0)], 'content') } }));
    t.is(gone.code, grpc.status.NOT_FOUND);
  } finally {
    c.close();
    await serving.close();
  }
});

test.serial('under a burst beyond a tiny limit every Predict is answered: predictions or RESOURCE_EXHAUSTED, nothing else', async (t) => {
  const serving = await serve({ admission: { maxPending: 2, maxDelayMs: 60_000 } });
  const c = clients(serving.grpcPort!);
  try {
    const request: PredictRequest = { model_spec: { name: 'default' }, inputs: { x: floatTensor([instance(1)], 'content') } };
    await callPredict(c, request); // connect first, so the burst arrives together
    const outcomes = await Promise.all(Array.from({ length: 60 }, () => statusOf(callPredict(c, request, 5000))));
    const ok = outcomes.filter((o) => o.code === grpc.status.OK).length;
    const refused = outcomes.filter((o) => o.code === grpc.status.RESOURCE_EXHAUSTED);
    t.is(ok + refused.length, 60, `codes: ${[...new Set(outcomes.map((o) => o.code))].join(',')}`);
    t.true(ok >= 2 && refused.length > 0, `${ok} answered, ${refused.length} refused`);
    t.regex(refused[0]!.details, /^overloaded: 2 predict requests in progress \(limit 2\); retry later$/);
    t.is(serving.admission.pending, 0);
  } finally {
    c.close();
    await serving.close();
  }
});

test.serial('an overloaded server refuses Predict on its headers, before decoding the message: RESOURCE_EXHAUSTED for an undecodable one; once load passes it is answered', async (t) => {
  const serving = await serve({ admission: { maxPending: 2, maxDelayMs: 60_000 } });
  const c = clients(serving.grpcPort!);
  const raw = new grpc.Client(`127.0.0.1:${serving.grpcPort!}`, grpc.credentials.createInsecure());
  const garbage = (): Promise<{ code: number; details: string }> =>
    statusOf(
      new Promise((resolve, reject) =>
        raw.makeUnaryRequest(
          '/tensorflow.serving.PredictionService/Predict',
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from([0xff, 0xff, 0xff, 0xff]),
          { deadline: Date.now() + 5000 },
          (err, reply) => (err ? reject(err) : resolve(reply)),
        ),
      ),
    );
  try {
    const request: PredictRequest = { model_spec: { name: 'default' }, inputs: { x: floatTensor([instance(1)], 'content') } };
    // Admitted, it is decoded and fails as a bad message would.
    const decoded = await garbage();
    t.not(decoded.code, grpc.status.RESOURCE_EXHAUSTED);
    t.not(decoded.code, grpc.status.OK);
    // Two requests in progress fill --max-pending 2.
    const held = [serving.admission.admit(), serving.admission.admit()];
    // Refused at once: a call that waited for the held requests would end DEADLINE_EXCEEDED, not RESOURCE_EXHAUSTED.
    const refused = await garbage();
    const valid = await statusOf(callPredict(c, request, 5000));
    t.is(refused.code, grpc.status.RESOURCE_EXHAUSTED, refused.details);
    t.regex(refused.details, /^overloaded: 2 predict requests in progress \(limit 2\); retry later$/);
    t.is(valid.code, grpc.status.RESOURCE_EXHAUSTED);
    const metrics = serving.metrics.render();
    t.regex(metrics, /crowdfl_serving_early_refusals_total\{api="grpc"\} 2/);
    for (const release of held) release();
    t.deepEqual(outputRows(await callPredict(c, request)).length, 1);
    t.is(serving.admission.pending, 0);
  } finally {
    raw.close();
    c.close();
    await serving.close();
  }
});

test('grpc-timeout header values in ms; absent or malformed is no deadline', (t) => {
  t.is(grpcTimeoutMs('2000m'), 2000);
  t.is(grpcTimeoutMs('2S'), 2000);
  t.is(grpcTimeoutMs('1M'), 60_000);
  t.is(grpcTimeoutMs('1H'), 3_600_000);
  t.is(grpcTimeoutMs('1500u'), 1.5);
  t.is(grpcTimeoutMs('3000000n'), 3);
  t.is(grpcTimeoutMs(undefined), Number.POSITIVE_INFINITY);
  t.is(grpcTimeoutMs('123456789m'), Number.POSITIVE_INFINITY);
  t.is(grpcTimeoutMs('10x'), Number.POSITIVE_INFINITY);
});

test.serial("the benchmark's raw HTTP/2 gRPC client reads answers, early refusals (trailers-only) and handler refusals as the server sent them", async (t) => {
  const serving = await serve({ admission: { maxPending: 2, maxDelayMs: 60_000 } });
  const service = protoLoader.loadSync(SERVING_PROTO_PATH, LOADER_OPTIONS)['tensorflow.serving.PredictionService'] as protoLoader.ServiceDefinition;
  const request: PredictRequest = { model_spec: { name: 'default' }, inputs: { x: floatTensor([instance(1)], 'content') } };
  const unknown: PredictRequest = { model_spec: { name: 'nope' }, inputs: { x: floatTensor([instance(1)], 'content') } };
  const client = rawH2GrpcClient(serving.grpcPort!, '/tensorflow.serving.PredictionService/Predict', service.Predict.requestSerialize(request), 5000, 2);
  const notFound = rawH2GrpcClient(serving.grpcPort!, '/tensorflow.serving.PredictionService/Predict', service.Predict.requestSerialize(unknown), 5000);
  try {
    // One at a time (--max-pending 2), over both connections.
    const answered: number[] = [];
    for (let i = 0; i < 6; i++) answered.push((await client.predict()).status);
    t.deepEqual(answered, [200, 200, 200, 200, 200, 200]);
    t.is((await notFound.predict()).status, 1000 + grpc.status.NOT_FOUND);
    const held = [serving.admission.admit(), serving.admission.admit()];
    const refused = await client.predict();
    t.is(refused.status, 429);
    t.is(refused.reset, undefined);
    for (const release of held) release();
    t.is((await client.predict()).status, 200);
  } finally {
    client.close();
    notFound.close();
    await serving.close();
  }
});
