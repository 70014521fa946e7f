const B=32,H=28,W=28,C=32, oh=14, ow=14;
const xv = new Float32Array(B*H*W*C).map(() => Math.random()), dyv = new Float32Array(B*oh*ow*C).map(()=>Math.random());
const dxv = new Float32Array(xv.length);
function generic() {
  dxv.fill(0); const rowStride=W*C; let dyIndex=0;
  for (let n=0;n<B;n++){ const image=n*H*rowStride; for (let oy=0;oy<oh;oy++){ const r0=oy*2, r1=r0+2; for (let ox=0;ox<ow;ox++,dyIndex+=C){ const c0=ox*2,c1=c0+2; const corner=image+r0*rowStride+c0*C;
    for (let ch=0;ch<C;ch++){ let best=-Infinity, at=-1; for (let r=r0,row=corner+ch;r<r1;r++,row+=rowStride){ for(let c=c0,i=row;c<c1;c++,i+=C){ const v=xv[i]; if (v>best){best=v;at=i;} } } if (at>=0) dxv[at]+=dyv[dyIndex+ch]; } } } }
}
function ternary() {
  dxv.fill(0); const rowStride=W*C; let dyIndex=0;
  for (let n=0;n<B;n++){ const image=n*H*rowStride; for (let oy=0;oy<oh;oy++){ const r0=oy*2, r1=r0+2; for (let ox=0;ox<ow;ox++,dyIndex+=C){ const c0=ox*2,c1=c0+2; const corner=image+r0*rowStride+c0*C;
    for (let ch=0;ch<C;ch++){ let best=-Infinity, at=-1; for (let r=r0,row=corner+ch;r<r1;r++,row+=rowStride){ for(let c=c0,i=row;c<c1;c++,i+=C){ const v=xv[i]; const gt = v>best; best = gt?v:best; at = gt?i:at; } } if (at>=0) dxv[at]+=dyv[dyIndex+ch]; } } } }
}
function twoByTwo() {
  dxv.fill(0); const rowStride=W*C; let dyIndex=0;
  for (let n=0;n<B;n++){ const image=n*H*rowStride; for (let oy=0;oy<oh;oy++){ for (let ox=0;ox<ow;ox++,dyIndex+=C){ const i00=image+oy*2*rowStride+ox*2*C;
    for (let ch=0;ch<C;ch++){ const a=i00+ch, b=a+C, c=a+rowStride, d=c+C; const va=xv[a], vb=xv[b], vc=xv[c], vd=xv[d];
      const top = vb > va ? b : a; const vt = vb > va ? vb : va; const bot = vd > vc ? d : c; const vbo = vd > vc ? vd : vc;
      const at = vbo > vt ? bot : top; dxv[at] += dyv[dyIndex+ch]; } } } }
}
for (const f of [generic, ternary, twoByTwo, generic, ternary, twoByTwo]) { f(); const ts=[]; for (let k=0;k<7;k++){const t0=performance.now(); f(); ts.push(performance.now()-t0);} ts.sort((a,b)=>a-b); console.log(f.name, ts[3].toFixed(2)); }
