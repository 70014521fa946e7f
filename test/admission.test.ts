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

test('a loop busier than max-utilization that also reads late limits admissions and refuses the excess at once; with time to spare the limit lifts', async (t) => {
  const admission = new Admission({ maxDelayMs: 60_000, maxPending: 100_000, maxUtilization: 0.5 });
  try {
    // ~97% busy for 400 ms in 40 ms stretches (timers fire up to 40 ms late), admitting (and answering) 80 requests per stretch.
    const end = performance.now() + 400;
    while (performance.now() < end) {
      for (let i = 0; i < 80; i++) {
        const r = tryAdmit(admission);
        if (typeof r === 'function') r();
      }
      busy(40);
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
    const phase = async (ms: number, perSlice: number, sliceMs: number) => {
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
        busy(sliceMs);
        await new Promise((r) => setTimeout(r, 1));
      }
      return admitted / ms;
    };
    const peak = await phase(200, 200, 9);
    // Overload that makes reads late: 40 ms busy stretches.
    await phase(1500, 8000, 40);
    // Measured once the limit has had 15 windows to fall.
    const overloaded = await phase(1000, 8000, 40);
    t.log(`peak ${peak.toFixed(2)}/ms, under overload ${overloaded.toFixed(2)}/ms`);
    t.true(peak > 0);
    // Many windows of multiplicative decrease (0.85 each) would take the rate far below a quarter of the peak without the floor.
    t.true(overloaded >= peak / 5, `admitted ${overloaded.toFixed(2)}/ms under overload against a peak of ${peak.toFixed(2)}/ms`);
  } finally {
    admission.close();
  }
});

async function sliced(admission: Admission, ms: number, perSlice: number, sliceMs: number): Promise<{ admitted: number; refused: number }> {
  const end = performance.now() + ms;
  let admitted = 0;
  let refused = 0;
  while (performance.now() < end) {
    for (let i = 0; i < perSlice; i++) {
      const r = tryAdmit(admission);
      if (typeof r === 'function') {
        admitted++;
        r();
      } else refused++;
    }
    busy(sliceMs);
    await new Promise((r) => setTimeout(r, 1));
  }
  return { admitted, refused };
}

test.serial('a loop busy but reading promptly (short stretches, little lag) is not throttled: busyness from refusals alone must not collapse admissions', async (t) => {
  const admission = new Admission({ maxDelayMs: 60_000, maxPending: 1_000_000, maxUtilization: 0.5 });
  try {
    // ~80% busy in 4 ms stretches for 1.5 s: before, the limit fell 15% a window to its floor (a quarter of the peak) and
    // never rose, refusing about three in four. (A loaded machine can still delay a probe past the lag target now and then.)
    const { admitted, refused } = await sliced(admission, 1500, 10, 4);
    t.log(`admitted ${admitted}, refused ${refused}`);
    t.true(refused < admitted / 2, `refused ${refused} of ${admitted + refused}`);
  } finally {
    admission.close();
  }
});

test.serial('a loop busy and reading promptly, but with admitted requests queueing (expected wait above 25 ms), limits admissions', async (t) => {
  const admission = new Admission({ maxDelayMs: 60_000, maxPending: 1_000_000, maxUtilization: 0.5 });
  try {
    // ~5 ms of service per request sets the service rate; then 40 requests are held in flight (about 200 ms to wait) while the loop stays busy in 9 ms stretches.
    const end = performance.now() + 300;
    while (performance.now() < end) {
      const r = tryAdmit(admission);
      if (typeof r === 'function') {
        busy(5);
        r();
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    const held = Array.from({ length: 40 }, () => admission.admit());
    const { admitted, refused } = await sliced(admission, 1000, 20, 9);
    t.log(`admitted ${admitted}, refused ${refused}`);
    t.true(refused > admitted, `refused ${refused}, admitted ${admitted}`);
    for (const r of held) r();
  } finally {
    admission.close();
  }
});

test.serial('a loop busy with nothing admitted (a model loading at start) sets no rate limit', async (t) => {
  const admission = new Admission({ maxDelayMs: 60_000, maxPending: 1_000_000, maxUtilization: 0.5 });
  try {
    await sliced(admission, 400, 0, 50);
    const burst = Array.from({ length: 500 }, () => tryAdmit(admission));
    t.is(burst.filter((r) => r instanceof ServingError).length, 0);
    for (const r of burst) if (typeof r === 'function') r();
  } finally {
    admission.close();
  }
});

test('check() refuses exactly as admit() would, without admitting or spending the rate limit', (t) => {
  const admission = new Admission({ maxDelayMs: 60_000, maxPending: 2 });
  try {
    t.notThrows(() => admission.check());
    t.is(admission.pending, 0);
    const a = admission.admit();
    const b = admission.admit();
    const err = t.throws(() => admission.check(), { instanceOf: ServingError });
    t.regex(err!.message, /^overloaded: 2 predict requests in progress \(limit 2\)/);
    a();
    t.notThrows(() => admission.check());
    b();
  } finally {
    admission.close();
  }
});
