// Admission control in isolation: the event-loop utilization limit, and the
// expected-wait rule against a client's deadline, on real timers.
import test from 'ava';
import { Admission } from '../serving/admission.js';
import { ServingError } from '../serving/errors.js';

function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

function tryAdmit(a: Admission, deadlineMs?: number): (() => void) | ServingError {
  try {
    return a.admit(deadlineMs);
  } catch (err) {
    if (err instanceof ServingError) return err;
    throw err;
  }
}

test('a loop busier than max-utilization limits admissions and refuses the excess at once; with time to spare the limit lifts', async (t) => {
  const admission = new Admission({ maxDelayMs: 60_000, maxPending: 100_000, maxUtilization: 0.5 });
  try {
    // ~90% busy for 400 ms, admitting (and answering) 20 requests per 10 ms slice.
    const end = performance.now() + 400;
    while (performance.now() < end) {
      for (let i = 0; i < 20; i++) {
        const r = tryAdmit(admission);
        if (typeof r === 'function') r();
      }
      busy(9);
      await new Promise((r) => setTimeout(r, 1));
    }
    const burst = Array.from({ length: 2000 }, () => tryAdmit(admission));
    const refused = burst.filter((r): r is ServingError => r instanceof ServingError);
    t.true(refused.length > 1000, `${refused.length} of 2000 refused`);
    t.is(refused[0]!.kind, 'overloaded');
    t.regex(refused[0]!.message, /^overloaded: the server was busy \d+% of the last 100 ms and admits about \d+ requests\/s now; retry later$/);
    for (const r of burst) if (typeof r === 'function') r();

    // Idle: the limit relaxes each window until it no longer binds.
    await new Promise((r) => setTimeout(r, 1500));
    const after = Array.from({ length: 2000 }, () => tryAdmit(admission));
    t.is(after.filter((r) => r instanceof ServingError).length, 0);
    for (const r of after) if (typeof r === 'function') r();
  } finally {
    admission.close();
  }
});

test('without the utilization limit the same load is admitted; a request whose deadline is shorter than the expected wait is refused', async (t) => {
  const admission = new Admission({ maxDelayMs: 60_000, maxPending: 100_000 });
  try {
    const end = performance.now() + 300;
    while (performance.now() < end) {
      const r = tryAdmit(admission);
      t.is(typeof r, 'function');
      if (typeof r === 'function') {
        busy(5); // 5 ms of service per request
        r();
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    const held = Array.from({ length: 10 }, () => admission.admit());
    // 10 in flight at ~5 ms each: about 50 ms to wait.
    t.true(admission.expectedDelayMs() > 20, `expected ${admission.expectedDelayMs()} ms`);
    const late = tryAdmit(admission, 10);
    t.true(late instanceof ServingError && /exceeds half the request's deadline \(10 ms\)/.test(late.message), String(late));
    t.is(typeof tryAdmit(admission, 10_000), 'function');
    for (const r of held) r();
  } finally {
    admission.close();
  }
});

test.serial('under sustained overload the rate limit settles at its floor (a quarter of the peak admitted rate), not at zero', async (t) => {
  const admission = new Admission({ maxDelayMs: 60_000, maxPending: 1_000_000, maxUtilization: 0.5 });
  try {
    // 200 ms at ~20 admissions per ms set the peak; then 2.5 s of a loop kept busy while every request is offered.
    let admitted = 0;
    const phase = async (ms: number, perSlice: number) => {
      const end = performance.now() + ms;
      admitted = 0;
      while (performance.now() < end) {
        for (let i = 0; i < perSlice; i++) {
          const r = tryAdmit(admission);
          if (typeof r === 'function') {
            admitted++;
            r();
          }
        }
        busy(9);
        await new Promise((r) => setTimeout(r, 1));
      }
      return admitted / ms;
    };
    const peak = await phase(200, 200);
    await phase(1500, 2000);
    // Measured once the limit has had 15 windows to fall.
    const overloaded = await phase(1000, 2000);
    t.log(`peak ${peak.toFixed(2)}/ms, under overload ${overloaded.toFixed(2)}/ms`);
    t.true(peak > 0);
    // Many windows of multiplicative decrease (0.85 each) would take the rate far below a quarter of the peak without the floor.
    t.true(overloaded >= peak / 5, `admitted ${overloaded.toFixed(2)}/ms under overload against a peak of ${peak.toFixed(2)}/ms`);
  } finally {
    admission.close();
  }
});
