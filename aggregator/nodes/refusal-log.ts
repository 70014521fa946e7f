// Who was turned away, kept for the record evaluators read (the refusals
// table), within bounds. Each row is a fully synced write, and a refused call
// costs its sender nothing: a fresh key is a new node id every time, so the
// store's bound per source (MAX_REFUSALS_PER_SOURCE) alone does not stop a
// flood. Rows are also bounded per peer address, in all, and in rate; what is
// left out is counted and said in the log, never silently lost.
import type { RunStore } from '../store/run-store.js';

export interface RefusalBounds {
  /** Rows kept per peer address (any port) in one aggregator process. */
  perAddress: number;
  /** Rows the database may hold in all, whatever their source. */
  total: number;
  /** Rows written per second, sustained… */
  perSecond: number;
  /** …and at once, after a quiet spell. */
  burst: number;
}

export const DEFAULT_REFUSAL_BOUNDS: RefusalBounds = { perAddress: 200, total: 10_000, perSecond: 20, burst: 100 };

/** What a refused call was, as the refusals table keeps it. */
export interface Refusal {
  /** The grpc-js peer, e.g. ipv4:10.0.0.7:51234 (the port is ignored). */
  peer: string;
  /** The node id, or for a call without a session a name for the peer. */
  source: string;
  publicKey: string;
  reason: string;
  kind?: 'hello' | 'upload';
  taskId?: string;
  round?: number;
}

export type OmittedBecause = 'address' | 'total' | 'rate' | 'source';

/** A grpc-js peer without its port: one machine's connections share a bound. */
export function peerAddress(peer: string): string {
  return peer.replace(/:\d+$/, '');
}

export class RefusalLog {
  private readonly rowsPerAddress = new Map<string, number>();
  private rowsInAll: number | undefined;
  private tokens: number;
  private refilledAt: number;
  /** Refusals not kept, by the bound that left them out. */
  readonly omitted: Record<OmittedBecause, number> = { address: 0, total: 0, rate: 0, source: 0 };
  private readonly saidAt: Partial<Record<OmittedBecause, number>> = {};

  constructor(
    private readonly store: RunStore,
    private readonly bounds: RefusalBounds = DEFAULT_REFUSAL_BOUNDS,
    private readonly log: (msg: string) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = bounds.burst;
    this.refilledAt = now();
  }

  /** Keeps `refusal` unless a bound leaves it out; returns whether a row was written. */
  record(refusal: Refusal): boolean {
    const address = peerAddress(refusal.peer);
    this.rowsInAll ??= this.store.refusalCount();
    if (this.rowsInAll >= this.bounds.total) return this.omit('total', `the database holds ${this.bounds.total} refusals`);
    const fromAddress = this.rowsPerAddress.get(address) ?? 0;
    if (fromAddress >= this.bounds.perAddress) return this.omit('address', `${address} has ${this.bounds.perAddress} on record`);
    this.refill();
    if (this.tokens < 1) return this.omit('rate', `more than ${this.bounds.perSecond} a second`);
    const written = this.store.recordRefusal(refusal.source, refusal.publicKey, refusal.reason, {
      kind: refusal.kind,
      taskId: refusal.taskId,
      round: refusal.round,
    });
    if (!written) return this.omit('source', `${refusal.source} has its most on record`);
    this.tokens -= 1;
    this.rowsInAll += 1;
    this.rowsPerAddress.set(address, fromAddress + 1);
    return true;
  }

  private refill(): void {
    const now = this.now();
    this.tokens = Math.min(this.bounds.burst, this.tokens + ((now - this.refilledAt) / 1000) * this.bounds.perSecond);
    this.refilledAt = now;
  }

  /** Counts a refusal left out, and says so in the log (at most once a minute for each bound). */
  private omit(because: OmittedBecause, why: string): false {
    this.omitted[because] += 1;
    const now = this.now();
    const said = this.saidAt[because];
    if (said === undefined || now - said >= 60_000) {
      this.log(`refused calls are not all recorded (${why}); ${this.omitted[because]} left out for this reason so far`);
      this.saidAt[because] = now;
    }
    return false;
  }
}
