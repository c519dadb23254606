// The spirals MLP of examples/train (2 -> 64 tanh -> 3 softmax, cross-entropy), trained in the
// browser: forward and backward in JS, the optimizer step in lion-optim's wasm module.
// `window.__result` reports the finished run (the browser test reads it).
import { load, simdSupported } from '../js/index.js';

const CLASSES = 3;
const HIDDEN = 64;
const BATCH = 32;
const POINTS_PER_CLASS = 1000;
const LR = 3e-3;
const WEIGHT_DECAY = 0.1;
const WARMUP = 0.05;
const COLORS = [[230, 85, 80], [70, 150, 230], [90, 185, 100]];

const $ = (id) => document.getElementById(id);
const status = (text) => { $('status').textContent = text; };

/** mulberry32: a small deterministic generator. */
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  const shuffle = (v) => {
    for (let i = v.length - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [v[i], v[j]] = [v[j], v[i]];
    }
    return v;
  };
  return { next, normal, shuffle };
}

/** Three spiral arms: radius 0..1, 4 radians of turn plus noise; shuffled, 80/20 split. */
function spirals(seed) {
  const r = rng(seed);
  const all = [];
  for (let label = 0; label < CLASSES; label++) {
    for (let i = 0; i < POINTS_PER_CLASS; i++) {
      const radius = (i + 0.5) / POINTS_PER_CLASS;
      const theta = label * (2 * Math.PI / CLASSES) + 4 * radius + 0.2 * r.normal();
      all.push({ x: [radius * Math.sin(theta), radius * Math.cos(theta)], label });
    }
  }
  r.shuffle(all);
  const cut = Math.floor(all.length * 4 / 5);
  return { train: all.slice(0, cut), test: all.slice(cut) };
}

/** The model: parameters are lion-optim tensors [w0 (64x2), b0, w1 (3x64), b1]. */
class Mlp {
  constructor(lion, dtype, seed) {
    const r = rng(seed);
    this.dims = [2, HIDDEN, CLASSES];
    this.params = [];
    this.grads = [];
    for (let l = 0; l < 2; l++) {
      const [fanIn, fanOut] = [this.dims[l], this.dims[l + 1]];
      const limit = Math.sqrt(6 / (fanIn + fanOut));
      const w = Array.from({ length: fanIn * fanOut }, () => limit * (2 * r.next() - 1));
      this.params.push(lion.tensor(dtype, w, { name: `layer${l}.weight` }));
      this.params.push(lion.tensor(dtype, fanOut, { name: `layer${l}.bias` }));
    }
    for (const p of this.params) this.grads.push(lion.tensor('f32', p.length, { name: `${p.name} grad` }));
    this.work = this.dims.map((d) => new Float32Array(d));
    this.delta = this.dims.map((d) => new Float32Array(d));
    this.g = this.params.map((p) => new Float32Array(p.length));
  }

  /** The weights widened to f32 for this batch (f32: the wasm views themselves). */
  load() {
    this.w = this.params.map((p) => (p.dtype === 'f32' ? p.view : p.toFloat32()));
  }

  forward(x) {
    const [a0, a1, a2] = this.work;
    a0[0] = x[0];
    a0[1] = x[1];
    const [w0, b0, w1, b1] = this.w;
    for (let j = 0; j < HIDDEN; j++) a1[j] = Math.tanh(b0[j] + w0[2 * j] * a0[0] + w0[2 * j + 1] * a0[1]);
    for (let k = 0; k < CLASSES; k++) {
      let z = b1[k];
      for (let j = 0; j < HIDDEN; j++) z += w1[k * HIDDEN + j] * a1[j];
      a2[k] = z;
    }
    return a2;
  }

  /** Softmax of the logits into `probs`; the cross-entropy of `label`. */
  static softmax(logits, label, probs) {
    const max = Math.max(...logits);
    let sum = 0;
    for (let k = 0; k < logits.length; k++) sum += (probs[k] = Math.exp(logits[k] - max));
    for (let k = 0; k < logits.length; k++) probs[k] /= sum;
    return -Math.log(Math.max(probs[label], 1e-30));
  }

