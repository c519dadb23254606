// lion-optim/tfjs: a TensorFlow.js optimizer (tf.train.Optimizer subclass, registered for
// serialization) whose step is lion-optim's wasm kernel: one call per step for every variable.
//
// What it copies per step, per variable of n float32 elements, and why:
//  * the gradient into our wasm memory: one memcpy of 4n bytes, straight from the backend's
//    storage (cpu: the tensor's Float32Array; wasm: a view of tfjs's own wasm heap; other
//    backends: dataSync(), a download). The kernel can only read its own memory.
//  * the new parameters back: `variable.assign(tf.tensor(values))`, one copy of 4n bytes (into
//    tfjs's wasm heap, or a fresh Float32Array on cpu: a cpu tensor would otherwise alias our
//    memory, which moves when it grows). Never written in place: tfjs's wasm backend caches
//    XNNPACK operators (MatMul, Conv) keyed on the weights tensor, so in-place writes leave Dense
//    layers computing with the old weights; `assign` gives the variable a new tensor.
//  * the parameters in: only when the variable was changed outside this optimizer since its last
//    step (its tensor is not the one we assigned: `model.setWeights`, `variable.assign`, ...);
//    otherwise our copy in wasm memory is already current.
// The momentum never leaves our memory (getWeights/setWeights convert it for model.save; 8-bit
// momentum as two weights per variable, its codes and its block scales).

import * as tf from '@tensorflow/tfjs-core';
import { load } from './index.js';

let runtime = null;

/**
 * Loads the lion-optim wasm module for the optimizer (options as `load` of 'lion-optim'); must be
 * awaited before `new LionOptimizer(...)` (and before a model with this optimizer is
 * deserialized).
 */
export async function ready(options) {
  runtime = await load(options);
  return runtime;
}

/** `await ready(); return new LionOptimizer(config)`: the counterpart of `tf.train.adam(...)`. */
export async function lion(config = {}, options) {
  await ready(options);
  return new LionOptimizer(config);
}

const CONFIG_KEYS = ['learningRate', 'beta1', 'beta2', 'weightDecay', 'momentumDtype', 'maximize',
  'gradUnscale', 'maxLr', 'rounding', 'seed', 'cautious', 'skipNonFinite'];

/** A numeric tfjs tensor's float32 values, copied into `dst` (a Float32Array of our memory). */
function readInto(dst, t, what) {
  if (t.dtype !== 'float32') throw new TypeError(`LionOptimizer: ${what} is ${t.dtype}, not float32`);
  if (t.size !== dst.length) throw new RangeError(`LionOptimizer: ${what} has ${t.size} elements, expected ${dst.length}`);
  const name = tf.getBackend();
  const backend = tf.backend();
  if (name === 'cpu') {
    const values = backend.data?.get(t.dataId)?.values;
    if (values instanceof Float32Array && values.length === t.size) return dst.set(values);
  } else if (name === 'wasm' && typeof backend.typedArrayFromHeap === 'function') {
    return dst.set(backend.typedArrayFromHeap(t));
  }
  dst.set(t.dataSync());
}

/**
 * The Lion optimizer for TensorFlow.js variables (float32), stepped by lion-optim's wasm kernel,
 * bit-identical to the Rust crate. Config: `learningRate` (1e-4), `beta1` (0.9), `beta2` (0.99),
 * `weightDecay` (0), `momentumDtype` ('f32', 'bf16', 'f16' or 'q8'), and the step options of
 * 'lion-optim' (`rounding`, `seed`, `cautious`, `maximize`, `gradUnscale`, `maxLr`,
 * `skipNonFinite`).
 */
export class LionOptimizer extends tf.Optimizer {
  static className = 'LionOptimizer';
  #lion;
  #opt;
  #config;
  #vars = new Map(); // variable name -> { id, variable, params, grads, assigned }

