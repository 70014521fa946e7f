// The refusal record's bounds, on a real database file, with a hand-moved clock
// for the rate (time is an input here, not something the test waits for).
import { join } from 'node:path';
import test from 'ava';
import { openDatabase } from '../store/db.js';
import { MAX_REFUSALS_PER_SOURCE, RunStore } from '../store/run-store.js';
import { tempDir } from '../../test/support/fixtures.js';
import { peerAddress, RefusalLog, type RefusalBounds } from './refusal-log.js';

const unlimited: RefusalBounds = { perAddress: 1e9, total: 1e9, perSecond: 1e9, burst: 1e9 };

function database(name: string): { path: string; store: RunStore; close: () => void } {
  const path = join(tempDir(name), 'crowdfl.db');
  const { db, close } = openDatabase(path);
  return { path, store: new RunStore(db), close };
}

/** A refused hello from a fresh key (a new source every time) at `peer`. */
let fresh = 0;
const helloFrom = (peer: string) => ({ peer, source: `n-fresh-${fresh++}`, publicKey: 'k', reason: 'protocol version 99 is not supported' });

test('peerAddress drops the port, so every connection from one machine shares a bound', (t) => {
  t.is(peerAddress('ipv4:10.0.0.7:51234'), 'ipv4:10.0.0.7');
  t.is(peerAddress('ipv6:[::1]:7070'), 'ipv6:[::1]');
  t.is(peerAddress('unix:/tmp/socket'), 'unix:/tmp/socket');
});

test('fresh keys from one address are kept up to the per-address bound; other addresses still are', (t) => {
  const { store, close } = database('refusal-address');
  const log = new RefusalLog(store, { ...unlimited, perAddress: 40 });
  let kept = 0;
  for (let i = 0; i < 100; i++) if (log.record(helloFrom(`ipv4:10.0.0.7:${40000 + i}`))) kept++;
  t.is(kept, 40);
  t.true(log.record(helloFrom('ipv4:10.0.0.8:40000')));
  t.is(store.refusalCount(), 41);
  t.is(log.omitted.address, 60);
  close();
});

test('the database holds at most the total bound, counting rows a previous process wrote', (t) => {
  const { path, store, close } = database('refusal-total');
  const first = new RefusalLog(store, { ...unlimited, total: 30 });
  for (let i = 0; i < 20; i++) first.record(helloFrom(`ipv4:10.1.0.${i}:1`));
  close();
  const again = openDatabase(path);
  const restarted = new RefusalLog(new RunStore(again.db), { ...unlimited, total: 30 });
  let kept = 0;
  for (let i = 0; i < 50; i++) if (restarted.record(helloFrom(`ipv4:10.2.0.${i}:1`))) kept++;
  t.is(kept, 10);
  t.is(new RunStore(again.db).refusalCount(), 30);
  t.is(restarted.omitted.total, 40);
  again.close();
});

test('writes are rate-limited: a burst, then so many a second', (t) => {
  const { store, close } = database('refusal-rate');
  let now = 1_000_000;
  const said: string[] = [];
  const log = new RefusalLog(store, { ...unlimited, burst: 10, perSecond: 2 }, (m) => said.push(m), () => now);
  const flood = (n: number) => {
    let kept = 0;
    for (let i = 0; i < n; i++) if (log.record(helloFrom(`ipv4:10.3.${i % 250}.1:1`))) kept++;
    return kept;
  };
  t.is(flood(50), 10);
  now += 3_000; // 3 s at 2 a second
  t.is(flood(50), 6);
  now += 3_600_000; // refills to the burst, no further
  t.is(flood(50), 10);
  t.is(store.refusalCount(), 26);
  t.is(log.omitted.rate, 124);
  // Said in the log when it starts, then at most once a minute: not once per refusal.
  t.is(said.length, 2);
  t.regex(said[0]!, /refused calls are not all recorded \(more than 2 a second\); 1 left out for this reason so far/);
  close();
});

test("the store's bound per source still holds for one node refused again and again", (t) => {
  const { store, close } = database('refusal-source');
  const log = new RefusalLog(store, unlimited);
  let kept = 0;
  for (let i = 0; i < MAX_REFUSALS_PER_SOURCE + 50; i++) if (log.record({ ...helloFrom(`ipv4:10.4.0.${i % 250}:1`), source: 'n-same' })) kept++;
  t.is(kept, MAX_REFUSALS_PER_SOURCE);
  t.is(log.omitted.source, 50);
  close();
});
