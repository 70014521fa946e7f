// Admission control: decide, before any expensive work, whether a predict
// request can be answered in time, and refuse it at once (429 /
// RESOURCE_EXHAUSTED) when it cannot.
//
// Queue length alone is the wrong signal: when the process is saturated the
// backlog does not sit in the batch queue but in socket buffers the event loop
// has not read yet, where no counter sees it. Two measured quantities do see it:
//   - event-loop lag: how late a timer fires, i.e. how long a request that
//     arrived just now sits unread before its headers are handled;
//   - the expected wait behind requests already admitted: in flight ÷ the
//     recent completion rate.
// A request is refused when lag + expected wait exceeds its budget: half the
// deadline the client sent (the other half is for the forward pass and the
// reply), or --max-delay-ms for a request that carries none.
//
// Those two catch a backlog once it exists. Under sustained overload the
// process must also keep CPU to spare for refusing: a refusal is cheap but not
// free (the body still crosses the socket), and a process busy 100% of the time
// reads its sockets late, so the backlog grows where it cannot be seen.
// Hence a third rule: when the event loop was busy more than --max-utilization
// of the last 100 ms AND admitted work is not being served promptly (event-loop
// lag above 20 ms, an expected wait behind admitted requests above 25 ms, or
// HTTP/1.1 requests among those admitted, whose backlog waits in the clients'
// connections where neither shows it), admissions are limited to a rate just
// below what was admitted in it (multiplicative decrease, floored at a sixteenth
// of the highest rate admitted in any window, since other processes taking the
// CPU also make the loop look busy).
// While the loop is busy but keeps up, the limit creeps up 5% a window; with
// time to spare it is relaxed by 15% a window and then lifted. Busy alone is
// not enough to lower it: refusals keep a loop busy too, and a limit lowered on
// utilization alone fell to its floor under 2× load and stayed there.
// The decision is made on headers alone (for gRPC, check() runs on the HTTP/2
// headers before grpc-js decodes the message).
import { overloaded } from './errors.js';

export interface AdmissionOptions {
  /** Refuse a request that would likely wait longer than this before its forward pass. */
  maxDelayMs: number;
  /** Hard cap on predict requests admitted and unanswered at once, whatever the estimate. */
  maxPending: number;
  /** Event-loop utilization (0..1] above which admissions are rate-limited; 1 turns the limit off. */
  maxUtilization?: number;
}

/** How often the lag probe fires; also the smallest lag it can see. */
const PROBE_MS = 10;
/** Completions are counted over this window to estimate the service rate. */
const RATE_WINDOW_MS = 500;
/** Event-loop utilization is judged over windows this long. */
const UTILIZATION_WINDOW_MS = 100;
/** Event-loop lag above which a busy loop is taken to be falling behind reading its sockets (two probe periods). */
const LAG_TARGET_MS = 2 * PROBE_MS;
/** Expected wait behind admitted requests above which a busy loop is taken to be admitting more than it serves. */
const QUEUE_TARGET_MS = 25;
/**
 * The limit never falls below this share of the peak admitted rate. Under 2× load over HTTP a refusal
 * costs about a third of an answer (45 vs 141 µs), so the rate that leaves the loop time to read and
 * refuse everything else is about a seventh of the peak; a quarter (the floor before) kept 22% of
 * requests unread past their deadline.
 */
const FLOOR_OF_PEAK = 1 / 16;
/** A rate limit lets this many ms of admissions through at once (batches form from bursts). */
const BURST_MS = 25;

export class Admission {
  private inFlight = 0;
  private lagMs = 0;
  private readonly probe: NodeJS.Timeout;
  /**
   * Completions within the last RATE_WINDOW_MS: when each happened and the busy
   * time (ms with at least one request in flight) accumulated by then. Rate is
   * completions per busy ms, so a lightly loaded server is not mistaken for a slow one.
   */
  private readonly completions: { at: number; busy: number }[] = [];
  private busyMs = 0;
  private lastChange = performance.now();
  /** Admissions allowed per ms; Infinity when the loop has time to spare. */
  private rateLimit = Number.POSITIVE_INFINITY;
  private tokens = 0;
  private lastRefill = performance.now();
  private admittedInWindow = 0;
  /** Admitted in this window over HTTP/1.1, whose backlog the event loop cannot see (see admit()). */
  private hiddenBacklogAdmissions = 0;
  private utilization = 0;
  /** Highest admission rate (per ms) seen in any window: the limit's floor is FLOOR_OF_PEAK of it. */
  private peakAdmittedPerMs = 0;

