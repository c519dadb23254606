// The benchmark's cases, shared by Node (bench/run.mjs) and Chromium (bench/page.html): ns per
// element of one Lion step at 4K / 64K / 1M elements, for
//   lion-optim simd128 | lion-optim scalar   the package's step on wasm-resident tensors
//   JS loop                                  a plain JavaScript Lion loop over typed arrays
//   tfjs-ops Lion | tfjs Adam                Lion in tfjs ops, tfjs's own Adam (wasm backend)
//   lion-optim tfjs optimizer                LionOptimizer.applyGradients (wasm backend; with
//                                            its copies in and out of tfjs's memory)
// f32: params, grads and momentum f32; bf16: all three bf16 (tfjs has no bf16: f32 rows only).
// Each number is the minimum over batches of (batch time / steps in the batch): the least
// disturbed measurement on a shared machine: wall time (`ns`) and, where the environment can
// tell (Node: process.cpuUsage), the process's CPU time (`cpuNs`), which preemption by other
// processes does not inflate.

export const SIZES = [4096, 65536, 1 << 20];
const HP = { lr: 1e-4, beta1: 0.9, beta2: 0.99, weightDecay: 0.1 };

function measure(fn, n, budgetMs, cpu) {
  fn();
  fn();
  // Batches of >= ~10 ms (at least one call; >= 5 ms enforced): coarse browser timers (100 us)
  // stay within 2%.
  let k = 0;
  let t = performance.now();
  while (performance.now() - t < 10) {
    fn();
    k++;
  }
  let best = Infinity;
  let bestCpu = Infinity;
  let batches = 0;
  const start = performance.now();
  while (batches < 3 || (performance.now() - start < budgetMs && batches < 40)) {
    const c = cpu?.();
    t = performance.now();
    for (let i = 0; i < k; i++) fn();
    const dt = performance.now() - t;
    if (dt < 5) {
      k *= 2; // the calibration caught a hiccup: too short a batch to time, make it longer
      continue;
    }
    best = Math.min(best, dt / k);
    if (cpu) bestCpu = Math.min(bestCpu, (cpu() - c) / 1000 / k);
    batches++;
  }
  return { ns: (best * 1e6) / n, cpuNs: cpu ? (bestCpu * 1e6) / n : null, batches, stepsPerBatch: k };
}

function fill(view, n, dtype, seed) {
  let s = seed >>> 0;
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const x = (s / 2 ** 32) * 2 - 1;
    if (dtype === 'f32') view[i] = x;
    else {
      f32[0] = x;
      view[i] = u32[0] >>> 16;
    }
  }
}

/** The plain JavaScript Lion step over Float32Arrays (what a JS developer would write). */
export function jsLionF32(p, g, m, lr, b1, b2, wd) {
  const decay = 1 - lr * wd;
  const omb1 = 1 - b1;
  const omb2 = 1 - b2;
  for (let i = 0; i < p.length; i++) {
    const gi = g[i];
    const mi = m[i];
    const c = mi * b1 + gi * omb1;
    p[i] = p[i] * decay - (c > 0 ? lr : c < 0 ? -lr : 0);
    m[i] = mi * b2 + gi * omb2;
  }
}

