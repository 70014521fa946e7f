// Admission control in isolation: the event-loop utilization limit, and the
// expected-wait rule against a client's deadline, on real timers.
import test from 'ava';
import { Admission } from './load-shedding.js';
import { ServingError } from './errors.js';

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

test.serial('under sustained overload the rate limit settles at its floor (a sixteenth of the peak admitted rate), not at zero', async (t) => {
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
    // 25 windows of multiplicative decrease (0.85 each) would take the rate to a sixtieth of the peak without the floor.
    t.true(overloaded >= peak / 20, `admitted ${overloaded.toFixed(2)}/ms under overload against a peak of ${peak.toFixed(2)}/ms`);
  } finally {
    admission.close();
  }
});


// The rate limit's rule, window by window (observeWindow), so a loaded test machine's late timers cannot decide the outcome.
function burstRefusals(admission: Admission, n = 2000): number {
  const burst = Array.from({ length: n }, () => tryAdmit(admission));
  for (const r of burst) if (typeof r === 'function') r();
  return burst.filter((r) => r instanceof ServingError).length;
}

test('a loop busy but reading promptly with nothing queued is not throttled: busyness from refusals alone must not collapse admissions', (t) => {
  const admission = new Admission({ maxDelayMs: 60_000, maxPending: 1_000_000, maxUtilization: 0.9 });
  try {
    // Before, 30 windows like these lowered the limit 15% each to its floor and it never rose.
    for (let i = 0; i < 30; i++) admission.observeWindow({ utilization: 1, admittedPerMs: 5, lagMs: 8, queuedMs: 0 });
    t.is(burstRefusals(admission), 0);
  } finally {
    admission.close();
  }
});

test('a busy loop whose admitted requests queue (expected wait above 25 ms), whose reads fall behind (lag above 20 ms) or that admits HTTP/1.1 requests is limited, not below a sixteenth of its peak', (t) => {
  for (const window of [
    { utilization: 1, admittedPerMs: 5, lagMs: 8, queuedMs: 100 },
    { utilization: 1, admittedPerMs: 5, lagMs: 60, queuedMs: 0 },
    // HTTP/1.1: the backlog waits in the clients' connections, so a busy loop alone must lower the limit.
    { utilization: 1, admittedPerMs: 5, lagMs: 8, queuedMs: 0, hiddenBacklog: true },
  ]) {
    const admission = new Admission({ maxDelayMs: 60_000, maxPending: 1_000_000, maxUtilization: 0.9 });
    try {
      admission.observeWindow({ ...window, admittedPerMs: 8 }); // the peak
      for (let i = 0; i < 30; i++) admission.observeWindow(window);
      const refused = burstRefusals(admission);
      // Floored at 8/16 = 0.5 per ms, which the message states.
      t.true(refused > 1900, `${JSON.stringify(window)}: ${refused} of 2000 refused`);
      let err: ServingError | undefined;
      for (let i = 0; i < 1000 && !err; i++) {
        const r = tryAdmit(admission);
        if (typeof r === 'function') r();
        else err = r;
      }
      t.regex(err?.message ?? '', /admits about 500 requests\/s now/);
    } finally {
      admission.close();
    }
  }
});

test('a loop busy with nothing admitted (a model loading at start) sets no rate limit; with time to spare a limit lifts', (t) => {
  const admission = new Admission({ maxDelayMs: 60_000, maxPending: 1_000_000, maxUtilization: 0.9 });
  try {
    for (let i = 0; i < 10; i++) admission.observeWindow({ utilization: 1, admittedPerMs: 0, lagMs: 500, queuedMs: 0 });
    t.is(burstRefusals(admission, 500), 0);
    for (let i = 0; i < 10; i++) admission.observeWindow({ utilization: 1, admittedPerMs: 5, lagMs: 60, queuedMs: 0 });
    t.true(burstRefusals(admission, 500) > 0);
    for (let i = 0; i < 20; i++) admission.observeWindow({ utilization: 0.3, admittedPerMs: 1, lagMs: 1, queuedMs: 0 });
    t.is(burstRefusals(admission, 500), 0);
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
