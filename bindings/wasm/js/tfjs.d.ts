// Type declarations of lion-optim/tfjs (js/tfjs.js).
import type { NamedTensor, NamedTensorMap, Optimizer as TfOptimizer, serialization } from '@tensorflow/tfjs-core';
import type { GroupOptions, LionWasm, LoadOptions, Optimizer } from './index.js';

export interface LionConfig extends GroupOptions {
  learningRate?: number;
  beta1?: number;
  beta2?: number;
  weightDecay?: number;
  /** Momentum dtype in wasm memory (default 'f32'; 'q8': 8-bit blocks). */
  momentumDtype?: 'f32' | 'f16' | 'bf16' | 'q8';
}

/** Loads the wasm module for the optimizer; await it before `new LionOptimizer()`. */
export function ready(options?: LoadOptions): Promise<LionWasm>;
/** `await ready(); return new LionOptimizer(config)`. */
export function lion(config?: LionConfig, options?: LoadOptions): Promise<LionOptimizer>;

/** A tf.train.Optimizer stepping float32 variables with lion-optim's wasm kernel. */
export class LionOptimizer extends TfOptimizer {
  static className: string;
  constructor(config?: LionConfig, lion?: LionWasm);
  learningRate: number;
  /** The lion-optim optimizer underneath. */
  readonly optimizer: Optimizer;
  applyGradients(variableGradients: NamedTensorMap | NamedTensor[]): void;
  getWeights(): Promise<NamedTensor[]>;
  setWeights(weightValues: NamedTensor[]): Promise<void>;
  getConfig(): serialization.ConfigDict;
  static fromConfig<T extends serialization.Serializable>(
    cls: serialization.SerializableConstructor<T>, config: serialization.ConfigDict): T;
  dispose(): void;
}
