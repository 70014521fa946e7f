import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { ROUND_TAG } from '../../core/signing/layouts.js';
import { tempDir } from '../../test/support/fixtures.js';
import { readSignedRecords, roundRecordFileName, writeRoundRecordFile, type RoundRecordFile } from './signed-records.js';

const record = (round: number): RoundRecordFile => ({
  layout: ROUND_TAG,
  experiment_id: 'r',
  round,
  previous_model_sha256: 'a'.repeat(64),
  model_sha256: 'b'.repeat(64),
  accepted: [{ task_id: 't', update_digest_hex: 'c'.repeat(64), signature_b64: 'sig' }],
  round_digest: 'd'.repeat(64),
  aggregator_signature: 'sig',
  aggregator_public_key: 'key',
  attempt: 0,
  committed_at: 1,
  accuracy: 0.5,
  loss: null,
});

test('round records read back as written; a leftover temporary file is not a record', (t) => {
  const dir = join(tempDir('records'), 'records');
  writeRoundRecordFile(dir, record(1));
  writeRoundRecordFile(dir, record(12));
  writeFileSync(join(dir, `.${roundRecordFileName(3)}.tmp-123`), '{"half": ');
  const read = readSignedRecords(dir);
  t.deepEqual([...read.rounds.keys()], [1, 12]);
  t.deepEqual(read.rounds.get(12), record(12));
  t.deepEqual(read.unreadable, []);
  t.is(read.run, undefined);
});

test('a record file that is not one, or holds another round, is listed as unreadable with why', (t) => {
  const dir = join(tempDir('records-bad'), 'records');
  mkdirSync(dir);
  writeFileSync(join(dir, roundRecordFileName(1)), 'not json');
  writeFileSync(join(dir, roundRecordFileName(2)), JSON.stringify(record(5)));
  writeFileSync(join(dir, 'run.json'), JSON.stringify({ layout: 'crowdfl/run/v1' }));
  const read = readSignedRecords(dir);
  t.is(read.rounds.size, 0);
  t.deepEqual(
    read.unreadable.map((u) => u.file),
    ['records/round-0001.json', 'records/round-0002.json', 'records/run.json'],
  );
  t.regex(read.unreadable[1]!.why, /holds the record of round 5/);
});

test('a missing records directory is no records', (t) => {
  const read = readSignedRecords(join(tempDir('records-none'), 'records'));
  t.deepEqual(read, { rounds: new Map(), unreadable: [] });
});
