import test from 'ava';
import { lineLog } from './log.js';

const at = () => new Date('2026-12-08T02:10:00.123Z');

test('text lines carry the time and the source; json lines are one object each, with the message as given', (t) => {
  const lines: string[] = [];
  lineLog('aggregator', 'text', (l) => lines.push(l), at)('round 1 committed');
  t.deepEqual(lines, ['2026-12-08T02:10:00.123Z [aggregator] round 1 committed\n']);
  lines.length = 0;
  lineLog('n-0123', 'json', (l) => lines.push(l), at)('a "quoted" message\nwith a newline');
  t.is(lines.length, 1);
  t.true(lines[0]!.endsWith('}\n') && lines[0]!.split('\n').length === 2, 'one line');
  t.deepEqual(JSON.parse(lines[0]!), { time: '2026-12-08T02:10:00.123Z', source: 'n-0123', msg: 'a "quoted" message\nwith a newline' });
});
