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
// A connection over a bound is closed at once, before TLS or HTTP/2 cost anything. When the unproven
// places are all taken, a newcomer from an address holding fewer of them takes the place of the oldest
// unproven connection of the address that holds the most: a flood from many addresses then cannot lock
// a new honest node out for a whole hello timeout, and a flooder only ever pushes out its own kind.
// Turning a connection away still costs the process an accept and a close: about 70 µs of CPU on this
// machine (measured: 42 µs of it in user space even on Node's cheapest drop path), so a flood of 3,000
// connections a second takes a fifth of the event loop. When more than `shedAbovePerSecond` are turned
// away within `shedWindowMs`, the guard stops listening for `shedPauseMs`: the kernel then refuses new
// connections (a reset, on the sender's CPU for loopback) without waking the aggregator. Connections
// already held, proven ones included, are not touched; a node that is turned away by a closed port
// retries, as it does when the aggregator restarts.
// A connection is handed to grpc-js only once its first bytes arrive: a silent connection costs a
// socket, not a TLS and HTTP/2 session (which is what made 1,024 silent connections cost CPU and
// hundreds of MiB). HTTP/2 keepalive, idle and age limits for all connections are grpc-js options
// (SERVER_CHANNEL_OPTIONS).

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
  /** Stop listening when more connections than this are turned away within shedWindowMs (0: never). */
  readonly shedAbovePerSecond?: number;
  /** The window over which turned-away connections are counted against shedAbovePerSecond (default 1 s). */
  readonly shedWindowMs?: number;
  /** How long the listener stays closed each time. */
  readonly shedPauseMs?: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: 8192,
  maxUnproven: 1024,
  maxUnprovenPerAddress: 64,
  helloTimeoutMs: 15_000,
  // More turn-aways in a second than there are unproven places: nothing honest arrives like that.
  shedAbovePerSecond: 1024,
  shedWindowMs: 1000,
  shedPauseMs: 2000,
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

/** Why a connection the guard had accepted was closed by it. */
export type ClosingReason = 'hello-timeout' | 'evicted';

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
  /** Unproven connections closed to make room for a newcomer from an address holding fewer (the oldest of the address holding most). */
  evicted: number;
  /** Unproven connections that have sent nothing yet, so grpc-js has not seen them. */
  silent: number;
  /** Whether the listener is open (false while shedding). */
  listening: boolean;
  /** Times the listener was closed to shed a flood, and the seconds it stayed closed in all. */
  sheds: number;
  shedSeconds: number;
}

interface Held {
  readonly socket: Socket;
  readonly address: string;
  proven: boolean;
  readonly key: string;
  /** Handed to grpc-js (its first bytes arrived). */
  injected: boolean;
  /** No longer counted (closed, or evicted and closing). */
  released: boolean;
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
  /** Each address's unproven connections, oldest first (a Set keeps insertion order). */
  private readonly unprovenByAddress = new Map<string, Set<string>>();
  private unproven = 0;
  private silent = 0;
  private accepted = 0;
  private timedOut = 0;
  private evicted = 0;
  private readonly refused: Record<RefusalReason, number> = { connections: 0, unproven: 0, 'unproven-per-address': 0 };
  private server: Server | undefined;
  private listenAt: { host: string; port: number; inject: (socket: Socket) => void } | undefined;
  private windowStart = 0;
  private turnedAwayInWindow = 0;
  private shedTimer: NodeJS.Timeout | undefined;
  private shedStarted = 0;
  private sheds = 0;
  private shedMs = 0;
  private closing = false;
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
  async listen(host: string, port: number, inject: (socket: Socket) => void): Promise<number> {
    const bound = await this.open(host, port, inject);
    this.listenAt = { host, port: bound, inject };
    return bound;
  }

