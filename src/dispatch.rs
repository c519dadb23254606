//! The implementations ("paths") of a step, and the choice among them.

use core::fmt;

use crate::arch::{self, portable::Portable};
use crate::element::Element;
use crate::error::check_lengths;
use crate::hyper::Consts;
use crate::{Error, Hyperparams, kernel, reference};

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
}

impl Path {
    /// Every path this version of the crate knows, available here or not.
    pub const ALL: &'static [Path] = &[Path::Scalar, Path::Portable, Path::Avx2];

    /// The path [`step`](crate::step) takes on this machine.
    ///
    /// ```
    /// assert!(lion_optim::Path::detect().is_available());
    /// ```
    ///
    /// Detection runs once per process and is cached; when the build already enables AVX2 and
    /// F16C (`-C target-cpu=x86-64-v3`) no run-time check is made at all.
    pub fn detect() -> Path {
        if Path::Avx2.is_available() {
            Path::Avx2
        } else {
            Path::Portable
        }
    }

    /// Whether this path can run on this machine and build.
    ///
    /// ```
    /// assert!(lion_optim::Path::Portable.is_available());
    /// ```
    pub fn is_available(self) -> bool {
        match self {
            Path::Scalar | Path::Portable => true,
            Path::Avx2 => arch::avx2().is_some(),
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
    /// # #[cfg(all(target_arch = "x86_64", not(target_feature = "avx2")))]
    /// assert_eq!(Path::Portable.instructions(), "sse2");
    /// ```
    pub fn instructions(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Portable => crate::arch::portable::INSTRUCTIONS,
            Path::Avx2 => "avx2+f16c",
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
        let k = self.validate(params.len(), grads.len(), momentum.len(), hp)?;
        self.run(params, grads, momentum, &k);
        Ok(())
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
        use rayon::prelude::*;
        let k = self.validate(params.len(), grads.len(), momentum.len(), hp)?;
        if params.len() < PAR_THRESHOLD {
            self.run(params, grads, momentum, &k);
        } else {
            params
                .par_chunks_mut(PAR_BLOCK)
                .zip(grads.par_chunks(PAR_BLOCK))
                .zip(momentum.par_chunks_mut(PAR_BLOCK))
                .for_each(|((p, g), m)| self.run(p, g, m, &k));
        }
        Ok(())
    }

    /// Checks availability, hyperparameters and lengths; returns the step's constants.
    fn validate(
        self,
        params: usize,
        grads: usize,
        momentum: usize,
        hp: &Hyperparams,
    ) -> Result<Consts, Error> {
        if !self.is_available() {
            return Err(Error::PathUnavailable(self));
        }
        let k = hp.constants()?;
        check_lengths(params, grads, momentum)?;
        Ok(k)
    }

    /// Runs the kernel of this (available) path on validated input.
    fn run<P: Element, G: Element, M: Element>(
        self,
        params: &mut [P],
        grads: &[G],
        momentum: &mut [M],
        k: &Consts,
    ) {
        match self {
            Path::Scalar => reference::lion(params, grads, momentum, k),
            Path::Portable => kernel::lion(Portable, params, grads, momentum, k),
            Path::Avx2 => match arch::avx2() {
                #[cfg(target_arch = "x86_64")]
                Some(token) => arch::x86_64::lion(token, params, grads, momentum, k),
                // `validate` checked availability; stay correct anyway.
                _ => kernel::lion(Portable, params, grads, momentum, k),
            },
        }
    }
}

/// Slices shorter than this are never split across threads by [`par_step`](crate::par_step)
/// (at this size one core updates a slice in well under the cost of waking a second thread).
pub const PAR_THRESHOLD: usize = 1 << 18;

/// The number of elements each thread updates at a time in [`par_step`](crate::par_step).
pub const PAR_BLOCK: usize = 1 << 16;

impl fmt::Display for Path {
    /// The name and the instructions, e.g. `portable (sse2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.instructions())
    }
}
