// A seeded fuzzer against the real gRPC server: random bytes and mutated valid
// messages on every method, single messages and whole upload streams. The
// aggregator must answer each with a status, accept no update from it, stay
// responsive to a real node, and keep its memory bounded. Replay a failure
// with FUZZ_SEED=<seed>; FUZZ_ITERATIONS sets the count (default 2,000).
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { generateIdentity } from '../core/signing/keys.js';
import { weightManifest } from '../core/model/spec.js';
import { parseModelJson } from '../core/model/zoo.js';
import { loadProto, PROTOCOL_VERSION } from '../core/proto.js';
import { federatedData } from '../datasets/index.js';
import { Rng } from '../core/rng.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { caps, joinAs, nextTask, statusOf } from './support/grpc.js';
import { join } from 'node:path';

const SEED = Number(process.env.FUZZ_SEED ?? 20261126);
// npm test runs the short form; the long form is FUZZ_ITERATIONS=10000 npx ava dist/test/fuzz.test.js.
const ITERATIONS = Number(process.env.FUZZ_ITERATIONS ?? 2_000);
const METHODS = ['HelloChallenge', 'Hello', 'PollTask', 'DownloadModel', 'SubmitUpdate', 'Heartbeat', 'DeclineTask', 'GetTaskOutcome', 'Goodbye'] as const;
type Method = (typeof METHODS)[number];

const raw = (name: Method, requestStream: boolean, responseStream: boolean) => ({
  path: `/crowdfl.v1.Aggregator/${name}`,
  requestStream,
  responseStream,
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
});
const RAW_SERVICE = {
  HelloChallenge: raw('HelloChallenge', false, false),
  Hello: raw('Hello', false, false),
  PollTask: raw('PollTask', false, false),
  DownloadModel: raw('DownloadModel', false, true),
  SubmitUpdate: raw('SubmitUpdate', true, false),
  Heartbeat: raw('Heartbeat', false, false),
  DeclineTask: raw('DeclineTask', false, false),
  GetTaskOutcome: raw('GetTaskOutcome', false, false),
  Goodbye: raw('Goodbye', false, false),
};
type RawClient = grpc.Client & {
  HelloChallenge(req: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Buffer>): grpc.ClientUnaryCall;
  Hello(req: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Buffer>): grpc.ClientUnaryCall;
  PollTask(req: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Buffer>): grpc.ClientUnaryCall;
  Heartbeat(req: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Buffer>): grpc.ClientUnaryCall;
  DeclineTask(req: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Buffer>): grpc.ClientUnaryCall;
  GetTaskOutcome(req: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Buffer>): grpc.ClientUnaryCall;
  Goodbye(req: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Buffer>): grpc.ClientUnaryCall;
  DownloadModel(req: Buffer, md: grpc.Metadata, o: grpc.CallOptions): grpc.ClientReadableStream<Buffer>;
  SubmitUpdate(md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Buffer>): grpc.ClientWritableStream<Buffer>;
};

function randomBytes(rng: Rng, max: number): Buffer {
  const b = Buffer.alloc(rng.int(max + 1));
  for (let i = 0; i < b.length; i++) b[i] = rng.int(256);
  return b;
}

/** Bit flips, truncation, insertion, duplication or a byte overwrite of a valid encoding. */
function mutate(rng: Rng, valid: Buffer): Buffer {
  const b = Buffer.from(valid);
  switch (rng.int(5)) {
    case 0:
      for (let k = 0; k < 1 + rng.int(4) && b.length; k++) b[rng.int(b.length)]! ^= 1 << rng.int(8);
      return b;
    case 1:
      return b.subarray(0, rng.int(b.length + 1));
    case 2: {
      const at = rng.int(b.length + 1);
      return Buffer.concat([b.subarray(0, at), randomBytes(rng, 16), b.subarray(at)]);
    }
    case 3:
      return Buffer.concat([b, b]);
    default:
      if (b.length) b[rng.int(b.length)] = rng.int(256);
      return b;
  }
}

