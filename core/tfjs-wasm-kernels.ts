// Training kernels for the tfjs wasm backend, built from what it runs fast.
// tfjs-backend-wasm 4.x registers no Conv2DBackpropFilter, so without this a
// CNN cannot train on wasm at all; and several kernels a training step leans on
// are scalar loops there, far slower than the XNNPACK code behind its Conv2D
// and its plain matrix product.
//
//  - Conv2DBackpropFilter (missing): dW[a,b,c,o] = Σ_{n,i,j} x[n, i·s+a-pT, j·s+b-pL, c]·dy[n,i,j,o]
//    is a convolution of x read as inC images of H×W with N channels
//    ([inC,H,W,N]) by dy read as an outH×outW filter from N to outC channels
//    ([outH,outW,N,outC]), the forward stride becoming the dilation. XNNPACK
//    runs it as one implicit GEMM over K = N·outH·outW.
//  - Conv2DBackpropInput (scalar loop, ~8× slower than Conv2D): at stride 1,
//    the "full" convolution of dy with the filter rotated 180° and its channel
//    axes swapped.
//  - BatchMatMul (scalar loop unless neither operand is transposed, ~10×
//    slower): the transposed operand is laid out explicitly first.
//  - MaxPoolGrad (slower, and wrong for windows whose values are all ≤ 0) and
//    Sum over all axes but the last (transposes its whole input first): plain
//    loops over the wasm heap.
//
// Intermediates are TensorInfos made by other wasm kernelFuncs, called
// directly rather than through the engine, so they never become tf.Tensors,
// never appear on the gradient tape or in tf.profile, and are freed with
// backend.disposeData before the kernel returns.
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

const BACKEND = 'wasm';

type Kernel = (params: { inputs: tf.NamedTensorInfoMap; backend: BackendWasm; attrs?: tf.NamedAttrMap }) => tf.TensorInfo;
type Shape4 = [number, number, number, number];

interface WasmKernels {
  conv2d: Kernel;
  transpose: Kernel;
  slice: Kernel;
  reverse: Kernel;
  /** The backend's own kernels this module replaces, for the cases a rewrite does not cover. */
  conv2dBackpropInput: Kernel;
  batchMatMul: Kernel;
  sum: Kernel;
}

let kernels: WasmKernels | undefined;

function wasmKernel(name: string): Kernel {
  const config = tf.getKernel(name, BACKEND);
  if (!config) {
    throw new Error(`the wasm backend has no ${name} kernel registered; import @tensorflow/tfjs-backend-wasm before registering training kernels`);
  }
  return config.kernelFunc as unknown as Kernel;
}

function asShape4(shape: readonly number[], what: string): Shape4 {
  if (shape.length !== 4) throw new Error(`${what} must be rank 4, got shape [${shape.join(', ')}]`);
  return [shape[0], shape[1], shape[2], shape[3]];
}

/** Frees kernel-internal TensorInfos; they have no tf.Tensor, so nothing else would. */
function release(backend: BackendWasm, ...infos: tf.TensorInfo[]): void {
  for (const info of infos) backend.disposeData(info.dataId);
}

function transpose(k: WasmKernels, backend: BackendWasm, x: tf.TensorInfo, perm: number[]): tf.TensorInfo {
  return k.transpose({ inputs: { x }, backend, attrs: { perm } });
}

function input(inputs: tf.NamedTensorInfoMap, name: string, kernel: string): tf.TensorInfo {
  const info = inputs[name];
  if (!info) throw new Error(`${kernel}: missing input ${name}`);
  return info;
}

