// Ed25519 identities for nodes and aggregators. A node's identity is its key:
// its node id and the fingerprint people compare are both derived from the
// public key, so they cannot drift apart from what signs its updates.
//
// The key file holds the 32-byte seed (the secret from which both halves are
// derived) plus the public key, which is redundant on purpose: a file whose
// public key no longer matches its seed has been edited or corrupted, and
// using it would silently make the node someone else.
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import nacl from 'tweetnacl';
import { UserError } from '../user-error.js';

export interface Identity {
  readonly publicKey: Uint8Array; // 32 bytes
  readonly secretKey: Uint8Array; // 64 bytes, tweetnacl layout: seed || publicKey
  readonly seed: Uint8Array; // 32 bytes
}

export const PUBLIC_KEY_BYTES = 32;
export const SEED_BYTES = 32;
export const SECRET_KEY_BYTES = 64;
export const KEY_FILE_FORMAT = 'crowdfl-key/1';

// A key file is ~150 bytes; anything much larger is not one, and reading an
// arbitrary large file into memory to say so would be silly.
const MAX_KEY_FILE_BYTES = 64 * 1024;

export class KeyFileError extends UserError {}

export function identityFromSeed(seed: Uint8Array): Identity {
  if (!(seed instanceof Uint8Array) || seed.length !== SEED_BYTES) {
    throw new TypeError(`an Ed25519 seed is ${SEED_BYTES} bytes`);
  }
  const pair = nacl.sign.keyPair.fromSeed(seed);
  return { publicKey: pair.publicKey, secretKey: pair.secretKey, seed: Uint8Array.from(seed) };
}

export function generateIdentity(): Identity {
  return identityFromSeed(new Uint8Array(randomBytes(SEED_BYTES)));
}

/**
 * Decodes standard (padded) base64 and refuses anything that is not the one
 * canonical encoding of its bytes: Buffer.from skips invalid characters and
 * ignores trailing bits, so without the round-trip check several different
 * strings would name the same key or signature.
 */
export function strictBase64Decode(text: string, expectedBytes?: number): Uint8Array | undefined {
  if (typeof text !== 'string') return undefined;
  const bytes = Buffer.from(text, 'base64');
  if (bytes.toString('base64') !== text) return undefined;
  if (expectedBytes !== undefined && bytes.length !== expectedBytes) return undefined;
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
}

export function publicKeyToString(publicKey: Uint8Array): string {
  checkPublicKey(publicKey);
  return Buffer.from(publicKey).toString('base64');
}

export function publicKeyFromString(text: string): Uint8Array {
  const key = strictBase64Decode(typeof text === 'string' ? text.trim() : text, PUBLIC_KEY_BYTES);
  if (!key) throw new TypeError(`a public key is ${PUBLIC_KEY_BYTES} bytes in standard base64 (44 characters ending in "=")`);
  return key;
}

function keyHash(publicKey: Uint8Array): string {
  checkPublicKey(publicKey);
  return createHash('sha256').update(publicKey).digest('hex');
}

/** 64 bits of SHA-256(publicKey) as `ab12-cd34-ef56-7890`: short enough to read aloud and compare. */
export function fingerprint(publicKey: Uint8Array): string {
  return keyHash(publicKey).slice(0, 16).match(/.{4}/g)!.join('-');
}

/**
 * `n-` + 80 bits of SHA-256(publicKey). Forging a key whose id collides with a
 * given node's costs ~2^80 work; fits the aggregator's `[A-Za-z0-9._:-]{1,128}`.
 */
export function nodeIdFromPublicKey(publicKey: Uint8Array): string {
  return `n-${keyHash(publicKey).slice(0, 20)}`;
}

function checkPublicKey(publicKey: Uint8Array): void {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== PUBLIC_KEY_BYTES) {
    throw new TypeError(`an Ed25519 public key is ${PUBLIC_KEY_BYTES} bytes`);
  }
}

function keyFileText(identity: Identity): string {
  return (
    JSON.stringify({
      format: KEY_FILE_FORMAT,
      algorithm: 'ed25519',
      seed: Buffer.from(identity.seed).toString('base64'),
      public_key: Buffer.from(identity.publicKey).toString('base64'),
    }) + '\n'
  );
}