const F = new Float32Array(1);
const U = new Uint32Array(F.buffer);
/** The same over bf16 bit patterns in Uint16Arrays (widen exactly, round to nearest even). */
export function jsLionBf16(p, g, m, lr, b1, b2, wd) {
  const decay = 1 - lr * wd;
  const omb1 = 1 - b1;
  const omb2 = 1 - b2;
  for (let i = 0; i < p.length; i++) {
    U[0] = g[i] << 16;
    const gi = F[0];
    U[0] = m[i] << 16;
    const mi = F[0];
    U[0] = p[i] << 16;
    const c = mi * b1 + gi * omb1;
    F[0] = F[0] * decay - (c > 0 ? lr : c < 0 ? -lr : 0);
    let b = U[0];
    p[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    F[0] = mi * b2 + gi * omb2;
    b = U[0];
    m[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
}

/**
 * Runs every case; `lions` maps build names to module instances, `tf` is TensorFlow.js with the
 * wasm backend registered (or null), `LionOptimizer` the package's tfjs optimizer class (or
 * null), `cpu` a function giving the process's CPU time in microseconds (or null). Returns rows
 * { impl, dtype, n, ns, cpuNs, batches, stepsPerBatch }.
 */
export async function runBench({ lions, tf, LionOptimizer, budgetMs = 400, cpu = null, log = () => {} }) {
  const rows = [];
  const measure_ = (fn, n, budget) => measure(fn, n, budget, cpu);
  const add = (impl, dtype, n, r) => {
    rows.push({ impl, dtype, n, ns: r.ns, cpuNs: r.cpuNs, batches: r.batches, stepsPerBatch: r.stepsPerBatch });
    const c = r.cpuNs === null ? '' : `, CPU ${r.cpuNs.toFixed(3)}`;
    log(`${impl.padEnd(28)} ${dtype.padEnd(5)} ${String(n).padStart(8)}  wall ${r.ns.toFixed(3)}${c} ns/elem`);
  };
  for (const dtype of ['f32', 'bf16']) {
    for (const n of SIZES) {
      for (const [build, lion] of Object.entries(lions)) {
        const [p, g, m] = [1, 2, 3].map((s) => {
          const t = lion.tensor(dtype, n);
          fill(t.view, n, dtype, s);
          return t;
        });
        add(`lion-optim ${build}`, dtype, n, measure_(() => lion.step(p, g, m, HP), n, budgetMs));
        for (const t of [p, g, m]) t.free();
      }
      const Arr = dtype === 'f32' ? Float32Array : Uint16Array;
      const [p, g, m] = [1, 2, 3].map((s) => {
        const a = new Arr(n);
        fill(a, n, dtype, s);
        return a;
      });
      const loop = dtype === 'f32' ? jsLionF32 : jsLionBf16;
      add('JS loop', dtype, n, measure_(() => loop(p, g, m, HP.lr, HP.beta1, HP.beta2, HP.weightDecay), n, budgetMs));
    }
  }
  if (tf) {
    await tf.setBackend('wasm');
    await tf.ready();
    for (const n of SIZES) {
      const init = new Float32Array(n);
      fill(init, n, 'f32', 1);
      const gv = new Float32Array(n);
      fill(gv, n, 'f32', 2);
      const g = tf.tensor(gv);
      // Lion in tfjs ops: what a tfjs user writes without a fused kernel.
      const p = tf.variable(tf.tensor(init));
      const m = tf.variable(tf.zeros([n]));
      const decay = 1 - HP.lr * HP.weightDecay;
      const opsStep = () => tf.tidy(() => {
        const c = m.mul(HP.beta1).add(g.mul(1 - HP.beta1));
        p.assign(p.mul(decay).sub(c.sign().mul(HP.lr)));
        m.assign(m.mul(HP.beta2).add(g.mul(1 - HP.beta2)));
      });
      add('tfjs-ops Lion (tfjs wasm)', 'f32', n, measure_(opsStep, n, budgetMs * 2));
      const x = tf.variable(tf.tensor(init));
      const adam = tf.train.adam(1e-3);
      add('tfjs Adam (tfjs wasm)', 'f32', n, measure_(() => adam.applyGradients({ [x.name]: g }), n, budgetMs * 2));
      if (LionOptimizer) {
        const y = tf.variable(tf.tensor(init));
        const opt = new LionOptimizer({ learningRate: HP.lr, weightDecay: HP.weightDecay });
        add('lion-optim tfjs optimizer', 'f32', n, measure_(() => opt.applyGradients({ [y.name]: g }), n, budgetMs * 2));
        opt.dispose();
        y.dispose();
      }
      for (const t of [g, p, m, x]) t.dispose();
      adam.dispose();
    }
  }
  return rows;
}
