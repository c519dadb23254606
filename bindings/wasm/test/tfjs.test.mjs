// The TensorFlow.js optimizer on the cpu and wasm backends: bit-identical to the stateless step,
// trains a tf.sequential model with fit(), notices variables changed outside, leaks no tensor,
// serializes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { LionOptimizer, lion as lionOptimizer, ready } from '../js/tfjs.js';
import { bytesOf } from './helpers.mjs';

const lion = await ready();

test('registered for serialization; the config round-trips', () => {
  const map = tf.serialization.SerializationMap.getMap().classNameMap;
  assert.ok(map.LionOptimizer, 'registered');
  const opt = new LionOptimizer({ learningRate: 3e-4, weightDecay: 0.1, momentumDtype: 'bf16', rounding: 'stochastic', seed: 5 });
  const config = opt.getConfig();
  // What tfjs-layers does when it loads a model saved with this optimizer.
  const [cls, fromConfig] = map.LionOptimizer;
  const back = fromConfig(cls, config);
  assert.ok(back instanceof LionOptimizer);
  assert.deepEqual(back.getConfig(), config);
  assert.throws(() => new LionOptimizer({ lr: 1 }), TypeError);
  assert.throws(() => new LionOptimizer({ momentumDtype: 'f64' }), TypeError);
  opt.dispose();
  back.dispose();
});

/** Deterministic values in [-1, 1). */
function values(n, seed) {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 31) - 1);
}

