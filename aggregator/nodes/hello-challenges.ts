// Single-use hello challenges. A node signs the challenge into its hello, and
// the aggregator accepts each challenge once, so a hello captured on the wire
// (or from a log) opens no session when sent again: without this, a replayed
// hello within the clock window would close the real node's session (a
// re-hello replaces it) and hand its polls to whoever replayed it.
import { randomBytes } from 'node:crypto';
import { HELLO_CHALLENGE_BYTES } from '../../core/signing/layouts.js';

export interface HelloChallengePolicy {
  /** How long a challenge stays valid: long enough for a paced hello, short enough to keep few outstanding. */
  ttlMs: number;
  /** Outstanding challenges kept at most; past it, the oldest are forgotten (a node whose challenge is gone simply asks again). */
  maxOutstanding: number;
}

export const DEFAULT_HELLO_CHALLENGES: HelloChallengePolicy = { ttlMs: 60_000, maxOutstanding: 100_000 };

export const NO_CHALLENGE = `hello carries no ${HELLO_CHALLENGE_BYTES}-byte challenge; call HelloChallenge first (a node older than protocol 4 must be upgraded)`;

export type ChallengeCheck = { ok: true } | { ok: false; reason: string };

export class HelloChallenges {
  // Insertion order is issue order, so the oldest entries come first when pruning.
  private readonly expiresAt = new Map<string, number>();

  constructor(
    private readonly policy: HelloChallengePolicy = DEFAULT_HELLO_CHALLENGES,
    private readonly now: () => number = Date.now,
  ) {}

  issue(): { challenge: Buffer; expiresUnixMs: number } {
    this.prune();
    const challenge = randomBytes(HELLO_CHALLENGE_BYTES);
    const expiresUnixMs = this.now() + this.policy.ttlMs;
    this.expiresAt.set(challenge.toString('hex'), expiresUnixMs);
    return { challenge, expiresUnixMs };
  }

  /** Accepts a challenge once: after this call it is spent, whatever the answer. */
  redeem(challenge: Uint8Array): ChallengeCheck {
    if (challenge.length !== HELLO_CHALLENGE_BYTES) {
      return { ok: false, reason: NO_CHALLENGE };
    }
    const key = Buffer.from(challenge).toString('hex');
    const expires = this.expiresAt.get(key);
    this.expiresAt.delete(key);
    if (expires === undefined) return { ok: false, reason: 'hello challenge unknown or already used (a replayed hello?); ask HelloChallenge for a fresh one' };
    if (this.now() > expires) return { ok: false, reason: 'hello challenge expired; ask HelloChallenge for a fresh one' };
    return { ok: true };
  }

  get outstanding(): number {
    return this.expiresAt.size;
  }

  private prune(): void {
    const now = this.now();
    for (const [key, expires] of this.expiresAt) {
      if (expires >= now && this.expiresAt.size < this.policy.maxOutstanding) break;
      this.expiresAt.delete(key);
    }
  }
}
