// lion-optim: the Lion optimizer step over WebAssembly, bit-identical to the Rust crate's
// specification (lion_optim::reference) for f32/f16/bf16 parameters, gradients and momentum in
// any combination.
//
// Tensors live in the wasm memory of a module instance (`lion.tensor(...)`); JS sees them through
// typed-array views (`tensor.view`: Float32Array for f32, Uint16Array holding the bits for f16
// and bf16) that are re-created whenever the memory has grown, so a view read from `.view` is
// never a detached one. A step copies nothing: it passes handles. Freeing is explicit, and any
// use after `free()` throws a TypeError. Bad input throws a TypeError or RangeError naming the
// tensor, and nothing is written.
//
// One ES module for Node >= 20 and browsers; two wasm builds (simd128 and scalar), picked by
// `WebAssembly.validate` of a 29-byte module that uses one simd128 instruction.

const ABI = 1;
/** Element types with their interface tags; 'q8' (8-bit momentum) is tag 3. */
const DTYPES = ['f32', 'f16', 'bf16', 'q8'];
const TAG_ANY = 255;
const GROUP_BLOCK = 96;
const FILES = { simd128: 'lion_optim_simd128.wasm', scalar: 'lion_optim_scalar.wasm' };
const U64_MAX = (1n << 64n) - 1n;

// (module (func (result v128) i32.const 0 i32x4.splat)): valid only where simd128 is.
const SIMD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b,
  0x03, 0x02, 0x01, 0x00, 0x0a, 0x08, 0x01, 0x06, 0x00, 0x41, 0x00, 0xfd, 0x11, 0x0b,
]);

/** Whether this engine runs wasm simd128 (so `load()` picks the simd128 build). */
export function simdSupported() {
  return WebAssembly.validate(SIMD_PROBE);
}

/** The URL of a build's .wasm file inside the package. */
export function wasmUrl(build) {
  if (!(build in FILES)) throw new TypeError(`build must be 'simd128' or 'scalar', not ${describe(build)}`);
  return new URL(`../wasm/${FILES[build]}`, import.meta.url);
}

async function compileFrom(source) {
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) return WebAssembly.compile(source);
  if (typeof Response !== 'undefined' && source instanceof Response) return compileResponse(source);
  const url = source instanceof URL ? source : new URL(String(source), import.meta.url);
  if (url.protocol === 'file:') {
    // Node (and other runtimes with node:fs): read the file; fetch() does not take file: URLs.
    const fs = await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:fs/promises');
    return WebAssembly.compile(await fs.readFile(url));
  }
  return compileResponse(await fetch(url));
}

async function compileResponse(res) {
  if (!res.ok) throw new Error(`lion-optim: fetching ${res.url} failed: HTTP ${res.status}`);
  const type = res.headers.get('content-type') || '';
  if (typeof WebAssembly.compileStreaming === 'function' && type.startsWith('application/wasm')) {
    return WebAssembly.compileStreaming(res);
  }
  return WebAssembly.compile(await res.arrayBuffer());
}

const shared = new Map();

/**
 * The module instance for a build, loaded once and shared: `load()` picks simd128 where the
 * engine has it, else scalar. Options: `build` ('auto' | 'simd128' | 'scalar'), `module` (a
 * WebAssembly.Module, the .wasm bytes, a URL or a Response: where to take the build from, e.g.
 * a CDN or a bundler's asset URL; never shared).
 */
export function load(options = {}) {
  let build;
  try {
    build = resolveBuild(options.build);
  } catch (e) {
    return Promise.reject(e);
  }
  if (options.module !== undefined) return instantiate({ ...options, build });
  if (!shared.has(build)) {
    const p = instantiate({ build });
    p.catch(() => shared.delete(build));
    shared.set(build, p);
  }
  return shared.get(build);
}

/** A new, separate module instance (its own memory): same options as `load`. */
export async function instantiate(options = {}) {
  const build = resolveBuild(options.build);
  const module = await compileFrom(options.module ?? wasmUrl(build));
  const instance = await WebAssembly.instantiate(module, {});
  return new LionWasm(instance, build);
}

function resolveBuild(build = 'auto') {
  if (build === 'auto') return simdSupported() ? 'simd128' : 'scalar';
  if (build === 'simd128' && !simdSupported()) {
    throw new TypeError('this engine has no wasm simd128: use the scalar build');
  }
  if (build in FILES) return build;
  throw new TypeError(`build must be 'auto', 'simd128' or 'scalar', not ${describe(build)}`);
}

