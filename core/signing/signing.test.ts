import test from 'ava';
import { createHash, createPrivateKey, createPublicKey, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import nacl from 'tweetnacl';
import { generateIdentity, identityFromSeed } from './keys.js';
import { createInvitation, INVITATION_PREFIX, InvitationError, isExpired, parseInvitation } from './invitations.js';
import { digestHex, hasSmallOrder, sign, signWithTweetnacl, signatureFromString, signatureToString, verify } from './ed25519.js';
import { helloDigest, invitationDigest, invitationLayout, modelJsonSha256, roundDigest, SigningError, taskDigest, taskLayout, updateDigest, updateLayout, type HelloSigningInput, type RoundSigningInput, type TaskSigningInput, type UpdateSigningInput } from './layouts.js';

// The golden vector: also written out in proto/crowdfl.proto. If a test here
// fails, the signed layout changed and every deployed node and verifier with it.
const SEED = Uint8Array.from({ length: 32 }, (_, i) => i);
const AGG_SEED = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
const node = identityFromSeed(SEED);
const aggregator = identityFromSeed(AGG_SEED);
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

const TASK: TaskSigningInput = {
  experiment_id: 'mnist-2nn',
  round: 7,
  task_id: 't-7-3',
  base_model_sha256: sha('base model'),
  model_json_sha256: modelJsonSha256('{"class_name":"Sequential"}'),
  training: { epochs: 5, batch_size: 10, learning_rate: 0.05, seed: 42, proximal_mu: 0.01 },
  deadline_unix_ms: 1_767_225_600_000,
  node_id: 'n-56475aa75463474c0285',
};

const UPDATE: UpdateSigningInput = {
  experiment_id: 'mnist-2nn',
  round: 7,
  task_id: 't-7-3',
  base_model_sha256: sha('base model'),
  update_sha256: sha('update bytes'),
  num_examples: 600,
  metrics: { loss: 0.25, accuracy: 0.9375, train_seconds: 12.5, examples_per_second: 240, epochs_completed: 5, partial: false },
  node_public_key: node.publicKey,
};

const HELLO: HelloSigningInput = {
  node_public_key: node.publicKey,
  aggregator_public_key: aggregator.publicKey,
  timestamp_ms: 1_767_225_600_000,
  challenge: Uint8Array.from({ length: 32 }, (_, i) => 0xc0 + i),
};

function roundInput(): RoundSigningInput {
  const d = updateDigest(UPDATE);
  return {
    experiment_id: 'mnist-2nn',
    round: 7,
    previous_model_sha256: sha('base model'),
    model_sha256: sha('next model'),
    accepted: [
      { task_id: 't-7-3', update_digest_hex: digestHex(d), signature_b64: signatureToString(sign(d, node)) },
      { task_id: 't-7-5', update_digest_hex: sha('another digest'), signature_b64: signatureToString(new Uint8Array(64).fill(7)) },
    ],
  };
}

const INVITE = { token_id: 'tok-golden', experiment_id: 'mnist-2nn', expires_unix_ms: 1_767_225_600_000, max_uses: 10 };

type DigestFn = (input: never) => Uint8Array;

const GOLDEN = {
  task: {
    input: TASK,
    fn: taskDigest as DigestFn,
    signer: aggregator,
    digest: 'e2a2a764e3da3ca111bd5ada8798c5284c1fc6eb2233c6fcdb9094c8e4efec92',
    signature:
      '1a94fa3c9ca0076e5c07dd5754b5ac9e4f2ac4c3988be62946e935e01581d874c725338de794336f608c47f719bf86f3674bd1e2b3cdc05a26db5389ea32db04',
  },
  update: {
    input: UPDATE,
    fn: updateDigest as DigestFn,
    signer: node,
    digest: 'fb2d40f1d6cca8987362a225b98400da1493510a05bd901e01a2e8403e1544b1',
    signature:
      '6703a95583ca2070ddd1953fbabdf57ddff24baee8204e23510762240812e515cb128d325cc575b2208fb49e096a520c076076786f8869180539f43a39e88804',
  },
  round: {
    input: roundInput(),
    fn: roundDigest as DigestFn,
    signer: aggregator,
    digest: '0f360310095a393daa458c07b0afcea93d1ce98f8aa8ccaa2c78ac7edea3e841',
    signature:
      '64362b452dc9658dbe8b88d0637cb08c3dc7f9af74172fd0b2e4fb47858d6c0006beed3dbebb345013cb8b6c48b7851cc0dae0cf880875587a593723e65cba00',
  },
  hello: {
    input: HELLO,
    fn: helloDigest as DigestFn,
    signer: node,
    digest: '5a79b800b478add7038f44e3dee2b720a7d0ef9d86f6efa6dadacdf9fbad3391',
    signature:
      '16cda229c05e440706ce2b6f2440fd42df094e32698be13e2d6974e87bbf52a0896b0debb454421b4a5afbb839edf332ad151beef38f226cc4582526f4e7e50c',
  },
  invite: {
    input: INVITE,
    fn: invitationDigest as DigestFn,
    signer: aggregator,
    digest: 'cc0b04eff6fdbd32e8372625e0d9d4b299b8d27460dbeef025db7a06cdcadb89',
    signature:
      '3899b867c2b1bf96da531fdd208cbd6c138b24b1dee91a7f4543393b655d0c84e308357fff3ae32b691b4d570eea63949c73dd5910f4a4a9311ee411f67ea100',
  },
};

test('golden vectors: fixed seed and inputs give fixed digests and signatures', (t) => {
  t.is(Buffer.from(node.publicKey).toString('hex'), '03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8');
  for (const [name, g] of Object.entries(GOLDEN)) {
    const digest = g.fn(g.input as never);
    const signature = sign(digest, g.signer);
    t.is(digestHex(digest), g.digest, `${name} digest`);
    t.is(Buffer.from(signature).toString('hex'), g.signature, `${name} signature`);
    t.true(verify(digest, signature, g.signer.publicKey), name);
  }
});

// Rebuilt here from the written specification alone, with none of the module's helpers.
function specUpdateLayout(u: UpdateSigningInput): Buffer {
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    const n = Buffer.alloc(4);
    n.writeUInt32BE(b.length);
    return Buffer.concat([n, b]);
  };
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v);
    return b;
  };
  const u64 = (v: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(v));
    return b;
  };
  const f64 = (v: number) => {
    const b = Buffer.alloc(8);
    b.writeDoubleBE(v);
    return b;
  };
  const m = u.metrics;
  return Buffer.concat([
    str('crowdfl/update/v1'),
    str(u.experiment_id),
    u32(u.round),
    str(u.task_id),
    str(u.base_model_sha256),
    str(u.update_sha256),
    u64(u.num_examples),
    f64(m.loss),
    f64(m.accuracy),
    f64(m.train_seconds),
    f64(m.examples_per_second),
    u32(m.epochs_completed),
    Buffer.from([m.partial ? 1 : 0]),
    u32(32),
    Buffer.from(u.node_public_key),
  ]);
}

