//! All-bf16 steps two chunks at a time, where an instruction set converts bf16 more cheaply in
//! pairs (AVX2, AVX-512): the same arithmetic as the single chunks (`momentum_math`,
//! `Lanes::param_math`), other loads and stores, a cache line of each array per block.

use super::{Lanes, Mode, ahead, last_byte, momentum_math};
use crate::dtype::{Dtype, Element};
use crate::simd::{Simd, random_bits};

/// Whether parameters, gradients and momentum are all bf16 (in `const` context).
pub(super) const fn all_bf16<P: Element, G: Element, M: Element>() -> bool {
    matches!(
        (P::DTYPE, G::DTYPE, M::DTYPE),
        (Dtype::Bf16, Dtype::Bf16, Dtype::Bf16)
    )
}

/// The pairs of chunks of an all-bf16 step: returns `(head, end)`, the elements `head..end`
/// being done (the caller does the others with single chunks).
#[inline(always)]
pub(super) fn pairs<S, const N: usize, P, G, M, F: Mode>(
    s: S,
    v: &Lanes<S::F32, S::U32>,
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    offset: u64,
) -> (usize, usize)
where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    // A head of single elements first, so that the pairs' accesses to the parameters are
    // aligned to `PAIR_ALIGN` bytes: a 32-byte access that straddles two cache lines costs two
    // (about +30% on a DRAM-bound bf16 step here, with 16-byte aligned buffers). Gradients and
    // momentum are aligned too when congruent to the parameters, as large allocations are.
    let head =
        (params.as_ptr().addr().wrapping_neg() % PAIR_ALIGN / size_of::<P>()).min(params.len());
    let last = (last_byte(params), last_byte(grads), last_byte(momentum));
    let p_blocks = params[head..].as_chunks_mut::<N>().0.as_chunks_mut::<2>().0;
    let (p_blocks, _) = p_blocks.as_chunks_mut::<BLOCK>();
    let g_blocks = grads[head..].as_chunks::<N>().0.as_chunks::<2>().0;
    let (g_blocks, _) = g_blocks.as_chunks::<BLOCK>();
    let m_blocks = momentum[head..]
        .as_chunks_mut::<N>()
        .0
        .as_chunks_mut::<2>()
        .0;
    let (m_blocks, _) = m_blocks.as_chunks_mut::<BLOCK>();
    let end = head + 2 * N * BLOCK * p_blocks.len();
    // The global index (low 32 bits) of the first element of the block, in every lane.
    let mut first = s.splat_u32((offset as u32).wrapping_add(head as u32));
    for ((p, g), m) in p_blocks.iter_mut().zip(g_blocks).zip(m_blocks.iter_mut()) {
        // Every line of the block (two on AVX-512, where prefetching only the first one leaves
        // a DRAM-bound all-bf16 step well short of the bandwidth probe).
        for line in (0..size_of_val(g)).step_by(CACHE_LINE) {
            s.prefetch(ahead(&*p, last.0).wrapping_add(line));
            s.prefetch(ahead(g, last.1).wrapping_add(line));
            s.prefetch(ahead(&*m, last.2).wrapping_add(line));
        }
        block::<S, N, P, G, M, F>(s, v, p, g, m, first);
        first = s.add_u32(first, s.splat_u32((2 * N * BLOCK) as u32));
    }
    (head, end)
}

/// The size of a cache line (bytes) on the machines this is tuned for.
const CACHE_LINE: usize = 64;

/// The alignment (bytes) of the parameters' address at the first block of pairs: a cache line,
/// so that each block of pairs reads and writes whole lines.
const PAIR_ALIGN: usize = 64;

/// Pairs of chunks per iteration of the pair loop: two pairs of 8-lane bf16 chunks are one
/// 64-byte cache line of each array (see `block`).
const BLOCK: usize = 2;

/// Lion on `BLOCK` pairs of chunks, loaded and stored as pairs (in the instruction set's pair
/// order); `first` holds the global index of the block's first element in every lane.
///
/// The momentum of the whole block first (it needs only gradients and momentum), then the
/// parameters, so that each array's cache line is done with before the next one is touched.
/// Large buffers of equal length allocated one after the other share their page offset, so the
/// three elements of one index fall in the same L1 set; on AMD Zen, two such lines whose
/// linear addresses also hash to the same way-predictor tag (e.g. the parameters and momentum
/// of three consecutive large bf16 `Vec`s) evict each other on every alternate access when the
/// arrays are interleaved chunk by chunk. In this order the step's time no longer depends on
/// how the buffers were allocated (the `step` benchmark's all-bf16 group shows it).
#[inline(always)]
fn block<S, const N: usize, P, G, M, F: Mode>(
    s: S,
    k: &Lanes<S::F32, S::U32>,
    p: &mut [[[P; N]; 2]; BLOCK],
    g: &[[[G; N]; 2]; BLOCK],
    m: &mut [[[M; N]; 2]; BLOCK],
    first: S::U32,
) where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    let zero = s.splat(0.0);
    let mut c = [[zero; 2]; BLOCK];
    let mut random_p = [[s.splat_u32(0); 2]; BLOCK];
    for i in 0..BLOCK {
        let [g0, g1] = G::load_pair(s, &g[i]);
        let [m0, m1] = M::load_pair(s, &m[i]);
        let (c0, m0) = momentum_math::<S, N, F>(s, k, g0, m0);
        let (c1, m1) = momentum_math::<S, N, F>(s, k, g1, m1);
        c[i] = [c0, c1];
        if F::STOCHASTIC {
            // The elements' indices in pair order: `2j` and `2j + 1` in lane `j` (even/odd),
            // or `j` and `N + j`.
            let pair_first = s.add_u32(first, s.splat_u32((2 * N * i) as u32));
            let lanes = s.lane_indices();
            let index = if S::BF16_PAIR_EVEN_ODD {
                let even = s.add_u32(pair_first, s.shl::<1>(lanes));
                [even, s.add_u32(even, s.splat_u32(1))]
            } else {
                let low = s.add_u32(pair_first, lanes);
                [low, s.add_u32(low, s.splat_u32(N as u32))]
            };
            // (No closures here: they would not inherit the entry point's target features.)
            let random = [
                random_bits(s, k.key, index[0]),
                random_bits(s, k.key, index[1]),
            ];
            let low = s.splat_u32(0xffff);
            random_p[i] = [s.and(random[0], low), s.and(random[1], low)];
            let random_m = [s.shr::<16>(random[0]), s.shr::<16>(random[1])];
            M::store_pair_stochastic(s, [m0, m1], random_m, &mut m[i]);
        } else {
            M::store_pair(s, [m0, m1], &mut m[i]);
        }
    }
    for i in 0..BLOCK {
        let [p0, p1] = P::load_pair(s, &p[i]);
        let p0 = k.param_math(s, p0, c[i][0]);
        let p1 = k.param_math(s, p1, c[i][1]);
        if F::STOCHASTIC {
            P::store_pair_stochastic(s, [p0, p1], random_p[i], &mut p[i]);
        } else {
            P::store_pair(s, [p0, p1], &mut p[i]);
        }
    }
}
