// The one schema of a node's configuration: the file given with
// `crowdfl node --config FILE` and the command-line flags are merged into one
// object of this shape (flags win) and validated together, so a wrong value
// is reported by its field name wherever it came from.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { logFormatSchema } from '../core/log.js';
import { describeIssues } from '../core/user-error.js';
import { backendPreferenceSchema } from '../core/backend.js';
import { UserError } from '../core/user-error.js';

const HOUR_WINDOW = /^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$/;
export const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

const positive = z.number().positive();
const count = z.number().int().positive();

export const capsSchema = z
  .object({
    /** Threads the node may keep busy: data-parallel training replicas on wasm/cpu, tfjs-node's thread pools. Default: all cores. */
    cores: count.optional(),
    /** Resident memory of the node process; a task that would pass it is declined, and training stops if it does. */
    memory_mb: positive.optional(),
    max_parameters: count.optional(),
    /** float32 weight bytes of the model, in MiB. */
    max_model_mb: positive.optional(),
    /** Epochs × local examples a task may ask for. */
    max_examples_per_task: count.optional(),
    /** Wall time of local training per task: longer tasks are declined, and training never runs past it. */
    max_task_seconds: positive.optional(),
  })
  .strict();
export type Caps = z.infer<typeof capsSchema>;

export const scheduleSchema = z
  .object({
    /** Local-time windows "HH:MM-HH:MM" the node may train in; a window may cross midnight ("22:00-07:00"). */
    hours: z
      .array(z.string().regex(HOUR_WINDOW, 'expected "HH:MM-HH:MM" (24-hour local time), e.g. "22:00-07:00"'))
      .min(1)
      .optional(),
    /** Days of the week the hours apply to (default every day). */
    days: z.array(z.enum(DAYS)).min(1).optional(),
    /** Take a task only while the rest of the machine is this idle. */
    idle: z
      .object({
        /** CPU used by every other process, as a percentage of all cores, averaged over `sample_seconds`. */
        max_other_cpu_percent: z.number().min(0).max(100),
        sample_seconds: z.number().positive().max(300).default(5),
      })
      .strict()
      .optional(),
  })
  .strict();
export type Schedule = z.infer<typeof scheduleSchema>;

export const nodeConfigSchema = z
  .object({
    aggregator: z.string({ error: 'missing: the aggregator to join, as HOST:PORT (--aggregator, or "aggregator" in --config)' }).regex(/^([^\s:]+|\[[0-9a-fA-F:]+\]):\d{1,5}$/, 'expected HOST:PORT, e.g. 127.0.0.1:7070'),
    data: z.string({ error: 'missing: the directory of local training data (--data, or "data" in --config)' }).min(1),
    backend: backendPreferenceSchema.default('auto'),
    state_dir: z.string().min(1).default(join(homedir(), '.crowdfl', 'node')),
    aggregator_key: z.string().min(1).optional(),
    invitation: z.string().min(1).optional(),
    tls: z
      .object({ ca: z.string().min(1), cert: z.string().min(1).optional(), key: z.string().min(1).optional() })
      .strict()
      .refine((t) => (t.cert === undefined) === (t.key === undefined), { message: 'cert and key go together (mutual TLS)' })
      .optional(),
    min_epoch_fraction: z.number().min(0).max(1).default(0.25),
    serve: z.number().int().min(0).max(65535).optional(),
    exit_when_finished: z.boolean().default(false),
    quiet: z.boolean().default(false),
    log_format: logFormatSchema.default('text'),
    caps: capsSchema.default({}),
    schedule: scheduleSchema.default({}),
  })
  .strict();
export type NodeConfig = z.infer<typeof nodeConfigSchema>;
export type NodeConfigInput = z.input<typeof nodeConfigSchema>;

export class NodeConfigError extends UserError {}

type Plain = { [key: string]: unknown };
const isPlain = (v: unknown): v is Plain => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `over` on top of `base`, nested objects merged key by key; undefined values in `over` leave `base` alone. */
export function mergeConfig(base: Plain, over: Plain): Plain {
  const out: Plain = { ...base };
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue;
    out[key] = isPlain(value) && isPlain(out[key]) ? mergeConfig(out[key] as Plain, value) : value;
  }
  return out;
}

/** Reads a config file; paths in it are relative to the file, as a reader of the file would expect. */
export function readConfigFile(path: string): Plain {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new NodeConfigError(
      code === 'ENOENT' ? `node config ${path} does not exist` : `node config ${path} is not valid JSON: ${(err as Error).message}`,
    );
  }
  if (!isPlain(value)) throw new NodeConfigError(`node config ${path} must hold one JSON object (see README, "Node operators")`);
  const here = dirname(resolve(path));
  const rel = (p: unknown) => (typeof p === 'string' && !isAbsolute(p) ? join(here, p) : p);
  const out: Plain = { ...value, data: rel(value.data), state_dir: rel(value.state_dir) };
  if (isPlain(value.tls)) out.tls = { ...value.tls, ca: rel(value.tls.ca), cert: rel(value.tls.cert), key: rel(value.tls.key) };
  for (const key of Object.keys(out)) if (out[key] === undefined) delete out[key];
  if (isPlain(out.tls)) for (const key of Object.keys(out.tls)) if ((out.tls as Plain)[key] === undefined) delete (out.tls as Plain)[key];
  return out;
}

/** Validates a merged configuration; `source` names where it came from in the error. */
export function parseNodeConfig(value: Plain, source: string): NodeConfig {
  const result = nodeConfigSchema.safeParse(value);
  if (!result.success) throw new NodeConfigError(`${source} is not a valid node configuration:\n${describeIssues(result.error)}`);
  return result.data;
}

/** A window "HH:MM-HH:MM" as minutes since midnight [start, end); end ≤ start crosses midnight. */
export function parseWindow(window: string): { start: number; end: number } {
  const m = HOUR_WINDOW.exec(window);
  if (!m) throw new NodeConfigError(`${JSON.stringify(window)} is not a window "HH:MM-HH:MM"`);
  return { start: Number(m[1]) * 60 + Number(m[2]), end: Number(m[3]) * 60 + Number(m[4]) };
}
