// DownloadModel refused: an unknown session or a model the aggregator does not
// serve gets its status at once, over real gRPC from a real aggregator, so a
// refused download neither stalls the node nor holds one of the connection's
// streams (16 of them) open.
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { loadProto } from '../core/proto.js';
import { generateIdentity } from '../core/signing/keys.js';
import { federatedData } from '../datasets/index.js';
import type { AggregatorClient } from '../proto/generated/crowdfl/v1/Aggregator.js';
import type { DownloadModelRequest } from '../proto/generated/crowdfl/v1/DownloadModelRequest.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { joinAs, nextTask, statusOf } from './support/grpc.js';

// Not a bound on speed: without it a regression would hang the test until ava's timeout; with it, the
// assertion names the status that came back (DEADLINE_EXCEEDED) instead of the one expected.
const HANG_GUARD_MS = 60_000;

/** Reads a DownloadModel stream to its end; rejects with the call's status when it is not OK. */
function download(client: AggregatorClient, request: DownloadModelRequest): Promise<number> {
  return new Promise((resolve, reject) => {
    let messages = 0;
    const call = client.DownloadModel(request, { deadline: Date.now() + HANG_GUARD_MS });
    call.on('data', () => messages++);
    call.on('error', reject);
    call.on('end', () => resolve(messages));
  });
}

test('DownloadModel answers NOT_FOUND at once for an unknown session or model, and refused downloads leave the connection usable', async (t) => {
  const experiment = tinyExperiment({ rounds: 1, nodes: 1, selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 600 } });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const agg = await startAggregator({ experiment, runDir: tempDir('download'), runId: 'download', test: testSet, identity: generateIdentity() });
  const proto = loadProto();
  // One client, one connection: every call below shares its stream limit.
  const client: AggregatorClient = new proto.crowdfl.v1.Aggregator(`127.0.0.1:${agg.port}`, grpc.credentials.createInsecure());
  try {
    const node = await joinAs(`127.0.0.1:${agg.port}`);
    const task = await nextTask(node.conn);
    const sessionId = node.conn.session!.session_id;

    // The served model downloads (the baseline the refusals are compared with).
    t.true((await download(client, { session_id: sessionId, model_sha256: task.base_model_sha256 })) > 1);

    const badSession = await statusOf(download(client, { session_id: 'no-such-session', model_sha256: task.base_model_sha256 }));
    t.is(badSession.code, grpc.status.NOT_FOUND, badSession.details);
    t.regex(badSession.details, /unknown or expired session "no-such-session"; call Hello again/);

    const unknownModel = await statusOf(download(client, { session_id: sessionId, model_sha256: 'ab'.repeat(32) }));
    t.is(unknownModel.code, grpc.status.NOT_FOUND, unknownModel.details);
    t.regex(unknownModel.details, /model "(ab){32}" is not served/);

    // More refused downloads than the connection has streams, all at once: each is answered, and the
    // heartbeat after them on the same connection is too.
    const refused = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        statusOf(download(client, i % 2 ? { session_id: `gone-${i}`, model_sha256: task.base_model_sha256 } : { session_id: sessionId, model_sha256: String(i).padStart(64, '0') })),
      ),
    );
    t.deepEqual(refused.map((s) => s.code), Array(20).fill(grpc.status.NOT_FOUND));
    const heartbeat = await statusOf(
      new Promise((resolve, reject) =>
        client.Heartbeat({ session_id: sessionId, task_id: task.task_id }, { deadline: Date.now() + HANG_GUARD_MS }, (err, reply) => (err ? reject(err) : resolve(reply))),
      ),
    );
    t.is(heartbeat.code, grpc.status.OK, heartbeat.details);
    node.conn.close();
  } finally {
    client.close();
    await agg.stop();
  }
});
