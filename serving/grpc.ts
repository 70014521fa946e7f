// gRPC front end: TF Serving's PredictionService.Predict and
// ModelService.GetModelStatus (proto/serving.proto) on the same registry,
// batcher and admission control as the REST API. The client's gRPC deadline
// is its budget: a request that cannot start in time is refused
// RESOURCE_EXHAUSTED at once, and one whose deadline passes in the queue is not run.
import { fileURLToPath } from 'node:url';
import { constants as h2, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ServerHealth } from '../core/grpc-health.js';
import { LOADER_OPTIONS } from '../core/proto.js';
import type { ProtoGrpcType } from '../proto/generated/serving.js';
import type { ModelServiceHandlers } from '../proto/generated/tensorflow/serving/ModelService.js';
import type { PredictionServiceHandlers } from '../proto/generated/tensorflow/serving/PredictionService.js';
import type { Admission } from './load-shedding.js';
import { ServingError, type ServingErrorKind } from './errors.js';
import type { ServingMetrics } from './metrics.js';
import type { ModelRegistry } from './registry.js';
import { rowsFromInputs, tensorFromRows } from './tensor.js';

export const SERVING_PROTO_PATH = fileURLToPath(new URL('../../proto/serving.proto', import.meta.url));

let cached: ProtoGrpcType | undefined;
let cachedDefinition: protoLoader.PackageDefinition | undefined;

function servingDefinition(): protoLoader.PackageDefinition {
  cachedDefinition ??= protoLoader.loadSync(SERVING_PROTO_PATH, LOADER_OPTIONS);
  return cachedDefinition;
}

export function loadServingProto(): ProtoGrpcType {
  cached ??= grpc.loadPackageDefinition(servingDefinition()) as unknown as ProtoGrpcType;
  return cached;
}

/** The services the serving port implements, as health checks and reflection name them. */
export const SERVING_SERVICES = ['tensorflow.serving.PredictionService', 'tensorflow.serving.ModelService'] as const;

export const GRPC_STATUS: Readonly<Record<ServingErrorKind, grpc.status>> = {
  invalid: grpc.status.INVALID_ARGUMENT,
  not_found: grpc.status.NOT_FOUND,
  // Not retryable, unlike an overload: the same request will always be too large.
  too_large: grpc.status.INVALID_ARGUMENT,
  overloaded: grpc.status.RESOURCE_EXHAUSTED,
  unavailable: grpc.status.UNAVAILABLE,
  deadline: grpc.status.DEADLINE_EXCEEDED,
};

/** The name under which predictions are returned in PredictResponse.outputs. */
export const OUTPUT_NAME = 'probabilities';

export interface GrpcServingOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Larger messages are refused by gRPC itself (RESOURCE_EXHAUSTED) before they are decoded. */
  maxMessageBytes: number;
  /** Most calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); unlimited if absent. */
  maxConcurrentStreams?: number;
}

export interface GrpcServing {
  port: number;
  close(): Promise<void>;
}

function remainingMs(deadline: grpc.Deadline): number {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : Number.POSITIVE_INFINITY;
}

const PREDICT_PATH = '/tensorflow.serving.PredictionService/Predict';
const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/** The grpc-timeout header (gRPC over HTTP/2: 1–8 digits and a unit) in ms; Infinity when absent or malformed. */
export function grpcTimeoutMs(header: string | string[] | undefined): number {
  const match = typeof header === 'string' ? /^(\d{1,8})([HMSmun])$/.exec(header) : null;
  return match ? Number(match[1]) * TIMEOUT_UNIT_MS[match[2]] : Number.POSITIVE_INFINITY;
}

/** grpc-message as gRPC over HTTP/2 wants it: UTF-8, with '%' and bytes outside printable ASCII percent-encoded. */
function percentEncoded(message: string): string {
  return message.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => encodeURIComponent(c));
}

/**
 * Refuses a Predict call as soon as its HTTP/2 headers arrive, before grpc-js builds a call
 * for it or decodes its message: a trailers-only RESOURCE_EXHAUSTED reply. Refusing in the
 * handler cost about half of answering (62 vs 126 µs of server CPU a call, measured at load
 * ~2); here it costs about half of that again (52–56 vs 91–105 µs side by side at load ~7),
 * the rest being Node's own HTTP/2 stream handling. The request's DATA is
 * discarded as it arrives (read, so the connection's flow-control window is returned).
 * Returns true when the stream was refused.
 */
