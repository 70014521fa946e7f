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
//
// This file is that specification in code (the layouts and digests); the
// Ed25519 signing and verification are in ed25519.ts, invitations in invitations.ts.
import { createHash } from 'node:crypto';
import { PUBLIC_KEY_BYTES, strictBase64Decode } from './keys.js';

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
