// What crowdfl signs, byte for byte. The same specification, with a worked
// example, is at the end of proto/crowdfl.proto; keep the two identical.
//
// Signatures never cover protobuf encodings (not canonical across libraries)
// but a byte layout of the decoded fields that any language can rebuild:
//
//   layout    = str(tag) || field_1 || field_2 || ...   fields in the order below
//   digest    = SHA-256(layout)                          32 bytes
//   signature = Ed25519(secret key, digest)              64 bytes; RFC 8032 pure
//               Ed25519 with the 32-byte digest as the message (not Ed25519ph)
// where
//   str(s)   = u32(byte length of UTF-8 s) || UTF-8 bytes of s
//   bytes(b) = u32(length of b) || b
//   u32(n)   = 4 bytes, big-endian unsigned
//   u64(n)   = 8 bytes, big-endian unsigned
//   f64(x)   = 8 bytes, IEEE-754 binary64, big-endian; every NaN is written as
//              7ff8000000000000 (-0 and +0 stay distinct)
//   bool(b)  = 1 byte, 00 or 01
//
// Fixed-width numbers carry no length prefix; every string and byte string
// does. Hex and base64 fields are signed as the text they are and must be
// canonical: SHA-256 values as 64 lowercase hex characters, signatures as
// standard padded base64 of 64 bytes. An absent optional text field is "".
// Public keys are the raw 32-byte Ed25519 keys of RFC 8032.
//
// Verifiers must refuse a signature whose S is not below the group order L
// (RFC 8032 section 5.1.7; OpenSSL does, tweetnacl-js does not) and any public
// key of small order, which libsodium lists as the 7 encodings, ignoring the
// sign bit (top bit of the last byte), of y = 0, 1, p-1, p, p+1 and the two
// points of order 8 (26e8958f...6d53fc05, c7176a70...92ac037a): under such a
// key anyone can forge signatures (OpenSSL accepts them).
//
// Task, signed by the aggregator:
//   str("crowdfl/task/v2") str(experiment_id) u32(round) str(task_id)
//   str(base_model_sha256) str(model_json_sha256 = SHA-256 of the UTF-8 model_json, or "")
//   u32(training.epochs) u32(training.batch_size) f64(training.learning_rate) u32(training.seed)
//   f64(training.proximal_mu) u64(deadline_unix_ms) str(node_id)
//   (v1, protocol version 2, had no proximal_mu.)
//
// Update (UpdateMeta), signed by the node:
//   str("crowdfl/update/v1") str(experiment_id) u32(round) str(task_id)
//   str(base_model_sha256) str(update_sha256) u64(num_examples)
//   f64(metrics.loss) f64(metrics.accuracy) f64(metrics.train_seconds)
//   f64(metrics.examples_per_second) u32(metrics.epochs_completed) bool(metrics.partial)
//   bytes(node_public_key: 32 bytes)
//
// Round record, signed by the aggregator:
//   str("crowdfl/round/v1") str(experiment_id) u32(round)
//   str(previous_model_sha256, "" for none) str(model_sha256) u32(number of accepted updates)
//   then for each accepted update, in the record's order:
//     str(task_id) str(update_digest_hex) str(signature_b64)
//
// Run record, signed by the aggregator when the run starts:
//   str("crowdfl/run/v1") str(experiment_id) str(experiment_sha256 = SHA-256 of
//   the UTF-8 experiment JSON the run stores) u32(seed) str(initial_model_sha256)
//
// Hello (proof of key possession at join), signed by the node:
//   str("crowdfl/hello/v2") bytes(node_public_key: 32 bytes)
//   bytes(aggregator_public_key: 32 bytes, or 0 bytes when the node pins none) u64(timestamp_ms)
//   bytes(challenge: 32 bytes, from HelloChallenge)
//   (v1, protocol version 3, had no challenge: a hello could be replayed within the clock window.)
//
// Invitation, signed by the aggregator:
//   str("crowdfl/invite/v1") str(token_id) str(experiment_id, "" = any experiment)
//   u64(expires_unix_ms) u32(max_uses)
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import nacl from 'tweetnacl';
import { fingerprint, PUBLIC_KEY_BYTES, strictBase64Decode, type Identity } from './keys.js';
import { UserError } from '../user-error.js';

