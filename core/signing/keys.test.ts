import test from 'ava';
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  fingerprint,
  generateIdentity,
  identityFromSeed,
  KeyFileError,
  loadOrCreateIdentity,
  nodeIdFromPublicKey,
  publicKeyFromString,
  publicKeyToString,
  strictBase64Decode,
} from './keys.js';
import { tempDir } from '../../test/support/fixtures.js';

const FIXED_SEED = Uint8Array.from({ length: 32 }, (_, i) => i);
const unix = process.platform !== 'win32';

function writeKey(path: string, doc: unknown, mode = 0o600): void {
  writeFileSync(path, typeof doc === 'string' ? doc : JSON.stringify(doc), { mode });
  chmodSync(path, mode);
}

function validDoc(seed = FIXED_SEED): Record<string, string> {
  const id = identityFromSeed(seed);
  return {
    format: 'crowdfl-key/1',
    algorithm: 'ed25519',
    seed: Buffer.from(id.seed).toString('base64'),
    public_key: Buffer.from(id.publicKey).toString('base64'),
  };
}

test('a new key file is 0600 in a new 0700 directory, in the documented format, and loads back as the same identity', (t) => {
  const dir = join(tempDir('keys'), 'home', '.crowdfl');
  const path = join(dir, 'node.key');
  const first = loadOrCreateIdentity(path, { create: true });
  t.true(first.created);
  if (unix) {
    t.is(statSync(path).mode & 0o777, 0o600);
    t.is(statSync(dir).mode & 0o777, 0o700);
  }
  t.deepEqual(readdirSync(dir), ['node.key'], 'no temporary file is left behind');

  const doc = JSON.parse(readFileSync(path, 'utf8'));
  t.deepEqual(Object.keys(doc), ['format', 'algorithm', 'seed', 'public_key']);
  t.is(doc.format, 'crowdfl-key/1');
  t.is(doc.algorithm, 'ed25519');
  t.is(doc.public_key, publicKeyToString(first.identity.publicKey));

  const again = loadOrCreateIdentity(path, { create: true });
  t.false(again.created, 'an existing identity is loaded, never replaced');
  t.deepEqual(again.identity, first.identity);
  t.deepEqual(loadOrCreateIdentity(path).identity, first.identity);
});

test('a missing key file is an error unless creation is asked for', (t) => {
  const path = join(tempDir('keys'), 'absent.key');
  t.throws(() => loadOrCreateIdentity(path), { instanceOf: KeyFileError, message: /no key file at .*absent\.key/ });
  t.throws(() => statSync(path));
});

test('a key file other users can read is refused with the exact chmod that fixes it', (t) => {
  if (!unix) return t.pass('no Unix permission bits');
  const path = join(tempDir('keys'), 'node.key');
  writeKey(path, validDoc(), 0o644);
  const err = t.throws(() => loadOrCreateIdentity(path, { create: true }), { instanceOf: KeyFileError });
  t.true(err!.message.includes(`chmod 600 ${path}`), err!.message);
  t.regex(err!.message, /mode 0644/);
  t.is(statSync(path).mode & 0o777, 0o644, 'the file is left for its owner to fix, not rewritten');

  chmodSync(path, 0o640);
  t.throws(() => loadOrCreateIdentity(path), { instanceOf: KeyFileError, message: /mode 0640/ });
  chmodSync(path, 0o600);
  t.deepEqual(loadOrCreateIdentity(path).identity.publicKey, identityFromSeed(FIXED_SEED).publicKey);
});

test('the chmod hint quotes a path with spaces', (t) => {
  if (!unix) return t.pass('no Unix permission bits');
  const dir = join(tempDir('keys'), 'my keys');
  mkdirSync(dir);
  const path = join(dir, 'node.key');
  writeKey(path, validDoc(), 0o604);
  t.throws(() => loadOrCreateIdentity(path), { message: `key file ${path} has mode 0604, so other users can read the secret key; make it private with: chmod 600 '${path}'` });
});

