/*
 * lion_optim.h: the C API of lion-optim, the Lion optimizer step fused into one memory pass,
 * bit-identical to its scalar specification on every CPU, for f32/f16/bf16 buffers in any
 * combination. C11 and C++ (extern "C").
 *
 * Link: cc app.c $(pkg-config --cflags --libs lion_optim)   (or -llion_optim, static: the .a
 * plus -lpthread -ldl -lm on Linux).
 *
 * Two parts:
 *  - Stateless calls over buffers you own: lion_step (any dtype combination), lion_step_q8
 *    (8-bit momentum), lion_cautious_count, lion_all_finite. They allocate nothing and work in
 *    the bare-metal library too (thumbv7em-none-eabihf, built without std).
 *  - The optimizer handle (lion_optimizer_*) for whole models: parameter groups, named
 *    tensors, one step over many tensors (parallel when built with threads), a learning-rate
 *    scale, the state saved into your buffer (compact checkpoint, or safetensors bytes). It
 *    needs an allocator: every host build has it; the bare-metal library has these functions
 *    only when built with the `alloc` feature (then it allocates with malloc/free); without
 *    it they are absent (a link error).
 *
 * Errors: every call returns a lion_status; success is >= 0 (LION_STATUS_OK, or
 * LION_STATUS_SKIPPED_NON_FINITE), every error is < 0 and then the call wrote nothing (no
 * buffer, no output argument, no optimizer state). lion_last_error(buf, cap) gives this
 * thread's last error message (naming the function, the argument and the tensor).
 *
 * Structs: start each from its _default() function (it sets struct_size; a struct that was not
 * initialized is refused), then set fields. Enum values are plain integers to the library: an
 * unknown value is LION_STATUS_INVALID_ENUM, never undefined behaviour.
 *
 * Threads: the stateless calls are reentrant; a handle is used by one thread at a time (a
 * concurrent call gets LION_STATUS_BUSY). With threads the handle's step runs on rayon's pool
 * (RAYON_NUM_THREADS sets its size).
 */

#ifndef LION_OPTIM_H
#define LION_OPTIM_H

/* Generated from bindings/c/src by cbindgen (bindings/c/tools/gen-header): do not edit. */

#include <stddef.h>
#include <stdint.h>

/**
 * The library's major version.
 */
#define LION_OPTIM_VERSION_MAJOR 0

/**
 * The library's minor version.
 */
#define LION_OPTIM_VERSION_MINOR 1

/**
 * The library's patch version.
 */
#define LION_OPTIM_VERSION_PATCH 0

/**
 * The version as one number, `MAJOR << 16 | MINOR << 8 | PATCH` (what `lion_optim_version()`
 * returns): compare the header's with the library's.
 */
#define LION_OPTIM_VERSION (((LION_OPTIM_VERSION_MAJOR << 16) | (LION_OPTIM_VERSION_MINOR << 8)) | LION_OPTIM_VERSION_PATCH)

/**
 * Elements per block of 8-bit momentum (`LION_DTYPE_Q8`): a buffer of `len` elements has `len`
 * codes and `(len + LION_Q8_BLOCK - 1) / LION_Q8_BLOCK` absmax floats, and a shard's offset is
 * a multiple of it.
 */
#define LION_Q8_BLOCK 256

/**
 * What a call did. Success is >= 0 (LION_STATUS_OK, or LION_STATUS_SKIPPED_NON_FINITE when
 * the options ask to skip steps with non-finite gradients); every error is < 0, and then the
 * call wrote nothing (no buffer, no output argument, no state) and `lion_last_error` says why.
 */
