// Dynamic micro-batching: concurrent requests run through the model together,
// because one forward pass over 64 rows costs little more than one over a
// single row. The queue is bounded in rows (not requests) so memory stays
// bounded however large each request is; when it is full the caller is told at
// once (HTTP 429) instead of waiting longer.
//
// When to start a batch: a request that finds the model idle never waits for
// company (waiting only adds latency when nobody else is coming). The batch
// starts on the next turn of the event loop, after Node has read every request
// already sitting in its sockets, so requests that arrived together still
// share a pass. Under load batches form by themselves: whatever queued while
// one batch ran is the next batch. `maxWaitMs` only matters then, holding a
// partial batch a little longer for more rows to arrive.
import { ServingError } from './errors.js';

export interface BatcherOptions {
  /** Most rows run in one forward pass; 1 turns batching off. */
  maxBatch: number;
  /**
   * Under load (the previous batch had more than one row), how long a partial
   * batch may wait for more rows. A request that finds the model idle runs at once.
   */
  maxWaitMs: number;
  /** Most rows waiting at once; more are refused with QueueFullError. */
  maxQueue: number;
}

/** The queue cannot take the request now; retrying later may succeed. */
export class QueueFullError extends ServingError {
  constructor(message: string) {
    super('overloaded', message);
    this.name = 'QueueFullError';
  }
}

/** The request alone is larger than the queue could ever hold. */
export class RequestTooLargeError extends ServingError {
  constructor(message: string) {
    super('too_large', message);
    this.name = 'RequestTooLargeError';
  }
}

interface Pending<Row, Result> {
  rows: Row[];
  /** performance.now() after which running the rows is wasted work: the client has given up. */
  deadline: number;
  resolve: (results: Result[]) => void;
  reject: (err: unknown) => void;
}

/** Runs `runBatch` over the rows of several queued requests at a time, one batch at a time. */
export class MicroBatcher<Row, Result> {
  private readonly queue: Pending<Row, Result>[] = [];
  private queuedRows = 0;
  private running = false;
  private scheduled = false;
  private timer: NodeJS.Timeout | undefined;
  private lastBatchRows = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly options: BatcherOptions,
    private readonly runBatch: (rows: Row[]) => Promise<Result[]>,
    /** Told the row count and duration of every batch that runs (for metrics and admission). */
    private readonly onBatch: (rows: number, seconds: number) => void = () => undefined,
  ) {
    for (const key of ['maxBatch', 'maxQueue'] as const) {
      if (!Number.isInteger(options[key]) || options[key] < 1) throw new RangeError(`${key} must be a positive integer, got ${options[key]}`);
    }
    if (!(options.maxWaitMs >= 0)) throw new RangeError(`maxWaitMs must be at least 0, got ${options.maxWaitMs}`);
  }

  /** Rows waiting for a batch (not counting the batch running now). */
  get depth(): number {
    return this.queuedRows;
  }

  /** Throws RequestTooLargeError when `rows` rows could never be queued, so callers can refuse before doing more work. */
  checkSize(rows: number): void {
    if (rows > this.options.maxQueue) {
      throw new RequestTooLargeError(`the request has ${rows} instances; this server queues at most ${this.options.maxQueue} (--max-queue)`);
    }
  }

  /** `deadline` (a performance.now() time): if the batch has not started by then, the request is dropped with a 'deadline' error. */
  submit(rows: Row[], deadline = Number.POSITIVE_INFINITY): Promise<Result[]> {
    try {
      this.checkSize(rows.length);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.queuedRows + rows.length > this.options.maxQueue) {
      return Promise.reject(new QueueFullError(`overloaded: ${this.queuedRows} instances already queued (limit ${this.options.maxQueue}); retry later`));
    }
    return new Promise<Result[]>((resolve, reject) => {
      this.queue.push({ rows, deadline, resolve, reject });
      this.queuedRows += rows.length;
      this.schedule();
    });
  }

  /** Resolves once nothing is queued or running, e.g. before a retired model is disposed. */
  drained(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.running || this.scheduled || this.queue.length === 0) return;
    this.scheduled = true;
    if (this.queuedRows < this.options.maxBatch && this.lastBatchRows > 1 && this.options.maxWaitMs > 0) {
      // The model is idle between batches of a busy period: more rows are likely on their way.
      this.timer = setTimeout(() => this.flush(), this.options.maxWaitMs);
    } else {
      // After the poll phase, so every request already readable has been parsed and queued.
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.scheduled = false;
    if (this.running) return;
    const now = performance.now();
    // Whole requests, up to maxBatch rows; a request larger than maxBatch runs alone.
    const batch: Pending<Row, Result>[] = [];
    let rows = 0;
    while (this.queue.length > 0 && (batch.length === 0 || rows + this.queue[0].rows.length <= this.options.maxBatch)) {
      const next = this.queue.shift() as Pending<Row, Result>;
      this.queuedRows -= next.rows.length;
      if (next.deadline <= now) {
        next.reject(new ServingError('deadline', `the request's deadline passed after ${next.rows.length} instance(s) waited in the queue; not run`));
        continue;
      }
      batch.push(next);
      rows += next.rows.length;
    }
    this.lastBatchRows = rows;
    if (batch.length === 0) {
      this.afterBatch();
      return;
    }
    this.running = true;
    this.runBatch(batch.flatMap((p) => p.rows))
      .then((results) => {
        this.onBatch(rows, (performance.now() - now) / 1000);
        let offset = 0;
        for (const p of batch) {
          p.resolve(results.slice(offset, offset + p.rows.length));
          offset += p.rows.length;
        }
      })
      .catch((err: unknown) => {
        for (const p of batch) p.reject(err);
      })
      .finally(() => {
        this.running = false;
        this.afterBatch();
      });
  }

  private afterBatch(): void {
    if (this.queue.length > 0) {
      // These rows already waited while the last batch ran: run them on the next turn, not after maxWaitMs.
      this.scheduled = true;
      setImmediate(() => this.flush());
    } else {
      for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }
}
