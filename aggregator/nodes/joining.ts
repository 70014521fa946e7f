// Who may join: anyone (open), the holders of listed keys (allowlist), or the
// holders of an invitation this aggregator signed. A hello must also prove
// the node holds the secret key of the public key it names.
import { status } from '@grpc/grpc-js';
import type { Identity } from '../../core/signing/keys.js';
import { fingerprint, nodeIdFromPublicKey, publicKeyToString } from '../../core/signing/keys.js';
import { InvitationError, isExpired, parseInvitation } from '../../core/signing/invitations.js';
import { hasSmallOrder, verify } from '../../core/signing/ed25519.js';
import { HELLO_CHALLENGE_BYTES, helloDigest } from '../../core/signing/layouts.js';
import type { HelloRequest__Output } from '../../proto/generated/crowdfl/v1/HelloRequest.js';
import { NO_CHALLENGE, type HelloChallenges } from './hello-challenges.js';
import { echo, RpcError } from '../rpc-error.js';
import type { RunStore } from '../store/run-store.js';

export type AdmissionPolicy =
  | { mode: 'open' }
  | { mode: 'allowlist'; publicKeys: ReadonlySet<string> }
  | { mode: 'invitation' };

export const MAX_CLOCK_SKEW_MS = 5 * 60_000;

const unauthenticated = (msg: string) => new RpcError(status.UNAUTHENTICATED, msg);
const denied = (msg: string) => new RpcError(status.PERMISSION_DENIED, msg);

/** Checks a hello's identity proof (signed over a fresh challenge) and the admission policy; returns the node's id and key. */
export function admit(
  req: HelloRequest__Output,
  policy: AdmissionPolicy,
  aggregator: Identity,
  store: RunStore,
  experimentId: string,
  challenges: HelloChallenges,
  now = Date.now(),
): { nodeId: string; publicKey: Uint8Array } {
  const publicKey = new Uint8Array(req.node_public_key ?? []);
  if (publicKey.length !== 32) {
    throw unauthenticated('hello carries no 32-byte Ed25519 node_public_key; upgrade the node to a crowdfl that signs its hello');
  }
  if (hasSmallOrder(publicKey)) throw unauthenticated('node_public_key is a small-order point, which proves nothing');
  const nodeId = nodeIdFromPublicKey(publicKey);
  if (req.node_id && req.node_id !== nodeId) {
    throw new RpcError(status.INVALID_ARGUMENT, `node_id ${echo(req.node_id)} is not the id of this key (${nodeId})`);
  }
  if (!(Math.abs(now - req.timestamp_ms) <= MAX_CLOCK_SKEW_MS)) {
    throw unauthenticated(`hello timestamp is ${Math.round((req.timestamp_ms - now) / 1000)} s off this aggregator's clock; fix the node's clock`);
  }
  const signature = new Uint8Array(req.hello_signature ?? []);
  const challenge = new Uint8Array(req.challenge ?? []);
  if (challenge.length !== HELLO_CHALLENGE_BYTES) throw unauthenticated(NO_CHALLENGE);
  // A node that pinned this aggregator signs its key in; a first-time node signs none.
  const proven = [aggregator.publicKey, new Uint8Array(0)].some((pinned) =>
    verify(helloDigest({ node_public_key: publicKey, aggregator_public_key: pinned, timestamp_ms: req.timestamp_ms, challenge }), signature, publicKey),
  );
  if (!proven) {
    throw unauthenticated(
      `hello_signature does not verify under node_public_key for this aggregator (key ${fingerprint(aggregator.publicKey)}); ` +
        'if the node pinned a different aggregator key, this is not the aggregator it trusts',
    );
  }
  // Spent only by a hello that proves its key, so nobody can burn a node's challenge with a forged hello.
  const fresh = challenges.redeem(challenge);
  if (!fresh.ok) throw unauthenticated(fresh.reason);

  const known = store.node(nodeId);
  if (known?.status === 'banned') throw denied(`node ${nodeId} is banned: ${known.statusReason}`);
  switch (policy.mode) {
    case 'open':
      break;
    case 'allowlist':
      if (!policy.publicKeys.has(publicKeyToString(publicKey))) {
        throw denied(`node ${nodeId} (key ${publicKeyToString(publicKey)}) is not on this aggregator's allowlist`);
      }
      break;
    case 'invitation': {
      if (known) break; // admitted before, by an invitation then
      if (!req.invitation) throw denied('this aggregator admits new nodes by invitation only; start the node with --invitation TOKEN');
      let inv;
      try {
        inv = parseInvitation(req.invitation, { aggregatorPublicKey: aggregator.publicKey });
      } catch (err) {
        throw denied(`invitation refused: ${(err as InvitationError).message}`);
      }
      if (inv.experiment_id && inv.experiment_id !== experimentId) {
        throw denied(`invitation is for experiment ${inv.experiment_id}, not ${experimentId}`);
      }
      if (isExpired(inv, now)) throw denied(`invitation expired at ${new Date(inv.expires_unix_ms).toISOString()}`);
      if (!store.useInvitation(inv.token_id, inv.max_uses, inv.expires_unix_ms)) {
        throw denied(`invitation ${inv.token_id} has been used ${inv.max_uses} time(s) already`);
      }
      break;
    }
  }
  return { nodeId, publicKey };
}