enum lion_status
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * Done.
     */
    LION_STATUS_OK = 0,
    /**
     * A gradient was inf or NaN (after unscaling) and the options set `skip_non_finite`:
     * nothing was written (a handle counts the step as skipped).
     */
    LION_STATUS_SKIPPED_NON_FINITE = 1,
    /**
     * A pointer argument is NULL (a buffer may be NULL only when its length is 0).
     */
    LION_STATUS_NULL_POINTER = -1,
    /**
     * A pointer is not aligned for its type (f32: 4 bytes, f16/bf16: 2, absmax: 4).
     */
    LION_STATUS_MISALIGNED = -2,
    /**
     * An enum argument or field holds a value that is not one of its constants (or not one
     * allowed there, e.g. LION_DTYPE_Q8 for parameters).
     */
    LION_STATUS_INVALID_ENUM = -3,
    /**
     * Lengths do not agree (a tensor's buffers and its state), or a length is too large for
     * the address space.
     */
    LION_STATUS_LENGTH_MISMATCH = -4,
    /**
     * Buffers overlap in memory where one of them is written (parameters passed twice, a
     * gradient aliasing its parameters or momentum).
     */
    LION_STATUS_OVERLAP = -5,
    /**
     * A hyperparameter or option value is outside its domain (lr < 0, beta1 >= 1,
     * lr * weight_decay > 1, grad_unscale <= 0, an offset past the shard's tensor, ...).
     */
    LION_STATUS_INVALID_HYPERPARAMETER = -6,
    /**
     * Another argument is invalid: a struct that was not initialized with its `_default()`
     * (`struct_size`), a flag other than 0 or 1, a name that is not UTF-8, a field that must
     * be 0 here.
     */
    LION_STATUS_INVALID_ARGUMENT = -7,
    /**
     * A state file (either format) is truncated, damaged, of another optimizer or version:
     * nothing was loaded, the optimizer is unchanged.
     */
    LION_STATUS_BAD_CHECKPOINT = -8,
    /**
     * The output buffer is too small; the size it needs was written to the size argument.
     */
    LION_STATUS_BUFFER_TOO_SMALL = -9,
    /**
     * No tensor of the optimizer has this id or name.
     */
    LION_STATUS_NO_SUCH_TENSOR = -10,
    /**
     * No parameter group has this id.
     */
    LION_STATUS_NO_SUCH_GROUP = -11,
    /**
     * A step passed one tensor twice.
     */
    LION_STATUS_DUPLICATE_TENSOR = -12,
    /**
     * A tensor was added with a name another tensor has.
     */
    LION_STATUS_DUPLICATE_NAME = -13,
    /**
     * A tensor's parameters are not of the type it was added with (`params_dtype`).
     */
    LION_STATUS_DTYPE_MISMATCH = -14,
    /**
     * The handle is in use by another thread (a handle is used by one thread at a time).
     */
    LION_STATUS_BUSY = -15,
    /**
     * This build of the library does not have the feature (safetensors).
     */
    LION_STATUS_UNSUPPORTED = -16,
    /**
     * A bug in the library (a panic, caught at the boundary); please report it.
     */
    LION_STATUS_INTERNAL = -100,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum lion_status lion_status;