export const DIGEST_BYTES = 32;
export const SIGNATURE_BYTES = 64;

export const TASK_TAG = 'crowdfl/task/v2';
export const UPDATE_TAG = 'crowdfl/update/v1';
export const ROUND_TAG = 'crowdfl/round/v1';
export const HELLO_TAG = 'crowdfl/hello/v2';
export const HELLO_CHALLENGE_BYTES = 32;
export const RUN_TAG = 'crowdfl/run/v1';
export const INVITE_TAG = 'crowdfl/invite/v1';

/** An input that cannot be signed: out of range, or not in canonical form. */
export class SigningError extends Error {}

export interface TaskSigningInput {
  experiment_id: string;
  round: number;
  task_id: string;
  base_model_sha256: string;
  /** SHA-256 (lowercase hex) of the task's model_json; absent = "". */
  model_json_sha256?: string;
  training: { epochs: number; batch_size: number; learning_rate: number; seed: number; proximal_mu: number };
  deadline_unix_ms: number;
  node_id: string;
}

export interface UpdateSigningInput {
  experiment_id: string;
  round: number;
  task_id: string;
  base_model_sha256: string;
  update_sha256: string;
  num_examples: number;
  metrics: {
    loss: number;
    accuracy: number;
    train_seconds: number;
    examples_per_second: number;
    epochs_completed: number;
    partial: boolean;
  };
  node_public_key: Uint8Array;
}

export interface AcceptedUpdateRef {
  task_id: string;
  update_digest_hex: string;
  signature_b64: string;
}

export interface RoundSigningInput {
  experiment_id: string;
  round: number;
  /** "" when the round started from no previous model. */
  previous_model_sha256: string;
  model_sha256: string;
  accepted: readonly AcceptedUpdateRef[];
}

export interface RunSigningInput {
  experiment_id: string;
  /** SHA-256 (lowercase hex) of the experiment JSON exactly as the run stores it. */
  experiment_sha256: string;
  seed: number;
  initial_model_sha256: string;
}

export interface HelloSigningInput {
  node_public_key: Uint8Array;
  /** The aggregator key the node expects to talk to; absent when it pins none. */
  aggregator_public_key?: Uint8Array;
  timestamp_ms: number;
  /** The aggregator's single-use challenge (HelloChallenge), so a recorded hello cannot be replayed. */
  challenge: Uint8Array;
}

export interface InvitationSigningInput {
  token_id: string;
  /** Absent or "" = valid for any experiment. */
  experiment_id?: string;
  expires_unix_ms: number;
  max_uses: number;
}

const HEX_SHA256 = /^[0-9a-f]{64}$/;
const CANONICAL_NAN = Buffer.from('7ff8000000000000', 'hex');

class Layout {
  private readonly parts: Buffer[] = [];

  constructor(tag: string) {
    this.str('tag', tag);
  }

  str(field: string, value: string): this {
    if (typeof value !== 'string') throw new SigningError(`${field} must be a string`);
    const utf8 = Buffer.from(value, 'utf8');
    // A lone surrogate becomes U+FFFD in UTF-8, so two different strings would
    // share a layout; protobuf strings are valid UTF-8 anyway.
    if (utf8.toString('utf8') !== value) throw new SigningError(`${field} is not valid Unicode text`);
    return this.u32(`${field} length`, utf8.length).push(utf8);
  }

  bytes(field: string, value: Uint8Array): this {
    if (!(value instanceof Uint8Array)) throw new SigningError(`${field} must be bytes`);
    return this.u32(`${field} length`, value.length).push(Buffer.from(value));
  }

  sha256Hex(field: string, value: string, optional = false): this {
    if (optional && value === '') return this.str(field, value);
    if (typeof value !== 'string' || !HEX_SHA256.test(value)) {
      throw new SigningError(`${field} must be a SHA-256 as 64 lowercase hex characters${optional ? ' (or "")' : ''}`);
    }
    return this.str(field, value);
  }

