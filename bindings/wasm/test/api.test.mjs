// The JS API: tensors and views, errors (TypeError/RangeError naming the tensor, nothing written),
// memory growth, use after free, the optimizer (groups, names, lr scale, keyed steps, state),
// in both builds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load, instantiate, simdSupported, Tensor } from '../js/index.js';
import { instances, bytesOf, setBytes, fixturesQ8, firstDifference, BUILDS } from './helpers.mjs';

const lions = await instances();

test('load() picks simd128 where the engine has it, and is shared', async () => {
  assert.equal(simdSupported(), true);
  const a = await load();
  assert.equal(a.build, 'simd128');
  assert.equal(await load(), a);
  assert.equal((await load({ build: 'scalar' })).build, 'scalar');
  await assert.rejects(load({ build: 'sse' }), TypeError);
  assert.equal(a.q8, true);
});

for (const build of BUILDS) {
  const lion = lions[build];

  test(`${build}: tensors, views and conversions`, () => {
    const w = lion.tensor('f32', 4, { name: 'w' });
    assert.ok(w instanceof Tensor);
    assert.ok(w.view instanceof Float32Array);
    assert.deepEqual([...w.view], [0, 0, 0, 0]);
    const b = lion.tensor('bf16', [1 + 1 / 256, 1 + 3 / 256, -2, NaN]);
    assert.ok(b.view instanceof Uint16Array);
    // Round to nearest, ties to even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7.
    assert.deepEqual([...b.toFloat32()].slice(0, 3), [1, 1.015625, -2]);
    assert.ok(Number.isNaN(b.toFloat32()[3]));
    assert.equal(b.view[0], 0x3f80);
    const h = lion.tensor('f16', [65504, 65520, 2 ** -24, -0]);
    assert.deepEqual([...h.view], [0x7bff, 0x7c00, 0x0001, 0x8000]);
    assert.deepEqual([...h.toFloat32()], [65504, Infinity, 2 ** -24, -0]);
    h.set([0.5], 2);
    assert.equal(h.toFloat32()[2], 0.5);
    assert.equal(b.byteLength, 8);
    for (const t of [w, b, h]) t.free();
  });

  test(`${build}: step moves params by exactly lr and matches the README example`, () => {
    const p = lion.tensor('f16', [1, 1, 1, 1, 1]);
    const g = lion.tensor('f32', [1, -1, 0, 2, -0.5]);
    const m = lion.tensor('f16', 5);
    assert.equal(lion.step(p, g, m, { lr: 0.25 }), 'applied');
    assert.deepEqual([...p.toFloat32()], [0.75, 1.25, 1, 0.75, 1.25]);
    for (const t of [p, g, m]) t.free();
  });

  test(`${build}: bad input throws TypeError/RangeError naming the tensor, writes nothing`, async () => {
    const p = lion.tensor('f32', [1, 2, 3, 4], { name: 'weight' });
    const g = lion.tensor('f32', [1, 1, 1], { name: 'short grad' });
    const g4 = lion.tensor('f32', [1, 1, 1, 1], { name: 'grad' });
    const m = lion.tensor('bf16', 4, { name: 'mom' });
    const before = [bytesOf(p), bytesOf(m)];
    const unchanged = () => assert.deepEqual([bytesOf(p), bytesOf(m)], before);
    assert.throws(() => lion.step(p, g, m), (e) => e instanceof RangeError && /short grad/.test(e.message) && /weight/.test(e.message));
    assert.throws(() => lion.step(p, g4, m, { lr: -1 }), (e) => e instanceof RangeError && /lr = -1/.test(e.message));
    assert.throws(() => lion.step(p, g4, m, { lr: 1, weightDecay: 2 }), (e) => e instanceof RangeError && /weight_decay/.test(e.message));
    assert.throws(() => lion.step(p, g4, m, { beta1: 1 }), RangeError);
    assert.throws(() => lion.step(p, g4, m, { lr: '0.1' }), (e) => e instanceof TypeError && /lr/.test(e.message));
    assert.throws(() => lion.step(p, g4, m, { learningRate: 0.1 }), (e) => e instanceof TypeError && /learningRate/.test(e.message));
    assert.throws(() => lion.step(p, g4, m, {}, { rounding: 'up' }), TypeError);
    assert.throws(() => lion.step(p, g4, m, {}, { seed: -1 }), RangeError);
    assert.throws(() => lion.step(p, g4, m, {}, { cautious: { agreeing: 5, numel: 4 } }), (e) => e instanceof RangeError && /agreeing/.test(e.message));
    assert.throws(() => lion.step(p, g4, m, {}, { gradUnscale: 0 }), (e) => e instanceof RangeError && /grad_unscale/.test(e.message));
    assert.throws(() => lion.step(p, g4, m, {}, { maxLr: -1 }), RangeError);
    assert.throws(() => lion.step(p, new Float32Array(4), m), (e) => e instanceof TypeError && /grads/.test(e.message));
    assert.throws(() => lion.step(p, g4, p), (e) => e instanceof TypeError && /twice/.test(e.message) && /weight/.test(e.message));
    assert.throws(() => lion.step([p], [g4], m), TypeError);
    assert.throws(() => lion.tensor('f64', 3), TypeError);
    assert.throws(() => lion.tensor('q8', [1, 2, 3]), (e) => e instanceof TypeError && /length/.test(e.message));
    assert.throws(() => lion.tensor('f32', -1), RangeError);
    assert.throws(() => lion.tensor('f32', 1.5), RangeError);
    assert.throws(() => lion.tensor('f32', ['x']), TypeError);
    assert.throws(() => p.set([1, 2, 3, 4, 5]), RangeError);
    const other = (await instantiate({ build })).tensor('f32', 4, { name: 'foreign' });
    assert.throws(() => lion.step(p, other, m), (e) => e instanceof TypeError && /foreign/.test(e.message) && /another module/.test(e.message));
    other.free();
    unchanged();
    // A step over many tensors: one bad tensor, nothing written anywhere.
    const p2 = lion.tensor('f32', [5, 5]);
    const m2 = lion.tensor('f32', 2);
    const g2 = lion.tensor('f32', [1, 1]);
    assert.throws(() => lion.step([p2, p], [g2, g], [m2, m]), (e) => e instanceof RangeError && /\[1\]/.test(e.message));
    assert.deepEqual([...p2.view], [5, 5]);
    unchanged();
    for (const t of [p, g, g4, m, p2, m2, g2]) t.free();
  });

  test(`${build}: skipNonFinite skips the whole step`, () => {
    const p = lion.tensor('bf16', [1, 1]);
    const g = lion.tensor('f32', [1, Infinity]);
    const m = lion.tensor('f32', 2);
    assert.equal(lion.step(p, g, m, { lr: 0.5 }, { skipNonFinite: true }), 'skipped');
    assert.deepEqual([...p.toFloat32()], [1, 1]);
    assert.equal(lion.step(p, g, m, { lr: 0.5 }), 'applied');
    assert.equal(p.toFloat32()[0], 0.5);
    for (const t of [p, g, m]) t.free();
  });

  test(`${build}: use after free throws a TypeError`, () => {
    const p = lion.tensor('f32', 3, { name: 'gone' });
    const g = lion.tensor('f32', 3);
    const m = lion.tensor('f32', 3);
    p.free();
    assert.equal(p.freed, true);
    for (const f of [() => p.view, () => p.set([1]), () => p.toFloat32(), () => p.free(), () => lion.step(p, g, m)]) {
      assert.throws(f, (e) => e instanceof TypeError && /gone/.test(e.message) && /freed/.test(e.message));
    }
    const opt = lion.optimizer({ lr: 0.1 });
    opt.add(g, { name: 'g' });
    opt.free();
    assert.throws(() => opt.step([m]), (e) => e instanceof TypeError && /freed/.test(e.message));
    assert.throws(() => opt.saveState(), TypeError);
    // The module refuses a stale handle too (the JS object is the first line of defence).
    const ex = lion._exports;
    assert.equal(ex.lion_tensor_ptr(1 << 20), 0);
    g.free();
    m.free();
  });
}

