import type { Command } from 'commander';
import { createClientCertificate, createDeploymentCertificates } from '../core/tls.js';
import { action } from './errors.js';

export function register(program: Command): void {
  const certs = program.command('certs').description('TLS certificates for a deployment: a CA, the aggregator, and nodes (mutual TLS)');
  certs
    .command('create')
    .description("create a deployment CA and the aggregator's server certificate")
    .requiredOption('--out <dir>', 'directory for ca.crt, ca.key, server.crt, server.key (keys mode 0600)')
    .option('--host <name>', 'a DNS name or IP nodes use to reach the aggregator (repeat for several)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .addHelpText('after', '\nThen: crowdfl aggregator ... --tls-cert DIR/server.crt --tls-key DIR/server.key\nand nodes: crowdfl node ... --tls-ca DIR/ca.crt   (give nodes ca.crt only; keep ca.key private)')
    .action(
      action((opts: { out: string; host: string[] }) => {
        const hosts = opts.host.length ? opts.host : ['localhost', '127.0.0.1'];
        for (const f of createDeploymentCertificates(opts.out, hosts)) process.stdout.write(`${f}\n`);
        process.stdout.write(`server certificate valid for: ${hosts.join(', ')}\n`);
      }),
    );
  certs
    .command('client')
    .description('create a node certificate signed by the deployment CA, for an aggregator run with --tls-client-ca')
    .requiredOption('--ca-dir <dir>', 'the directory made by `certs create` (holds ca.crt and ca.key)')
    .requiredOption('--out <dir>', 'directory for client.crt, client.key and ca.crt')
    .requiredOption('--name <name>', 'a name for the node, written into the certificate')
    .action(
      action((opts: { caDir: string; out: string; name: string }) => {
        for (const f of createClientCertificate(opts.caDir, opts.out, opts.name)) process.stdout.write(`${f}\n`);
      }),
    );
}