  u32(field: string, value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
      throw new SigningError(`${field} must be an integer in 0..4294967295, got ${value}`);
    }
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(value);
    return this.push(b);
  }

  u64(field: string, value: number): this {
    // Numbers above 2^53 are not exact in JavaScript, so they cannot be signed faithfully.
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new SigningError(`${field} must be an integer in 0..2^53-1, got ${value}`);
    }
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64BE(BigInt(value));
    return this.push(b);
  }

  f64(field: string, value: number): this {
    if (typeof value !== 'number') throw new SigningError(`${field} must be a number`);
    if (Number.isNaN(value)) return this.push(CANONICAL_NAN);
    const b = Buffer.allocUnsafe(8);
    b.writeDoubleBE(value);
    return this.push(b);
  }

  bool(field: string, value: boolean): this {
    if (typeof value !== 'boolean') throw new SigningError(`${field} must be a boolean`);
    return this.push(Buffer.from([value ? 1 : 0]));
  }

  finish(): Uint8Array {
    const out = Buffer.concat(this.parts);
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }

  private push(b: Buffer): this {
    this.parts.push(b);
    return this;
  }
}

function publicKeyField(layout: Layout, field: string, key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== PUBLIC_KEY_BYTES) {
    throw new SigningError(`${field} must be ${PUBLIC_KEY_BYTES} bytes`);
  }
  layout.bytes(field, key);
}

function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest());
}

// The layout functions are exported so that an implementation in another
// language can be compared byte by byte, not only digest by digest.

export function taskLayout(t: TaskSigningInput): Uint8Array {
  const l = new Layout(TASK_TAG)
    .str('experiment_id', t.experiment_id)
    .u32('round', t.round)
    .str('task_id', t.task_id)
    .sha256Hex('base_model_sha256', t.base_model_sha256)
    .sha256Hex('model_json_sha256', t.model_json_sha256 ?? '', true);
  if (typeof t.training !== 'object' || t.training === null) throw new SigningError('training is missing');
  return l
    .u32('training.epochs', t.training.epochs)
    .u32('training.batch_size', t.training.batch_size)
    .f64('training.learning_rate', t.training.learning_rate)
    .u32('training.seed', t.training.seed)
    .f64('training.proximal_mu', t.training.proximal_mu)
    .u64('deadline_unix_ms', t.deadline_unix_ms)
    .str('node_id', t.node_id)
    .finish();
}

export function updateLayout(u: UpdateSigningInput): Uint8Array {
  const l = new Layout(UPDATE_TAG)
    .str('experiment_id', u.experiment_id)
    .u32('round', u.round)
    .str('task_id', u.task_id)
    .sha256Hex('base_model_sha256', u.base_model_sha256)
    .sha256Hex('update_sha256', u.update_sha256)
    .u64('num_examples', u.num_examples);
  const m = u.metrics;
  if (typeof m !== 'object' || m === null) throw new SigningError('metrics are missing');
  l.f64('metrics.loss', m.loss)
    .f64('metrics.accuracy', m.accuracy)
    .f64('metrics.train_seconds', m.train_seconds)
    .f64('metrics.examples_per_second', m.examples_per_second)
    .u32('metrics.epochs_completed', m.epochs_completed)
    .bool('metrics.partial', m.partial);
  publicKeyField(l, 'node_public_key', u.node_public_key);
  return l.finish();
}

export function roundLayout(r: RoundSigningInput): Uint8Array {
  if (!Array.isArray(r.accepted)) throw new SigningError('accepted must be a list');
  const l = new Layout(ROUND_TAG)
    .str('experiment_id', r.experiment_id)
    .u32('round', r.round)
    .sha256Hex('previous_model_sha256', r.previous_model_sha256, true)
    .sha256Hex('model_sha256', r.model_sha256)
    .u32('accepted count', r.accepted.length);
  r.accepted.forEach((a, i) => {
    l.str(`accepted[${i}].task_id`, a.task_id).sha256Hex(`accepted[${i}].update_digest_hex`, a.update_digest_hex);
    if (!strictBase64Decode(a.signature_b64, SIGNATURE_BYTES)) {
      throw new SigningError(`accepted[${i}].signature_b64 must be ${SIGNATURE_BYTES} bytes in canonical standard base64`);
    }
    l.str(`accepted[${i}].signature_b64`, a.signature_b64);
  });
  return l.finish();
}

export function runLayout(r: RunSigningInput): Uint8Array {
  return new Layout(RUN_TAG)
    .str('experiment_id', r.experiment_id)
    .sha256Hex('experiment_sha256', r.experiment_sha256)
    .u32('seed', r.seed)
    .sha256Hex('initial_model_sha256', r.initial_model_sha256)
    .finish();
}

