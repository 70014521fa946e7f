import test from 'ava';
import { echo, ECHO_MAX_CHARS } from './rpc-error.js';

test('echo quotes short input whole and cuts long input, saying how long it was', (t) => {
  t.is(echo('abc'), '"abc"');
  t.is(echo(''), '""');
  t.is(echo('a"b\n'), '"a\\"b\\n"');
  t.is(echo('y'.repeat(ECHO_MAX_CHARS)), `"${'y'.repeat(ECHO_MAX_CHARS)}"`);
  t.is(echo('z'.repeat(200_000)), `"${'z'.repeat(ECHO_MAX_CHARS)}"… (200000 characters)`);
});
