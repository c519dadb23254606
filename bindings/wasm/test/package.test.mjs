// The npm package as users get it: `npm pack`, `npm install ./lion-optim-x.y.z.tgz` in an empty
// project (offline: it has no dependencies), then import it from an ES module, from CommonJS
// (require of an ES module, Node >= 20.19), and type-check a TypeScript consumer (tsc --strict).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './helpers.mjs';

const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

test('npm pack -> npm install ./lion-optim-x.y.z.tgz -> import works', { timeout: 180_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'lion-optim-pack-'));
  try {
    const [packed] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], root));
    const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
    assert.equal(packed.filename, `lion-optim-${version}.tgz`);
    const files = packed.files.map((f) => f.path).sort();
    assert.deepEqual(files, ['README.md', 'js/index.d.ts', 'js/index.js', 'js/tfjs.d.ts', 'js/tfjs.js', 'package.json',
      'wasm/lion_optim_scalar.wasm', 'wasm/lion_optim_simd128.wasm']);
    console.log(`${packed.filename}: ${packed.size} bytes packed, ${packed.unpackedSize} unpacked`);

    const app = join(dir, 'app');
    run('mkdir', ['-p', app], dir);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    run('npm', ['install', '--offline', '--no-audit', '--no-fund', `../${packed.filename}`], app);

    writeFileSync(join(app, 'use.mjs'), `
      import { load, simdSupported } from 'lion-optim';
      const results = [];
      for (const build of ['auto', 'scalar']) {
        const lion = await load({ build });
        const p = lion.tensor('bf16', [1, 1, 1]);
        const g = lion.tensor('f32', [1, -1, 0]);
        const m = lion.tensor('f32', 3);
        const outcome = lion.step(p, g, m, { lr: 0.25 });
        results.push({ build: lion.build, outcome, params: [...p.toFloat32()] });
      }
      console.log(JSON.stringify({ simd: simdSupported(), results }));
    `);
    const out = JSON.parse(run('node', ['use.mjs'], app));
    assert.deepEqual(out, {
      simd: true,
      results: [
        { build: 'simd128', outcome: 'applied', params: [0.75, 1.25, 1] },
        { build: 'scalar', outcome: 'applied', params: [0.75, 1.25, 1] },
      ],
    });

    // CommonJS: require() of the ES module (no top-level await in it).
    const [major, minor] = process.versions.node.split('.').map(Number);
    if (major > 20 || (major === 20 && minor >= 19)) {
      writeFileSync(join(app, 'use.cjs'), `
        const { load } = require('lion-optim');
        load().then((lion) => console.log(lion.build));
      `);
      assert.equal(run('node', ['use.cjs'], app).trim(), 'simd128');
    }

    // TypeScript: the declarations type-check a consumer and catch a wrong option name.
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const flags = ['--strict', '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022',
      '--lib', 'es2022,dom', '--types', 'node', '--typeRoots', join(root, 'node_modules', '@types'), '--skipLibCheck', 'false'];
    writeFileSync(join(app, 'use.mts'), `
      import { load, type Tensor, type Optimizer } from 'lion-optim';
      const lion = await load();
      const w: Tensor<'bf16'> = lion.tensor('bf16', 8, { name: 'w' });
      const bits: Uint16Array = w.view;
      const g = lion.tensor('f32', 8);
      const opt: Optimizer = lion.optimizer({ lr: 1e-3, weightDecay: 0.1 }, { rounding: 'stochastic', seed: 1n });
      opt.add(w, { name: 'w', momentum: 'bf16' });
      const outcome: 'applied' | 'skipped' = opt.step({ w: g });
      const state: ArrayBuffer = opt.saveState();
      const m8 = lion.tensor('q8', 8);
      const codes: Uint8Array = m8.view.codes;
      lion.step(w, g, m8, { lr: 1e-3 }, { step: 1n });
      console.log(bits.length, outcome, state.byteLength, codes.length);
    `);
    run('node', [tsc, ...flags, 'use.mts'], app);
    writeFileSync(join(app, 'bad.mts'), `
      import { load } from 'lion-optim';
      const lion = await load();
      const p = lion.tensor('f32', 2);
      lion.step(p, p, p, { learning_rate: 1 });
    `);
    assert.throws(() => run('node', [tsc, ...flags, 'bad.mts'], app), (e) => /learning_rate/.test(e.stdout));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
