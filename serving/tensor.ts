// TensorProto ⇄ rows of float32 for gRPC Predict: reading a client's input
// tensor with errors that name what is wrong (dtype, shape, size), and writing
// the predictions back as one float tensor.
import { endianness } from 'node:os';
import type { DataType__Output } from '../proto/generated/tensorflow/serving/DataType.js';
import type { TensorProto, TensorProto__Output } from '../proto/generated/tensorflow/serving/TensorProto.js';
import { ServingError } from './errors.js';
import type { ServedVersion } from './registry.js';

/** tensor_content is little-endian; on a little-endian host its bytes are the array's bytes. */
const LITTLE_ENDIAN_HOST = endianness() === 'LE';

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function invalid(message: string): ServingError {
  return new ServingError('invalid', message);
}

/** `count` float32 or float64 values from little-endian bytes, as float32. */
function fromContent(bytes: Buffer, count: number, width: 4 | 8): Float32Array {
  if (width === 4 && LITTLE_ENDIAN_HOST) {
    // Copied, not viewed: the buffer's offset need not be 4-byte aligned.
    const out = new Float32Array(count);
    new Uint8Array(out.buffer).set(bytes.subarray(0, count * 4));
    return out;
  }
  const out = new Float32Array(count);
  for (let k = 0; k < count; k++) out[k] = width === 4 ? bytes.readFloatLE(k * 4) : bytes.readDoubleLE(k * 8);
  return out;
}

/**
 * The rows of the request's one input tensor. Accepted: dtype DT_FLOAT or
 * DT_DOUBLE, shape [batch, ...model input shape] or [batch, input size], values
 * in tensor_content (little-endian) or float_val/double_val (one value fills the tensor, as in TF).
 */
export function rowsFromInputs(inputs: Record<string, TensorProto__Output>, served: ServedVersion): Float32Array[] {
  const names = Object.keys(inputs);
  const takes = `model ${served.name} takes one float tensor of shape [batch, ${served.inputShape.join(', ')}]`;
  if (names.length === 0) throw invalid(`inputs is empty; ${takes}, e.g. inputs["x"]`);
  if (names.length > 1) throw invalid(`inputs has ${names.length} tensors (${names.map((n) => JSON.stringify(n)).join(', ')}); ${takes}`);
  const name = names[0];
  const tensor = inputs[name];
  const where = `input ${JSON.stringify(name)}`;
  const dtype: DataType__Output = tensor.dtype;
  if (dtype !== 'DT_FLOAT' && dtype !== 'DT_DOUBLE') throw invalid(`${where} has dtype ${dtype}; ${takes} (dtype DT_FLOAT, or DT_DOUBLE)`);
  if (!tensor.tensor_shape || tensor.tensor_shape.unknown_rank) throw invalid(`${where} has no tensor_shape; ${takes}`);
  const shape = tensor.tensor_shape.dim.map((d) => d.size);
  const perRow = shape.slice(1);
  const rowSize = perRow.reduce((a, b) => a * b, 1);
  const matches = shapeText(perRow) === shapeText(served.inputShape) || (perRow.length === 1 && rowSize === served.inputSize);
  if (shape.length < 2 || !matches || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw invalid(`${where} has shape ${shapeText(shape)}; ${takes} (or [batch, ${served.inputSize}])`);
  }
  const batch = shape[0];
  if (batch === 0) throw invalid(`${where} has batch size 0; send at least one instance`);
  served.batcher.checkSize(batch);
  const count = batch * served.inputSize;
  const width = dtype === 'DT_FLOAT' ? 4 : 8;
  let flat: Float32Array;
  if (tensor.tensor_content.length > 0) {
    if (tensor.tensor_content.length !== count * width) {
      throw invalid(`${where} tensor_content holds ${tensor.tensor_content.length} bytes; shape ${shapeText(shape)} of ${dtype} needs ${count * width}`);
    }
    flat = fromContent(tensor.tensor_content, count, width);
  } else {
    const values = dtype === 'DT_FLOAT' ? tensor.float_val : tensor.double_val;
    const field = dtype === 'DT_FLOAT' ? 'float_val' : 'double_val';
    if (values.length === 1) flat = new Float32Array(count).fill(values[0]);
    else if (values.length === count) flat = Float32Array.from(values);
    else throw invalid(`${where} has ${values.length} values in ${field}; shape ${shapeText(shape)} needs ${count} (or 1, to fill it)`);
  }
  const rows: Float32Array[] = [];
  for (let r = 0; r < batch; r++) rows.push(flat.subarray(r * served.inputSize, (r + 1) * served.inputSize));
  return rows;
}

/** Predictions as one DT_FLOAT tensor [batch, classes], values in tensor_content. */
export function tensorFromRows(rows: readonly Float32Array[], width: number): TensorProto {
  const flat = new Float32Array(rows.length * width);
  rows.forEach((r, i) => flat.set(r, i * width));
  let content: Buffer;
  if (LITTLE_ENDIAN_HOST) content = Buffer.from(flat.buffer, flat.byteOffset, flat.byteLength);
  else {
    content = Buffer.alloc(flat.length * 4);
    flat.forEach((v, k) => content.writeFloatLE(v, k * 4));
  }
  return { dtype: 'DT_FLOAT', tensor_shape: { dim: [{ size: rows.length }, { size: width }] }, tensor_content: content };
}
