// Load-generator clients cheap enough not to be the bottleneck. On a 2-core
// machine the generator shares the CPU with the server: Node's http.request
// and grpc-js each cost about as much per call as the server's own work, so
// measured throughput would mostly be the client's. These send prebuilt bytes
// and read only a reply's status:
//   - HTTP/1.1 keep-alive over net.Socket: one request in flight per connection;
//   - gRPC over node:http2: the serialized PredictRequest in one length-prefixed
//     frame per stream, grpc-status read from the trailers.
import { connect as http2Connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { connect, type Socket } from 'node:net';

/**
 * status: HTTP status (gRPC: 200 OK, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 1000 + code otherwise); 0 = no reply within the deadline or a broken connection.
 * A gRPC stream the server resets is mapped to a status as gRPC's HTTP/2 transport spec (and grpc-js) does:
 * REFUSED_STREAM → UNAVAILABLE, ENHANCE_YOUR_CALM → RESOURCE_EXHAUSTED; `reset` then names the HTTP/2 error code.
 */
export interface Answer {
  status: number;
  ms: number;
  /** Set when the reply was an HTTP/2 RST_STREAM with this error code instead of a gRPC status. */
  reset?: number;
}

export interface Client {
  predict(): Promise<Answer>;
  close(): void;
}

interface Waiter {
  started: number;
  resolve: (a: Answer) => void;
}

/** HTTP/1.1 client over up to `maxConnections` keep-alive sockets; requests beyond wait for a free one (their wait counts). */
export function rawHttpClient(port: number, path: string, body: Buffer, maxConnections: number, deadlineMs: number): Client {
  const request = Buffer.concat([
    Buffer.from(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nx-deadline-ms: ${deadlineMs}\r\n\r\n`),
    body,
  ]);
  const idle: Socket[] = [];
  const queue: Waiter[] = [];
  let open = 0;
  let closed = false;

  const run = (socket: Socket, w: Waiter): void => {
    let buffered: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => finish(0, true), Math.max(0, w.started + deadlineMs - performance.now()));
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buffered.subarray(0, end).toString('latin1');
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buffered.length < end + 4 + length) return;
      finish(Number(head.slice(9, 12)), /\r\nconnection: *close/i.test(head));
    };
    const onGone = (): void => finish(0, true);
    const finish = (status: number, drop: boolean): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onGone);
      socket.off('error', onGone);
      w.resolve({ status, ms: performance.now() - w.started });
      if (drop || closed) {
        socket.destroy();
        open--;
      } else idle.push(socket);
      pump();
    };
    socket.on('data', onData);
    socket.once('close', onGone);
    socket.once('error', onGone);
    socket.write(request);
  };

  const pump = (): void => {
    while (queue.length > 0) {
      // A request whose deadline passed while it waited for a connection is given up, unsent, as a client would.
      const first = queue[0];
      if (performance.now() - first.started >= deadlineMs) {
        queue.shift();
        first.resolve({ status: 0, ms: performance.now() - first.started });
        continue;
      }
      const socket = idle.pop();
      if (socket) {
        run(socket, queue.shift() as Waiter);
      } else if (open < maxConnections) {
        open++;
        const fresh = connect(port, '127.0.0.1');
        fresh.setNoDelay(true);
        const w = queue.shift() as Waiter;
        fresh.once('connect', () => run(fresh, w));
        fresh.once('error', () => {
          open--;
          w.resolve({ status: 0, ms: performance.now() - w.started });
        });
      } else return;
    }
  };

  return {
    predict: () =>
      new Promise((resolve) => {
        queue.push({ started: performance.now(), resolve });
        pump();
      }),
    close: () => {
      closed = true;
      for (const s of idle.splice(0)) s.destroy();
    },
  };
}

/** How grpc-js reports a stream the server reset (gRPC's HTTP/2 transport spec, "Errors"), as `Answer.status`. */
const RESET_STATUS: Readonly<Record<number, number>> = {
  [h2.NGHTTP2_REFUSED_STREAM]: 503, // UNAVAILABLE; grpc-js retries it once, transparently, unless retries are off
  [h2.NGHTTP2_ENHANCE_YOUR_CALM]: 429, // RESOURCE_EXHAUSTED "Bandwidth exhausted or memory limit exceeded"
};

/** gRPC unary calls of one prebuilt, serialized request, round-robin over `connections` HTTP/2 connections. */
export function rawGrpcClient(port: number, path: string, serialized: Buffer, deadlineMs: number, connections = 1): Client {
  const frame = Buffer.alloc(5 + serialized.length);
  frame.writeUInt32BE(serialized.length, 1);
  serialized.copy(frame, 5);
  const sessions: (ClientHttp2Session | undefined)[] = Array.from({ length: connections }, () => undefined);
  let next = 0;
  const sessionNow = (): ClientHttp2Session => {
    const i = next++ % connections;
    let session = sessions[i];
    if (!session || session.closed || session.destroyed) {
      session = http2Connect(`http://127.0.0.1:${port}`);
      session.on('error', () => undefined);
      sessions[i] = session;
    }
    return session;
  };
  return {
    predict: () =>
      new Promise((resolve) => {
        const started = performance.now();
        let done = false;
        const finish = (status: number, reset?: number): void => {
          if (done) return;
          done = true;
          resolve(reset === undefined ? { status, ms: performance.now() - started } : { status, ms: performance.now() - started, reset });
        };
        const stream = sessionNow().request({
          [h2.HTTP2_HEADER_METHOD]: 'POST',
          [h2.HTTP2_HEADER_PATH]: path,
          [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
          te: 'trailers',
          'grpc-timeout': `${deadlineMs}m`,
        });
        const timer = setTimeout(() => {
          finish(0);
          stream.close(h2.NGHTTP2_CANCEL);
        }, deadlineMs);
        let headerStatus: string | undefined;
        stream.on('response', (headers) => {
          // A trailers-only reply carries grpc-status in the headers.
          const s = headers['grpc-status'];
          if (s !== undefined) headerStatus = String(s);
        });
        stream.on('trailers', (trailers) => {
          headerStatus = String(trailers['grpc-status'] ?? headerStatus ?? '2');
        });
        stream.on('data', () => undefined);
        stream.on('close', () => {
          clearTimeout(timer);
          if (headerStatus === undefined && stream.rstCode !== undefined && stream.rstCode !== h2.NGHTTP2_NO_ERROR && stream.rstCode !== h2.NGHTTP2_CANCEL) {
            finish(RESET_STATUS[stream.rstCode] ?? 1000 + 13, stream.rstCode); // INTERNAL for any other reset, as grpc-js
            return;
          }
          const code = Number(headerStatus ?? -1);
          finish(code === 0 ? 200 : code === 8 ? 429 : code === 14 ? 503 : code === 4 || code < 0 ? 0 : 1000 + code);
        });
        // A reset stream emits 'error' before 'close'; the status is decided on 'close', where rstCode is known.
        stream.on('error', () => undefined);
        stream.end(frame);
      }),
    close: () => {
      for (const s of sessions) s?.close();
    },
  };
}
