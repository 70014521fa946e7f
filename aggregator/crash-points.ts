// Fault injection for crash-safety tests: `CROWDFL_CRASH_AT=point:round` makes
// the aggregator kill itself with SIGKILL the first time it reaches that point
// of that round, so a test can crash it exactly where an outside `kill -9`
// would only land by luck (between the checkpoint and the database commit,
// say). Unset, it costs one string comparison per point.
export const CRASH_POINTS = ['selection', 'mid-upload', 'mid-commit', 'after-commit'] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

const requested = parseCrashAt(process.env.CROWDFL_CRASH_AT);

export function parseCrashAt(value: string | undefined): { point: CrashPoint; round: number } | undefined {
  if (!value) return undefined;
  const m = /^([a-z-]+):(\d+)$/.exec(value);
  const point = m?.[1] as CrashPoint | undefined;
  if (!m || !point || !CRASH_POINTS.includes(point)) {
    throw new Error(`CROWDFL_CRASH_AT must be POINT:ROUND with POINT one of ${CRASH_POINTS.join(', ')}; got ${JSON.stringify(value)}`);
  }
  return { point, round: Number(m[2]) };
}

export function crashPoint(point: CrashPoint, round: number): void {
  if (requested?.point === point && requested.round === round) {
    process.stderr.write(`fault injection: SIGKILL at ${point} of round ${round}\n`);
    process.kill(process.pid, 'SIGKILL');
  }
}
