//! The step with 8-bit momentum, fused: block by block (256 elements), the old momentum decoded
//! from its codes, the element kernel's arithmetic (`momentum_math`, `Lanes::param_math`), the new
//! momentum kept in an L1 buffer while the block's scale is found, then encoded. One pass over
//! memory; bit-identical to `reference::step_q8_with` on every instruction set.
//!
//! Decoding is one table lookup per element (`Simd::gather`). Encoding to the nearest code is
//! another: the value's exponent and top six mantissa bits pick a bucket of the threshold table
//! that holds at most one threshold (`dtype::q8::NEAREST_BUCKETS`), and one comparison with it
//! finishes the count of thresholds below the value — exact, and proved so over every f32 in
//! `[-1, 1]` by the exhaustive test. Rounding to nearest encodes a whole block in one call
//! (`Simd::q8_nearest`: by default this quantizer a vector at a time; AVX2 packs four vectors'
//! codes at once; AVX-512, whose registers can hold the tables, looks them up by permutations).
//! An instruction set whose gathers are slow (`Simd::Q8_BLOCKWISE`: AVX-512) also decodes a
//! whole block at a time (`Simd::q8_decode`, into `new`). Every path has the same results (the
//! same tests; the exhaustive one runs on the widest instruction set).

use super::{CountQ8, Lanes, Mode, Pass, StepQ8};
use super::{ahead, last_byte, momentum_math, reduce::lane_sum};
use crate::dtype::q8::{
    BUCKET_FIRST, BUCKET_SHIFT, BUCKETS, FLOOR_BUCKETS, MAP_BITS, NEAREST_BUCKETS, Q8_BLOCK,
    RECIP_GAP_BITS,
};
use crate::dtype::{Element, Q8Mut, Q8Ref};
use crate::simd::{Simd, random_bits};

/// The pass over all blocks.
pub(super) struct Passes<'a, S, const N: usize, P, G> {
    pub(super) s: S,
    pub(super) step: StepQ8<'a, P, G>,
}

impl<S: Simd<N>, const N: usize, P: Element, G: Element> Pass for Passes<'_, S, N, P, G> {
    #[inline(always)]
    fn run<F: Mode>(self) {
        passes::<S, N, P, G, F>(self.s, self.step);
    }
}