#else
typedef int32_t lion_status;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * The element types of parameters, gradients and momentum.
 *
 * Parameters and gradients are F32, F16 or BF16; momentum is any of the four (Q8: 8-bit codes
 * into bitsandbytes' signed dynamic map, one f32 absmax per block of 256 elements; passed to
 * `lion_step_q8`, or a tensor's momentum in an optimizer handle). ANY is only for
 * `lion_tensor_spec.params_dtype`: the tensor's parameters may be of any type.
 */
enum lion_dtype
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * IEEE 754 binary32 (`float`).
     */
    LION_DTYPE_F32 = 0,
    /**
     * IEEE 754 binary16 (`_Float16`; stored as `uint16_t` bits).
     */
    LION_DTYPE_F16 = 1,
    /**
     * bfloat16: the upper half of a float (stored as `uint16_t` bits).
     */
    LION_DTYPE_BF16 = 2,
    /**
     * 8-bit momentum: `uint8_t` codes and a `float` absmax per block of 256 (momentum only).
     */
    LION_DTYPE_Q8 = 3,
    /**
     * Any parameter type (`lion_tensor_spec.params_dtype` only).
     */
    LION_DTYPE_ANY = -1,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum lion_dtype lion_dtype;
#else
typedef int32_t lion_dtype;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * How results are rounded to f16/bf16 storage (`lion_step_options.rounding`).
 */
enum lion_rounding
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * To nearest, ties to even (the default).
     */
    LION_ROUNDING_NEAREST = 0,
    /**
     * Stochastic rounding with `lion_step_options.seed`: unbiased, deterministic, the same on
     * every CPU and thread count, split-invariant (see `offset`, `stream`).
     */
    LION_ROUNDING_STOCHASTIC = 1,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum lion_rounding lion_rounding;
#else
typedef int32_t lion_rounding;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * The cautious variant (`lion_step_options.cautious`).
 */
enum lion_cautious
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * The plain Lion step (the default).
     */
    LION_CAUTIOUS_OFF = 0,
    /**
     * Only elements whose update agrees in sign with the gradient move, by
     * `lr * numel / (agreeing + 1)`; the call counts the agreeing elements first.
     */
    LION_CAUTIOUS_WHOLE = 1,
    /**
     * A shard of a larger tensor, stepped with the whole tensor's count
     * (`cautious_agreeing` of `cautious_numel`; add the shards' `lion_cautious_count`s).
     */
    LION_CAUTIOUS_SHARD = 2,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum lion_cautious lion_cautious;
#else
typedef int32_t lion_cautious;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * An optimizer for a whole model (opaque): parameter groups, one momentum buffer per tensor,
 * one step count. Create with `lion_optimizer_create`, free with `lion_optimizer_destroy`.
 */
typedef struct lion_optimizer lion_optimizer;

/**
 * Hyperparameters of a step. Initialize with `lion_hyperparams_default()` (lr 1e-4, betas
 * 0.9 and 0.99, weight decay 0: the paper's reference code), then set fields.
 *
 * Domains: `lr` finite and at least 0 (a finite float); `beta1`, `beta2` in [0, 1);
 * `weight_decay` finite and at least 0, with `lr * weight_decay <= 1`. Each step turns them into
 * float constants, each computed in double and rounded once (as the Python reference does).
 */
typedef struct lion_hyperparams {
    /**
     * `sizeof(lion_hyperparams)`, set by `lion_hyperparams_default()`: how the library knows
     * which fields the caller's header has (a struct that was not initialized is refused).
     */
    uint32_t struct_size;
    /**
     * Learning rate: every step moves a parameter by exactly +-lr (after decay).
     */
    double lr;
    /**
     * Interpolation between momentum and gradient that decides the update's sign.
     */
    double beta1;
    /**
     * Decay rate of the momentum.
     */
    double beta2;
    /**
     * Decoupled weight decay: parameters are multiplied by `1 - lr * weight_decay` first.
     */
    double weight_decay;
} lion_hyperparams;

/**
 * Per-call options of a step (and a parameter group's options). Initialize with
 * `lion_step_options_default()` (the plain step), then set fields. The zero value of every
 * field other than `struct_size` means "off".
 */
typedef struct lion_step_options {
    /**
     * `sizeof(lion_step_options)`, set by `lion_step_options_default()`.
     */
    uint32_t struct_size;
    /**
     * 1: step along +sign(c), to maximize the objective (0 or 1).
     */
    int32_t maximize;
    /**
     * 1: if a gradient (after unscaling) is inf or NaN, write nothing and return
     * LION_STATUS_SKIPPED_NON_FINITE (0 or 1). The gradients are read twice.
     */
    int32_t skip_non_finite;
    /**
     * Rounding of f16/bf16 stores: LION_ROUNDING_NEAREST or LION_ROUNDING_STOCHASTIC.
     */
    lion_rounding rounding;
    /**
     * LION_CAUTIOUS_OFF, _WHOLE or _SHARD (with `cautious_agreeing`, `cautious_numel`).
     */
    lion_cautious cautious;
    /**
     * Multiply every gradient by this (the inverse loss scale of mixed precision) before using
     * it; > 0 and finite as a float. 0: gradients are used as they are.
     */
    double grad_unscale;
    /**
     * Positive: fully decoupled weight decay, `p *= 1 - weight_decay * lr / max_lr`. 0: the
     * paper's `p *= 1 - lr * weight_decay`.
     */
    double max_lr;
    /**
     * The seed of stochastic rounding.
     */
    uint64_t seed;
    /**
     * The step number: keys the random bits of stochastic rounding (advance it every step).
     * Stateless calls only (an optimizer handle counts its own steps: 0 there).
     */
    uint64_t step;
    /**
     * The index of the first element of these buffers in the whole tensor (a shard's place):
     * a tensor stepped in shards, each with its offset, gets the bytes of the whole. Stateless
     * calls only (0 in a group's options). With 8-bit momentum, a multiple of 256.
     */
    uint64_t offset;
    /**
     * The tensor's random stream, mixed into the seed (`seed ^ stream * 0x9e3779b97f4a7c15`):
     * tensors of one step draw different bits; the shards of a tensor share its stream.
     * 0: the seed as it is. Stateless calls only (0 in a group's options).
     */
    uint64_t stream;
    /**
     * LION_CAUTIOUS_SHARD: the agreeing elements of the whole tensor.
     */
    uint64_t cautious_agreeing;
    /**
     * LION_CAUTIOUS_SHARD: the elements of the whole tensor (>= offset + len).
     */
    uint64_t cautious_numel;
} lion_step_options;

/**
 * A tensor added to an optimizer handle (`lion_optimizer_add_tensor`). Initialize with
 * `lion_tensor_spec_default()` (f32 momentum, parameters of any type, no name, group 0, its
 * index as its stream), then set fields.
 */
typedef struct lion_tensor_spec {
    /**
     * `sizeof(lion_tensor_spec)`, set by `lion_tensor_spec_default()`.
     */
    uint32_t struct_size;
    /**
     * The momentum's type: F32, F16, BF16 or Q8.
     */
    lion_dtype momentum_dtype;
    /**
     * The parameters' type, checked at every step; LION_DTYPE_ANY: any.
     */
    lion_dtype params_dtype;
    /**
     * 1: `stream` is the tensor's random stream; 0: its index.
     */
    int32_t has_stream;
    /**
     * The number of parameters.
     */
    size_t len;
    /**
     * The tensor's group (0, or an id from `lion_optimizer_add_group`).
     */
    size_t group;
    /**
     * A NUL-terminated UTF-8 name, unique in the optimizer (copied), or NULL: used by
     * `lion_optimizer_tensor_id`, in error messages and in state files.
     */
    const char *name;
    /**
     * The tensor's random stream (with `has_stream = 1`).
     */
    uint64_t stream;
} lion_tensor_spec;

/**
 * One tensor of an optimizer step (`lion_optimizer_step`): which tensor of the handle, and
 * its parameters and gradients, each `len` elements of its type.
 */
typedef struct lion_tensor_update {
    /**
     * The tensor's id (from `lion_optimizer_add_tensor` or `lion_optimizer_tensor_id`).
     */
    size_t tensor;
    /**
     * The number of elements of `params` and `grads` (the tensor's length).
     */
    size_t len;
    /**
     * The parameters, updated in place.
     */
    void *params;
    /**
     * The gradients.
     */
    const void *grads;
    /**
     * The parameters' type (F32, F16, BF16).
     */
    lion_dtype params_dtype;
    /**
     * The gradients' type (F32, F16, BF16).
     */
    lion_dtype grads_dtype;
} lion_tensor_update;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The library's version, `MAJOR << 16 | MINOR << 8 | PATCH` (LION_OPTIM_VERSION of the
 * header it was built with).
 */
