import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { fingerprint, loadOrCreateIdentity, nodeIdFromPublicKey, publicKeyFromString, publicKeyToString } from '../core/signing/keys.js';
import { createInvitation, parseInvitation } from '../core/signing/invitations.js';
import { action, UsageError } from './errors.js';

export const DEFAULT_NODE_KEY = join(homedir(), '.crowdfl', 'node', 'key.json');
export const DEFAULT_AGGREGATOR_KEY = join(homedir(), '.crowdfl', 'aggregator', 'key.json');

/** An aggregator key given as base64, as a key file, or inside an invitation token. */
export function readPinnedKey(value: string): Uint8Array {
  if (value.startsWith('crowdfl-invite:')) return parseInvitation(value).aggregator_public_key;
  try {
    return publicKeyFromString(value);
  } catch {
    if (!existsSync(value)) throw new UsageError(`--aggregator-key ${value} is neither a base64 Ed25519 public key nor a file`);
    const text = readFileSync(value, 'utf8').trim();
    try {
      const json = JSON.parse(text) as { public_key?: string };
      if (json.public_key) return publicKeyFromString(json.public_key);
    } catch {
      // not JSON: a bare base64 key in a file
    }
    try {
      return publicKeyFromString(text);
    } catch {
      throw new UsageError(`${value} holds no Ed25519 public key (expected base64, or a key file with "public_key")`);
    }
  }
}

function parseDuration(text: string): number {
  const m = /^(\d+)(m|h|d)$/.exec(text);
  if (!m) throw new UsageError(`--expires ${text}: use a number and m, h or d, e.g. 90m, 12h, 7d`);
  return Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd'];
}

export function register(program: Command): void {
  const keys = program.command('keys').description('Ed25519 identities of nodes and aggregators');
  keys
    .command('show')
    .description("print the public key and its fingerprint, and for a node's key the node id derived from it (creating the key on first use)")
    .option('--key <file>', `key file (default: the node's, ${DEFAULT_NODE_KEY}; with --aggregator the aggregator's, ${DEFAULT_AGGREGATOR_KEY})`)
    .option('--aggregator', "it is an aggregator's key: no node id is shown, since aggregators have none")
    .addHelpText('after', '\nExamples:\n  crowdfl keys show                      # this machine\'s node key\n  crowdfl keys show --aggregator         # the key nodes pin (--aggregator-key)\n')
    .action(
      action((opts: { key?: string; aggregator?: boolean }) => {
        const file = opts.key ?? (opts.aggregator ? DEFAULT_AGGREGATOR_KEY : DEFAULT_NODE_KEY);
        // The default aggregator key file is an aggregator's key whether or not the flag says so.
        const aggregator = opts.aggregator === true || file === DEFAULT_AGGREGATOR_KEY;
        const { identity, created } = loadOrCreateIdentity(file, { create: true });
        const out = process.stdout;
        if (created) out.write(`created ${file} (mode 0600)\n`);
        out.write(`key of      ${aggregator ? 'an aggregator' : 'a node'}\n`);
        out.write(`public key  ${publicKeyToString(identity.publicKey)}\n`);
        out.write(`fingerprint ${fingerprint(identity.publicKey)}\n`);
        if (!aggregator) out.write(`node id     ${nodeIdFromPublicKey(identity.publicKey)}\n`);
      }),
    );

  program
    .command('invite')
    .description("create an invitation token signed by the aggregator's key; a node joins with --invitation TOKEN")
    .option('--key <file>', "the aggregator's key file", DEFAULT_AGGREGATOR_KEY)
    .option('--uses <n>', 'how many nodes may join with it', (v) => Number(v), 1)
    .option('--expires <duration>', 'valid for, e.g. 90m, 12h, 7d', '7d')
    .option('--run <run-id>', 'valid only for this run (its id, as the aggregator printed it; not an experiment file)')
    // Before --run it was called --experiment, though it takes a run id like --run everywhere else.
    .addOption(new Option('--experiment <run-id>', 'the old name of --run').hideHelp())
    .action(
      action((opts: { key: string; uses: number; expires: string; run?: string; experiment?: string }) => {
        if (!Number.isInteger(opts.uses) || opts.uses < 1) throw new UsageError('--uses takes a whole number of at least 1');
        if (opts.run !== undefined && opts.experiment !== undefined) throw new UsageError('give --run only (--experiment is its old name)');
        if (opts.experiment?.endsWith('.json')) {
          throw new UsageError(`--experiment ${opts.experiment}: an invitation is for a run, not an experiment file; give the run id with --run`);
        }
        const runId = opts.run ?? opts.experiment;
        const { identity } = loadOrCreateIdentity(opts.key, { create: true });
        const token = createInvitation(identity, {
          experimentId: runId,
          expiresAt: Date.now() + parseDuration(opts.expires),
          maxUses: opts.uses,
        });
        process.stdout.write(`${token}\n`);
      }),
    );
}
