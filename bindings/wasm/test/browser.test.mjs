// The demo page in real headless Chromium (Debian's, through playwright-core): served on
// localhost, the Train button clicked; training must reach > 90% test accuracy with no console
// error; a screenshot is saved to test/out/wasm-demo.png. A second run trains bf16 parameters
// with stochastic rounding on the scalar build (forced by the page's URL), a third the same with
// 8-bit momentum on the simd128 build.
// Set LION_SKIP_BROWSER=1 to skip (then this file reports a skipped test, not a pass).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { serve } from '../scripts/serve.mjs';

const skip = process.env.LION_SKIP_BROWSER === '1' ? 'LION_SKIP_BROWSER=1' : false;
const out = new URL('out/', import.meta.url);

test('the demo trains the spirals MLP in Chromium', { skip, timeout: 240_000 }, async () => {
  const { withBrowser, openPage, CHROMIUM } = await import('../scripts/browser.mjs');
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install chromium; ci/wasm-npm.sh does)`);
  mkdirSync(out, { recursive: true });
  const server = await serve();
  try {
    await withBrowser(async (context) => {
      const page = await openPage(context, `${server.url}/demo/`);
      await page.waitForFunction(() => window.__ready === true, null, { timeout: 30_000 });
      await page.click('#train');
      await page.waitForFunction(() => window.__result?.done, null, { timeout: 180_000, polling: 250 });
      const r = await page.evaluate(() => window.__result);
      assert.equal(r.error, undefined, `the run failed: ${r.error} ${page.problems}`);
      await page.screenshot({ path: new URL('wasm-demo.png', out).pathname, fullPage: true });
      console.log(`demo (${r.build}, ${r.params}): ${r.steps} steps in ${r.seconds.toFixed(1)} s, test accuracy ${(100 * r.testAccuracy).toFixed(1)}%`);
      assert.equal(r.build, 'simd128');
      assert.ok(r.testAccuracy > 0.9, `test accuracy ${r.testAccuracy}`);
      assert.deepEqual(page.problems, []);

      const page2 = await openPage(context, `${server.url}/demo/?build=scalar&params=bf16-sr&autostart=1`);
      await page2.waitForFunction(() => window.__result?.done, null, { timeout: 180_000, polling: 250 });
      const r2 = await page2.evaluate(() => window.__result);
      assert.equal(r2.error, undefined, `the scalar run failed: ${r2.error} ${page2.problems}`);
      console.log(`demo (${r2.build}, ${r2.params}): ${r2.steps} steps in ${r2.seconds.toFixed(1)} s, test accuracy ${(100 * r2.testAccuracy).toFixed(1)}%`);
      assert.equal(r2.build, 'scalar');
      assert.ok(r2.testAccuracy > 0.9, `test accuracy ${r2.testAccuracy}`);
      assert.deepEqual(page2.problems, []);

      // 8-bit momentum (bf16 parameters, stochastic rounding), simd128 build.
      const page3 = await openPage(context, `${server.url}/demo/?params=bf16-sr-q8&autostart=1`);
      await page3.waitForFunction(() => window.__result?.done, null, { timeout: 180_000, polling: 250 });
      const r3 = await page3.evaluate(() => window.__result);
      assert.equal(r3.error, undefined, `the 8-bit run failed: ${r3.error} ${page3.problems}`);
      console.log(`demo (${r3.build}, ${r3.params}): ${r3.steps} steps in ${r3.seconds.toFixed(1)} s, test accuracy ${(100 * r3.testAccuracy).toFixed(1)}%`);
      assert.equal(r3.params, 'bf16-sr-q8');
      assert.ok(r3.testAccuracy > 0.9, `test accuracy ${r3.testAccuracy}`);
      assert.deepEqual(page3.problems, []);
    });
  } finally {
    await server.close();
  }
});