  /** The mean gradient of the batch, into the f32 gradient tensors; returns the mean loss. */
  gradients(batch) {
    this.load();
    for (const g of this.g) g.fill(0);
    const [gw0, gb0, gw1, gb1] = this.g;
    const [, w1] = [this.w[0], this.w[2]];
    const [a0, a1] = this.work;
    const [, d1, d2] = this.delta;
    const scale = 1 / batch.length;
    let loss = 0;
    for (const s of batch) {
      const logits = this.forward(s.x);
      loss += Mlp.softmax(logits, s.label, d2);
      d2[s.label] -= 1;
      for (let k = 0; k < CLASSES; k++) {
        const d = d2[k] * scale;
        gb1[k] += d;
        for (let j = 0; j < HIDDEN; j++) gw1[k * HIDDEN + j] += d * a1[j];
      }
      for (let j = 0; j < HIDDEN; j++) {
        let back = 0;
        for (let k = 0; k < CLASSES; k++) back += w1[k * HIDDEN + j] * d2[k] * scale;
        d1[j] = back * (1 - a1[j] * a1[j]);
        gb0[j] += d1[j];
        gw0[2 * j] += d1[j] * a0[0];
        gw0[2 * j + 1] += d1[j] * a0[1];
      }
    }
    this.grads.forEach((t, i) => t.view.set(this.g[i]));
    return loss / batch.length;
  }

  evaluate(samples) {
    this.load();
    const probs = new Float32Array(CLASSES);
    let loss = 0;
    let correct = 0;
    for (const s of samples) {
      const logits = this.forward(s.x);
      loss += Mlp.softmax(logits, s.label, probs);
      let best = 0;
      for (let k = 1; k < CLASSES; k++) if (logits[k] > logits[best]) best = k;
      correct += best === s.label ? 1 : 0;
    }
    return { loss: loss / samples.length, accuracy: correct / samples.length };
  }

  free() {
    for (const t of [...this.params, ...this.grads]) t.free();
  }
}

function schedule(step, total) {
  const t = step / total;
  if (t < WARMUP) return (t + 1 / total) / WARMUP;
  return 0.5 * (1 + Math.cos(Math.PI * (t - WARMUP) / (1 - WARMUP)));
}

