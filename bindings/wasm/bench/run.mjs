// The step benchmark, in Node and in headless Chromium in one run: ns per element for f32 and
// bf16 at 4K / 64K / 1M (bench/cases.mjs). Writes bench/results/bench.json and bench.md (a
// markdown table) and docs/wasm-bench.svg (a plot).
//   node bench/run.mjs [--budget MS] [--no-browser]
// The machine this runs on is shared: numbers are minima over batches (see cases.mjs); compare
// ratios, and re-measure on a quiet machine before quoting absolute numbers.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { instantiate } from '../js/index.js';
import { LionOptimizer, ready } from '../js/tfjs.js';
import { runBench, SIZES } from './cases.mjs';
import { serve } from '../scripts/serve.mjs';

const args = process.argv.slice(2);
const budgetMs = Number(args[args.indexOf('--budget') + 1] || 400) || 400;
const browser = !args.includes('--no-browser');
const here = new URL('.', import.meta.url);

const cpuName = (() => {
  try {
    const l = execFileSync('lscpu', { encoding: 'utf8' });
    const get = (k) => l.match(new RegExp(`^${k}:\\s*(.+)$`, 'm'))?.[1]?.trim();
    return `${get('Model name')} (family ${get('CPU family')} model ${get('Model')}, ${get('CPU\\(s\\)')} CPUs, ${get('Hypervisor vendor') ?? 'no'} hypervisor)`;
  } catch {
    return 'unknown CPU';
  }
})();
const load0 = loadavg()[0];

console.log(`Node ${process.version}, ${cpuName}, load average ${load0.toFixed(1)}`);
const lions = { simd128: await instantiate({ build: 'simd128' }), scalar: await instantiate({ build: 'scalar' }) };
await ready();
const cpu = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
const nodeRows = await runBench({ lions, tf, LionOptimizer, budgetMs, cpu, log: (l) => console.log(`node  ${l}`) });
// Node: CPU time (not inflated by other processes' preemption) and wall time; Chromium: wall.
const results = [
  { env: `Node ${process.version}, CPU time`, rows: nodeRows.map((r) => ({ ...r, v: r.cpuNs })) },
  { env: `Node ${process.version}, wall time`, rows: nodeRows.map((r) => ({ ...r, v: r.ns })) },
];

if (browser) {
  const { withBrowser, openPage } = await import('../scripts/browser.mjs');
  const server = await serve();
  try {
    await withBrowser(async (context) => {
      const page = await openPage(context, `${server.url}/bench/page.html?budget=${budgetMs}`);
      const version = context.browser()?.version() ?? (await page.evaluate(() => navigator.userAgent.match(/Chrome\/([\d.]+)/)?.[1]));
      await page.waitForFunction(() => window.__bench, null, { timeout: 900_000, polling: 1000 });
      const r = await page.evaluate(() => window.__bench);
      if (r.error) throw new Error(`browser benchmark failed: ${r.error}`);
      if (page.problems.length) throw new Error(`browser benchmark: ${page.problems.join('; ')}`);
      for (const row of r.rows) console.log(`chrome ${row.impl.padEnd(28)} ${row.dtype.padEnd(5)} ${String(row.n).padStart(8)}  wall ${row.ns.toFixed(3)} ns/elem`);
      results.push({ env: `Chromium ${version} (headless), wall time`, rows: r.rows.map((x) => ({ ...x, v: x.ns })) });
    });
  } finally {
    await server.close();
  }
}

const load1 = loadavg()[0];
const fmtN = (n) => (n >= 1 << 20 ? `${n >> 20}M` : `${n >> 10}K`);
const IMPLS = ['lion-optim simd128', 'lion-optim scalar', 'JS loop', 'tfjs-ops Lion (tfjs wasm)', 'tfjs Adam (tfjs wasm)', 'lion-optim tfjs optimizer'];
let md = `ns per element of one optimizer step (lower is better; minimum over batches of >= 10 ms). ${cpuName}; ` +
  `a shared, noisy machine (load average ${load0.toFixed(1)} at the start, ${load1.toFixed(1)} at the end, on 2 cores): ` +
  'wall times of slow steps are inflated by preemption (the Node CPU-time rows are not); compare ratios.\n\n';
