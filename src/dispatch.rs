//! The implementations ("paths") of a step, and the choice among them.

use core::fmt;

use crate::arch::{self, portable::Portable};
use crate::element::Element;
use crate::error::check_lengths;
use crate::hyper::Consts;
use crate::{Cautious, Error, Hyperparams, Rounding, StepOptions, kernel, reference};

/// An implementation of the Lion step. All of them give **bit-identical** results.
///
/// [`step`](crate::step) takes the fastest path available ([`Path::detect`]); tests, benchmarks
/// and curious users can run any available path explicitly with [`Path::step`], the way BLAKE3
/// exposes its per-platform implementations.
///
/// ```
/// use lion_optim::{Hyperparams, Path};
///
/// let hp = Hyperparams::default();
/// let (mut p1, mut m1) = (vec![0.5f32; 100], vec![0.0f32; 100]);
/// let (mut p2, mut m2) = (p1.clone(), m1.clone());
/// let g = vec![0.25f32; 100];
/// Path::Portable.step(&mut p1, &g, &mut m1, &hp)?;
/// Path::Scalar.step(&mut p2, &g, &mut m2, &hp)?;
/// assert_eq!((p1, m1), (p2, m2));
/// println!("lion_optim::step runs on the {} path", Path::detect());
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Path {
    /// The scalar specification, [`reference::step`]: one element at a time.
    Scalar,
    /// `wide`'s 8-lane vectors in safe code, for the target features of the build: SSE2 on a
    /// default x86_64 build, AVX2 with `-C target-cpu=x86-64-v3`, NEON on aarch64, simd128 on
    /// wasm32 with `+simd128`, plain arrays elsewhere.
    Portable,
    /// x86_64 with AVX2 and F16C, detected at run time (with `std`: `is_x86_feature_detected!`;
    /// without: a CPUID/XGETBV probe), or known at compile time with `-C target-feature`. No FMA.
    Avx2,
    /// x86_64 with AVX-512 F and BW (16 lanes), detected like [`Path::Avx2`]. No FMA.
    Avx512,
}

impl Path {
    /// Every path this version of the crate knows, available here or not.
    ///
    /// ```
    /// use lion_optim::Path;
    ///
    /// let here: Vec<Path> = Path::ALL.iter().copied().filter(|p| p.is_available()).collect();
    /// assert!(here.contains(&Path::Scalar) && here.contains(&Path::Portable));
    /// ```
    pub const ALL: &'static [Path] = &[Path::Scalar, Path::Portable, Path::Avx2, Path::Avx512];

    /// The path [`step`](crate::step) takes on this machine.
    ///
    /// ```
    /// assert!(lion_optim::Path::detect().is_available());
    /// ```
    ///
    /// The order of preference is AVX-512, AVX2, portable: each is faster than the next at every
    /// size we measured (see the README). Detection runs once per process and is cached; when
    /// the build already enables the features (`-C target-cpu=...`) no run-time check is made.
    pub fn detect() -> Path {
        [Path::Avx512, Path::Avx2]
            .into_iter()
            .find(|p| p.is_available())
            .unwrap_or(Path::Portable)
    }

    /// Whether this path can run on this machine and build.
    ///
    /// ```
    /// assert!(lion_optim::Path::Portable.is_available());
    /// ```
    pub fn is_available(self) -> bool {
        match self {
            Path::Scalar | Path::Portable => true,
            Path::Avx2 | Path::Avx512 => arch::available(self),
        }
    }