function describe(x) {
  if (typeof x === 'string') return JSON.stringify(x);
  if (x === null || x === undefined || typeof x !== 'object') return String(x);
  return x.constructor?.name ?? 'an object';
}

function check(value, type, what) {
  if (typeof value !== type) throw new TypeError(`${what} must be a ${type}, not ${describe(value)}`);
  return value;
}

function u64(value, what) {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`${what} must be an integer in [0, 2^53) (or a bigint), not ${value}`);
    }
    return BigInt(value);
  }
  if (typeof value === 'bigint') {
    if (value < 0n || value > U64_MAX) throw new RangeError(`${what} must be in [0, 2^64), not ${value}`);
    return value;
  }
  throw new TypeError(`${what} must be a number or a bigint, not ${describe(value)}`);
}

function noUnknownKeys(obj, known, what) {
  if (obj === undefined || obj === null) return {};
  if (typeof obj !== 'object') throw new TypeError(`${what} must be an object, not ${describe(obj)}`);
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) throw new TypeError(`${what} has no field ${JSON.stringify(k)} (known: ${known.join(', ')})`);
  }
  return obj;
}

const HP_KEYS = ['lr', 'beta1', 'beta2', 'weightDecay'];
const OPTION_KEYS = ['maximize', 'gradUnscale', 'maxLr', 'rounding', 'seed', 'step', 'offset', 'cautious', 'skipNonFinite'];
const GROUP_OPTION_KEYS = OPTION_KEYS.filter((k) => k !== 'step' && k !== 'offset');

/** Writes hyperparameters and options as a group block (see src/lib.rs) at `dv[at..]`. */
function encodeGroup(dv, at, hp, options, ctx, keys = OPTION_KEYS) {
  hp = noUnknownKeys(hp, HP_KEYS, `${ctx}: hyperparameters`);
  options = noUnknownKeys(options, keys, `${ctx}: options`);
  const num = (v, dflt, name) => (v === undefined ? dflt : check(v, 'number', `${ctx}: ${name}`));
  dv.setFloat64(at, num(hp.lr, 1e-4, 'lr'), true);
  dv.setFloat64(at + 8, num(hp.beta1, 0.9, 'beta1'), true);
  dv.setFloat64(at + 16, num(hp.beta2, 0.99, 'beta2'), true);
  dv.setFloat64(at + 24, num(hp.weightDecay, 0, 'weightDecay'), true);
  let flags = 0;
  const bool = (v, name) => v !== undefined && check(v, 'boolean', `${ctx}: ${name}`);
  if (bool(options.maximize, 'maximize')) flags |= 1;
  const unscale = options.gradUnscale ?? undefined;
  if (unscale !== undefined) flags |= 2;
  dv.setFloat64(at + 32, num(unscale, 0, 'gradUnscale'), true);
  const maxLr = options.maxLr ?? undefined;
  if (maxLr !== undefined) flags |= 4;
  dv.setFloat64(at + 40, num(maxLr, 0, 'maxLr'), true);
  const rounding = options.rounding ?? 'nearest';
  if (rounding === 'stochastic') flags |= 8;
  else if (rounding !== 'nearest') {
    throw new TypeError(`${ctx}: rounding must be 'nearest' or 'stochastic', not ${describe(rounding)}`);
  }
  dv.setBigUint64(at + 48, u64(options.seed ?? 0, `${ctx}: seed`), true);
  dv.setBigUint64(at + 56, u64(options.step ?? 0, `${ctx}: step`), true);
  dv.setBigUint64(at + 64, u64(options.offset ?? 0, `${ctx}: offset`), true);
  const c = options.cautious ?? false;
  let cautious = 0;
  let agreeing = 0n;
  let numel = 0n;
  if (c === true || c === 'whole') cautious = 1;
  else if (typeof c === 'object' && c !== null) {
    noUnknownKeys(c, ['agreeing', 'numel'], `${ctx}: cautious`);
    cautious = 2;
    agreeing = u64(c.agreeing, `${ctx}: cautious.agreeing`);
    numel = u64(c.numel, `${ctx}: cautious.numel`);
  } else if (c !== false && c !== 'off') {
    throw new TypeError(`${ctx}: cautious must be false, true, 'whole' or { agreeing, numel }, not ${describe(c)}`);
  }
  dv.setBigUint64(at + 72, agreeing, true);
  dv.setBigUint64(at + 80, numel, true);
  if (bool(options.skipNonFinite, 'skipNonFinite')) flags |= 16;
  dv.setUint32(at + 88, flags, true);
  dv.setUint32(at + 92, cautious, true);
}

