// The transport: TLS with a deployment CA, mutual TLS, and no plaintext off
// loopback unless forced.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { generateIdentity } from '../core/signing/keys.js';
import { channelCredentials, createClientCertificate, createDeploymentCertificates, type ClientTlsFiles, type ServerTlsFiles } from '../core/tls.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { runCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';
import { joinAs } from './support/grpc.js';

async function helloOutcome(port: number, tls: ClientTlsFiles | undefined): Promise<string> {
  try {
    const { conn } = await joinAs(`127.0.0.1:${port}`, undefined, { credentials: channelCredentials(tls) });
    conn.close();
    return 'ok';
  } catch (err) {
    return `refused: ${(err as Error).message}`;
  }
}

async function serve(tls: ServerTlsFiles) {
  const experiment = tinyExperiment({ rounds: 1, selection: { nodes_per_round: 3, min_updates: 3, deadline_seconds: 30 } });
  const { test: testSet } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  return startAggregator({ experiment, runDir: tempDir('tls-run'), runId: 'tls', test: testSet, identity: generateIdentity(), tls });
}

test('nodes reach a TLS aggregator only through the deployment CA, and with mutual TLS only with a client certificate', async (t) => {
  const dir = tempDir('tls');
  createDeploymentCertificates(join(dir, 'certs'), ['localhost', '127.0.0.1']);
  createDeploymentCertificates(join(dir, 'other'), ['localhost', '127.0.0.1']);
  const certs = (f: string) => join(dir, 'certs', f);

  const agg = await serve({ cert: certs('server.crt'), key: certs('server.key') });
  try {
    t.is(await helloOutcome(agg.port, { ca: certs('ca.crt') }), 'ok');
    t.regex(await helloOutcome(agg.port, undefined), /refused/, 'plaintext client');
    t.regex(await helloOutcome(agg.port, { ca: join(dir, 'other', 'ca.crt') }), /refused/, 'certificate from another CA');
  } finally {
    await agg.stop();
  }

  createClientCertificate(join(dir, 'certs'), join(dir, 'node'), 'node-1');
  const mutual = await serve({ cert: certs('server.crt'), key: certs('server.key'), clientCa: certs('ca.crt') });
  try {
    t.regex(await helloOutcome(mutual.port, { ca: certs('ca.crt') }), /refused/, 'no client certificate');
    t.is(await helloOutcome(mutual.port, { ca: certs('ca.crt'), cert: join(dir, 'node', 'client.crt'), key: join(dir, 'node', 'client.key') }), 'ok');
  } finally {
    await mutual.stop();
  }
});

test('the aggregator refuses plaintext off loopback unless forced', async (t) => {
  const dir = tempDir('tls-cli');
  const file = join(dir, 'exp.json');
  writeFileSync(file, JSON.stringify(tinyExperiment()));
  const refused = await runCli(['aggregator', '--experiment', file, '--host', '0.0.0.0', '--port', '0', '--key', join(dir, 'key.json'), '--runs-dir', join(dir, 'runs')]);
  t.is(refused.code, 2);
  t.regex(refused.stderr, /refusing plaintext gRPC on 0\.0\.0\.0.*crowdfl certs create/s);
  const certs = await runCli(['certs', 'create', '--out', join(dir, 'certs'), '--host', 'aggregator.example.org']);
  t.is(certs.code, 0, certs.stderr);
  t.regex(certs.stdout, /server certificate valid for: aggregator\.example\.org/);
});

test('a node stops with the flag and the file when TLS cannot work, instead of retrying as if the aggregator were down', async (t) => {
  const dir = tempDir('tls-node');
  createDeploymentCertificates(join(dir, 'certs'), ['localhost', '127.0.0.1']);
  createDeploymentCertificates(join(dir, 'other'), ['localhost', '127.0.0.1']);
  const experiment = tinyExperiment();
  const { partitions } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  writeLocalData(join(dir, 'data'), partitions[0]!);
  const node = (port: number, ...flags: string[]) =>
    runCli(['node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, 'data'), '--state-dir', join(dir, `state-${flags.length}`), ...flags]);
  const tlsAggregator = await serve({ cert: join(dir, 'certs', 'server.crt'), key: join(dir, 'certs', 'server.key') });
  try {
    const plaintext = await node(tlsAggregator.port);
    t.is(plaintext.code, 2, plaintext.stderr);
    t.regex(plaintext.stderr, /the aggregator at 127\.0\.0\.1:\d+ speaks TLS: pass --tls-ca FILE/);
    t.notRegex(plaintext.stderr, /retrying in/);
    const wrongCa = join(dir, 'other', 'ca.crt');
    const untrusted = await node(tlsAggregator.port, '--tls-ca', wrongCa);
    t.is(untrusted.code, 2, untrusted.stderr);
    t.true(untrusted.stderr.includes(`presents a TLS certificate that --tls-ca ${wrongCa} does not verify (certificate signature failure)`), untrusted.stderr);
    t.notRegex(untrusted.stderr, /DEP0123|DeprecationWarning/, 'no warning about a TLS server name that is an IP address');
  } finally {
    await tlsAggregator.stop();
  }
  const plain = await startAggregator({ experiment, runDir: tempDir('tls-plain-run'), runId: 'plain', test: (await federatedData(experiment.dataset, experiment.nodes, experiment.seed)).test, identity: generateIdentity() });
  try {
    const notTls = await node(plain.port, '--tls-ca', join(dir, 'certs', 'ca.crt'));
    t.is(notTls.code, 2, notTls.stderr);
    t.regex(notTls.stderr, /does not speak TLS \(its answer is not a TLS handshake\): drop --tls-ca/);
  } finally {
    await plain.stop();
  }
});
