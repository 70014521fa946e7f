// Pace steering (Bonawitz et al. 2019, §2.3): the aggregator, not each node,
// decides when nodes come back, so that thousands of them arrive spread out
// instead of in one wave. Pure functions; `random` is injected for tests.

export interface PacePolicy {
  /** Hellos the aggregator takes per second before it asks nodes to come back later. */
  hellosPerSecond: number;
  /** Idle polls per second the aggregator is willing to answer, summed over all nodes. */
  pollsPerSecond: number;
  minRetryMs: number;
  /** Never more than half a session's lease, or an idle node would expire between two polls. */
  maxRetryMs: number;
}

export const DEFAULT_PACE: PacePolicy = { hellosPerSecond: 200, pollsPerSecond: 100, minRetryMs: 1000, maxRetryMs: 10_000 };

/** Uniform in [0.5, 1.5] × ms: spread, so nodes told the same thing do not return together. */
export function jittered(ms: number, random: () => number): number {
  return Math.round(ms * (0.5 + random()));
}

/**
 * When an idle node whose long poll just ended should poll again. Each idle
 * node polls once per (long poll + retry); with `idle` nodes that is
 * idle / (longPollMs + retry) polls per second, kept under the policy's rate.
 */
export function pollRetryAfterMs(idle: number, longPollMs: number, p: PacePolicy, random: () => number): number {
  const needed = (idle / p.pollsPerSecond) * 1000 - longPollMs;
  return Math.min(p.maxRetryMs, jittered(Math.max(p.minRetryMs, needed), random));
}

/**
 * A token bucket for Hellos: each Hello costs a signature check and a database
 * write, and a restarted aggregator would otherwise take every node's Hello at
 * once. A refused Hello is told how long until there is room for it, spread
 * over the backlog so the refused do not all return in the same instant.
 */
export class HelloPacer {
  private tokens: number;
  private last: number;
  /** Hellos refused recently: the size of the wave still to come back. */
  private backlog = 0;

  constructor(
    private readonly p: PacePolicy,
    private readonly now: () => number = Date.now,
    private readonly random: () => number = Math.random,
  ) {
    this.tokens = p.hellosPerSecond;
    this.last = now();
  }

  /** 0 when the Hello may proceed; otherwise how many milliseconds the node should wait. */
  admit(): number {
    const t = this.now();
    const elapsed = Math.max(0, t - this.last) / 1000;
    this.last = t;
    this.tokens = Math.min(this.p.hellosPerSecond, this.tokens + elapsed * this.p.hellosPerSecond);
    this.backlog = Math.max(0, this.backlog - elapsed * this.p.hellosPerSecond);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    this.backlog += 1;
    // The backlog drains at the bucket's rate: this node's turn is somewhere in it.
    const wait = Math.max(this.p.minRetryMs, (this.backlog / this.p.hellosPerSecond) * 1000);
    return Math.min(this.p.maxRetryMs, jittered(wait, this.random));
  }
}