md += `| environment | implementation | dtype | ${SIZES.map(fmtN).join(' | ')} |\n|---|---|---|${SIZES.map(() => '---:').join('|')}|\n`;
for (const { env, rows } of results) {
  for (const dtype of ['f32', 'bf16']) {
    for (const impl of IMPLS) {
      const cells = SIZES.map((n) => rows.find((r) => r.impl === impl && r.dtype === dtype && r.n === n));
      if (cells.every((c) => !c)) continue;
      md += `| ${env} | ${impl} | ${dtype} | ${cells.map((c) => (c ? c.v.toFixed(2) : '')).join(' | ')} |\n`;
    }
  }
}
md += '\nAt 1M f32, lion-optim simd128 is:\n\n';
for (const { env, rows } of results) {
  const at = (impl) => rows.find((r) => r.impl === impl && r.dtype === 'f32' && r.n === 1 << 20)?.v;
  const s = at('lion-optim simd128');
  const parts = [['JS loop', 3], ['tfjs-ops Lion (tfjs wasm)', 10], ['tfjs Adam (tfjs wasm)', null]]
    .filter(([impl]) => at(impl)).map(([impl, goal]) => `${(at(impl) / s).toFixed(1)}x faster than ${impl}${goal ? ` (goal >= ${goal}x)` : ''}`);
  md += `- ${env}: ${parts.join(', ')}\n`;
}

mkdirSync(new URL('results/', here), { recursive: true });
writeFileSync(new URL('results/bench.json', here), JSON.stringify({ cpu: cpuName, load: [load0, load1], results }, null, 1));
writeFileSync(new URL('results/bench.md', here), md);
writeFileSync(new URL('../docs/wasm-bench.svg', here), svg(results.filter((r) => !r.env.startsWith('Node') || r.env.endsWith('CPU time'))));
console.log(`\n${md}\nwrote bench/results/bench.{json,md} and docs/wasm-bench.svg`);

/** A log-log plot per environment: ns/elem against size, one line per implementation and dtype. */
function svg(results) {
  const W = 460;
  const H = 330;
  const pad = { l: 54, r: 14, t: 34, b: 40 };
  const colors = { 'lion-optim simd128': '#1f77b4', 'lion-optim scalar': '#17becf', 'JS loop': '#ff7f0e',
    'tfjs-ops Lion (tfjs wasm)': '#d62728', 'tfjs Adam (tfjs wasm)': '#9467bd', 'lion-optim tfjs optimizer': '#2ca02c' };
  const all = results.flatMap((r) => r.rows.map((x) => x.v)).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...all)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...all)));
  const x = (n) => pad.l + ((Math.log2(n) - 12) / 8) * (W - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (H - pad.t - pad.b);
  const legendH = 22 * 2;
  let out = `<svg xmlns="http://www.w3.org/2000/svg" width="${W * results.length}" height="${H + legendH + 20}" font-family="sans-serif" font-size="11">\n`;
  out += `<rect width="100%" height="100%" fill="#fff"/>\n`;
  results.forEach(({ env, rows }, k) => {
    const ox = k * W;
    out += `<g transform="translate(${ox},0)">\n<text x="${W / 2}" y="18" text-anchor="middle" font-size="12">${env}: ns/element/step (log)</text>\n`;
    for (let d = Math.round(Math.log10(lo)); d <= Math.round(Math.log10(hi)); d++) {
      const v = 10 ** d;
      out += `<line x1="${pad.l}" x2="${W - pad.r}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/><text x="${pad.l - 6}" y="${y(v) + 4}" text-anchor="end">${d >= 0 ? v : v.toFixed(-d)}</text>\n`;
    }
    for (const n of SIZES) {
      out += `<line x1="${x(n)}" x2="${x(n)}" y1="${pad.t}" y2="${H - pad.b}" stroke="#eee"/><text x="${x(n)}" y="${H - pad.b + 16}" text-anchor="middle">${fmtN(n)}</text>\n`;
    }
    out += `<text x="${(pad.l + W - pad.r) / 2}" y="${H - 8}" text-anchor="middle">elements</text>\n`;
    for (const impl of IMPLS) {
      for (const dtype of ['f32', 'bf16']) {
        const pts = SIZES.map((n) => rows.find((r) => r.impl === impl && r.dtype === dtype && r.n === n)).filter((r) => r && r.v > 0);
        if (!pts.length) continue;
        const dash = dtype === 'bf16' ? ' stroke-dasharray="5,3"' : '';
        out += `<polyline fill="none" stroke="${colors[impl]}" stroke-width="2"${dash} points="${pts.map((r) => `${x(r.n).toFixed(1)},${y(r.v).toFixed(1)}`).join(' ')}"/>\n`;
        for (const r of pts) out += `<circle cx="${x(r.n).toFixed(1)}" cy="${y(r.v).toFixed(1)}" r="2.5" fill="${colors[impl]}"/>\n`;
      }
    }
    out += '</g>\n';
  });
  IMPLS.forEach((impl, i) => {
    const lx = 20 + (i % 3) * 300;
    const ly = H + 12 + Math.floor(i / 3) * 20;
    out += `<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="${colors[impl]}" stroke-width="2"/><text x="${lx + 30}" y="${ly + 4}">${impl}</text>\n`;
  });
  out += `<text x="20" y="${H + legendH + 14}" fill="#555">solid: f32 (params, grads, momentum); dashed: bf16. ${cpuName}; a shared, noisy machine.</text>\n`;
  return `${out}</svg>\n`;
}
