// Load-generator clients cheap enough not to be the bottleneck. On a 2-core
// machine the generator shares the CPU with the server: Node's http.request
// and grpc-js each cost about as much per call as the server's own work, so
// measured throughput would mostly be the client's. These send prebuilt bytes
// and read only a reply's status:
//   - HTTP/1.1 keep-alive over net.Socket: one request in flight per connection;
//   - gRPC over raw HTTP/2 frames on net.Socket (below): the serialized
//     PredictRequest in one length-prefixed message per stream, grpc-status
//     read from the header block that ends it.
import { constants as h2 } from 'node:http2';
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

// ---------------------------------------------------------------------------
// gRPC over raw HTTP/2 frames on net.Socket: node:http2's client costs about
// 85–95 µs of CPU per call (measured), as much as the server's own work, so at
// twice the server's sustainable rate it could not offer the load on a 2-core
// machine. This one writes a prebuilt HEADERS + DATA pair per call (stream ids
// patched in) and reads only what it needs: SETTINGS, PING, WINDOW_UPDATE,
// RST_STREAM, GOAWAY, and grpc-status from the header block that ends a stream.
// It asks for an HPACK table size of 0 and sends nothing before the server has
// acknowledged that, so every header the server sends is a literal or a static
// index; grpc-status is the first literal whose value is one or two plain
// digits (values that short are never Huffman-coded: it would not be shorter).

const FRAME_DATA = 0;
const FRAME_HEADERS = 1;
const FRAME_RST_STREAM = 3;
const FRAME_SETTINGS = 4;
const FRAME_PING = 6;
const FRAME_GOAWAY = 7;
const FRAME_WINDOW_UPDATE = 8;
const FRAME_CONTINUATION = 9;
const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
const MAX_WINDOW = 2 ** 31 - 1;

