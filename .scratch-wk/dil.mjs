import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
const [N,H,W,C,KH,KW,O,D] = [2,9,8,3,3,2,4,2];
const x = tf.randomUniform([N,H,W,C],-1,1,'float32',1);
for (const pad of ['valid','same']) {
  const y = tf.conv2d(x, tf.zeros([KH,KW,C,O]), 1, pad, 'NHWC', D);
  const dy = tf.randomUniform(y.shape,-1,1,'float32',2);
  const got = tf.engine().runKernel('Conv2DBackpropFilter', {x, dy}, {strides: 1, dilations: D, pad, dataFormat: 'NHWC', filterShape: [KH,KW,C,O]});
  const info = tf.backend_util.computeConv2DInfo([N,H,W,C],[KH,KW,C,O],1,D,pad);
  const xv = x.dataSync(), dv = dy.dataSync(), [_, oh, ow] = y.shape; const ref = new Float64Array(KH*KW*C*O);
  for (let a=0;a<KH;a++) for (let b=0;b<KW;b++) for (let c=0;c<C;c++) for (let o=0;o<O;o++) { let s=0;
    for (let n=0;n<N;n++) for (let i=0;i<oh;i++) for (let j=0;j<ow;j++) { const r=i+a*D-info.padInfo.top, q=j+b*D-info.padInfo.left; if (r<0||r>=H||q<0||q>=W) continue; s += xv[((n*H+r)*W+q)*C+c]*dv[((n*oh+i)*ow+j)*O+o]; }
    ref[((a*KW+b)*C+c)*O+o]=s; }
  const g = got.dataSync(); let e=0, m=0; for (let i=0;i<g.length;i++){e=Math.max(e,Math.abs(g[i]-ref[i])); m=Math.max(m,Math.abs(ref[i]));}
  console.log('dilation', D, pad, 'relerr', (e/m).toExponential(2));
}
try { tf.engine().runKernel('Conv2DBackpropFilter', {x, dy: tf.zeros([2,4,4,4])}, {strides: 2, dilations: 2, pad: 'valid', dataFormat: 'NHWC', filterShape: [3,2,3,4]}); } catch (e) { console.log('dilation', 'refused:', e.message); }
