// The TensorFlow Serving REST API (v1) over node:http, so existing TF Serving
// clients work unchanged:
//   POST /v1/models/NAME[/versions/N]:predict  {"instances": [...]} → {"predictions": [...]}
//                                              {"inputs": [...]}    → {"outputs": [...]}
//   GET  /v1/models/NAME[/versions/N]          → {"model_version_status": [...]}
//   GET  /metrics                              → Prometheus text
// Errors are {"error": "..."} with a message naming the problem.
//
// A predict request is admitted or refused (429) on its headers alone, before
// its body is read or parsed: see admission.ts. A client may say how long it
// will wait with `x-deadline-ms: N`; the request is then refused at once if it
// cannot start in time, and dropped unrun if its time passes in the queue.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Admission } from './load-shedding.js';
import { HTTP_STATUS, ServingError } from './errors.js';
import type { ServingMetrics } from './metrics.js';
import type { ModelRegistry, ServedVersion, VersionStatus } from './registry.js';

export interface HttpServingOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Larger request bodies are refused with 413 before they are parsed. */
  maxBodyBytes: number;
}

export interface HttpServing {
  port: number;
  close(): Promise<void>;
}

/** An HTTP-only refusal (no such endpoint, wrong method). */
class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const DEADLINE_HEADER = 'x-deadline-ms';

/** How long close() lets requests in progress finish before closing their connections. */
const CLOSE_GRACE_MS = 2000;

const ROUTE = /^\/v1\/models\/([^/:]+)(?:\/versions\/([^/:]+))?(:predict)?$/;

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    const tooLarge = (): ServingError => new ServingError('too_large', `the request body exceeds ${limit} bytes (--max-body-bytes)`);
    if (Number.isFinite(declared) && declared > limit) {
      // Answer without reading it; the connection closes after the answer.
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        chunks.length = 0;
        reject(tooLarge());
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function describeShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'string' ? `a string (${JSON.stringify(value.slice(0, 20))})` : `a ${typeof value}`;
}

/**
 * One instance as float32 values. Accepted layouts: the model's input shape
 * nested (e.g. 28×28×1), or all values in one flat list.
 */
function instanceValues(instance: unknown, index: number, served: ServedVersion): Float32Array {
  const where = `instance ${index}`;
  const takes = `model ${served.name} takes ${served.inputSize} float32 values (shape ${describeShape(served.inputShape)})`;
  if (!Array.isArray(instance)) throw new ServingError('invalid', `${where} is ${typeName(instance)}; ${takes}, sent as a list of numbers`);
  // The nesting the client used, read along first elements; every list is then checked against it.
  const shape: number[] = [];
  for (let v: unknown = instance; Array.isArray(v); v = v[0]) shape.push(v.length);
  const flat = shape.length === 1;
  if (!flat && describeShape(shape) !== describeShape(served.inputShape)) {
    throw new ServingError('invalid', `${where} has shape ${describeShape(shape)}; ${takes}, or flat`);
  }
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== served.inputSize) {
    throw new ServingError('invalid', `${where} has ${count} values; model ${served.name} takes ${served.inputSize} (shape ${describeShape(served.inputShape)})`);
  }
  const out = new Float32Array(count);
  let offset = 0;
  // The path to an element ("3[27]") is only spelled out for an error message: building it per value costs more than the check.
  const walk = (v: unknown, depth: number, path: () => string): void => {
    if (depth === shape.length) {
      if (typeof v !== 'number') throw new ServingError('invalid', `${where}, value ${path()} is ${typeName(v)}; ${served.name} takes float32 numbers`);
      out[offset++] = v;
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[depth]) {
      throw new ServingError('invalid', `${where} is ragged: element ${path() || '(top)'} is ${Array.isArray(v) ? `a list of ${v.length}` : typeName(v)}, expected a list of ${shape[depth]}`);
    }
    for (let i = 0; i < v.length; i++) walk(v[i], depth + 1, () => (depth === 0 ? String(i) : `${path()}[${i}]`));
  };
  walk(instance, 0, () => '');
  return out;
}

/**
 * The common case, a flat list of exactly `size` numbers, copied in one tight
 * loop; undefined for anything else, which instanceValues then reads or explains.
 * (A hand-written byte parser was tried and was slower than JSON.parse plus this loop.)
 */
function flatInstance(instance: unknown, size: number): Float32Array | undefined {
  if (!Array.isArray(instance) || instance.length !== size) return undefined;
  const out = new Float32Array(size);
  for (let k = 0; k < size; k++) {
    const v: unknown = instance[k];
    if (typeof v !== 'number') return undefined;
    out[k] = v;
  }
  return out;
}