/// The blocks, in mode `F`: whole ones in place, the last partial one (if any) through padded
/// copies (zero gradients and parameters, zero codes), so that it goes through the very same body.
#[inline(always)]
fn passes<S, const N: usize, P, G, F: Mode>(s: S, step: StepQ8<'_, P, G>)
where
    S: Simd<N>,
    P: Element,
    G: Element,
{
    let StepQ8 {
        params,
        grads,
        momentum: Q8Mut { codes, absmax },
        k,
        options,
        key,
    } = step;
    let v = Lanes::new(s, k, options, key);
    let last = (last_byte(params), last_byte(grads), last_byte(codes));
    let (p_blocks, p_tail) = params.as_chunks_mut::<Q8_BLOCK>();
    let (g_blocks, g_tail) = grads.as_chunks::<Q8_BLOCK>();
    let (c_blocks, c_tail) = codes.as_chunks_mut::<Q8_BLOCK>();
    let mut first = options.offset as u32;
    let mut scales = absmax.iter_mut();
    let blocks = p_blocks.iter_mut().zip(g_blocks).zip(c_blocks.iter_mut());
    for ((p, g), c) in blocks {
        let Some(scale) = scales.next() else { return };
        // The next blocks' lines, a page ahead (the codes' four lines once per block).
        for line in (0..Q8_BLOCK).step_by(64) {
            s.prefetch(ahead(c, last.2).wrapping_add(line));
        }
        block::<S, N, P, G, F>(s, &v, p, g, c, scale, first, last);
        first = first.wrapping_add(Q8_BLOCK as u32);
    }
    let n = p_tail.len();
    if n > 0 {
        let Some(scale) = scales.next() else { return };
        let mut p = [P::default(); Q8_BLOCK];
        let mut g = [G::default(); Q8_BLOCK];
        let mut c = [127u8; Q8_BLOCK];
        p[..n].copy_from_slice(p_tail);
        g[..n].copy_from_slice(g_tail);
        c[..n].copy_from_slice(c_tail);
        let last = (last_byte(&p), last_byte(&g), last_byte(&c));
        block::<S, N, P, G, F>(s, &v, &mut p, &g, &mut c, scale, first, last);
        p_tail.copy_from_slice(&p[..n]);
        c_tail.copy_from_slice(&c[..n]);
    }
}

/// One block: decode, step, store the parameters, keep the new momentum; then the block's scale
/// and the new codes (see `reference::step_q8_with`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<S, const N: usize, P, G, F: Mode>(
    s: S,
    v: &Lanes<S::F32, S::U32>,
    p: &mut [P; Q8_BLOCK],
    g: &[G; Q8_BLOCK],
    codes: &mut [u8; Q8_BLOCK],
    absmax: &mut f32,
    first: u32,
    last: (*const u8, *const u8, *const u8),
) where
    S: Simd<N>,
    P: Element,
    G: Element,
{
    let old_scale = s.splat(*absmax);
    let magnitude = s.splat_u32(0x7fff_ffff);
    let stride = s.splat_u32(N as u32);
    let lanes = s.add_u32(s.splat_u32(first), s.lane_indices());
    let mut new = [0.0f32; Q8_BLOCK];
    if S::Q8_BLOCKWISE {
        // The old momentum's code values, a block at a time, into `new` (each vector of it is
        // read below before the new momentum takes its place).
        s.q8_decode(codes, &mut new);
    }
    let mut largest = s.splat_u32(0);
    let mut index = lanes;
    {
        let chunks = p.as_chunks_mut::<N>().0.iter_mut();
        let chunks = chunks.zip(g.as_chunks::<N>().0);
        let chunks = chunks.zip(codes.as_chunks::<N>().0);
        for (((p, g), c), m_new) in chunks.zip(new.as_chunks_mut::<N>().0) {
            s.prefetch(ahead(&*p, last.0));
            s.prefetch(ahead(g, last.1));
            let decoded = if S::Q8_BLOCKWISE {
                s.load_f32(m_new)
            } else {
                s.bits_to_f32(s.gather(&MAP_BITS, s.load_u8(c)))
            };
            let old = s.mul(decoded, old_scale);
            let (c, m) = momentum_math::<S, N, F>(s, v, G::load(s, g), old);
            let param = v.param_math(s, P::load(s, p), c);
            if F::STOCHASTIC {
                P::store_stochastic(s, param, random_bits(s, v.key, index), p);
            } else {
                P::store(s, param, p);
            }
            largest = s.max_u32(largest, s.and(s.to_bits(m), magnitude));
            s.store_f32(m, m_new);
            index = s.add_u32(index, stride);
        }
    }
    let largest = s.reduce_max_u32(largest);
    let scale = f32::from_bits(largest);
    if largest < f32::MIN_POSITIVE.to_bits() || !scale.is_finite() {
        *absmax = if scale.is_finite() { 0.0 } else { f32::NAN };
        codes.fill(127);
        return;
    }
    if !F::STOCHASTIC {
        s.q8_nearest(&new, 1.0 / scale, codes);
        *absmax = scale;
        return;
    }
    let inv = s.splat(1.0 / scale);
    let mut index = lanes;
    for (c, m) in codes
        .as_chunks_mut::<N>()
        .0
        .iter_mut()
        .zip(new.as_chunks::<N>().0)
    {
        let x = s.mul(s.load_f32(m), inv);
        let code = if F::STOCHASTIC {
            let random = s.shr::<16>(random_bits(s, v.key, index));
            stochastic(s, x, random)
        } else {
            nearest(s, x)
        };
        s.store_u8(code, c);
        index = s.add_u32(index, stride);
    }
    *absmax = scale;
}

/// The bucket of the non-negative lanes `a` (bits) in `table` (see `dtype::q8::BUCKET_SHIFT`):
/// the count of the table's values below the bucket, and the bits of the bucket's value (or of
/// the next bucket's start, if it has none).
#[inline(always)]
fn bucket<S: Simd<N>, const N: usize>(s: S, table: &[u32; BUCKETS], a: S::U32) -> (S::U32, S::U32) {
    let u = |x| s.splat_u32(x);
    let high = s.shr::<{ BUCKET_SHIFT as i32 }>(a);
    // Below the first bucket: bucket 0 (whose value is above them all).
    let b = s.select(
        s.gt_i32(u(BUCKET_FIRST), high),
        u(0),
        s.sub_u32(high, u(BUCKET_FIRST)),
    );
    let b = s.min_u32(b, u(BUCKETS as u32 - 1));
    let entry = s.gather(table, b);
    let start = s.shl::<{ BUCKET_SHIFT as i32 }>(s.add_u32(b, u(BUCKET_FIRST)));
    (
        s.shr::<18>(entry),
        s.add_u32(start, s.and(entry, u(0x3ffff))),
    )
}

/// Finite lanes `x` against the 128 positive values of a bucket table.
struct Counts<U> {
    /// The bits of `|x|`.
    abs: U,
    /// All ones where `x` is negative.
    negative: U,
    /// How many of the values are below `|x|`.
    under: U,
    /// How many of the values are at most `|x|`.
    not_over: U,
}

