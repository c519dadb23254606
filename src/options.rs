//! Per-call options of a step: mixed-precision features that run inside the same single pass.

/// Per-call options of a Lion step ([`step_with`](crate::step_with), a [`Group`](crate::Group)'s
/// options, [`reference::step_with`](crate::reference::step_with)). The default is the plain
/// step.
///
/// Every option runs inside the one fused pass, and every path stays bit-identical to the
/// reference with the same options.
///
/// ```
/// use lion_optim::{Hyperparams, Rounding, StepOptions, bf16};
///
/// let opts = StepOptions {
///     grad_unscale: Some(1.0 / 1024.0),                       // AMP: grads were scaled by 1024
///     rounding: Rounding::Stochastic { seed: 42 },            // unbiased bf16 stores
///     step: 7,                                                 // keys the random bits
///     ..StepOptions::default()
/// };
/// let mut params = vec![bf16::from_f32(300.0); 64];
/// let grads = vec![1024.0f32; 64];
/// let mut momentum = vec![0.0f32; 64];
/// let hp = Hyperparams { lr: 0.25, ..Hyperparams::default() };
/// lion_optim::step_with(&mut params, &grads, &mut momentum, &hp, &opts)?;
/// // 300 - 0.25 lies between the bf16 neighbours 298 and 300: round-to-nearest would always
/// // give 300 (the update would vanish); stochastic rounding gives 298 one time in eight.
/// assert!(params.iter().all(|p| *p == bf16::from_f32(300.0) || *p == bf16::from_f32(298.0)));
/// assert!(params.iter().any(|p| *p == bf16::from_f32(298.0)));
/// assert!(momentum.iter().all(|&m| m == 0.01f64 as f32)); // (1 - 0.99) * 1024 / 1024
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct StepOptions {
    /// Step along `+sign(c)` instead of `-sign(c)`, to maximize the objective (as torch
    /// optimizers' `maximize=True`). The momentum still accumulates the gradients as given.
    pub maximize: bool,
    /// Multiply every gradient by this (in f32, rounded once from f64) before using it: the
    /// inverse loss scale of an automatic-mixed-precision loop, fused into the pass. Must be
    /// positive and finite in f32. `None`: gradients are used as they are.
    pub grad_unscale: Option<f64>,
    /// How the weight decay is scaled; see [`WeightDecay`].
    pub weight_decay: WeightDecay,
    /// How results are rounded to f16/bf16 storage; see [`Rounding`]. (f32 storage is never
    /// rounded.)
    pub rounding: Rounding,
    /// The step number: keys the random bits of stochastic rounding, so every step rounds
    /// differently. ([`Lion`](crate::Lion) sets it to its step count.)
    pub step: u64,
    /// The index of the first element of these slices within the whole tensor. Stochastic
    /// rounding draws the bits of element `i` from `(seed, step, offset + i)` only, so updating a
    /// tensor in pieces (each with its offset), on any thread or machine, gives exactly the bytes
    /// of updating it whole.
    pub offset: u64,
    /// The cautious variant of the update; see [`Cautious`]. Default: off.
    pub cautious: Cautious,
    /// Skip the step if a gradient (after [`grad_unscale`](Self::grad_unscale)) is infinite or
    /// NaN: nothing is written, and the call returns [`Outcome::SkippedNonFinite`] (a
    /// mixed-precision loop then lowers its loss scale). The gradients are read twice (a check,
    /// then the step). In a many-tensor step ([`step_many`](crate::step_many),
    /// [`Lion::step`](crate::Lion::step)) the whole step is skipped if any tensor whose group
    /// sets this has a non-finite gradient. Default: off.
    pub skip_non_finite: bool,
}

/// What a step did.
///
/// ```
/// use lion_optim::{Hyperparams, Outcome, StepOptions};
///
/// let (mut p, mut m) = ([1.0f32; 4], [0.0f32; 4]);
/// let grads = [0.5, f32::INFINITY, 0.5, 0.5];
/// let guarded = StepOptions { skip_non_finite: true, ..StepOptions::default() };
/// let done = lion_optim::step_with(&mut p, &grads, &mut m, &Hyperparams::default(), &guarded)?;
/// assert_eq!(done, Outcome::SkippedNonFinite);
/// assert_eq!((p, m), ([1.0; 4], [0.0; 4]));
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The step was applied.
    Applied,
    /// A gradient was infinite or NaN and the options asked to skip such steps
    /// ([`StepOptions::skip_non_finite`]): nothing was written.
    SkippedNonFinite,
}

