// Type declarations of lion-optim (js/index.js).

/** Element types of params, grads and momentum. */
export type Dtype = 'f32' | 'f16' | 'bf16';
/** Momentum dtypes: 'q8' (8-bit blockwise) where `LionWasm.q8` is true. */
export type MomentumDtype = Dtype | 'q8';

/** 8-bit momentum in place: element i is `map[codes[i]] * absmax[i >> 8]` (bitsandbytes' format). */
export interface Q8Momentum {
  readonly codes: Uint8Array;
  readonly absmax: Float32Array;
}
/** 'simd128' or 'scalar'. */
export type Build = 'simd128' | 'scalar';
/** A u64 option: a non-negative safe integer or a bigint. */
export type U64 = number | bigint;

export interface Hyperparams {
  /** Learning rate (default 1e-4): each step moves a parameter by exactly ±lr (after decay). */
  lr?: number;
  /** Default 0.9. In [0, 1). */
  beta1?: number;
  /** Default 0.99. In [0, 1). */
  beta2?: number;
  /** Decoupled weight decay (default 0): params *= 1 - lr * weightDecay. */
  weightDecay?: number;
}

/** Options of a group: the step options without `step` and `offset` (the optimizer sets them). */
export interface GroupOptions {
  /** Step along +sign(c), to maximize. */
  maximize?: boolean;
  /** Multiply gradients by this (an inverse loss scale) before using them. */
  gradUnscale?: number | null;
  /** Fully decoupled decay: params *= 1 - weightDecay * lr / maxLr. */
  maxLr?: number | null;
  /** How f16/bf16 stores round (default 'nearest'). */
  rounding?: 'nearest' | 'stochastic';
  /** The seed of stochastic rounding. */
  seed?: U64;
  /** The cautious variant: 'whole' (or true) counts over the tensor; a shard gives the counts. */
  cautious?: boolean | 'off' | 'whole' | { agreeing: U64; numel: U64 };
  /** Skip the whole step (nothing written) if a gradient is infinite or NaN. */
  skipNonFinite?: boolean;
}

export interface StepOptions extends GroupOptions {
  /** The step number: keys the random bits of stochastic rounding. */
  step?: U64;
  /** The index of these tensors' first element in the whole tensor (a shard's offset). */
  offset?: U64;
}

/** What a step did: 'skipped' only with skipNonFinite and a non-finite gradient. */
export type Outcome = 'applied' | 'skipped';

export interface LoadOptions {
  /** Default 'auto': simd128 where `WebAssembly.validate` accepts a simd128 module. */
  build?: 'auto' | Build;
  /** Where to take the .wasm from (a CDN, a bundler's asset URL, bytes, a compiled module). */
  module?: WebAssembly.Module | BufferSource | URL | string | Response;
}

/** Whether this engine runs wasm simd128. */
export function simdSupported(): boolean;
/** The URL of a build's .wasm file inside the package. */
export function wasmUrl(build: Build): URL;
/** The shared module instance of a build (loaded once). */
export function load(options?: LoadOptions): Promise<LionWasm>;
/** A new, separate module instance with its own memory. */
export function instantiate(options?: LoadOptions): Promise<LionWasm>;

/** A tensor in a module instance's wasm memory ('q8': 8-bit momentum, only for `step`'s momentum). */
export class Tensor<D extends MomentumDtype = Dtype> {
  private constructor();
  readonly dtype: D;
  readonly length: number;
  readonly byteLength: number;
  /** Whether free() was called. */
  readonly freed: boolean;
  /** A name for messages. */
  name: string;
  /**
   * The elements in place (f16/bf16: their bits). Re-created when the memory grows: read `.view`
   * again after any call that may allocate instead of keeping it. Throws after free().
   */
  readonly view: D extends 'f32' ? Float32Array : D extends 'q8' ? Q8Momentum : Uint16Array;
  /** Sets elements from numbers, rounded to the dtype (to nearest, ties to even); not for 'q8'. */
  set(values: ArrayLike<number>, offset?: number): this;
  /** The elements as a new Float32Array (widened exactly; 'q8' decoded). */
  toFloat32(): Float32Array;
  /** Frees the storage; any later use throws a TypeError. */
  free(): void;
}

