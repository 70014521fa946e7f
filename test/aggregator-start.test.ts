// Starting an aggregator that cannot start: a busy port is a one-line message
// and leaves nothing behind, and a run whose first start died before its
// initial checkpoint was written can still be resumed.
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { freePort, runCli, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

type Child = ReturnType<typeof spawnCli>;

const exited = (p: Child) =>
  p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => p.once('exit', () => r()));

/** Resolves once the process has printed something matching `pattern` (true), or has exited without (false). */
function printed(p: Child, pattern: RegExp): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (value: boolean) => {
      if (settled) return;
      settled = true;
      p.stdout!.off('data', check);
      p.stderr!.off('data', check);
      resolve(value);
    };
    const check = () => {
      if (pattern.test(p.output())) done(true);
    };
    p.stdout!.on('data', check);
    p.stderr!.on('data', check);
    p.once('exit', () => done(pattern.test(p.output())));
    check();
    if (p.exitCode !== null || p.signalCode !== null) done(pattern.test(p.output()));
  });
}

function setUp(prefix: string) {
  const dir = tempDir(prefix);
  const file = join(dir, 'tiny.json');
  writeFileSync(file, JSON.stringify(tinyExperiment()));
  const runsDir = join(dir, 'runs');
  const args = (runId: string, port: number) => ['aggregator', '--experiment', file, '--run-id', runId, '--runs-dir', runsDir, '--port', String(port), '--key', join(dir, 'key.json')];
  return { runsDir, args };
}

test('a second aggregator on a busy port: one line naming the port, no stack trace, and nothing written for its run', async (t) => {
  const { runsDir, args } = setUp('busy-port');
  const port = await freePort();
  const first = spawnCli(args('first', port));
  try {
    t.true(await printed(first, new RegExp(`listening on 127\\.0\\.0\\.1:${port}\\b`)), first.output());

    const second = await runCli(args('second', port));
    t.is(second.code, 2, second.stderr);
    const errors = second.stderr.split('\n').filter((l) => l.startsWith('crowdfl:'));
    t.deepEqual(errors, [`crowdfl: port ${port} on 127.0.0.1 is already in use (another aggregator, or another program, listens there): stop it or choose another --port`]);
    t.notRegex(second.stderr, /^\s+at /m, 'no stack trace');
    t.false(existsSync(join(runsDir, 'second')), 'nothing was written for the run that could not start');

    // Its run id is as good as new: started on a free port, it starts the run afresh.
    const again = spawnCli(args('second', 0));
    try {
      t.true(await printed(again, /aggregator for tiny \(run second\) listening on/), again.output());
      t.notRegex(again.output(), /resuming/);
    } finally {
      again.kill('SIGKILL');
      await exited(again);
    }
  } finally {
    first.kill('SIGKILL');
    await exited(first);
  }
});

test('a run whose first start died before its round-0000 checkpoint was written resumes from the initial model its seed gives', async (t) => {
  const { runsDir, args } = setUp('no-round-0');
  const first = spawnCli(args('r', 0));
  t.true(await printed(first, /listening on/), first.output());
  first.kill('SIGKILL');
  await exited(first);
  // What a start that died between recording the run and writing its initial checkpoint leaves.
  rmSync(join(runsDir, 'r', 'checkpoints', 'round-0000'), { recursive: true, force: true });

  const again = spawnCli(args('r', 0));
  try {
    t.true(await printed(again, /listening on|crowdfl:/), again.output());
    t.regex(again.output(), /resuming run r at round 1 of 3 \(0 rounds committed before\)/);
  } finally {
    again.kill('SIGKILL');
    await exited(again);
  }
});