uint32_t lion_optim_version(void);

/**
 * The library's version as a static string, "MAJOR.MINOR.PATCH".
 */
const char *lion_optim_version_string(void);

/**
 * Creates an optimizer with one parameter group (group 0) of these settings (NULL: the
 * defaults); writes the handle to `*out`. Free it with `lion_optimizer_destroy`.
 *
 * A group's options must leave `step`, `offset` and `stream` at 0, and cannot be a cautious
 * shard.
 *
 * # Safety
 * `hp` and `options` as in `lion_step`; `out` points to a writable `lion_optimizer *`.
 */
lion_status lion_optimizer_create(const struct lion_hyperparams *hp,
                                  const struct lion_step_options *options,
                                  struct lion_optimizer **out);

/**
 * Frees an optimizer and its state (NULL: nothing). The handle must not be used afterwards,
 * nor by another thread during the call.
 *
 * # Safety
 * `opt` is NULL or a handle from `lion_optimizer_create` not yet destroyed.
 */
void lion_optimizer_destroy(struct lion_optimizer *opt);

/**
 * Adds a parameter group with these settings (NULL: the defaults); writes its id to `*group`.
 *
 * # Safety
 * `opt` is a live handle; `hp`, `options` as in `lion_step`; `group` points to a `size_t`.
 */
lion_status lion_optimizer_add_group(struct lion_optimizer *opt,
                                     const struct lion_hyperparams *hp,
                                     const struct lion_step_options *options,
                                     size_t *group);

/**
 * Replaces the settings of group `group` (NULL: the defaults), from the next step on: e.g.
 * another learning rate for one group. Invalid settings change nothing.
 *
 * # Safety
 * `opt` is a live handle; `hp`, `options` as in `lion_step`.
 */