function size(shape: readonly number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function conv2DBackpropFilter(params: { inputs: tf.NamedTensorInfoMap; backend: {}; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const k = kernels as WasmKernels;
  const backend = params.backend as BackendWasm;
  const x = input(params.inputs, 'x', tf.Conv2DBackpropFilter);
  const dy = input(params.inputs, 'dy', tf.Conv2DBackpropFilter);
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = params.attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  // Not an attribute of this kernel today (tfjs refuses gradients of dilated
  // convolutions), but honour it should a caller pass one.
  const dilations = (params.attrs as { dilations?: number | [number, number] } | undefined)?.dilations ?? 1;
  const info = tf.backend_util.computeConv2DInfo(
    asShape4(x.shape, 'Conv2DBackpropFilter x'),
    filterShape,
    strides,
    dilations,
    pad,
    dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(dataFormat),
  );
  const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = info;
  if ((sh > 1 || sw > 1) && (dh > 1 || dw > 1)) {
    throw new Error(`Conv2DBackpropFilter: strides and dilations cannot both exceed 1 (got strides ${sh},${sw}, dilations ${dh},${dw})`);
  }
  if (!sameShape(dy.shape, info.outShape)) {
    throw new Error(`Conv2DBackpropFilter: dy has shape [${dy.shape.join(', ')}], the convolution outputs [${info.outShape.join(', ')}]`);
  }
  const { inHeight, inWidth, outHeight, outWidth, filterHeight: kh, filterWidth: kw, inChannels, outChannels } = info;
  const { top, left } = info.padInfo;
  if (info.batchSize === 0 || outHeight === 0 || outWidth === 0) {
    const zeros = backend.makeOutput([kh, kw, inChannels, outChannels], 'float32');
    backend.typedArrayFromHeap(zeros).fill(0);
    return zeros;
  }
  const channelsLast = info.dataFormat === 'channelsLast';
  const xT = transpose(k, backend, x, channelsLast ? [3, 1, 2, 0] : [1, 2, 3, 0]);
  const dyT = transpose(k, backend, dy, channelsLast ? [1, 2, 0, 3] : [2, 3, 0, 1]);
  // Bottom/right padding that makes the output exactly kh×kw; negative when the
  // forward pass never read the last rows or columns (a stride that does not
  // divide the input), and then the few extra outputs are cropped instead.
  const bottom = (kh - 1) * dh + (outHeight - 1) * sh + 1 - inHeight - top;
  const right = (kw - 1) * dw + (outWidth - 1) * sw + 1 - inWidth - left;
  const grad = k.conv2d({
    inputs: { x: xT, filter: dyT },
    backend,
    attrs: {
      strides: [dh, dw],
      dilations: [sh, sw],
      pad: [
        [0, 0],
        [top, Math.max(bottom, 0)],
        [left, Math.max(right, 0)],
        [0, 0],
      ],
      dataFormat: 'NHWC',
      dimRoundingMode: 'floor',
    },
  });
  release(backend, xT, dyT);
  let cropped = grad;
  if (grad.shape[1] !== kh || grad.shape[2] !== kw) {
    cropped = k.slice({ inputs: { x: grad }, backend, attrs: { begin: [0, 0, 0, 0], size: [inChannels, kh, kw, outChannels] } });
    release(backend, grad);
  }
  // [inC, kh, kw, outC] → tfjs's filter layout [kh, kw, inC, outC].
  const dw_ = transpose(k, backend, cropped, [1, 2, 0, 3]);
  release(backend, cropped);
  return dw_;
}

function conv2DBackpropInput(params: { inputs: tf.NamedTensorInfoMap; backend: {}; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const k = kernels as WasmKernels;
  const backend = params.backend as BackendWasm;
  const dy = input(params.inputs, 'dy', tf.Conv2DBackpropInput);
  const filter = input(params.inputs, 'filter', tf.Conv2DBackpropInput);
  const { strides, pad, dataFormat, dimRoundingMode, inputShape } = params.attrs as unknown as tf.Conv2DBackpropInputAttrs;
  const info = tf.backend_util.computeConv2DInfo(
    inputShape,
    asShape4(filter.shape, 'Conv2DBackpropInput filter'),
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(dataFormat),
  );
  const { inHeight, inWidth, outHeight, outWidth, filterHeight: kh, filterWidth: kw } = info;
  const { top, left } = info.padInfo;
  // A strided convolution's transpose needs zeros between dy's pixels, which no
  // fast wasm kernel inserts; explicit padding beyond the filter leaves rows of
  // dx with no contribution. Both stay on the backend's own kernel.
  const padTop = kh - 1 - top;
  const padLeft = kw - 1 - left;
  const padBottom = inHeight - 1 + kh - outHeight - padTop;
  const padRight = inWidth - 1 + kw - outWidth - padLeft;
  if (
    info.strideHeight !== 1 ||
    info.strideWidth !== 1 ||
    info.dataFormat !== 'channelsLast' ||
    Math.min(padTop, padLeft, padBottom, padRight) < 0 ||
    info.batchSize === 0 ||
    !sameShape(dy.shape, info.outShape)
  ) {
    return k.conv2dBackpropInput({ inputs: params.inputs, backend, attrs: params.attrs });
  }
  // [kh, kw, inC, outC] rotated 180° in space, channels swapped: a filter from dy's outC to dx's inC.
  const flipped = k.reverse({ inputs: { x: filter }, backend, attrs: { dims: [0, 1] } });
  const swapped = transpose(k, backend, flipped, [0, 1, 3, 2]);
  release(backend, flipped);
  const dx = k.conv2d({
    inputs: { x: dy, filter: swapped },
    backend,
    attrs: {
      strides: [1, 1],
      dilations: [1, 1],
      pad: [
        [0, 0],
        [padTop, padBottom],
        [padLeft, padRight],
        [0, 0],
      ],
      dataFormat: 'NHWC',
      dimRoundingMode: 'floor',
    },
  });
  release(backend, swapped);
  return dx;
}

function swapLastTwo(rank: number): number[] {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return perm;
}

function batchMatMul(params: { inputs: tf.NamedTensorInfoMap; backend: {}; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const k = kernels as WasmKernels;
  const backend = params.backend as BackendWasm;
  const a = input(params.inputs, 'a', tf.BatchMatMul);
  const b = input(params.inputs, 'b', tf.BatchMatMul);
  const { transposeA, transposeB } = params.attrs as unknown as tf.BatchMatMulAttrs;
  // The backend hands only untransposed, unbatched float32 products to
  // XNNPACK; anything else runs a scalar loop about 10× slower. Laying a
  // transposed operand out explicitly costs one pass over it. Batched products
  // stay on the backend's kernel.
  const outer = (t: tf.TensorInfo) => size(t.shape.slice(0, -2));
  if (
    (!transposeA && !transposeB) ||
    a.dtype !== 'float32' ||
    b.dtype !== 'float32' ||
    a.shape.length < 2 ||
    b.shape.length < 2 ||
    outer(a) !== 1 ||
    outer(b) !== 1
  ) {
    return k.batchMatMul({ inputs: params.inputs, backend, attrs: params.attrs });
  }
  const [aRows, aCols] = a.shape.slice(-2);
  const [bRows, bCols] = b.shape.slice(-2);
  const m = transposeA ? aCols : aRows;
  const inner = transposeA ? aRows : aCols;
  const n = transposeB ? bRows : bCols;
  const plain = { transposeA: false, transposeB: false };
  // XNNPACK repacks its right operand on every call (the operand is a fresh
  // tensor each step), so that operand is as much a cost as a transpose.
  // op(A)·op(B) directly: transpose what is marked, pack op(B).
  const directCost = (transposeA ? m * inner : 0) + (transposeB ? inner * n : 0) + inner * n;
  // (op(B)ᵀ·op(A)ᵀ)ᵀ: transpose what is unmarked and the result, pack op(A)ᵀ.
  // This wins when B is big and marked, e.g. dx = dy·Wᵀ of a wide Dense layer.
  const swappedCost = (transposeA ? 0 : m * inner) + (transposeB ? 0 : inner * n) + m * n + m * inner;
  const temps: tf.TensorInfo[] = [];
  const laidOut = (t: tf.TensorInfo, flip: boolean) => {
    if (!flip) return t;
    const out = transpose(k, backend, t, swapLastTwo(t.shape.length));
    temps.push(out);
    return out;
  };
  let result: tf.TensorInfo;
  if (directCost <= swappedCost) {
    result = k.batchMatMul({ inputs: { a: laidOut(a, transposeA), b: laidOut(b, transposeB) }, backend, attrs: plain });
  } else {
    const resultT = k.batchMatMul({ inputs: { a: laidOut(b, !transposeB), b: laidOut(a, !transposeA) }, backend, attrs: plain });
    result = transpose(k, backend, resultT, swapLastTwo(resultT.shape.length));
    temps.push(resultT);
  }
  release(backend, ...temps);
  return result;
}

function maxPoolGrad(params: { inputs: tf.NamedTensorInfoMap; backend: {}; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const backend = params.backend as BackendWasm;
  const dy = input(params.inputs, 'dy', tf.MaxPoolGrad);
  const x = input(params.inputs, 'input', tf.MaxPoolGrad);
  const { filterSize, strides, pad, dimRoundingMode } = params.attrs as unknown as tf.MaxPoolGradAttrs;
  const info = tf.backend_util.computePool2DInfo(asShape4(x.shape, 'MaxPoolGrad input'), filterSize, strides, 1, pad, dimRoundingMode);
  if (!sameShape(dy.shape, info.outShape)) {
    throw new Error(`MaxPoolGrad: dy has shape [${dy.shape.join(', ')}], the pooling outputs [${info.outShape.join(', ')}]`);
  }
  const { batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth, strideHeight, strideWidth } = info;
  const { effectiveFilterHeight: fh, effectiveFilterWidth: fw } = info;
  const { top, left } = info.padInfo;
  const dx = backend.makeOutput(x.shape, 'float32');
  // Views taken after makeOutput: allocating may grow the wasm heap, which detaches older views.
  const xv = backend.typedArrayFromHeap(x) as Float32Array;
  const dyv = backend.typedArrayFromHeap(dy) as Float32Array;
  const dxv = backend.typedArrayFromHeap(dx) as Float32Array;
  dxv.fill(0);
  // Each output pixel routes its gradient to the first strict maximum of its
  // window in row-major order, as the cpu backend does (the wasm kernel takes
  // the last one, and sends a window whose values are all ≤ 0 to a fixed
  // position rather than to its maximum).
  const rowStride = inWidth * channels;
  let dyIndex = 0;
  for (let n = 0; n < batchSize; n++) {
    const image = n * inHeight * rowStride;
    for (let oy = 0; oy < outHeight; oy++) {
      const rowStart = oy * strideHeight - top;
      const r0 = Math.max(0, rowStart);
      const r1 = Math.min(inHeight, rowStart + fh);
      for (let ox = 0; ox < outWidth; ox++, dyIndex += channels) {
        const colStart = ox * strideWidth - left;
        const c0 = Math.max(0, colStart);
        const c1 = Math.min(inWidth, colStart + fw);
        const corner = image + r0 * rowStride + c0 * channels;
        for (let ch = 0; ch < channels; ch++) {
          let best = Number.NEGATIVE_INFINITY;
          let at = -1;
          for (let r = r0, row = corner + ch; r < r1; r++, row += rowStride) {
            for (let c = c0, i = row; c < c1; c++, i += channels) {
              const v = xv[i];
              if (v > best) {
                best = v;
                at = i;
              }
            }
          }
          if (at >= 0) dxv[at] += dyv[dyIndex + ch];
        }
      }
    }
  }
  return dx;
}

function sum(params: { inputs: tf.NamedTensorInfoMap; backend: {}; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const k = kernels as WasmKernels;
  const backend = params.backend as BackendWasm;
  const x = input(params.inputs, 'x', tf.Sum);
  const { axis, keepDims } = params.attrs as unknown as tf.SumAttrs;
  const rank = x.shape.length;
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
  // Summing over every axis but the last, as a bias gradient does over
  // batch×height×width, the backend first transposes the whole tensor so the
  // reduced axes come last; summing rows in place reads it once instead.
  const overRows = rank >= 2 && axes.length === rank - 1 && axes.every((a, i) => a === i);
  if (!overRows || x.dtype !== 'float32') return k.sum({ inputs: params.inputs, backend, attrs: params.attrs });
  const columns = x.shape[rank - 1];
  const rows = columns === 0 ? 0 : size(x.shape) / columns;
  const out = backend.makeOutput(keepDims ? [...new Array<number>(rank - 1).fill(1), columns] : [columns], 'float32');
  const xv = backend.typedArrayFromHeap(x) as Float32Array;
  const totals = new Float64Array(columns);
  for (let r = 0, i = 0; r < rows; r++) {
    for (let c = 0; c < columns; c++, i++) totals[c] += xv[i];
  }
  (backend.typedArrayFromHeap(out) as Float32Array).set(totals);
  return out;
}

/**
 * Registers, for the 'wasm' backend, the Conv2DBackpropFilter kernel that
 * tfjs-backend-wasm lacks, and faster replacements for its
 * Conv2DBackpropInput, BatchMatMul, MaxPoolGrad and Sum (each falling back to
 * the original for the cases it does not rewrite). Call after
 * @tensorflow/tfjs-backend-wasm has been imported; calling again does nothing.
 */
export function registerWasmTrainingKernels(): void {
  if (kernels) return;
  const originalInput = tf.getKernel(tf.Conv2DBackpropInput, BACKEND);
  const originalMatMul = tf.getKernel(tf.BatchMatMul, BACKEND);
  const originalMaxPoolGrad = tf.getKernel(tf.MaxPoolGrad, BACKEND);
  const originalSum = tf.getKernel(tf.Sum, BACKEND);
  if (!originalInput || !originalMatMul || !originalMaxPoolGrad || !originalSum) {
    throw new Error('the wasm backend lacks its own Conv2DBackpropInput, BatchMatMul, MaxPoolGrad or Sum kernel; import @tensorflow/tfjs-backend-wasm before registering training kernels');
  }
  kernels = {
    conv2d: wasmKernel(tf.Conv2D),
    transpose: wasmKernel(tf.Transpose),
    slice: wasmKernel(tf.Slice),
    reverse: wasmKernel(tf.Reverse),
    conv2dBackpropInput: originalInput.kernelFunc as unknown as Kernel,
    batchMatMul: originalMatMul.kernelFunc as unknown as Kernel,
    sum: originalSum.kernelFunc as unknown as Kernel,
  };
  if (!tf.getKernel(tf.Conv2DBackpropFilter, BACKEND)) {
    tf.registerKernel({ kernelName: tf.Conv2DBackpropFilter, backendName: BACKEND, kernelFunc: conv2DBackpropFilter });
  }
  // registerKernel warns when it replaces a kernel; replacing is the intent
  // here. The configs keep their setupFunc, which the replaced kernelFuncs,
  // still called for the cases not rewritten, depend on.
  const replace = (original: tf.KernelConfig, kernelFunc: tf.KernelFunc) => {
    tf.unregisterKernel(original.kernelName, BACKEND);
    tf.registerKernel({ ...original, kernelFunc });
  };
  replace(originalInput, conv2DBackpropInput);
  replace(originalMatMul, batchMatMul);
  replace(originalMaxPoolGrad, maxPoolGrad);
  replace(originalSum, sum);
}