/** Reads a group block back into `{ hp, options }` (the optimizer's group settings). */
function decodeGroup(dv, at) {
  const f = (i) => dv.getFloat64(at + 8 * i, true);
  const u = (i) => dv.getBigUint64(at + 48 + 8 * i, true);
  const flags = dv.getUint32(at + 88, true);
  const cautiousTag = dv.getUint32(at + 92, true);
  const hp = { lr: f(0), beta1: f(1), beta2: f(2), weightDecay: f(3) };
  const options = {
    maximize: (flags & 1) !== 0,
    gradUnscale: flags & 2 ? f(4) : null,
    maxLr: flags & 4 ? f(5) : null,
    rounding: flags & 8 ? 'stochastic' : 'nearest',
    seed: u(0),
    cautious: cautiousTag === 1 ? 'whole' : cautiousTag === 2 ? { agreeing: u(3), numel: u(4) } : false,
    skipNonFinite: (flags & 16) !== 0,
  };
  return { hp, options };
}

const ERRORS = [null, TypeError, RangeError, TypeError, Error, RangeError];

let handleOf; // (tensor) => its handle, or throws if freed (set in Tensor's static block)
let runtimeOf;

/**
 * A tensor in a module instance's memory: `length` elements of `dtype`, or 8-bit momentum
 * (`dtype` 'q8': codes and block scales, only ever the momentum of a step). Create it with
 * `lion.tensor(dtype, lengthOrValues, { name })`.
 */
export class Tensor {
  #rt;
  #handle;
  #dtype;
  #length;
  #buffer = null;
  #view = null;
  /** A name for messages (default `tensor#<n>`). */
  name;

