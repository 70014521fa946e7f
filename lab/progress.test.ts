import test from 'ava';
import type { EngineEvent } from '../aggregator/rounds/engine.js';
import { RunProgress } from './progress.js';

/** A RunProgress writing to a log (as the aggregator's is when stderr is not a terminal). */
function progress(rounds: number, nodesPerRound: number) {
  const lines: string[] = [];
  const out = { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream;
  return { lines, p: new RunProgress(rounds, out, (msg) => lines.push(msg), nodesPerRound) };
}

const committed = (round: number, seconds: number): EngineEvent =>
  ({
    type: 'round-committed',
    record: { round, accuracy: 0.5, loss: 1, participants: 2, selected: 2, seconds, overhead_seconds: 0, verdicts: 'all kept' },
  }) as unknown as EngineEvent;

test('while it waits for nodes a log gets a line per change, and a round with fewer nodes than configured says so', (t) => {
  const { lines, p } = progress(3, 3);
  p.handle({ type: 'waiting-for-nodes', connected: 1, needed: 3 });
  p.handle({ type: 'waiting-for-nodes', connected: 1, needed: 3 });
  p.handle({ type: 'waiting-for-nodes', connected: 2, needed: 3 });
  t.deepEqual(lines, ['waiting for 2 more nodes: 1 of 3 connected', 'waiting for 1 more node: 2 of 3 connected']);
  p.handle({ type: 'round-started', round: 1, attempt: 0, selected: 2, deadline: 0 });
  t.regex(lines.at(-1)!, /^round 1 runs with 2 of 3 nodes: only 2 were connected and idle/);
  p.close();
});

test("the ETA counts the rounds' own time, not the wait for nodes before them", (t) => {
  const { lines, p } = progress(3, 2);
  p.handle({ type: 'round-started', round: 1, attempt: 0, selected: 2, deadline: 0 });
  p.handle(committed(1, 10));
  // 10 s for the first round, two left: 20 s, whatever the wall clock since the start says.
  t.regex(lines.at(-1)!, /ETA 20s$/);
  p.close();
});