test('core/signing/layouts.ts and proto/crowdfl.proto document the same layout', (t) => {
  const spec = (text: string) => text.slice(text.indexOf('// Signatures never cover'), text.indexOf('//   u64(expires_unix_ms) u32(max_uses)'));
  const inCode = spec(readFileSync('core/signing/layouts.ts', 'utf8'));
  t.true(inCode.length > 1000);
  t.is(spec(readFileSync('proto/crowdfl.proto', 'utf8')), inCode);
});

test('the update layout is exactly the documented byte layout', (t) => {
  t.deepEqual(Buffer.from(updateLayout(UPDATE)), specUpdateLayout(UPDATE));
  const digest = createHash('sha256').update(specUpdateLayout(UPDATE)).digest();
  t.deepEqual(Buffer.from(updateDigest(UPDATE)), digest);
  t.is(Buffer.from(taskLayout(TASK)).subarray(0, 19).toString('latin1'), '\x00\x00\x00\x0fcrowdfl/task/v2');
});

test('tweetnacl signatures are byte-identical to node:crypto Ed25519 and verify with it', (t) => {
  // node:crypto's key built independently from the seed (RFC 8410 PKCS#8).
  const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), SEED]);
  const privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  t.deepEqual(new Uint8Array(spki.subarray(spki.length - 32)), node.publicKey);
  for (const g of Object.values(GOLDEN)) {
    const digest = g.fn(g.input as never);
    const ours = sign(digest, node);
    t.deepEqual(new Uint8Array(cryptoSign(null, digest, privateKey)), ours);
    t.true(verify(digest, ours, node.publicKey));
    t.true(nacl.sign.detached.verify(digest, ours, node.publicKey));
  }
});

