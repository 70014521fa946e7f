// Hostile bytes, oversized fields and floods on the wire, over real gRPC to a
// real aggregator: bytes that are not a protobuf message are the caller's
// mistake (INVALID_ARGUMENT, never INTERNAL), an error repeats at most a short,
// quoted stretch of what the caller sent, and refused calls are kept on record
// within bounds.
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { join } from 'node:path';
import { startAggregator, type AggregatorOptions, type RunningAggregator } from '../aggregator/aggregator.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { ECHO_MAX_CHARS } from '../aggregator/rpc-error.js';
import { loadProto, PROTOCOL_VERSION } from '../core/proto.js';
import { Rng } from '../core/rng.js';
import { generateIdentity } from '../core/signing/keys.js';
import { federatedData } from '../datasets/index.js';
import type { AggregatorClient } from '../proto/generated/crowdfl/v1/Aggregator.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { joinAs, nextTask, statusOf } from './support/grpc.js';

// Not a bound on speed: a regression that left a call unanswered fails with DEADLINE_EXCEEDED instead of hanging.
const HANG_GUARD_MS = 60_000;
const deadline = () => ({ deadline: Date.now() + HANG_GUARD_MS });

async function aggregator(name: string, options: Partial<AggregatorOptions> = {}): Promise<RunningAggregator & { runDir: string }> {
  const experiment = tinyExperiment({ rounds: 1, nodes: 1, selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 600 } });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const runDir = tempDir(name);
  return { ...(await startAggregator({ experiment, runDir, runId: name, test: testSet, identity: generateIdentity(), ...options })), runDir };
}

/** Sends `bytes` as the request of `method` (its only message, for a stream) and returns the status it gets. */
function sendRaw(client: grpc.Client, method: grpc.MethodDefinition<unknown, unknown>, bytes: Buffer) {
  const same = (b: Buffer) => b;
  if (method.requestStream) {
    return statusOf(
      new Promise((resolve, reject) => {
        const call = client.makeClientStreamRequest(method.path, same, same, deadline(), (e, r) => (e ? reject(e) : resolve(r)));
        call.write(bytes);
        call.end();
      }),
    );
  }
  if (method.responseStream) {
    return statusOf(
      new Promise((resolve, reject) => {
        const call = client.makeServerStreamRequest(method.path, same, same, bytes, deadline());
        call.on('data', () => {});
        call.on('error', reject);
        call.on('end', resolve);
      }),
    );
  }
  return statusOf(new Promise((resolve, reject) => client.makeUnaryRequest(method.path, same, same, bytes, deadline(), (e, r) => (e ? reject(e) : resolve(r)))));
}

test('bytes that are not a protobuf message get INVALID_ARGUMENT from every method, never INTERNAL', async (t) => {
  const agg = await aggregator('undecodable');
  const client = new grpc.Client(`127.0.0.1:${agg.port}`, grpc.credentials.createInsecure());
  try {
    const methods = Object.entries(loadProto().crowdfl.v1.Aggregator.service);
    t.true(methods.length >= 9);
    // Field 2000 (no message has it, so the decoder skips it) of wire type 7, which protobuf does not have.
    const undecodable = Buffer.from([0x87, 0x7d]);
    for (const [name, method] of methods) {
      const s = await sendRaw(client, method, undecodable);
      t.is(s.code, grpc.status.INVALID_ARGUMENT, `${name}: ${s.details}`);
      t.regex(s.details, new RegExp(`the ${name} request is not a protobuf message of crowdfl's protocol \\(.+\\); send it with a crowdfl node`));
    }
    // Random bytes (seeded): some decode into messages the handlers then refuse, none is answered as the aggregator's own failure.
    const rng = new Rng(19);
    for (let i = 0; i < 20; i++) {
      const bytes = Buffer.from(Array.from({ length: 1 + rng.int(64) }, () => rng.int(256)));
      for (const [name, method] of methods) {
        const s = await sendRaw(client, method, bytes);
        t.false([grpc.status.INTERNAL, grpc.status.UNKNOWN].includes(s.code), `${name} answered ${bytes.toString('hex')} with ${s.code}: ${s.details}`);
      }
    }
  } finally {
    client.close();
    await agg.stop();
  }
});