export interface GroupSettings {
  hp: Required<Hyperparams>;
  options: {
    maximize: boolean;
    gradUnscale: number | null;
    maxLr: number | null;
    rounding: 'nearest' | 'stochastic';
    seed: bigint;
    cautious: false | 'whole' | { agreeing: bigint; numel: bigint };
    skipNonFinite: boolean;
  };
}

export interface AddOptions {
  /** Unique name: keyed steps, messages, the state. */
  name?: string;
  /** Group id (default 0). */
  group?: number;
  /** Momentum dtype (default 'f32'). */
  momentum?: MomentumDtype;
  /** Stochastic-rounding stream (default: the tensor's id). */
  stream?: U64;
}

export interface TensorInfo {
  id: number;
  name: string | null;
  length: number;
  momentum: MomentumDtype;
  group: number;
  params: Tensor;
}

/** Gradients of a step: every tensor's by id (an array), or any subset by name or id. */
export type Gradients = Tensor[] | Map<string | number, Tensor> | Record<string, Tensor>;

/** The Lion optimizer over many tensors (lion_optim::Lion). */
export class Optimizer {
  private constructor();
  addGroup(hp?: Hyperparams, options?: GroupOptions): number;
  group(id?: number): GroupSettings;
  setGroup(id: number, hp?: Hyperparams, options?: GroupOptions): void;
  readonly groupCount: number;
  /** Adds params (kept: every step updates them) with zero momentum; returns the tensor's id. */
  add(params: Tensor, options?: AddOptions): number;
  /** One step over the tensors with gradients. */
  step(grads: Gradients): Outcome;
  readonly steps: number;
  readonly skippedSteps: number;
  /** Every group's learning-rate scale (a schedule's factor). */
  lrScale: number;
  setLrScale(scale: number): void;
  readonly size: number;
  tensorId(name: string): number | undefined;
  tensor(key: string | number): TensorInfo;
  /**
   * The momentum in place (read-only by contract); re-created after memory growth. 'q8'
   * momentum: its codes (one per element) and block scales (one per 256 elements).
   */
  momentum(key: string | number): Float32Array | Uint16Array | Q8Momentum;
  /** The state in lion-optim's compact checkpoint format. */
  saveState(): ArrayBuffer;
  /** Loads a checkpoint of an optimizer with the same tensors and groups. */
  loadState(state: ArrayBuffer | ArrayBufferView): void;
  readonly freed: boolean;
  /** Frees the momentum (not the params tensors). */
  free(): void;
}

/** A module instance: its memory, tensors and optimizers. */
export class LionWasm {
  private constructor();
  readonly build: Build;
  readonly memory: WebAssembly.Memory;
  /** Whether 'q8' momentum is supported. */
  readonly q8: boolean;
  /** A new tensor: `length` zeros, or the given numbers rounded to the dtype. */
  tensor<D extends Dtype>(dtype: D, lengthOrValues: number | ArrayLike<number>, options?: { name?: string }): Tensor<D>;
  /** `length` elements of zero 8-bit momentum, for `step`. */
  tensor(dtype: 'q8', length: number, options?: { name?: string }): Tensor<'q8'>;
  /**
   * One Lion step, in place; bit-identical to lion_optim::reference::step_with (8-bit momentum:
   * step_q8_with, `offset` a multiple of 256).
   */
  step(params: Tensor, grads: Tensor, momentum: Tensor<MomentumDtype>, hp?: Hyperparams, options?: StepOptions): Outcome;
  /** One step over many tensors (equal-length arrays), in one call. */
  step(params: Tensor[], grads: Tensor[], momentum: Tensor<MomentumDtype>[], hp?: Hyperparams, options?: StepOptions): Outcome;
  /** An optimizer whose group 0 has these settings. */
  optimizer(hp?: Hyperparams, options?: GroupOptions): Optimizer;
}