test('malformed and tampered key files are refused with a reason', (t) => {
  const dir = tempDir('keys');
  const other = identityFromSeed(new Uint8Array(32).fill(9));
  const cases: [string, unknown, RegExp][] = [
    ['not JSON', '{"format":', /is not JSON/],
    ['array', '[]', /not a JSON object/],
    ['wrong format', { ...validDoc(), format: 'crowdfl-key/2' }, /format "crowdfl-key\/2", expected "crowdfl-key\/1"/],
    ['wrong algorithm', { ...validDoc(), algorithm: 'rsa' }, /algorithm "rsa"/],
    ['short seed', { ...validDoc(), seed: Buffer.alloc(31).toString('base64') }, /"seed" must be 32 bytes/],
    ['seed not base64', { ...validDoc(), seed: '!'.repeat(44) }, /"seed" must be 32 bytes/],
    ['missing public key', { ...validDoc(), public_key: undefined }, /"public_key" must be 32 bytes/],
    ['public key of another seed', { ...validDoc(), public_key: publicKeyToString(other.publicKey) }, /damaged: its public_key does not belong to its seed/],
  ];
  for (const [name, doc, message] of cases) {
    const path = join(dir, `${name.replace(/ /g, '-')}.key`);
    writeKey(path, doc);
    t.throws(() => loadOrCreateIdentity(path, { create: true }), { instanceOf: KeyFileError, message }, name);
  }
  // One flipped bit of the seed: the stored public key no longer matches.
  const doc = validDoc();
  const seed = Buffer.from(doc.seed!, 'base64');
  seed[5]! ^= 1;
  const path = join(dir, 'flipped.key');
  writeKey(path, { ...doc, seed: seed.toString('base64') });
  t.throws(() => loadOrCreateIdentity(path), { instanceOf: KeyFileError, message: /does not belong to its seed/ });

  const asDir = join(dir, 'dir.key');
  mkdirSync(asDir, { mode: 0o700 });
  t.throws(() => loadOrCreateIdentity(asDir), { message: /not a regular file|EISDIR/ });
});

test('the same seed gives the same keys, node id and fingerprint', (t) => {
  const a = identityFromSeed(FIXED_SEED);
  const b = identityFromSeed(Uint8Array.from(FIXED_SEED));
  t.deepEqual(a, b);
  t.is(a.secretKey.length, 64);
  t.deepEqual(a.secretKey.subarray(0, 32), FIXED_SEED);
  t.deepEqual(a.secretKey.subarray(32), a.publicKey);
  // Pinned: a node's id must survive upgrades of crowdfl.
  t.is(Buffer.from(a.publicKey).toString('hex'), '03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8');
  t.is(nodeIdFromPublicKey(a.publicKey), 'n-56475aa75463474c0285');
  t.is(fingerprint(a.publicKey), '5647-5aa7-5463-474c');

  const fresh = generateIdentity();
  t.notDeepEqual(fresh.publicKey, a.publicKey);
  t.regex(nodeIdFromPublicKey(fresh.publicKey), /^[A-Za-z0-9._:-]{1,128}$/);
  t.regex(fingerprint(fresh.publicKey), /^[0-9a-f]{4}(-[0-9a-f]{4}){3}$/);
  t.deepEqual(identityFromSeed(fresh.seed), fresh);
});

test('public keys travel as strict base64 of 32 bytes', (t) => {
  const { publicKey } = identityFromSeed(FIXED_SEED);
  const text = publicKeyToString(publicKey);
  t.is(text.length, 44);
  t.deepEqual(publicKeyFromString(text), publicKey);
  t.deepEqual(publicKeyFromString(` ${text}\n`), publicKey);
  t.throws(() => publicKeyFromString(Buffer.alloc(31).toString('base64')), { message: /32 bytes/ });
  t.throws(() => publicKeyFromString(Buffer.alloc(33).toString('base64')), { message: /32 bytes/ });
  t.throws(() => publicKeyFromString(text.replace(/=$/, '')), { message: /32 bytes/ });
  t.throws(() => publicKeyFromString(`${text.slice(0, 20)}!${text.slice(21)}`), { message: /32 bytes/ });
  t.throws(() => publicKeyToString(new Uint8Array(31)), { instanceOf: TypeError });
  // Same bytes, different text (trailing bits): only the canonical form is accepted.
  t.is(strictBase64Decode('AB=='), undefined);
  t.deepEqual(strictBase64Decode('AA=='), new Uint8Array([0]));
});