type Leaf = string | number | boolean | Uint8Array | undefined;

/** Every leaf path of a plain object/array tree, e.g. ['metrics','loss'] or ['accepted',1,'task_id']. */
function leafPaths(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (value instanceof Uint8Array || typeof value !== 'object' || value === null) return [prefix];
  return Object.entries(value).flatMap(([k, v]) => leafPaths(v, [...prefix, Array.isArray(value) ? Number(k) : k]));
}

/** A different value of the same kind that still passes validation. */
function changed(leaf: Leaf, path: (string | number)[]): Leaf {
  const name = String(path[path.length - 1]);
  if (leaf instanceof Uint8Array) {
    const copy = Uint8Array.from(leaf);
    copy[copy.length - 1]! ^= 1;
    return copy;
  }
  if (typeof leaf === 'string') {
    if (/^[0-9a-f]{64}$/.test(leaf)) return leaf.slice(0, -1) + (leaf.endsWith('0') ? '1' : '0');
    if (name === 'signature_b64') return signatureToString(new Uint8Array(64).fill(8));
    return leaf + 'x';
  }
  if (typeof leaf === 'number') return Number.isInteger(leaf) ? leaf + 1 : leaf * 1.5;
  if (typeof leaf === 'boolean') return !leaf;
  throw new Error(`no mutation for ${path.join('.')}`);
}

function withLeaf<T>(input: T, path: (string | number)[], leaf: Leaf): T {
  const copy = structuredClone(input) as Record<string | number, unknown>;
  let at = copy;
  for (const key of path.slice(0, -1)) at = at[key] as Record<string | number, unknown>;
  at[path[path.length - 1]!] = leaf;
  return copy as T;
}

test('changing any one field of any signed object changes its digest', (t) => {
  for (const [name, g] of Object.entries(GOLDEN)) {
    const base = digestHex(g.fn(g.input as never));
    const paths = leafPaths(g.input);
    t.true(paths.length >= 3, name);
    for (const path of paths) {
      let at: unknown = g.input;
      for (const key of path) at = (at as Record<string | number, unknown>)[key];
      const mutated = withLeaf(g.input, path, changed(at as Leaf, path));
      t.not(digestHex(g.fn(mutated as never)), base, `${name}.${path.join('.')}`);
    }
  }
  // Optional fields: absent is "" (or no bytes), and differs from any value.
  const noJson = { ...TASK, model_json_sha256: undefined };
  t.not(digestHex(taskDigest(noJson)), digestHex(taskDigest(TASK)));
  t.is(digestHex(taskDigest(noJson)), digestHex(taskDigest({ ...TASK, model_json_sha256: '' })));
  const unpinned = { ...HELLO, aggregator_public_key: undefined };
  t.not(digestHex(helloDigest(unpinned)), digestHex(helloDigest(HELLO)));
  t.is(digestHex(helloDigest(unpinned)), digestHex(helloDigest({ ...HELLO, aggregator_public_key: new Uint8Array(0) })));
  // Dropping or reordering accepted updates changes the round digest.
  const round = roundInput();
  t.not(digestHex(roundDigest({ ...round, accepted: round.accepted.slice(0, 1) })), digestHex(roundDigest(round)));
  t.not(digestHex(roundDigest({ ...round, accepted: [...round.accepted].reverse() })), digestHex(roundDigest(round)));
  // Length prefixes: moving a character across a field boundary changes the digest.
  t.not(
    digestHex(invitationDigest({ ...INVITE, token_id: 'ab', experiment_id: 'c' })),
    digestHex(invitationDigest({ ...INVITE, token_id: 'a', experiment_id: 'bc' })),
  );
});

test('floats are signed bit-exactly, with one NaN', (t) => {
  const digestWithLoss = (loss: number) => digestHex(updateDigest({ ...UPDATE, metrics: { ...UPDATE.metrics, loss } }));
  t.is(digestWithLoss(NaN), digestWithLoss(-NaN));
  t.is(digestWithLoss(NaN), digestWithLoss(new Float64Array(new BigUint64Array([0x7ff0000000000001n]).buffer)[0]!));
  t.not(digestWithLoss(0), digestWithLoss(-0));
  t.not(digestWithLoss(0.1), digestWithLoss(0.1 + Number.EPSILON / 8));
  const layout = Buffer.from(updateLayout({ ...UPDATE, metrics: { ...UPDATE.metrics, loss: NaN } }));
  t.true(layout.includes(Buffer.from('7ff8000000000000', 'hex')));
});

