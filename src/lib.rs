//! The [Lion optimizer](https://arxiv.org/abs/2302.06675) step, fused into one pass over memory,
//! vectorized, and **bit-identical** on every instruction set to a plain scalar specification.
//!
//! Lion keeps one momentum buffer per parameter (Adam keeps two) and moves every parameter by
//! exactly `±lr`. This crate performs the whole step — decoupled weight decay, sign update and
//! momentum update — in a single pass: per element three reads (parameter, gradient, momentum)
//! and two writes (parameter, momentum), for `f32`, [`f16`](struct@f16) and [`bf16`] in any combination.
//!
//! ```
//! use lion_optim::{Hyperparams, bf16};
//!
//! let hp = Hyperparams { lr: 1e-3, weight_decay: 0.1, ..Hyperparams::default() };
//! let mut params = vec![bf16::from_f32(0.5); 1000];
//! let grads = vec![0.01f32; 1000];                      // f32 gradients
//! let mut momentum = vec![0.0f32; 1000];                // f32 momentum
//! lion_optim::step(&mut params, &grads, &mut momentum, &hp)?;
//! assert!(params[0] < bf16::from_f32(0.5));
//! # Ok::<(), lion_optim::Error>(())
//! ```
//!
//! # A whole model
//!
//! [`Lion`] is the optimizer of a training loop: parameter [groups](Group) (each with its own
//! hyperparameters and options: no weight decay for biases, another learning rate for
//! embeddings, bf16 momentum for the big matrices), one momentum buffer per tensor (each with
//! its own dtype), named tensors, one step count, and one step over the whole model — spread
//! over rayon's threads with the `rayon` feature (large tensors cut into blocks, small ones
//! batched), bit-identically:
//!
//! ```
//! use lion_optim::{Dtype, Group, Hyperparams, Lion, Tensor, TensorSpec, bf16};
//!
//! let hp = Hyperparams { lr: 3e-4, weight_decay: 0.1, ..Hyperparams::default() };
//! let mut opt = Lion::new(hp)?;
//! let no_decay = opt.add_group(Group::new(Hyperparams { weight_decay: 0.0, ..hp }))?;
//! let w = opt.add(TensorSpec::new(768 * 768).name("attn.c_proj.weight").momentum(Dtype::Bf16))?;
//! let b = opt.add(TensorSpec::new(768).name("attn.c_proj.bias").group(no_decay))?;
//!
//! let (mut wp, mut bp) = (vec![bf16::from_f32(0.02); 768 * 768], vec![0.0f32; 768]);
//! let (wg, bg) = (vec![bf16::from_f32(1e-3); 768 * 768], vec![-1e-3f32; 768]);
//! opt.set_lr_scale(0.5)?; // a schedule's factor, for every group
//! opt.step(&mut [Tensor::new(&mut wp, &wg).of(w), Tensor::new(&mut bp, &bg).of(b)])?;
//! assert!(bp[0] > 0.0);
//! # Ok::<(), lion_optim::Error>(())
//! ```
//!
//! A tensor is matched to its state by handle or by name (or by position); one that gets no
//! gradient this step is simply not passed. Its state saves and loads as a compact checkpoint
//! ([`Lion::save_state`], no allocation) or as a safetensors file readable by Python and candle
//! (`Lion::save_safetensors`, feature `safetensors`); both carry every setting that changes the
//! next step's bytes, so a resumed run gives the bytes of an uninterrupted one. For frameworks
//! that keep the momentum themselves, [`step_many`] is the same many-tensor step without state.
//!
//! # Options
//!
//! Mixed-precision features are per-call [`StepOptions`] of the same fused pass:
//! [stochastic rounding](Rounding::Stochastic) of f16/bf16 stores (counter-based random bits:
//! deterministic, split-invariant), gradient unscaling, `maximize`, the
//! [weight-decay variant](WeightDecay) and the [cautious variant](Cautious) (a read-only
//! counting pass, [`cautious_count`], then the step; split-invariant through
//! [`Cautious::Shard`]). [`all_finite`] checks gradients, and
//! [`skip_non_finite`](StepOptions::skip_non_finite) skips steps whose gradients overflowed.
//!
//! # Semantics
//!
//! [`reference::step`] is the specification; every [`Backend`] is tested bit for bit against
//! it. Hyperparameters are `f64`; once per call they become f32 constants, each computed
//! in f64 and rounded once — exactly what the reference PyTorch code does with its Python floats:
//!
//! ```text
//! decay = f32(1 - lr*wd)    b1 = f32(beta1)    omb1 = f32(1 - beta1)
//! lr    = f32(lr)           b2 = f32(beta2)    omb2 = f32(1 - beta2)
//!
//! per element, in f32:   p1 = p * decay
//!                        c  = m*b1 + g*omb1          (the OLD momentum)
//!                        p' = p1 - lr * sign(c)      sign(±0) = sign(NaN) = +0
//!                        m' = m*b2 + g*omb2
//! ```
//!
//! * **No fused multiply-add**, anywhere: every multiply and add rounds on its own, so results are
//!   the same on SSE2, AVX2, NEON, wasm simd128 and a scalar FPU.
//! * **Loads widen exactly; each store rounds once**, to nearest with ties to even, exactly as
//!   `half::f16::from_f32` / `half::bf16::from_f32` (a NaN stays a NaN).
//! * **sign** follows the comparison rule of PyTorch's CPU sign kernel: `+1` if `c > 0`, `-1` if
//!   `c < 0`, otherwise `+0` — so `c == 0` (e.g. a zero gradient on zero momentum) only decays the
//!   parameter, and a NaN in `c` does not move the parameter (but does reach the momentum: guard
//!   your gradients, see below).
//!
//! ## Where this differs from its peers, and why
//!
//! | implementation | difference | our choice |
//! |---|---|---|
//! | PyTorch reference (`lion_pytorch.py`) | `exp_avg.mul_(b2).add_(g, alpha=1-b2)` is fused into one rounding on CPU | momentum rounds the product and the sum separately (same on every ISA); parameters after one step are identical, momentum may differ by one f32 rounding in some elements |
//! | DeepSpeed CPU Lion (AVX) | masks the sign with the bits of `-1.0` instead of `-0.0`, so most updates vanish; moves a parameter by `lr` when `c == 0` | exact sign; `c == 0` does not move |
//! | lucidrains' Triton kernel | moves a parameter when `c` is NaN | NaN does not move it |
//! | optax (`jnp.sign`) | a NaN in `c` becomes a NaN parameter | NaN does not move it |
//! | bitsandbytes 32-bit Lion (until 2026) | coupled L2 decay added to the gradient | decoupled decay, as the paper |
//!
//! # Element types
//!
//! Parameters `P`, gradients `G` and momentum `M` are each any of:
//!
//! | type | bytes | loaded as | stored as |
//! |---|---|---|---|
//! | `f32` | 4 | itself | itself |
//! | [`f16`](struct@f16) | 2 | exact widening | round to nearest even; overflow to ±inf; subnormals kept |
//! | [`bf16`] | 2 | exact widening | round to nearest even; overflow to ±inf |
//!
//! All 27 combinations are supported and tested, e.g. bf16 parameters with f32 momentum, or f32
//! master weights with bf16 gradients and bf16 momentum (the paper's authors suggest bf16
//! momentum).
//!
//! # Bad input
//!
//! Mismatched lengths and invalid hyperparameters (negative or non-finite `lr` or
//! `weight_decay`, betas outside `[0, 1)`, `lr * weight_decay > 1`, which would flip the
//! parameters' signs) and invalid options return an [`Error`] **before anything is written**.
//! So do bad state files (truncated, corrupted — both formats carry a checksum —, or of another
//! optimizer). No panic is reachable from the public API with bad data.
//!
//! # Instruction sets
//!
//! [`Backend::detect`] reports which implementation [`step`] uses: AVX-512 (F+BW) or AVX2+F16C
//! on x86_64 when the CPU has them (detected once at run time, so a default build uses them),
//! otherwise the portable backend: `wide`'s vectors in safe code, compiled for the target
//! features of the build (SSE2, NEON, wasm simd128, or plain arrays). All give the same bits;
//! run any of them explicitly with [`Backend::step_with`]. With the `rayon` feature,
//! `par_step_with` splits large slices across threads, also bit-identically.
//!
//! # Without `std`
//!
//! The crate is `#![no_std]`. Features:
//!
//! * `std` (default): implies `alloc`.
//! * `alloc`: [`Lion`] can own its momentum buffers ([`Lion::new`], [`Lion::add`]) and write
//!   checkpoints into a `Vec<u8>`.
//! * `rayon` (implies `std`): `par_step_with`; [`Lion::step`] and [`step_many`] spread over the
//!   thread pool.
//! * `safetensors` (implies `alloc`): `Lion::save_safetensors` / `Lion::load_safetensors`.
//!
//! Build these docs with the feature badges as docs.rs shows them:
//! `RUSTDOCFLAGS="--cfg docsrs" cargo +nightly doc --no-deps --all-features --open`.
//!
//! With `default-features = false` everything works over caller-provided buffers:
//! [`step`], [`step_with`], [`step_many`], and [`Lion::with_buffers`] over momentum slices you
//! own (e.g. `static` arrays on a microcontroller).
#![doc = ""]
#![doc = include_str!("../docs/dtypes.md")]
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

