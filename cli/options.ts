import { InvalidArgumentError, type Command } from 'commander';
import { backendPreferenceSchema } from '../core/backend.js';
import type { z } from 'zod';

/** A commander parser that accepts only the schema's values and names them when refusing. */
export function parseChoice<T extends string>(schema: z.ZodEnum<{ [K in T]: K }>): (value: string) => T {
  return (value: string) => {
    const result = schema.safeParse(value);
    if (!result.success) throw new InvalidArgumentError(`choose one of ${schema.options.join(', ')}`);
    return result.data as T;
  };
}

/** A number in [0, 1], e.g. a probability or a share. */
export function parseFraction(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError(`expected a number from 0 to 1, got ${JSON.stringify(value)}`);
  return n;
}

/** Percentage points from 0 to 100, e.g. an accuracy difference; returned as a fraction. */
export function parsePoints(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > 100) throw new InvalidArgumentError(`expected percentage points from 0 to 100, got ${JSON.stringify(value)}`);
  return n / 100;
}

/** A number of seconds, above 0 or (with `allowZero`) at least 0. */
export function parseSeconds(allowZero = false): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) {
      throw new InvalidArgumentError(`expected a number of seconds ${allowZero ? '≥ 0' : '> 0'}`);
    }
    return n;
  };
}

/** A whole number of at least `min`. */
export function parseWhole(min: number): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected a whole number ≥ ${min}`);
    return n;
  };
}

export function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port is a whole number from 0 to 65535');
  return n;
}

export function parseAddress(value: string): string {
  if (!/^[^\s:]+:\d{1,5}$/.test(value) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(value)) {
    throw new InvalidArgumentError('expected HOST:PORT, e.g. 127.0.0.1:7070');
  }
  return value;
}

/** The options every command that starts a run takes (simulate, rerun), with each command's own help texts. */
export function runOptions(command: Command, help: { runsDir: string; runId: string; backend: string }): Command {
  return command
    .option('--runs-dir <dir>', help.runsDir, 'runs')
    .option('--run-id <id>', help.runId)
    .option('--backend <name>', `${help.backend}: auto|tensorflow|tensorflow-gpu|wasm|cpu`, parseChoice(backendPreferenceSchema))
    .option('--no-progress', 'print no progress lines');
}