lion_status lion_optimizer_set_group(struct lion_optimizer *opt,
                                     size_t group,
                                     const struct lion_hyperparams *hp,
                                     const struct lion_step_options *options);

/**
 * The settings of group `group`: writes them to `*hp` and `*options` (either may be NULL).
 *
 * # Safety
 * `opt` is a live handle; `hp` and `options` are NULL or writable.
 */
lion_status lion_optimizer_get_group(const struct lion_optimizer *opt,
                                     size_t group,
                                     struct lion_hyperparams *hp,
                                     struct lion_step_options *options);

/**
 * The default tensor spec (f32 momentum, parameters of any type, no name, group 0, its index
 * as its stream), with `struct_size` set. Start every `lion_tensor_spec` from this.
 */
struct lion_tensor_spec lion_tensor_spec_default(void);

/**
 * Adds a tensor as `spec` describes, with zero momentum; writes its id to `*tensor` (ids are
 * 0, 1, 2, ... in the order tensors are added). The momentum is F32, F16, BF16 or Q8 (8-bit
 * blocks of 256 with a float scale each, as `lion_step_q8`; both checkpoint formats store it).
 * An unknown group, a name another tensor has or a name that is not UTF-8 is an error, and
 * nothing changes.
 *
 * # Safety
 * `opt` is a live handle; `spec` points to a `lion_tensor_spec` initialized with
 * `lion_tensor_spec_default()`, whose `name` is NULL or a NUL-terminated string; `tensor`
 * points to a `size_t`.
 */
lion_status lion_optimizer_add_tensor(struct lion_optimizer *opt,
                                      const struct lion_tensor_spec *spec,
                                      size_t *tensor);

/**
 * The id of the tensor added with this name (NUL-terminated) in `*tensor`, or
 * LION_STATUS_NO_SUCH_TENSOR.
 *
 * # Safety
 * `opt` is a live handle; `name` is a NUL-terminated string; `tensor` points to a `size_t`.
 */
lion_status lion_optimizer_tensor_id(const struct lion_optimizer *opt,
                                     const char *name,
                                     size_t *tensor);

/**
 * Counts of the optimizer, each written where the pointer is not NULL: `tensors`, `groups`,
 * `steps` (applied steps), `skipped` (steps skipped for non-finite gradients).
 *
 * # Safety
 * `opt` is a live handle; each pointer is NULL or writable.
 */
lion_status lion_optimizer_counts(const struct lion_optimizer *opt,
                                  size_t *tensors,
                                  size_t *groups,
                                  uint64_t *steps,
                                  uint64_t *skipped);

/**
 * Scales every group's learning rate by `scale` (finite, >= 0) from the next step on: a
 * schedule's factor (warm-up, cosine). Replaces the previous scale. Default 1.
 *
 * # Safety
 * `opt` is a live handle.
 */
lion_status lion_optimizer_set_lr_scale(struct lion_optimizer *opt, double scale);

/**
 * One step over the tensors in `tensors[0..count]`, in one call: each is one of the
 * optimizer's tensors (by id; any subset, in any order: tensors without a gradient this step
 * are not passed), with its parameters (updated in place) and gradients. With threads (the
 * `rayon` feature) the whole model is spread over the thread pool (large tensors cut into
 * blocks, small ones batched), bit-identically. All or nothing: every tensor is checked first
 * (pointers, types, lengths against the tensor's, no tensor twice, no buffer overlapping a
 * written one); on error nothing is written and the step count does not change.
 *
 * Returns LION_STATUS_SKIPPED_NON_FINITE (nothing written, counted as skipped) if a tensor
 * whose group sets `skip_non_finite` has a non-finite gradient.
 *
 * # Safety
 * `opt` is a live handle; `tensors` is NULL (with `count == 0`) or points to `count`
 * `lion_tensor_update`s whose buffers are as in `lion_step`.
 */
lion_status lion_optimizer_step(struct lion_optimizer *opt,
                                const struct lion_tensor_update *tensors,
                                size_t count);

/**
 * The size of the compact checkpoint (`lion_optimizer_save_state`), in `*size`.
 *
 * # Safety
 * `opt` is a live handle; `size` points to a `size_t`.
 */
lion_status lion_optimizer_state_size(const struct lion_optimizer *opt, size_t *size);

