// `npm run bench:faults`: the fault-injection suite's long form. The same
// tests `npm test` runs in a short form, with larger counts, and their figures
// collected into one table next to the targets:
//   - SIGKILL at random points of 10 rounds (default 10 kills, seeded plan);
//   - 30% of selected nodes vanishing every round, accuracy against a clean run;
//   - the protocol fuzzer with 10,000 messages;
//   - a connection flood: 20,000 silent connections from one address and 20,000 from 200, for 5 minutes,
//     against a run committing rounds (bench/flood.ts).
//
//   node dist/bench/bench-faults.js [--kills=10] [--fuzz=10000] [--seed=N] [--flood-seconds=300] [--pin] [--only=crash,churn,fuzz,flood]
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { floodScenario } from './flood.js';

const arg = (name: string, fallback: number) => {
  const hit = process.argv.find((a) => a.startsWith(`--${name}=`));
  return hit ? Number(hit.slice(name.length + 3)) : fallback;
};
const kills = arg('kills', 10);
const fuzzMessages = arg('fuzz', 10_000);
const seed = arg('seed', Date.now() % 1_000_000);
const floodSeconds = arg('flood-seconds', 300);
// --pin: the aggregator and its node on CPU 0, the flooders on CPU 1 (Linux; see bench/flood.ts).
const pin = process.argv.includes('--pin') ? { serve: 0, flood: 1 } : undefined;
const onlyArg = process.argv.find((a) => a.startsWith('--only='));
const only = new Set((onlyArg ? onlyArg.slice('--only='.length) : 'crash,churn,fuzz,flood').split(','));
const stamp = () => new Date().toISOString().slice(11, 19);

// ava exports no path to its CLI; it sits next to the main entry point.
const AVA = join(dirname(createRequire(import.meta.url).resolve('ava')), 'cli.mjs');
const testFile = (name: string) => fileURLToPath(new URL(`../test/${name}.test.js`, import.meta.url));

/** Runs one test file through ava with the given environment; resolves with its output and whether it passed. */
function runTest(file: string, env: Record<string, string>, match?: string): Promise<{ passed: boolean; output: string; seconds: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const args = [AVA, file, '--verbose', '--timeout=30m', ...(match ? ['--match', match] : [])];
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const take = (d: Buffer) => {
      output += d.toString();
      for (const line of d.toString().split('\n')) if (/✔|✘|ℹ/.test(line)) process.stderr.write(`  ${line.trim()}\n`);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('exit', (code) => resolve({ passed: code === 0, output, seconds: (Date.now() - started) / 1000 }));
  });
}

const verdict = (ok: boolean) => (ok ? 'MET' : 'MISSED');