    /// A short lower-case name: `"scalar"`, `"portable"`.
    ///
    /// ```
    /// assert_eq!(lion_optim::Path::Portable.name(), "portable");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Portable => "portable",
            Path::Avx2 => "avx2",
            Path::Avx512 => "avx512",
        }
    }

    /// The vector instructions this path executes, as compiled into this build: for
    /// [`Path::Portable`] that is what `wide` was compiled for (`"sse2"`, `"avx2"`, `"neon"`,
    /// `"simd128"`, or `"scalar"` on targets without SIMD).
    ///
    /// ```
    /// use lion_optim::Path;
    ///
    /// assert_eq!(Path::Scalar.instructions(), "scalar");
    /// let portable = Path::Portable.instructions();
    /// assert!(["sse2", "avx2", "neon", "simd128", "scalar"].contains(&portable));
    /// ```
    pub fn instructions(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Portable => crate::arch::portable::INSTRUCTIONS,
            Path::Avx2 => "avx2+f16c",
            Path::Avx512 => "avx512f+bw",
        }
    }

    /// Runs one Lion step on this path; the contract is [`step`](crate::step)'s.
    ///
    /// Returns [`Error::PathUnavailable`] (and touches nothing) if the path cannot run here.
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Path};
    ///
    /// let mut p = [1.0f32; 3];
    /// let mut m = [0.0f32; 3];
    /// Path::Portable.step(&mut p, &[1.0f32; 3], &mut m, &Hyperparams::default())?;
    /// assert_eq!(p, [1.0 - 1e-4f64 as f32; 3]);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn step<P: Element, G: Element, M: Element>(
        self,
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        hp: &Hyperparams,
    ) -> Result<(), Error> {
        self.step_with(params, grads, momentum, hp, &StepOptions::default())
    }

    /// Runs one Lion step with per-call options on this path; the contract is
    /// [`step_with`](crate::step_with)'s.
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Path, StepOptions};
    ///
    /// let (mut p, mut m) = ([1.0f32; 3], [0.0f32; 3]);
    /// let opts = StepOptions { maximize: true, ..StepOptions::default() };
    /// Path::Portable.step_with(&mut p, &[1.0f32; 3], &mut m, &Hyperparams::default(), &opts)?;
    /// assert_eq!(p, [1.0 + 1e-4f64 as f32; 3]);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn step_with<P: Element, G: Element, M: Element>(
        self,
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        hp: &Hyperparams,
        options: &StepOptions,
    ) -> Result<(), Error> {
        let k = self.validate(params.len(), grads.len(), momentum.len(), hp, options)?;
        let k = self.with_caution(k, grads, momentum, options);
        self.run(params, grads, momentum, &k, options);
        Ok(())
    }

    /// The cautious variant's count on this path; the contract is
    /// [`cautious_count`](crate::cautious_count)'s.
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Path, StepOptions};
    ///
    /// let (g, m) = ([1.0f32, -1.0, 1.0], [0.0f32, 0.0, -9.0]);
    /// let (hp, opts) = (Hyperparams::default(), StepOptions::default());
    /// assert_eq!(Path::Portable.cautious_count(&g, &m, &hp, &opts)?, 2);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn cautious_count<G: Element, M: Element>(
        self,
        grads: &[G],
        momentum: &[M],
        hp: &Hyperparams,
        options: &StepOptions,
    ) -> Result<u64, Error> {
        let k = self.validate(grads.len(), grads.len(), momentum.len(), hp, options)?;
        Ok(self.count(grads, momentum, &k, options))
    }

    /// The constants of a step with `options`: for a cautious step, with the learning rate
    /// `lr_c` of the count (taken over these slices for [`Cautious::Whole`]).
    #[inline(always)]
    fn with_caution<G: Element, M: Element>(
        self,
        k: Consts,
        grads: &[G],
        momentum: &[M],
        options: &StepOptions,
    ) -> Consts {
        match options.cautious {
            Cautious::Off => k,
            Cautious::Whole => {
                let agreeing = self.count(grads, momentum, &k, options);
                k.cautious(agreeing, grads.len() as u64)
            }
            Cautious::Shard { agreeing, numel } => k.cautious(agreeing, numel),
        }
    }

    /// The count of agreeing elements on this (available) path, on validated input.
    pub(crate) fn count<G: Element, M: Element>(
        self,
        grads: &[G],
        momentum: &[M],
        k: &Consts,
        options: &StepOptions,
    ) -> u64 {
        match self {
            Path::Scalar => reference::count(grads, momentum, k, options),
            Path::Portable => kernel::cautious_count(Portable, grads, momentum, k, options),
            Path::Avx2 | Path::Avx512 => arch::cautious_count(self, grads, momentum, k, options)
                .unwrap_or_else(|| kernel::cautious_count(Portable, grads, momentum, k, options)),
        }
    }

    /// Like [`step`](Self::step), but slices of at least [`PAR_THRESHOLD`] elements are split
    /// into blocks of [`PAR_BLOCK`] elements that rayon's thread pool updates in parallel.
    /// Lion is element-wise, so the result is bit-identical to [`step`](Self::step).
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Path};
    ///
    /// let n = 1 << 20;
    /// let (mut p, g, mut m) = (vec![1.0f32; n], vec![0.5f32; n], vec![0.0f32; n]);
    /// Path::detect().par_step(&mut p, &g, &mut m, &Hyperparams::default())?;
    /// assert!(p.iter().all(|&x| x == 1.0 - 1e-4f64 as f32));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    #[cfg(feature = "rayon")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
    pub fn par_step<P: Element, G: Element, M: Element>(
        self,
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        hp: &Hyperparams,
    ) -> Result<(), Error> {
        self.par_step_with(params, grads, momentum, hp, &StepOptions::default())
    }

    /// [`step_with`](Self::step_with) split across rayon's thread pool as
    /// [`par_step`](Self::par_step) does; each block is updated with its own
    /// [`offset`](StepOptions::offset), so stochastic rounding gives the same bits too.
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Path, Rounding, StepOptions, bf16};
    ///
    /// let n = 1 << 19;
    /// let opts = StepOptions { rounding: Rounding::Stochastic { seed: 3 }, ..StepOptions::default() };
    /// let (p0, g) = (vec![bf16::from_f32(3.0); n], vec![1.0f32; n]);
    /// let (mut p1, mut m1, mut p2, mut m2) = (p0.clone(), vec![0.0f32; n], p0, vec![0.0f32; n]);
    /// let hp = Hyperparams { lr: 1e-3, ..Hyperparams::default() };
    /// Path::detect().par_step_with(&mut p1, &g, &mut m1, &hp, &opts)?;
    /// Path::detect().step_with(&mut p2, &g, &mut m2, &hp, &opts)?;
    /// assert_eq!((p1, m1), (p2, m2));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    #[cfg(feature = "rayon")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
    pub fn par_step_with<P: Element, G: Element, M: Element>(
        self,
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        hp: &Hyperparams,
        options: &StepOptions,
    ) -> Result<(), Error> {
        use rayon::prelude::*;
        let k = self.validate(params.len(), grads.len(), momentum.len(), hp, options)?;
        if params.len() < PAR_THRESHOLD {
            let k = self.with_caution(k, grads, momentum, options);
            self.run(params, grads, momentum, &k, options);
        } else {
            let k = match options.cautious {
                Cautious::Whole => {
                    let agreeing = grads
                        .par_chunks(PAR_BLOCK)
                        .zip(momentum.par_chunks(PAR_BLOCK))
                        .map(|(g, m)| self.count(g, m, &k, options))
                        .sum();
                    k.cautious(agreeing, grads.len() as u64)
                }
                _ => self.with_caution(k, grads, momentum, options),
            };
            params
                .par_chunks_mut(PAR_BLOCK)
                .zip(grads.par_chunks(PAR_BLOCK))
                .zip(momentum.par_chunks_mut(PAR_BLOCK))
                .enumerate()
                .for_each(|(i, ((p, g), m))| {
                    let offset = options.offset + (i * PAR_BLOCK) as u64;
                    self.run(p, g, m, &k, &StepOptions { offset, ..*options });
                });
        }
        Ok(())
    }

    /// Whether every gradient, as a step with `options` would use it (multiplied by
    /// [`grad_unscale`](StepOptions::grad_unscale), if set), is finite; see
    /// [`all_finite`](crate::all_finite). `false` if the path or the options are invalid.
    ///
    /// ```
    /// use lion_optim::{Path, StepOptions};
    ///
    /// let grads = [1.0f32, f32::INFINITY];
    /// assert!(!Path::Portable.all_finite(&grads, &StepOptions::default()));
    /// assert!(Path::Portable.all_finite(&grads[..1], &StepOptions::default()));
    /// ```
    pub fn all_finite<G: Element>(self, grads: &[G], options: &StepOptions) -> bool {
        let Ok(inv_scale) = options.validate(0) else {
            return false;
        };
        let inv_scale = options.grad_unscale.map(|_| inv_scale);
        match self {
            Path::Scalar => grads.iter().all(|g| {
                let g = g.to_f32_exact();
                inv_scale.map_or(g, |s| g * s).is_finite()
            }),
            Path::Portable => kernel::all_finite(Portable, grads, inv_scale),
            Path::Avx2 | Path::Avx512 => arch::all_finite(self, grads, inv_scale).unwrap_or(false),
        }
    }

    /// [`step_with`](Self::step_with) if every gradient is finite; otherwise nothing is
    /// written. See [`step_guarded`](crate::step_guarded).
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Outcome, Path, StepOptions};
    ///
    /// let (mut p, mut m) = ([1.0f32], [0.0f32]);
    /// let (hp, opts) = (Hyperparams::default(), StepOptions::default());
    /// let done = Path::Portable.step_guarded(&mut p, &[f32::NAN], &mut m, &hp, &opts)?;
    /// assert_eq!((done, p), (Outcome::SkippedNonFinite, [1.0]));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    #[must_use = "a skipped step changed nothing: the caller usually lowers its loss scale"]
    pub fn step_guarded<P: Element, G: Element, M: Element>(
        self,
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        hp: &Hyperparams,
        options: &StepOptions,
    ) -> Result<Outcome, Error> {
        let k = self.validate(params.len(), grads.len(), momentum.len(), hp, options)?;
        if !self.all_finite(grads, options) {
            return Ok(Outcome::SkippedNonFinite);
        }
        let k = self.with_caution(k, grads, momentum, options);
        self.run(params, grads, momentum, &k, options);
        Ok(Outcome::Applied)
    }

    /// Checks availability, hyperparameters, options and lengths; returns the step's constants.
    /// (Inlined: returned through memory, the large `Result` costs more than the checks.)
    #[inline(always)]
    fn validate(
        self,
        params: usize,
        grads: usize,
        momentum: usize,
        hp: &Hyperparams,
        options: &StepOptions,
    ) -> Result<Consts, Error> {
        if !self.is_available() {
            return Err(Error::PathUnavailable(self));
        }
        let k = hp.constants_with(options, params)?;
        check_lengths(params, grads, momentum)?;
        Ok(k)
    }

    /// Runs this (available) path on validated input. With stochastic rounding, the slices are
    /// cut where the element index crosses a multiple of 2^32, so that within one kernel call the
    /// index's high 32 bits (folded into the key of the random bits) are constant.
    pub(crate) fn run<P: Element, G: Element, M: Element>(
        self,
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        k: &Consts,
        options: &StepOptions,
    ) {
        let Rounding::Stochastic { seed } = options.rounding else {
            return self.run_segment(params, grads, momentum, k, options, 0);
        };
        let (mut p, mut g, mut m, mut offset) = (params, grads, momentum, options.offset);
        loop {
            let to_boundary = (1u64 << 32) - (offset & 0xffff_ffff);
            let n = usize::try_from(to_boundary).map_or(p.len(), |b| b.min(p.len()));
            let (p1, p2) = p.split_at_mut(n);
            let (g1, g2) = g.split_at(n);
            let (m1, m2) = m.split_at_mut(n);
            let key = reference::stream_key(seed, options.step, (offset >> 32) as u32);
            self.run_segment(p1, g1, m1, k, &StepOptions { offset, ..*options }, key);
            if p2.is_empty() {
                return;
            }
            (p, g, m, offset) = (p2, g2, m2, offset + n as u64);
        }
    }

    /// One kernel call (see [`kernel::lion`]).
    fn run_segment<P: Element, G: Element, M: Element>(
        self,
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        k: &Consts,
        options: &StepOptions,
        key: u32,
    ) {
        match self {
            Path::Scalar => reference::lion(params, grads, momentum, k, options),
            Path::Portable => kernel::lion(Portable, params, grads, momentum, k, options, key),
            Path::Avx2 | Path::Avx512 => {
                if !arch::lion(self, params, grads, momentum, k, options, key) {
                    // `validate` checked availability; stay correct anyway.
                    kernel::lion(Portable, params, grads, momentum, k, options, key);
                }
            }
        }
    }
}