/**
 * Saves the compact checkpoint (the step and skipped counts, the lr scale, every group's
 * settings, every tensor's name, types, group, stream and momentum, a CRC-32C) into
 * `buf[0..cap]`; `*size` gets its size (`lion_optimizer_state_size`) — also when `cap` is too
 * small (LION_STATUS_BUFFER_TOO_SMALL, nothing written to `buf`). `buf = NULL, cap = 0`: only
 * the size (LION_STATUS_OK). No allocation.
 *
 * # Safety
 * `opt` is a live handle; `buf` is NULL (with `cap == 0`) or points to `cap` writable bytes
 * that are not the handle's; `size` points to a `size_t`.
 */
lion_status lion_optimizer_save_state(const struct lion_optimizer *opt,
                                      uint8_t *buf,
                                      size_t cap,
                                      size_t *size);

/**
 * Loads a compact checkpoint (`lion_optimizer_save_state`, also the previous format version)
 * into an optimizer with the same groups and tensors (matched by name; unnamed ones by
 * position). A truncated, damaged or foreign checkpoint is LION_STATUS_BAD_CHECKPOINT and the
 * optimizer is unchanged. A run resumed from it gives the bytes of an uninterrupted one.
 *
 * # Safety
 * `opt` is a live handle; `buf` is NULL (with `len == 0`) or points to `len` readable bytes.
 */
lion_status lion_optimizer_load_state(struct lion_optimizer *opt, const uint8_t *buf, size_t len);

/**
 * Saves the state as a safetensors file (readable by Python's `safetensors`: each momentum is
 * the tensor "{name}.exp_avg"; 8-bit momentum is the two tensors "{name}.exp_avg.codes" (u8)
 * and "{name}.exp_avg.absmax" (f32)) into `buf[0..cap]`; `*size` gets the file's size — also when
 * `cap` is too small (LION_STATUS_BUFFER_TOO_SMALL, nothing written to `buf`). `buf = NULL,
 * cap = 0`: only the size (LION_STATUS_OK). LION_STATUS_UNSUPPORTED without the `safetensors`
 * feature.
 *
 * # Safety
 * As `lion_optimizer_save_state`.
 */
lion_status lion_optimizer_save_safetensors(const struct lion_optimizer *opt,
                                            uint8_t *buf,
                                            size_t cap,
                                            size_t *size);

/**
 * Loads a safetensors state file (`lion_optimizer_save_safetensors`; tensors matched by
 * name). A bad file is LION_STATUS_BAD_CHECKPOINT and the optimizer is unchanged.
 * LION_STATUS_UNSUPPORTED without the `safetensors` feature.
 *
 * # Safety
 * As `lion_optimizer_load_state`.
 */
lion_status lion_optimizer_load_safetensors(struct lion_optimizer *opt,
                                            const uint8_t *buf,
                                            size_t len);

/**
 * One Lion step over `len` elements, in place: `params` (F32, F16 or BF16) and `momentum`
 * (F32, F16 or BF16; 8-bit momentum: `lion_step_q8`) are updated with `grads` (F32, F16 or
 * BF16), any combination of types. Bit-identical to the crate's reference
 * (`reference::step_with` of the Rust crate lion-optim) on every CPU.
 *
 * `hp` and `options` may be NULL (the defaults). The options' `step`, `offset` and `stream`
 * place this call in a longer run and a larger tensor (stochastic rounding, shards).
 *
 * Returns LION_STATUS_OK, LION_STATUS_SKIPPED_NON_FINITE (`options->skip_non_finite`), or an
 * error having written nothing: a NULL or misaligned buffer (a buffer may be NULL only when
 * `len` is 0), an unknown dtype, buffers that overlap, invalid hyperparameters or options.
 *
 * # Safety
 * Each buffer is NULL (with `len == 0`) or points to `len` elements of its type, valid for
 * the call and not used by another thread during it; `hp` and `options` are NULL or point to
 * structs initialized with their `_default()`.
 */
lion_status lion_step(void *params,
                      lion_dtype p_dtype,
                      const void *grads,
                      lion_dtype g_dtype,
                      void *momentum,
                      lion_dtype m_dtype,
                      size_t len,
                      const struct lion_hyperparams *hp,
                      const struct lion_step_options *options);