test('inputs that cannot be signed faithfully are refused', (t) => {
  const bad: [string, () => unknown, RegExp][] = [
    ['negative round', () => taskDigest({ ...TASK, round: -1 }), /round must be an integer in 0..4294967295/],
    ['u32 overflow', () => taskDigest({ ...TASK, training: { ...TASK.training, seed: 2 ** 32 } }), /training.seed/],
    ['fractional epochs', () => taskDigest({ ...TASK, training: { ...TASK.training, epochs: 1.5 } }), /training.epochs/],
    ['unsafe u64', () => updateDigest({ ...UPDATE, num_examples: 2 ** 53 }), /num_examples must be an integer in 0..2\^53-1/],
    ['uppercase hex', () => updateDigest({ ...UPDATE, update_sha256: UPDATE.update_sha256.toUpperCase() }), /64 lowercase hex/],
    ['empty update hash', () => updateDigest({ ...UPDATE, update_sha256: '' }), /update_sha256 must be a SHA-256/],
    ['short node key', () => updateDigest({ ...UPDATE, node_public_key: new Uint8Array(31) }), /node_public_key must be 32 bytes/],
    ['lone surrogate', () => taskDigest({ ...TASK, task_id: 't-\ud800' }), /task_id is not valid Unicode/],
    ['non-canonical signature', () => roundDigest({ ...roundInput(), accepted: [{ ...roundInput().accepted[0]!, signature_b64: 'AA==' }] }), /signature_b64 must be 64 bytes/],
    ['partial not boolean', () => updateDigest({ ...UPDATE, metrics: { ...UPDATE.metrics, partial: 1 as unknown as boolean } }), /metrics.partial must be a boolean/],
    ['bad aggregator key', () => helloDigest({ ...HELLO, aggregator_public_key: new Uint8Array(16) }), /aggregator_public_key must be 32 bytes/],
    ['digest of wrong length', () => sign(new Uint8Array(31), node), /32-byte digest/],
  ];
  for (const [name, fn, message] of bad) t.throws(fn, { instanceOf: SigningError, message }, name);
});

test('a signature verifies only with its key, its digest, and every one of its bytes', (t) => {
  const digest = updateDigest(UPDATE);
  const signature = sign(digest, node);
  t.true(verify(digest, signature, node.publicKey));
  t.false(verify(digest, signature, aggregator.publicKey));
  t.false(verify(digest, signature, generateIdentity().publicKey));
  for (let i = 0; i < signature.length; i++) {
    for (const bit of [0x01, 0x80]) {
      const flipped = Uint8Array.from(signature);
      flipped[i]! ^= bit;
      t.false(verify(digest, flipped, node.publicKey), `signature byte ${i} bit ${bit}`);
    }
  }
  for (let i = 0; i < digest.length; i++) {
    const flipped = Uint8Array.from(digest);
    flipped[i]! ^= 1;
    t.false(verify(flipped, signature, node.publicKey), `digest byte ${i}`);
  }
  const key = Uint8Array.from(node.publicKey);
  key[0]! ^= 1;
  t.false(verify(digest, signature, key));
});

// Curve25519 field arithmetic, only to derive the small-order points independently of the module's list.
const P = (1n << 255n) - 19n;
const mod = (a: bigint) => ((a % P) + P) % P;
const pow = (b: bigint, e: bigint) => {
  let r = 1n;
  for (b = mod(b); e > 0n; e >>= 1n, b = (b * b) % P) if (e & 1n) r = (r * b) % P;
  return r;
};
const sqrt = (a: bigint) => {
  let x = pow(a, (P + 3n) / 8n);
  if (mod(x * x - a) !== 0n) x = (x * pow(2n, (P - 1n) / 4n)) % P;
  return mod(x * x - a) === 0n ? x : undefined;
};
const littleEndian = (y: bigint) => Buffer.from(y.toString(16).padStart(64, '0'), 'hex').reverse();

