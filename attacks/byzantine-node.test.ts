import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { attackSchema } from '../aggregator/experiment/attack-schema.js';
import { adversary, chooseByzantine, detection } from './byzantine-node.js';

test('Byzantine nodes are chosen by the seed, round(fraction × nodes) of them', (t) => {
  const a = chooseByzantine(20, 0.2, 7);
  t.is(a.length, 4);
  t.deepEqual(a, chooseByzantine(20, 0.2, 7));
  t.notDeepEqual(a, chooseByzantine(20, 0.2, 8));
  t.true(a.every((i) => i >= 0 && i < 20));
  t.is(new Set(a).size, 4);
  t.deepEqual(chooseByzantine(20, 0, 7), []);
  t.is(chooseByzantine(20, 0.3, 7).length, 6);
});

test('detection counts verdicts on Byzantine and honest updates separately, and evidence as flagged', (t) => {
  const d = detection(
    [
      { nodeId: 'b', verdict: 'rejected', evidence: 'identical to 3 other updates' },
      { nodeId: 'b', verdict: 'down-weighted', evidence: null },
      { nodeId: 'b', verdict: 'kept', evidence: 'identical to 3 other updates' },
      { nodeId: 'h', verdict: 'kept', evidence: null },
      { nodeId: 'h', verdict: 'not-selected', evidence: null },
      { nodeId: 'h', verdict: 'rejected', evidence: 'L2 norm 50 exceeds max_norm 20' },
    ],
    new Set(['b']),
  );
  t.deepEqual(d, {
    byzantine: { updates: 3, rejected: 1, down_weighted: 1, not_selected: 0, flagged: 2 },
    honest: { updates: 3, rejected: 1, down_weighted: 0, not_selected: 1, flagged: 1 },
  });
});

test('min-max and min-sum adversaries pool their honest updates and send the same crafted update, γ in the log', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'crowdfl-minmax-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const kind of ['min-max', 'min-sum']) {
    const file = {
      attack: attackSchema.parse({ kind, fraction: 0.5 }),
      seed: 7,
      n: 6,
      f: 3,
      colluders: 3,
      collusion_dir: join(dir, kind),
      collusion_wait_ms: 10_000,
    };
    const logs: string[] = [];
    const honest = [new Float32Array([1, 2, 3, 4]), new Float32Array([2, 0, 3, 5]), new Float32Array([0, 1, 4, 4])];
    const sent = await Promise.all(
      ['n-c', 'n-a', 'n-b'].map((id, i) =>
        adversary(file, id, (msg) => logs.push(msg))({ round: 1, delta: honest[i]!, deadline: Date.now() + 60_000 }),
      ),
    );
    t.deepEqual(sent[1], sent[0]);
    t.deepEqual(sent[2], sent[0]);
    t.notDeepEqual(sent[0], honest[0]);
    t.is(logs.length, 3);
    for (const line of logs) t.regex(line, new RegExp(`^round 1: ${kind} attack with 3 colluders' updates, γ = \\d+\\.\\d+$`));
  }
});