function refuseEarly(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, admission: Admission, onRefused: () => void): boolean {
  if (headers[h2.HTTP2_HEADER_PATH] !== PREDICT_PATH) return false;
  try {
    admission.check(grpcTimeoutMs(headers['grpc-timeout']));
    return false;
  } catch (err) {
    if (!(err instanceof ServingError) || stream.destroyed || stream.headersSent) return false;
    stream.on('error', () => undefined);
    stream.resume();
    stream.respond(
      {
        [h2.HTTP2_HEADER_STATUS]: 200,
        [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
        'grpc-status': String(grpc.status.RESOURCE_EXHAUSTED),
        'grpc-message': percentEncoded(err.message),
      },
      { endStream: true },
    );
    onRefused();
    return true;
  }
}

/** grpc-js's per-stream entry point (Server#_streamHandler, not public API): wrapped to refuse overloaded calls first. */
type StreamHandler = (this: grpc.Server, extraInterceptors: unknown, stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void;

function toServiceError(err: unknown): Partial<grpc.ServiceError> {
  if (err instanceof ServingError) return { code: GRPC_STATUS[err.kind], details: err.message };
  return { code: grpc.status.INTERNAL, details: `internal error: ${(err as Error).message}` };
}

function modelName(spec: { name: string } | null): string {
  if (!spec || spec.name === '') throw new ServingError('invalid', 'model_spec.name is missing: say which model to use');
  return spec.name;
}

export function startGrpcServing(registry: ModelRegistry, metrics: ServingMetrics, admission: Admission, options: GrpcServingOptions): Promise<GrpcServing> {
  const proto = loadServingProto();
  const prediction: PredictionServiceHandlers = {
    Predict: (call, callback) => {
      const started = performance.now();
      const spec = call.request.model_spec;
      let release: (() => void) | undefined;
      const finish = (code: grpc.status): void => {
        release?.();
        if (spec && registry.has(spec.name)) metrics.recordRequest(spec.name, 'grpc', grpc.status[code], (performance.now() - started) / 1000);
      };
      (async () => {
        const name = modelName(spec);
        if (spec?.version_label) throw new ServingError('invalid', `model_spec.version_label ${JSON.stringify(spec.version_label)}: version labels are not supported; give model_spec.version`);
        const served = registry.resolve(name, spec?.version ? spec.version.value : undefined);
        const deadlineMs = remainingMs(call.getDeadline());
        release = admission.admit(deadlineMs);
        const rows = rowsFromInputs(call.request.inputs, served);
        const predictions = await served.predict(rows, started + deadlineMs);
        return { outputs: { [OUTPUT_NAME]: tensorFromRows(predictions, served.numOutputs) }, model_spec: { name, version: { value: served.version }, signature_name: 'serving_default' } };
      })().then(
        (reply) => {
          finish(grpc.status.OK);
          callback(null, reply);
        },
        (err: unknown) => {
          const failure = toServiceError(err);
          finish(failure.code ?? grpc.status.INTERNAL);
          callback(failure);
        },
      );
    },
  };
  const models: ModelServiceHandlers = {
    GetModelStatus: (call, callback) => {
      try {
        const spec = call.request.model_spec;
        const name = modelName(spec);
        const all = registry.status(name);
        if (!all) registry.resolve(name); // throws not_found naming what is served
        const wanted = spec?.version ? spec.version.value : undefined;
        const listed = (all ?? []).filter((v) => wanted === undefined || v.version === wanted);
        if (listed.length === 0) throw new ServingError('not_found', `model ${name} has no version ${wanted}; versions: ${(all ?? []).map((v) => `${v.version} (${v.state})`).join(', ')}`);
        callback(null, {
          model_version_status: listed.map((v) => ({
            version: v.version,
            state: v.state,
            status: { error_code: v.error ? grpc.status.UNKNOWN : grpc.status.OK, error_message: v.error },
          })),
        });
      } catch (err) {
        callback(toServiceError(err));
      }
    },
  };
  const server = new grpc.Server({
    'grpc.max_receive_message_length': options.maxMessageBytes,
    // Per-call channelz bookkeeping nobody reads here.
    'grpc.enable_channelz': 0,
    // Streams beyond this wait in the client's HTTP/2 stack instead of in this process's memory (a
    // client's queued calls then end DEADLINE_EXCEEDED on its side, not with a refusal from here).
    ...(options.maxConcurrentStreams === undefined ? {} : { 'grpc.max_concurrent_streams': options.maxConcurrentStreams }),
  });
  const internals = server as unknown as Record<'_streamHandler' | '_channelzHandler', StreamHandler | undefined>;
  // grpc-js picks one of these per stream at bindAsync (_channelzHandler unless channelz is off): wrap both, as own properties.
  for (const key of ['_streamHandler', '_channelzHandler'] as const) {
    const original = internals[key];
    if (typeof original !== 'function') throw new Error(`@grpc/grpc-js no longer has Server#${key}: early refusal needs updating for this version`);
    internals[key] = function (this: grpc.Server, extraInterceptors, stream, headers) {
      // The model is named inside the message, which a refused call never has decoded: counted per API only.
      if (!refuseEarly(stream, headers, admission, () => metrics.recordEarlyRefusal('grpc'))) original.call(this, extraInterceptors, stream, headers);
    };
  }
  server.addService(proto.tensorflow.serving.PredictionService.service, prediction);
  server.addService(proto.tensorflow.serving.ModelService.service, models);
  // SERVING while the port is open: a model's own state is ModelService's to report (GetModelStatus).
  const health = new ServerHealth(SERVING_SERVICES, 'SERVING');
  health.addTo(server, servingDefinition());
  return new Promise((resolve, reject) => {
    server.bindAsync(`${options.host}:${options.port}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) {
        reject(err);
        return;
      }
      resolve({
        port,
        close: () =>
          new Promise<void>((done) => {
            health.set('NOT_SERVING');
            const force = setTimeout(() => server.forceShutdown(), 2000);
            server.tryShutdown(() => {
              clearTimeout(force);
              done();
            });
          }),
      });
    });
  });
}