// The only module with `unsafe` code: the `#[target_feature]` instruction sets.
#[allow(unsafe_code)]
mod arch;
#[macro_use]
mod entries;
mod backend;
mod dtype;
mod error;
mod exec;
mod hyper;
mod kernel;
mod optimizer;
mod options;
pub mod reference;
mod simd;

pub use backend::Backend;
#[allow(deprecated)]
pub use backend::Path;
#[cfg(feature = "alloc")]
pub use dtype::Buffer;
pub use dtype::{
    Dtype, Element, MomentumDtype, MomentumMut, MomentumRef, Q8_BLOCK, Q8_MAP, Q8Mut, Q8Ref,
    SliceMut, SliceRef,
};
pub use error::{CheckpointError, Error};
pub use exec::{PAR_BLOCK, PAR_THRESHOLD};
pub use half::{bf16, f16};
pub use hyper::Hyperparams;
#[allow(deprecated)]
pub use optimizer::step_many_guarded;
pub use optimizer::{
    Group, GroupId, Lion, MomentumStore, Tensor, TensorId, TensorInfo, TensorSpec, Update,
    step_many,
};
pub use options::{Cautious, Outcome, Rounding, StepOptions, WeightDecay};

use arch::Isa;
use exec::{finite_one, step_one};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

entries! {
    /// One Lion step over `params` in place, with `grads`, updating `momentum` in place.
    ///
    /// `params`, `grads` and `momentum` must have the same length; each may be `f32`,
    /// [`f16`](struct@f16) or [`bf16`]. Runs on the fastest available [`Backend`]; the result is
    /// bit-identical to [`reference::step`]. Returns an [`Error`], having written nothing, if the
    /// lengths differ or a hyperparameter is invalid. [`step_with`] takes options.
    ///
    /// ```
    /// use lion_optim::{Hyperparams, f16};
    ///
    /// let hp = Hyperparams { lr: 0.25, ..Hyperparams::default() };
    /// let mut params = [f16::from_f32(1.0); 5];
    /// let mut momentum = [f16::ZERO; 5];
    /// lion_optim::step(&mut params, &[1.0f32, -1.0, 0.0, 2.0, -0.5], &mut momentum, &hp)?;
    /// let moved: Vec<f32> = params.iter().map(|p| p.to_f32()).collect();
    /// assert_eq!(moved, [0.75, 1.25, 1.0, 0.75, 1.25]);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn step<P: Element, G: Element, M: Element>(
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        hp: &Hyperparams,
    ) -> Result<(), Error> = |isa| {
        step_one(isa, params, grads, momentum, hp, &StepOptions::default(), false).map(|_| ())
    };
    impl Backend {
        /// One Lion step on this backend.
        #[deprecated(since = "0.2.0", note = "use `Backend::step_with` with `StepOptions::default()`")]
    }

    /// One Lion step with per-call options (see [`StepOptions`]): gradient unscaling, maximize, the
    /// weight-decay variant, stochastic rounding, the cautious variant, a shard's offset, skipping
    /// steps with non-finite gradients. Bit-identical to [`reference::step_with`] with the same
    /// options; invalid options are an [`Error`], and nothing is written. Returns whether the step
    /// was applied ([`Outcome::SkippedNonFinite`] only with
    /// [`skip_non_finite`](StepOptions::skip_non_finite)).
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Outcome, StepOptions, WeightDecay};
    ///
    /// let hp = Hyperparams { lr: 1e-3, weight_decay: 0.1, ..Hyperparams::default() };
    /// let opts = StepOptions {
    ///     weight_decay: WeightDecay::FullyDecoupled { max_lr: 1e-2 },
    ///     ..StepOptions::default()
    /// };
    /// let (mut p, mut m) = ([2.0f32], [0.0f32]);
    /// assert_eq!(lion_optim::step_with(&mut p, &[0.0f32], &mut m, &hp, &opts)?, Outcome::Applied);
    /// assert_eq!(p[0], 2.0 * (1.0f64 - 0.1 * 1e-3 / 1e-2) as f32); // decayed by 1%, not 0.01%
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn step_with<P: Element, G: Element, M: Element>(
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        hp: &Hyperparams,
        options: &StepOptions,
    ) -> Result<Outcome, Error> = |isa| step_one(isa, params, grads, momentum, hp, options, false);
    impl Backend {
        /// [`step_with`](crate::step_with) on this backend; [`Error::BackendUnavailable`] (and
        /// nothing written) if it cannot run here.
        ///
        /// ```
        /// use lion_optim::{Backend, Hyperparams, StepOptions};
        ///
        /// let (mut p, mut m) = ([1.0f32; 3], [0.0f32; 3]);
        /// let opts = StepOptions { maximize: true, ..StepOptions::default() };
        /// Backend::Portable.step_with(&mut p, &[1.0f32; 3], &mut m, &Hyperparams::default(), &opts)?;
        /// assert_eq!(p, [1.0 + 1e-4f64 as f32; 3]);
        /// # Ok::<(), lion_optim::Error>(())
        /// ```
    }

    /// [`step_with`] with slices of at least [`PAR_THRESHOLD`] elements split into blocks of
    /// [`PAR_BLOCK`] elements that rayon's thread pool updates in parallel; bit-identical to
    /// [`step_with`] (each block is updated with its own offset, so stochastic rounding too).
    ///
    /// ```
    /// use lion_optim::{Hyperparams, StepOptions};
    ///
    /// let n = 1 << 19;
    /// let (mut p, g, mut m) = (vec![1.0f32; n], vec![-1.0f32; n], vec![0.0f32; n]);
    /// let opts = StepOptions { maximize: true, ..StepOptions::default() };
    /// lion_optim::par_step_with(&mut p, &g, &mut m, &Hyperparams { lr: 0.5, ..Default::default() }, &opts)?;
    /// assert!(p.iter().all(|&x| x == 0.5));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    #[cfg(feature = "rayon")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
    pub fn par_step_with<P: Element, G: Element, M: Element>(
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        hp: &Hyperparams,
        options: &StepOptions,
    ) -> Result<Outcome, Error> = |isa| step_one(isa, params, grads, momentum, hp, options, true);
    impl Backend {
        /// [`par_step_with`](crate::par_step_with) on this backend.
        ///
        /// ```
        /// use lion_optim::{Backend, Hyperparams, Rounding, StepOptions, bf16};
        ///
        /// let n = 1 << 19;
        /// let opts = StepOptions { rounding: Rounding::Stochastic { seed: 3 }, ..StepOptions::default() };
        /// let (p0, g) = (vec![bf16::from_f32(3.0); n], vec![1.0f32; n]);
        /// let (mut p1, mut m1, mut p2, mut m2) = (p0.clone(), vec![0.0f32; n], p0, vec![0.0f32; n]);
        /// let hp = Hyperparams { lr: 1e-3, ..Hyperparams::default() };
        /// Backend::detect().par_step_with(&mut p1, &g, &mut m1, &hp, &opts)?;
        /// Backend::detect().step_with(&mut p2, &g, &mut m2, &hp, &opts)?;
        /// assert_eq!((p1, m1), (p2, m2));
        /// # Ok::<(), lion_optim::Error>(())
        /// ```
        #[cfg(feature = "rayon")]
        #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
    }

    /// The number of elements where the [cautious variant](Cautious) moves the parameter: where
    /// `sign(c) * g > 0`, with `c = m*b1 + g*omb1` and `g` as a step with `hp` and `options` computes
    /// them. One vectorized read-only pass over gradients and momentum; exact, and the same on every
    /// backend. ([`SliceRef::cautious_count`] for slices typed at run time.)
    ///
    /// For a tensor stepped in pieces, add the pieces' counts and step each piece with
    /// [`Cautious::Shard`]: the result is the bytes of the whole tensor stepped with
    /// [`Cautious::Whole`]. Returns an [`Error`] if the lengths differ or `hp`/`options` are invalid.
    ///
    /// ```
    /// use lion_optim::{Cautious, Hyperparams, StepOptions};
    ///
    /// let hp = Hyperparams { lr: 0.1, ..Hyperparams::default() };
    /// let g: Vec<f32> = (0..1000).map(|i| (i as f32 - 300.0) / 1000.0).collect();
    /// let m: Vec<f32> = (0..1000).map(|i| if i % 3 == 0 { -0.5 } else { 0.5 }).collect();
    /// let opts = StepOptions::default();
    /// // Two shards, counted separately and stepped with the total: the bytes of one whole step.
    /// let agreeing = lion_optim::cautious_count(&g[..600], &m[..600], &hp, &opts)?
    ///     + lion_optim::cautious_count(&g[600..], &m[600..], &hp, &opts)?;
    /// let (mut p1, mut m1) = (vec![1.0f32; 1000], m.clone());
    /// let whole = StepOptions { cautious: Cautious::Whole, ..opts };
    /// lion_optim::step_with(&mut p1, &g, &mut m1, &hp, &whole)?;
    /// let (mut p2, mut m2) = (vec![1.0f32; 1000], m.clone());
    /// for (start, end) in [(0, 600), (600, 1000)] {
    ///     let shard = StepOptions {
    ///         cautious: Cautious::Shard { agreeing, numel: 1000 },
    ///         offset: start as u64,
    ///         ..opts
    ///     };
    ///     lion_optim::step_with(&mut p2[start..end], &g[start..end], &mut m2[start..end], &hp, &shard)?;
    /// }
    /// assert_eq!((p1, m1), (p2, m2));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn cautious_count<G: Element, M: Element>(
        grads: &[G],
        momentum: &[M],
        hp: &Hyperparams,
        options: &StepOptions,
    ) -> Result<u64, Error> = |isa| {
        let k = hp.count_constants(options, (grads.len(), momentum.len()))?;
        Ok(isa.run(kernel::Count { grads, momentum, k: &k, options }))
    };
    impl Backend {
        /// [`cautious_count`](crate::cautious_count) on this backend.
        ///
        /// ```
        /// use lion_optim::{Backend, Hyperparams, StepOptions};
        ///
        /// let (g, m) = ([1.0f32, -1.0, 1.0], [0.0f32, 0.0, -9.0]);
        /// let (hp, opts) = (Hyperparams::default(), StepOptions::default());
        /// assert_eq!(Backend::Portable.cautious_count(&g, &m, &hp, &opts)?, 2);
        /// # Ok::<(), lion_optim::Error>(())
        /// ```
    }

    /// [`step`] with large slices split across rayon's thread pool.
    #[cfg(feature = "rayon")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
    #[deprecated(since = "0.2.0", note = "use `par_step_with` with `StepOptions::default()`")]
    pub fn par_step<P: Element, G: Element, M: Element>(
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        hp: &Hyperparams,
    ) -> Result<(), Error> = |isa| {
        step_one(isa, params, grads, momentum, hp, &StepOptions::default(), true).map(|_| ())
    };
    impl Backend {
        /// [`step`](Self::step) split across rayon's thread pool.
        #[cfg(feature = "rayon")]
        #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
        #[deprecated(
            since = "0.2.0",
            note = "use `Backend::par_step_with` with `StepOptions::default()`"
        )]
    }

    /// [`step_with`], unless a gradient (after unscaling) is infinite or NaN.
    #[deprecated(
        since = "0.2.0",
        note = "use `step_with` with `StepOptions { skip_non_finite: true, .. }`"
    )]
    pub fn step_guarded<P: Element, G: Element, M: Element>(
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        hp: &Hyperparams,
        options: &StepOptions,
    ) -> Result<Outcome, Error> = |isa| {
        let options = StepOptions { skip_non_finite: true, ..*options };
        step_one(isa, params, grads, momentum, hp, &options, false)
    };
    impl Backend {
        /// A step that is skipped if a gradient is not finite.
        #[deprecated(
            since = "0.2.0",
            note = "use `Backend::step_with` with `StepOptions { skip_non_finite: true, .. }`"
        )]
    }
}

