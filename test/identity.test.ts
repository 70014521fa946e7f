// Identities and signatures over real gRPC: who may join, which tasks a node
// accepts, which updates the aggregator accepts, and the signed round record.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { startAggregator, type RunningAggregator } from '../aggregator/aggregator.js';
import type { AdmissionPolicy } from '../aggregator/nodes/joining.js';
import { HelloChallenges } from '../aggregator/nodes/hello-challenges.js';
import { auditRun } from '../lab/audit.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { generateIdentity, nodeIdFromPublicKey, publicKeyToString, type Identity } from '../core/signing/keys.js';
import { weightManifest } from '../core/model/spec.js';
import { parseModelJson } from '../core/model/zoo.js';
import { loadProto, PROTOCOL_VERSION } from '../core/proto.js';
import { createInvitation } from '../core/signing/invitations.js';
import { sign } from '../core/signing/ed25519.js';
import { helloDigest, updateDigest } from '../core/signing/layouts.js';
import { float32ToBytes, sha256Hex } from '../core/tensor-codec.js';
import { federatedData } from '../datasets/index.js';
import type { Task__Output } from '../proto/generated/crowdfl/v1/Task.js';
import { AggregatorConnection } from '../trainer/client.js';
import { taskProblem } from '../trainer/task-check.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { caps, joinAs, nextTask, statusOf } from './support/grpc.js';


async function aggregator(admission: AdmissionPolicy = { mode: 'open' }, nodesPerRound = 1) {
  const experiment = tinyExperiment({
    rounds: 1,
    nodes: Math.max(3, nodesPerRound),
    selection: { nodes_per_round: nodesPerRound, min_updates: 1, deadline_seconds: 20 },
  });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const runDir = tempDir('identity');
  const identity = generateIdentity();
  const runId = `id-${Math.random().toString(36).slice(2, 8)}`;
  const agg = await startAggregator({ experiment, runDir, runId, test: testSet, identity, admission });
  return { agg, identity, runDir, runId, address: `127.0.0.1:${agg.port}` };
}

const join2 = (address: string, identity = generateIdentity(), pinned?: Uint8Array, invitation?: string) =>
  joinAs(address, identity, { pinned, invitation });

async function stop(agg: RunningAggregator) {
  await agg.stop();
}

