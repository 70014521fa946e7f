// The node's side of the wire: promise-returning calls over the generated
// gRPC client, with model download and update upload done in chunks.
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { loadProto, PROTOCOL_VERSION } from '../core/proto.js';
import {
  ChunkAssembler,
  chunks,
  float32ToBytes,
  manifestBytes,
  sha256Hex,
  type TensorEntry,
} from '../core/tensor-codec.js';
import type { Identity } from '../core/signing/keys.js';
import { fingerprint } from '../core/signing/keys.js';
import { digestHex, sign } from '../core/signing/ed25519.js';
import { helloDigest, updateDigest, type UpdateSigningInput } from '../core/signing/layouts.js';
import type { DeclineKind__Output as DeclineKind } from '../proto/generated/crowdfl/v1/DeclineKind.js';
import type { TaskOutcomeReply__Output } from '../proto/generated/crowdfl/v1/TaskOutcomeReply.js';
import type { AggregatorClient } from '../proto/generated/crowdfl/v1/Aggregator.js';
import type { HelloReply__Output } from '../proto/generated/crowdfl/v1/HelloReply.js';
import type { HelloChallengeReply__Output } from '../proto/generated/crowdfl/v1/HelloChallengeReply.js';
import type { ModelChunk__Output } from '../proto/generated/crowdfl/v1/ModelChunk.js';
import type { NodeCapabilities } from '../proto/generated/crowdfl/v1/NodeCapabilities.js';
import type { PollTaskReply__Output } from '../proto/generated/crowdfl/v1/PollTaskReply.js';
import { UserError } from '../core/user-error.js';

export class ProtocolError extends Error {}

/** The server at the address is not the aggregator this node pinned. */
export class ImpostorError extends UserError {}

export interface UpdateSubmission {
  taskId: string;
  experimentId: string;
  round: number;
  baseModelSha256: string;
  numExamples: number;
  metrics: UpdateSigningInput['metrics'];
  manifest: readonly TensorEntry[];
  delta: Float32Array;
  /** Told the hex digest the node signs, once the bytes are hashed (the contribution ledger keeps it). */
  onSigned?: (updateDigestHex: string) => void;
}

export class AggregatorConnection {
  private readonly client: AggregatorClient;
  session: HelloReply__Output | undefined;

  constructor(
    readonly address: string,
    credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
    channelOptions: grpc.ChannelOptions = {},
  ) {
    const proto = loadProto();
    this.client = new proto.crowdfl.v1.Aggregator(address, credentials, {
      'grpc.max_receive_message_length': 8 * 1024 * 1024,
      // Reconnect attempts are paced by the node's own backoff, not grpc's.
      'grpc.initial_reconnect_backoff_ms': 500,
      'grpc.max_reconnect_backoff_ms': 5000,
      ...channelOptions,
    });
  }

  close(): void {
    this.client.close();
  }

  private get sessionId(): string {
    if (!this.session) throw new ProtocolError('no session: call hello() first');
    return this.session.session_id;
  }

  private deadline(ms: number): grpc.CallOptions {
    return { deadline: new Date(Date.now() + ms) };
  }