/// The [`Counts`] of `x` against the values of `table`.
#[inline(always)]
fn counts<S: Simd<N>, const N: usize>(s: S, table: &[u32; BUCKETS], x: S::F32) -> Counts<S::U32> {
    let bits = s.to_bits(x);
    let abs = s.and(bits, s.splat_u32(0x7fff_ffff));
    let (below, t) = bucket(s, table, abs);
    let above = s.gt_i32(abs, t);
    let at_or_above = s.or(above, s.eq_u32(abs, t));
    // (A mask is all ones: subtracting it adds one.)
    Counts {
        abs,
        negative: s.gt_i32(s.splat_u32(0), bits),
        under: s.sub_u32(below, above),
        not_over: s.sub_u32(below, at_or_above),
    }
}

/// `reference::q8_quantize` of finite lanes: `#{k : T[k] < x}`, counted on `|x|` with the
/// positive thresholds (the negative ones are their mirror image).
#[inline(always)]
pub(crate) fn nearest<S: Simd<N>, const N: usize>(s: S, x: S::F32) -> S::U32 {
    let u = |x| s.splat_u32(x);
    let Counts {
        negative,
        under,
        not_over,
        ..
    } = counts(s, &NEAREST_BUCKETS, x);
    let not_over = s.min_u32(not_over, u(127)); // thresholds <= |x|, of T[127..254]
    s.select(
        negative,
        s.sub_u32(u(127), not_over),
        s.add_u32(u(127), under),
    )
}

/// `reference::q8_quantize_stochastic` of finite lanes with the random bits `random` (16 bits).
#[inline(always)]
fn stochastic<S: Simd<N>, const N: usize>(s: S, x: S::F32, random: S::U32) -> S::U32 {
    let u = |x| s.splat_u32(x);
    let Counts {
        abs,
        negative,
        under,
        not_over,
    } = counts(s, &FLOOR_BUCKETS, x);
    let under = s.min_u32(under, u(127)); // codes of 128..254 < |x|
    // The largest code at most x (u32::MAX: none, below the lowest code).
    let k = s.select(
        negative,
        s.sub_u32(u(126), under),
        s.add_u32(u(127), not_over),
    );
    let low = s.bits_to_f32(s.gather(&MAP_BITS, k));
    let recip = s.bits_to_f32(s.gather(&RECIP_GAP_BITS, k));
    let scaled = s.mul(s.mul(s.sub(x, low), recip), s.splat(65536.0));
    let up = s.gt(scaled, s.to_f32(random));
    let code = s.sub_u32(k, up);
    let code = s.select(s.eq_u32(k, u(255)), u(255), code);
    let code = s.select(s.eq_u32(k, u(u32::MAX)), u(0), code);
    s.select(s.eq_u32(abs, u(0)), u(127), code)
}

/// The cautious count with 8-bit momentum (see `kernel::cautious_count`).
#[inline(always)]
pub(crate) fn cautious_count_q8<S: Simd<N>, const N: usize, G: Element>(
    s: S,
    count: CountQ8<'_, G>,
) -> u64 {
    let CountQ8 {
        grads,
        momentum: Q8Ref { codes, absmax },
        k,
        options,
    } = count;
    let v = Lanes::new(s, k, options, 0);
    match options.grad_unscale.is_some() {
        false => count_pass::<S, N, G, false>(s, &v, grads, codes, absmax),
        true => count_pass::<S, N, G, true>(s, &v, grads, codes, absmax),
    }
}

#[inline(always)]
fn count_pass<S, const N: usize, G, const UNSCALE: bool>(
    s: S,
    v: &Lanes<S::F32, S::U32>,
    grads: &[G],
    codes: &[u8],
    absmax: &[f32],
) -> u64
where
    S: Simd<N>,
    G: Element,
{
    let mut total = 0;
    let blocks = grads.chunks(Q8_BLOCK).zip(codes.chunks(Q8_BLOCK));
    for ((g, c), &scale) in blocks.zip(absmax) {
        let mut gp = [G::default(); Q8_BLOCK];
        let mut cp = [127u8; Q8_BLOCK];
        // A whole block in place; the last one padded (a zero gradient never agrees).
        let (g, c): (&[G; Q8_BLOCK], &[u8; Q8_BLOCK]) = match (g.try_into(), c.try_into()) {
            (Ok(g), Ok(c)) => (g, c),
            _ => {
                gp[..g.len()].copy_from_slice(g);
                cp[..c.len()].copy_from_slice(c);
                (&gp, &cp)
            }
        };
        let scale = s.splat(scale);
        let mut lanes = s.splat_u32(0);
        for (g, c) in g.as_chunks::<N>().0.iter().zip(c.as_chunks::<N>().0) {
            let old = s.mul(s.bits_to_f32(s.gather(&MAP_BITS, s.load_u8(c))), scale);
            let grad = v.gradient(s, G::load(s, g), UNSCALE);
            let agrees = v.agreement(s, v.interpolation(s, grad, old), grad);
            lanes = s.sub_u32(lanes, agrees); // all ones: -1
        }
        total += lane_sum(s, lanes);
    }
    total
}

#[cfg(test)]
mod tests;