  constructor(private readonly options: AdmissionOptions) {
    if (!(options.maxDelayMs > 0)) throw new RangeError(`maxDelayMs must be positive, got ${options.maxDelayMs}`);
    if (!Number.isInteger(options.maxPending) || options.maxPending < 1) throw new RangeError(`maxPending must be a positive integer, got ${options.maxPending}`);
    const maxUtilization = options.maxUtilization ?? 1;
    if (!(maxUtilization > 0 && maxUtilization <= 1)) throw new RangeError(`maxUtilization must be in (0, 1], got ${maxUtilization}`);
    let expected = performance.now() + PROBE_MS;
    let windowStart = performance.now();
    let elu = performance.eventLoopUtilization();
    this.probe = setInterval(() => {
      const now = performance.now();
      const late = Math.max(0, now - expected);
      // Rises at once, decays over a few probes: one long batch should not flap admission.
      this.lagMs = late > this.lagMs ? late : this.lagMs * 0.7 + late * 0.3;
      expected = now + PROBE_MS;
      if (maxUtilization < 1 && now - windowStart >= UTILIZATION_WINDOW_MS) {
        const next = performance.eventLoopUtilization();
        this.utilization = performance.eventLoopUtilization(next, elu).utilization;
        elu = next;
        this.adjustRate(this.admittedInWindow / (now - windowStart), maxUtilization, this.lagMs, this.expectedDelayMs(now) - this.lagMs, this.hiddenBacklogAdmissions > 0);
        this.admittedInWindow = 0;
        this.hiddenBacklogAdmissions = 0;
        windowStart = now;
      }
    }, PROBE_MS);
    this.probe.unref();
  }

  /** Requests admitted and not yet answered. */
  get pending(): number {
    return this.inFlight;
  }

  /** The wait a request arriving now should expect before its forward pass, in ms. */
  expectedDelayMs(now = performance.now()): number {
    const rate = this.serviceRatePerMs(now);
    const queued = rate > 0 ? this.inFlight / rate : 0;
    return this.lagMs + queued;
  }