test('keys of small order are refused: under them anyone forges signatures that OpenSSL accepts', (t) => {
  const d = mod(-121665n * pow(121666n, P - 2n));
  // Order-8 points have y^2 = (-1 ± sqrt(1 + d)) / d; order 1, 2, 4 have y = 1, -1, 0.
  const ys = [0n, 1n, P - 1n, P, P + 1n];
  for (const sign of [1n, -1n]) {
    const y = sqrt(mod((-1n + sign * sqrt(1n + d)!) * pow(d, P - 2n)));
    if (y !== undefined) ys.push(y, P - y);
  }
  t.is(ys.length, 7);
  const trivial = Buffer.concat([littleEndian(1n), Buffer.alloc(32)]); // R = identity point, S = 0
  let forgeries = 0;
  for (const y of ys) {
    for (const top of [0, 0x80]) {
      const key = littleEndian(y);
      key[31]! |= top;
      t.true(hasSmallOrder(key), key.toString('hex'));
      const keyObject = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), key]), format: 'der', type: 'spki' });
      for (let i = 0; i < 16; i++) {
        const digest = createHash('sha256').update(`${y}/${top}/${i}`).digest();
        if (cryptoVerify(null, digest, keyObject, trivial)) forgeries++;
        t.false(verify(digest, trivial, key));
      }
    }
  }
  t.true(forgeries > 20, `OpenSSL accepted ${forgeries} forgeries`);
  t.false(hasSmallOrder(node.publicKey));
  t.false(hasSmallOrder(generateIdentity().publicKey));
});

test('a second signature made by adding the group order to S is refused', (t) => {
  const L = (1n << 252n) + 27742317777372353535851937790883648493n;
  const digest = updateDigest(UPDATE);
  const signature = sign(digest, node);
  const s = BigInt('0x' + Buffer.from(signature.subarray(32)).reverse().toString('hex'));
  const malleated = Uint8Array.from([...signature.subarray(0, 32), ...littleEndian(s + L)]);
  t.true(nacl.sign.detached.verify(digest, malleated, node.publicKey), 'tweetnacl accepts it: one reason not to verify with it');
  t.false(verify(digest, malleated, node.publicKey));
});

test('verify says false, never throws, for wrong lengths and non-bytes', (t) => {
  const digest = updateDigest(UPDATE);
  const signature = sign(digest, node);
  const pk = node.publicKey;
  const cases: [unknown, unknown, unknown][] = [
    [digest.subarray(0, 31), signature, pk],
    [new Uint8Array([...digest, 0]), signature, pk],
    [digest, signature.subarray(0, 63), pk],
    [digest, new Uint8Array([...signature, 0]), pk],
    [digest, signature, pk.subarray(0, 31)],
    [digest, signature, new Uint8Array(33)],
    [digest, signature, new Uint8Array(0)],
    [digestHex(digest), signature, pk],
    [digest, signatureToString(signature), pk],
    [digest, signature, undefined],
    [digest, signature, new Uint8Array(32).fill(0xff)], // not a curve point
  ];
  for (const [d, s, k] of cases) {
    t.false(verify(d as Uint8Array, s as Uint8Array, k as Uint8Array));
  }
  t.true(verify(Buffer.from(digest), Buffer.from(signature), Buffer.from(pk)), 'Buffers are bytes too');
});

test('signatures travel as strict base64', (t) => {
  const signature = sign(taskDigest(TASK), aggregator);
  const text = signatureToString(signature);
  t.is(text.length, 88);
  t.deepEqual(signatureFromString(text), signature);
  t.is(signatureFromString(text.slice(0, -2)), undefined);
  t.is(signatureFromString(Buffer.alloc(65).toString('base64')), undefined);
});

function editToken(token: string, edit: (doc: Record<string, unknown>) => void): string {
  const doc = JSON.parse(Buffer.from(token.slice(INVITATION_PREFIX.length), 'base64url').toString('utf8'));
  edit(doc);
  return INVITATION_PREFIX + Buffer.from(JSON.stringify(doc)).toString('base64url');
}

test('an invitation round-trips and carries the aggregator key to pin', (t) => {
  const expiresAt = new Date('2030-01-01T00:00:00Z');
  const token = createInvitation(aggregator, { experimentId: 'mnist-2nn', expiresAt, maxUses: 5 });
  t.true(token.startsWith('crowdfl-invite:'));
  t.regex(token, /^crowdfl-invite:[A-Za-z0-9_-]+$/);
  t.true(token.length < 400, `${token.length} characters`);
  const inv = parseInvitation(`  ${token}\n`);
  t.is(inv.experiment_id, 'mnist-2nn');
  t.is(inv.expires_unix_ms, expiresAt.getTime());
  t.is(inv.max_uses, 5);
  t.deepEqual(inv.aggregator_public_key, aggregator.publicKey);
  t.regex(inv.token_id, /^[A-Za-z0-9_-]{22}$/);
  t.true(verify(invitationDigest(inv), inv.signature, aggregator.publicKey));
  t.deepEqual(parseInvitation(token, { aggregatorPublicKey: aggregator.publicKey }), inv);

  const anyExperiment = parseInvitation(createInvitation(aggregator, { expiresAt: Date.now() + 1000, maxUses: 1 }));
  t.is(anyExperiment.experiment_id, '');
  t.not(anyExperiment.token_id, inv.token_id);
  t.is(Buffer.from(invitationLayout(anyExperiment)).readUInt32BE(4 + 17 + 4 + anyExperiment.token_id.length), 0);
});

