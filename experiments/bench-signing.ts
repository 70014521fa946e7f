// `npm run bench:signing`: what signatures cost per update, against the time
// the same update takes to cross loopback gRPC to another process, and what
// verifying a round of 100 updates costs the aggregator.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { generateIdentity } from '../core/keys.js';
import { sign, updateDigest, verify } from '../core/signing.js';
import { chunks, float32ToBytes, sha256Hex } from '../core/tensor-codec.js';

const SIZES = [
  { model: '2NN', params: 199_210 },
  { model: 'CNN', params: 1_663_370 },
];
const SERVICE = {
  Upload: {
    path: '/bench.Sink/Upload',
    requestStream: true,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
} satisfies grpc.ServiceDefinition;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function time(fn: () => void, repeats: number): number {
  const ms: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

if (process.argv[2] === '--serve') {
  // The receiving side, in its own process like a real aggregator.
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 2 << 20 });
  server.addService(SERVICE, {
    Upload: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      let n = 0;
      call.on('data', (b: Buffer) => (n += b.length));
      call.on('end', () => cb(null, Buffer.from(String(n))));
    },
  });
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (_e, port) => process.send!(port));
} else {
  const child = fork(fileURLToPath(import.meta.url), ['--serve']);
  const port = await new Promise<number>((r) => child.once('message', (p) => r(p as number)));
  const Client = grpc.makeGenericClientConstructor(SERVICE, 'Sink');
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    Upload: (cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => grpc.ClientWritableStream<Buffer>;
  };
  const send = (bytes: Uint8Array) =>
    new Promise<void>((resolve, reject) => {
      const call = client.Upload((e) => (e ? reject(e) : resolve()));
      for (const c of chunks(bytes)) call.write(Buffer.from(c.buffer, c.byteOffset, c.byteLength));
      call.end();
    });
  const node = generateIdentity();
  const metrics = { loss: 0.3, accuracy: 0.9, train_seconds: 2, examples_per_second: 3000, epochs_completed: 1, partial: false };
  const lines: string[] = [];
  let hash2nn = 0;
  for (const { model, params } of SIZES) {
    const bytes = float32ToBytes(new Float32Array(params).map(() => Math.random() - 0.5));
    const fields = (sha: string) => ({
      experiment_id: 'bench', round: 1, task_id: 't', base_model_sha256: sha, update_sha256: sha,
      num_examples: 600, metrics, node_public_key: node.publicKey,
    });
    const signMs = time(() => void sign(updateDigest(fields(sha256Hex(bytes))), node), 15);
    const signature = sign(updateDigest(fields(sha256Hex(bytes))), node);
    const verifyMs = time(() => void verify(updateDigest(fields(sha256Hex(bytes))), signature, node.publicKey), 15);
    const hashMs = time(() => void sha256Hex(bytes), 15);
    for (let i = 0; i < 3; i++) await send(bytes);
    const transfer: number[] = [];
    for (let i = 0; i < 9; i++) {
      const t0 = performance.now();
      await send(bytes);
      transfer.push(performance.now() - t0);
    }
    const transferMs = median(transfer);
    const fraction = (signMs + verifyMs) / transferMs;
    if (model === '2NN') hash2nn = hashMs;
    lines.push(
      `${model} update (${(bytes.byteLength / 1e6).toFixed(2)} MB): node hash+sign ${signMs.toFixed(2)} ms, aggregator hash+verify ${verifyMs.toFixed(2)} ms ` +
        `(SHA-256 alone ${hashMs.toFixed(2)} ms), loopback gRPC transfer ${transferMs.toFixed(1)} ms → ${(100 * fraction).toFixed(1)}% of the transfer ` +
        `(target < 5%: ${fraction < 0.05 ? 'MET' : 'MISSED'})`,
    );
  }
  // 100 signatures as one round's verification (the hash of each update's bytes is also taken once).
  const keys = Array.from({ length: 100 }, () => generateIdentity());
  const digests = keys.map((_, i) => updateDigest({ experiment_id: 'bench', round: 1, task_id: `t${i}`, base_model_sha256: 'a'.repeat(64), update_sha256: 'b'.repeat(64), num_examples: 600, metrics, node_public_key: keys[i]!.publicKey }));
  const sigs = digests.map((d, i) => sign(d, keys[i]!));
  const t0 = performance.now();
  digests.forEach((d, i) => verify(d, sigs[i]!, keys[i]!.publicKey));
  const verify100 = performance.now() - t0;
  const roundSeconds = Number(process.env.ROUND_SECONDS ?? 12.2);
  const with2nnHashes = verify100 + 100 * hash2nn;
  lines.push(
    `100 updates per round: signature checks ${verify100.toFixed(1)} ms (+ SHA-256 of 100 2NN updates: ${with2nnHashes.toFixed(0)} ms in all) ` +
      `= ${((100 * with2nnHashes) / (roundSeconds * 1000)).toFixed(2)}% of a ${roundSeconds} s round (default.json's measured round; target < 1%: ` +
      `${with2nnHashes < roundSeconds * 10 ? 'MET' : 'MISSED'})`,
  );
  process.stdout.write(lines.join('\n') + '\n');
  client.close();
  child.kill();
}
