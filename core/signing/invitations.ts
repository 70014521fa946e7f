// Invitations: a token the aggregator signs (layout "crowdfl/invite/v1" in
// layouts.ts) that lets its holder join a closed aggregator, and pins the
// aggregator's key on the node that uses it.
import { randomBytes } from 'node:crypto';
import { fingerprint, PUBLIC_KEY_BYTES, strictBase64Decode, type Identity } from './keys.js';
import { UserError } from '../user-error.js';
import { sign, verify } from './ed25519.js';
import { invitationDigest, SIGNATURE_BYTES, type InvitationSigningInput } from './layouts.js';

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
