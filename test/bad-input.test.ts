// Hostile and broken input over real gRPC: each gets a clear status, the
// aggregator keeps serving, and only valid updates reach the global model.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { readCheckpointWeights } from '../aggregator/store/checkpoints.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { loadProto, PROTOCOL_VERSION } from '../core/proto.js';
import { float32ToBytes, sha256Hex, type TensorEntry } from '../core/tensor-codec.js';
import { federatedData } from '../datasets/index.js';
import type { AggregatorClient } from '../proto/generated/crowdfl/v1/Aggregator.js';
import type { Task__Output } from '../proto/generated/crowdfl/v1/Task.js';
import { AggregatorConnection } from '../trainer/client.js';
import { weightManifest } from '../core/model/spec.js';
import { parseModelJson } from '../core/model/zoo.js';
import { runCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { caps, joinAs, nextTask, statusOf } from './support/grpc.js';
import { generateIdentity, type Identity } from '../core/signing/keys.js';

function rawClient(port: number): AggregatorClient {
  const proto = loadProto();
  return new proto.crowdfl.v1.Aggregator(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

async function join2(port: number): Promise<{ conn: AggregatorConnection; task: Task__Output; identity: Identity }> {
  const { conn, identity } = await joinAs(`127.0.0.1:${port}`);
  return { conn, task: await nextTask(conn), identity };
}

function submission(task: Task__Output, manifest: readonly TensorEntry[], delta: Float32Array) {
  return {
    taskId: task.task_id,
    experimentId: task.experiment_id,
    round: task.round,
    baseModelSha256: task.base_model_sha256,
    numExamples: 50,
    metrics: { loss: 1, accuracy: 0.5, train_seconds: 0.1, examples_per_second: 500, epochs_completed: 1, partial: false },
    manifest,
    delta,
  };
}

test('bad input gets clear statuses and never touches the global model', async (t) => {
  const experiment = tinyExperiment({
    rounds: 2,
    selection: { nodes_per_round: 2, min_updates: 1, deadline_seconds: 30 },
  });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const runDir = tempDir('bad-input');
  const agg = await startAggregator({ experiment, runDir, runId: 'bad-input', test: testSet, identity: generateIdentity() });
  const client = rawClient(agg.port);
  try {
    // Wrong protocol version, bad node id, unknown session.
    const hello = (req: object) =>
      new Promise((res, rej) => client.Hello(req, (e, r) => (e ? rej(e) : res(r))));
    let s = await statusOf(hello({ protocol_version: 99, node_id: 'x', capabilities: caps }));
    t.is(s.code, grpc.status.FAILED_PRECONDITION);
    t.regex(s.details, /protocol version 99 is not supported/);
    s = await statusOf(hello({ protocol_version: PROTOCOL_VERSION, node_id: 'bad id with spaces', capabilities: caps }));
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    s = await statusOf(hello({ protocol_version: PROTOCOL_VERSION, node_id: 'n-0', capabilities: caps }));
    t.is(s.code, grpc.status.UNAUTHENTICATED);
    t.regex(s.details, /no 32-byte Ed25519 node_public_key/);
    s = await statusOf(new Promise((res, rej) => client.PollTask({ session_id: 'nope', wait_ms: 10 }, (e, r) => (e ? rej(e) : res(r)))));
    t.is(s.code, grpc.status.NOT_FOUND);
    t.regex(s.details, /call Hello again/);

    // Bytes that are not a protobuf message at all.
    const raw = new grpc.Client(`127.0.0.1:${agg.port}`, grpc.credentials.createInsecure());
    s = await statusOf(
      new Promise((res, rej) =>
        raw.makeUnaryRequest(
          '/crowdfl.v1.Aggregator/Hello',
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]),
          (e, r) => (e ? rej(e) : res(r)),
        ),
      ),
    );
    raw.close();
    t.is(s.code, grpc.status.INVALID_ARGUMENT, s.details);

    const [a, b] = await Promise.all([join2(agg.port), join2(agg.port)]);
    t.is(a.task.round, 1);
    const spec = parseModelJson(a.task.model_json);
    const manifest = weightManifest(spec);
    const n = manifest.reduce((sum, m) => sum + m.shape.reduce((x, y) => x * y, 1), 0);

    // Download the base model: it hashes to its address.
    const base = await a.conn.downloadModel(a.task.base_model_sha256, manifest);
    t.is(sha256Hex(float32ToBytes(base)), a.task.base_model_sha256);

    // Wrong shape: refused before any bytes are read.
    const wrongShape = [{ ...manifest[0]!, shape: [manifest[0]!.shape[0]! + 1, ...manifest[0]!.shape.slice(1)] }, ...manifest.slice(1)];
    s = await statusOf(a.conn.submitUpdate(submission(a.task, wrongShape, new Float32Array(n)), a.identity));
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    t.regex(s.details, /does not fit the model: tensor 0/);

    // The task was answered (rejected); a second try is a duplicate.
    s = await statusOf(a.conn.submitUpdate(submission(a.task, manifest, new Float32Array(n)), a.identity));
    t.is(s.code, grpc.status.ALREADY_EXISTS);

    // A stream whose first message is not metadata.
    s = await statusOf(
      new Promise((res, rej) => {
        const call = client.SubmitUpdate((e, r) => (e ? rej(e) : res(r)));
        call.write({ data: Buffer.alloc(16) });
        call.end();
      }),
    );
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    t.regex(s.details, /first message of SubmitUpdate must carry meta/);

    // A chunk beyond gRPC's message limit for this server.
    s = await statusOf(
      new Promise((res, rej) => {
        const call = client.SubmitUpdate((e, r) => (e ? rej(e) : res(r)));
        call.write({ data: Buffer.alloc(3 * 1024 * 1024) });
        call.end();
      }),
    );
    t.is(s.code, grpc.status.RESOURCE_EXHAUSTED);

    // A task assigned to b submitted from a's session.
    s = await statusOf(a.conn.submitUpdate(submission(b.task, manifest, new Float32Array(n)), a.identity));
    t.is(s.code, grpc.status.PERMISSION_DENIED);

    // A raw upload for b's task: its metadata, then the given messages, then the end of the stream.
    const rawUpload = (...after: object[]) =>
      statusOf(
        new Promise((res, rej) => {
          const call = client.SubmitUpdate((e, r) => (e ? rej(e) : res(r)));
          call.write({
            meta: {
              session_id: b.conn.session!.session_id,
              task_id: b.task.task_id,
              experiment_id: b.task.experiment_id,
              round: 1,
              base_model_sha256: b.task.base_model_sha256,
              num_examples: 10,
              manifest: { tensors: manifest.map((m) => ({ name: m.name, dtype: 'FLOAT32', shape: [...m.shape] })), total_bytes: n * 4 },
            },
          });
          for (const m of after) call.write(m);
          call.end();
        }),
      );

    // Truncated stream: fewer bytes than announced; b may then still submit.
    s = await rawUpload({ data: Buffer.alloc(8) });
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    t.regex(s.details, /stream ended after 8 of/);

    // A seal that is not the last message; b may still submit afterwards.
    s = await rawUpload({ seal: { update_sha256: '0'.repeat(64), signature: Buffer.alloc(64, 1) } }, { data: Buffer.alloc(8) });
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    t.regex(s.details, /the seal must be the last message/);

    // The good update from b.
    const delta = new Float32Array(n).map((_, i) => ((i % 7) - 3) * 1e-3);
    t.regex(await b.conn.submitUpdate(submission(b.task, manifest, delta), b.identity), /accepted into round 1/);

    // Round 1 has committed with only b's update: base + delta exactly.
    const summary1 = await waitForRound(runDir, 'bad-input', 1);
    const expected = new Float32Array(n).map((_, i) => base[i]! + delta[i]!);
    const committed = readCheckpointWeights(join(runDir, 'checkpoints', 'round-0001'));
    t.is(committed.sha256, sha256Hex(float32ToBytes(expected)));
    t.is(summary1.modelSha256, committed.sha256);

    // Late: round 1 is closed.
    s = await statusOf(b.conn.submitUpdate(submission(b.task, manifest, delta), b.identity));
    t.is(s.code, grpc.status.FAILED_PRECONDITION);
    t.regex(s.details, /round 1 closed/);

    // NaN in round 2 is refused, the aggregator keeps going.
    const [a2, b2] = await Promise.all([nextTask(a.conn), nextTask(b.conn)]);
    t.is(a2.round, 2);
    const poisoned = new Float32Array(n);
    poisoned[5] = Number.NaN;
    s = await statusOf(a.conn.submitUpdate(submission(a2, manifest, poisoned), a.identity));
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    t.regex(s.details, /update value 5 is NaN/);
    // Stale base model.
    s = await statusOf(b.conn.submitUpdate({ ...submission(b2, manifest, delta), baseModelSha256: a.task.base_model_sha256 }, b.identity));
    t.is(s.code, grpc.status.FAILED_PRECONDITION);
    t.regex(s.details, /stale base model/);

    // Round 2 has no valid update and can only time out; stop the run here.
    await agg.stop();
    const summary = await agg.done;
    t.is(summary.rounds.length, 1);
  } finally {
    client.close();
    await agg.stop();
  }
  // Every refusal tied to a task is on record with its reason.
  const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
  const ups = new RunStore(db).updatesOfRound('bad-input', 1);
  const refused = new RunStore(db).refusalRows();
  close();
  t.deepEqual(ups.map((u) => u.verdict).sort(), ['kept', 'rejected']);
  t.true(ups.some((u) => /does not fit the model/.test(u.reason)));
  // Every other refused upload is on record too, kept as an upload refusal with its reason.
  const uploads = refused.filter((r) => r.kind === 'upload');
  for (const why of [
    /already answered/,
    /first message of SubmitUpdate must carry meta/,
    /cancelled before it finished/,
    /was not assigned to this node/,
    /stream ended after 8 of/,
    /the seal must be the last message/,
    /round 1 closed/,
    /stale base model/,
  ]) {
    t.true(uploads.some((r) => why.test(r.reason)), `no refusal row matches ${why}`);
  }
  const show = await runCli(['runs', 'show', runDir]);
  t.regex(show.stdout, new RegExp(`refused before any round: ${refused.length} call\\(s\\)\\n(  +\\d+  (hello|upload): .+\\n)+`));
});

async function waitForRound(runDir: string, runId: string, round: number) {
  for (let i = 0; i < 200; i++) {
    const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
    const row = new RunStore(db).committedRounds(runId).find((r) => r.round === round);
    close();
    if (row) return row;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`round ${round} never committed`);
}

test('an upload cut off by gRPC (a message over the size limit) frees its task at once: the honest retry is taken', async (t) => {
  const experiment = tinyExperiment({ rounds: 1, selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 600 } });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const agg = await startAggregator({ experiment, runDir: tempDir('oversized'), runId: 'oversized', test: testSet, identity: generateIdentity() });
  const client = rawClient(agg.port);
  try {
    const { conn, task, identity } = await join2(agg.port);
    const manifest = weightManifest(parseModelJson(task.model_json));
    const n = manifest.reduce((sum, m) => sum + m.shape.reduce((x, y) => x * y, 1), 0);
    const oversized = await statusOf(
      new Promise((res, rej) => {
        const call = client.SubmitUpdate((e, r) => (e ? rej(e) : res(r)));
        call.write({
          meta: {
            session_id: conn.session!.session_id, task_id: task.task_id, experiment_id: task.experiment_id, round: task.round,
            base_model_sha256: task.base_model_sha256, num_examples: 50,
            manifest: { tensors: manifest.map((m) => ({ name: m.name, dtype: 'FLOAT32', shape: [...m.shape] })), total_bytes: n * 4 },
          },
        });
        call.write({ data: Buffer.alloc(5 * 1024 * 1024) });
        call.end();
      }),
    );
    t.is(oversized.code, grpc.status.RESOURCE_EXHAUSTED, oversized.details);
    // The retry comes long before the round's 600 s deadline: a task left "receiving" would refuse it ALREADY_EXISTS.
    const message = await conn.submitUpdate(submission(task, manifest, new Float32Array(n).fill(1e-3)), identity);
    t.regex(message, /accepted into round 1/);
    const summary = await agg.done;
    t.is(summary.rounds.length, 1);
  } finally {
    client.close();
    await agg.stop();
  }
});