function parseKeyFile(path: string, text: string): Identity {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new KeyFileError(`key file ${path} is not JSON; it should look like {"format":"${KEY_FILE_FORMAT}",...}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new KeyFileError(`key file ${path} is not a JSON object`);
  }
  const o = doc as Record<string, unknown>;
  if (o.format !== KEY_FILE_FORMAT) {
    throw new KeyFileError(`key file ${path} has format ${JSON.stringify(o.format)}, expected "${KEY_FILE_FORMAT}"`);
  }
  if (o.algorithm !== 'ed25519') {
    throw new KeyFileError(`key file ${path} has algorithm ${JSON.stringify(o.algorithm)}, expected "ed25519"`);
  }
  const seed = typeof o.seed === 'string' ? strictBase64Decode(o.seed, SEED_BYTES) : undefined;
  if (!seed) throw new KeyFileError(`key file ${path}: "seed" must be ${SEED_BYTES} bytes in standard base64`);
  const stored = typeof o.public_key === 'string' ? strictBase64Decode(o.public_key, PUBLIC_KEY_BYTES) : undefined;
  if (!stored) {
    throw new KeyFileError(`key file ${path}: "public_key" must be ${PUBLIC_KEY_BYTES} bytes in standard base64`);
  }
  const identity = identityFromSeed(seed);
  if (!Buffer.from(identity.publicKey).equals(stored)) {
    throw new KeyFileError(
      `key file ${path} is damaged: its public_key does not belong to its seed (the file was edited or corrupted); ` +
        'restore it from a backup, or move it away to create a new identity',
    );
  }
  return identity;
}

function readKeyFile(path: string): Identity {
  const fd = openSync(path, 'r');
  try {
    // fstat on the open descriptor: the file checked is the file read.
    const st = fstatSync(fd);
    if (!st.isFile()) throw new KeyFileError(`key file ${path} is not a regular file`);
    // Windows has no Unix permission bits; its ACLs are out of reach here.
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      throw new KeyFileError(
        `key file ${path} has mode ${mode}, so other users can read the secret key; ` +
          `make it private with: chmod 600 ${shellQuote(path)}`,
      );
    }
    if (st.size > MAX_KEY_FILE_BYTES) throw new KeyFileError(`key file ${path} is ${st.size} bytes, too large to be a key file`);
    return parseKeyFile(path, readFileSync(fd, 'utf8'));
  } finally {
    closeSync(fd);
  }
}

function shellQuote(path: string): string {
  return /^[A-Za-z0-9_./~+-]+$/.test(path) ? path : `'${path.replace(/'/g, `'\\''`)}'`;
}

/** Writes the key without ever exposing a partial or world-readable file, and never replaces an existing one. */
function writeKeyFile(path: string, identity: Identity): 'written' | 'exists' {
  const dir = dirname(path);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    try {
      writeSync(fd, keyFileText(identity));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // link() fails if the target exists, unlike rename(): two processes
    // creating the same identity at once must not overwrite each other's key.
    try {
      linkSync(tmp, path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return 'exists';
      // Filesystems without hard links: fall back to the atomic (clobbering) rename.
      if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS') {
        renameSync(tmp, path);
        syncDir(dir);
        return 'written';
      }
      throw err;
    }
    syncDir(dir);
    return 'written';
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      // already renamed
    }
  }
}

function syncDir(dir: string): void {
  // Makes the new directory entry durable; not possible everywhere (Windows), and only a nicety.
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // best effort
  }
}

export interface LoadedIdentity {
  identity: Identity;
  created: boolean;
}

/**
 * Loads the identity at `path`. A missing file is an error unless `create` is
 * set (default false: a mistyped path must not silently become a new node).
 * Throws KeyFileError for a file others can read, a malformed file, or one
 * whose public key does not match its seed.
 */
export function loadOrCreateIdentity(path: string, options: { create?: boolean } = {}): LoadedIdentity {
  if (existsSync(path)) return { identity: readKeyFile(path), created: false };
  if (!options.create) throw new KeyFileError(`no key file at ${path}`);
  const identity = generateIdentity();
  if (writeKeyFile(path, identity) === 'exists') {
    // Another process created it between our check and our write: theirs wins.
    return { identity: readKeyFile(path), created: false };
  }
  return { identity, created: true };
}