  private open(host: string, port: number, inject: (socket: Socket) => void): Promise<number> {
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
    this.forgetUnproven(h.address, peer);
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
      evicted: this.evicted,
      silent: this.silent,
      listening: this.shedTimer === undefined,
      sheds: this.sheds,
      shedSeconds: (this.shedMs + (this.shedTimer ? performance.now() - this.shedStarted : 0)) / 1000,
    };
  }

  /**
   * Stops accepting and closes the connections grpc-js has not seen (they have sent nothing); the ones
   * already handed over are grpc-js's to close. Resolves once every connection has closed.
   */
  close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.shedTimer);
    const server = this.server;
    if (!server) return Promise.resolve();
    const closed = new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
    for (const h of [...this.held.values()]) {
      clearTimeout(h.timer);
      if (!h.injected) h.socket.destroy();
    }
    return closed;
  }

  /** Closes a connection on arrival, and stops listening for a while when that happens too often. */
  private turnAway(socket: Socket, reason: RefusalReason): void {
    this.refused[reason]++;
    socket.destroy();
    this.countTurnedAway();
  }

  private countTurnedAway(): void {
    const above = this.limits.shedAbovePerSecond ?? 0;
    if (above <= 0 || this.shedTimer || this.closing || !this.listenAt) return;
    const now = performance.now();
    const windowMs = this.limits.shedWindowMs ?? 1000;
    if (now - this.windowStart >= windowMs) {
      this.windowStart = now;
      this.turnedAwayInWindow = 0;
    }
    if (++this.turnedAwayInWindow <= (above * windowMs) / 1000) return;
    // Closing the listening socket leaves the held connections alone; a new server listens again later.
    const { host, port, inject } = this.listenAt;
    this.server?.close();
    this.sheds++;
    this.shedStarted = now;
    const reopen = (): void => {
      this.shedTimer = setTimeout(() => {
        if (this.closing) return;
        this.open(host, port, inject).then(
          () => {
            this.shedMs += performance.now() - this.shedStarted;
            this.shedTimer = undefined;
            this.windowStart = performance.now();
            this.turnedAwayInWindow = 0;
          },
          // The port could not be bound again (taken meanwhile): keep trying; nodes already in are served.
          () => reopen(),
        );
      }, this.limits.shedPauseMs ?? 2000);
    };
    reopen();
  }

  private admit(socket: Socket, inject: (socket: Socket) => void): void {
    const address = socket.remoteAddress ?? 'unknown';
    const fromAddress = this.unprovenByAddress.get(address)?.size ?? 0;
    let refusal: RefusalReason | undefined =
      this.held.size >= this.max ? 'connections' : fromAddress >= this.limits.maxUnprovenPerAddress ? 'unproven-per-address' : undefined;
    if (!refusal && this.unproven >= this.limits.maxUnproven && !this.evictFor(fromAddress)) refusal = 'unproven';
    if (refusal) {
      this.turnAway(socket, refusal);
      return;
    }
    const key = `${address}:${socket.remotePort}`;
    const h: Held = { socket, address, key, proven: false, injected: false, released: false };
    this.held.set(key, h);
    this.unproven++;
    this.silent++;
    const mine = this.unprovenByAddress.get(address) ?? new Set<string>();
    mine.add(key);
    this.unprovenByAddress.set(address, mine);
    this.accepted++;
    h.timer = setTimeout(() => {
      if (h.proven) return;
      this.timedOut++;
      socket.destroy();
      this.countTurnedAway();
    }, this.limits.helloTimeoutMs);
    h.timer.unref();
    const firstBytes = (): void => {
      socket.off('readable', firstBytes);
      if (h.released) return;
      // 'readable' also comes at the end of a stream that sent nothing: nothing to hand over.
      if (socket.readableLength === 0) {
        socket.destroy();
        return;
      }
      h.injected = true;
      this.silent--;
      // grpc-js (TLS and HTTP/2) takes the socket with the bytes still buffered in it.
      inject(socket);
    };
    socket.once('close', () => this.release(h));
    // A reset by the peer must not become an uncaught error; grpc-js sees the close.
    socket.on('error', () => {});
    // Wait without reading: the bytes stay in the socket's buffer for grpc-js.
    socket.on('readable', firstBytes);
  }

  /**
   * Makes an unproven place for a newcomer whose address holds `fromAddress` unproven connections: closes
   * the oldest unproven connection of the address holding the most, if that is more than the newcomer's
   * address would hold with it. False when no address holds more (the newcomer is refused).
   */
  private evictFor(fromAddress: number): boolean {
    let most: Set<string> | undefined;
    for (const keys of this.unprovenByAddress.values()) if (!most || keys.size > most.size) most = keys;
    if (!most || most.size <= fromAddress + 1) return false;
    const oldest = most.values().next().value as string;
    const h = this.held.get(oldest)!;
    // Its place is free now, not at its close event, which comes later.
    this.release(h);
    this.evicted++;
    h.socket.destroy();
    this.countTurnedAway();
    return true;
  }

  /** Stops counting a connection, once: at its close, or when it is evicted. */
  private release(h: Held): void {
    if (h.released) return;
    h.released = true;
    clearTimeout(h.timer);
    this.held.delete(h.key);
    if (!h.injected) this.silent--;
    if (!h.proven) this.forgetUnproven(h.address, h.key);
  }

  private forgetUnproven(address: string, key: string): void {
    this.unproven--;
    const keys = this.unprovenByAddress.get(address);
    keys?.delete(key);
    if (keys?.size === 0) this.unprovenByAddress.delete(address);
  }
}
