// Serving metrics in the Prometheus text exposition format (version 0.0.4),
// rendered with core/prometheus-text.ts.
import { Histogram, labelText } from '../core/prometheus-text.js';

const LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

export class ServingMetrics {
  private readonly requests = new Map<string, { labels: Record<string, string>; count: number }>();
  private readonly latency = new Map<string, Histogram>();
  private readonly batchSizes = new Map<string, Histogram>();
  private readonly batchSeconds = new Map<string, Histogram>();
  private readonly versions = new Map<string, number>();
  private readonly queueDepths = new Map<string, () => number>();

  private readonly earlyRefusals = { http: 0, grpc: 0 };

  private admission: (() => { pending: number; expectedDelayMs: number }) | undefined;

  /** One answered predict request; `code` is the HTTP status or gRPC status name sent. */
  recordRequest(model: string, api: 'http' | 'grpc', code: string, seconds: number): void {
    const labels = { model, api, code };
    const key = `${model}\n${api}\n${code}`;
    const entry = this.requests.get(key) ?? { labels, count: 0 };
    entry.count++;
    this.requests.set(key, entry);
    this.histogram(this.latency, model, LATENCY_BUCKETS_SECONDS).observe(seconds);
  }

  /** A predict request refused RESOURCE_EXHAUSTED on its transport headers, before its model was known. */
  recordEarlyRefusal(api: 'http' | 'grpc'): void {
    this.earlyRefusals[api]++;
  }

  recordBatch(model: string, rows: number, seconds: number): void {
    this.histogram(this.batchSizes, model, BATCH_SIZE_BUCKETS).observe(rows);
    this.histogram(this.batchSeconds, model, LATENCY_BUCKETS_SECONDS).observe(seconds);
  }

  watchAdmission(read: () => { pending: number; expectedDelayMs: number }): void {
    this.admission = read;
  }

  setVersion(model: string, version: number): void {
    this.versions.set(model, version);
  }

  watchQueue(model: string, depth: () => number): void {
    this.queueDepths.set(model, depth);
  }

  render(): string {
    const out: string[] = [];
    out.push('# HELP crowdfl_serving_requests_total Predict requests answered, by model, API (http or grpc) and status (HTTP code or gRPC status name).');
    out.push('# TYPE crowdfl_serving_requests_total counter');
    for (const { labels, count } of this.requests.values()) out.push(`crowdfl_serving_requests_total${labelText(labels)} ${count}`);
    out.push('# HELP crowdfl_serving_early_refusals_total Predict requests refused as overloaded on their transport headers alone, before the model they name was read (not in crowdfl_serving_requests_total).');
    out.push('# TYPE crowdfl_serving_early_refusals_total counter');
    for (const [api, count] of Object.entries(this.earlyRefusals)) out.push(`crowdfl_serving_early_refusals_total${labelText({ api })} ${count}`);
    out.push('# HELP crowdfl_serving_request_seconds Time from a predict request arriving to its answer.');
    out.push('# TYPE crowdfl_serving_request_seconds histogram');
    for (const [model, h] of this.latency) out.push(...h.render('crowdfl_serving_request_seconds', { model }));
    out.push('# HELP crowdfl_serving_batch_size Instances per forward pass.');
    out.push('# TYPE crowdfl_serving_batch_size histogram');
    for (const [model, h] of this.batchSizes) out.push(...h.render('crowdfl_serving_batch_size', { model }));
    out.push('# HELP crowdfl_serving_batch_seconds Duration of each forward pass.');
    out.push('# TYPE crowdfl_serving_batch_seconds histogram');
    for (const [model, h] of this.batchSeconds) out.push(...h.render('crowdfl_serving_batch_seconds', { model }));
    out.push('# HELP crowdfl_serving_model_version Newest version (training round) served under each name.');
    out.push('# TYPE crowdfl_serving_model_version gauge');
    for (const [model, v] of this.versions) out.push(`crowdfl_serving_model_version${labelText({ model })} ${v}`);
    out.push('# HELP crowdfl_serving_queue_instances Instances waiting for a batch.');
    out.push('# TYPE crowdfl_serving_queue_instances gauge');
    for (const [model, depth] of this.queueDepths) out.push(`crowdfl_serving_queue_instances${labelText({ model })} ${depth()}`);
    if (this.admission) {
      const { pending, expectedDelayMs } = this.admission();
      out.push('# HELP crowdfl_serving_pending_requests Predict requests admitted and not yet answered.');
      out.push('# TYPE crowdfl_serving_pending_requests gauge');
      out.push(`crowdfl_serving_pending_requests ${pending}`);
      out.push('# HELP crowdfl_serving_expected_delay_seconds Wait a request arriving now is expected to have before its forward pass (admission refuses above the budget).');
      out.push('# TYPE crowdfl_serving_expected_delay_seconds gauge');
      out.push(`crowdfl_serving_expected_delay_seconds ${expectedDelayMs / 1000}`);
    }
    return `${out.join('\n')}\n`;
  }

  private histogram(map: Map<string, Histogram>, model: string, bounds: readonly number[]): Histogram {
    let h = map.get(model);
    if (!h) {
      h = new Histogram(bounds);
      map.set(model, h);
    }
    return h;
  }
}