  /**
   * Joins, proving possession of the node's key. With `pinned`, the hello is
   * bound to that aggregator key and any other key in the reply is refused.
   */
  async hello(
    identity: Identity,
    nodeId: string,
    capabilities: NodeCapabilities,
    software: string,
    pinned?: Uint8Array,
    invitation?: string,
  ): Promise<HelloReply__Output> {
    const { challenge } = await new Promise<HelloChallengeReply__Output>((resolve, reject) =>
      this.client.HelloChallenge({ protocol_version: PROTOCOL_VERSION }, this.deadline(10_000), (err, r) => (err ? reject(err) : resolve(r!))),
    );
    const timestamp = Date.now();
    const signature = sign(
      helloDigest({ node_public_key: identity.publicKey, aggregator_public_key: pinned, timestamp_ms: timestamp, challenge }),
      identity,
    );
    const reply = await new Promise<HelloReply__Output>((resolve, reject) =>
      this.client.Hello(
        {
          protocol_version: PROTOCOL_VERSION,
          node_id: nodeId,
          capabilities,
          software,
          node_public_key: Buffer.from(identity.publicKey),
          timestamp_ms: timestamp,
          hello_signature: Buffer.from(signature),
          invitation: invitation ?? '',
          challenge,
        },
        this.deadline(10_000),
        (err, r) => (err ? reject(err) : resolve(r!)),
      ),
    );
    const presented = new Uint8Array(reply.aggregator_public_key ?? []);
    if (presented.length !== 32) throw new ImpostorError(`the server at ${this.address} presented no aggregator key`);
    if (pinned && Buffer.compare(Buffer.from(presented), Buffer.from(pinned)) !== 0) {
      throw new ImpostorError(
        `the server at ${this.address} presented aggregator key ${fingerprint(presented)}, but this node pinned ${fingerprint(pinned)}; ` +
          'refusing to work for it (if the aggregator\'s key really changed, pass the new one with --aggregator-key)',
      );
    }
    this.session = reply;
    return reply;
  }

  /** Long poll; `signal` calls it off (a node stopping, or learning its session is gone, need not wait it out). */
  pollTask(waitMs: number, signal?: AbortSignal): Promise<PollTaskReply__Output> {
    return new Promise((resolve, reject) => {
      const cancel = () => call.cancel();
      const call = this.client.PollTask({ session_id: this.sessionId, wait_ms: waitMs }, this.deadline(waitMs + 10_000), (err, reply) => {
        signal?.removeEventListener('abort', cancel);
        if (err) reject(err);
        else resolve(reply!);
      });
      if (signal?.aborted) call.cancel();
      else signal?.addEventListener('abort', cancel, { once: true });
    });
  }

  /** Tells the aggregator this node will not answer the task; returns when to poll again. */
  declineTask(taskId: string, reason: string, kind: DeclineKind = 'DECLINE_UNSPECIFIED'): Promise<number> {
    return new Promise((resolve, reject) =>
      this.client.DeclineTask({ session_id: this.sessionId, task_id: taskId, reason, kind }, this.deadline(10_000), (err, reply) =>
        err ? reject(err) : resolve(reply!.retry_after_ms),
      ),
    );
  }