test('forged, edited and malformed invitations are refused', (t) => {
  const token = createInvitation(aggregator, { experimentId: 'mnist-2nn', expiresAt: 1_900_000_000_000, maxUses: 5 });
  const refused = (text: string, message: RegExp, name: string) =>
    t.throws(() => parseInvitation(text), { instanceOf: InvitationError, message }, name);

  refused(editToken(token, (d) => (d.max_uses = 500)), /does not verify/, 'more uses');
  refused(editToken(token, (d) => (d.expires_unix_ms = 2_000_000_000_000)), /does not verify/, 'later expiry');
  refused(editToken(token, (d) => (d.experiment_id = '')), /does not verify/, 'any experiment');
  refused(editToken(token, (d) => (d.token_id = 'AAAAAAAAAAAAAAAAAAAAAA')), /does not verify/, 'reused token id');
  const mallory = generateIdentity();
  refused(editToken(token, (d) => (d.aggregator_public_key = Buffer.from(mallory.publicKey).toString('base64'))), /does not verify/, 'swapped key');
  refused(editToken(token, (d) => (d.admin = true)), /unexpected fields: admin/, 'extra field');
  refused(editToken(token, (d) => delete d.signature), /signature is malformed/, 'no signature');
  refused(editToken(token, (d) => (d.max_uses = 0)), /max_uses is malformed/, 'zero uses');
  refused(editToken(token, (d) => (d.expires_unix_ms = '1900000000000')), /expires_unix_ms is malformed/, 'string time');
  refused(token.slice(0, token.length - 30), /damaged|malformed|does not verify/, 'cut short');
  refused(token.slice(0, 40) + ' ' + token.slice(40), /characters that do not belong/, 'wrapped');
  refused(token.replace('crowdfl-invite:', 'crowdfl-invitation:'), /should start with "crowdfl-invite:"/, 'prefix');
  refused('crowdfl-invite:' + 'A'.repeat(5000), /too long/, 'long');
  refused('crowdfl-invite:' + Buffer.from('[1,2]').toString('base64url'), /malformed/, 'array');

  // Self-consistent but signed by someone else: only the aggregator's own key check catches it.
  const forged = createInvitation(mallory, { experimentId: 'mnist-2nn', expiresAt: 1_900_000_000_000, maxUses: 1000 });
  t.deepEqual(parseInvitation(forged).aggregator_public_key, mallory.publicKey);
  t.throws(() => parseInvitation(forged, { aggregatorPublicKey: aggregator.publicKey }), {
    instanceOf: InvitationError,
    message: /signed by key [0-9a-f-]{19}, not by this aggregator/,
  });

  t.throws(() => createInvitation(aggregator, { expiresAt: 1, maxUses: 0 }), { instanceOf: InvitationError });
  t.throws(() => createInvitation(aggregator, { expiresAt: new Date('nonsense'), maxUses: 1 }), { instanceOf: InvitationError });
});

test('invitation expiry', (t) => {
  const inv = { expires_unix_ms: 1_000_000 };
  t.false(isExpired(inv, 999_999));
  t.true(isExpired(inv, 1_000_000));
  t.true(isExpired(inv, new Date(2_000_000)));
  t.false(isExpired({ expires_unix_ms: Date.now() + 60_000 }));
  t.true(isExpired({ expires_unix_ms: Date.now() - 1 }));
});

test('the fast native signer and tweetnacl produce the same signature bytes', (t) => {
  for (let i = 0; i < 20; i++) {
    const identity = generateIdentity();
    const digest = createHash('sha256').update(`message ${i}`).digest();
    t.deepEqual(Buffer.from(sign(digest, identity)), Buffer.from(signWithTweetnacl(digest, identity)));
  }
});