/// Whether every gradient, as a step with `options` would use it (after
/// [`grad_unscale`](StepOptions::grad_unscale)), is finite: one vectorized read-only pass.
/// `false` if the options are invalid. ([`SliceRef::all_finite`] for slices typed at run time.)
///
/// A mixed-precision loop calls it on every gradient tensor before stepping any of them, and
/// skips the whole step (and lowers its loss scale) if one is not finite — or lets the step do
/// it ([`skip_non_finite`](StepOptions::skip_non_finite)).
///
/// ```
/// use lion_optim::{StepOptions, bf16};
///
/// let opts = StepOptions::default();
/// assert!(lion_optim::all_finite(&[1.0f32, -2.0, 3e38], &opts));
/// assert!(!lion_optim::all_finite(&[bf16::ONE, bf16::NAN], &opts));
/// let unscale = StepOptions { grad_unscale: Some(16.0), ..opts };
/// assert!(!lion_optim::all_finite(&[3e38f32], &unscale)); // 3e38 * 16 overflows in f32
/// ```
pub fn all_finite<G: Element>(grads: &[G], options: &StepOptions) -> bool {
    finite_one(Isa::best(), grads, options)
}

impl SliceRef<'_> {
    /// [`all_finite`] of gradients typed at run time.
    ///
    /// ```
    /// use lion_optim::{SliceRef, StepOptions, bf16};
    ///
    /// let grads = [bf16::ONE, bf16::INFINITY];
    /// assert!(!SliceRef::from(&grads[..]).all_finite(&StepOptions::default()));
    /// ```
    pub fn all_finite(self, options: &StepOptions) -> bool {
        match Hyperparams::default().constants_with(options, 0) {
            Ok(k) => exec::finite_dyn(Isa::best(), self, k.unscale(options)),
            Err(_) => false,
        }
    }

    /// [`cautious_count`] of gradients (`self`) and momentum typed at run time (a
    /// [`SliceRef`], a typed slice, or 8-bit momentum: a [`Q8Ref`]).
    ///
    /// ```
    /// use lion_optim::{Hyperparams, SliceRef, StepOptions, bf16};
    ///
    /// let (g, m) = ([1.0f32, -1.0, 1.0], [bf16::ZERO, bf16::ZERO, bf16::from_f32(-9.0)]);
    /// let (hp, opts) = (Hyperparams::default(), StepOptions::default());
    /// assert_eq!(SliceRef::from(&g[..]).cautious_count(SliceRef::from(&m[..]), &hp, &opts)?, 2);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn cautious_count<'m>(
        self,
        momentum: impl Into<MomentumRef<'m>>,
        hp: &Hyperparams,
        options: &StepOptions,
    ) -> Result<u64, Error> {
        let momentum = momentum.into();
        let k = hp.constants_with(options, self.len())?;
        error::check_lengths(self.len(), self.len(), momentum.len())?;
        if let MomentumRef::Q8(_) = momentum {
            reference::check_q8_offset(options)?;
        }
        Ok(exec::count_dyn(Isa::best(), self, momentum, &k, options))
    }
}