for (const backend of ['cpu', 'wasm']) {
  test(`${backend}: applyGradients is bit-identical to lion.step on the same data`, async () => {
    await tf.setBackend(backend);
    await tf.ready();
    assert.equal(tf.getBackend(), backend);
    for (const momentumDtype of ['f32', 'bf16', 'q8']) {
      const n = 1037;
      const x = tf.variable(tf.tensor(values(n, 1), [n]), true, `x_${backend}_${momentumDtype}`);
      const opt = await lionOptimizer({ learningRate: 1e-2, weightDecay: 0.1, momentumDtype, rounding: 'stochastic', seed: 3 });
      const p = lion.tensor('f32', values(n, 1));
      const m = lion.tensor(momentumDtype, n);
      const before = tf.memory().numTensors;
      for (let s = 0; s < 4; s++) {
        const gv = values(n, 100 + s);
        const g = tf.tensor(gv, [n]);
        opt.applyGradients({ [x.name]: g });
        g.dispose();
        const gt = lion.tensor('f32', gv);
        lion.step(p, gt, m, { lr: 1e-2, weightDecay: 0.1 }, { rounding: 'stochastic', seed: 3, step: s });
        gt.free();
        assert.deepEqual(new Uint8Array(x.dataSync().buffer), bytesOf(p), `step ${s}`);
      }
      assert.equal(opt.iterations, 4);
      assert.equal(tf.memory().numTensors, before, 'no tensor leaked');
      // Changed outside the optimizer: the next step starts from the new values.
      x.assign(tf.fill([n], 0.5));
      p.set(new Float32Array(n).fill(0.5));
      const g = tf.ones([n]);
      opt.applyGradients([{ name: x.name, tensor: g }]);
      const gt = lion.tensor('f32', new Float32Array(n).fill(1));
      lion.step(p, gt, m, { lr: 1e-2, weightDecay: 0.1 }, { rounding: 'stochastic', seed: 3, step: 4 });
      assert.deepEqual(new Uint8Array(x.dataSync().buffer), bytesOf(p));
      // The momentum round-trips through getWeights/setWeights (model.save's path); 8-bit
      // momentum as its codes and block scales.
      const weights = await opt.getWeights();
      const momentumOf = (o) => {
        const v = o.optimizer.momentum(x.name);
        return momentumDtype === 'q8' ? [...v.codes, ...v.absmax] : [...v];
      };
      if (momentumDtype === 'q8') {
        assert.deepEqual(weights.map((w) => [w.name, w.tensor.dtype, w.tensor.size]),
          [[weights[0].name, weights[0].tensor.dtype, 1], [`${x.name}/m/codes`, 'int32', n], [`${x.name}/m/absmax`, 'float32', Math.ceil(n / 256)]]);
        assert.deepEqual([...m.view.codes, ...m.view.absmax], momentumOf(opt), 'the stateless step\'s momentum');
        assert.ok(m.view.codes.some((c) => c !== 127));
      } else {
        assert.deepEqual(weights.map((w) => w.name), [weights[0].name, `${x.name}/m`]);
      }
      const opt2 = await lionOptimizer({ learningRate: 1e-2, weightDecay: 0.1, momentumDtype, rounding: 'stochastic', seed: 3 });
      await opt2.setWeights(weights);
      assert.equal(opt2.iterations, 5);
      assert.deepEqual(momentumOf(opt2), momentumOf(opt));
      // Weights that do not fit: an error, nothing written (nor the iteration count).
      const opt3 = await lionOptimizer({ learningRate: 1e-2, momentumDtype, rounding: 'stochastic', seed: 3 });
      const bad = [];
      const last = weights.at(-1);
      bad.push([...weights.slice(0, -1), { name: last.name, tensor: tf.zeros([last.tensor.size + 1]) }]);
      bad.push([weights[0], { name: `${x.name}/v`, tensor: tf.zeros([n]) }]);
      bad.push([weights[0], { name: 'nothing/m', tensor: tf.zeros([n]) }]);
      if (momentumDtype === 'q8') {
        bad.push([weights[0], { name: `${x.name}/m`, tensor: tf.zeros([n]) }]);
        bad.push([weights[0], { name: `${x.name}/m/codes`, tensor: tf.fill([n], 256, 'int32') }, weights[2]]);
        bad.push([weights[0], { name: `${x.name}/m/codes`, tensor: tf.fill([n], 0.5) }, weights[2]]);
      } else {
        bad.push([weights[0], { name: `${x.name}/m/codes`, tensor: tf.zeros([n], 'int32') }]);
      }
      for (const b of bad) {
        await assert.rejects(opt3.setWeights(b), (e) => e instanceof TypeError || e instanceof RangeError, b.map((w) => w.name).join());
        assert.equal(opt3.iterations, 0);
        assert.equal(opt3.optimizer.size, 0);
        b.slice(1).filter((w) => !weights.includes(w)).forEach((w) => w.tensor.dispose());
      }
      weights.forEach((w) => w.tensor.dispose());
      opt3.dispose();
      assert.throws(() => opt.applyGradients({ [x.name]: tf.ones([n], 'int32') }), TypeError);
      for (const t of [g, x]) t.dispose();
      for (const t of [p, m, gt]) t.free();
      opt.dispose();
      opt2.dispose();
    }
  });

  for (const momentumDtype of ['f32', 'q8']) test(`${backend}: a tf.sequential model trains with fit() (${momentumDtype} momentum)`, async () => {
    await tf.setBackend(backend);
    // Two interleaved half-moons-like classes that a linear model cannot separate.
    const n = 512;
    const xs = [];
    const ys = [];
    for (let i = 0; i < n; i++) {
      const label = i % 2;
      const t = Math.PI * (i / n);
      const r = 1 + 0.1 * Math.sin(7 * i);
      xs.push(label ? [1 - r * Math.cos(t), 0.5 - r * Math.sin(t)] : [r * Math.cos(t), r * Math.sin(t)]);
      ys.push(label ? [0, 1] : [1, 0]);
    }
    const x = tf.tensor2d(xs);
    const y = tf.tensor2d(ys);
    tf.util.seedrandom?.('lion');
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [2], units: 32, activation: 'tanh', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
        tf.layers.dense({ units: 2, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
      ],
    });
    const optimizer = await lionOptimizer({ learningRate: 1e-2, weightDecay: 0.01, momentumDtype });
    model.compile({ optimizer, loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
    const history = await model.fit(x, y, { epochs: 20, batchSize: 64, shuffle: true, verbose: 0 });
    const loss = history.history.loss;
    const acc = history.history.acc ?? history.history.accuracy;
    assert.ok(loss.at(-1) < 0.5 * loss[0], `loss ${loss[0]} -> ${loss.at(-1)}`);
    assert.ok(acc.at(-1) > 0.9, `accuracy ${acc.at(-1)}`);
    assert.equal(optimizer.iterations, 20 * (n / 64));
    assert.equal(optimizer.optimizer.size, 4, 'kernel and bias of both layers');
    model.dispose();
    x.dispose();
    y.dispose();
    optimizer.dispose();
  });
}