  /**
   * Admits a request or throws an 'overloaded' ServingError naming the reason.
   * `deadlineMs` is how long the client will wait (Infinity if it did not say).
   * On success the caller must call the returned function exactly once, when the request is answered.
   *
   * `backlogVisible` is false for HTTP/1.1: a client's next request on a keep-alive connection waits
   * in the client until this one is answered, so a backlog builds where neither event-loop lag nor
   * the queue sees it (measured under 2× load: 22% of requests went unanswered past their deadline
   * with lag p99 under 40 ms). While such requests are admitted, a busy loop alone lowers the limit.
   * HTTP/2 streams (gRPC) reach the server at once, where lag does see them.
   */
  admit(deadlineMs = Number.POSITIVE_INFINITY, backlogVisible = true): () => void {
    const now = performance.now();
    this.refuseIfOverloaded(now, deadlineMs, true);
    this.account(now);
    this.inFlight++;
    this.admittedInWindow++;
    if (!backlogVisible) this.hiddenBacklogAdmissions++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const at = performance.now();
      this.account(at);
      this.inFlight--;
      this.completions.push({ at, busy: this.busyMs });
    };
  }

  /**
   * Throws the 'overloaded' ServingError admit() would throw now, without admitting or
   * spending the rate limit's tokens: lets a front end refuse before it decodes anything.
   * A request that passes must still be admitted with admit().
   */
  check(deadlineMs = Number.POSITIVE_INFINITY): void {
    this.refuseIfOverloaded(performance.now(), deadlineMs, false);
  }

  /**
   * Feeds one utilization window to the rate limit as the probe does every 100 ms (for tests:
   * the probe's own readings depend on how busy the machine running them is).
   */
  observeWindow(window: { utilization: number; admittedPerMs: number; lagMs: number; queuedMs: number; hiddenBacklog?: boolean }): void {
    this.utilization = window.utilization;
    this.adjustRate(window.admittedPerMs, this.options.maxUtilization ?? 1, window.lagMs, window.queuedMs, window.hiddenBacklog ?? false);
  }

  close(): void {
    clearInterval(this.probe);
  }

  private refuseIfOverloaded(now: number, deadlineMs: number, spend: boolean): void {
    if (this.inFlight >= this.options.maxPending) {
      throw overloaded(`overloaded: ${this.inFlight} predict requests in progress (limit ${this.options.maxPending}); retry later`);
    }
    if (Number.isFinite(this.rateLimit)) {
      const tokens = Math.min(Math.max(1, this.rateLimit * BURST_MS), this.tokens + (now - this.lastRefill) * this.rateLimit);
      if (tokens < 1) {
        throw overloaded(
          `overloaded: the server was busy ${Math.round(this.utilization * 100)}% of the last ${UTILIZATION_WINDOW_MS} ms and admits about ${Math.round(this.rateLimit * 1000)} requests/s now; retry later`,
        );
      }
      if (spend) {
        this.tokens = tokens - 1;
        this.lastRefill = now;
      }
    }
    const budget = Number.isFinite(deadlineMs) ? deadlineMs / 2 : this.options.maxDelayMs;
    const expected = this.expectedDelayMs(now);
    // An idle server admits whatever the estimate says: there is nothing to wait behind.
    if (this.inFlight > 0 && expected > budget) {
      const whose = Number.isFinite(deadlineMs) ? `half the request's deadline (${Math.round(deadlineMs)} ms)` : `--max-delay-ms ${this.options.maxDelayMs}`;
      throw overloaded(`overloaded: expected wait ${Math.round(expected)} ms exceeds ${whose}; retry later`);
    }
  }

  /**
   * Multiplicative decrease when the loop was too busy AND admitted work is not served promptly:
   * reads fell behind (lag above LAG_TARGET_MS) or admitted requests queue (expected wait behind
   * them above QUEUE_TARGET_MS). A gentle increase while it is busy but keeps up; geometric
   * increase (then no limit) while it has time to spare.
   *
   * Busy alone is not overload: refusing costs CPU too (40–60 µs a request), so under twice the
   * sustainable load the loop stays near 100% busy whatever is admitted, and a limit lowered on
   * utilization alone fell window after window to its floor and stayed there — that is how
   * goodput collapsed to ~0.3% of the offered load.
   */
  private adjustRate(admittedPerMs: number, maxUtilization: number, lagMs: number, queuedMs: number, hiddenBacklog: boolean): void {
    this.peakAdmittedPerMs = Math.max(this.peakAdmittedPerMs, admittedPerMs);
    const floor = Math.max(this.peakAdmittedPerMs * FLOOR_OF_PEAK, 0.05);
    if (this.utilization > maxUtilization && (hiddenBacklog || lagMs > LAG_TARGET_MS || queuedMs > QUEUE_TARGET_MS)) {
      // Nothing admitted cannot be what keeps the loop busy (e.g. a model loading at start): no limit from that.
      if (admittedPerMs === 0) return;
      // Floored: a loop kept busy by refusals alone, or by other processes taking the CPU, must not throttle admission to nothing.
      const lower = Math.min(admittedPerMs * 0.85, Number.isFinite(this.rateLimit) ? this.rateLimit * 0.85 : Number.POSITIVE_INFINITY);
      this.rateLimit = Math.max(floor, lower);
    } else if (Number.isFinite(this.rateLimit)) {
      // Busy but keeping up: probe upward by a small step; with time to spare, faster.
      this.rateLimit = this.utilization > maxUtilization ? this.rateLimit + Math.max(this.rateLimit * 0.05, floor * 0.1) : this.rateLimit * 1.15;
      // Far above what is being asked for: the limit no longer binds.
      if (this.rateLimit > 4 * Math.max(admittedPerMs, 0.05)) this.rateLimit = Number.POSITIVE_INFINITY;
    }
  }

  private account(now: number): void {
    if (this.inFlight > 0) this.busyMs += now - this.lastChange;
    this.lastChange = now;
  }

  /** Requests completed per busy ms over the recent window (0 when too few completed to tell). */
  private serviceRatePerMs(now: number): number {
    const since = now - RATE_WINDOW_MS;
    let drop = 0;
    while (drop < this.completions.length && this.completions[drop].at < since) drop++;
    if (drop > 0) this.completions.splice(0, drop);
    if (this.completions.length < 2) return 0;
    const first = this.completions[0];
    const busyNow = this.busyMs + (this.inFlight > 0 ? now - this.lastChange : 0);
    return (this.completions.length - 1) / Math.max(busyNow - first.busy, 1);
  }
}
