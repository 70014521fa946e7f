// The aggregator's own TCP listener in front of gRPC: it accepts every connection itself, counts it,
// and hands it to grpc-js (a connection injector) only within bounds, so a flood of connections that
// never say hello cannot take the file descriptors the store needs to commit a round.
//
// A connection is *unproven* until a call on it shows a live session (a Hello that succeeds, or any
// call with a valid session id); then it is *proven*. Bounds:
//   - connections held at once: maxConnections, and never more than the process's open-file limit
//     minus RESERVED_FDS, which stay for the database, checkpoints, update blobs and logs;
//   - unproven connections: maxUnproven in all, maxUnprovenPerAddress from one address (many honest
//     volunteers may share one address behind a NAT, so proven connections have no per-address bound);
//   - an unproven connection is closed helloTimeoutMs after it opened.
// A connection over a bound is closed at once, before TLS or HTTP/2 cost anything. HTTP/2 keepalive,
// idle and age limits for all connections are grpc-js options (SERVER_CHANNEL_OPTIONS).

import { readFileSync, readdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';

export interface ConnectionLimits {
  /** Connections held at once, from all addresses (also bounded by the open-file budget). */
  readonly maxConnections: number;
  /** Unproven connections held at once, from all addresses. */
  readonly maxUnproven: number;
  /** Unproven connections held at once from one address. */
  readonly maxUnprovenPerAddress: number;
  /** How long a connection may stay open without showing a session. */
  readonly helloTimeoutMs: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: 8192,
  maxUnproven: 1024,
  maxUnprovenPerAddress: 64,
  helloTimeoutMs: 15_000,
};

/** File descriptors never given to connections: the database and its WAL, checkpoints, update blobs, logs, the metrics port. */
export const RESERVED_FDS = 256;

/** grpc-js options for every connection: dead peers found by keepalive, idle and old connections closed gracefully. */
export const SERVER_CHANNEL_OPTIONS = {
  // Ping a connection with no traffic every minute; one that does not answer in 20 s is closed.
  'grpc.keepalive_time_ms': 60_000,
  'grpc.keepalive_timeout_ms': 20_000,
  // A connection with no call for 5 minutes is closed (a node's client reconnects when it next calls).
  'grpc.max_connection_idle_ms': 300_000,
  // Every connection is renewed after an hour, with 5 minutes' grace for a call in flight.
  'grpc.max_connection_age_ms': 3_600_000,
  'grpc.max_connection_age_grace_ms': 300_000,
} as const;

export type RefusalReason = 'connections' | 'unproven' | 'unproven-per-address';

export interface ConnectionStats {
  open: number;
  proven: number;
  unproven: number;
  /** The bound in force on open connections: min(maxConnections, fdLimit − RESERVED_FDS). */
  max: number;
  fdLimit: number;
  /** Open file descriptors of the process, when the platform tells (Linux: /proc/self/fd). */
  fdsInUse: number | undefined;
  accepted: number;
  refused: Record<RefusalReason, number>;
  /** Unproven connections closed at their hello timeout. */
  timedOut: number;
}

interface Held {
  readonly socket: Socket;
  readonly address: string;
  proven: boolean;
  timer?: NodeJS.Timeout;
}

/** The process's soft open-file limit (Linux: /proc/self/limits); undefined where it cannot be read. */
export function openFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    return soft === undefined || soft === 'unlimited' ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}

function openFileCount(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

/** Connections above the open-file budget are never accepted; without a known limit, this is assumed. */
const ASSUMED_FD_LIMIT = 1024;

export class ConnectionGuard {
  private readonly held = new Map<string, Held>();
  private readonly unprovenByAddress = new Map<string, number>();
  private unproven = 0;
  private accepted = 0;
  private timedOut = 0;
  private readonly refused: Record<RefusalReason, number> = { connections: 0, unproven: 0, 'unproven-per-address': 0 };
  private server: Server | undefined;
  readonly max: number;
  readonly fdLimit: number;

  constructor(
    readonly limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS,
    fdLimit: number | undefined = openFileLimit(),
  ) {
    this.fdLimit = fdLimit ?? ASSUMED_FD_LIMIT;
    this.max = Math.max(1, Math.min(limits.maxConnections, this.fdLimit - RESERVED_FDS));
  }

  /** Listens on host:port and hands each connection within bounds to `inject`; resolves with the port. */
  listen(host: string, port: number, inject: (socket: Socket) => void): Promise<number> {
    const server = createServer({ noDelay: true }, (socket) => this.admit(socket, inject));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        const address = server.address();
        resolve(typeof address === 'object' && address ? address.port : port);
      });
    });
  }

  /** A call on the connection `peer` ("address:port", as grpc-js getPeer gives it) showed a live session. */
  prove(peer: string): void {
    const h = this.held.get(peer);
    if (!h || h.proven) return;
    h.proven = true;
    clearTimeout(h.timer);
    this.forgetUnproven(h.address);
  }

  stats(): ConnectionStats {
    return {
      open: this.held.size,
      proven: this.held.size - this.unproven,
      unproven: this.unproven,
      max: this.max,
      fdLimit: this.fdLimit,
      fdsInUse: openFileCount(),
      accepted: this.accepted,
      refused: { ...this.refused },
      timedOut: this.timedOut,
    };
  }

  /** Stops accepting; the connections already handed over are grpc-js's to close. */
  close(): Promise<void> {
    const server = this.server;
    if (!server) return Promise.resolve();
    for (const h of this.held.values()) clearTimeout(h.timer);
    return new Promise((resolve) => server.close(() => resolve()));
  }

  private admit(socket: Socket, inject: (socket: Socket) => void): void {
    const address = socket.remoteAddress ?? 'unknown';
    const fromAddress = this.unprovenByAddress.get(address) ?? 0;
    const refusal: RefusalReason | undefined =
      this.held.size >= this.max
        ? 'connections'
        : this.unproven >= this.limits.maxUnproven
          ? 'unproven'
          : fromAddress >= this.limits.maxUnprovenPerAddress
            ? 'unproven-per-address'
            : undefined;
    if (refusal) {
      this.refused[refusal]++;
      socket.destroy();
      return;
    }
    const key = `${address}:${socket.remotePort}`;
    const h: Held = { socket, address, proven: false };
    this.held.set(key, h);
    this.unproven++;
    this.unprovenByAddress.set(address, fromAddress + 1);
    this.accepted++;
    h.timer = setTimeout(() => {
      if (h.proven) return;
      this.timedOut++;
      socket.destroy();
    }, this.limits.helloTimeoutMs);
    h.timer.unref();
    socket.once('close', () => {
      clearTimeout(h.timer);
      this.held.delete(key);
      if (!h.proven) this.forgetUnproven(address);
    });
    // A reset by the peer must not become an uncaught error; grpc-js sees the close.
    socket.on('error', () => {});
    inject(socket);
  }

  private forgetUnproven(address: string): void {
    this.unproven--;
    const left = (this.unprovenByAddress.get(address) ?? 1) - 1;
    if (left > 0) this.unprovenByAddress.set(address, left);
    else this.unprovenByAddress.delete(address);
  }
}
