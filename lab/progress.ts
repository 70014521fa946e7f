// Shows a run's progress: one line per round, and on a terminal a live
// status line for the round in flight with an ETA for the whole run.
import type { EngineEvent } from '../aggregator/rounds/synchronous.js';

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export class RunProgress {
  private readonly started = Date.now();
  private roundStarted = Date.now();
  private committed = 0;
  private readonly live: boolean;
  private ticker: NodeJS.Timeout | undefined;
  /** The status line without its clock, which the ticker appends anew each second. */
  private status = '';

  constructor(
    private readonly totalRounds: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
    /** Where finished lines go when `out` is not a terminal (the process's log: timed, text or JSON). */
    private readonly log?: (msg: string) => void,
    /** The experiment's nodes per round, so a round that starts with fewer says so. */
    private readonly nodesPerRound?: number,
  ) {
    this.live = Boolean(out.isTTY);
  }

  /** Seconds the committed rounds took, from their start: the time spent waiting for nodes is not a round's. */
  private roundSeconds = 0;
  /** The last "waiting for nodes" count shown, so a log gets a line per change, not one per check. */
  private lastWaiting = '';

  private eta(): string {
    if (this.committed === 0) return '?';
    return formatDuration((this.roundSeconds / this.committed) * (this.totalRounds - this.committed));
  }

  private line(text: string): void {
    if (this.live) this.out.write(`\r\x1b[2K${new Date().toISOString()} ${text}\n${this.status}${this.clock()}`);
    else if (this.log) this.log(text);
    else this.out.write(`${text}\n`);
  }

  private setStatus(text: string): void {
    this.status = text;
    if (this.live) this.out.write(`\r\x1b[2K${text}${this.clock()}`);
  }

  handle = (e: EngineEvent): void => {
    switch (e.type) {
      case 'waiting-for-nodes': {
        const more = e.needed - e.connected;
        const text = `waiting for ${more} more node${more === 1 ? '' : 's'}: ${e.connected} of ${e.needed} connected`;
        this.setStatus(text);
        if (!this.live && text !== this.lastWaiting) this.line(text);
        this.lastWaiting = text;
        break;
      }
      case 'round-started':
        this.roundStarted = Date.now();
        this.lastWaiting = '';
        if (this.nodesPerRound !== undefined && e.selected < this.nodesPerRound) {
          this.line(
            `round ${e.round} runs with ${e.selected} of ${this.nodesPerRound} nodes: only ${e.selected} were connected and idle ` +
              'when the selection grace period ended (or every connected node was already taking part)',
          );
        }
        this.setStatus(`round ${e.round}/${this.totalRounds}: training on ${e.selected} nodes…`);
        if (this.live && !this.ticker) this.ticker = setInterval(() => this.setStatus(this.status), 1000);
        break;
      case 'update':
        if (!e.accepted) this.line(`  round ${e.round}: rejected update from ${e.nodeId}: ${e.reason}`);
        this.setStatus(`round ${e.round}/${this.totalRounds}: ${e.received}/${e.selected} updates`);
        break;
      case 'round-committed': {
        this.committed++;
        const r = e.record;
        this.roundSeconds += r.seconds;
        const bar = '#'.repeat(Math.round((20 * this.committed) / this.totalRounds)).padEnd(20, '.');
        this.line(
          `[${bar}] round ${String(r.round).padStart(3)}/${this.totalRounds}  acc ${(r.accuracy * 100).toFixed(2)}%  ` +
            `loss ${r.loss.toFixed(4)}  nodes ${r.participants}/${r.selected}  ${r.seconds.toFixed(1)}s ` +
            `(overhead ${((100 * r.overhead_seconds) / Math.max(r.seconds, 1e-9)).toFixed(1)}%)  ETA ${this.eta()}`,
        );
        if (r.verdicts && !r.verdicts.startsWith('all ')) this.line(`  round ${r.round}: ${r.verdicts}`);
        break;
      }
      case 'node-banned':
        this.line(`  round ${e.round}: banned ${e.nodeId}: ${e.reason}`);
        break;
      case 'task-declined':
        this.line(`  round ${e.round}: ${e.nodeId} declined its task: ${e.reason}`);
        break;
      case 'round-abandoned':
        this.line(`  round ${e.round} attempt ${e.attempt + 1} abandoned: ${e.reason}`);
        break;
    }
  };

  private clock(): string {
    if (!this.ticker) return ''; // no round has started yet
    return ` | ${formatDuration((Date.now() - this.roundStarted) / 1000)} in round, run ETA ${this.eta()}`;
  }

  close(): void {
    if (this.ticker) clearInterval(this.ticker);
    if (this.live) this.out.write('\r\x1b[2K');
  }
}

/** A bar with an ETA for work done in equal-ish steps (replaying rounds, say). */
export class StepProgress {
  private readonly started = Date.now();
  private done = 0;
  private readonly live: boolean;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.live = Boolean(out.isTTY);
  }

  step(text: string): void {
    this.done++;
    const bar = '#'.repeat(Math.round((20 * this.done) / Math.max(1, this.total))).padEnd(20, '.');
    const perStep = (Date.now() - this.started) / 1000 / this.done;
    const line = `[${bar}] ${this.label} ${this.done}/${this.total}  ${text}  ETA ${formatDuration(perStep * (this.total - this.done))}`;
    this.out.write(this.live ? `\r\x1b[2K${line}` : `${line}\n`);
  }

  close(): void {
    if (this.live) this.out.write('\n');
  }
}