test('views survive memory growth (and raw views taken before it are dead)', async () => {
  const lion = await instantiate({ build: 'simd128' });
  const w = lion.tensor('f32', [1, 2, 3, 4]);
  const g = lion.tensor('f32', [1, 1, 1, 1]);
  const m = lion.tensor('f32', 4);
  const stale = w.view;
  const pages = lion.memory.buffer.byteLength / 65536;
  const big = lion.tensor('f32', 16 << 20); // 64 MiB: the memory must grow
  assert.ok(lion.memory.buffer.byteLength / 65536 > pages + 1000);
  assert.equal(stale.length, 0, 'a view taken before the growth is detached');
  assert.deepEqual([...w.view], [1, 2, 3, 4], '.view is re-created over the new buffer');
  assert.equal(big.view.length, 16 << 20);
  big.view[(16 << 20) - 1] = 7;
  assert.equal(lion.step(w, g, m, { lr: 0.5 }), 'applied');
  assert.deepEqual([...w.view], [0.5, 1.5, 2.5, 3.5]);
  // The optimizer's momentum views too.
  const opt = lion.optimizer({ lr: 0.5 });
  opt.add(w, { name: 'w' });
  opt.step([g]);
  const mom = opt.momentum('w');
  const more = lion.tensor('f32', 32 << 20);
  assert.equal(mom.length, 0);
  assert.equal(opt.momentum('w').length, 4);
  assert.ok(opt.momentum('w')[0] !== 0);
  for (const t of [w, g, m, big, more]) t.free();
  opt.free();
});