/** Parses a predict body into rows; `columnar` tells which response key TF Serving would use. */
function parsePredictBody(bytes: Buffer, served: ServedVersion): { rows: Float32Array[]; columnar: boolean } {
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new ServingError('invalid', `the body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ServingError('invalid', 'the body must be a JSON object with "instances" (row format) or "inputs" (columnar format)');
  }
  const fields = body as Record<string, unknown>;
  if ('instances' in fields && 'inputs' in fields) throw new ServingError('invalid', 'send either "instances" or "inputs", not both');
  const columnar = 'inputs' in fields;
  const batch = columnar ? fields.inputs : fields.instances;
  if (batch === undefined) throw new ServingError('invalid', 'the body has no "instances" (row format) or "inputs" (columnar format)');
  // The model has one unnamed input, so columnar "inputs" is the batch itself.
  if (!Array.isArray(batch)) throw new ServingError('invalid', `"${columnar ? 'inputs' : 'instances'}" must be a list of instances, got ${typeName(batch)}`);
  if (batch.length === 0) throw new ServingError('invalid', `"${columnar ? 'inputs' : 'instances'}" is empty`);
  served.batcher.checkSize(batch.length);
  return { rows: batch.map((instance, i) => flatInstance(instance, served.inputSize) ?? instanceValues(instance, i, served)), columnar };
}

function parseVersion(name: string, version: string | undefined): number | undefined {
  if (version === undefined) return undefined;
  const n = Number(version);
  if (!/^\d+$/.test(version) || !Number.isSafeInteger(n)) throw new ServingError('not_found', `model ${name} has no version ${JSON.stringify(version)}: versions are whole numbers`);
  return n;
}

function parseDeadline(req: IncomingMessage): number {
  const header = req.headers[DEADLINE_HEADER];
  if (header === undefined) return Number.POSITIVE_INFINITY;
  const ms = Number(header);
  if (typeof header !== 'string' || header.trim() === '' || !(ms > 0)) throw new ServingError('invalid', `${DEADLINE_HEADER} must be a positive number of milliseconds, got ${JSON.stringify(header)}`);
  return ms;
}

/** One entry of TF Serving's model_version_status. */
export function restVersionStatus(v: VersionStatus): object {
  return { version: String(v.version), state: v.state, status: { error_code: v.error ? 'UNKNOWN' : 'OK', error_message: v.error } };
}

function statusBody(registry: ModelRegistry, name: string, version: string | undefined): object {
  const all = registry.status(name);
  if (!all) registry.resolve(name); // throws not_found naming what is served
  const wanted = parseVersion(name, version);
  const listed = (all ?? []).filter((v) => wanted === undefined || v.version === wanted);
  if (listed.length === 0) throw new ServingError('not_found', `model ${name} has no version ${version}; versions: ${(all ?? []).map((v) => `${v.version} (${v.state})`).join(', ')}`);
  return { model_version_status: listed.map(restVersionStatus) };
}

/** Predictions as JSON lists (a Float32Array would serialise as an object). */
function plain(rows: Float32Array[]): number[][] {
  return rows.map((r) => Array.from(r));
}

export function startHttpServing(registry: ModelRegistry, metrics: ServingMetrics, admission: Admission, options: HttpServingOptions): Promise<HttpServing> {
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = performance.now();
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(metrics.render());
      return;
    }
    const route = ROUTE.exec(path);
    if (!route) throw new RequestError(404, `no such endpoint ${req.method ?? ''} ${path}; see /v1/models/NAME[/versions/N][:predict] and /metrics`);
    const [, name, version, predict] = route;
    if (!predict) {
      if (req.method !== 'GET') throw new RequestError(405, `use GET for model status, POST for ${path}:predict`);
      send(res, 200, statusBody(registry, name, version));
      return;
    }
    if (req.method !== 'POST') throw new RequestError(405, 'use POST for :predict');
    let status = 500;
    let release: (() => void) | undefined;
    try {
      // Everything up to admission reads headers only: a refusal costs no body parsing.
      const served = registry.resolve(name, parseVersion(name, version));
      const deadlineMs = parseDeadline(req);
      // HTTP/1.1: a client's queued requests wait in its connections, out of the event loop's sight.
      release = admission.admit(deadlineMs, false);
      const { rows, columnar } = parsePredictBody(await readBody(req, options.maxBodyBytes), served);
      const predictions = plain(await served.predict(rows, started + deadlineMs));
      status = 200;
      send(res, 200, columnar ? { outputs: predictions } : { predictions });
    } catch (err) {
      status = err instanceof ServingError ? HTTP_STATUS[err.kind] : err instanceof RequestError ? err.status : 500;
      throw err;
    } finally {
      release?.();
      if (registry.has(name)) metrics.recordRequest(name, 'http', String(status), (performance.now() - started) / 1000);
    }
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof ServingError) {
        const status = HTTP_STATUS[err.kind];
        // An unread (oversized) body would otherwise be parsed as the next request.
        const headers: Record<string, string> = status === 413 ? { connection: 'close' } : status === 429 || status === 503 ? { 'retry-after': '1' } : {};
        send(res, status, { error: err.message }, headers);
      } else if (err instanceof RequestError) {
        send(res, err.status, { error: err.message });
      } else {
        send(res, 500, { error: `internal error: ${(err as Error).message}` });
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((done) => {
            // A client that never finishes its request must not hold shutdown open forever.
            const force = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
            server.close(() => {
              clearTimeout(force);
              done();
            });
            server.closeIdleConnections();
          }),
      });
    });
  });
}