test(`fuzzing every method with ${ITERATIONS} random and mutated messages (seed ${SEED}) crashes nothing and commits nothing`, async (t) => {
  t.timeout(240_000);
  // Two nodes are asked and one update commits the round (over-selection), so the honest node's
  // update closes it no matter what the fuzzing did to the victim's task.
  const experiment = tinyExperiment({ rounds: 1, selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 300, over_selection: 2 } });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const runDir = tempDir('fuzz');
  const agg = await startAggregator({ experiment, runDir, runId: 'fuzz', test: testSet, identity: generateIdentity() });
  const address = `127.0.0.1:${agg.port}`;
  const Client = grpc.makeGenericClientConstructor(RAW_SERVICE, 'Aggregator');
  const client = new Client(address, grpc.credentials.createInsecure()) as unknown as RawClient;
  const service = loadProto().crowdfl.v1.Aggregator.service;
  try {
    // A node with a real session and task, whose ids the mutated messages reuse to get past the first checks.
    const [victim, honest] = await Promise.all([joinAs(address), joinAs(address)]);
    const [task, honestTask] = await Promise.all([nextTask(victim.conn), nextTask(honest.conn)]);
    // Joins once the round's tasks are out, so it is not selected in their place.
    const leaver = await joinAs(address);
    const session = victim.conn.session!.session_id;
    const manifest = weightManifest(parseModelJson(task.model_json));
    const n = manifest.reduce((s, m) => s + m.shape.reduce((a, b) => a * b, 1), 0);
    const valid: Record<Method, Buffer> = {
      Hello: service.Hello.requestSerialize({ protocol_version: PROTOCOL_VERSION, node_id: 'n-0123456789abcdef0123', capabilities: caps, software: 'fuzz', node_public_key: Buffer.alloc(32, 7), timestamp_ms: Date.now(), hello_signature: Buffer.alloc(64, 1), challenge: Buffer.alloc(32, 5) }),
      HelloChallenge: service.HelloChallenge.requestSerialize({ protocol_version: PROTOCOL_VERSION }),
      PollTask: service.PollTask.requestSerialize({ session_id: session, wait_ms: 0 }),
      DownloadModel: service.DownloadModel.requestSerialize({ session_id: session, model_sha256: task.base_model_sha256 }),
      Heartbeat: service.Heartbeat.requestSerialize({ session_id: session, task_id: task.task_id, progress: 0.5 }),
      DeclineTask: service.DeclineTask.requestSerialize({ session_id: session, task_id: task.task_id, reason: 'fuzz', kind: 'OVER_CAP' }),
      GetTaskOutcome: service.GetTaskOutcome.requestSerialize({ session_id: session, task_id: task.task_id }),
      // Another node's session: a goodbye that gets through ends it, not the victim's.
      Goodbye: service.Goodbye.requestSerialize({ session_id: leaver.conn.session!.session_id, reason: 'fuzz' }),
      SubmitUpdate: service.SubmitUpdate.requestSerialize({
        meta: {
          session_id: session, task_id: task.task_id, experiment_id: task.experiment_id, round: task.round,
          base_model_sha256: task.base_model_sha256, num_examples: 10,
          manifest: { tensors: manifest.map((m) => ({ name: m.name, dtype: 'FLOAT32', shape: [...m.shape] })), total_bytes: n * 4 },
        },
      }),
    };
    const seal = service.SubmitUpdate.requestSerialize({ seal: { update_sha256: 'a'.repeat(64), signature: Buffer.alloc(64, 3) } });
    const data = service.SubmitUpdate.requestSerialize({ data: Buffer.alloc(Math.min(n * 4, 4096), 1) });

    // The honest node keeps its lease alive while the fuzzing runs, as a training node would.
    const beat = setInterval(() => void honest.conn.heartbeat(honestTask.task_id, 0.5).catch(() => {}), 1000);
    const rng = new Rng(SEED);
    const rssBefore = process.memoryUsage().rss;
    const codes = new Map<number, number>();
    let submitOk = 0;
    // Short deadlines: a mutated poll may ask the server to hold it; the client gives up, the server must cope.
    const opts = (): grpc.CallOptions => ({ deadline: Date.now() + 1000 });
    const one = (): Promise<{ code: number; details: string }> => {
      const method = METHODS[rng.int(METHODS.length)]!;
      const message = () => (rng.int(3) === 0 ? randomBytes(rng, 512) : mutate(rng, valid[method]));
      switch (method) {
        case 'HelloChallenge':
        case 'Hello':
        case 'PollTask':
        case 'Heartbeat':
        case 'DeclineTask':
        case 'GetTaskOutcome':
        case 'Goodbye': {
          const req = message();
          return statusOf(new Promise((res, rej) => client[method](req, new grpc.Metadata(), opts(), (e, r) => (e ? rej(e) : res(r)))));
        }
        case 'DownloadModel': {
          const req = message();
          return statusOf(
            new Promise((res, rej) => {
              const call = client.DownloadModel(req, new grpc.Metadata(), opts());
              call.on('data', () => {});
              call.on('error', rej);
              call.on('end', res);
            }),
          );
        }
        case 'SubmitUpdate': {
          const parts = Array.from({ length: 1 + rng.int(5) }, (_, i) =>
            i === 0 ? message() : [data, seal, valid.SubmitUpdate, randomBytes(rng, 256)][rng.int(4)]!,
          );
          const ended = rng.int(10) !== 0; // sometimes the stream is cut off instead of ended
          return statusOf(
            new Promise((res, rej) => {
              const call = client.SubmitUpdate(new grpc.Metadata(), opts(), (e, r) => (e ? rej(e) : res(r)));
              for (const p of parts) call.write(p);
              if (ended) call.end();
              else setTimeout(() => call.cancel(), 5);
            }),
          ).then((s) => {
            if (s.code === grpc.status.OK) submitOk++;
            return s;
          });
        }
      }
    };
    // 64 calls in flight at any time.
    let started = 0;
    let slowest = 0;
    // INTERNAL is what grpc-js answers for bytes that do not decode as the request message; anything
    // else under INTERNAL would be a handler failing on input it should have refused by name.
    const internal = new Map<string, number>();
    const worker = async () => {
      while (started < ITERATIONS) {
        started++;
        const t0 = Date.now();
        const s = await one();
        slowest = Math.max(slowest, Date.now() - t0);
        codes.set(s.code, (codes.get(s.code) ?? 0) + 1);
        if (s.code === grpc.status.INTERNAL) internal.set(s.details, (internal.get(s.details) ?? 0) + 1);
      }
    };
    await Promise.all(Array.from({ length: 64 }, worker)).finally(() => clearInterval(beat));
    const rssGrowthMb = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    t.log(`statuses: ${[...codes].map(([c, k]) => `${grpc.status[c]} ${k}`).join(', ')}; RSS grew ${rssGrowthMb.toFixed(0)} MiB; slowest answer ${slowest} ms`);
    t.is([...codes.values()].reduce((a, b) => a + b, 0), ITERATIONS, 'every message got an answer');
    t.is(submitOk, 0, 'no fuzzed upload was accepted');
    t.log(`INTERNAL answers: ${[...internal].map(([d, k]) => `${k}× ${JSON.stringify(d.slice(0, 80))}`).join(', ') || 'none'}`);
    t.deepEqual(
      [...internal.keys()].filter((d) => !/^Error deserializing request|^Failed to parse/i.test(d)),
      [],
      'every INTERNAL is a message grpc-js could not decode, not a handler failure',
    );
    t.true(rssGrowthMb < 300, `memory stayed bounded (RSS grew ${rssGrowthMb.toFixed(0)} MiB)`);

    // Still serving: the other node's real update is accepted and commits the round.
    const reply = await honest.conn.submitUpdate(
      {
        taskId: honestTask.task_id, experimentId: honestTask.experiment_id, round: honestTask.round, baseModelSha256: honestTask.base_model_sha256,
        numExamples: 10, manifest, delta: new Float32Array(n).fill(1e-3),
        metrics: { loss: 1, accuracy: 0.5, train_seconds: 0.1, examples_per_second: 100, epochs_completed: 1, partial: false },
      },
      honest.identity,
    );
    t.regex(reply, /accepted into round 1/);
    const summary = await agg.done;
    t.is(summary.rounds.length, 1);
    t.is(summary.rounds[0]!.participants, 1, 'only the honest update was aggregated');
    const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
    const kept = new RunStore(db).updatesOfRound('fuzz', 1).filter((u) => u.verdict !== 'rejected');
    close();
    t.deepEqual(kept.map((u) => u.taskId), [honestTask.task_id]);
  } finally {
    client.close();
    await agg.stop();
  }
});