export function helloLayout(h: HelloSigningInput): Uint8Array {
  const l = new Layout(HELLO_TAG);
  publicKeyField(l, 'node_public_key', h.node_public_key);
  if (h.aggregator_public_key === undefined || h.aggregator_public_key.length === 0) {
    l.bytes('aggregator_public_key', new Uint8Array(0));
  } else {
    publicKeyField(l, 'aggregator_public_key', h.aggregator_public_key);
  }
  l.u64('timestamp_ms', h.timestamp_ms);
  if (h.challenge.length !== HELLO_CHALLENGE_BYTES) throw new SigningError(`challenge must be ${HELLO_CHALLENGE_BYTES} bytes, got ${h.challenge.length}`);
  return l.bytes('challenge', h.challenge).finish();
}

export function invitationLayout(inv: InvitationSigningInput): Uint8Array {
  return new Layout(INVITE_TAG)
    .str('token_id', inv.token_id)
    .str('experiment_id', inv.experiment_id ?? '')
    .u64('expires_unix_ms', inv.expires_unix_ms)
    .u32('max_uses', inv.max_uses)
    .finish();
}

export function taskDigest(t: TaskSigningInput): Uint8Array {
  return sha256(taskLayout(t));
}

export function updateDigest(u: UpdateSigningInput): Uint8Array {
  return sha256(updateLayout(u));
}

/** The order of a round record's accepted list, so everyone who rebuilds the record gets the same bytes: by task id. */
export function byTaskId(a: { task_id: string }, b: { task_id: string }): number {
  return a.task_id < b.task_id ? -1 : a.task_id > b.task_id ? 1 : 0;
}

export function roundDigest(r: RoundSigningInput): Uint8Array {
  return sha256(roundLayout(r));
}

export function runDigest(r: RunSigningInput): Uint8Array {
  return sha256(runLayout(r));
}

export function helloDigest(h: HelloSigningInput): Uint8Array {
  return sha256(helloLayout(h));
}

export function invitationDigest(inv: InvitationSigningInput): Uint8Array {
  return sha256(invitationLayout(inv));
}

/** For Task.model_json: the value of model_json_sha256. */
export function modelJsonSha256(modelJson: string): string {
  return createHash('sha256').update(modelJson, 'utf8').digest('hex');
}

export function sign(digest: Uint8Array, identity: Identity): Uint8Array {
  // Signing anything but a digest would be a misuse of this module (and a
  // cross-protocol risk): the layouts above are the only signed messages.
  if (!(digest instanceof Uint8Array) || digest.length !== DIGEST_BYTES) {
    throw new SigningError(`sign() takes a ${DIGEST_BYTES}-byte digest`);
  }
  // node:crypto signs ~80× faster than tweetnacl (0.03 ms vs ~3 ms) and, from the
  // same seed, produces byte-identical signatures (Ed25519 is deterministic;
  // core/signing/signing.test.ts checks both agree), so tweetnacl stays the reference.
  return new Uint8Array(cryptoSign(null, digest, privateKeyOf(identity)));
}

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const privateKeys = new WeakMap<Identity, KeyObject>();

function privateKeyOf(identity: Identity): KeyObject {
  let key = privateKeys.get(identity);
  if (!key) {
    key = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, identity.seed]), format: 'der', type: 'pkcs8' });
    privateKeys.set(identity, key);
  }
  return key;
}

/** The reference implementation's signature (tweetnacl), for checking the fast path against. */
export function signWithTweetnacl(digest: Uint8Array, identity: Identity): Uint8Array {
  return nacl.sign.detached(digest, identity.secretKey);
}

// The encodings (ignoring the sign bit) of the points of order 1, 2, 4 and 8,
// canonical and not: libsodium's list. With such a key anyone can make a
// signature that verifies (R = identity, S = 0 passes for 1 message in 8 or
// more) and OpenSSL accepts them, so a signature under one proves nothing.
const SMALL_ORDER_KEYS = [
  '0000000000000000000000000000000000000000000000000000000000000000', // y = 0
  '0100000000000000000000000000000000000000000000000000000000000000', // y = 1
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', // order 8
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a', // order 8
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // y = p - 1
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // y = p, i.e. 0
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // y = p + 1, i.e. 1
].map((hex) => Buffer.from(hex, 'hex'));