/// The cautious variant ("Cautious Optimizers", Liang et al. 2024, arXiv 2411.16085): the sign
/// step is applied only where it agrees with the gradient, and rescaled so the average step
/// size stays about the same.
///
/// An element *agrees* when `sign(c) * g > 0` — `c` and the gradient `g` (after
/// [`grad_unscale`](StepOptions::grad_unscale)) are both nonzero, not NaN, and of the same
/// sign. With `agreeing` such elements out of `numel`, every agreeing element moves by
/// `lr * s * sign(c)` and the others only decay, where
///
/// ```text
/// s    = f32(numel / (agreeing + 1))      computed in f64, rounded once
/// lr_c = f32(lr) * s                      one f32 multiply
/// p'   = p1 - (agrees ? lr_c * sign(c) : 0)
/// ```
///
/// This is C-Optim's form (`c_lion.py`: `mask * (numel / (mask.sum() + 1))`, which torch
/// computes as one f32 division for tensors below 2^24 elements, and so gives the same `s`).
/// timm's `Lion(caution=True)` divides by `max(agreeing / numel, 1e-3)` instead: the same up to
/// the `+ 1` for most tensors, but a different `s` in every element, so not bit-compatible.
/// `maximize` does not change which elements agree (it negates `c` and the descent direction
/// together).
///
/// The count needs the whole tensor, so a cautious step reads gradients and momentum twice:
/// a read-only counting pass ([`cautious_count`](crate::cautious_count)), then the step. For a
/// tensor updated in pieces (shards on several threads or machines), count every piece, add
/// the counts, and step every piece with [`Cautious::Shard`]: the pieces then get exactly the
/// bytes of the whole tensor stepped with [`Cautious::Whole`].
///
/// ```
/// use lion_optim::{Cautious, Hyperparams, StepOptions};
///
/// let hp = Hyperparams { lr: 0.5, beta1: 0.0, ..Hyperparams::default() }; // c = g
/// let opts = StepOptions { cautious: Cautious::Whole, ..StepOptions::default() };
/// let (mut p, mut m) = ([1.0f32; 4], [0.0f32; 4]);
/// lion_optim::step_with(&mut p, &[1.0f32, -1.0, 0.0, 2.0], &mut m, &hp, &opts)?;
/// // 3 of 4 agree: s = 4 / (3 + 1) = 1, so they move by lr; the zero gradient does not move.
/// assert_eq!(p, [0.5, 1.5, 1.0, 0.5]);
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Cautious {
    /// The plain Lion step. Default.
    #[default]
    Off,
    /// Cautious, counted over the slices of this call (a whole tensor).
    Whole,
    /// Cautious, for a piece of a larger tensor: `agreeing` is the sum of
    /// [`cautious_count`](crate::cautious_count) over all pieces, `numel` the whole tensor's
    /// length. `agreeing <= numel` and `offset + len <= numel` are checked.
    Shard {
        /// Agreeing elements of the whole tensor.
        agreeing: u64,
        /// Elements of the whole tensor.
        numel: u64,
    },
}

/// How the decoupled weight decay is scaled.
///
/// ```
/// use lion_optim::WeightDecay;
///
/// // With a schedule that decays lr from 1e-3 to 0, the paper's decay fades with lr, the fully
/// // decoupled one stays proportional to the schedule's shape but not to lr's magnitude.
/// let wd = WeightDecay::FullyDecoupled { max_lr: 1e-3 };
/// assert_ne!(wd, WeightDecay::default());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum WeightDecay {
    /// The paper's (and the reference code's) decay: `p *= 1 - lr * weight_decay`. Default.
    #[default]
    Paper,
    /// Fully decoupled decay: `p *= 1 - weight_decay * lr / max_lr` (timm's and optimi's
    /// `decoupled`/`decouple_lr` option): `weight_decay` is the decay per step at the peak
    /// learning rate, independent of the learning rate's magnitude. `max_lr` must be positive
    /// and finite, and `weight_decay * lr / max_lr` at most 1.
    FullyDecoupled {
        /// The peak learning rate of the schedule.
        max_lr: f64,
    },
}

/// How an f32 result is rounded when it is stored as f16 or bf16.
///
/// ```
/// use lion_optim::{Element, Rounding, bf16};
///
/// assert_eq!(Rounding::default(), Rounding::Nearest);
/// // Stochastic rounding of a value a quarter of the way from 1.0 to the next bf16 (1.0078125):
/// // up for a quarter of the random values, down otherwise.
/// let x = 1.0 + 0.25 / 128.0;
/// let ups = (0..=u16::MAX).filter(|&r| bf16::from_f32_stochastic(x, r) > bf16::ONE).count();
/// assert_eq!(ups, 65536 / 4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rounding {
    /// Round to nearest, ties to even (as `half`). Default.
    #[default]
    Nearest,
    /// Round up or down at random, with the probability of each proportional to the distance to
    /// the other neighbour, so the rounding is unbiased: small updates survive on average
    /// instead of vanishing. The random bits are a pure function of `(seed, step, element index)`
    /// (see [`reference::random_bits`](crate::reference::random_bits)): deterministic, the same on
    /// every instruction set and thread count, and split-invariant.
    Stochastic {
        /// The seed of the random bits.
        seed: u64,
    },
}

/// The f32 scale `s = f32(numel / (agreeing + 1))` of a cautious step (see [`Cautious`]).
pub(crate) fn cautious_scale(agreeing: u64, numel: u64) -> f32 {
    (numel as f64 / (agreeing as f64 + 1.0)) as f32
}