test('an error repeats at most a short stretch of an oversized field, and says how long it was', async (t) => {
  const agg = await aggregator('echo');
  const proto = loadProto();
  const client: AggregatorClient = new proto.crowdfl.v1.Aggregator(`127.0.0.1:${agg.port}`, grpc.credentials.createInsecure());
  const huge = 'x'.repeat(200_000);
  // What a bounded echo of `huge` looks like: the quoted start, then its length.
  const echoed = new RegExp(`"x{${ECHO_MAX_CHARS}}"… \\(200000 characters\\)`);
  const unary = (call: (cb: (e: grpc.ServiceError | null, r?: unknown) => void) => void) =>
    statusOf(new Promise((resolve, reject) => call((e, r) => (e ? reject(e) : resolve(r)))));
  try {
    const node = await joinAs(`127.0.0.1:${agg.port}`);
    const task = await nextTask(node.conn);
    const session = node.conn.session!.session_id;
    const refusals = {
      PollTask: await unary((cb) => client.PollTask({ session_id: huge, wait_ms: 1 }, deadline(), cb)),
      Heartbeat: await unary((cb) => client.Heartbeat({ session_id: huge }, deadline(), cb)),
      GetTaskOutcome: await unary((cb) => client.GetTaskOutcome({ session_id: session, task_id: huge }, deadline(), cb)),
      DeclineTask: await unary((cb) => client.DeclineTask({ session_id: session, task_id: huge, reason: 'testing' }, deadline(), cb)),
      DownloadModel: await statusOf(
        new Promise((resolve, reject) => {
          const call = client.DownloadModel({ session_id: session, model_sha256: huge }, deadline());
          call.on('data', () => {});
          call.on('error', reject);
          call.on('end', resolve);
        }),
      ),
      SubmitUpdate: await statusOf(
        new Promise((resolve, reject) => {
          const call = client.SubmitUpdate(deadline(), (e, r) => (e ? reject(e) : resolve(r)));
          call.write({ meta: { session_id: session, task_id: huge, experiment_id: task.experiment_id, round: task.round } });
          call.end();
        }),
      ),
    };
    for (const [method, s] of Object.entries(refusals)) {
      t.not(s.code, grpc.status.OK, method);
      t.regex(s.details, echoed, `${method}: ${s.details.slice(0, 300)}`);
      t.true(s.details.length < 400, `${method} answered ${s.details.length} characters`);
    }
    node.conn.close();
  } finally {
    client.close();
    await agg.stop();
  }
});

test('a flood of refused hellos with fresh keys from one address is answered in full but recorded only up to its bound', async (t) => {
  const perAddress = 25;
  const agg = await aggregator('refusal-flood', { refusalBounds: { perAddress, burst: 10_000, perSecond: 10_000 } });
  const proto = loadProto();
  const client: AggregatorClient = new proto.crowdfl.v1.Aggregator(`127.0.0.1:${agg.port}`, grpc.credentials.createInsecure());
  const hello = (i: number) =>
    statusOf(
      new Promise((resolve, reject) =>
        client.Hello(
          // A fresh key each time is a new node id each time: the store's bound per node never applies.
          { protocol_version: PROTOCOL_VERSION + 1, node_public_key: generateIdentity().publicKey, capabilities: { num_examples: i } },
          deadline(),
          (e, r) => (e ? reject(e) : resolve(r)),
        ),
      ),
    );
  try {
    const answers = await Promise.all(Array.from({ length: 3 * perAddress }, (_, i) => hello(i)));
    t.deepEqual(new Set(answers.map((s) => s.code)), new Set([grpc.status.FAILED_PRECONDITION]));
  } finally {
    client.close();
    await agg.stop();
  }
  const { db, close } = openDatabase(join(agg.runDir, 'crowdfl.db'));
  const rows = new RunStore(db).refusalRows();
  close();
  t.is(rows.length, perAddress);
  t.is(new Set(rows.map((r) => r.nodeId)).size, perAddress);
  t.regex(rows[0]!.reason, /protocol version \d+ is not supported/);
});
