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

use super::Isa;

/// What this CPU and OS can run, probed once per process (a probe may be slow: CPUID traps to
/// the hypervisor in many VMs): [`PROBED`] plus the [`HAS_AVX2`] and [`HAS_AVX512`] bits; 0
/// before the probe.
static FEATURES: AtomicU8 = AtomicU8::new(0);
const PROBED: u8 = 0x80;
/// AVX2 and F16C.
const HAS_AVX2: u8 = 1;
/// AVX-512 F and BW.
const HAS_AVX512: u8 = 2;

/// The instruction sets this process can run (never any under Miri, which cannot run them).
/// Known at compile time when the build enables their features; otherwise probed once.
#[inline]
fn features() -> u8 {
    if cfg!(miri) {
        return PROBED;
    }
    let known = u8::from(cfg!(all(target_feature = "avx2", target_feature = "f16c")))
        | if cfg!(all(target_feature = "avx512f", target_feature = "avx512bw")) {
            HAS_AVX512
        } else {
            0
        };
    if known == HAS_AVX2 | HAS_AVX512 {
        return PROBED | known;
    }
    match FEATURES.load(Ordering::Relaxed) {
        0 => {
            let Probe { avx2, avx512 } = probe();
            let avx512 = if avx512 { HAS_AVX512 } else { 0 };
            let probed = PROBED | known | u8::from(avx2) | avx512;
            FEATURES.store(probed, Ordering::Relaxed);
            probed
        }
        cached => cached,
    }
}

/// The fastest of the run-time-detected instruction sets, if any can run here.
#[inline]
pub(crate) fn best() -> Option<Isa> {
    match Avx512::detect() {
        Some(t) => Some(Isa::Avx512(t)),
        None => Avx2::detect().map(Isa::Avx2),
    }
}

/// What this CPU and OS support: AVX2 and F16C with OS support for the YMM state; AVX-512 F and
/// BW with OS support for the ZMM and opmask state.
fn probe() -> Probe {
    #[cfg(feature = "std")]
    return Probe {
        avx2: std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("f16c"),
        avx512: std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw"),
    };
    #[cfg(not(feature = "std"))]
    return cpuid_probe();
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

#[cfg(all(test, feature = "std"))]
mod tests {
    #[test]
    #[cfg_attr(miri, ignore = "CPUID is inline assembly, which Miri cannot run")]
    fn no_std_probe_agrees_with_std_detection() {
        assert_eq!(super::cpuid_probe(), super::probe());
    }
}