/// What a guarded step did.
///
/// ```
/// use lion_optim::{Hyperparams, Outcome, StepOptions};
///
/// let (mut p, mut m) = ([1.0f32; 4], [0.0f32; 4]);
/// let grads = [0.5, f32::INFINITY, 0.5, 0.5];
/// let done = lion_optim::step_guarded(&mut p, &grads, &mut m, &Hyperparams::default(), &StepOptions::default())?;
/// assert_eq!(done, Outcome::SkippedNonFinite);
/// assert_eq!((p, m), ([1.0; 4], [0.0; 4]));
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The step was applied.
    Applied,
    /// A gradient was infinite or NaN: nothing was written.
    SkippedNonFinite,
}

/// Slices shorter than this are never split across threads by `par_step` (at this size one
/// core updates a slice in less time than it takes to wake a second thread).
///
/// ```
/// assert!(lion_optim::PAR_THRESHOLD >= lion_optim::PAR_BLOCK);
/// ```
pub const PAR_THRESHOLD: usize = 1 << 18;

/// The number of elements each thread updates at a time in `par_step`: a multiple of every
/// path's lane count.
///
/// ```
/// assert_eq!(lion_optim::PAR_BLOCK % 64, 0);
/// ```
pub const PAR_BLOCK: usize = 1 << 16;

impl fmt::Display for Path {
    /// The name and the instructions, e.g. `portable (sse2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.instructions())
    }
}