test('out of memory is a RangeError, and the instance stays usable', async () => {
  const lion = await instantiate({ build: 'scalar' });
  assert.throws(() => lion.tensor('f32', 0xffffffff), RangeError);
  const t = lion.tensor('f32', [1]);
  assert.equal(t.view[0], 1);
  t.free();
});

for (const build of BUILDS) {
  const lion = lions[build];

  test(`${build}: the optimizer equals the stateless step (groups, names, lr scale, SR)`, () => {
    const n = 1000;
    const init = Array.from({ length: n }, (_, i) => Math.sin(i));
    const grad = (s) => Array.from({ length: n }, (_, i) => Math.cos(i * (s + 1)));
    const w = lion.tensor('bf16', init, { name: 'w' });
    const b = lion.tensor('f32', init.slice(0, 10), { name: 'b' });
    const opt = lion.optimizer({ lr: 1e-2, weightDecay: 0.1 }, { rounding: 'stochastic', seed: 9 });
    const noDecay = opt.addGroup({ lr: 1e-2 }, { rounding: 'stochastic', seed: 9 });
    assert.equal(opt.add(w, { name: 'layer.weight', momentum: 'bf16' }), 0);
    assert.equal(opt.add(b, { name: 'layer.bias', group: noDecay }), 1);
    assert.equal(opt.groupCount, 2);
    assert.equal(opt.tensorId('layer.bias'), 1);
    assert.deepEqual(opt.tensor('layer.weight').momentum, 'bf16');
    // The same steps by hand: tensor i's seed is seed ^ i * 0x9e3779b97f4a7c15 (its stream).
    const w2 = lion.tensor('bf16', init);
    const b2 = lion.tensor('f32', init.slice(0, 10));
    const mw = lion.tensor('bf16', n);
    const mb = lion.tensor('f32', 10);
    const seed1 = (9n ^ 0x9e3779b97f4a7c15n) & ((1n << 64n) - 1n);
    for (let s = 0; s < 5; s++) {
      const scale = 1 / (s + 1);
      opt.lrScale = scale;
      const gw = lion.tensor('f32', grad(s));
      const gb = lion.tensor('bf16', grad(s).slice(0, 10));
      const keyed = s % 3 === 0 ? [gw, gb] : s % 3 === 1 ? { 'layer.weight': gw, 'layer.bias': gb } : new Map([[0, gw], [1, gb]]);
      assert.equal(opt.step(keyed), 'applied');
      lion.step(w2, gw, mw, { lr: 1e-2 * scale, weightDecay: 0.1 }, { rounding: 'stochastic', seed: 9, step: s });
      lion.step(b2, gb, mb, { lr: 1e-2 * scale }, { rounding: 'stochastic', seed: seed1, step: s });
      gw.free();
      gb.free();
    }
    assert.equal(opt.steps, 5);
    assert.equal(opt.lrScale, 0.2);
    assert.deepEqual(bytesOf(w), bytesOf(w2));
    assert.deepEqual(bytesOf(b), bytesOf(b2));
    assert.deepEqual([...opt.momentum('layer.weight')], [...mw.view]);
    assert.deepEqual([...opt.momentum(1)], [...mb.view]);
    // A subset: only the bias.
    const gb = lion.tensor('f32', 10);
    gb.view.fill(1);
    opt.step({ 'layer.bias': gb });
    assert.equal(opt.steps, 6);
    assert.deepEqual(bytesOf(w), bytesOf(w2));
    for (const t of [w, b, w2, b2, mw, mb, gb]) t.free();
    opt.free();
  });

  test(`${build}: optimizer errors name the tensor and change nothing`, () => {
    const w = lion.tensor('f32', [1, 2, 3], { name: 'w' });
    const opt = lion.optimizer({ lr: 0.1 });
    opt.add(w, { name: 'fc.weight' });
    const short = lion.tensor('f32', 2, { name: 'g' });
    const before = bytesOf(w);
    assert.throws(() => opt.step([short]), (e) => e instanceof RangeError && /fc\.weight/.test(e.message) && /2 elements, expected 3/.test(e.message));
    assert.throws(() => opt.step({ nope: short }), (e) => e instanceof RangeError && /nope/.test(e.message));
    assert.throws(() => opt.step([]), RangeError);
    assert.throws(() => opt.add(short, { name: 'fc.weight' }), (e) => e instanceof TypeError && /taken/.test(e.message));
    assert.throws(() => opt.add(short, { group: 3 }), (e) => e instanceof RangeError && /group 3/.test(e.message));
    assert.throws(() => opt.add(short, { momentum: 'f64' }), TypeError);
    assert.throws(() => opt.addGroup({ lr: NaN }), RangeError);
    assert.throws(() => opt.addGroup({}, { step: 3 }), TypeError);
    assert.throws(() => opt.setLrScale(-1), (e) => e instanceof RangeError && /lr_scale/.test(e.message));
    assert.throws(() => (opt.lrScale = 'x'), TypeError);
    w.free();
    assert.throws(() => opt.step([lion.tensor('f32', 3)]), (e) => e instanceof TypeError && /fc\.weight/.test(e.message) && /freed/.test(e.message));
    assert.equal(opt.steps, 0);
    assert.deepEqual(before.length, 12);
    short.free();
    opt.free();
  });

  test(`${build}: state to and from an ArrayBuffer (compact checkpoint); damage is refused`, () => {
    const make = () => {
      const w = lion.tensor('f32', Array.from({ length: 300 }, (_, i) => i / 300));
      const b = lion.tensor('bf16', [0.5, -0.5]);
      const opt = lion.optimizer({ lr: 1e-2, weightDecay: 0.1 }, { rounding: 'stochastic', seed: 3 });
      opt.addGroup({ lr: 1e-3 }, { cautious: 'whole', skipNonFinite: true });
      opt.add(w, { name: 'w', momentum: 'f16' });
      opt.add(b, { name: 'b', group: 1, momentum: 'bf16' });
      return { w, b, opt };
    };
    const gw = lion.tensor('f32', Array.from({ length: 300 }, (_, i) => Math.cos(i)));
    const gb = lion.tensor('f32', [1, -1]);
    const a = make();
    for (let s = 0; s < 3; s++) a.opt.step([gw, gb]);
    const state = a.opt.saveState();
    assert.ok(state instanceof ArrayBuffer);
    assert.equal(new TextDecoder().decode(new Uint8Array(state, 0, 8)), 'LIONCRC3');
    const b = make();
    b.w.view.set(a.w.view);
    b.b.view.set(a.b.view);
    b.opt.loadState(state);
    assert.equal(b.opt.steps, 3);
    assert.deepEqual(b.opt.group(1).options.cautious, 'whole');
    assert.equal(b.opt.group(1).options.skipNonFinite, true);
    assert.equal(b.opt.group(0).options.rounding, 'stochastic');
    assert.equal(b.opt.group(0).hp.weightDecay, 0.1);
    for (const o of [a, b]) for (let s = 0; s < 2; s++) o.opt.step([gw, gb]);
    assert.deepEqual(bytesOf(a.w), bytesOf(b.w));
    assert.deepEqual(bytesOf(a.b), bytesOf(b.b));
    assert.deepEqual([...a.opt.momentum('w')], [...b.opt.momentum('w')]);
    // A flipped byte, a truncation, another optimizer's state: Error, nothing changed.
    const saved = new Uint8Array(b.opt.saveState());
    const damaged = saved.slice();
    damaged[100] ^= 1;
    assert.throws(() => b.opt.loadState(damaged), (e) => e.constructor === Error && /checksum/.test(e.message));
    assert.throws(() => b.opt.loadState(saved.subarray(0, 50)), (e) => /truncated/.test(e.message));
    assert.throws(() => b.opt.loadState('state'), TypeError);
    const other = lion.optimizer();
    assert.throws(() => other.loadState(saved), Error);
    assert.deepEqual(new Uint8Array(b.opt.saveState()), saved);
    for (const o of [a, b]) {
      o.w.free();
      o.b.free();
      o.opt.free();
    }
    other.free();
    gw.free();
    gb.free();
  });
}