function drawRegions(model, test) {
  const canvas = $('regions');
  const ctx = canvas.getContext('2d');
  const size = canvas.width;
  const cells = 105;
  const cell = size / cells;
  const toWorld = (px) => (px / size) * 2.4 - 1.2;
  model.load();
  const image = ctx.createImageData(size, size);
  for (let cy = 0; cy < cells; cy++) {
    for (let cx = 0; cx < cells; cx++) {
      const logits = model.forward([toWorld((cx + 0.5) * cell), -toWorld((cy + 0.5) * cell)]);
      let best = 0;
      for (let k = 1; k < CLASSES; k++) if (logits[k] > logits[best]) best = k;
      const [r, g, b] = COLORS[best];
      for (let y = Math.floor(cy * cell); y < Math.floor((cy + 1) * cell); y++) {
        for (let x = Math.floor(cx * cell); x < Math.floor((cx + 1) * cell); x++) {
          const o = 4 * (y * size + x);
          image.data[o] = 255 - (255 - r) * 0.35;
          image.data[o + 1] = 255 - (255 - g) * 0.35;
          image.data[o + 2] = 255 - (255 - b) * 0.35;
          image.data[o + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(image, 0, 0);
  for (const s of test) {
    const [r, g, b] = COLORS[s.label];
    ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
    ctx.beginPath();
    ctx.arc(((s.x[0] + 1.2) / 2.4) * size, ((1.2 - s.x[1]) / 2.4) * size, 2.2, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function drawCurve(history, epochs) {
  const canvas = $('curve');
  const ctx = canvas.getContext('2d');
  const [w, h] = [canvas.width, canvas.height];
  const pad = { l: 46, r: 46, t: 14, b: 34 };
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, w, h);
  const maxLoss = Math.max(1.2, ...history.map((e) => e.loss));
  const x = (i) => pad.l + ((i + 1) / epochs) * (w - pad.l - pad.r);
  const yLoss = (v) => pad.t + (1 - v / maxLoss) * (h - pad.t - pad.b);
  const yAcc = (v) => pad.t + (1 - v) * (h - pad.t - pad.b);
  ctx.strokeStyle = '#ccc';
  ctx.fillStyle = '#555';
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const yy = pad.t + (i / 4) * (h - pad.t - pad.b);
    ctx.beginPath();
    ctx.moveTo(pad.l, yy);
    ctx.lineTo(w - pad.r, yy);
    ctx.stroke();
    ctx.fillText((maxLoss * (1 - i / 4)).toFixed(2), 6, yy + 4);
    ctx.fillText(`${(100 * (1 - i / 4)).toFixed(0)}%`, w - pad.r + 6, yy + 4);
  }
  ctx.fillText('epoch', w / 2 - 14, h - 8);
  ctx.fillText('1', pad.l - 3, h - pad.b + 14);
  ctx.fillText(String(epochs), w - pad.r - 10, h - pad.b + 14);
  const line = (key, y, color) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    history.forEach((e, i) => (i ? ctx.lineTo(x(i), y(e[key])) : ctx.moveTo(x(i), y(e[key]))));
    ctx.stroke();
  };
  line('loss', yLoss, '#c0392b');
  line('testAccuracy', yAcc, '#2471a3');
  ctx.fillStyle = '#c0392b';
  ctx.fillText('train loss (left axis)', w - pad.r - 150, h / 2 - 8);
  ctx.fillStyle = '#2471a3';
  ctx.fillText('test accuracy (right axis)', w - pad.r - 150, h / 2 + 8);
}

const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));

async function train({ paramsKind, build, epochs }) {
  const t0 = performance.now();
  const lion = await load({ build });
  const data = spirals(0x5eed);
  const dtype = paramsKind === 'f32' ? 'f32' : 'bf16';
  const rounding = paramsKind.startsWith('bf16-sr') ? 'stochastic' : 'nearest';
  // 8-bit momentum: one code per parameter and one f32 scale per 256 (bitsandbytes' format).
  const momentum = paramsKind.endsWith('-q8') ? 'q8' : dtype;
  const model = new Mlp(lion, dtype, 0x1417);
  const opt = lion.optimizer({ lr: LR, weightDecay: WEIGHT_DECAY }, { rounding, seed: 1 });
  const noDecay = opt.addGroup({ lr: LR }, { rounding, seed: 1 });
  model.params.forEach((p, i) => opt.add(p, { name: p.name, momentum, group: i % 2 ? noDecay : 0 }));
  const steps = epochs * Math.ceil(data.train.length / BATCH);
  const order = data.train.map((_, i) => i);
  const shuffler = rng(7);
  const history = [];
  let step = 0;
  for (let epoch = 1; epoch <= epochs; epoch++) {
    shuffler.shuffle(order);
    let lossSum = 0;
    let batches = 0;
    for (let b = 0; b < order.length; b += BATCH) {
      opt.lrScale = schedule(step++, steps);
      const batch = order.slice(b, b + BATCH).map((i) => data.train[i]);
      lossSum += model.gradients(batch);
      batches++;
      opt.step(model.grads);
    }
    const test = model.evaluate(data.test);
    history.push({ loss: lossSum / batches, testAccuracy: test.accuracy });
    drawCurve(history, epochs);
    if (epoch % 2 === 0 || epoch === epochs) drawRegions(model, data.test);
    status(`${lion.build} build | params ${paramsKind} | epoch ${epoch}/${epochs} | lr ${(LR * opt.lrScale).toExponential(2)} | ` +
      `train loss ${(lossSum / batches).toFixed(4)} | test accuracy ${(100 * test.accuracy).toFixed(1)}%`);
    await frame();
  }
  const train = model.evaluate(data.train);
  const test = model.evaluate(data.test);
  const result = {
    done: true, build: lion.build, simd: simdSupported(), params: paramsKind, epochs, steps: opt.steps,
    trainLoss: train.loss, trainAccuracy: train.accuracy, testAccuracy: test.accuracy,
    seconds: (performance.now() - t0) / 1000,
  };
  status(`${$('status').textContent}\ndone in ${result.seconds.toFixed(1)} s: ${opt.steps} Lion steps, ` +
    `train accuracy ${(100 * train.accuracy).toFixed(1)}%, test accuracy ${(100 * test.accuracy).toFixed(1)}%`);
  opt.free();
  model.free();
  return result;
}

async function main() {
  const q = new URLSearchParams(location.search);
  for (const [key, id] of [['params', 'params'], ['build', 'build'], ['epochs', 'epochs']]) {
    if (q.has(key)) $(id).value = q.get(key);
  }
  const lion = await load();
  status(`Ready: the ${lion.build} build (simd128 ${simdSupported() ? 'supported' : 'not supported'} here). Press Train.`);
  const button = $('train');
  const run = async () => {
    button.disabled = true;
    window.__result = null;
    try {
      window.__result = await train({
        paramsKind: $('params').value, build: $('build').value, epochs: Number($('epochs').value),
      });
    } catch (e) {
      status(`Error: ${e.message}`);
      console.error(e);
      window.__result = { done: true, error: String(e) };
    } finally {
      button.disabled = false;
    }
  };
  button.addEventListener('click', run);
  window.__ready = true;
  if (q.has('autostart')) run();
}

main().catch((e) => {
  status(`Error: ${e.message}`);
  console.error(e);
});