function frameHeader(length: number, type: number, flags: number, stream: number): Buffer {
  const b = Buffer.alloc(9);
  b.writeUIntBE(length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(stream, 5);
  return b;
}

function hpackString(s: string): Buffer {
  const bytes = Buffer.from(s, 'latin1');
  if (bytes.length >= 127) throw new RangeError('header too long for this encoder');
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

/** The number at `buf[pos]` with an n-bit prefix (RFC 7541 §5.1); sets `hpackPos` past it. */
let hpackPos = 0;
function hpackInt(buf: Buffer, pos: number, bits: number): number {
  const mask = (1 << bits) - 1;
  let v = buf[pos++] & mask;
  if (v === mask) {
    let m = 0;
    let b: number;
    do {
      b = buf[pos++];
      v += (b & 0x7f) * 2 ** m;
      m += 7;
    } while (b & 0x80 && pos < buf.length);
  }
  hpackPos = pos;
  return v;
}

/** grpc-status in a header block, or undefined. */
function grpcStatusIn(block: Buffer): number | undefined {
  let i = 0;
  while (i < block.length) {
    const b = block[i];
    if (b & 0x80) {
      hpackInt(block, i, 7); // indexed: static entries only (table size 0)
      i = hpackPos;
      continue;
    }
    if ((b & 0xe0) === 0x20) {
      hpackInt(block, i, 5); // table size update
      i = hpackPos;
      continue;
    }
    const nameIndex = hpackInt(block, i, (b & 0xc0) === 0x40 ? 6 : 4);
    i = hpackPos;
    if (nameIndex === 0) {
      const nameLength = hpackInt(block, i, 7);
      i = hpackPos + nameLength;
    }
    const huffman = block[i] & 0x80;
    const length = hpackInt(block, i, 7);
    i = hpackPos;
    if (!huffman && (length === 1 || length === 2)) {
      let digits = true;
      for (let k = i; k < i + length; k++) if (block[k] < 0x30 || block[k] > 0x39) digits = false;
      if (digits) return Number(block.toString('latin1', i, i + length));
    }
    i += length;
  }
  return undefined;
}

function answerFor(grpcStatus: number | undefined): number {
  if (grpcStatus === undefined) return 1000 + 13;
  return grpcStatus === 0 ? 200 : grpcStatus === 8 ? 429 : grpcStatus === 14 ? 503 : grpcStatus === 4 ? 0 : 1000 + grpcStatus;
}

interface Call {
  started: number;
  stream: number;
  done: boolean;
  resolve: (a: Answer) => void;
}

/** gRPC unary calls of one prebuilt, serialized request over raw HTTP/2 frames, round-robin over `connections` connections. */
export function rawH2GrpcClient(port: number, path: string, serialized: Buffer, deadlineMs: number, connections = 1): Client {
  const block = Buffer.concat([
    Buffer.from([0x83, 0x86]), // :method POST, :scheme http
    Buffer.from([0x04]),
    hpackString(path),
    Buffer.from([0x01]),
    hpackString(`127.0.0.1:${port}`),
    Buffer.from([0x0f, 0x10]), // content-type (static 31)
    hpackString('application/grpc'),
    Buffer.from([0x00]),
    hpackString('te'),
    hpackString('trailers'),
    Buffer.from([0x00]),
    hpackString('grpc-timeout'),
    hpackString(`${deadlineMs}m`),
  ]);
  const message = Buffer.alloc(5 + serialized.length);
  message.writeUInt32BE(serialized.length, 1);
  serialized.copy(message, 5);
  const template = Buffer.concat([frameHeader(block.length, FRAME_HEADERS, FLAG_END_HEADERS, 0), block, frameHeader(message.length, FRAME_DATA, FLAG_END_STREAM, 0), message]);
  const dataHeaderAt = 9 + block.length;
  let closed = false;

  const open = (): Connection => {
    const socket = connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    const conn: Connection = { socket, ready: false, dead: false, nextStream: 1, calls: new Map(), queue: [], window: 65535, maxStreams: Number.POSITIVE_INFINITY };
    const settings = Buffer.alloc(18);
    settings.writeUInt16BE(1, 0); // HEADER_TABLE_SIZE
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(2, 6); // ENABLE_PUSH
    settings.writeUInt32BE(0, 8);
    settings.writeUInt16BE(4, 12); // INITIAL_WINDOW_SIZE
    settings.writeUInt32BE(MAX_WINDOW, 14);
    const update = Buffer.alloc(4);
    update.writeUInt32BE(MAX_WINDOW - 65535);
    socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), frameHeader(18, FRAME_SETTINGS, 0, 0), settings, frameHeader(4, FRAME_WINDOW_UPDATE, 0, 0), update]));
    let buffered: Buffer = Buffer.alloc(0);
    let headerBlock: Buffer[] = [];
    let headerStream = 0;
    let headerEnds = false;
    const endCall = (stream: number, status: number, reset?: number): void => {
      const call = conn.calls.get(stream);
      if (!call) return;
      conn.calls.delete(stream);
      finish(call, status, reset);
    };
    const die = (): void => {
      if (conn.dead) return;
      conn.dead = true;
      for (const stream of [...conn.calls.keys()]) endCall(stream, 0);
      for (const call of conn.queue.splice(0)) finish(call, 0);
      socket.destroy();
    };
    socket.on('error', die);
    socket.on('close', die);
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      let at = 0;
      while (buffered.length - at >= 9) {
        const length = buffered.readUIntBE(at, 3);
        if (buffered.length - at < 9 + length) break;
        const type = buffered[at + 3];
        const flags = buffered[at + 4];
        const stream = buffered.readUInt32BE(at + 5) & 0x7fffffff;
        const payload = buffered.subarray(at + 9, at + 9 + length);
        at += 9 + length;
        if (type === FRAME_HEADERS || type === FRAME_CONTINUATION) {
          let body = payload;
          if (type === FRAME_HEADERS) {
            let start = 0;
            let end = body.length;
            if (flags & FLAG_PADDED) {
              end -= body[0];
              start = 1;
            }
            if (flags & FLAG_PRIORITY) start += 5;
            body = body.subarray(start, end);
            headerStream = stream;
            headerEnds = (flags & FLAG_END_STREAM) !== 0;
            headerBlock = [];
          }
          headerBlock.push(body);
          if (flags & FLAG_END_HEADERS && headerEnds) {
            endCall(headerStream, answerFor(grpcStatusIn(headerBlock.length === 1 ? headerBlock[0] : Buffer.concat(headerBlock))));
          }
        } else if (type === FRAME_DATA) {
          if (flags & FLAG_END_STREAM) endCall(stream, 1000 + 13); // ended without trailers
        } else if (type === FRAME_RST_STREAM) {
          const code = payload.readUInt32BE(0);
          endCall(stream, RESET_STATUS[code] ?? 1000 + 13, code);
        } else if (type === FRAME_SETTINGS) {
          if (flags & FLAG_ACK) {
            conn.ready = true;
          } else {
            for (let k = 0; k + 6 <= payload.length; k += 6) {
              const id = payload.readUInt16BE(k);
              const value = payload.readUInt32BE(k + 2);
              if (id === 3) conn.maxStreams = value;
            }
            socket.write(frameHeader(0, FRAME_SETTINGS, FLAG_ACK, 0));
          }
        } else if (type === FRAME_PING) {
          if (!(flags & FLAG_ACK)) socket.write(Buffer.concat([frameHeader(8, FRAME_PING, FLAG_ACK, 0), payload]));
        } else if (type === FRAME_WINDOW_UPDATE) {
          if (stream === 0) conn.window += payload.readUInt32BE(0) & 0x7fffffff;
        } else if (type === FRAME_GOAWAY) {
          // Streams above the last one the server took were not processed: refused, as grpc-js reports them (UNAVAILABLE).
          const last = payload.readUInt32BE(0) & 0x7fffffff;
          conn.dead = true;
          for (const id of [...conn.calls.keys()]) if (id > last) endCall(id, 503, h2.NGHTTP2_REFUSED_STREAM);
          for (const call of conn.queue.splice(0)) send(call);
        }
      }
      buffered = at === buffered.length ? Buffer.alloc(0) : buffered.subarray(at);
      pumpConnection(conn);
    });
    return conn;
  };

  interface Connection {
    socket: Socket;
    ready: boolean;
    dead: boolean;
    nextStream: number;
    calls: Map<number, Call>;
    queue: Call[];
    /** The server's connection-level flow-control window for our DATA. */
    window: number;
    maxStreams: number;
  }

  const pool: (Connection | undefined)[] = Array.from({ length: connections }, () => undefined);
  let turn = 0;
  const pumpConnection = (conn: Connection): void => {
    if (!conn.ready || conn.dead) return;
    let out: Buffer[] | undefined;
    while (conn.queue.length > 0 && conn.calls.size < conn.maxStreams && conn.window >= message.length) {
      const call = conn.queue.shift() as Call;
      if (call.done) continue;
      const stream = conn.nextStream;
      conn.nextStream += 2;
      call.stream = stream;
      conn.calls.set(stream, call);
      conn.window -= message.length;
      const frames = Buffer.allocUnsafe(template.length);
      template.copy(frames);
      frames.writeUInt32BE(stream, 5);
      frames.writeUInt32BE(stream, dataHeaderAt + 5);
      (out ??= []).push(frames);
    }
    if (out) conn.socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
  };
  const send = (call: Call): void => {
    const i = turn++ % connections;
    let conn = pool[i];
    if (!conn || conn.dead) {
      conn = open();
      pool[i] = conn;
    }
    conn.queue.push(call);
    pumpConnection(conn);
  };

  // Deadlines: every call has the same one, so calls expire in the order they started.
  const started: { call: Call; conn: () => Connection | undefined }[] = [];
  let head = 0;
  const finish = (call: Call, status: number, reset?: number): void => {
    if (call.done) return;
    call.done = true;
    const ms = performance.now() - call.started;
    call.resolve(reset === undefined ? { status, ms } : { status, ms, reset });
  };
  const sweep = setInterval(() => {
    const now = performance.now();
    const cancels = new Map<Connection, Buffer[]>();
    while (head < started.length && now - started[head].call.started >= deadlineMs) {
      const { call, conn } = started[head++];
      if (call.done) continue;
      finish(call, 0);
      const c = conn();
      if (c && !c.dead && call.stream > 0 && c.calls.delete(call.stream)) {
        const rst = Buffer.concat([frameHeader(4, FRAME_RST_STREAM, 0, call.stream), Buffer.from([0, 0, 0, h2.NGHTTP2_CANCEL])]);
        cancels.set(c, [...(cancels.get(c) ?? []), rst]);
      }
    }
    for (const [c, frames] of cancels) c.socket.write(Buffer.concat(frames));
    if (head > 4096 && head * 2 > started.length) {
      started.splice(0, head);
      head = 0;
    }
  }, 5);
  sweep.unref();

  return {
    predict: () =>
      new Promise((resolve) => {
        const call: Call = { started: performance.now(), stream: 0, done: false, resolve };
        const i = turn % connections;
        started.push({ call, conn: () => pool[i] });
        if (closed) finish(call, 0);
        else send(call);
      }),
    close: () => {
      closed = true;
      clearInterval(sweep);
      for (const conn of pool) conn?.socket.end();
    },
  };
}
