// When the operator lets this node work: not paused, inside the configured
// hours, and (if asked) only while the rest of the machine is idle. The node
// asks before it polls for work and while it trains; a task it may no longer
// work on is declined at once, so its round loses no time waiting for it.
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import type { DeclineKind__Output as DeclineKind } from '../proto/generated/crowdfl/v1/DeclineKind.js';
import { DAYS, parseWindow, type Schedule } from './node-config.js';

/** Cumulative CPU time, of the whole machine and of this process, in ms. */
export interface CpuTimes {
  busyMs: number;
  totalMs: number;
  ownMs: number;
}

export function cpuTimesNow(): CpuTimes {
  let busy = 0;
  let total = 0;
  for (const c of cpus()) {
    const t = c.times;
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  const own = process.cpuUsage();
  return { busyMs: busy, totalMs: total, ownMs: (own.user + own.system) / 1000 };
}

/** CPU used by every process but this one between two samples, as a percentage of all cores. */
export function otherCpuPercent(before: CpuTimes, after: CpuTimes): number {
  const total = after.totalMs - before.totalMs;
  if (total <= 0) return 0;
  const others = after.busyMs - before.busyMs - (after.ownMs - before.ownMs);
  return Math.max(0, Math.min(100, (100 * others) / total));
}

/** Whether `at` (local time) falls in the schedule's days and hours; no hours means any time. */
export function inSchedule(schedule: Schedule, at: Date): boolean {
  if (!schedule.hours) return schedule.days ? schedule.days.includes(DAYS[at.getDay()]!) : true;
  const minute = at.getHours() * 60 + at.getMinutes();
  return schedule.hours.some((w) => {
    const { start, end } = parseWindow(w);
    if (start < end) return minute >= start && minute < end && dayAllowed(schedule, at.getDay());
    // Crossing midnight: the part after midnight belongs to the day the window started on.
    if (minute >= start) return dayAllowed(schedule, at.getDay());
    return minute < end && dayAllowed(schedule, (at.getDay() + 6) % 7);
  });
}

function dayAllowed(schedule: Schedule, day: number): boolean {
  return !schedule.days || schedule.days.includes(DAYS[day]!);
}

export interface Blocked {
  kind: DeclineKind;
  reason: string;
}

export interface AvailabilityOptions {
  schedule: Schedule;
  /** While this file exists the node is paused (`crowdfl node pause` writes it). */
  pauseFile: string;
  now?: () => Date;
  cpuTimes?: () => CpuTimes;
}

export class Availability {
  private paused: boolean;
  private lastSample: CpuTimes;
  /** Other processes' CPU over the last full sample window; undefined until one has passed. */
  private otherCpu: number | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly now: () => Date;
  private readonly cpuTimes: () => CpuTimes;

  constructor(private readonly o: AvailabilityOptions) {
    this.now = o.now ?? (() => new Date());
    this.cpuTimes = o.cpuTimes ?? cpuTimesNow;
    this.paused = existsSync(o.pauseFile);
    this.lastSample = this.cpuTimes();
    // A cheap flag the training loop can read every batch; the file is looked at twice a second.
    this.timers.push(setInterval(() => this.refresh(), 500).unref());
    const idle = o.schedule.idle;
    if (idle) this.timers.push(setInterval(() => this.sampleCpu(), idle.sample_seconds * 1000).unref());
  }

  /** Re-reads the pause file now (a signal or `crowdfl node pause` asked). */
  refresh(): void {
    this.paused = existsSync(this.o.pauseFile);
  }

  /** Ends a CPU sample window (the timer does this every `sample_seconds`). */
  sampleCpu(): void {
    const sample = this.cpuTimes();
    this.otherCpu = otherCpuPercent(this.lastSample, sample);
    this.lastSample = sample;
  }

  /** Why the node may not work now, or undefined when it may. */
  blocked(): Blocked | undefined {
    if (this.paused) return { kind: 'PAUSED', reason: 'paused by the operator (crowdfl node resume, or SIGUSR2, resumes it)' };
    if (!inSchedule(this.o.schedule, this.now())) {
      return { kind: 'OUTSIDE_SCHEDULE', reason: `outside the operator's hours (${this.describeHours()})` };
    }
    const idle = this.o.schedule.idle;
    if (idle && this.otherCpu !== undefined && this.otherCpu > idle.max_other_cpu_percent) {
      return {
        kind: 'OUTSIDE_SCHEDULE',
        reason: `the machine is busy: other processes used ${this.otherCpu.toFixed(0)}% of the CPU, the node works below ${idle.max_other_cpu_percent}%`,
      };
    }
    return undefined;
  }

  /** Resolves once the node may work again, or when `signal` aborts. */
  async whenAvailable(signal?: AbortSignal): Promise<void> {
    while (this.blocked() && !signal?.aborted) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 500);
        signal?.addEventListener('abort', () => {
          clearTimeout(t);
          resolve();
        }, { once: true });
      });
      this.refresh();
    }
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
  }

  private describeHours(): string {
    const hours = this.o.schedule.hours?.join(', ') ?? 'any time';
    return this.o.schedule.days ? `${hours} on ${this.o.schedule.days.join(', ')}` : hours;
  }
}
