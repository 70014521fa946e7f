// The Prometheus text exposition format (version 0.0.4), written by hand:
// the aggregator's and the serving process's few metric families do not justify a client library.

export function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  constructor(private readonly bounds: readonly number[]) {
    this.counts = bounds.map(() => 0);
  }
  observe(value: number): void {
    this.sum += value;
    this.count++;
    for (let i = 0; i < this.bounds.length; i++) if (value <= this.bounds[i]) this.counts[i]++;
  }
  render(name: string, labels: Record<string, string>): string[] {
    const lines = this.bounds.map((b, i) => `${name}_bucket${labelText({ ...labels, le: String(b) })} ${this.counts[i]}`);
    lines.push(`${name}_bucket${labelText({ ...labels, le: '+Inf' })} ${this.count}`);
    lines.push(`${name}_sum${labelText(labels)} ${this.sum}`);
    lines.push(`${name}_count${labelText(labels)} ${this.count}`);
    return lines;
  }
}
