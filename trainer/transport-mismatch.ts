// A trust or protocol mismatch between node and aggregator is permanent: retrying cannot fix a wrong
// CA file or a missing --tls-ca, so the node stops and names the flag and the file instead of logging
// "aggregator unreachable; retrying" forever.
import { isIP } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { ClientTlsFiles } from '../core/tls.js';
import { UserError } from '../core/user-error.js';

export class TransportMismatch extends UserError {}

/** The host and port of "HOST:PORT" (IPv6 in brackets). */
function hostPort(address: string): { host: string; port: number } {
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(address);
  return { host: m?.[1] ?? address, port: Number(m?.[2] ?? 0) };
}

/** Whether a TLS handshake (certificate not checked) succeeds at `address`: it speaks TLS. */
export function speaksTls(address: string, timeoutMs = 5000): Promise<boolean> {
  const { host, port } = hostPort(address);
  return new Promise((resolve) => {
    // No servername for an IP address (RFC 6066 allows none; Node warns otherwise).
    const socket = tlsConnect({ host, port, rejectUnauthorized: false, ALPNProtocols: ['h2'], ...(isIP(host) ? {} : { servername: host }) });
    const done = (yes: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(yes);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('secureConnect', () => done(true));
    socket.once('error', () => done(false));
  });
}

const UNTRUSTED = /certificate|self[- ]signed|unable to (get|verify)|CERT_|Hostname\/IP does not match|altnames/i;
const NOT_TLS = /wrong version number|packet length too long|http request|unknown protocol/i;

/**
 * The message to stop with when a failed call shows a trust or protocol mismatch, or undefined when the
 * failure may pass (the aggregator down, the network). May probe the aggregator with a TLS handshake.
 */
export async function transportMismatch(err: unknown, aggregator: string, tls: ClientTlsFiles | undefined): Promise<string | undefined> {
  const details = String((err as { details?: string }).details ?? (err as Error)?.message ?? '');
  if (tls) {
    if (UNTRUSTED.test(details)) {
      const reason = /Last error: (?:Error: )?(.*?)(?:\. Resolution note.*)?$/s.exec(details)?.[1] ?? details;
      return (
        `the aggregator at ${aggregator} presents a TLS certificate that --tls-ca ${tls.ca ?? '(system CAs)'} does not verify (${reason.trim()}). ` +
        "Check that the file is this deployment's CA (certs/ca.crt of `crowdfl certs`) and that the certificate names the host you gave"
      );
    }
    if (NOT_TLS.test(details)) {
      return `the aggregator at ${aggregator} does not speak TLS (its answer is not a TLS handshake): drop --tls-ca${tls.cert ? ' and --tls-cert/--tls-key' : ''}, or ask its operator for its TLS address`;
    }
    return undefined;
  }
  // Plaintext against a TLS aggregator fails as "Failed to connect", like a network failure: probe.
  if (/Failed to connect/i.test(details) && !/ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT/.test(details) && (await speaksTls(aggregator))) {
    return `the aggregator at ${aggregator} speaks TLS: pass --tls-ca FILE, its deployment's CA (certs/ca.crt of \`crowdfl certs\`)`;
  }
  return undefined;
}
