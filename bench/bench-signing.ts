// `npm run bench:signing`: what signatures cost per update, against the time
// the same update takes to cross loopback gRPC to another process, and what
// verifying a round of 100 updates costs the aggregator.
import { fork } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { generateIdentity } from '../core/signing/keys.js';
import { sign, verify } from '../core/signing/ed25519.js';
import { updateDigest } from '../core/signing/layouts.js';
import { chunks, float32ToBytes, sha256Hex } from '../core/tensor-codec.js';

const SIZES = [
  { model: '2NN', params: 199_210 },
  { model: 'CNN', params: 1_663_370 },
];
const rawMethod = (path: string) => ({
  path,
  requestStream: true,
  responseStream: false,
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
});
// Upload: bytes only. SealedUpload: as SubmitUpdate does it: a first message
// saying how many data chunks follow, the chunks (hashed by both ends as they
// pass), then a seal (32-byte public key, 64-byte signature) the receiver
// verifies over the update digest rebuilt with the hash it computed.
const SERVICE = {
  Upload: rawMethod('/bench.Sink/Upload'),
  SealedUpload: rawMethod('/bench.Sink/SealedUpload'),
} satisfies grpc.ServiceDefinition;

const METRICS = { loss: 0.3, accuracy: 0.9, train_seconds: 2, examples_per_second: 3000, epochs_completed: 1, partial: false };
function benchFields(sha: string, publicKey: Uint8Array) {
  return {
    experiment_id: 'bench', round: 1, task_id: 't', base_model_sha256: 'a'.repeat(64), update_sha256: sha,
    num_examples: 600, metrics: METRICS, node_public_key: publicKey,
  };
}

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
    SealedUpload: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      let expected = -1;
      let seen = 0;
      const hash = createHash('sha256');
      let ok = false;
      call.on('data', (b: Buffer) => {
        if (expected < 0) expected = b.readUInt32LE(0);
        else if (seen++ < expected) hash.update(b);
        else {
          const sha = hash.digest('hex');
          ok = verify(updateDigest(benchFields(sha, new Uint8Array(b.subarray(0, 32)))), new Uint8Array(b.subarray(32, 96)), new Uint8Array(b.subarray(0, 32)));
        }
      });
      call.on('end', () => cb(ok ? null : { code: grpc.status.UNAUTHENTICATED, details: 'bad seal' }, Buffer.from('ok')));
    },
  });
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (_e, port) => process.send!(port));
} else {
  const child = fork(fileURLToPath(import.meta.url), ['--serve']);
  const port = await new Promise<number>((r) => child.once('message', (p) => r(p as number)));
  const Client = grpc.makeGenericClientConstructor(SERVICE, 'Sink');
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client &
    Record<'Upload' | 'SealedUpload', (cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => grpc.ClientWritableStream<Buffer>>;
  const node = generateIdentity();
  const stream = (method: 'Upload' | 'SealedUpload', bytes: Uint8Array, sealed: boolean) =>
    new Promise<void>((resolve, reject) => {
      const call = client[method]((e) => (e ? reject(e) : resolve()));
      const parts = [...chunks(bytes)];
      if (sealed) call.write(Buffer.from(Uint32Array.of(parts.length).buffer));
      const hash = sealed ? createHash('sha256') : undefined;
      for (const c of parts) {
        hash?.update(c);
        call.write(Buffer.from(c.buffer, c.byteOffset, c.byteLength));
      }
      if (hash) {
        const signature = sign(updateDigest(benchFields(hash.digest('hex'), node.publicKey)), node);
        call.write(Buffer.concat([node.publicKey, signature]));
      }
      call.end();
    });
  const lines: string[] = [];
  let hash2nn = 0;
  for (const { model, params } of SIZES) {
    const bytes = float32ToBytes(new Float32Array(params).map(() => Math.random() - 0.5));
    // CPU time of the work signing adds, each on its own: hashing the bytes (once per side),
    // building and signing the digest (node), rebuilding and verifying it (aggregator).
    const hashMs = time(() => void sha256Hex(bytes), 15);
    const signature = sign(updateDigest(benchFields(sha256Hex(bytes), node.publicKey)), node);
    const signMs = time(() => void sign(updateDigest(benchFields('c'.repeat(64), node.publicKey)), node), 15);
    const verifyMs = time(() => void verify(updateDigest(benchFields(sha256Hex(bytes), node.publicKey)), signature, node.publicKey), 15) - hashMs;
    for (let i = 0; i < 3; i++) {
      await stream('Upload', bytes, false);
      await stream('SealedUpload', bytes, true);
    }
    // Interleaved, so drift in the machine's load hits both alike.
    const plain: number[] = [];
    const sealed: number[] = [];
    for (let i = 0; i < 15; i++) {
      let t0 = performance.now();
      await stream('Upload', bytes, false);
      plain.push(performance.now() - t0);
      t0 = performance.now();
      await stream('SealedUpload', bytes, true);
      sealed.push(performance.now() - t0);
    }
    const plainMs = median(plain);
    const sealedMs = median(sealed);
    const cpuMs = 2 * hashMs + signMs + verifyMs;
    const added = (sealedMs - plainMs) / plainMs;
    if (model === '2NN') hash2nn = hashMs;
    lines.push(
      `${model} update (${(bytes.byteLength / 1e6).toFixed(2)} MB), loopback gRPC to another process: unsigned ${plainMs.toFixed(1)} ms, ` +
        `hashed while streaming + signed + verified ${sealedMs.toFixed(1)} ms → signing adds ${(100 * added).toFixed(1)}% to the transfer ` +
        `(target < 5%: ${added < 0.05 ? 'MET' : 'MISSED'})`,
      `    CPU work it adds, summed over both ends: SHA-256 ${hashMs.toFixed(2)} ms × 2, digest+sign ${signMs.toFixed(3)} ms, digest+verify ${verifyMs.toFixed(3)} ms ` +
        `= ${cpuMs.toFixed(2)} ms, ${((100 * cpuMs) / plainMs).toFixed(1)}% of the unsigned loopback transfer; ` +
        `over a 100 Mbit/s uplink (${((bytes.byteLength * 8) / 1e5).toFixed(0)} ms for these bytes) it would be ${((100 * cpuMs) / ((bytes.byteLength * 8) / 1e5)).toFixed(1)}%`,
    );
  }
  // 100 signatures as one round's verification (the hash of each update's bytes is also taken once).
  const keys = Array.from({ length: 100 }, () => generateIdentity());
  const digests = keys.map((_, i) => updateDigest({ experiment_id: 'bench', round: 1, task_id: `t${i}`, base_model_sha256: 'a'.repeat(64), update_sha256: 'b'.repeat(64), num_examples: 600, metrics: METRICS, node_public_key: keys[i]!.publicKey }));
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
