//! The Lion step, written once: generic over the instruction set `S` (with `N` lanes), over the
//! element types of parameters `P`, gradients `G` and momentum `M`, and over the per-call
//! options that change the instruction stream (gradient unscaling, stochastic rounding).
//!
//! One pass over memory: each chunk of `N` elements is loaded (3 reads), updated in registers and
//! stored (2 writes). The tail (fewer than `N` elements) is copied into zero-padded chunks and
//! goes through the very same body, so there is no second copy of the math to get wrong. Where
//! an instruction set converts bf16 more cheaply two chunks at a time (AVX2), all-bf16 slices go
//! through pairs of chunks: the same arithmetic (`momentum_math`, `param_math`), other loads and
//! stores.

use crate::element::{Dtype, Element};
use crate::hyper::Consts;
use crate::simd::{Simd, random_bits};
use crate::{Cautious, Rounding, StepOptions};

/// The step's constants, splatted once per call.
struct Lanes<F, U> {
    decay: F,
    lr: F,
    /// `±beta1` and `±(1 - beta1)`: negated to maximize, which makes `c` exactly `-c` (rounding
    /// to nearest is symmetric), so `sign` gives `sign(-c)` as the reference computes it.
    c_beta1: F,
    c_one_minus_beta1: F,
    beta2: F,
    one_minus_beta2: F,
    inv_scale: F,
    key: U,
    /// `1.0` and `0.0`, for the agreement test of the cautious variant.
    one: F,
    zero: F,
    /// The sign bit when maximizing (where `c` is negated), else 0: `sign(c) * dir` is the sign
    /// of the reference's `c`.
    direction_bit: U,
    /// All ones when the step is not cautious: the agreement mask then keeps every lane (for
    /// the instantiations that decide this at run time, see `lion`).
    not_cautious: U,
}

impl<F: Copy, U: Copy> Lanes<F, U> {
    #[inline(always)]
    fn new<S: Simd<N, F32 = F, U32 = U>, const N: usize>(
        s: S,
        k: &Consts,
        options: &StepOptions,
        key: u32,
    ) -> Self {
        let direction = if options.maximize { -1.0 } else { 1.0 };
        Self {
            decay: s.splat(k.decay),
            lr: s.splat(k.lr),
            c_beta1: s.splat(direction * k.beta1),
            c_one_minus_beta1: s.splat(direction * k.one_minus_beta1),
            beta2: s.splat(k.beta2),
            one_minus_beta2: s.splat(k.one_minus_beta2),
            inv_scale: s.splat(k.inv_scale),
            key: s.splat_u32(key),
            one: s.splat(1.0),
            zero: s.splat(0.0),
            direction_bit: s.splat_u32(if options.maximize { 1 << 31 } else { 0 }),
            not_cautious: s.splat_u32(if options.cautious == Cautious::Off {
                u32::MAX
            } else {
                0
            }),
        }
    }
}

/// Runs one Lion step with `options` over equally long slices (checked by the caller), whose
/// first element has the global index `index0` (low 32 bits; the caller splits calls so the high
/// bits are the same for every element, and folds them into `key`).
#[inline(always)]
pub(crate) fn lion<S, const N: usize, P, G, M>(
    s: S,
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    k: &Consts,
    options: &StepOptions,
    key: u32,
) where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    let stochastic = matches!(options.rounding, Rounding::Stochastic { .. });
    let args = (params, grads, momentum, k, options, key);
    // Bare-metal targets (microcontrollers, wasm without an OS), where code size counts more than
    // the last instructions per element: gradient unscaling and the cautious variant are decided
    // at run time (unscaling by 1 when there is none, which is exact: `g * 1 == g`; an
    // agreement mask of all ones when not cautious), so each dtype combination compiles two
    // kernels instead of eight.
    #[cfg(target_os = "none")]
    match stochastic {
        false => passes::<S, N, P, G, M, true, false, true>(s, args),
        true => passes::<S, N, P, G, M, true, true, true>(s, args),
    }
    #[cfg(not(target_os = "none"))]
    let cautious = options.cautious != Cautious::Off;
    #[cfg(not(target_os = "none"))]
    match (options.grad_unscale.is_some(), stochastic, cautious) {
        (false, false, false) => passes::<S, N, P, G, M, false, false, false>(s, args),
        (true, false, false) => passes::<S, N, P, G, M, true, false, false>(s, args),
        (false, true, false) => passes::<S, N, P, G, M, false, true, false>(s, args),
        (true, true, false) => passes::<S, N, P, G, M, true, true, false>(s, args),
        (false, false, true) => passes::<S, N, P, G, M, false, false, true>(s, args),
        (true, false, true) => passes::<S, N, P, G, M, true, false, true>(s, args),
        (false, true, true) => passes::<S, N, P, G, M, false, true, true>(s, args),
        (true, true, true) => passes::<S, N, P, G, M, true, true, true>(s, args),
    }
}

