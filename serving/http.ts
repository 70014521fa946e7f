// The TensorFlow Serving REST API (v1) over node:http, so existing TF Serving
// clients work unchanged:
//   POST /v1/models/NAME[/versions/N]:predict  {"instances": [...]} → {"predictions": [...]}
//                                              {"inputs": [...]}    → {"outputs": [...]}
//   GET  /v1/models/NAME[/versions/N]          → {"model_version_status": [...]}
//   GET  /metrics                              → Prometheus text
// Errors are {"error": "..."} with a message naming the problem.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { QueueFullError, RequestTooLargeError } from './batcher.js';
import type { ServingMetrics } from './metrics.js';
import type { ModelRegistry, ServedVersion } from './registry.js';

export interface HttpServingOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Larger request bodies are refused with 413 before they are parsed. */
  maxBodyBytes: number;
  /**
   * Predict requests being read, parsed, queued or run at once; more are answered
   * 429 before their body is read. The batch queue alone cannot bound the wait:
   * when parsing JSON saturates the process, requests pile up before they reach it.
   */
  maxPendingRequests: number;
}

export interface HttpServing {
  port: number;
  close(): Promise<void>;
}

/** A request the client must fix; `status` is the HTTP status to answer with. */
class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const ROUTE = /^\/v1\/models\/([^/:]+)(?:\/versions\/([^/:]+))?(:predict)?$/;

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    const tooLarge = (): RequestError => new RequestError(413, `the request body exceeds ${limit} bytes (--max-body-bytes)`);
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
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
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
  if (!Array.isArray(instance)) throw new RequestError(400, `${where} is ${typeName(instance)}; ${takes}, sent as a list of numbers`);
  // The nesting the client used, read along first elements; every list is then checked against it.
  const shape: number[] = [];
  for (let v: unknown = instance; Array.isArray(v); v = v[0]) shape.push(v.length);
  const flat = shape.length === 1;
  if (!flat && describeShape(shape) !== describeShape(served.inputShape)) {
    throw new RequestError(400, `${where} has shape ${describeShape(shape)}; ${takes}, or flat`);
  }
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== served.inputSize) {
    throw new RequestError(400, `${where} has ${count} values; model ${served.name} takes ${served.inputSize} (shape ${describeShape(served.inputShape)})`);
  }
  const out = new Float32Array(count);
  let offset = 0;
  // The path to an element ("3[27]") is only spelled out for an error message: building it per value costs more than the check.
  const walk = (v: unknown, depth: number, path: () => string): void => {
    if (depth === shape.length) {
      if (typeof v !== 'number') throw new RequestError(400, `${where}, value ${path()} is ${typeName(v)}; ${served.name} takes float32 numbers`);
      out[offset++] = v;
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[depth]) {
      throw new RequestError(400, `${where} is ragged: element ${path() || '(top)'} is ${Array.isArray(v) ? `a list of ${v.length}` : typeName(v)}, expected a list of ${shape[depth]}`);
    }
    for (let i = 0; i < v.length; i++) walk(v[i], depth + 1, () => (depth === 0 ? String(i) : `${path()}[${i}]`));
  };
  walk(instance, 0, () => '');
  return out;
}

/** Parses a predict body into rows; `columnar` tells which response key TF Serving would use. */
function parsePredictBody(text: string, served: ServedVersion): { rows: Float32Array[]; columnar: boolean } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new RequestError(400, `the body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new RequestError(400, 'the body must be a JSON object with "instances" (row format) or "inputs" (columnar format)');
  }
  const fields = body as Record<string, unknown>;
  if ('instances' in fields && 'inputs' in fields) throw new RequestError(400, 'send either "instances" or "inputs", not both');
  const columnar = 'inputs' in fields;
  const batch = columnar ? fields.inputs : fields.instances;
  if (batch === undefined) throw new RequestError(400, 'the body has no "instances" (row format) or "inputs" (columnar format)');
  // The model has one unnamed input, so columnar "inputs" is the batch itself.
  if (!Array.isArray(batch)) throw new RequestError(400, `"${columnar ? 'inputs' : 'instances'}" must be a list of instances, got ${typeName(batch)}`);
  if (batch.length === 0) throw new RequestError(400, `"${columnar ? 'inputs' : 'instances'}" is empty`);
  served.batcher.checkSize(batch.length);
  return { rows: batch.map((instance, i) => instanceValues(instance, i, served)), columnar };
}

function resolveVersion(registry: ModelRegistry, name: string, version: string | undefined): ServedVersion {
  const served = registry.versions(name);
  if (!served) throw new RequestError(404, `no model named ${JSON.stringify(name)}; serving ${registry.names().map((n) => JSON.stringify(n)).join(', ') || 'nothing'}`);
  if (version === undefined) return served[0];
  const n = Number(version);
  const found = Number.isInteger(n) ? registry.get(name, n) : undefined;
  if (!found) throw new RequestError(404, `model ${name} has no version ${JSON.stringify(version)}; versions served: ${served.map((v) => v.version).join(', ')}`);
  return found;
}

function versionStatus(v: ServedVersion): object {
  return { version: String(v.version), state: 'AVAILABLE', status: { error_code: 'OK', error_message: '' } };
}

export function startHttpServing(registry: ModelRegistry, metrics: ServingMetrics, options: HttpServingOptions): Promise<HttpServing> {
  let pending = 0;
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
      const served = version === undefined ? registry.versions(name) : [resolveVersion(registry, name, version)];
      if (!served) resolveVersion(registry, name, undefined);
      send(res, 200, { model_version_status: (served ?? []).map(versionStatus) });
      return;
    }
    let status = 500;
    pending++;
    try {
      if (pending > options.maxPendingRequests) {
        throw new QueueFullError(`overloaded: ${pending - 1} predict requests in progress (limit ${options.maxPendingRequests}); retry later`);
      }
      if (req.method !== 'POST') throw new RequestError(405, 'use POST for :predict');
      const served = resolveVersion(registry, name, version);
      const { rows, columnar } = parsePredictBody(await readBody(req, options.maxBodyBytes), served);
      const predictions = await served.predict(rows);
      status = 200;
      send(res, 200, columnar ? { outputs: predictions } : { predictions });
    } catch (err) {
      if (err instanceof RequestError) status = err.status;
      else if (err instanceof QueueFullError) status = 429;
      else if (err instanceof RequestTooLargeError) status = 413;
      throw err;
    } finally {
      pending--;
      if (registry.versions(name)) metrics.recordRequest(name, status, (performance.now() - started) / 1000);
    }
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof RequestError || err instanceof RequestTooLargeError) {
        const status = err instanceof RequestError ? err.status : 413;
        // An unread (oversized) body would otherwise be parsed as the next request.
        send(res, status, { error: err.message }, status === 413 ? { connection: 'close' } : {});
      } else if (err instanceof QueueFullError) {
        send(res, 429, { error: err.message }, { 'retry-after': '1' });
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
            server.close(() => done());
            server.closeIdleConnections();
          }),
      });
    });
  });
}
