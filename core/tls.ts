// TLS for the gRPC transport: a deployment CA, the aggregator's server
// certificate and, for mutual TLS, node client certificates. Keys are made by
// node:crypto (fast, native); node-forge only writes the X.509 structures.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import forge from 'node-forge';
import { UserError } from './user-error.js';

export class TlsError extends UserError {}

interface KeyAndCert {
  keyPem: string;
  certPem: string;
}

function newKeyPair(): { privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey; pem: string } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const forgeKey = forge.pki.privateKeyFromPem(pem);
  return { privateKey: forgeKey, publicKey: forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e), pem };
}

function baseCert(publicKey: forge.pki.rsa.PublicKey, commonName: string, days: number): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  // Positive serial: a leading 0 bit, as X.509 requires.
  cert.serialNumber = `01${randomBytes(15).toString('hex')}`;
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + days * 86_400_000);
  cert.setSubject([{ name: 'commonName', value: commonName }, { name: 'organizationName', value: 'crowdfl deployment' }]);
  return cert;
}

export function createCa(commonName = 'crowdfl deployment CA', days = 3650): KeyAndCert {
  const keys = newKeyPair();
  const cert = baseCert(keys.publicKey, commonName, days);
  cert.setIssuer(cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { keyPem: keys.pem, certPem: forge.pki.certificateToPem(cert) };
}

/** A certificate signed by the CA: for the aggregator (`server`, with its host names) or a node (`client`). */
export function issueCertificate(
  ca: KeyAndCert,
  o: { commonName: string; kind: 'server' | 'client'; hosts?: readonly string[]; days?: number },
): KeyAndCert {
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem);
  const keys = newKeyPair();
  const cert = baseCert(keys.publicKey, o.commonName, o.days ?? 825);
  cert.setIssuer(caCert.subject.attributes);
  const extensions: object[] = [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: o.kind === 'server', clientAuth: o.kind === 'client' },
  ];
  if (o.kind === 'server') {
    const hosts = o.hosts?.length ? o.hosts : ['localhost', '127.0.0.1'];
    extensions.push({
      name: 'subjectAltName',
      altNames: hosts.map((h) => (isIP(h) ? { type: 7, ip: h } : { type: 2, value: h })),
    });
  }
  cert.setExtensions(extensions);
  cert.sign(caKey, forge.md.sha256.create());
  return { keyPem: keys.pem, certPem: forge.pki.certificateToPem(cert) };
}

function writePair(dir: string, name: string, pair: KeyAndCert): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, `${name}.crt`), pair.certPem);
  writeFileSync(join(dir, `${name}.key`), pair.keyPem, { mode: 0o600 });
  chmodSync(join(dir, `${name}.key`), 0o600);
}

/** `crowdfl certs create`: a CA and the aggregator's certificate in `dir`. */
export function createDeploymentCertificates(dir: string, hosts: readonly string[]): string[] {
  const ca = createCa();
  writePair(dir, 'ca', ca);
  writePair(dir, 'server', issueCertificate(ca, { commonName: hosts[0] ?? 'localhost', kind: 'server', hosts }));
  return ['ca.crt', 'ca.key', 'server.crt', 'server.key'].map((f) => join(dir, f));
}

/** `crowdfl certs client`: a node certificate signed by the deployment CA in `caDir`, for mutual TLS. */
export function createClientCertificate(caDir: string, outDir: string, name: string): string[] {
  const ca = { certPem: read(join(caDir, 'ca.crt')), keyPem: read(join(caDir, 'ca.key')) };
  writePair(outDir, 'client', issueCertificate(ca, { commonName: name, kind: 'client' }));
  writeFileSync(join(outDir, 'ca.crt'), ca.certPem);
  return ['client.crt', 'client.key', 'ca.crt'].map((f) => join(outDir, f));
}

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new TlsError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; create it with \`crowdfl certs create\``);
  }
}

export interface ServerTlsFiles {
  cert: string;
  key: string;
  /** With a client CA, nodes must present a certificate it signed (mutual TLS). */
  clientCa?: string;
}

export function serverCredentials(files: ServerTlsFiles | undefined): grpc.ServerCredentials {
  if (!files) return grpc.ServerCredentials.createInsecure();
  const clientCa = files.clientCa ? Buffer.from(read(files.clientCa)) : null;
  return grpc.ServerCredentials.createSsl(
    clientCa,
    [{ cert_chain: Buffer.from(read(files.cert)), private_key: Buffer.from(read(files.key)) }],
    clientCa !== null,
  );
}

export interface ClientTlsFiles {
  ca: string;
  cert?: string;
  key?: string;
}

export function channelCredentials(files: ClientTlsFiles | undefined): grpc.ChannelCredentials {
  if (!files) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(
    Buffer.from(read(files.ca)),
    files.key ? Buffer.from(read(files.key)) : null,
    files.cert ? Buffer.from(read(files.cert)) : null,
  );
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/;

export function isLoopback(host: string): boolean {
  return LOOPBACK.test(host);
}