/// The number of elements where `sign(c) * g > 0` (the cautious variant's read-only counting
/// pass), over equally long slices (checked by the caller).
#[inline(always)]
pub(crate) fn cautious_count<S, const N: usize, G, M>(
    s: S,
    grads: &[G],
    momentum: &[M],
    k: &Consts,
    options: &StepOptions,
) -> u64
where
    S: Simd<N>,
    G: Element,
    M: Element,
{
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

/// The agreement mask of one chunk (see `agreement`).
#[inline(always)]
fn agree<S: Simd<N>, const N: usize, G: Element, M: Element, const UNSCALE: bool>(
    s: S,
    v: &Lanes<S::F32, S::U32>,
    g: &[G; N],
    m: &[M; N],
) -> S::U32 {
    let grad = gradient::<S, N, UNSCALE>(s, v, G::load(s, g));
    agreement(s, v, interpolation(s, v, grad, M::load(s, m)), grad)
}

/// The sum of the u32 lanes.
#[inline(always)]
fn lane_sum<S: Simd<N>, const N: usize>(s: S, lanes: S::U32) -> u64 {
    let mut out = [0.0f32; N];
    s.store_f32(s.bits_to_f32(lanes), &mut out);
    out.iter().map(|x| u64::from(x.to_bits())).sum()
}

/// How far ahead of the current chunk to prefetch. Measured on a DRAM-bound 16M-element step (an
/// Intel Xeon with AVX-512, one thread, the step and the bandwidth probe alternated): all-bf16
/// takes 1.34x the probe's time with 1 KiB, 1.28x with 2 KiB, 1.16x with 4 KiB, 1.23x with
/// 8 KiB; f32 is at the probe's time (0.98-1.00x) from 512 B to 8 KiB. (On AMD Zen 3 the
/// distances from 512 B to 4 KiB measured the same.)
const PREFETCH_BYTES: usize = 4096;

/// The address `PREFETCH_BYTES` past `chunk`, or the last byte of the slice (`last`) if that is
/// nearer: a small slice does not pull in lines it does not need. (Computed without pointer
/// arithmetic rules, as an address: it is only ever used as a prefetch hint.)
#[inline(always)]
fn ahead<T, const N: usize>(chunk: &[T; N], last: *const u8) -> *const u8 {
    let at = (chunk as *const [T; N]).cast::<u8>();
    let ahead = at.wrapping_add(PREFETCH_BYTES);
    if ahead.addr() < last.addr() {
        ahead
    } else {
        last
    }
}

/// The address of the last byte of a slice (its start if it is empty): the limit of `ahead`.
#[inline(always)]
fn last_byte<T>(s: &[T]) -> *const u8 {
    let start = s.as_ptr().cast::<u8>();
    start.wrapping_add(size_of_val(s).saturating_sub(1))
}

type Args<'a, P, G, M> = (
    &'a mut [P],
    &'a [G],
    &'a mut [M],
    &'a Consts,
    &'a StepOptions,
    u32,
);

/// The pass over all elements, for one combination of options.
#[inline(always)]
fn passes<
    S,
    const N: usize,
    P,
    G,
    M,
    const UNSCALE: bool,
    const STOCHASTIC: bool,
    const CAUTIOUS: bool,
>(
    s: S,
    (params, grads, momentum, k, options, key): Args<'_, P, G, M>,
) where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    debug_assert!(params.len() == grads.len() && params.len() == momentum.len());
    let v = Lanes::new(s, k, options, key);
    // Lane i of `index` is the low 32 bits of its element's global index.
    let index = s.add_u32(s.splat_u32(options.offset as u32), s.lane_indices());
    // Two chunks at a time where the instruction set asks for it, for bf16 only (the pair
    // stores rely on every value coming from bf16: see `Simd::store_bf16_pair`). An inline
    // `const` condition, so that other instantiations do not even compile the pair code.
    let len = params.len();
    let (head, end) = if const { S::PAIRS && all_bf16::<P, G, M>() } {
        pairs::<S, N, P, G, M, UNSCALE, STOCHASTIC, CAUTIOUS>(
            s,
            &v,
            params,
            grads,
            momentum,
            options.offset,
        )
    } else {
        (len, len)
    };
    // The head and what the pairs left, through one copy of the single-chunk loop (inlined
    // once, not twice, into each of the 27 dtype combinations of every path).
    for range in [0..head, end..len] {
        let index = s.add_u32(index, s.splat_u32(range.start as u32));
        let (p, g) = (&mut params[range.clone()], &grads[range.clone()]);
        singles::<S, N, P, G, M, UNSCALE, STOCHASTIC, CAUTIOUS>(
            s,
            &v,
            p,
            g,
            &mut momentum[range],
            index,
        );
    }
}

