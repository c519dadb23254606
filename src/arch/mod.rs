//! Instruction sets: one token type each, implementing [`Simd`], and the one place that picks
//! and runs them.
//!
//! * [`Isa`]: a proof that an instruction set can run here (a token), detected once per process
//!   and cached; [`Isa::run`] runs an operation on it — the only dispatch of the crate.
//! * [`Op`]: an operation over any instruction set (the Lion step, the cautious count, the
//!   finiteness check, ...): one type each, written once against [`Simd`], plus its scalar
//!   specification.
//!
//! Adding an operation is one type implementing [`Op`]; adding an instruction set is one module
//! with its token (implementing [`Simd`] and one `#[target_feature]` entry generic over [`Op`])
//! and one arm of [`Isa`] and [`Backend`](crate::Backend).

/// Methods of a `Simd` impl that are one expression each: `fn name(args) -> T = expr;` is an
/// always-inlined method that evaluates `expr`. After `unsafe;`, in an `unsafe` block: for the
/// x86_64 instruction sets, whose every method is one intrinsic call or more.
macro_rules! one_line {
    (@body [] $e:expr) => {
        $e
    };
    (@body [unsafe] $e:expr) => {
        // SAFETY: see the impl comment: `self` is a token of the impl's instruction set, which
        // exists only where it is available (the module invariant).
        unsafe { $e }
    };
    (@methods $kind:tt $(
        $(#[doc = $doc:literal])*
        fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $e:expr;
    )*) => {$(
        $(#[doc = $doc])*
        #[inline(always)]
        fn $name(self, $($arg: $ty),*) -> $ret {
            one_line!(@body $kind $e)
        }
    )*};
    (unsafe; $($methods:tt)*) => {
        one_line!(@methods [unsafe] $($methods)*);
    };
    ($($methods:tt)*) => {
        one_line!(@methods [] $($methods)*);
    };
}

pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use crate::Backend;
use crate::simd::Simd;
use portable::Portable;

/// An operation that runs on any instruction set: its body is written once, generic over the
/// token `S` (with `N` lanes), and once more as the plain scalar specification.
pub(crate) trait Op {
    /// What the operation returns.
    type Output;
    /// Runs on the instruction set of `s` (inlined into the instruction set's entry point, so
    /// it is compiled with that instruction set's features).
    fn simd<S: Simd<N>, const N: usize>(self, s: S) -> Self::Output;
    /// Runs the scalar specification (`crate::reference`).
    fn scalar(self) -> Self::Output;
}

/// An instruction set that can run here: a [`Backend`] with the proof of its availability.
///
/// Constructed only by [`Isa::best`] and [`Isa::of`], which check (once per process, cached)
/// that the CPU and the OS support it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Isa {
    /// The scalar specification.
    Scalar,
    /// `wide`'s vectors, in safe code.
    Portable(Portable),
    /// AVX2 + F16C.
    #[cfg(target_arch = "x86_64")]
    Avx2(x86_64::Avx2),
    /// AVX-512 F + BW.
    #[cfg(target_arch = "x86_64")]
    Avx512(x86_64::Avx512),
}

impl Isa {
    /// The fastest instruction set here (AVX-512, AVX2, portable).
    #[inline]
    pub(crate) fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = x86_64::best() {
            return isa;
        }
        Isa::Portable(Portable)
    }

    /// The instruction set of `backend`, if it can run here.
    #[inline]
    pub(crate) fn of(backend: Backend) -> Option<Isa> {
        match backend {
            Backend::Scalar => Some(Isa::Scalar),
            Backend::Portable => Some(Isa::Portable(Portable)),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => x86_64::Avx2::detect().map(Isa::Avx2),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => x86_64::Avx512::detect().map(Isa::Avx512),
            #[cfg(not(target_arch = "x86_64"))]
            Backend::Avx2 | Backend::Avx512 => None,
        }
    }

    /// Which backend this is.
    pub(crate) fn backend(self) -> Backend {
        match self {
            Isa::Scalar => Backend::Scalar,
            Isa::Portable(_) => Backend::Portable,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(_) => Backend::Avx2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(_) => Backend::Avx512,
        }
    }

    /// Runs `op` on this instruction set.
    #[inline]
    pub(crate) fn run<O: Op>(self, op: O) -> O::Output {
        match self {
            Isa::Scalar => op.scalar(),
            Isa::Portable(t) => op.simd(t),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(t) => t.run(op),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(t) => t.run(op),
        }
    }

    /// Every instruction set available here, the scalar one first (for tests).
    #[cfg(test)]
    pub(crate) fn all_available() -> impl Iterator<Item = Isa> {
        Backend::ALL.iter().filter_map(|&b| Isa::of(b))
    }
}
