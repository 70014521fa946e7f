// Log lines of the long-running processes (aggregator, node, serve): each with its time, as text for
// people or as one JSON object per line for log shippers (--log-format json).
import { z } from 'zod';

export const logFormatSchema = z.enum(['text', 'json']).describe('text: "TIME [SOURCE] message" lines; json: one object per line');
export type LogFormat = z.infer<typeof logFormatSchema>;

export type Log = (msg: string) => void;

/**
 * A log that writes to `out` (stderr by default). `source` names the process ("aggregator", a node id,
 * "crowdfl serve"); `now` is for tests.
 */
export function lineLog(source: string, format: LogFormat = 'text', out: (line: string) => void = (l) => void process.stderr.write(l), now: () => Date = () => new Date()): Log {
  return (msg) => {
    const time = now().toISOString();
    out(format === 'json' ? `${JSON.stringify({ time, source, msg })}\n` : `${time} [${source}] ${msg}\n`);
  };
}
