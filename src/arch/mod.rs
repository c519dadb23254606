//! Instruction sets: one module each, implementing [`Simd`](crate::simd::Simd).

pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use crate::element::Element;
use crate::hyper::Consts;
use crate::{Path, StepOptions};

/// Whether the run-time-detected instruction set of `path` can run here.
pub(crate) fn available(path: Path) -> bool {
    #[cfg(target_arch = "x86_64")]
    match path {
        Path::Avx2 => return x86_64::Avx2::detect().is_some(),
        Path::Avx512 => return x86_64::Avx512::detect().is_some(),
        _ => {}
    }
    let _ = path;
    false
}

/// Runs the kernel on the run-time-detected instruction set of `path`; `false` if it cannot
/// run here (nothing was written then).
#[allow(clippy::too_many_arguments)]
pub(crate) fn lion<P: Element, G: Element, M: Element>(
    path: Path,
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    k: &Consts,
    options: &StepOptions,
    key: u32,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    match path {
        Path::Avx2 => {
            if let Some(t) = x86_64::Avx2::detect() {
                x86_64::avx2::lion(t, params, grads, momentum, k, options, key);
                return true;
            }
        }
        Path::Avx512 => {
            if let Some(t) = x86_64::Avx512::detect() {
                x86_64::avx512::lion(t, params, grads, momentum, k, options, key);
                return true;
            }
        }
        _ => {}
    }
    let _ = (path, params, grads, momentum, k, options, key);
    false
}

/// The finiteness check on the run-time-detected instruction set of `path`; `None` if it
/// cannot run here.
pub(crate) fn all_finite<G: Element>(
    path: Path,
    grads: &[G],
    inv_scale: Option<f32>,
) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    match (path, x86_64::Avx2::detect(), x86_64::Avx512::detect()) {
        (Path::Avx2, Some(t), _) => return Some(x86_64::avx2::all_finite(t, grads, inv_scale)),
        (Path::Avx512, _, Some(t)) => return Some(x86_64::avx512::all_finite(t, grads, inv_scale)),
        _ => {}
    }
    let _ = (path, grads, inv_scale);
    None
}

/// The cautious count on the run-time-detected instruction set of `path`; `None` if it cannot
/// run here.
pub(crate) fn cautious_count<G: Element, M: Element>(
    path: Path,
    grads: &[G],
    momentum: &[M],
    k: &Consts,
    options: &StepOptions,
) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    match (path, x86_64::Avx2::detect(), x86_64::Avx512::detect()) {
        (Path::Avx2, Some(t), _) => {
            return Some(x86_64::avx2::cautious_count(t, grads, momentum, k, options));
        }
        (Path::Avx512, _, Some(t)) => {
            return Some(x86_64::avx512::cautious_count(
                t, grads, momentum, k, options,
            ));
        }
        _ => {}
    }
    let _ = (path, grads, momentum, k, options);
    None
}
