// Dynamic micro-batching: concurrent requests wait briefly in a bounded queue
// and run through the model together, because one forward pass over 64 rows
// costs little more than one over a single row. The queue is bounded in rows
// (not requests) so memory stays bounded however large each request is; when
// it is full the caller is told at once (HTTP 429) instead of waiting longer.

export interface BatcherOptions {
  /** Most rows run in one forward pass; 1 turns batching off. */
  maxBatch: number;
  /** How long the first queued row may wait for others before its batch runs anyway. */
  maxWaitMs: number;
  /** Most rows waiting at once; more are refused with QueueFullError. */
  maxQueue: number;
}

/** The queue cannot take the request now; retrying later may succeed. */
export class QueueFullError extends Error {
  override name = 'QueueFullError';
}

/** The request alone is larger than the queue could ever hold. */
export class RequestTooLargeError extends Error {
  override name = 'RequestTooLargeError';
}

interface Pending<Row, Result> {
  rows: Row[];
  resolve: (results: Result[]) => void;
  reject: (err: unknown) => void;
}

/** Runs `runBatch` over the rows of several queued requests at a time, one batch at a time. */
export class MicroBatcher<Row, Result> {
  private readonly queue: Pending<Row, Result>[] = [];
  private queuedRows = 0;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly options: BatcherOptions,
    private readonly runBatch: (rows: Row[]) => Promise<Result[]>,
    /** Told the row count of every batch that runs (for metrics). */
    private readonly onBatch: (rows: number) => void = () => undefined,
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

  submit(rows: Row[]): Promise<Result[]> {
    try {
      this.checkSize(rows.length);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.queuedRows + rows.length > this.options.maxQueue) {
      return Promise.reject(new QueueFullError(`overloaded: ${this.queuedRows} instances already queued (limit ${this.options.maxQueue}); retry later`));
    }
    return new Promise<Result[]>((resolve, reject) => {
      this.queue.push({ rows, resolve, reject });
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
    if (this.running || this.queue.length === 0) return;
    if (this.queuedRows >= this.options.maxBatch || this.options.maxWaitMs === 0) {
      this.flush();
    } else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.options.maxWaitMs);
    }
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.running || this.queue.length === 0) return;
    // Whole requests, up to maxBatch rows; a request larger than maxBatch runs alone.
    const batch: Pending<Row, Result>[] = [];
    let rows = 0;
    while (this.queue.length > 0 && (batch.length === 0 || rows + this.queue[0].rows.length <= this.options.maxBatch)) {
      const next = this.queue.shift() as Pending<Row, Result>;
      batch.push(next);
      rows += next.rows.length;
    }
    this.queuedRows -= rows;
    this.running = true;
    this.onBatch(rows);
    this.runBatch(batch.flatMap((p) => p.rows))
      .then((results) => {
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
        // Rows that queued while this batch ran have already waited: run them now.
        if (this.queue.length > 0) this.flush();
        else for (const wake of this.idleWaiters.splice(0)) wake();
      });
  }
}