export function hasSmallOrder(publicKey: Uint8Array): boolean {
  const key = Buffer.from(publicKey);
  key[31]! &= 0x7f;
  return SMALL_ORDER_KEYS.some((k) => k.equals(key));
}

// RFC 8410 SubjectPublicKeyInfo for Ed25519, followed by the 32 raw key bytes.
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const KEY_CACHE_LIMIT = 4096;
const keyCache = new Map<string, KeyObject>();

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  const id = Buffer.from(publicKey).toString('base64');
  const cached = keyCache.get(id);
  if (cached) {
    // Re-inserting keeps Map order least-recently-used first.
    keyCache.delete(id);
    keyCache.set(id, cached);
    return cached;
  }
  const key = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, publicKey]), format: 'der', type: 'spki' });
  if (keyCache.size >= KEY_CACHE_LIMIT) keyCache.delete(keyCache.keys().next().value!);
  keyCache.set(id, key);
  return key;
}

/**
 * Ed25519 verification through OpenSSL (node:crypto), some 50x faster than
 * tweetnacl, and strict where tweetnacl is not (it accepts S >= L, a second
 * signature for the same message). Never throws: wrong lengths, an unusable or
 * small-order key are just `false`.
 */
export function verify(digest: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  if (
    !(digest instanceof Uint8Array) ||
    !(signature instanceof Uint8Array) ||
    !(publicKey instanceof Uint8Array) ||
    digest.length !== DIGEST_BYTES ||
    signature.length !== SIGNATURE_BYTES ||
    publicKey.length !== PUBLIC_KEY_BYTES ||
    hasSmallOrder(publicKey)
  ) {
    return false;
  }
  try {
    return cryptoVerify(null, digest, publicKeyObject(publicKey), signature);
  } catch {
    return false;
  }
}

export function signatureToString(signature: Uint8Array): string {
  if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_BYTES) {
    throw new SigningError(`a signature is ${SIGNATURE_BYTES} bytes`);
  }
  return Buffer.from(signature).toString('base64');
}

/** Undefined for anything but the canonical standard base64 of 64 bytes. */
export function signatureFromString(text: string): Uint8Array | undefined {
  return strictBase64Decode(text, SIGNATURE_BYTES);
}

export function digestHex(digest: Uint8Array): string {
  return Buffer.from(digest).toString('hex');
}

// ---- invitations ----------------------------------------------------------

export const INVITATION_PREFIX = 'crowdfl-invite:';
// Real tokens are ~330 characters; the cap keeps a pasted megabyte from being parsed.
const MAX_INVITATION_CHARS = 4096;
const TOKEN_ID = /^[A-Za-z0-9_-]{1,64}$/;

export class InvitationError extends UserError {}

export interface Invitation {
  token_id: string;
  /** "" = valid for any experiment. */
  experiment_id: string;
  expires_unix_ms: number;
  max_uses: number;
  /** The key that signed the token: a node can pin its aggregator from it. */
  aggregator_public_key: Uint8Array;
  signature: Uint8Array;
}

export interface InvitationOptions {
  experimentId?: string;
  expiresAt: Date | number;
  maxUses: number;
}

const INVITATION_FIELDS = [
  'token_id',
  'experiment_id',
  'expires_unix_ms',
  'max_uses',
  'aggregator_public_key',
  'signature',
] as const;

export function createInvitation(identity: Identity, o: InvitationOptions): string {
  const expires = o.expiresAt instanceof Date ? o.expiresAt.getTime() : o.expiresAt;
  if (!Number.isInteger(o.maxUses) || o.maxUses < 1 || o.maxUses > 0xffff_ffff) {
    throw new InvitationError(`maxUses must be an integer in 1..4294967295, got ${o.maxUses}`);
  }
  if (!Number.isSafeInteger(expires) || expires < 0) {
    throw new InvitationError(`expiresAt must be a valid time, got ${String(o.expiresAt)}`);
  }
  const fields: InvitationSigningInput = {
    token_id: randomBytes(16).toString('base64url'),
    experiment_id: o.experimentId ?? '',
    expires_unix_ms: expires,
    max_uses: o.maxUses,
  };
  const signature = sign(invitationDigest(fields), identity);
  const doc = {
    token_id: fields.token_id,
    experiment_id: fields.experiment_id,
    expires_unix_ms: fields.expires_unix_ms,
    max_uses: fields.max_uses,
    aggregator_public_key: Buffer.from(identity.publicKey).toString('base64'),
    signature: Buffer.from(signature).toString('base64'),
  };
  return INVITATION_PREFIX + Buffer.from(JSON.stringify(doc), 'utf8').toString('base64url');
}