// 8-bit momentum: the optimizer against lion_optim::Lion (native Rust, fixtures-q8.bin) bit for
// bit, its codes and block scales in place, and a saved state that resumes bit for bit.
const q8Cases = fixturesQ8();

test('the 8-bit fixtures cover every (params, grads) dtype pair and three option sets', () => {
  assert.equal(new Set(q8Cases.map((c) => `${c.dtypes.p}/${c.dtypes.g}`)).size, 9);
  assert.equal(q8Cases.length, 27);
  assert.ok(q8Cases.some((c) => c.options.rounding === 'stochastic'));
  assert.ok(q8Cases.some((c) => c.options.cautious === 'whole'));
  assert.ok(q8Cases.some((c) => c.n > 256 && c.n % 256 !== 0), 'a partial last block');
});

for (const build of BUILDS) {
  const lion = lions[build];

  test(`${build}: 8-bit momentum is bit-identical to the native optimizer`, () => {
    for (const c of q8Cases) {
      const label = `case ${c.index} (${c.dtypes.p}/${c.dtypes.g}, n=${c.n}, ${c.options.rounding}, cautious ${c.options.cautious})`;
      const { step, offset, ...options } = c.options; // (a group has neither)
      assert.equal(step + offset, 0n);
      const opt = lion.optimizer(c.hp, options);
      const p = lion.tensor(c.dtypes.p, c.n);
      setBytes(p, c.params);
      assert.equal(opt.add(p, { momentum: 'q8' }), 0);
      assert.equal(opt.tensor(0).momentum, 'q8');
      const g = lion.tensor(c.dtypes.g, c.n);
      for (const grads of c.grads) {
        setBytes(g, grads);
        assert.equal(opt.step([g]), 'applied', label);
      }
      assert.equal(firstDifference(c.dtypes.p, bytesOf(p), c.expected.p), -1, `${label}: params`);
      const m = opt.momentum(0);
      assert.ok(m.codes instanceof Uint8Array && m.absmax instanceof Float32Array);
      assert.deepEqual(new Uint8Array(m.codes), new Uint8Array(c.expected.codes), `${label}: codes`);
      const absmax = new Uint8Array(m.absmax.buffer, m.absmax.byteOffset, m.absmax.byteLength);
      assert.deepEqual(new Uint8Array(absmax), new Uint8Array(c.expected.absmax), `${label}: absmax`);
      opt.free();
      p.free();
      g.free();
    }
  });

  test(`${build}: the stateless step with 8-bit momentum is the optimizer's, bit for bit`, () => {
    // The optimizer's tensor 0 has stream 0, and its steps are keyed by the steps applied before
    // them (0, 1, 2): the stateless step with the same seed and step numbers rounds the same way.
    for (const c of q8Cases) {
      const label = `case ${c.index} (${c.dtypes.p}/${c.dtypes.g}, n=${c.n}, ${c.options.rounding}, cautious ${c.options.cautious})`;
      const p = lion.tensor(c.dtypes.p, c.n);
      setBytes(p, c.params);
      const m = lion.tensor('q8', c.n, { name: 'm' });
      assert.equal(m.dtype, 'q8');
      assert.equal(m.byteLength, c.n + 4 * Math.ceil(c.n / 256));
      assert.ok(m.view.codes.every((x) => x === 127) && m.view.absmax.every((x) => x === 0));
      const g = lion.tensor(c.dtypes.g, c.n);
      c.grads.forEach((grads, k) => {
        setBytes(g, grads);
        assert.equal(lion.step(p, g, m, c.hp, { ...c.options, step: k }), 'applied', label);
      });
      assert.equal(firstDifference(c.dtypes.p, bytesOf(p), c.expected.p), -1, `${label}: params`);
      const { codes, absmax } = m.view;
      assert.deepEqual(new Uint8Array(codes), new Uint8Array(c.expected.codes), `${label}: codes`);
      const scales = new Uint8Array(absmax.buffer, absmax.byteOffset, absmax.byteLength);
      assert.deepEqual(new Uint8Array(scales), new Uint8Array(c.expected.absmax), `${label}: absmax`);
      // Decoded: each element its code's value (bitsandbytes' map) times its block's scale.
      const decoded = m.toFloat32();
      assert.equal(decoded.length, c.n);
      for (let i = 0; i < c.n; i++) {
        if (Number.isNaN(absmax[i >> 8])) { // (a block with a non-finite value: all NaN)
          assert.ok(Number.isNaN(decoded[i]), `${label}: element ${i}`);
          continue;
        }
        if (codes[i] === 127) assert.equal(decoded[i], 0, `${label}: element ${i}`);
        if (codes[i] === 255) assert.equal(decoded[i], absmax[i >> 8], `${label}: element ${i}`);
        assert.ok(Math.abs(decoded[i]) <= absmax[i >> 8], `${label}: element ${i}`);
        assert.equal(Math.sign(decoded[i]) || 0, Math.sign(codes[i] - 127), `${label}: element ${i}`);
      }
      for (const t of [p, m, g]) t.free();
    }
  });

  test(`${build}: 8-bit momentum in the stateless step: many tensors, and bad input`, () => {
    const n = 300;
    const values = (k) => Array.from({ length: n }, (_, i) => Math.sin(i * k) / 4);
    const p = lion.tensor('bf16', values(1), { name: 'w' });
    const q = lion.tensor('f32', values(2), { name: 'b' });
    const g = lion.tensor('f32', values(3), { name: 'g' });
    const h = lion.tensor('f16', values(4), { name: 'h' });
    const m = lion.tensor('q8', n, { name: 'm8' });
    const mf = lion.tensor('f32', n, { name: 'mf' });
    const hp = { lr: 0.01, weightDecay: 0.1 };
    // One call over 8-bit and f32 momentum = the two single steps.
    const [p1, q1, m1, mf1] = [lion.tensor('bf16', values(1)), lion.tensor('f32', values(2)), lion.tensor('q8', n), lion.tensor('f32', n)];
    assert.equal(lion.step([p, q], [g, h], [m, mf], hp, { step: 1 }), 'applied');
    lion.step(p1, g, m1, hp, { step: 1 });
    lion.step(q1, h, mf1, hp, { step: 1 });
    assert.deepEqual(bytesOf(p), bytesOf(p1));
    assert.deepEqual(bytesOf(q), bytesOf(q1));
    assert.deepEqual([...m.view.codes], [...m1.view.codes]);
    assert.deepEqual([...m.view.absmax], [...m1.view.absmax]);
    assert.ok(m.view.codes.some((x) => x !== 127 && x !== 0 && x !== 255));
    // Bad input: nothing written anywhere.
    const snapshot = () => [bytesOf(p), bytesOf(q), [...m.view.codes], [...m.view.absmax], bytesOf(mf)];
    const before = snapshot();
    assert.throws(() => lion.step(m, g, mf, hp), (e) => e instanceof TypeError && /params/.test(e.message) && /q8/.test(e.message) && /m8/.test(e.message));
    assert.throws(() => lion.step(p, m, mf, hp), (e) => e instanceof TypeError && /grads/.test(e.message) && /q8/.test(e.message));
    assert.throws(() => lion.step([p, q], [g, h], [m, mf], hp, { offset: 100 }), (e) => e instanceof RangeError && /256/.test(e.message));
    assert.throws(() => lion.step([q, p], [h, g], [mf, lion.tensor('q8', n - 1)], hp), RangeError);
    assert.throws(() => lion.step([p, q], [g, h], [m, m], hp), (e) => e instanceof TypeError && /twice/.test(e.message));
    assert.throws(() => m.set([1]), (e) => e instanceof TypeError && /q8/.test(e.message));
    assert.throws(() => lion.optimizer().add(m), (e) => e instanceof TypeError && /q8/.test(e.message));
    assert.deepEqual(snapshot(), before);
    // A shard at a block boundary: the whole tensor's bytes.
    const whole = { p: lion.tensor('f32', values(5)), m: lion.tensor('q8', n) };
    const halves = [[0, 256], [256, n]].map(([lo, hi]) => ({
      lo, p: lion.tensor('f32', values(5).slice(lo, hi)), g: lion.tensor('f32', values(6).slice(lo, hi)), m: lion.tensor('q8', hi - lo),
    }));
    const gw = lion.tensor('f32', values(6));
    const opts = { rounding: 'stochastic', seed: 9 };
    for (const step of [1, 2]) {
      lion.step(whole.p, gw, whole.m, hp, { ...opts, step });
      for (const s of halves) lion.step(s.p, s.g, s.m, hp, { ...opts, step, offset: s.lo });
    }
    assert.deepEqual([...halves[0].p.view, ...halves[1].p.view], [...whole.p.view]);
    assert.deepEqual([...halves[0].m.view.codes, ...halves[1].m.view.codes], [...whole.m.view.codes]);
    assert.deepEqual([...halves[0].m.view.absmax, ...halves[1].m.view.absmax], [...whole.m.view.absmax]);
  });

  test(`${build}: 8-bit momentum resumes from a saved state bit for bit`, () => {
    const n = 700;
    const make = () => {
      const opt = lion.optimizer({ lr: 0.01, weightDecay: 0.1 }, { rounding: 'stochastic', seed: 3 });
      const p = lion.tensor('bf16', Array.from({ length: n }, (_, i) => Math.sin(i)));
      opt.add(p, { name: 'w', momentum: 'q8' });
      return { opt, p };
    };
    const grads = [1, 2, 3, 4].map((k) => lion.tensor('f32', Array.from({ length: n }, (_, i) => Math.cos(i * k) / 8)));
    const a = make();
    for (const g of grads) a.opt.step({ w: g });
    const b = make();
    b.opt.step({ w: grads[0] });
    b.opt.step({ w: grads[1] });
    const state = b.opt.saveState();
    const c = make();
    setBytes(c.p, bytesOf(b.p));
    c.opt.loadState(state);
    for (const g of grads.slice(2)) c.opt.step({ w: g });
    assert.deepEqual(bytesOf(c.p), bytesOf(a.p), 'params');
    assert.deepEqual([...c.opt.momentum('w').codes], [...a.opt.momentum('w').codes], 'codes');
    assert.deepEqual([...c.opt.momentum('w').absmax], [...a.opt.momentum('w').absmax], 'absmax');
    assert.ok(a.opt.momentum('w').codes.some((x) => x !== 127));
    // A state of f32 momentum does not load into an optimizer of 8-bit momentum.
    const f = lion.optimizer({ lr: 0.01, weightDecay: 0.1 }, { rounding: 'stochastic', seed: 3 });
    f.add(lion.tensor('bf16', n), { name: 'w' });
    assert.throws(() => make().opt.loadState(f.saveState()), Error);
    for (const t of [a, b, c]) t.opt.free();
    for (const g of grads) g.free();
  });
}