  constructor(config = {}, lionInstance) {
    super();
    for (const k of Object.keys(config)) {
      if (!CONFIG_KEYS.includes(k)) throw new TypeError(`LionOptimizer: unknown config field ${JSON.stringify(k)} (known: ${CONFIG_KEYS.join(', ')})`);
    }
    this.#lion = lionInstance ?? runtime;
    if (!this.#lion) {
      throw new TypeError("LionOptimizer: the wasm module is not loaded: `await ready()` from 'lion-optim/tfjs' first");
    }
    this.#config = { learningRate: 1e-4, beta1: 0.9, beta2: 0.99, weightDecay: 0, momentumDtype: 'f32', ...config };
    const md = this.#config.momentumDtype;
    if (!['f32', 'bf16', 'f16', 'q8'].includes(md)) {
      throw new TypeError(`LionOptimizer: momentumDtype must be 'f32', 'bf16', 'f16' or 'q8', not ${JSON.stringify(md)}`);
    }
    const { hp, options } = this.#settings();
    this.#opt = this.#lion.optimizer(hp, options);
  }

  #settings() {
    const { learningRate, beta1, beta2, weightDecay, momentumDtype, ...options } = this.#config;
    return { hp: { lr: learningRate, beta1, beta2, weightDecay }, options };
  }

  /** The learning rate (settable: a schedule may change it between steps). */
  get learningRate() {
    return this.#config.learningRate;
  }
  set learningRate(lr) {
    const { hp, options } = this.#settings();
    this.#opt.setGroup(0, { ...hp, lr }, options);
    this.#config.learningRate = lr;
  }

  /** The lion-optim optimizer underneath (its state: `saveState()`, `loadState()`). */
  get optimizer() {
    return this.#opt;
  }

  #register(name, variable) {
    if (variable.dtype !== 'float32') throw new TypeError(`LionOptimizer: variable ${JSON.stringify(name)} is ${variable.dtype}, not float32`);
    const lion = this.#lion;
    const params = lion.tensor('f32', variable.size, { name: `${name} (params)` });
    const grads = lion.tensor('f32', variable.size, { name: `${name} (grads)` });
    const id = this.#opt.add(params, { name, momentum: this.#config.momentumDtype });
    const entry = { id, variable, params, grads, assigned: null };
    this.#vars.set(name, entry);
    return entry;
  }

  /** One Lion step for every variable with a gradient (one kernel call for all of them). */
  applyGradients(variableGradients) {
    const list = Array.isArray(variableGradients)
      ? variableGradients.map((v) => [v.name, v.tensor])
      : Object.entries(variableGradients);
    const registered = tf.engine().registeredVariables;
    const stepped = [];
    const grads = new Map();
    for (const [name, gradient] of list) {
      if (gradient == null) continue;
      const variable = registered[name];
      if (variable == null) throw new TypeError(`LionOptimizer: no variable ${JSON.stringify(name)}`);
      let e = this.#vars.get(name);
      if (e === undefined || e.variable !== variable) {
        if (e !== undefined) throw new TypeError(`LionOptimizer: variable ${JSON.stringify(name)} was replaced by another variable of that name`);
        e = this.#register(name, variable);
      }
      if (variable.dataId !== e.assigned) readInto(e.params.view, variable, `variable ${JSON.stringify(name)}`);
      readInto(e.grads.view, gradient, `the gradient of ${JSON.stringify(name)}`);
      grads.set(e.id, e.grads);
      stepped.push(e);
    }
    const outcome = this.#opt.step(grads);
    if (outcome === 'applied') {
      const copy = tf.getBackend() !== 'wasm'; // tf.tensor keeps a Float32Array on cpu (aliasing)
      for (const e of stepped) {
        tf.tidy(() => {
          const values = copy ? e.params.view.slice() : e.params.view;
          e.variable.assign(tf.tensor(values, e.variable.shape, 'float32'));
        });
        e.assigned = e.variable.dataId;
      }
    }
    this.incrementIterations();
  }

  /**
   * The iteration count and each variable's momentum (as float32 tensors `<variable>/m`; 8-bit
   * momentum as `<variable>/m/codes`, int32 in [0, 255], and `<variable>/m/absmax`, float32, one
   * per 256 elements), for model.save.
   */
  async getWeights() {
    const out = [await this.saveIterations()];
    for (const [name, e] of this.#vars) {
      let values;
      if (this.#config.momentumDtype === 'q8') {
        const { codes, absmax } = this.#opt.momentum(e.id);
        out.push({ name: `${name}/m/codes`, tensor: tf.tensor(Int32Array.from(codes), [codes.length], 'int32') });
        out.push({ name: `${name}/m/absmax`, tensor: tf.tensor(absmax.slice(), [absmax.length], 'float32') });
        continue;
      }
      if (this.#config.momentumDtype === 'f32') values = this.#opt.momentum(e.id).slice();
      else {
        const t = this.#lion.tensor(this.#config.momentumDtype, e.params.length);
        t.view.set(this.#opt.momentum(e.id));
        values = t.toFloat32();
        t.free();
      }
      out.push({ name: `${name}/m`, tensor: tf.tensor(values, e.variable.shape, 'float32') });
    }
    return out;
  }

  /**
   * Restores what getWeights returned (the variables must exist). Every weight is checked (its
   * name, kind, size and, for 8-bit codes, range) before any momentum is written.
   */
  async setWeights(weightValues) {
    const registered = tf.engine().registeredVariables;
    const q8 = this.#config.momentumDtype === 'q8';
    const writes = [];
    for (const { name, tensor } of weightValues.slice(1)) { // (the first: the iteration count)
      const [, varName, part] = /^(.*)\/m(?:\/(codes|absmax))?$/.exec(name) ?? [];
      const what = `LionOptimizer.setWeights: weight ${JSON.stringify(name)}`;
      if (varName === undefined) throw new TypeError(`${what} is not a momentum ('<variable>/m', or '/m/codes' and '/m/absmax' for 'q8')`);
      if (q8 !== (part !== undefined)) {
        throw new TypeError(`${what} does not fit momentum of dtype ${JSON.stringify(this.#config.momentumDtype)}`);
      }
      const variable = this.#vars.get(varName)?.variable ?? registered[varName];
      if (variable == null) throw new TypeError(`${what}: no variable ${JSON.stringify(varName)}`);
      if (variable.dtype !== 'float32') throw new TypeError(`${what}: variable ${JSON.stringify(varName)} is ${variable.dtype}, not float32`);
      const size = part === 'absmax' ? Math.ceil(variable.size / 256) : variable.size;
      if (tensor.size !== size) throw new RangeError(`${what} has ${tensor.size} elements, expected ${size}`);
      const values = await tensor.data();
      if (part === 'codes' && !values.every((c) => Number.isInteger(c) && c >= 0 && c <= 255)) {
        throw new RangeError(`${what}: 8-bit codes are integers in [0, 255]`);
      }
      writes.push({ varName, variable, part, values });
    }
    await this.extractIterations(weightValues);
    for (const { varName, variable, part, values } of writes) {
      const e = this.#vars.get(varName) ?? this.#register(varName, variable);
      const m = this.#opt.momentum(e.id);
      if (part !== undefined) m[part].set(values);
      else {
        const t = this.#lion.tensor(this.#config.momentumDtype, values);
        m.set(t.view);
        t.free();
      }
    }
  }

  getConfig() {
    return { ...this.#config };
  }

  static fromConfig(cls, config) {
    return new cls(config);
  }

  /** Frees the momentum and the copies in wasm memory. */
  dispose() {
    super.dispose();
    if (this.#opt.freed) return;
    for (const e of this.#vars.values()) {
      e.params.free();
      e.grads.free();
    }
    this.#vars.clear();
    this.#opt.free();
  }
}

tf.serialization.registerClass(LionOptimizer);