/// Whether parameters, gradients and momentum are all bf16 (in `const` context).
const fn all_bf16<P: Element, G: Element, M: Element>() -> bool {
    matches!(
        (P::DTYPE, G::DTYPE, M::DTYPE),
        (Dtype::Bf16, Dtype::Bf16, Dtype::Bf16)
    )
}

/// The pairs of chunks of an all-bf16 step: returns `(head, end)`, the elements `head..end`
/// being done (the caller does the others with single chunks).
#[inline(always)]
fn pairs<
    S,
    const N: usize,
    P,
    G,
    M,
    const UNSCALE: bool,
    const STOCHASTIC: bool,
    const CAUTIOUS: bool,
>(
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
        // Every line of the block (two on AVX-512: prefetching only the first measured 1.18x
        // the bandwidth probe's time on a 16M-element all-bf16 step, every line 1.03-1.08x).
        for line in (0..size_of_val(g)).step_by(CACHE_LINE) {
            s.prefetch(ahead(&*p, last.0).wrapping_add(line));
            s.prefetch(ahead(g, last.1).wrapping_add(line));
            s.prefetch(ahead(&*m, last.2).wrapping_add(line));
        }
        block::<S, N, P, G, M, UNSCALE, STOCHASTIC, CAUTIOUS>(s, v, p, g, m, first);
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

/// Single chunks and a zero-padded tail over equally long slices; lane `i` of `index` is the
/// low 32 bits of the global index of element `i`.
#[inline(always)]
fn singles<
    S,
    const N: usize,
    P,
    G,
    M,
    const UNSCALE: bool,
    const STOCHASTIC: bool,
    const CAUTIOUS: bool,
>(
    s: S,
    v: &Lanes<S::F32, S::U32>,
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    mut index: S::U32,
) where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    let stride = s.splat_u32(N as u32);
    let last = (last_byte(params), last_byte(grads), last_byte(momentum));
    let (p_chunks, p_tail) = params.as_chunks_mut::<N>();
    let (g_chunks, g_tail) = grads.as_chunks::<N>();
    let (m_chunks, m_tail) = momentum.as_chunks_mut::<N>();
    for ((p, g), m) in p_chunks.iter_mut().zip(g_chunks).zip(m_chunks.iter_mut()) {
        // Ask for the lines a few chunks ahead: more loads in flight than the out-of-order
        // window alone would issue, which is what a DRAM-bound step is limited by.
        s.prefetch(ahead(&*p, last.0));
        s.prefetch(ahead(g, last.1));
        s.prefetch(ahead(&*m, last.2));
        body::<S, N, P, G, M, UNSCALE, STOCHASTIC, CAUTIOUS>(s, v, p, g, m, index);
        index = s.add_u32(index, stride);
    }
    let n = p_tail.len();
    if n > 0 {
        let (mut p, mut g, mut m) = ([P::default(); N], [G::default(); N], [M::default(); N]);
        p[..n].copy_from_slice(p_tail);
        g[..n].copy_from_slice(g_tail);
        m[..n].copy_from_slice(m_tail);
        body::<S, N, P, G, M, UNSCALE, STOCHASTIC, CAUTIOUS>(s, v, &mut p, &g, &mut m, index);
        p_tail.copy_from_slice(&p[..n]);
        m_tail.copy_from_slice(&m[..n]);
    }
}

/// Lion on `N` elements, in exactly the order of operations of `reference::step_with`.
#[inline(always)]
fn body<
    S,
    const N: usize,
    P,
    G,
    M,
    const UNSCALE: bool,
    const STOCHASTIC: bool,
    const CAUTIOUS: bool,
>(
    s: S,
    k: &Lanes<S::F32, S::U32>,
    p: &mut [P; N],
    g: &[G; N],
    m: &mut [M; N],
    index: S::U32,
) where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    let (c, new_mom) = momentum_math::<S, N, UNSCALE, CAUTIOUS>(s, k, G::load(s, g), M::load(s, m));
    let new_param = param_math(s, k, P::load(s, p), c);
    if STOCHASTIC {
        let random = random_bits(s, k.key, index);
        P::store_stochastic(s, new_param, random, p);
        M::store_stochastic(s, new_mom, s.shr::<16>(random), m);
    } else {
        P::store(s, new_param, p);
        M::store(s, new_mom, m);
    }
}

