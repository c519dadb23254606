//! The read-only passes: the cautious variant's count and the finiteness check of gradients.

use super::{Count, Lanes, ahead, last_byte};
use crate::dtype::Element;
use crate::simd::Simd;

/// The number of elements where `sign(c) * g > 0` (the cautious variant's read-only counting
/// pass), over equally long slices (checked by the caller).
#[inline(always)]
pub(crate) fn cautious_count<S: Simd<N>, const N: usize, G: Element, M: Element>(
    s: S,
    count: Count<'_, G, M>,
) -> u64 {
    let Count {
        grads,
        momentum,
        k,
        options,
    } = count;
    let v = Lanes::new(s, k, options, 0);
    match options.grad_unscale.is_some() {
        false => count_pass::<S, N, G, M, false>(s, &v, grads, momentum),
        true => count_pass::<S, N, G, M, true>(s, &v, grads, momentum),
    }
}

/// Chunks counted into 32-bit lanes before the lanes are added up (far below 2^32).
const COUNT_BLOCK: usize = 1 << 12;

#[inline(always)]
fn count_pass<S, const N: usize, G, M, const UNSCALE: bool>(
    s: S,
    v: &Lanes<S::F32, S::U32>,
    grads: &[G],
    momentum: &[M],
) -> u64
where
    S: Simd<N>,
    G: Element,
    M: Element,
{
    debug_assert_eq!(grads.len(), momentum.len());
    let (g_chunks, g_tail) = grads.as_chunks::<N>();
    let (m_chunks, m_tail) = momentum.as_chunks::<N>();
    let mut total = 0;
    let (g_last, m_last) = (last_byte(grads), last_byte(momentum));
    for (g_block, m_block) in g_chunks
        .chunks(COUNT_BLOCK)
        .zip(m_chunks.chunks(COUNT_BLOCK))
    {
        let mut lanes = s.splat_u32(0);
        for (g, m) in g_block.iter().zip(m_block) {
            s.prefetch(ahead(g, g_last));
            s.prefetch(ahead(m, m_last));
            lanes = s.sub_u32(lanes, agree::<S, N, G, M, UNSCALE>(s, v, g, m)); // all ones: -1
        }
        total += lane_sum(s, lanes);
    }
    // The tail, zero-padded: a zero gradient never agrees.
    let (mut g, mut m) = ([G::default(); N], [M::default(); N]);
    g[..g_tail.len()].copy_from_slice(g_tail);
    m[..m_tail.len()].copy_from_slice(m_tail);
    let tail = agree::<S, N, G, M, UNSCALE>(s, v, &g, &m);
    total + lane_sum(s, s.sub_u32(s.splat_u32(0), tail))
}

/// The agreement mask of one chunk (see `Lanes::agreement`).
#[inline(always)]
fn agree<S: Simd<N>, const N: usize, G: Element, M: Element, const UNSCALE: bool>(
    s: S,
    v: &Lanes<S::F32, S::U32>,
    g: &[G; N],
    m: &[M; N],
) -> S::U32 {
    let grad = v.gradient(s, G::load(s, g), UNSCALE);
    v.agreement(s, v.interpolation(s, grad, M::load(s, m)), grad)
}

/// The sum of the u32 lanes.
#[inline(always)]
pub(super) fn lane_sum<S: Simd<N>, const N: usize>(s: S, lanes: S::U32) -> u64 {
    let mut out = [0.0f32; N];
    s.store_f32(s.bits_to_f32(lanes), &mut out);
    out.iter().map(|x| u64::from(x.to_bits())).sum()
}

/// Whether every gradient, times `inv_scale` when `UNSCALE`, is finite.
#[inline(always)]
pub(crate) fn all_finite<S, const N: usize, G: Element>(
    s: S,
    grads: &[G],
    inv_scale: Option<f32>,
) -> bool
where
    S: Simd<N>,
{
    match inv_scale {
        None => finite_pass::<S, N, G, false>(s, grads, 1.0),
        Some(x) => finite_pass::<S, N, G, true>(s, grads, x),
    }
}

#[inline(always)]
fn finite_pass<S, const N: usize, G: Element, const UNSCALE: bool>(
    s: S,
    grads: &[G],
    inv_scale: f32,
) -> bool
where
    S: Simd<N>,
{
    let scale = s.splat(inv_scale);
    let max_finite = s.splat_u32(0x7f7f_ffff);
    let magnitude = s.splat_u32(0x7fff_ffff);
    let not_finite = |g: &[G; N]| {
        let g = G::load(s, g);
        let g = if UNSCALE { s.mul(g, scale) } else { g };
        s.gt_i32(s.and(s.to_bits(g), magnitude), max_finite)
    };
    let (chunks, tail) = grads.as_chunks::<N>();
    let mut bad = s.splat_u32(0);
    // Blocks of 64 chunks between checks: an early exit without a branch per chunk.
    for block in chunks.chunks(64) {
        for g in block {
            bad = s.or(bad, not_finite(g));
        }
        if s.any(bad) {
            return false;
        }
    }
    let mut g = [G::default(); N];
    g[..tail.len()].copy_from_slice(tail);
    !s.any(not_finite(&g))
}