/**
 * `lion_step` with 8-bit momentum: `codes` (`len` bytes, one per element, into bitsandbytes'
 * signed dynamic map) and `absmax` (one float per started block of 256 elements:
 * `(len + 255) / 256`), bitsandbytes' blockwise format. Bit-identical to the crate's reference
 * (`reference::step_q8_with` of the Rust crate lion-optim) on every CPU. Zero momentum is
 * code 127 with absmax 0.
 *
 * The options' `offset` must be a multiple of 256 (blocks are aligned to the whole tensor: a
 * tensor stepped in shards is split at block boundaries); another offset is
 * LION_STATUS_INVALID_HYPERPARAMETER.
 *
 * Returns as `lion_step`; `codes` and `absmax` are checked like the other buffers (NULL,
 * alignment, overlap with each other and with `params` and `grads`).
 *
 * # Safety
 * As `lion_step`; `codes` holds `len` bytes and `absmax` `(len + 255) / 256` floats.
 */
lion_status lion_step_q8(void *params,
                         lion_dtype p_dtype,
                         const void *grads,
                         lion_dtype g_dtype,
                         uint8_t *codes,
                         float *absmax,
                         size_t len,
                         const struct lion_hyperparams *hp,
                         const struct lion_step_options *options);

/**
 * The number of elements where the cautious variant would move the parameters: where
 * `sign(c) * g > 0` with `c = m*beta1 + g*(1-beta1)` (gradients unscaled as the options say),
 * written to `*count`. For a tensor stepped in shards, add the shards' counts and step each
 * shard with LION_CAUTIOUS_SHARD. Read-only.
 *
 * # Safety
 * As `lion_step` for `grads` and `momentum` (read only); `count` points to a `uint64_t`.
 */
lion_status lion_cautious_count(const void *grads,
                                lion_dtype g_dtype,
                                const void *momentum,
                                lion_dtype m_dtype,
                                size_t len,
                                const struct lion_hyperparams *hp,
                                const struct lion_step_options *options,
                                uint64_t *count);

/**
 * `lion_cautious_count` with 8-bit momentum (`codes`, `absmax` as in `lion_step_q8`; the
 * options' `offset` a multiple of 256). Read-only.
 *
 * # Safety
 * As `lion_cautious_count`; `codes` holds `len` bytes and `absmax` `(len + 255) / 256` floats.
 */
lion_status lion_cautious_count_q8(const void *grads,
                                   lion_dtype g_dtype,
                                   const uint8_t *codes,
                                   const float *absmax,
                                   size_t len,
                                   const struct lion_hyperparams *hp,
                                   const struct lion_step_options *options,
                                   uint64_t *count);

/**
 * Whether every gradient, as a step with `options` would use it (after `grad_unscale`), is
 * finite: writes 1 or 0 to `*finite`. A mixed-precision loop checks every gradient before
 * stepping any (or sets `skip_non_finite`). Read-only.
 *
 * # Safety
 * As `lion_step` for `grads` (read only); `finite` points to an `int32_t`.
 */
lion_status lion_all_finite(const void *grads,
                            lion_dtype g_dtype,
                            size_t len,
                            const struct lion_step_options *options,
                            int32_t *finite);

/**
 * The default hyperparameters (lr 1e-4, betas 0.9 and 0.99, weight decay 0), with
 * `struct_size` set. Start every `lion_hyperparams` from this.
 */
struct lion_hyperparams lion_hyperparams_default(void);

/**
 * The default options (the plain step), with `struct_size` set. Start every
 * `lion_step_options` from this.
 */
struct lion_step_options lion_step_options_default(void);

/**
 * Copies the message of this thread's last error (the last call that returned an error
 * status; without `std`, the program's) into `buf` as a NUL-terminated string, cut to
 * `cap - 1` bytes; returns the message's full length (without the NUL), like `snprintf`:
 * call with `buf = NULL, cap = 0` to size a buffer. Calls that succeed leave it unchanged.
 *
 * # Safety
 * `buf` is NULL or points to `cap` writable bytes.
 */
size_t lion_last_error(char *buf, size_t cap);

/**
 * The name of a status constant ("LION_STATUS_OK", ...), a static string.
 */
const char *lion_status_name(lion_status status);

/**
 * The implementation this CPU runs ("avx512", "avx2", "portable" or "scalar"), a static
 * string.
 */
const char *lion_backend_name(void);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* LION_OPTIM_H */
