// gRPC handlers only: decode, check the session, hand to the round engine.
// Any failure becomes a status with a message for the caller; nothing a node
// sends can throw past a handler.
//
// The port is bound first (bindAggregatorServer), before the aggregator writes
// anything for its run, so a busy port costs nothing but a message; calls that
// arrive before the handlers are installed (serve) hear UNAVAILABLE, which nodes
// retry.
import * as grpc from '@grpc/grpc-js';
import { ServerHealth } from '../core/grpc-health.js';
import { loadProto, loadProtoDefinition, PROTOCOL_VERSION } from '../core/proto.js';
import { ChunkAssembler, chunks, CodecError, DEFAULT_CHUNK_BYTES } from '../core/tensor-codec.js';
import type { AggregatorHandlers } from '../proto/generated/crowdfl/v1/Aggregator.js';
import type { ModelChunk } from '../proto/generated/crowdfl/v1/ModelChunk.js';
import type { UpdateMeta__Output } from '../proto/generated/crowdfl/v1/UpdateMeta.js';
import type { UpdateSeal__Output } from '../proto/generated/crowdfl/v1/UpdateSeal.js';
import type { Identity } from '../core/signing/keys.js';
import { UserError } from '../core/user-error.js';
import { nodeIdFromPublicKey, publicKeyToString } from '../core/signing/keys.js';
import { admit, type AdmissionPolicy } from './nodes/joining.js';
import type { Engine } from './rounds/engine.js';
import { HelloChallenges } from './nodes/hello-challenges.js';
import { HelloPacer, type PacePolicy } from './rounds/pace.js';
import { BusyError, invalid, precondition, RpcError } from './rpc-error.js';
import type { Session, Sessions } from './nodes/sessions.js';
import type { RunStore } from './store/run-store.js';
import { overLimits, type TaskDemand } from './nodes/node-limits.js';
import { TaskOutcomes } from './rounds/task-outcome.js';
import { ConnectionGuard, DEFAULT_CONNECTION_LIMITS, SERVER_CHANNEL_OPTIONS, type ConnectionLimits, type ConnectionStats } from './transport/connection-guard.js';
import { isStorageFailure } from './store/storage-errors.js';
import { peerAddress, RefusalLog, type Refusal, type RefusalBounds } from './nodes/refusal-log.js';
import { isUndecodable, refusingUndecodable, withTolerantDecoders, type Undecodable } from './transport/undecodable.js';

const unsupportedVersion = (version: number) =>
  `protocol version ${version} is not supported; this aggregator speaks ${PROTOCOL_VERSION}: install the same crowdfl version as the aggregator`;

export interface ServerOptions {
  engine: Engine;
  sessions: Sessions;
  store: RunStore;
  experimentId: string;
  identity: Identity;
  admission: AdmissionPolicy;
  /** What each task asks of a node, checked against the caps nodes declare. */
  taskDemand: TaskDemand;
  heartbeatIntervalMs?: number;
  maxPollMs?: number;
  pace: PacePolicy;
  /** How many refused calls are kept on record (DEFAULT_REFUSAL_BOUNDS when omitted). */
  refusalBounds?: RefusalBounds;
  log?: (msg: string) => void;
  /** Told every call's method, final status and duration (the aggregator's request metrics). */
  onCall?: CallObserver;
  /** Told when a call failed because the run's storage did (a full disk, a damaged database): the run must stop. */
  onStorageFailure?: (err: unknown) => void;
}

export type CallObserver = (method: string, code: grpc.status, seconds: number) => void;

/** `callback`, reporting the call's status and duration to `observe` when it answers. */
function timed<T>(method: string, observe: CallObserver | undefined, callback: grpc.sendUnaryData<T>): grpc.sendUnaryData<T> {
  if (!observe) return callback;
  const started = performance.now();
  return (err, value, trailer, flags) => {
    observe(method, err?.code ?? grpc.status.OK, (performance.now() - started) / 1000);
    callback(err, value, trailer, flags);
  };
}

export interface RunningServer {
  port: number;
  /**
   * What the standard health service answers (core/grpc-health.ts): SERVING while the run takes
   * calls, NOT_SERVING once its experiment has ended (while it lingers to tell nodes) and while closing.
   */
  setServing(serving: boolean): void;
  /** Connections held, refused and timed out, and the file-descriptor budget. */
  connections(): ConnectionStats;
  close(): Promise<void>;
}