test('a hello must prove the key it names, over a fresh single-use challenge, with a sane clock', async (t) => {
  const { agg, address } = await aggregator();
  const proto = loadProto();
  const client = new proto.crowdfl.v1.Aggregator(address, grpc.credentials.createInsecure());
  const hello = (req: object) => statusOf(new Promise((res, rej) => client.Hello(req, (e, r) => (e ? rej(e) : res(r)))));
  const challenge = () =>
    new Promise<Buffer>((res, rej) =>
      client.HelloChallenge({ protocol_version: PROTOCOL_VERSION }, (e, r) => (e ? rej(e) : res(Buffer.from(r!.challenge)))),
    );
  const node = generateIdentity();
  const other = generateIdentity();
  const base = { protocol_version: PROTOCOL_VERSION, capabilities: caps, node_public_key: Buffer.from(node.publicKey) };
  const signed = (id: Identity, ts: number, c: Buffer) =>
    Buffer.from(sign(helloDigest({ node_public_key: node.publicKey, timestamp_ms: ts, challenge: c }), id));
  try {
    const now = Date.now();
    let c = await challenge();
    let s = await hello({ ...base, timestamp_ms: now, challenge: c, hello_signature: signed(other, now, c) });
    t.is(s.code, grpc.status.UNAUTHENTICATED);
    t.regex(s.details, /hello_signature does not verify/);
    const old = now - 3_600_000;
    s = await hello({ ...base, timestamp_ms: old, challenge: c, hello_signature: signed(node, old, c) });
    t.is(s.code, grpc.status.UNAUTHENTICATED);
    t.regex(s.details, /off this aggregator's clock/);
    s = await hello({ ...base, node_id: 'n-someoneelse', timestamp_ms: now, challenge: c, hello_signature: signed(node, now, c) });
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    t.regex(s.details, /is not the id of this key/);
    // No challenge, or one the aggregator never issued: refused even with a valid signature over it.
    s = await hello({ ...base, timestamp_ms: now, hello_signature: Buffer.alloc(64, 1) });
    t.is(s.code, grpc.status.UNAUTHENTICATED);
    t.regex(s.details, /no 32-byte challenge; call HelloChallenge first/);
    const forged = Buffer.alloc(32, 9);
    s = await hello({ ...base, timestamp_ms: now, challenge: forged, hello_signature: signed(node, now, forged) });
    t.is(s.code, grpc.status.UNAUTHENTICATED);
    t.regex(s.details, /challenge unknown or already used/);
    // The failed attempts above did not spend the challenge: only a proven hello does, once.
    const good = { ...base, timestamp_ms: now, challenge: c, hello_signature: signed(node, now, c) };
    s = await hello(good);
    t.is(s.code, grpc.status.OK);
    s = await hello(good);
    t.is(s.code, grpc.status.UNAUTHENTICATED, 'the same hello sent again (a replay) opens no session');
    t.regex(s.details, /challenge unknown or already used \(a replayed hello\?\)/);
    c = await challenge();
    s = await hello({ ...base, timestamp_ms: now, challenge: c, hello_signature: signed(node, now, c) });
    t.is(s.code, grpc.status.OK, 'a fresh challenge joins again');
    s = await statusOf(
      new Promise((res, rej) => client.HelloChallenge({ protocol_version: PROTOCOL_VERSION - 1 }, (e, r) => (e ? rej(e) : res(r)))),
    );
    t.is(s.code, grpc.status.FAILED_PRECONDITION);
    t.regex(s.details, /protocol version \d+ is not supported/);
  } finally {
    client.close();
    await stop(agg);
  }
});

test('hello challenges expire, are spent once, and stay bounded in number', (t) => {
  let now = 1_000_000;
  const challenges = new HelloChallenges({ ttlMs: 1000, maxOutstanding: 3 }, () => now);
  const a = challenges.issue();
  t.is(a.challenge.length, 32);
  t.is(a.expiresUnixMs, now + 1000);
  t.true(challenges.redeem(a.challenge).ok);
  t.deepEqual(challenges.redeem(a.challenge), { ok: false, reason: 'hello challenge unknown or already used (a replayed hello?); ask HelloChallenge for a fresh one' });
  const b = challenges.issue();
  now += 1001;
  t.deepEqual(challenges.redeem(b.challenge), { ok: false, reason: 'hello challenge expired; ask HelloChallenge for a fresh one' });
  const issued = Array.from({ length: 5 }, () => challenges.issue());
  t.true(challenges.outstanding <= 3);
  t.false(challenges.redeem(issued[0]!.challenge).ok, 'the oldest is forgotten first');
  t.true(challenges.redeem(issued[4]!.challenge).ok);
  t.not(issued[3]!.challenge.toString('hex'), issued[4]!.challenge.toString('hex'));
  t.false(challenges.redeem(new Uint8Array(31)).ok);
});

test('banned keys, allowlists and invitations decide who joins', async (t) => {
  // Ban.
  const open = await aggregator();
  const banned = generateIdentity();
  const db = openDatabase(join(open.runDir, 'crowdfl.db'));
  new RunStore(db.db).banNode(nodeIdFromPublicKey(banned.publicKey), publicKeyToString(banned.publicKey), 'poisoned updates');
  db.close();
  let s = await statusOf(join2(open.address, banned));
  t.is(s.code, grpc.status.PERMISSION_DENIED);
  t.regex(s.details, /is banned: poisoned updates/);
  const after = openDatabase(join(open.runDir, 'crowdfl.db'));
  const refused = new RunStore(after.db).refusalRows();
  after.close();
  t.is(refused.length, 1);
  t.is(refused[0]!.nodeId, nodeIdFromPublicKey(banned.publicKey));
  t.regex(refused[0]!.reason, /is banned/);
  await stop(open.agg);

  // Allowlist.
  const friend = generateIdentity();
  const listed = await aggregator({ mode: 'allowlist', publicKeys: new Set([publicKeyToString(friend.publicKey)]) });
  s = await statusOf(join2(listed.address));
  t.is(s.code, grpc.status.PERMISSION_DENIED);
  t.regex(s.details, /not on this aggregator's allowlist/);
  t.is((await statusOf(join2(listed.address, friend))).code, grpc.status.OK);
  await stop(listed.agg);

  // Invitations: signed by this aggregator, unexpired, within their use count.
  const invited = await aggregator({ mode: 'invitation' });
  s = await statusOf(join2(invited.address));
  t.is(s.code, grpc.status.PERMISSION_DENIED);
  t.regex(s.details, /by invitation only/);
  const forged = createInvitation(generateIdentity(), { expiresAt: Date.now() + 60_000, maxUses: 5 });
  s = await statusOf(join2(invited.address, generateIdentity(), undefined, forged));
  t.is(s.code, grpc.status.PERMISSION_DENIED);
  t.regex(s.details, /invitation refused/);
  const expired = createInvitation(invited.identity, { expiresAt: Date.now() - 1000, maxUses: 5 });
  s = await statusOf(join2(invited.address, generateIdentity(), undefined, expired));
  t.regex(s.details, /invitation expired/);
  const once = createInvitation(invited.identity, { expiresAt: Date.now() + 60_000, maxUses: 1 });
  t.is((await statusOf(join2(invited.address, generateIdentity(), undefined, once))).code, grpc.status.OK);
  s = await statusOf(join2(invited.address, generateIdentity(), undefined, once));
  t.is(s.code, grpc.status.PERMISSION_DENIED);
  t.regex(s.details, /has been used 1 time\(s\) already/);
  await stop(invited.agg);
});

test('a node refuses an impostor aggregator and any task that is not signed for it', async (t) => {
  const { agg, address, identity } = await aggregator();
  try {
    // A node that pinned another aggregator's key: its hello is bound to that key, so the two
    // cannot be confused in either direction.
    const s = await statusOf(join2(address, generateIdentity(), generateIdentity().publicKey));
    t.is(s.code, grpc.status.UNAUTHENTICATED);
    t.regex(s.details, /this is not the aggregator it trusts/);

    const { conn, identity: node } = await join2(address, generateIdentity(), identity.publicKey);
    const task = await nextTask(conn);
    const nodeId = nodeIdFromPublicKey(node.publicKey);
    t.is(taskProblem(task, nodeId, identity.publicKey), undefined);
    t.regex(taskProblem(task, nodeId, generateIdentity().publicKey)!, /does not verify/);
    t.regex(taskProblem(task, 'n-other', identity.publicKey)!, /addressed to/);
    t.regex(taskProblem({ ...task, signature: Buffer.alloc(0) }, nodeId, identity.publicKey)!, /unsigned/);
    const altered: Task__Output[] = [
      { ...task, round: task.round + 1 },
      { ...task, base_model_sha256: sha256Hex(Buffer.from('other')) },
      { ...task, model_json: task.model_json.replace('"units":10', '"units":11') },
      { ...task, deadline_unix_ms: Number(task.deadline_unix_ms) + 1 },
      { ...task, training: { ...task.training!, learning_rate: task.training!.learning_rate * 10 } },
      { ...task, training: { ...task.training!, epochs: task.training!.epochs + 1 } },
    ];
    for (const a of altered) t.regex(taskProblem(a, nodeId, identity.publicKey)!, /does not verify/);
    const flipped = Buffer.from(task.signature);
    flipped[0] = flipped[0]! ^ 1;
    t.regex(taskProblem({ ...task, signature: flipped }, nodeId, identity.publicKey)!, /does not verify/);
  } finally {
    await stop(agg);
  }
});

test('updates must be signed by the node they were assigned to, over the bytes sent', async (t) => {
  const { agg, address, runDir, runId, identity } = await aggregator({ mode: 'open' }, 4);
  const proto = loadProto();
  const client = new proto.crowdfl.v1.Aggregator(address, grpc.credentials.createInsecure());
  try {
    const [a, b, c, d] = await Promise.all([join2(address), join2(address), join2(address), join2(address)]);
    const [ta, tb, tc, td] = await Promise.all([nextTask(a.conn), nextTask(b.conn), nextTask(c.conn), nextTask(d.conn)]);
    const manifest = weightManifest(parseModelJson(ta.model_json));
    const n = manifest.reduce((sum, m) => sum + m.shape.reduce((x, y) => x * y, 1), 0);
    const delta = new Float32Array(n).fill(1e-3);
    const bytes = float32ToBytes(delta);
    const metrics = { loss: 1, accuracy: 0.5, train_seconds: 0.1, examples_per_second: 500, epochs_completed: 1, partial: false };

    // A raw upload whose metadata and signature the test controls.
    const upload = (task: Task__Output, session: string, fields: { sha?: string; examples?: number; signature?: Uint8Array; round?: number; data?: Buffer }) =>
      statusOf(
        new Promise((res, rej) => {
          const call = client.SubmitUpdate((e, r) => (e ? rej(e) : res(r)));
          call.write({
            meta: {
              session_id: session,
              task_id: task.task_id,
              experiment_id: task.experiment_id,
              round: fields.round ?? task.round,
              base_model_sha256: task.base_model_sha256,
              num_examples: fields.examples ?? 50,
              metrics,
              manifest: { tensors: manifest.map((m) => ({ name: m.name, dtype: 'FLOAT32', shape: [...m.shape] })), total_bytes: n * 4 },
            },
          });
          call.write({ data: fields.data ?? bytes });
          // Without a signature the upload ends without its seal.
          if (fields.signature) call.write({ seal: { update_sha256: fields.sha ?? sha256Hex(bytes), signature: Buffer.from(fields.signature) } });
          call.end();
        }),
      );
    const signedBy = (who: Identity, task: Task__Output, sha: string, examples = 50) =>
      sign(
        updateDigest({
          experiment_id: task.experiment_id,
          round: task.round,
          task_id: task.task_id,
          base_model_sha256: task.base_model_sha256,
          update_sha256: sha,
          num_examples: examples,
          metrics,
          node_public_key: who.publicKey,
        }),
        who,
      );
    const sessionA = a.conn.session!.session_id;

    let s = await upload(ta, sessionA, { round: ta.round + 1, signature: signedBy(a.identity, ta, sha256Hex(bytes)) });
    t.is(s.code, grpc.status.FAILED_PRECONDITION, 'wrong round');
    t.regex(s.details, /belongs to round 1, not 2/);
    s = await upload(ta, sessionA, {});
    t.is(s.code, grpc.status.UNAUTHENTICATED);
    t.regex(s.details, /unsigned update/);
    // Each refusal answers the task; fresh tasks come with the next round, so the rest use b's task.
    const sessionB = b.conn.session!.session_id;
    s = await upload(tb, sessionB, { signature: signedBy(a.identity, tb, sha256Hex(bytes)) });
    t.is(s.code, grpc.status.UNAUTHENTICATED);
    t.regex(s.details, /bad signature/);
    // Signed by the right node, but a field changed after signing: the signature no longer covers it.
    s = await upload(tc, c.conn.session!.session_id, { examples: 60, signature: signedBy(c.identity, tc, sha256Hex(bytes), 50) });
    t.is(s.code, grpc.status.UNAUTHENTICATED);
    t.regex(s.details, /bad signature/);
    // Correctly signed, but claiming more examples than the node declared at hello (100): refused, naming both.
    s = await upload(td, d.conn.session!.session_id, { examples: 5000, signature: signedBy(d.identity, td, sha256Hex(bytes), 5000) });
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    t.regex(s.details, /^num_examples 5000 is more than the 100 local examples this node declared at hello; num_examples counts local examples, not examples × epochs$/);

    // Round 1 had no valid update: abandoned, and its retry would wait for nodes that never answer.
    await agg.stop();
    const summary = await agg.done;
    t.is(summary.rounds.length, 0, 'no valid update, nothing committed');
    const db = openDatabase(join(runDir, 'crowdfl.db'));
    const rejected = new RunStore(db.db).updatesOfRound(runId, 1);
    db.close();
    t.true(rejected.some((u) => /unsigned update/.test(u.reason)));
    t.true(rejected.some((u) => /bad signature/.test(u.reason)));
    t.is(identity.publicKey.length, 32);
  } finally {
    client.close();
    await stop(agg);
  }
});

test('a signed update whose bytes differ from the signed hash, or whose fields were altered, is refused', async (t) => {
  const { agg, address } = await aggregator({ mode: 'open' }, 4);
  try {
    const [a, b, c, d] = await Promise.all([join2(address), join2(address), join2(address), join2(address)]);
    const [ta, tb, tc, td] = await Promise.all([nextTask(a.conn), nextTask(b.conn), nextTask(c.conn), nextTask(d.conn)]);
    const manifest = weightManifest(parseModelJson(ta.model_json));
    const n = manifest.reduce((sum, m) => sum + m.shape.reduce((x, y) => x * y, 1), 0);
    const metrics = { loss: 1, accuracy: 0.5, train_seconds: 0.1, examples_per_second: 500, epochs_completed: 1, partial: false };
    const good = (task: Task__Output) => ({
      taskId: task.task_id, experimentId: task.experiment_id, round: task.round, baseModelSha256: task.base_model_sha256,
      numExamples: 50, metrics, manifest, delta: new Float32Array(n).fill(1e-3),
    });
    // Tamper in transit: the seal signs the true bytes' hash, but one byte of the data changed on the way.
    const sent = good(ta);
    const trueBytes = float32ToBytes(sent.delta);
    const trueSha = sha256Hex(trueBytes);
    const altered = Buffer.from(trueBytes);
    altered[0] = altered[0]! ^ 1;
    const signature = sign(
      updateDigest({
        experiment_id: ta.experiment_id, round: ta.round, task_id: ta.task_id, base_model_sha256: ta.base_model_sha256,
        update_sha256: trueSha, num_examples: 50, metrics, node_public_key: a.identity.publicKey,
      }),
      a.identity,
    );
    const client = new (loadProto().crowdfl.v1.Aggregator)(address, grpc.credentials.createInsecure());
    const s = await statusOf(
      new Promise((res, rej) => {
        const call = client.SubmitUpdate((e, r) => (e ? rej(e) : res(r)));
        call.write({
          meta: {
            session_id: a.conn.session!.session_id, task_id: ta.task_id, experiment_id: ta.experiment_id, round: ta.round,
            base_model_sha256: ta.base_model_sha256, num_examples: 50, metrics,
            manifest: { tensors: manifest.map((m) => ({ name: m.name, dtype: 'FLOAT32', shape: [...m.shape] })), total_bytes: n * 4 },
          },
        });
        call.write({ data: altered });
        call.write({ seal: { update_sha256: trueSha, signature: Buffer.from(signature) } });
        call.end();
      }),
    );
    t.is(s.code, grpc.status.INVALID_ARGUMENT);
    t.regex(s.details, /but the signed update_sha256 is/);

    // Tamper with signed fields in transit: the bytes and their hash are true, a metric the node signed is not.
    const tamperedField = (node: typeof c, task: Task__Output, sentMetrics: typeof metrics) => {
      const sig = sign(
        updateDigest({
          experiment_id: task.experiment_id, round: task.round, task_id: task.task_id, base_model_sha256: task.base_model_sha256,
          update_sha256: trueSha, num_examples: 50, metrics, node_public_key: node.identity.publicKey,
        }),
        node.identity,
      );
      return statusOf(
        new Promise((res, rej) => {
          const call = client.SubmitUpdate((e, r) => (e ? rej(e) : res(r)));
          call.write({
            meta: {
              session_id: node.conn.session!.session_id, task_id: task.task_id, experiment_id: task.experiment_id, round: task.round,
              base_model_sha256: task.base_model_sha256, num_examples: 50, metrics: sentMetrics,
              manifest: { tensors: manifest.map((m) => ({ name: m.name, dtype: 'FLOAT32', shape: [...m.shape] })), total_bytes: n * 4 },
            },
          });
          call.write({ data: trueBytes });
          call.write({ seal: { update_sha256: trueSha, signature: Buffer.from(sig) } });
          call.end();
        }),
      );
    };
    for (const [node, task, sentMetrics] of [
      [c, tc, { ...metrics, accuracy: 0.99 }],
      [d, td, { ...metrics, partial: true }],
    ] as const) {
      const altered = await tamperedField(node, task, sentMetrics);
      t.is(altered.code, grpc.status.UNAUTHENTICATED, altered.details);
      t.regex(altered.details, /^bad signature: the update's signature does not verify under node n-[0-9a-f]+'s key$/);
    }
    client.close();
    t.regex(await b.conn.submitUpdate(good(tb), b.identity), /accepted/);
  } finally {
    await stop(agg);
  }
});

test('the signed round record verifies, and an altered byte anywhere in it is caught', async (t) => {
  const { agg, address, runDir, runId } = await aggregator({ mode: 'open' }, 1);
  const { conn, identity } = await join2(address);
  const task = await nextTask(conn);
  const manifest = weightManifest(parseModelJson(task.model_json));
  const n = manifest.reduce((sum, m) => sum + m.shape.reduce((x, y) => x * y, 1), 0);
  const metrics = { loss: Number.NaN, accuracy: 0.5, train_seconds: 0.1, examples_per_second: 500, epochs_completed: 1, partial: true };
  await conn.submitUpdate(
    { taskId: task.task_id, experimentId: task.experiment_id, round: task.round, baseModelSha256: task.base_model_sha256, numExamples: 40, metrics, manifest, delta: new Float32Array(n).fill(2e-3) },
    identity,
  );
  const summary = await agg.done;
  t.is(summary.rounds.length, 1);
  t.regex(summary.rounds[0]!.aggregator_signature, /^[A-Za-z0-9+/]{86}==$/);

  const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
  const store = new RunStore(db);
  t.deepEqual(auditRun(store, runId), [{ round: 1, problems: [] }]);
  const sqlite = (db as unknown as { $client: { prepare: (q: string) => { run: (...a: unknown[]) => void } } }).$client;
  const tamper = (sql: string, check: RegExp) => {
    sqlite.prepare('SAVEPOINT t').run();
    sqlite.prepare(sql).run();
    const problems = auditRun(store, runId)[0]!.problems.join('; ');
    t.regex(problems, check, sql);
    sqlite.prepare('ROLLBACK TO t').run();
    sqlite.prepare('RELEASE t').run();
  };
  tamper(`UPDATE rounds SET model_sha256 = '${'0'.repeat(64)}'`, /round record does not match/);
  tamper(`UPDATE updates SET num_examples = 41`, /stored fields do not match/);
  tamper(`UPDATE updates SET signature = replace(signature, substr(signature, 1, 1), CASE substr(signature, 1, 1) WHEN 'A' THEN 'B' ELSE 'A' END)`, /signature does not verify/);
  tamper(`UPDATE rounds SET aggregator_signature = replace(aggregator_signature, substr(aggregator_signature, 2, 1), CASE substr(aggregator_signature, 2, 1) WHEN 'A' THEN 'B' ELSE 'A' END)`, /aggregator's signature/);
  close();
});