  /** Ends this node's session: it takes no work for now (paused, outside its hours, stopping). */
  goodbye(reason: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.client.Goodbye({ session_id: this.sessionId, reason }, this.deadline(5_000), (err) => (err ? reject(err) : resolve())),
    );
  }

  /** What became of one of this node's tasks, with the signed record of the round its update went into. */
  taskOutcome(taskId: string): Promise<TaskOutcomeReply__Output> {
    return new Promise((resolve, reject) =>
      this.client.GetTaskOutcome({ session_id: this.sessionId, task_id: taskId }, this.deadline(10_000), (err, reply) =>
        err ? reject(err) : resolve(reply!),
      ),
    );
  }

  heartbeat(taskId: string, progress: number): Promise<boolean> {
    return new Promise((resolve, reject) =>
      this.client.Heartbeat({ session_id: this.sessionId, task_id: taskId, progress }, this.deadline(10_000), (err, reply) =>
        err ? reject(err) : resolve(reply!.task_still_wanted),
      ),
    );
  }

  /** Downloads a model and checks it against its content address and the expected manifest. */
  downloadModel(sha256: string, expected: readonly TensorEntry[]): Promise<Float32Array> {
    const maxChunk = this.session?.max_chunk_bytes || 1 << 20;
    return new Promise((resolve, reject) => {
      const call = this.client.DownloadModel({ session_id: this.sessionId, model_sha256: sha256 }, this.deadline(120_000));
      let assembler: ChunkAssembler | undefined;
      let failed = false;
      const fail = (err: Error) => {
        if (failed) return;
        failed = true;
        call.cancel();
        reject(err);
      };
      call.on('data', (chunk: ModelChunk__Output) => {
        try {
          if (!assembler) {
            if (!chunk.manifest) throw new ProtocolError('model stream did not start with a manifest');
            const total = Number(chunk.manifest.total_bytes);
            if (total !== manifestBytes(expected)) {
              throw new ProtocolError(`model has ${total} bytes, the task's architecture needs ${manifestBytes(expected)}`);
            }
            assembler = new ChunkAssembler(total, maxChunk);
          } else if (chunk.data) {
            assembler.push(chunk.data);
          }
        } catch (err) {
          fail(err as Error);
        }
      });
      call.on('error', (err) => fail(err));
      call.on('end', () => {
        if (failed) return;
        try {
          if (!assembler) throw new ProtocolError('model stream was empty');
          const weights = assembler.finish();
          const actual = sha256Hex(float32ToBytes(weights));
          if (actual !== sha256) throw new ProtocolError(`downloaded model hashes to ${actual}, expected ${sha256}`);
          resolve(weights);
        } catch (err) {
          fail(err as Error);
        }
      });
    });
  }

  submitUpdate(u: UpdateSubmission, identity: Identity): Promise<string> {
    const maxChunk = this.session?.max_chunk_bytes || 1 << 20;
    const bytes = float32ToBytes(u.delta);
    return new Promise((resolve, reject) => {
      const call = this.client.SubmitUpdate(this.deadline(120_000), (err, reply) =>
        err ? reject(err) : resolve(reply!.message),
      );
      void (async () => {
        const write = (msg: object) =>
          call.write(msg) ? Promise.resolve() : new Promise<void>((r) => call.once('drain', () => r()));
        await write({
          meta: {
            session_id: this.sessionId,
            task_id: u.taskId,
            experiment_id: u.experimentId,
            round: u.round,
            base_model_sha256: u.baseModelSha256,
            num_examples: u.numExamples,
            metrics: u.metrics,
            manifest: {
              tensors: u.manifest.map((t) => ({ name: t.name, dtype: 'FLOAT32', shape: [...t.shape] })),
              total_bytes: bytes.byteLength,
            },
          },
        });
        // Hash each chunk as it goes out; the seal with the hash and signature follows the data.
        const hash = createHash('sha256');
        for (const data of chunks(bytes, maxChunk)) {
          hash.update(data);
          await write({ data });
        }
        const updateSha256 = hash.digest('hex');
        // The node signs the digest of what it claims, never the megabytes.
        const digest = updateDigest({
            experiment_id: u.experimentId,
            round: u.round,
            task_id: u.taskId,
            base_model_sha256: u.baseModelSha256,
            update_sha256: updateSha256,
            num_examples: u.numExamples,
            metrics: u.metrics,
          node_public_key: identity.publicKey,
        });
        u.onSigned?.(digestHex(digest));
        const signature = sign(digest, identity);
        await write({ seal: { update_sha256: updateSha256, signature: Buffer.from(signature) } });
        call.end();
      })().catch((err: unknown) => reject(err));
    });
  }
}

export function isTransient(err: unknown): boolean {
  const code = (err as { code?: number }).code;
  return (
    code === grpc.status.UNAVAILABLE ||
    code === grpc.status.DEADLINE_EXCEEDED ||
    code === grpc.status.CANCELLED ||
    code === grpc.status.NOT_FOUND || // session expired: say hello again
    code === grpc.status.INTERNAL ||
    code === grpc.status.UNKNOWN ||
    code === grpc.status.RESOURCE_EXHAUSTED // busy (pace steering): come back later
  );
}

/** Pace steering: how long a busy aggregator asked this node to wait (its `retry-after-ms` trailer), if it did. */
export function retryAfterMs(err: unknown): number | undefined {
  const metadata = (err as { metadata?: grpc.Metadata }).metadata;
  const value = Number(metadata?.get?.('retry-after-ms')[0]);
  return Number.isFinite(value) && value >= 0 ? Math.min(value, 10 * 60_000) : undefined;
}