const NODE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function toServiceError(err: unknown, o: Pick<ServerOptions, 'log' | 'onStorageFailure'>): Partial<grpc.StatusObject> {
  if (isStorageFailure(err)) {
    // Not the caller's doing, and not to be retried against this process: the run stops (and is resumed
    // after a restart), so the node hears "unavailable" and comes back then.
    o.onStorageFailure?.(err);
    return { code: grpc.status.UNAVAILABLE, details: 'the aggregator cannot write to its storage and is stopping; try again after it restarts' };
  }
  if (err instanceof BusyError) {
    const metadata = new grpc.Metadata();
    metadata.set('retry-after-ms', String(err.retryAfterMs));
    return { code: err.code, details: err.message, metadata };
  }
  if (err instanceof RpcError) return { code: err.code, details: err.message };
  if (err instanceof CodecError) return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
  o.log?.(`internal error: ${(err as Error)?.stack ?? String(err)}`);
  return { code: grpc.status.INTERNAL, details: `internal error: ${(err as Error)?.message ?? String(err)}` };
}

/** Where the server listens, and the largest chunk it takes or sends. */
export interface ServerBinding {
  host?: string;
  port?: number;
  credentials?: grpc.ServerCredentials;
  maxChunkBytes?: number;
  /** Bounds on connections (transport/connection-guard.ts); the defaults when absent. */
  connections?: ConnectionLimits;
}

/** The aggregator could not listen where it was told to (a busy port, an address not on this machine). */
export class ListenError extends UserError {}

export interface BoundServer {
  port: number;
  /** Starts answering calls with the run's handlers. */
  serve(o: ServerOptions): RunningServer;
  /** Closes the port (for a start that is refused after binding). */
  close(): Promise<void>;
}

/** The aggregator's service, as health checks and reflection name it. */
export const AGGREGATOR_SERVICE = 'crowdfl.v1.Aggregator';

const STARTING: Partial<grpc.StatusObject> = { code: grpc.status.UNAVAILABLE, details: 'the aggregator is starting; try again in a moment' };

