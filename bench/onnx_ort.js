// ONNX Runtime peer for bench_onnx: runs .onnx files through onnxruntime-node (its CPU build) on one
// thread, intraOpNumThreads = interOpNumThreads = 1 and sequential execution, with the default graph
// optimisations (all), and prints per model and batch the time per call of each round, then the median:
//
//   onnx_ort_round <label> <batch> <seconds per call>
//   onnx_ort <label> <batch> <seconds per call> <sum of the outputs>
//
// Each call awaits session.run, as a Node program would. The input is x[i] = sin(0.001 i), which
// bench_onnx also feeds kiln, so the sums must agree.
//
//   node onnx_ort.js ROUNDS LABEL:PATH:BATCH:CALLS:DIM,DIM,... ...
// with NODE_PATH pointing at the node_modules that holds onnxruntime-node.
'use strict';
const ort = require('onnxruntime-node');

function now() {
  const [s, ns] = process.hrtime();
  return s + ns * 1e-9;
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

async function main() {
  const rounds = parseInt(process.argv[2], 10);
  const opts = {intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all'};
  console.log(`onnxruntime-node ${require('onnxruntime-node/package.json').version}, 1 thread`);
  for (const spec of process.argv.slice(3)) {
    const [label, path, batchS, callsS, dimsS] = spec.split(':');
    const batch = parseInt(batchS, 10), calls = parseInt(callsS, 10);
    const dims = [batch, ...dimsS.split(',').map(Number)];
    const session = await ort.InferenceSession.create(path, opts);
    const n = dims.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = Math.sin(0.001 * i);
    const feeds = {[session.inputNames[0]]: new ort.Tensor('float32', data, dims)};
    let out;
    for (let i = 0; i < Math.max(calls / 10, 10); i++) out = await session.run(feeds);
    const times = [];
    for (let r = 0; r < rounds; r++) {
      const t0 = now();
      for (let i = 0; i < calls; i++) out = await session.run(feeds);
      times.push((now() - t0) / calls);
      console.log(`onnx_ort_round ${label} ${batch} ${times[r].toPrecision(9)}`);
    }
    let sum = 0;
    for (const v of out[session.outputNames[0]].data) sum += v;
    console.log(`onnx_ort ${label} ${batch} ${median(times).toPrecision(9)} ${sum.toPrecision(9)}`);
    await session.release();
  }
}

main().catch((e) => {
  console.error(`onnx_ort.js: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