async function main(): Promise<void> {
  const rows: string[][] = [];

  if (only.has('crash')) {
    process.stderr.write(`SIGKILL suite: ${kills} kills over 10 rounds (plan seed ${seed})…\n`);
    const crash = await runTest(testFile('aggregator-crash'), { CRASH_TEST_KILLS: String(kills), CRASH_TEST_SEED: String(seed) });
    const survived = /kills survived: (\d+) \(([^)]*)\)/.exec(crash.output);
    rows.push([
      'aggregator killed at random points of 10 rounds',
      survived ? `${survived[1]} kills survived (${survived[2]}); rounds lost 0, none doubled, final model hash-equal to an unkilled run` : 'no kill figures (see output)',
      'every committed round survives, none doubled, same final model',
      verdict(crash.passed && survived !== null),
      `${crash.seconds.toFixed(0)} s`,
    ]);
    if (!crash.passed) process.stderr.write(crash.output);
  }

  if (only.has('churn')) {
    process.stderr.write('30% vanishing nodes against a clean run…\n');
    const churn = await runTest(testFile('over-selection'), {}, '*30%*');
    const accuracy = /final accuracy ([\d.]+)% without dropouts, ([\d.]+)% with (\d+) vanished tasks/.exec(churn.output);
    rows.push([
      '30% of selected nodes vanish mid-round',
      accuracy ? `${accuracy[1]}% clean, ${accuracy[2]}% with ${accuracy[3]} vanished tasks (gap ${Math.abs(Number(accuracy[1]) - Number(accuracy[2])).toFixed(2)} pt); every round committed` : 'no accuracy figures (see output)',
      'rounds commit; within 1 point',
      verdict(churn.passed && accuracy !== null),
      `${churn.seconds.toFixed(0)} s`,
    ]);
    if (!churn.passed) process.stderr.write(churn.output);
  }

  if (only.has('fuzz')) {
    process.stderr.write(`fuzzer: ${fuzzMessages} messages…\n`);
    const fuzz = await runTest(testFile('fuzz'), { FUZZ_ITERATIONS: String(fuzzMessages), FUZZ_SEED: String(seed) });
    const statuses = /statuses: (.*); RSS grew (\d+) MiB; slowest answer (\d+) ms/.exec(fuzz.output);
    rows.push([
      `fuzzer, ${fuzzMessages} random or mutated messages (seed ${seed})`,
      statuses ? `0 crashes, 0 accepted; RSS +${statuses[2]} MiB; slowest answer ${statuses[3]} ms; ${statuses[1]}` : 'no fuzz figures (see output)',
      '≥ 10,000 inputs, 0 crashes, 0 accepted, bounded memory',
      verdict(fuzz.passed && statuses !== null && fuzzMessages >= 10_000),
      `${fuzz.seconds.toFixed(0)} s`,
    ]);
    if (!fuzz.passed) process.stderr.write(fuzz.output);
  }

  if (only.has('flood')) {
    const started = Date.now();
    const f = await floodScenario({
      baselineSeconds: 60,
      floodSeconds,
      afterSeconds: 60,
      connections: 20_000,
      reopenMs: 10_000,
      pin,
      log: (msg) => process.stderr.write(`  [${stamp()}] ${msg}\n`),
    });
    const rate = f.flood.roundsPerMinute / f.baseline.roundsPerMinute;
    const rssBack = f.after.rssMiB.last / f.baseline.rssMiB.first;
    rows.push([
      `connection flood: 20,000 silent connections from 127.0.0.2 and 20,000 from 200 addresses for ${floodSeconds} s (each slot reopening 10 s after a close)` +
        (pin ? '; aggregator and node on CPU 0, flooders on CPU 1' : '; flooders sharing the CPUs with the aggregator'),
      `rounds/min ${f.baseline.roundsPerMinute.toFixed(1)} before, ${f.neighbour.roundsPerMinute.toFixed(1)} with a busy neighbour and no flood ` +
        `(${(100 * (f.neighbour.roundsPerMinute / f.baseline.roundsPerMinute)).toFixed(0)}%), ` +
        `${f.flood.roundsPerMinute.toFixed(1)} during the flood (${(100 * rate).toFixed(0)}% of before, ` +
        `${(100 * (f.flood.roundsPerMinute / f.neighbour.roundsPerMinute)).toFixed(0)}% of the busy neighbour's), ` +
        `${f.after.roundsPerMinute.toFixed(1)} after; abandoned ${f.flood.abandoned}; RSS ${f.baseline.rssMiB.first.toFixed(0)} → max ${f.flood.rssMiB.max.toFixed(0)} → ` +
        `${f.after.rssMiB.last.toFixed(0)} MiB (${(100 * rssBack).toFixed(0)}% of baseline); ${f.turnedAwayPerSecond.toFixed(0)} connections turned away per s ` +
        `(${f.refused} on arrival, ${f.evicted} evicted for newcomers, ${f.timedOut} at the hello timeout); at most ${f.maxUnprovenSeen} unproven held; ` +
        `listener closed ${f.sheds} times, ${f.shedSeconds.toFixed(0)} of ${f.flood.seconds.toFixed(0)} s`,
      '≥ 90% of the unloaded round rate, no abandoned round, RSS back within 10% of baseline',
      verdict(rate >= 0.9 && f.flood.abandoned === 0 && rssBack <= 1.1),
      `${((Date.now() - started) / 1000).toFixed(0)} s`,
    ]);
  }

  process.stdout.write('\n| fault | measured | target | | time |\n|---|---|---|---|---|\n');
  for (const r of rows) process.stdout.write(`| ${r.join(' | ')} |\n`);
  process.exitCode = rows.every((r) => r[3] === 'MET') ? 0 : 1;
}

await main();