/// Lion on `BLOCK` pairs of chunks, loaded and stored as pairs (in the instruction set's pair
/// order); `first` holds the global index of the block's first element in every lane.
///
/// The momentum of the whole block first (it needs only gradients and momentum), then the
/// parameters, so that each array's cache line is done with before the next one is touched.
/// Large buffers of equal length allocated one after the other share their page offset, so the
/// three elements of one index fall in the same L1 set; on AMD Zen, two such lines whose
/// linear addresses also hash to the same way-predictor tag (measured here: 64 MiB + 8 KiB
/// apart, as the parameters and momentum of three consecutive 16M-element bf16 `Vec`s) evict
/// each other on every alternate access. Measured on a 16M-element step in three layouts:
/// 0.34 / 0.39 / 0.50 ns per element with the arrays interleaved chunk by chunk, 0.32 / 0.32 /
/// 0.33 in this order. In cache, with one prefetch per line instead of two and the 16-bit-lane
/// rounding of the AVX2 pair store, 7% faster than the former pair loop.
#[inline(always)]
fn block<
    S,
    const N: usize,
    P,
    G,
    M,
    const UNSCALE: bool,
    const STOCHASTIC: bool,
    const CAUTIOUS: bool,
>(
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
        let (c0, m0) = momentum_math::<S, N, UNSCALE, CAUTIOUS>(s, k, g0, m0);
        let (c1, m1) = momentum_math::<S, N, UNSCALE, CAUTIOUS>(s, k, g1, m1);
        c[i] = [c0, c1];
        if STOCHASTIC {
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
        let p0 = param_math(s, k, p0, c[i][0]);
        let p1 = param_math(s, k, p1, c[i][1]);
        if STOCHASTIC {
            P::store_pair_stochastic(s, [p0, p1], random_p[i], &mut p[i]);
        } else {
            P::store_pair(s, [p0, p1], &mut p[i]);
        }
    }
}

/// The momentum half of Lion's arithmetic on loaded lanes, in exactly the order of operations of
/// `reference::step_with`: returns the interpolation `c` (which gives the update's sign) and the
/// new momentum, unrounded. `CAUTIOUS`: `c` is zeroed where it does not agree with the gradient,
/// so that `param_math` leaves those parameters at their decayed value.
#[inline(always)]
fn momentum_math<S: Simd<N>, const N: usize, const UNSCALE: bool, const CAUTIOUS: bool>(
    s: S,
    k: &Lanes<S::F32, S::U32>,
    grad: S::F32,
    mom: S::F32,
) -> (S::F32, S::F32) {
    let grad = gradient::<S, N, UNSCALE>(s, k, grad);
    let c = interpolation(s, k, grad, mom);
    let new_mom = s.add(s.mul(mom, k.beta2), s.mul(grad, k.one_minus_beta2));
    if CAUTIOUS {
        let keep = s.or(agreement(s, k, c, grad), k.not_cautious);
        return (s.bits_to_f32(s.and(keep, s.to_bits(c))), new_mom);
    }
    (c, new_mom)
}

/// The gradient as the step uses it: times the inverse loss scale when `UNSCALE`.
#[inline(always)]
fn gradient<S: Simd<N>, const N: usize, const UNSCALE: bool>(
    s: S,
    k: &Lanes<S::F32, S::U32>,
    grad: S::F32,
) -> S::F32 {
    if UNSCALE {
        s.mul(grad, k.inv_scale)
    } else {
        grad
    }
}

/// `c = m*b1 + g*omb1` (negated to maximize, see `Lanes`).
#[inline(always)]
fn interpolation<S: Simd<N>, const N: usize>(
    s: S,
    k: &Lanes<S::F32, S::U32>,
    grad: S::F32,
    mom: S::F32,
) -> S::F32 {
    s.add(s.mul(mom, k.c_beta1), s.mul(grad, k.c_one_minus_beta1))
}

/// The mask of lanes where `sign(c) * g > 0` for the reference's `c` (the kernel's `c` times
/// the direction): exact, since `sign(c) * g` is `±g` or a zero (or NaN, which is not `> 0`).
#[inline(always)]
fn agreement<S: Simd<N>, const N: usize>(
    s: S,
    k: &Lanes<S::F32, S::U32>,
    c: S::F32,
    grad: S::F32,
) -> S::U32 {
    let sign = s.xor(s.to_bits(s.signed(k.one, c)), k.direction_bit);
    s.gt(s.mul(s.bits_to_f32(sign), grad), k.zero)
}

/// The parameter half of Lion's arithmetic, in exactly the order of operations of
/// `reference::step_with`: the decayed parameter moved by `lr * sign(c)`, unrounded.
#[inline(always)]
fn param_math<S: Simd<N>, const N: usize>(
    s: S,
    k: &Lanes<S::F32, S::U32>,
    param: S::F32,
    c: S::F32,
) -> S::F32 {
    let decayed = s.mul(param, k.decay);
    s.sub(decayed, s.signed(k.lr, c)) // lr * sign(c)
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
