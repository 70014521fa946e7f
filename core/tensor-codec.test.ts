import test from 'ava';
import {
  bytesToFloat32,
  ChunkAssembler,
  chunks,
  CodecError,
  firstNonFinite,
  float32ToBytes,
  manifestBytes,
  manifestMismatch,
  sha256Hex,
} from './tensor-codec.js';

test('float32 values survive bytes and back, including from an unaligned offset', (t) => {
  const values = Float32Array.from([1.5, -2, 3.25, Number.MIN_VALUE, 1e30]);
  const bytes = float32ToBytes(values);
  t.deepEqual(Array.from(bytesToFloat32(bytes)), Array.from(values));
  // protobuf hands over Buffers at arbitrary offsets: a view would throw there.
  const backing = Buffer.alloc(bytes.length + 1);
  bytes.copy(backing, 1);
  const unaligned = backing.subarray(1);
  t.is(unaligned.byteOffset % 4, 1);
  t.deepEqual(Array.from(bytesToFloat32(unaligned)), Array.from(values));
});

test('bytes that are not whole float32 values are refused', (t) => {
  t.throws(() => bytesToFloat32(new Uint8Array(7)), { instanceOf: CodecError, message: /not a whole number/ });
});

test('the assembler rebuilds a chunked buffer and refuses oversized, overlong and short streams', (t) => {
  const values = new Float32Array(1000).map((_, i) => i * 0.5);
  const bytes = float32ToBytes(values);
  const a = new ChunkAssembler(bytes.byteLength, 512);
  for (const c of chunks(bytes, 512)) a.push(c);
  t.deepEqual(Array.from(a.finish()), Array.from(values));
  t.is(a.sha256Hex(), sha256Hex(bytes), 'hashed chunk by chunk as they arrived: the hash of the whole');

  t.throws(() => new ChunkAssembler(4000, 512).push(new Uint8Array(513)), { message: /exceeds the limit of 512/ });
  const over = new ChunkAssembler(8, 512);
  over.push(new Uint8Array(8));
  t.throws(() => over.push(new Uint8Array(4)), { message: /more than the announced 8 bytes/ });
  const short = new ChunkAssembler(8, 512);
  short.push(new Uint8Array(4));
  t.throws(() => short.finish(), { message: /ended after 4 of 8/ });
});

test('manifest mismatches name the tensor and the difference', (t) => {
  const expected = [
    { name: 'dense/kernel', shape: [784, 200], dtype: 'float32' as const },
    { name: 'dense/bias', shape: [200], dtype: 'float32' as const },
  ];
  t.is(manifestBytes(expected), (784 * 200 + 200) * 4);
  t.is(manifestMismatch(expected, expected), undefined);
  t.regex(manifestMismatch(expected, [expected[0]!])!, /1 tensors, the model has 2/);
  t.regex(manifestMismatch(expected, [expected[0]!, { ...expected[1]!, shape: [201] }])!, /dense\/bias.*\[201\].*\[200\]/);
  t.regex(manifestMismatch(expected, [{ ...expected[0]!, dtype: 'int32' }, expected[1]!])!, /dtype int32/);
});

test('non-finite values are found wherever they are', (t) => {
  t.is(firstNonFinite(Float32Array.from([0, 1, -1])), -1);
  t.is(firstNonFinite(Float32Array.from([0, Number.NaN])), 1);
  t.is(firstNonFinite(Float32Array.from([Number.POSITIVE_INFINITY])), 0);
  t.is(firstNonFinite(Float32Array.from([1, 2, Number.NEGATIVE_INFINITY])), 2);
});

test('sha256Hex is the standard digest', (t) => {
  t.is(sha256Hex(Buffer.from('abc')), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});