/**
 * Checks the token's form and that the key it carries signed it. Anyone can
 * make a well-formed token with their own key, so an aggregator passes its own
 * key as `aggregatorPublicKey` (a node, which has nothing to compare against
 * yet, pins the key the token carries). Expiry and use counts are for the
 * aggregator to enforce.
 */
export function parseInvitation(text: string, options: { aggregatorPublicKey?: Uint8Array } = {}): Invitation {
  if (typeof text !== 'string') throw new InvitationError('an invitation is a string');
  const token = text.trim();
  if (!token.startsWith(INVITATION_PREFIX)) {
    throw new InvitationError(`not a crowdfl invitation: it should start with "${INVITATION_PREFIX}"`);
  }
  if (token.length > MAX_INVITATION_CHARS) throw new InvitationError('invitation is too long; was it pasted twice?');
  const body = token.slice(INVITATION_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(body)) {
    throw new InvitationError('invitation is damaged: it has characters that do not belong (was it cut or wrapped when copied?)');
  }
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    throw new InvitationError('invitation is damaged: it does not decode (was it cut short when copied?)');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new InvitationError('invitation is malformed');
  const o = doc as Record<string, unknown>;
  const unexpected = Object.keys(o).filter((k) => !(INVITATION_FIELDS as readonly string[]).includes(k));
  // Unsigned extra fields could be read as if they had been vouched for.
  if (unexpected.length > 0) throw new InvitationError(`invitation has unexpected fields: ${unexpected.join(', ')}`);
  if (typeof o.token_id !== 'string' || !TOKEN_ID.test(o.token_id)) throw new InvitationError('invitation token_id is malformed');
  if (typeof o.experiment_id !== 'string') throw new InvitationError('invitation experiment_id is malformed');
  if (typeof o.expires_unix_ms !== 'number' || !Number.isSafeInteger(o.expires_unix_ms) || o.expires_unix_ms < 0) {
    throw new InvitationError('invitation expires_unix_ms is malformed');
  }
  if (typeof o.max_uses !== 'number' || !Number.isInteger(o.max_uses) || o.max_uses < 1 || o.max_uses > 0xffff_ffff) {
    throw new InvitationError('invitation max_uses is malformed');
  }
  const key = typeof o.aggregator_public_key === 'string' ? strictBase64Decode(o.aggregator_public_key, PUBLIC_KEY_BYTES) : undefined;
  if (!key) throw new InvitationError('invitation aggregator_public_key is malformed');
  const signature = typeof o.signature === 'string' ? strictBase64Decode(o.signature, SIGNATURE_BYTES) : undefined;
  if (!signature) throw new InvitationError('invitation signature is malformed');
  const inv: Invitation = {
    token_id: o.token_id,
    experiment_id: o.experiment_id,
    expires_unix_ms: o.expires_unix_ms,
    max_uses: o.max_uses,
    aggregator_public_key: key,
    signature,
  };
  let digest: Uint8Array;
  try {
    digest = invitationDigest(inv);
  } catch (err) {
    throw new InvitationError(`invitation is malformed: ${(err as Error).message}`);
  }
  if (!verify(digest, signature, key)) {
    throw new InvitationError('invitation signature does not verify: the token was altered or damaged');
  }
  const expected = options.aggregatorPublicKey;
  if (expected !== undefined && !Buffer.from(key).equals(Buffer.from(expected))) {
    throw new InvitationError(
      `invitation was signed by key ${fingerprint(key)}, not by this aggregator (${fingerprint(expected)})`,
    );
  }
  return inv;
}

export function isExpired(inv: Pick<Invitation, 'expires_unix_ms'>, now: Date | number = Date.now()): boolean {
  return (now instanceof Date ? now.getTime() : now) >= inv.expires_unix_ms;
}