/** Binds the port, answering UNAVAILABLE until `serve` installs the handlers. */
export async function bindAggregatorServer(b: ServerBinding): Promise<BoundServer> {
  const maxChunk = b.maxChunkBytes ?? DEFAULT_CHUNK_BYTES;
  const proto = loadProto();
  const server = new grpc.Server({
    // Chunks are ≤ maxChunk; anything larger is refused by grpc-js itself.
    'grpc.max_receive_message_length': maxChunk + 64 * 1024,
    'grpc.max_send_message_length': maxChunk + 64 * 1024,
    // A node needs a poll, a heartbeat and an upload or download at once; more streams on one
    // connection is a client hogging the server.
    'grpc.max_concurrent_streams': 16,
    ...SERVER_CHANNEL_OPTIONS,
  });
  const guard = new ConnectionGuard(b.connections ?? DEFAULT_CONNECTION_LIMITS);
  let live: grpc.UntypedServiceImplementation | undefined;
  // Request decoders that turn bytes that are not the method's message into an Undecodable, which the
  // handlers' wrapper (refusingUndecodable) answers with INVALID_ARGUMENT.
  const service = withTolerantDecoders(proto.crowdfl.v1.Aggregator.service);
  // Every method goes through `live`; before it is set, unary and client-streaming calls get their
  // callback's error, the server-streaming one (DownloadModel) is ended with the status.
  const dispatch: grpc.UntypedServiceImplementation = {};
  for (const name of Object.keys(service)) {
    dispatch[name] = ((call: grpc.ServerWritableStream<unknown, unknown>, callback?: grpc.sendUnaryData<unknown>) => {
      const handler = live?.[name] as ((call: unknown, callback?: unknown) => void) | undefined;
      if (handler) return handler(call, callback);
      if (callback) callback(STARTING);
      // A server stream's status goes out with its end: emit the error (destroy would send none).
      else call.emit('error', STARTING);
    }) as grpc.UntypedHandleCall;
  }
  server.addService(service, dispatch);
  // NOT_SERVING until `serve` installs the handlers (the run is being opened or recovered).
  const health = new ServerHealth([AGGREGATOR_SERVICE], 'NOT_SERVING');
  health.addTo(server, loadProtoDefinition());
  const host = b.host ?? '127.0.0.1';
  const requested = b.port ?? 0;
  // The guard accepts the connections and hands grpc-js those within bounds (TLS, when configured, starts there).
  const injector = server.createConnectionInjector(b.credentials ?? grpc.ServerCredentials.createInsecure());
  const port = await guard.listen(host, requested, (socket) => injector.injectConnection(socket)).catch((err: unknown) => {
    server.forceShutdown();
    const message = (err as Error)?.message ?? String(err);
    if ((err as NodeJS.ErrnoException)?.code === 'EADDRINUSE' || /EADDRINUSE/.test(message)) {
      throw new ListenError(`port ${requested} on ${host} is already in use (another aggregator, or another program, listens there): stop it or choose another --port`);
    }
    throw new ListenError(`cannot listen on ${host}:${requested}: ${message.replace(/^No address added out of total \d+ resolved( errors)?:?\s*/, '')}`);
  });
  const close = () =>
    new Promise<void>((resolve) => {
      health.set('NOT_SERVING');
      void guard.close();
      const force = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 2000);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  return {
    port,
    serve: (o) => {
      const handlers = aggregatorHandlers(o, maxChunk, guard) as unknown as grpc.UntypedServiceImplementation;
      live = refusingUndecodable(service, handlers, (method, code) => o.onCall?.(method, code, 0));
      health.set('SERVING');
      return { port, close, connections: () => guard.stats(), setServing: (serving) => health.set(serving ? 'SERVING' : 'NOT_SERVING') };
    },
    close,
  };
}

function aggregatorHandlers(o: ServerOptions, maxChunk: number, guard: ConnectionGuard): AggregatorHandlers {
  const heartbeatMs = o.heartbeatIntervalMs ?? 5000;
  const maxPollMs = o.maxPollMs ?? 20_000;
  const { engine, sessions, store } = o;
  const hellos = new HelloPacer(o.pace);
  const challenges = new HelloChallenges();
  const refusalLog = new RefusalLog(store, o.refusalBounds, o.log);
  // Called on the way out of a refused call: keeping it on record must not throw past the handler.
  const keepRefusal = (refusal: Refusal) => {
    try {
      refusalLog.record(refusal);
    } catch (err) {
      if (isStorageFailure(err)) o.onStorageFailure?.(err);
      else o.log?.(`could not record a refused call: ${(err as Error)?.message ?? String(err)}`);
    }
  };
  const outcomes = new TaskOutcomes(store, o.experimentId, (taskId) => engine.taskPending(taskId));
  /** The call's session; the call's connection has then shown one, and is no longer closed at its hello timeout. */
  const sessionOf = (call: { getPeer(): string }, sessionId: string): Session => {
    const session = sessions.get(sessionId);
    guard.prove(call.getPeer());
    return session;
  };

  const handlers: AggregatorHandlers = {
    HelloChallenge(call, callback) {
      callback = timed('HelloChallenge', o.onCall, callback);
      if (call.request.protocol_version !== PROTOCOL_VERSION) {
        callback(toServiceError(precondition(unsupportedVersion(call.request.protocol_version)), o));
        return;
      }
      // Not paced: a challenge costs 32 random bytes and a map entry (bounded), and the hello that uses it is paced.
      const { challenge, expiresUnixMs } = challenges.issue();
      callback(null, { challenge, expires_unix_ms: expiresUnixMs });
    },

    Hello(call, callback) {
      callback = timed('Hello', o.onCall, callback);
      try {
        const req = call.request;
        if (req.protocol_version !== PROTOCOL_VERSION) throw precondition(unsupportedVersion(req.protocol_version));
        if (req.node_id && !NODE_ID.test(req.node_id)) throw invalid('node_id must be 1-128 characters of A-Z a-z 0-9 . _ : -');
        if (!req.capabilities) throw invalid('capabilities are missing');
        // Paced before the signature check and the database write, which are what a wave of Hellos costs.
        const wait = hellos.admit();
        if (wait > 0) throw new BusyError(wait, `the aggregator is taking ${o.pace.hellosPerSecond} new nodes per second; say hello again in ${wait} ms`);
        const { nodeId, publicKey } = admit(req, o.admission, o.identity, store, o.experimentId, challenges);
        const session = sessions.open(nodeId, publicKey, req.capabilities);
        session.unfit = overLimits(req.capabilities.limits, o.taskDemand, req.capabilities.num_examples);
        guard.prove(call.getPeer());
        store.touchNode(nodeId, publicKeyToString(publicKey), JSON.stringify(req.capabilities), req.software.slice(0, 200));
        callback(null, {
          protocol_version: PROTOCOL_VERSION,
          session_id: session.id,
          experiment_id: o.experimentId,
          heartbeat_interval_ms: heartbeatMs,
          max_chunk_bytes: maxChunk,
          aggregator_public_key: Buffer.from(o.identity.publicKey),
        });
      } catch (err) {
        const key = call.request.node_public_key;
        if (err instanceof RpcError && !(err instanceof BusyError) && key?.length === 32) {
          // Who knocked and was turned away is part of the record evaluators read.
          keepRefusal({ peer: call.getPeer(), source: nodeIdFromPublicKey(key), publicKey: publicKeyToString(key), reason: err.message });
        }
        callback(toServiceError(err, o));
      }
    },

    PollTask(call, callback) {
      callback = timed('PollTask', o.onCall, callback);
      let session: Session;
      try {
        session = sessionOf(call, call.request.session_id);
      } catch (err) {
        callback(toServiceError(err, o));
        return;
      }
      const waitMs = Math.min(Math.max(call.request.wait_ms || maxPollMs, 0), maxPollMs);
      // Without this a dead node would look alive, and selectable, until its poll timed out.
      call.on('cancelled', () => sessions.cancelPoll(session));
      sessions.poll(session, waitMs).then(
        (reply) => callback(null, reply),
        (err: unknown) => callback(toServiceError(err, o)),
      );
    },

    DownloadModel(call) {
      const started = performance.now();
      const observe = (code: grpc.status) => o.onCall?.('DownloadModel', code, (performance.now() - started) / 1000);
      void (async () => {
        try {
          sessionOf(call, call.request.session_id);
          const bytes = engine.modelBytes(call.request.model_sha256);
          const manifest = { tensors: engine.manifestForWire(), total_bytes: bytes.byteLength };
          const send = (msg: ModelChunk) =>
            call.write(msg) ? Promise.resolve() : new Promise<void>((r) => call.once('drain', () => r()));
          await send({ manifest });
          for (const data of chunks(bytes, maxChunk)) {
            if (call.cancelled) {
              observe(grpc.status.CANCELLED);
              return;
            }
            await send({ data });
          }
          call.end();
          observe(grpc.status.OK);
        } catch (err) {
          const status = toServiceError(err, o);
          observe(status.code ?? grpc.status.INTERNAL);
          // grpc-js sends a server stream's status when the stream ends; 'error' sets that status and ends it.
          // (destroy() would skip the end: no status is ever sent and the call hangs until the node's deadline.)
          call.emit('error', status);
        }
      })();
    },

    SubmitUpdate(call, callback) {
      callback = timed('SubmitUpdate', o.onCall, callback);
      let session: Session | undefined;
      let meta: UpdateMeta__Output | undefined;
      let assembler: ChunkAssembler | undefined;
      let seal: UpdateSeal__Output | undefined;
      let done = false;
      const finish = (err: unknown, ok?: string) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) {
          if (meta && assembler && !assembler.complete) engine.abortSubmission(meta);
          recordUploadRefusal(err);
          callback(toServiceError(err, o));
        } else callback(null, { accepted: true, message: ok ?? '' });
      };
      // Every refused upload is on record: as its round's rejected update, or else here (within the bounds of refusal-log.ts).
      const recordUploadRefusal = (err: unknown) => {
        if (err instanceof BusyError || (err instanceof RpcError && err.recorded) || isStorageFailure(err)) return;
        const reason = err instanceof Error ? err.message : String(err);
        const peer = call.getPeer();
        const source = session?.nodeId ?? `peer ${peerAddress(peer)}`;
        const publicKey = session ? publicKeyToString(session.publicKey) : '';
        keepRefusal({ peer, source, publicKey, reason, kind: 'upload', taskId: meta?.task_id ?? '', round: meta?.round });
      };
      // An upload may not outlive its task by much: a stalled stream is cut off.
      let timer = setTimeout(() => finish(new RpcError(grpc.status.DEADLINE_EXCEEDED, 'no metadata received')), 30_000);
      call.on('data', (msg: { meta?: UpdateMeta__Output | null; data?: Buffer; seal?: UpdateSeal__Output | null; part?: string } | Undecodable) => {
        if (done) return;
        try {
          if (isUndecodable(msg)) throw msg.error();
          if (!meta) {
            if (msg.part !== 'meta' || !msg.meta) throw invalid('the first message of SubmitUpdate must carry meta');
            meta = msg.meta;
            session = sessionOf(call, meta.session_id);
            const expected = engine.beginSubmission(session, meta);
            // On shared memory: the aggregation kernels' workers read it in place (aggregator/robust/kernels/pool.ts).
            assembler = new ChunkAssembler(expected, maxChunk, { shared: true });
            clearTimeout(timer);
            const deadline = engine.uploadDeadline(meta.task_id);
            timer = setTimeout(
              () => finish(new RpcError(grpc.status.DEADLINE_EXCEEDED, 'upload did not finish before the round deadline')),
              Math.max(1000, deadline - Date.now()),
            );
            return;
          }
          if (seal) throw invalid('the seal must be the last message of SubmitUpdate');
          if (msg.part === 'seal' && msg.seal) {
            seal = msg.seal;
            return;
          }
          if (msg.part !== 'data' || !msg.data) throw invalid('after meta, SubmitUpdate takes data messages and then one seal');
          assembler!.push(msg.data);
          session!.lastSeen = Date.now();
        } catch (err) {
          finish(err);
        }
      });
      call.on('end', () => {
        if (done) return;
        try {
          if (!meta || !assembler || !session) throw invalid('stream ended before any metadata');
          const delta = assembler.finish();
          engine.completeSubmission(session, meta, seal, delta, assembler.sha256Hex());
          finish(null, `accepted into round ${meta.round}`);
        } catch (err) {
          finish(err);
        }
      });
      call.on('error', (err) => finish(err));
      // gRPC itself ended the call (e.g. a message over the size limit: RESOURCE_EXHAUSTED, already sent to
      // the node): the upload failed, so the task is freed at once for the node's retry.
      call.on('cancelled', () => finish(new RpcError(grpc.status.CANCELLED, 'the upload was cancelled before it finished')));
    },

    Heartbeat(call, callback) {
      callback = timed('Heartbeat', o.onCall, callback);
      try {
        const session = sessionOf(call, call.request.session_id);
        // A durable write per heartbeat is an fsync on the event loop (200/s at 1,000 nodes);
        // the registry's last_seen needs no finer grain than a lease.
        if (session.lastSeen - session.lastPersisted >= sessions.leaseMs) {
          store.seeNode(session.nodeId);
          session.lastPersisted = session.lastSeen;
        }
        const wanted = call.request.task_id ? engine.taskStillWanted(call.request.task_id) : false;
        callback(null, { task_still_wanted: wanted });
      } catch (err) {
        callback(toServiceError(err, o));
      }
    },

    DeclineTask(call, callback) {
      callback = timed('DeclineTask', o.onCall, callback);
      try {
        const session = sessionOf(call, call.request.session_id);
        const reason = call.request.reason.trim();
        if (!reason) throw invalid('a decline must say why (reason is empty)');
        if (reason.length > 500) throw invalid(`reason is ${reason.length} characters; at most 500`);
        // An enum value this build does not know arrives as its number; record it as unspecified.
        const kind = typeof call.request.kind === 'string' ? call.request.kind : 'DECLINE_UNSPECIFIED';
        engine.declineTask(session, call.request.task_id, reason, kind);
        // Tasks do not change shape within a run: one over a cap means every later one would be too.
        if (kind === 'OVER_CAP') session.unfit = `this node declined a task as over its caps (${reason})`;
        callback(null, { retry_after_ms: sessions.retryAfter() });
      } catch (err) {
        callback(toServiceError(err, o));
      }
    },

    Goodbye(call, callback) {
      callback = timed('Goodbye', o.onCall, callback);
      try {
        const session = sessionOf(call, call.request.session_id);
        const reason = call.request.reason.slice(0, 500);
        sessions.close(session.id);
        o.log?.(`node ${session.nodeId} left${reason ? `: ${reason}` : ''}`);
        callback(null, {});
      } catch (err) {
        callback(toServiceError(err, o));
      }
    },

    GetTaskOutcome(call, callback) {
      callback = timed('GetTaskOutcome', o.onCall, callback);
      try {
        const session = sessionOf(call, call.request.session_id);
        callback(null, outcomes.outcome(session.nodeId, call.request.task_id));
      } catch (err) {
        callback(toServiceError(err, o));
      }
    },
  };

  return handlers;
}
