//! The implementations of a step ("backends") and the per-backend layer of the API, for tests,
//! benchmarks and the curious (the one-slice entries' twins, deprecated ones included, are declared
//! with the free functions, in the crate root's `entries!`).

use core::fmt;

use crate::arch::{Isa, portable};
use crate::dtype::Element;
use crate::exec::finite_one;
use crate::{Error, Outcome, StepOptions};

/// An implementation of the Lion step. All of them give **bit-identical** results.
///
/// [`step`](crate::step) and the other functions of the crate take the fastest backend
/// available ([`Backend::detect`]); tests, benchmarks and curious users can run any available
/// one explicitly ([`Backend::step_with`], ...), the way BLAKE3's per-platform functions sit
/// under its `hash`.
///
/// ```
/// use lion_optim::{Backend, Hyperparams, StepOptions};
///
/// let (hp, opts) = (Hyperparams::default(), StepOptions::default());
/// let (mut p1, mut m1) = (vec![0.5f32; 100], vec![0.0f32; 100]);
/// let (mut p2, mut m2) = (p1.clone(), m1.clone());
/// let g = vec![0.25f32; 100];
/// Backend::Portable.step_with(&mut p1, &g, &mut m1, &hp, &opts)?;
/// Backend::Scalar.step_with(&mut p2, &g, &mut m2, &hp, &opts)?;
/// assert_eq!((p1, m1), (p2, m2));
/// println!("lion_optim::step runs on the {} backend", Backend::detect());
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// The scalar specification, [`reference::step_with`](crate::reference::step_with)'s loop:
    /// one element at a time.
    Scalar,
    /// `wide`'s 8-lane vectors in safe code, for the target features of the build: SSE2 on a
    /// default x86_64 build, AVX2 with `-C target-cpu=x86-64-v3`, NEON on aarch64, simd128 on
    /// wasm32 with `+simd128`, plain arrays elsewhere.
    Portable,
    /// x86_64 with AVX2 and F16C, detected at run time (with `std`: `is_x86_feature_detected!`;
    /// without: a CPUID/XGETBV probe), or known at compile time with `-C target-feature`. No FMA.
    Avx2,
    /// x86_64 with AVX-512 F and BW (16 lanes), detected like [`Backend::Avx2`]. No FMA.
    Avx512,
}

/// The former name of [`Backend`].
#[deprecated(
    since = "0.2.0",
    note = "use `Backend` (a name that does not collide with `std::path::Path`)"
)]
pub type Path = Backend;

impl Backend {
    /// Every backend this version of the crate knows, available here or not.
    ///
    /// ```
    /// use lion_optim::Backend;
    ///
    /// let here: Vec<Backend> = Backend::ALL.iter().copied().filter(|b| b.is_available()).collect();
    /// assert!(here.contains(&Backend::Scalar) && here.contains(&Backend::Portable));
    /// ```
    pub const ALL: &'static [Backend] = &[
        Backend::Scalar,
        Backend::Portable,
        Backend::Avx2,
        Backend::Avx512,
    ];

    /// The backend [`step`](crate::step) takes on this machine.
    ///
    /// ```
    /// assert!(lion_optim::Backend::detect().is_available());
    /// ```
    ///
    /// The order of preference is AVX-512, AVX2, portable: each is faster than the next at every
    /// size measured (see the README). The CPU is probed once per process and the result
    /// cached; when the build already enables the features (`-C target-cpu=...`) no run-time
    /// check is made.
    pub fn detect() -> Backend {
        Isa::best().backend()
    }

    /// Whether this backend can run on this machine and build.
    ///
    /// ```
    /// assert!(lion_optim::Backend::Portable.is_available());
    /// ```
    pub fn is_available(self) -> bool {
        Isa::of(self).is_some()
    }

    /// A short lower-case name: `"scalar"`, `"portable"`, `"avx2"`, `"avx512"`.
    ///
    /// ```
    /// assert_eq!(lion_optim::Backend::Portable.name(), "portable");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Portable => "portable",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
        }
    }

    /// The vector instructions this backend executes, as compiled into this build: for
    /// [`Backend::Portable`] that is what `wide` was compiled for (`"sse2"`, `"avx"`, `"avx2"`,
    /// `"neon"`, `"simd128"`, or `"scalar"` on targets without SIMD).
    ///
    /// ```
    /// use lion_optim::Backend;
    ///
    /// assert_eq!(Backend::Scalar.instructions(), "scalar");
    /// let portable = Backend::Portable.instructions();
    /// assert!(["sse2", "avx", "avx2", "neon", "simd128", "scalar"].contains(&portable));
    /// ```
    pub fn instructions(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Portable => portable::INSTRUCTIONS,
            Backend::Avx2 => "avx2+f16c",
            Backend::Avx512 => "avx512f+bw",
        }
    }

    /// The instruction set of this backend, or [`Error::BackendUnavailable`].
    pub(crate) fn isa(self) -> Result<Isa, Error> {
        Isa::of(self).ok_or(Error::BackendUnavailable(self))
    }

    /// [`all_finite`](crate::all_finite) on this backend; `false` if it cannot run here.
    ///
    /// ```
    /// use lion_optim::{Backend, StepOptions};
    ///
    /// let grads = [1.0f32, f32::INFINITY];
    /// assert!(!Backend::Portable.all_finite(&grads, &StepOptions::default()));
    /// assert!(Backend::Portable.all_finite(&grads[..1], &StepOptions::default()));
    /// ```
    pub fn all_finite<G: Element>(self, grads: &[G], options: &StepOptions) -> bool {
        self.isa().is_ok_and(|isa| finite_one(isa, grads, options))
    }

    /// [`step_many`](crate::step_many) on this backend.
    ///
    /// ```
    /// use lion_optim::{Backend, Group, Update};
    ///
    /// let (mut p, mut m) = ([1.0f32; 2], [0.0f32; 2]);
    /// Backend::Scalar.step_many(&mut [Update::new(&mut p, &[1.0f32, -1.0], &mut m)], &[Group::default()])?;
    /// assert_eq!(p, [1.0 - 1e-4f64 as f32, 1.0 + 1e-4f64 as f32]);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn step_many(
        self,
        updates: &mut [crate::Update<'_>],
        groups: &[crate::Group],
    ) -> Result<Outcome, Error> {
        crate::optimizer::many::run(self.isa()?, updates, groups, false)
    }
}

impl fmt::Display for Backend {
    /// The name and the instructions, e.g. `portable (sse2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.instructions())
    }
}
