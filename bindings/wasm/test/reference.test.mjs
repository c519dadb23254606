// Bit-identity with lion_optim::reference::step_with (the specification), through the JS API, for
// every (params, grads, momentum) dtype combination, every hyperparameter and option set of the
// shared fixtures, both wasm builds. The expected bytes come from the Rust generator
// (src/bin/fixtures.rs), not from this file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { instances, fixtures, firstDifference, bytesOf, setBytes, BUILDS } from './helpers.mjs';

const cases = fixtures();
const lions = await instances();

test('the fixtures cover all 27 dtype combinations, 7 hyperparameter sets, 5 option sets', () => {
  const combos = new Set(cases.map((c) => `${c.dtypes.p}/${c.dtypes.g}/${c.dtypes.m}`));
  assert.equal(combos.size, 27);
  assert.equal(cases.length, 27 * 7 * 5);
  assert.ok(cases.some((c) => c.skipped), 'some case skips a non-finite step');
  assert.ok(cases.some((c) => c.options.rounding === 'stochastic'));
  assert.ok(cases.some((c) => typeof c.options.cautious === 'object'));
});

for (const build of BUILDS) {
  test(`${build}: every case is bit-identical to the reference`, () => {
    const lion = lions[build];
    assert.equal(lion.build, build);
    let checked = 0;
    for (const c of cases) {
      const { p: pd, g: gd, m: md } = c.dtypes;
      const label = `case ${c.index} (${pd}/${gd}/${md}, n=${c.n}, hp ${JSON.stringify(c.hp)})`;
      const p = lion.tensor(pd, c.n, { name: 'p' });
      const g = lion.tensor(gd, c.n, { name: 'g' });
      const m = lion.tensor(md, c.n, { name: 'm' });
      setBytes(p, c.input.p);
      setBytes(g, c.input.g);
      setBytes(m, c.input.m);
      const outcome = lion.step(p, g, m, c.hp, c.options);
      assert.equal(outcome, c.skipped ? 'skipped' : 'applied', label);
      const dp = firstDifference(pd, bytesOf(p), c.expected.p);
      const dm = firstDifference(md, bytesOf(m), c.expected.m);
      assert.equal(dp, -1, `${label}: params differ at element ${dp}`);
      assert.equal(dm, -1, `${label}: momentum differs at element ${dm}`);
      assert.deepEqual(bytesOf(g), c.input.g, `${label}: grads changed`);
      p.free();
      g.free();
      m.free();
      checked++;
    }
    assert.equal(checked, cases.length);
  });

  test(`${build}: a many-tensor step equals the tensors stepped one by one`, () => {
    // step_many over every combination at once (nearest rounding: each tensor's own stream only
    // changes stochastic rounding).
    const lion = lions[build];
    const chosen = cases.filter((c) => c.options.rounding === 'nearest' && !c.options.skipNonFinite &&
      typeof c.options.cautious !== 'object' && c.n > 0 && c.hp.lr === 3e-4);
    assert.ok(chosen.length >= 27);
    const make = (c) => ['p', 'g', 'm'].map((r) => {
      const t = lion.tensor(c.dtypes[r], c.n);
      setBytes(t, c.input[r]);
      return t;
    });
    const all = chosen.map(make);
    const { hp, options } = chosen[0];
    const same = chosen.filter((c) => JSON.stringify(c.options, (k, v) => (typeof v === 'bigint' ? String(v) : v)) ===
      JSON.stringify(options, (k, v) => (typeof v === 'bigint' ? String(v) : v)));
    const sets = all.filter((_, i) => same.includes(chosen[i]));
    assert.equal(lion.step(sets.map((s) => s[0]), sets.map((s) => s[1]), sets.map((s) => s[2]), hp, options), 'applied');
    sets.forEach(([p, , m], i) => {
      const c = same[i];
      assert.equal(firstDifference(c.dtypes.p, bytesOf(p), c.expected.p), -1, `case ${c.index} params`);
      assert.equal(firstDifference(c.dtypes.m, bytesOf(m), c.expected.m), -1, `case ${c.index} momentum`);
    });
    all.flat().forEach((t) => t.free());
  });
}

test('both builds give the same bytes on long random tensors (all 27 combinations)', () => {
  const dtypes = ['f32', 'f16', 'bf16'];
  const n = 10_007;
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 4 - 2;
  for (const pd of dtypes) for (const gd of dtypes) for (const md of dtypes) {
    const values = [pd, gd, md].map(() => Array.from({ length: n }, rand));
    const results = BUILDS.map((b) => {
      const lion = lions[b];
      const [p, g, m] = [pd, gd, md].map((d, i) => lion.tensor(d, values[i]));
      lion.step(p, g, m, { lr: 1e-3, weightDecay: 0.1 }, { rounding: 'stochastic', seed: 7, step: 3 });
      const out = [bytesOf(p), bytesOf(m)];
      [p, g, m].forEach((t) => t.free());
      return out;
    });
    assert.deepEqual(results[0], results[1], `${pd}/${gd}/${md}`);
  }
});
