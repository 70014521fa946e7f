import { join } from 'node:path';
import type { Command } from 'commander';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { fingerprint, nodeIdFromPublicKey, publicKeyFromString } from '../core/signing/keys.js';
import { action, UsageError } from './errors.js';
import { nodeContribution } from '../aggregator/nodes/contribution.js';
import { formatTotals } from '../core/contribution-totals.js';
import { openRunStore, runOfDirectory } from '../lab/report.js';
import { resolveRun } from './runs.js';

/** Runs `fn` on the run's store: read-only unless `write` (a ban changes the registry). */
function withStore<T>(runsDir: string, run: string, fn: (store: RunStore) => T, write = false): T {
  const dir = resolveRun(runsDir, run);
  const { store, close } = write ? writableStore(dir) : openRunStore(dir);
  try {
    return fn(store);
  } finally {
    close();
  }
}

function writableStore(dir: string): { store: RunStore; close: () => void } {
  const { db, close } = openDatabase(join(dir, 'crowdfl.db'));
  return { store: new RunStore(db), close };
}

export function register(program: Command): void {
  const nodes = program.command('nodes').description("a run's node registry: keys, status, accepted and rejected updates, reputation; bans");
  nodes
    .command('list')
    .argument('<run>', 'run directory or its name under --runs-dir')
    .option('--runs-dir <dir>', 'where runs are', 'runs')
    .action(
      action((run: string, opts: { runsDir: string }) =>
        withStore(opts.runsDir, run, (store) => {
          // A node's standing is whether it may take part (admitted or banned); whether it is there now is
          // "last seen", and once the run is over no node is.
          const [runRow] = store.runRows();
          if (runRow && runRow.status !== 'running') {
            process.stdout.write(`run ${runRow.id} ${runRow.status}${runRow.finishedAt ? ` at ${new Date(runRow.finishedAt).toISOString()}` : ''}: no node takes part any more\n`);
          }
          process.stdout.write('node id                  fingerprint          standing accepted  rejected  reputation  last seen\n');
          for (const n of store.nodeRows()) {
            const fp = n.publicKey ? fingerprint(publicKeyFromString(n.publicKey)) : '-';
            const standing = n.status === 'active' ? 'admitted' : n.status;
            process.stdout.write(
              `${n.nodeId.padEnd(24)} ${fp.padEnd(20)} ${standing.padEnd(8)} ${String(n.accepted).padStart(8)}  ${String(n.rejected).padStart(8)}  ${n.reputation.toFixed(3).padStart(10)}  ` +
                `${new Date(n.lastSeen).toISOString()}${n.statusReason ? `  (${n.statusReason})` : ''}\n`,
            );
          }
        }),
      ),
    );
  nodes
    .command('show')
    .description("one node's contribution to a run, as the aggregator recorded it (the same totals `crowdfl node status` shows on the node)")
    .argument('<run>', 'run directory or its name under --runs-dir')
    .argument('<node>', 'the node id (n-...)')
    .option('--runs-dir <dir>', 'where runs are', 'runs')
    .action(
      action((run: string, nodeId: string, opts: { runsDir: string }) =>
        withStore(opts.runsDir, run, (store) => {
          const row = store.node(nodeId);
          if (!row) throw new UsageError(`no node ${nodeId} in this run; \`crowdfl nodes list ${run}\` lists them`);
          const runId = runOfDirectory(store, resolveRun(opts.runsDir, run)).id;
          process.stdout.write(`node ${nodeId} in run ${runId}: ${row.status === 'active' ? 'admitted' : row.status}${row.statusReason ? ` (${row.statusReason})` : ''}, reputation ${row.reputation.toFixed(3)}\n`);
          process.stdout.write(formatTotals(nodeContribution(store, runId, nodeId)));
        }),
      ),
    );
  nodes
    .command('ban')
    .description('refuse a node from now on (a running aggregator checks at every hello and upload)')
    .argument('<run>', 'run directory or its name under --runs-dir')
    .argument('<node>', "the node's public key (base64), or its node id if it has joined already")
    .requiredOption('--reason <text>', 'why; recorded and told to the node')
    .option('--runs-dir <dir>', 'where runs are', 'runs')
    .action(
      action((run: string, node: string, opts: { runsDir: string; reason: string }) =>
        withStore(opts.runsDir, run, (store) => {
          let nodeId: string;
          let key: string;
          if (node.startsWith('n-')) {
            const row = store.node(node);
            if (!row) throw new UsageError(`no node ${node} in this run; to ban a node that has not joined, give its public key`);
            nodeId = row.nodeId;
            key = row.publicKey;
          } else {
            let pk: Uint8Array;
            try {
              pk = publicKeyFromString(node);
            } catch {
              throw new UsageError(`${node} is neither a node id (n-...) nor a base64 Ed25519 public key`);
            }
            nodeId = nodeIdFromPublicKey(pk);
            key = node;
          }
          store.banNode(nodeId, key, opts.reason);
          process.stdout.write(`banned ${nodeId}: ${opts.reason}\n`);
        }, true),
      ),
    );
}
