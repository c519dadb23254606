//! x86_64 instruction sets chosen at run time (AVX2 + F16C, AVX-512): the only `unsafe` code of
//! the crate.
//!
//! Soundness rests on one invariant: **a token value ([`Avx2`], [`Avx512`]) exists only if the
//! CPU and the OS support its instruction set.** Each token's only constructor is its `detect`.
//! Every intrinsic runs inside a method that takes a token by value, so it can only run where its
//! instructions exist; the slice loops are compiled inside `#[target_feature]` entry points (so
//! the helpers inline into them), which are called only with a token in hand.

use core::sync::atomic::{AtomicU8, Ordering};

pub(crate) mod avx2;
pub(crate) mod avx512;

pub(crate) use avx2::Avx2;
pub(crate) use avx512::Avx512;

/// A detection result computed once per process: 0 = not yet probed, 1 = no, 2 = yes.
pub(crate) struct Cached(AtomicU8);

impl Cached {
    pub(crate) const fn new() -> Self {
        Self(AtomicU8::new(0))
    }

    /// The cached answer, probing with `probe` the first time (a probe may be slow: CPUID traps
    /// to the hypervisor in many VMs).
    #[inline]
    pub(crate) fn get(&self, probe: fn() -> bool) -> bool {
        match self.0.load(Ordering::Relaxed) {
            0 => {
                let yes = probe();
                self.0.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
            state => state == 2,
        }
    }
}

/// AVX2 and F16C, with OS support for the YMM state.
fn has_avx2() -> bool {
    #[cfg(feature = "std")]
    return std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("f16c");
    #[cfg(not(feature = "std"))]
    return cpuid_probe().avx2;
}

/// AVX-512 F and BW, with OS support for the ZMM and opmask state.
fn has_avx512() -> bool {
    #[cfg(feature = "std")]
    return std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw");
    #[cfg(not(feature = "std"))]
    return cpuid_probe().avx512;
}

/// What CPUID and XCR0 report (the checks `is_x86_feature_detected!` makes).
#[cfg_attr(feature = "std", allow(dead_code))]
#[derive(Debug, PartialEq)]
pub(crate) struct Probe {
    pub avx2: bool,
    pub avx512: bool,
}

/// The no_std probe: CPUID for the instruction sets, XGETBV for the OS saving their registers.
#[cfg_attr(feature = "std", allow(dead_code))]
pub(crate) fn cpuid_probe() -> Probe {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    const OSXSAVE: u32 = 1 << 27;
    const AVX: u32 = 1 << 28;
    const F16C: u32 = 1 << 29;
    const AVX2: u32 = 1 << 5;
    const AVX512F: u32 = 1 << 16;
    const AVX512BW: u32 = 1 << 30;
    const XMM_YMM: u64 = 0b110;
    const OPMASK_ZMM: u64 = 0b1110_0000;
    let none = Probe {
        avx2: false,
        avx512: false,
    };
    // SAFETY: CPUID exists on every x86_64 CPU. (A safe function in newer Rust; `unsafe` for
    // the MSRV.)
    #[allow(unused_unsafe)]
    let (max_leaf, leaf1) = unsafe { (__cpuid(0).eax, __cpuid(1)) };
    if max_leaf < 7 || leaf1.ecx & (OSXSAVE | AVX | F16C) != OSXSAVE | AVX | F16C {
        return none;
    }
    // SAFETY: OSXSAVE is set, so the CPU has XSAVE/XGETBV and the OS has enabled them.
    let xcr0 = unsafe { xgetbv0() };
    if xcr0 & XMM_YMM != XMM_YMM {
        return none;
    }
    // SAFETY: as above; leaf 7 exists (max_leaf >= 7).
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { __cpuid_count(7, 0).ebx };
    let avx2 = leaf7 & AVX2 != 0;
    let avx512 = avx2
        && leaf7 & (AVX512F | AVX512BW) == AVX512F | AVX512BW
        && xcr0 & OPMASK_ZMM == OPMASK_ZMM;
    Probe { avx2, avx512 }
}

#[target_feature(enable = "xsave")]
#[cfg_attr(feature = "std", allow(dead_code))]
fn xgetbv0() -> u64 {
    // SAFETY: the caller guarantees XSAVE (this function's target feature) is enabled.
    unsafe { core::arch::x86_64::_xgetbv(0) }
}

/// The entry points of one instruction set (`$token`, compiled with `$features`): the Lion step
/// and the finiteness check, plus its conversion proofs under `cfg(test)`.
macro_rules! entries {
    ($token:ident, $features:literal) => {
        /// One Lion step on this instruction set (see `kernel::lion`; lengths are checked).
        #[inline]
        pub(crate) fn lion<P: crate::Element, G: crate::Element, M: crate::Element>(
            token: $token,
            params: &mut [P],
            grads: &[G],
            momentum: &mut [M],
            k: &crate::hyper::Consts,
            options: &crate::StepOptions,
            key: u32,
        ) {
            // The whole slice loop is compiled with the features enabled, so every helper
            // inlines into it (a per-chunk call through a function pointer would forfeit that).
            #[target_feature(enable = $features)]
            fn entry<P: crate::Element, G: crate::Element, M: crate::Element>(
                token: $token,
                params: &mut [P],
                grads: &[G],
                momentum: &mut [M],
                k: &crate::hyper::Consts,
                options: &crate::StepOptions,
                key: u32,
            ) {
                crate::kernel::lion(token, params, grads, momentum, k, options, key);
            }
            // SAFETY: the token exists, so the entry's target features are available.
            unsafe { entry(token, params, grads, momentum, k, options, key) }
        }

        /// The cautious variant's count on this instruction set (see `kernel::cautious_count`).
        #[inline]
        pub(crate) fn cautious_count<G: crate::Element, M: crate::Element>(
            token: $token,
            grads: &[G],
            momentum: &[M],
            k: &crate::hyper::Consts,
            options: &crate::StepOptions,
        ) -> u64 {
            #[target_feature(enable = $features)]
            fn entry<G: crate::Element, M: crate::Element>(
                token: $token,
                grads: &[G],
                momentum: &[M],
                k: &crate::hyper::Consts,
                options: &crate::StepOptions,
            ) -> u64 {
                crate::kernel::cautious_count(token, grads, momentum, k, options)
            }
            // SAFETY: the token exists, so the entry's target features are available.
            unsafe { entry(token, grads, momentum, k, options) }
        }

        /// Whether every gradient (times `inv_scale`) is finite, on this instruction set.
        #[inline]
        pub(crate) fn all_finite<G: crate::Element>(
            token: $token,
            grads: &[G],
            inv_scale: Option<f32>,
        ) -> bool {
            #[target_feature(enable = $features)]
            fn entry<G: crate::Element>(
                token: $token,
                grads: &[G],
                inv_scale: Option<f32>,
            ) -> bool {
                crate::kernel::all_finite(token, grads, inv_scale)
            }
            // SAFETY: the token exists, so the entry's target features are available.
            unsafe { entry(token, grads, inv_scale) }
        }

        #[cfg(test)]
        mod entry_tests {
            use super::$token;
            use crate::simd::tests::{conversions, narrow_exhaustive, narrow_matches_half};

            #[test]
            fn conversions_match_half() {
                #[target_feature(enable = $features)]
                fn run(t: $token) {
                    conversions(t);
                }
                match $token::detect() {
                    // SAFETY: the token proves the features are available.
                    Some(t) => unsafe { run(t) },
                    None => std::eprintln!("skipping: {} not available", $features),
                }
            }

            #[test]
            #[ignore = "2^32 inputs: run in release with --ignored (CI does)"]
            fn narrowing_exhaustive() {
                #[target_feature(enable = $features)]
                fn check(t: $token, block: &[u32]) {
                    narrow_matches_half(t, block);
                }
                match $token::detect() {
                    // SAFETY: the token proves the features are available.
                    Some(t) => narrow_exhaustive(|block| unsafe { check(t, block) }),
                    None => std::eprintln!("skipping: {} not available", $features),
                }
            }
        }
    };
}
use entries;

#[cfg(all(test, feature = "std"))]
mod tests {
    #[test]
    #[cfg_attr(miri, ignore = "CPUID is inline assembly, which Miri cannot run")]
    fn no_std_probe_agrees_with_std_detection() {
        let probe = super::cpuid_probe();
        assert_eq!(
            probe,
            super::Probe {
                avx2: super::has_avx2(),
                avx512: super::has_avx512()
            }
        );
    }
}