  static {
    handleOf = (t, what) => {
      if (!(t instanceof Tensor)) throw new TypeError(`${what} must be a Tensor, not ${describe(t)}`);
      if (t.#handle === 0) throw new TypeError(`${what} (tensor ${JSON.stringify(t.name)}) was freed`);
      return t.#handle;
    };
    runtimeOf = (t) => t.#rt;
  }

  /** @internal use `lion.tensor(...)` */
  constructor(rt, handle, dtype, length, name) {
    if (!(rt instanceof LionWasm)) throw new TypeError('create tensors with lion.tensor(dtype, length)');
    this.#rt = rt;
    this.#handle = handle;
    this.#dtype = dtype;
    this.#length = length;
    this.name = name ?? `tensor#${handle & 0xfffff}`;
  }

  /** 'f32', 'f16', 'bf16' or 'q8'. */
  get dtype() {
    return this.#dtype;
  }
  get length() {
    return this.#length;
  }
  /** Bytes of storage. */
  get byteLength() {
    if (this.#dtype === 'q8') return this.#length + 4 * Math.ceil(this.#length / 256);
    return this.#length * (this.#dtype === 'f32' ? 4 : 2);
  }
  /** Whether `free()` was called. */
  get freed() {
    return this.#handle === 0;
  }

  /**
   * The elements, in place: a Float32Array (f32) or a Uint16Array of the bits (f16, bf16) over
   * the wasm memory; for 'q8' `{ codes, absmax }` (as `Optimizer.momentum`). Re-created when the
   * memory has grown (which detaches earlier views): read `.view` again after any call that may
   * allocate (creating tensors or optimizers, adding tensors, saving state) rather than keeping
   * a view across it.
   */
  get view() {
    const h = handleOf(this, 'the tensor');
    const buffer = this.#rt.memory.buffer;
    if (buffer !== this.#buffer) {
      const ex = this.#rt._exports;
      const ptr = ex.lion_tensor_ptr(h) >>> 0;
      if (this.#dtype === 'q8') {
        this.#view = Object.freeze({
          codes: new Uint8Array(buffer, ptr, this.#length),
          absmax: new Float32Array(buffer, ex.lion_tensor_absmax(h) >>> 0, Math.ceil(this.#length / 256)),
        });
      } else {
        const Ctor = this.#dtype === 'f32' ? Float32Array : Uint16Array;
        this.#view = new Ctor(buffer, ptr, this.#length);
      }
      this.#buffer = buffer;
    }
    return this.#view;
  }

  /**
   * Sets elements from numbers (rounded to the dtype to nearest, ties to even, as a step's
   * stores round), starting at `offset`. Not for 'q8' (write its `view.codes` and
   * `view.absmax`).
   */
  set(values, offset = 0) {
    const h = handleOf(this, 'the tensor');
    if (this.#dtype === 'q8') {
      throw new TypeError(`set of tensor ${JSON.stringify(this.name)}: a 'q8' tensor has no elements to set (write view.codes and view.absmax)`);
    }
    this.#rt._fromF32(h, values, offset, this);
    return this;
  }

  /**
   * The elements as a new Float32Array (f16 and bf16 widened exactly; 'q8' decoded:
   * `map[codes[i]] * absmax[i >> 8]`).
   */
  toFloat32() {
    const h = handleOf(this, 'the tensor');
    if (this.#dtype === 'f32') return this.view.slice();
    const rt = this.#rt;
    rt._call(rt._exports.lion_tensor_to_f32(h), `toFloat32 of tensor ${JSON.stringify(this.name)}`);
    const out = rt._out();
    return new Float32Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength));
  }

  /** Frees the storage; any later use of this tensor throws a TypeError. */
  free() {
    const h = handleOf(this, 'the tensor');
    this.#rt._call(this.#rt._exports.lion_tensor_free(h), `free of tensor ${JSON.stringify(this.name)}`);
    this.#handle = 0;
    this.#view = null;
    this.#buffer = null;
  }
}

/** A module instance: its memory, tensors and optimizers. Get one with `load()`. */
export class LionWasm {
  #ex;
  #argsPtr = 0;
  #argsCap = 0;
  #argsBuffer = null;
  #argsView = null;
  #decoder = new TextDecoder();
  #encoder = new TextEncoder();

  /** @internal use `load()` */
  constructor(instance, build) {
    const ex = instance.exports;
    if (typeof ex.lion_abi !== 'function' || ex.lion_abi() !== ABI) {
      throw new TypeError(`lion-optim: the wasm module is not of interface version ${ABI}`);
    }
    this.#ex = ex;
    /** 'simd128' or 'scalar'. */
    this.build = ex.lion_simd() ? 'simd128' : 'scalar';
    if (build && build !== this.build) throw new TypeError(`lion-optim: expected the ${build} build, got ${this.build}`);
    /** The module's WebAssembly.Memory (grows; never shrinks). */
    this.memory = ex.memory;
    /** Whether 8-bit ('q8') momentum is supported by this build. */
    this.q8 = ex.lion_q8() === 1;
  }

  /** @internal */
  get _exports() {
    return this.#ex;
  }

  /** @internal A DataView over the args block, at least `len` bytes. */
  _args(len) {
    if (len > this.#argsCap) {
      const cap = Math.max(len, 2 * this.#argsCap, 256);
      const ptr = this.#ex.lion_args(cap) >>> 0;
      if (ptr === 0) throw new RangeError(`lion-optim: out of wasm memory (${cap} bytes of arguments)`);
      this.#argsPtr = ptr;
      this.#argsCap = cap;
      this.#argsBuffer = null;
    }
    const buffer = this.memory.buffer;
    if (buffer !== this.#argsBuffer) {
      this.#argsView = new DataView(buffer, this.#argsPtr, this.#argsCap);
      this.#argsBuffer = buffer;
    }
    return this.#argsView;
  }

  /** @internal The out block (a view: copy before the next call). */
  _out() {
    return new Uint8Array(this.memory.buffer, this.#ex.lion_out() >>> 0, this.#ex.lion_out_len());
  }

  /** @internal Throws the error an export reported (code < 0); returns the code otherwise. */
  _call(code, context, name) {
    if (code >= 0) return code;
    const message = this.#decoder.decode(this._out());
    const index = this.#ex.lion_err_index();
    const Ctor = ERRORS[-code] ?? Error;
    const e = new Ctor(`${context}: ${name ? name(index, message) : message}`);
    e.index = index;
    throw e;
  }

  /** @internal */
  _fromF32(handle, values, offset, tensor) {
    const what = `set of tensor ${JSON.stringify(tensor.name)}`;
    if (!values || typeof values.length !== 'number') throw new TypeError(`${what}: values must be an array of numbers`);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`${what}: offset must be an integer >= 0`);
    if (offset + values.length > tensor.length) {
      throw new RangeError(`${what}: ${values.length} values from index ${offset} do not fit in ${tensor.length} elements`);
    }
    const chunk = 1 << 16;
    for (let start = 0; start < values.length; start += chunk) {
      const n = Math.min(chunk, values.length - start);
      const dv = this._args(4 * n);
      const f32 = new Float32Array(dv.buffer, dv.byteOffset, n);
      for (let i = 0; i < n; i++) {
        const v = values[start + i];
        if (typeof v !== 'number') throw new TypeError(`${what}: element ${start + i} is not a number`);
        f32[i] = v;
      }
      this._call(this.#ex.lion_tensor_from_f32(handle, offset + start, n), what);
    }
  }

  /**
   * A new tensor in this instance's memory: `length` zeros of `dtype` ('f32', 'f16', 'bf16'), or
   * the given numbers (rounded to the dtype); or, with dtype 'q8', `length` elements of zero
   * 8-bit momentum for `step` (codes 127, block scales 0). Options: `name` (for messages).
   */
  tensor(dtype, lengthOrValues, options = {}) {
    const { name } = noUnknownKeys(options, ['name'], 'tensor: options');
    const tag = DTYPES.indexOf(dtype);
    if (tag < 0) throw new TypeError(`tensor: dtype must be 'f32', 'f16', 'bf16' or 'q8', not ${describe(dtype)}`);
    if (dtype === 'q8' && typeof lengthOrValues !== 'number') {
      throw new TypeError("tensor: a 'q8' tensor starts at zero momentum: give its length, not values");
    }
    const values = typeof lengthOrValues === 'number' ? null : lengthOrValues;
    const length = values ? values?.length : lengthOrValues;
    if (!Number.isSafeInteger(length) || length < 0 || length > 0xffffffff) {
      throw new RangeError(`tensor: length must be an integer in [0, 2^32), not ${describe(lengthOrValues)}`);
    }
    if (name !== undefined) check(name, 'string', 'tensor: name');
    const h = this._call(this.#ex.lion_tensor_new(tag, length), 'tensor');
    const t = new Tensor(this, h, dtype, length, name);
    if (values) {
      try {
        t.set(values);
      } catch (e) {
        t.free();
        throw e;
      }
    }
    return t;
  }

  /**
   * One Lion step: `params` moved in place with `grads`, `momentum` updated in place. Each is a
   * Tensor of this instance (any dtypes, equal lengths; the momentum may be 'q8', 8-bit, with
   * `offset` a multiple of 256), or arrays of them for a step over many tensors in one call. `hp`: { lr = 1e-4, beta1 = 0.9, beta2 = 0.99, weightDecay = 0 };
   * `options`: { maximize, gradUnscale, maxLr, rounding: 'nearest' | 'stochastic', seed, step,
   * offset, cautious: false | 'whole' | { agreeing, numel }, skipNonFinite }. Returns 'applied',
   * or 'skipped' (a non-finite gradient with skipNonFinite: nothing written). Bit-identical to
   * lion_optim::reference::step_with; on bad input throws and writes nothing.
   */
  step(params, grads, momentum, hp, options) {
    const many = Array.isArray(params);
    const ps = many ? params : [params];
    const gs = many ? grads : [grads];
    const ms = many ? momentum : [momentum];
    if (many && !(Array.isArray(gs) && Array.isArray(ms))) {
      throw new TypeError('step: params, grads and momentum must all be Tensors or all arrays of Tensors');
    }
    if (gs.length !== ps.length || ms.length !== ps.length) {
      throw new RangeError(`step: ${ps.length} params, ${gs.length} grads and ${ms.length} momentum tensors`);
    }
    const n = ps.length;
    const dv = this._args(GROUP_BLOCK + 12 * n);
    const handles = new Array(3 * n);
    for (let i = 0; i < n; i++) {
      const at = many ? ` [${i}]` : '';
      const p = ps[i];
      const hpar = handleOf(p, `step: params${at}`);
      const hg = handleOf(gs[i], `step: grads${at}`);
      const hm = handleOf(ms[i], `step: momentum${at}`);
      for (const [t, role] of [[p, 'params'], [gs[i], 'grads'], [ms[i], 'momentum']]) {
        if (runtimeOf(t) !== this) throw new TypeError(`step: ${role}${at} (tensor ${JSON.stringify(t.name)}) belongs to another module instance`);
        if (t.length !== p.length) {
          throw new RangeError(`step: ${role}${at} (tensor ${JSON.stringify(t.name)}) has ${t.length} elements, params (tensor ${JSON.stringify(p.name)}) ${p.length}`);
        }
      }
      handles[3 * i] = hpar;
      handles[3 * i + 1] = hg;
      handles[3 * i + 2] = hm;
    }
    encodeGroup(dv, 0, hp, options, 'step');
    for (let i = 0; i < 3 * n; i++) dv.setInt32(GROUP_BLOCK + 4 * i, handles[i], true);
    const code = this._call(this.#ex.lion_step(n), 'step', (index, message) => {
      if (index < 0 || index >= n) return message;
      const names = [ps[index], gs[index], ms[index]].map((t) => JSON.stringify(t.name)).join(', ');
      return `${message} (update ${index}: tensors ${names})`;
    });
    return code === 0 ? 'applied' : 'skipped';
  }

  /**
   * An optimizer over many tensors (lion_optim::Lion): group 0 has these hyperparameters and
   * options (no `step`/`offset`: the optimizer counts its steps).
   */
  optimizer(hp, options) {
    return new Optimizer(this, hp, options);
  }
}

/**
 * The Lion optimizer over many tensors: parameter groups, one momentum buffer per tensor (in
 * wasm memory, of its own dtype), names, a learning-rate scale, and its state as an ArrayBuffer
 * in lion-optim's compact checkpoint format. Create it with `lion.optimizer(hp, options)`.
 */
export class Optimizer {
  #rt;
  #h;
  #tensors = []; // per id: { id, name, params, length, momentum, group, view cache }
  #byName = new Map();

  /** @internal use `lion.optimizer(hp, options)` */
  constructor(rt, hp, options) {
    if (!(rt instanceof LionWasm)) throw new TypeError('create optimizers with lion.optimizer(hp, options)');
    this.#rt = rt;
    const dv = rt._args(GROUP_BLOCK);
    encodeGroup(dv, 0, hp, options, 'optimizer', GROUP_OPTION_KEYS);
    this.#h = rt._call(rt._exports.lion_opt_new(), 'optimizer');
  }

  #live(what) {
    if (this.#h === 0) throw new TypeError(`${what}: the optimizer was freed`);
    return this.#h;
  }

  /** Adds a parameter group; returns its id (group 0 is the optimizer's first). */
  addGroup(hp, options) {
    const h = this.#live('addGroup');
    encodeGroup(this.#rt._args(GROUP_BLOCK), 0, hp, options, 'addGroup', GROUP_OPTION_KEYS);
    return this.#rt._call(this.#rt._exports.lion_opt_add_group(h), 'addGroup');
  }

  /** The settings of group `id`: { hp, options }. */
  group(id = 0) {
    const h = this.#live('group');
    this.#rt._call(this.#rt._exports.lion_opt_group(h, groupIndex(id, 'group')), 'group');
    const out = this.#rt._out();
    return decodeGroup(new DataView(out.buffer, out.byteOffset, out.byteLength), 0);
  }

  /** Replaces the settings of group `id` (all fields: defaults for those not given). */
  setGroup(id, hp, options) {
    const h = this.#live('setGroup');
    encodeGroup(this.#rt._args(GROUP_BLOCK), 0, hp, options, 'setGroup', GROUP_OPTION_KEYS);
    this.#rt._call(this.#rt._exports.lion_opt_set_group(h, groupIndex(id, 'setGroup')), 'setGroup');
  }

  get groupCount() {
    return this.#rt._exports.lion_opt_info(this.#live('groupCount'), 4);
  }

  /**
   * Adds `params` (a Tensor of this instance, kept by the optimizer: every step updates it) with
   * zero momentum. Options: `name` (unique; for keyed steps, messages and the state), `group`
   * (default 0), `momentum` ('f32' default, 'f16', 'bf16'; 'q8' where `lion.q8`), `stream` (the
   * stochastic-rounding stream; default the id). Returns the tensor's id (0, 1, ...).
   */
  add(params, options = {}) {
    const h = this.#live('add');
    const { name, group = 0, momentum = 'f32', stream } =
      noUnknownKeys(options, ['name', 'group', 'momentum', 'stream'], 'add: options');
    handleOf(params, 'add: params');
    if (runtimeOf(params) !== this.#rt) throw new TypeError('add: params belong to another module instance');
    if (params.dtype === 'q8') throw new TypeError(`add: params (tensor ${JSON.stringify(params.name)}) is 'q8' momentum, not parameters`);
    const mtag = DTYPES.indexOf(momentum);
    if (mtag < 0) throw new TypeError(`add: momentum must be 'f32', 'f16', 'bf16' or 'q8', not ${describe(momentum)}`);
    if (momentum === 'q8' && !this.#rt.q8) throw new TypeError("add: 'q8' momentum is not supported by this build");
    if (name !== undefined) {
      check(name, 'string', 'add: name');
      if (this.#byName.has(name)) throw new TypeError(`add: the name ${JSON.stringify(name)} is taken by tensor ${this.#byName.get(name)}`);
    }
    const nameBytes = name === undefined ? null : new TextEncoder().encode(name);
    const dv = this.#rt._args(40 + (nameBytes?.length ?? 0));
    dv.setBigUint64(0, BigInt(params.length), true);
    dv.setBigUint64(8, stream === undefined ? 0n : u64(stream, 'add: stream'), true);
    dv.setUint32(16, groupIndex(group, 'add'), true);
    dv.setUint32(20, stream === undefined ? 0 : 1, true);
    dv.setUint32(24, mtag, true);
    dv.setUint32(28, DTYPES.indexOf(params.dtype), true);
    dv.setUint32(32, nameBytes ? nameBytes.length : 0xffffffff, true);
    if (nameBytes) new Uint8Array(dv.buffer, dv.byteOffset + 36, nameBytes.length).set(nameBytes);
    const label = name === undefined ? `tensor ${JSON.stringify(params.name)}` : JSON.stringify(name);
    const id = this.#rt._call(this.#rt._exports.lion_opt_add(h), `add ${label}`);
    const entry = { id, name: name ?? null, params, length: params.length, momentum, group, buffer: null, view: null };
    this.#tensors[id] = entry;
    if (name !== undefined) this.#byName.set(name, id);
    return id;
  }

  #entry(key, what) {
    const id = typeof key === 'string' ? this.#byName.get(key) : key;
    const e = Number.isInteger(id) ? this.#tensors[id] : undefined;
    if (!e) throw new RangeError(`${what}: no tensor ${describe(key)} in this optimizer (${this.#tensors.length} tensors)`);
    return e;
  }

  #label(e) {
    return e.name === null ? `tensor ${e.id}` : `tensor ${e.id} (${JSON.stringify(e.name)})`;
  }

  /**
   * One step over the tensors that have gradients: `grads` is an array (the gradient of every
   * tensor, by id), or a Map or an object from names (or ids) to gradient Tensors (any subset).
   * The step count advances by one. Returns 'applied' or 'skipped' (a non-finite gradient in a
   * group with skipNonFinite). On bad input throws, naming the tensor, and changes nothing.
   */
  step(grads) {
    const h = this.#live('step');
    let pairs;
    if (Array.isArray(grads)) {
      if (grads.length !== this.#tensors.length) {
        throw new RangeError(`step: ${grads.length} gradients for ${this.#tensors.length} tensors (pass a Map or an object for a subset)`);
      }
      pairs = grads.map((g, id) => [this.#tensors[id], g]);
    } else if (grads instanceof Map) {
      pairs = [...grads].map(([k, g]) => [this.#entry(k, 'step'), g]);
    } else if (grads && typeof grads === 'object' && !(grads instanceof Tensor)) {
      pairs = Object.entries(grads).map(([k, g]) => [this.#entry(k, 'step'), g]);
    } else {
      throw new TypeError(`step: grads must be an array, a Map or an object of Tensors, not ${describe(grads)}`);
    }
    const dv = this.#rt._args(12 * pairs.length);
    pairs.forEach(([e, g], i) => {
      const hp = handleOf(e.params, `step: the params of ${this.#label(e)}`);
      const hg = handleOf(g, `step: the gradient of ${this.#label(e)}`);
      if (runtimeOf(g) !== this.#rt) throw new TypeError(`step: the gradient of ${this.#label(e)} belongs to another module instance`);
      if (g.length !== e.length) {
        throw new RangeError(`step: the gradient of ${this.#label(e)} (tensor ${JSON.stringify(g.name)}) has ${g.length} elements, expected ${e.length}`);
      }
      dv.setInt32(12 * i, e.id, true);
      dv.setInt32(12 * i + 4, hp, true);
      dv.setInt32(12 * i + 8, hg, true);
    });
    const code = this.#rt._call(this.#rt._exports.lion_opt_step(h, pairs.length), 'step');
    return code === 0 ? 'applied' : 'skipped';
  }

  /** Steps applied so far. */
  get steps() {
    return this.#rt._exports.lion_opt_info(this.#live('steps'), 0);
  }
  /** Steps skipped for non-finite gradients. */
  get skippedSteps() {
    return this.#rt._exports.lion_opt_info(this.#live('skippedSteps'), 1);
  }
  /** The learning-rate scale of every group (a schedule's factor; default 1). */
  get lrScale() {
    return this.#rt._exports.lion_opt_info(this.#live('lrScale'), 2);
  }
  set lrScale(scale) {
    this.setLrScale(scale);
  }
  /** Scales every group's learning rate by `scale` from the next step on (does not compound). */
  setLrScale(scale) {
    const h = this.#live('setLrScale');
    check(scale, 'number', 'setLrScale: scale');
    this.#rt._call(this.#rt._exports.lion_opt_set_lr_scale(h, scale), 'setLrScale');
  }
  /** The number of tensors. */
  get size() {
    this.#live('size');
    return this.#tensors.length;
  }

  /** The id of the tensor with this name, or undefined. */
  tensorId(name) {
    return this.#byName.get(name);
  }

  /** What the optimizer knows about a tensor (by id or name). */
  tensor(key) {
    this.#live('tensor');
    const e = this.#entry(key, 'tensor');
    return { id: e.id, name: e.name, length: e.length, momentum: e.momentum, group: e.group, params: e.params };
  }

  /**
   * The momentum of a tensor (by id or name), in place: a Float32Array (f32) or a Uint16Array of
   * bits (f16, bf16); for 'q8' momentum `{ codes, absmax }`: a Uint8Array of codes (one per
   * element, an index into bitsandbytes' signed dynamic map) and a Float32Array of block scales
   * (one per 256 elements; element i is `map[codes[i]] * absmax[i >> 8]`). Re-created after
   * memory growth like `Tensor.view`. Read-only by contract.
   */
  momentum(key) {
    const h = this.#live('momentum');
    const e = this.#entry(key, 'momentum');
    const buffer = this.#rt.memory.buffer;
    if (e.buffer !== buffer) {
      const ex = this.#rt._exports;
      const ptr = ex.lion_opt_momentum(h, e.id) >>> 0;
      if (e.momentum === 'q8') {
        const absmax = ex.lion_opt_absmax(h, e.id) >>> 0;
        e.view = Object.freeze({
          codes: new Uint8Array(buffer, ptr, e.length),
          absmax: new Float32Array(buffer, absmax, Math.ceil(e.length / 256)),
        });
      } else {
        e.view = new (e.momentum === 'f32' ? Float32Array : Uint16Array)(buffer, ptr, e.length);
      }
      e.buffer = buffer;
    }
    return e.view;
  }

  /**
   * The state as an ArrayBuffer in lion-optim's compact checkpoint format (Lion::save_state):
   * step counts, lr scale, every group's settings, every tensor's name, dtypes, group, stream and
   * momentum, and a CRC-32C. Readable by the Rust crate.
   */
  saveState() {
    const h = this.#live('saveState');
    this.#rt._call(this.#rt._exports.lion_opt_save(h), 'saveState');
    const out = this.#rt._out();
    return out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength);
  }

  /**
   * Loads a checkpoint (ArrayBuffer or a view of one) of an optimizer with the same tensors and
   * groups (add them first, in the same way); a damaged or mismatched one throws and changes
   * nothing.
   */
  loadState(state) {
    const h = this.#live('loadState');
    let bytes;
    if (state instanceof ArrayBuffer) bytes = new Uint8Array(state);
    else if (ArrayBuffer.isView(state)) bytes = new Uint8Array(state.buffer, state.byteOffset, state.byteLength);
    else throw new TypeError(`loadState: state must be an ArrayBuffer or a view of one, not ${describe(state)}`);
    const dv = this.#rt._args(bytes.length);
    new Uint8Array(dv.buffer, dv.byteOffset, bytes.length).set(bytes);
    this.#rt._call(this.#rt._exports.lion_opt_load(h, bytes.length), 'loadState');
    for (const e of this.#tensors) e.buffer = null;
  }

  /** Whether `free()` was called. */
  get freed() {
    return this.#h === 0;
  }

  /** Frees the momentum and the optimizer (not the params tensors, which the caller owns). */
  free() {
    const h = this.#live('free');
    this.#rt._call(this.#rt._exports.lion_opt_free(h), 'free');
    this.#h = 0;
    this.#tensors = [];
    this.#byName.clear();
  }
}

function groupIndex(id, what) {
  if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new RangeError(`${what}: a group id must be an integer >= 0, not ${describe(id)}`);
  return id;
}
