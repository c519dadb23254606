// Shared by the Node tests: the two builds, fixture parsing, NaN-aware bit comparison.
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { instantiate, simdSupported } from '../js/index.js';

// LION_BUILDS=simd128 runs one build (while the other is being built); CI runs both.
export const BUILDS = (process.env.LION_BUILDS ?? 'simd128,scalar').split(',');
export const root = fileURLToPath(new URL('..', import.meta.url));

/** A fresh instance of each build (Node has simd128, so both run here). */
export async function instances() {
  if (!simdSupported()) throw new Error('this Node has no wasm simd128');
  return Object.fromEntries(await Promise.all(BUILDS.map(async (b) => [b, await instantiate({ build: b })])));
}

const DTYPES = ['f32', 'f16', 'bf16'];
const SIZE = { f32: 4, f16: 2, bf16: 2 };

/**
 * A fixtures file (`path`, or `name` beside this file) whose first 8 bytes are `magic` (else:
 * "not `what`"): its bytes, a view of them, and its case count (the u32 after the magic).
 */
function readFixtures(path, name, magic, what) {
  path ??= new URL(name, import.meta.url);
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: run \`cargo run --release -p lion-optim-wasm --bin fixtures -- bindings/wasm/test/fixtures.bin\` (ci/wasm-npm.sh does)`);
  }
  const buf = readFileSync(path);
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== magic) throw new Error(`not ${what}`);
  return { bytes, dv, count: dv.getUint32(8, true) };
}

/** The cases of test/fixtures.bin (written by `cargo run -p lion-optim-wasm --bin fixtures`). */
export function fixtures() {
  const { bytes, dv, count } = readFixtures(process.env.LION_FIXTURES, 'fixtures.bin', 'LIONFIX1', 'a fixtures file');
  let at = 12;
  const cases = [];
  for (let c = 0; c < count; c++) {
    const [p, g, m] = [0, 1, 2].map((i) => DTYPES[bytes[at + i]]);
    const skipped = bytes[at + 3] === 1;
    const group = decodeGroupBlock(dv, at + 4);
    at += 4 + 96;
    const n = dv.getUint32(at, true);
    at += 4;
    const take = (dtype) => {
      const s = bytes.subarray(at, at + n * SIZE[dtype]);
      at += n * SIZE[dtype];
      return s;
    };
    const input = { p: take(p), g: take(g), m: take(m) };
    const expected = { p: take(p), m: take(m) };
    cases.push({ index: c, dtypes: { p, g, m }, skipped, ...group, n, input, expected });
  }
  return cases;
}

/**
 * The 8-bit cases of test/fixtures-q8.bin (written beside fixtures.bin by the same generator):
 * an optimizer with one tensor of 'q8' momentum, its params, each step's grads, and after the
 * last step the params, codes and block scales of lion_optim::Lion.
 */
export function fixturesQ8() {
  const { bytes, dv, count } = readFixtures(process.env.LION_FIXTURES_Q8, 'fixtures-q8.bin', 'LIONQ8F1', 'an 8-bit fixtures file');
  let at = 12;
  const cases = [];
  for (let c = 0; c < count; c++) {
    const [p, g] = [0, 1].map((i) => DTYPES[bytes[at + i]]);
    const steps = bytes[at + 2];
    const group = decodeGroupBlock(dv, at + 4);
    at += 4 + 96;
    const n = dv.getUint32(at, true);
    at += 4;
    const take = (len) => {
      const s = bytes.subarray(at, at + len);
      at += len;
      return s;
    };
    const params = take(n * SIZE[p]);
    const grads = Array.from({ length: steps }, () => take(n * SIZE[g]));
    const expected = { p: take(n * SIZE[p]), codes: take(n), absmax: take(4 * Math.ceil(n / 256)) };
    cases.push({ index: c, dtypes: { p, g }, ...group, n, params, grads, expected });
  }
  return cases;
}

/** The hyperparameters and options of a group block, as the JS API takes them. */
function decodeGroupBlock(dv, at) {
  const f = (i) => dv.getFloat64(at + 8 * i, true);
  const u = (i) => dv.getBigUint64(at + 48 + 8 * i, true);
  const flags = dv.getUint32(at + 88, true);
  const cautious = dv.getUint32(at + 92, true);
  const hp = { lr: f(0), beta1: f(1), beta2: f(2), weightDecay: f(3) };
  const options = {
    maximize: (flags & 1) !== 0,
    gradUnscale: flags & 2 ? f(4) : undefined,
    maxLr: flags & 4 ? f(5) : undefined,
    rounding: flags & 8 ? 'stochastic' : 'nearest',
    seed: u(0),
    step: u(1),
    offset: u(2),
    cautious: cautious === 1 ? 'whole' : cautious === 2 ? { agreeing: u(3), numel: u(4) } : false,
    skipNonFinite: (flags & 16) !== 0,
  };
  return { hp, options };
}

function isNaNBits(dtype, bits) {
  if (dtype === 'f32') return (bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0;
  if (dtype === 'f16') return (bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0;
  return (bits & 0x7f80) === 0x7f80 && (bits & 0x7f) !== 0;
}

/** The first element where `got` and `want` (bytes of `dtype`) differ (a NaN matches any NaN), or -1. */
export function firstDifference(dtype, got, want) {
  const size = SIZE[dtype];
  const read = (b, i) => (size === 4
    ? (b[4 * i] | (b[4 * i + 1] << 8) | (b[4 * i + 2] << 16) | (b[4 * i + 3] << 24)) >>> 0
    : b[2 * i] | (b[2 * i + 1] << 8));
  const n = want.length / size;
  if (got.length !== want.length) return 0;
  for (let i = 0; i < n; i++) {
    const [a, b] = [read(got, i), read(want, i)];
    if (a !== b && !(isNaNBits(dtype, a) && isNaNBits(dtype, b))) return i;
  }
  return -1;
}

/** The bytes of a tensor, copied. */
export function bytesOf(t) {
  const v = t.view;
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice();
}

/** Sets a tensor's raw bytes (bit patterns kept exactly, NaN payloads included). */
export function setBytes(t, bytes) {
  const v = t.view;
  new Uint8Array(v.buffer, v.byteOffset, v.byteLength).set(bytes);
}
