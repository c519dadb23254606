//! The step with 8-bit momentum, fused: block by block (256 elements), the old momentum decoded
//! from its codes, the element kernel's arithmetic (`momentum_math`, `param_math`), the new
//! momentum kept in an L1 buffer while the block's scale is found, then encoded. One pass over
//! memory; bit-identical to `reference::step_q8_with` on every instruction set.
//!
//! Decoding is one table lookup per element (`Simd::gather`). Encoding to the nearest code is
//! another: the value's exponent and top six mantissa bits pick a bucket of the threshold table
//! that holds at most one threshold (`dtype::q8::NEAREST_BUCKETS`), and one comparison with it
//! finishes the count of thresholds below the value — exact, and proved so over every f32 in
//! `[-1, 1]` by the exhaustive test. An instruction set whose gathers are slow and whose
//! registers can hold the tables (`Simd::Q8_BLOCKWISE`: AVX-512) decodes and encodes a whole
//! block at a time instead (`Simd::q8_decode`, `Simd::q8_nearest`, through `new`), with the same
//! results (the same tests; the exhaustive one runs on the widest instruction set).

use super::{Lanes, agreement, gradient, interpolation, momentum_math, param_math};
use super::{ahead, last_byte, reduce::lane_sum};
use crate::dtype::Element;
use crate::dtype::q8::{
    BUCKET_FIRST, BUCKET_SHIFT, BUCKETS, FLOOR_BUCKETS, MAP_BITS, NEAREST_BUCKETS, Q8_BLOCK,
    RECIP_GAP_BITS,
};
use crate::hyper::Consts;
use crate::simd::{Simd, random_bits};
use crate::{Rounding, StepOptions};

/// One Lion step with 8-bit momentum over equally long slices (checked by the caller), `absmax`
/// holding one scale per started block; the first element's global index is `options.offset`
/// (a multiple of 256; its low 32 bits are the index of the random bits, the high ones folded
/// into `key`, as in `kernel::lion`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn lion_q8<S, const N: usize, P, G>(
    s: S,
    params: &mut [P],
    grads: &[G],
    codes: &mut [u8],
    absmax: &mut [f32],
    k: &Consts,
    options: &StepOptions,
    key: u32,
) where
    S: Simd<N>,
    P: Element,
    G: Element,
{
    let stochastic = matches!(options.rounding, Rounding::Stochastic { .. });
    let args = (params, grads, codes, absmax, k, options, key);
    // As `kernel::lion`: two kernels per dtype pair on bare-metal targets, eight elsewhere.
    #[cfg(target_os = "none")]
    match stochastic {
        false => passes::<S, N, P, G, true, false, true>(s, args),
        true => passes::<S, N, P, G, true, true, true>(s, args),
    }
    #[cfg(not(target_os = "none"))]
    let cautious = options.cautious != crate::Cautious::Off;
    #[cfg(not(target_os = "none"))]
    match (options.grad_unscale.is_some(), stochastic, cautious) {
        (false, false, false) => passes::<S, N, P, G, false, false, false>(s, args),
        (true, false, false) => passes::<S, N, P, G, true, false, false>(s, args),
        (false, true, false) => passes::<S, N, P, G, false, true, false>(s, args),
        (true, true, false) => passes::<S, N, P, G, true, true, false>(s, args),
        (false, false, true) => passes::<S, N, P, G, false, false, true>(s, args),
        (true, false, true) => passes::<S, N, P, G, true, false, true>(s, args),
        (false, true, true) => passes::<S, N, P, G, false, true, true>(s, args),
        (true, true, true) => passes::<S, N, P, G, true, true, true>(s, args),
    }
}

type Args<'a, P, G> = (
    &'a mut [P],
    &'a [G],
    &'a mut [u8],
    &'a mut [f32],
    &'a Consts,
    &'a StepOptions,
    u32,
);

/// The blocks: whole ones in place, the last partial one (if any) through padded copies (zero
/// gradients and parameters, zero codes), so that it goes through the very same body.
#[inline(always)]
fn passes<
    S,
    const N: usize,
    P,
    G,
    const UNSCALE: bool,
    const STOCHASTIC: bool,
    const CAUTIOUS: bool,
>(
    s: S,
    (params, grads, codes, absmax, k, options, key): Args<'_, P, G>,
) where
    S: Simd<N>,
    P: Element,
    G: Element,
{
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
        block::<S, N, P, G, UNSCALE, STOCHASTIC, CAUTIOUS>(s, &v, p, g, c, scale, first, last);
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
        block::<S, N, P, G, UNSCALE, STOCHASTIC, CAUTIOUS>(
            s, &v, &mut p, &g, &mut c, scale, first, last,
        );
        p_tail.copy_from_slice(&p[..n]);
        c_tail.copy_from_slice(&c[..n]);
    }
}

/// One block: decode, step, store the parameters, keep the new momentum; then the block's scale
/// and the new codes (see `reference::step_q8_with`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<
    S,
    const N: usize,
    P,
    G,
    const UNSCALE: bool,
    const STOCHASTIC: bool,
    const CAUTIOUS: bool,
>(
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
            let (c, m) = momentum_math::<S, N, UNSCALE, CAUTIOUS>(s, v, G::load(s, g), old);
            let param = param_math(s, v, P::load(s, p), c);
            if STOCHASTIC {
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
    let inv = s.splat(1.0 / scale);
    if S::Q8_BLOCKWISE && !STOCHASTIC {
        for m in new.as_chunks_mut::<N>().0 {
            s.store_f32(s.mul(s.load_f32(m), inv), m);
        }
        s.q8_nearest(&new, codes);
        *absmax = scale;
        return;
    }
    let mut index = lanes;
    for (c, m) in codes
        .as_chunks_mut::<N>()
        .0
        .iter_mut()
        .zip(new.as_chunks::<N>().0)
    {
        let x = s.mul(s.load_f32(m), inv);
        let code = if STOCHASTIC {
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

/// `reference::q8_quantize` of finite lanes: `#{k : T[k] < x}`, counted on `|x|` with the
/// positive thresholds (the negative ones are their mirror image).
#[inline(always)]
pub(crate) fn nearest<S: Simd<N>, const N: usize>(s: S, x: S::F32) -> S::U32 {
    let u = |x| s.splat_u32(x);
    let bits = s.to_bits(x);
    let a = s.and(bits, u(0x7fff_ffff));
    let negative = s.gt_i32(u(0), bits);
    let (below, t) = bucket(s, &NEAREST_BUCKETS, a);
    let above = s.gt_i32(a, t);
    let at_or_above = s.or(above, s.eq_u32(a, t));
    // (A mask is all ones: subtracting it adds one.)
    let under = s.sub_u32(below, above); // positive thresholds < |x|
    let not_over = s.min_u32(s.sub_u32(below, at_or_above), u(127)); // <= |x|, of T[127..254]
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
    let bits = s.to_bits(x);
    let a = s.and(bits, u(0x7fff_ffff));
    let negative = s.gt_i32(u(0), bits);
    let (below, t) = bucket(s, &FLOOR_BUCKETS, a);
    let above = s.gt_i32(a, t);
    let at_or_above = s.or(above, s.eq_u32(a, t));
    let not_over = s.sub_u32(below, at_or_above); // positive codes <= |x|
    let under = s.min_u32(s.sub_u32(below, above), u(127)); // codes of 128..254 < |x|
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
    s.select(s.eq_u32(a, u(0)), u(127), code)
}

/// The cautious count with 8-bit momentum (see `kernel::cautious_count`).
#[inline(always)]
pub(crate) fn cautious_count_q8<S, const N: usize, G>(
    s: S,
    grads: &[G],
    codes: &[u8],
    absmax: &[f32],
    k: &Consts,
    options: &StepOptions,
) -> u64
where
    S: Simd<N>,
    G: Element,
{
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
            let grad = gradient::<S, N, UNSCALE>(s, v, G::load(s, g));
            let agrees = agreement(s, v, interpolation(s, v, grad, old), grad);
            lanes = s.sub_u32(lanes, agrees); // all ones: -1
        }
        total += lane_sum(s, lanes);
    }
    total
}

/// Proofs that the vector quantizers are `reference::q8_quantize` and
/// `reference::q8_quantize_stochastic`, and that the block kernel is `reference::q8_lion`, on
/// every instruction set.
#[cfg(test)]
pub(crate) mod tests {
    use std::vec::Vec;

    use super::{nearest, stochastic};
    use crate::arch::{Isa, Op};
    use crate::dtype::q8::{Q8_BLOCK, Q8_MAP, THRESHOLDS};
    use crate::reference::{q8_quantize, q8_quantize_stochastic};
    use crate::simd::Simd;

    /// Random bits that decide stochastic rounding, and some ordinary ones.
    const RANDOM: [u16; 6] = [0, 1, 0x7fff, 0x8000, 0xfffe, 0xffff];

    /// Both quantizers of `S` on `inputs` (finite), against the reference: round-to-nearest,
    /// and stochastic rounding with the first `.1` of [`RANDOM`]'s patterns (varied across the
    /// lanes).
    struct Quantize<'a>(&'a [u32], usize);

    impl Op for Quantize<'_> {
        type Output = ();
        fn simd<S: Simd<N>, const N: usize>(self, s: S) {
            // The block quantizer (`Simd::q8_nearest`: on AVX-512 a search of its own).
            for block in self.0.chunks(Q8_BLOCK) {
                let mut x = [0.0f32; Q8_BLOCK];
                for (x, &b) in x.iter_mut().zip(block) {
                    *x = f32::from_bits(b);
                }
                let mut got = [0u8; Q8_BLOCK];
                s.q8_nearest(&x, &mut got);
                for (i, &b) in block.iter().enumerate() {
                    let want = q8_quantize(x[i]);
                    assert_eq!(
                        got[i], want,
                        "block: nearest code of {b:#010x} ({:e})",
                        x[i]
                    );
                }
            }
            for chunk in self.0.chunks(N) {
                let mut x = [0.0f32; N];
                for (x, &b) in x.iter_mut().zip(chunk) {
                    *x = f32::from_bits(b);
                }
                let mut got = [0u8; N];
                s.store_u8(nearest(s, s.load_f32(&x)), &mut got);
                for (i, &b) in chunk.iter().enumerate() {
                    let want = q8_quantize(x[i]);
                    assert_eq!(got[i], want, "nearest code of {b:#010x} ({:e})", x[i]);
                }
                for (j, r) in RANDOM.iter().enumerate().take(self.1) {
                    // Vary the random bits across lanes too.
                    let rs: [u16; N] =
                        core::array::from_fn(|i| RANDOM[(i + j) % RANDOM.len()] ^ (*r & 0x0f0f));
                    let rv = s.to_bits(s.load_f32(&rs.map(|r| f32::from_bits(u32::from(r)))));
                    s.store_u8(stochastic(s, s.load_f32(&x), rv), &mut got);
                    for (i, &b) in chunk.iter().enumerate() {
                        let want = q8_quantize_stochastic(x[i], rs[i]);
                        assert_eq!(
                            got[i], want,
                            "stochastic code of {b:#010x} with {:#06x}",
                            rs[i]
                        );
                    }
                }
            }
        }
        fn scalar(self) {}
    }

    /// The inputs where quantizing can go wrong: every threshold and code, their f32
    /// neighbours, zeros, the ends, values beyond 1 (the reciprocal's rounding can give them).
    pub(crate) fn boundary_inputs() -> Vec<u32> {
        let mut v = Vec::new();
        for x in THRESHOLDS.iter().chain(&Q8_MAP) {
            let b = x.to_bits();
            for d in 0..3u32 {
                v.extend([b.wrapping_add(d), b.wrapping_sub(d)]);
            }
        }
        for b in [
            0u32,
            0x8000_0000,
            1,
            0x8000_0001,
            0x3f80_0000,
            0x3f80_0001,
            0x3f80_0002,
            0xbf80_0000,
            0xbf80_0001,
            0x0080_0000,
            0x3400_0000,
            0xb400_0000,
        ] {
            v.push(b);
        }
        v
    }

    #[test]
    fn quantizers_match_the_reference() {
        // (Under Miri, an interpreter: every 16th boundary input and a small sample.)
        let stride = if cfg!(miri) { 16 } else { 1 };
        let mut inputs: Vec<u32> = boundary_inputs().into_iter().step_by(stride).collect();
        // A sample of [-1, 1]: every exponent, varied mantissas.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..if cfg!(miri) { 64 } else { 1 << 20 } {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = (x >> 32) as u32 & 0xbfff_ffff; // |v| < 2
            if f32::from_bits(b).abs() <= 1.0001 {
                inputs.push(b);
            }
        }
        // (Under Miri one pattern of random bits per input: an interpreter.)
        let patterns = if cfg!(miri) { 1 } else { RANDOM.len() };
        for isa in Isa::all_available() {
            isa.run(Quantize(&inputs, patterns));
        }
    }

    #[test]
    #[ignore = "every f32 in [-1.0000005, 1.0000005]: run in release with --ignored (CI does)"]
    fn quantizers_exhaustive() {
        // The nearest code of every input on the widest instruction set of this machine: the
        // quantizer is one generic body over `Simd` (the narrower sets and the stochastic
        // quantizer run it on every threshold's neighbours and a million samples above;
        // every set's primitives are proved exhaustively by the narrowing run).
        let top = 1.000_000_5f32.to_bits();
        let isa = Isa::all_available()
            .last()
            .expect("the scalar path at least");
        if matches!(isa, Isa::Scalar) {
            return;
        }
        std::eprintln!("exhaustive quantizer on {}", isa.backend());
        crate::simd::tests::narrow_exhaustive(|block| {
            let block: Vec<u32> = block
                .iter()
                .copied()
                .filter(|b| b & 0x7fff_ffff <= top)
                .collect();
            isa.run(Quantize(&block, 0));
        });
    }

    /// `Simd::q8_decode` (on AVX-512 word permutations) is `Q8_MAP`, on every instruction set:
    /// every code in every position of a block.
    struct Decode;

    impl Op for Decode {
        type Output = ();
        fn simd<S: Simd<N>, const N: usize>(self, s: S) {
            for shift in [0usize, 1, 77, 128, 255] {
                let codes: [u8; Q8_BLOCK] = core::array::from_fn(|i| ((i + shift) % 256) as u8);
                let mut got = [0.0f32; Q8_BLOCK];
                s.q8_decode(&codes, &mut got);
                for (g, &c) in got.iter().zip(&codes) {
                    assert_eq!(g.to_bits(), Q8_MAP[usize::from(c)].to_bits(), "code {c}");
                }
            }
        }
        fn scalar(self) {}
    }

    #[test]
    fn decode_is_the_map() {
        for isa in Isa::all_available() {
            isa.run(Decode);
        }
    }

    #[test]
    fn blocks_hold_what_the_table_says() {
        assert_eq!(Q8_BLOCK, 256);
        assert_eq!(q8_quantize(0.0), 127);
        assert_eq!(q8_quantize(-0.0), 127);
        assert_eq!(q8_quantize(1.0), 255);
        assert_eq!(q8_quantize(1.000_000_1), 255);
        assert_eq!(q8_quantize(-1.0), 0);
        for (k, &c) in Q8_MAP.iter().enumerate() {
            assert_eq!(
                usize::from(q8_quantize(c)),
                k,
                "code {k} quantizes to itself"
            );
            assert_eq!(
                usize::from(q8_quantize_stochastic(c, 0xffff)),
                k,
                "code {k} stays"
            );
        }
    }
}

/// The block kernel against the reference, on every instruction set, for every dtype pair.
#[cfg(test)]
mod step_tests {
    use std::vec::Vec;

    use crate::arch::Isa;
    use crate::dtype::{Element, Q8Mut};
    use crate::exec::{Slices, TypedQ8};
    use crate::hyper::Consts;
    use crate::{Cautious, Hyperparams, Rounding, StepOptions, WeightDecay, bf16, f16};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn value(&mut self) -> f32 {
            match self.next() % 8 {
                0 => 0.0,
                1 => -0.0,
                2 => f32::from_bits(self.next() as u32), // any class
                _ => (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0,
            }
        }
    }

    fn run<P: Element, G: Element>(seed: u64) {
        let mut rng = Rng(seed | 1);
        let d = StepOptions::default();
        let options = [
            d,
            StepOptions {
                rounding: Rounding::Stochastic { seed: 9 },
                step: 3,
                offset: 512,
                ..d
            },
            StepOptions {
                maximize: true,
                grad_unscale: Some(0.5),
                cautious: Cautious::Shard {
                    agreeing: 100,
                    numel: 5000,
                },
                ..d
            },
            StepOptions {
                weight_decay: WeightDecay::FullyDecoupled { max_lr: 0.5 },
                rounding: Rounding::Stochastic { seed: 1 },
                offset: (1 << 32) - 256,
                ..d
            },
        ];
        let hps = [
            Hyperparams {
                lr: 1e-3,
                weight_decay: 0.1,
                ..Hyperparams::default()
            },
            Hyperparams {
                lr: 0.5,
                beta1: 0.5,
                beta2: 0.5,
                weight_decay: 0.25,
            },
        ];
        // Under Miri (an interpreter: UB checks, big-endian), a few lengths and one set of
        // hyperparameters; the full grid runs natively on every ISA.
        let lens: &[usize] = if cfg!(miri) {
            &[1, 257]
        } else {
            &[0, 1, 7, 255, 256, 257, 511, 513, 1000]
        };
        let hps = if cfg!(miri) { &hps[..1] } else { &hps[..] };
        // (Under Miri the default options and stochastic rounding with a shard offset.)
        let options = if cfg!(miri) {
            &options[..2]
        } else {
            &options[..]
        };
        for &len in lens {
            for o in options {
                for hp in hps {
                    let k: Consts = hp.constants_with(o, len).unwrap();
                    let k = k.caution(o.cautious, len as u64, || 0);
                    let p: Vec<P> = (0..len).map(|_| P::from_f32_rounded(rng.value())).collect();
                    let g: Vec<G> = (0..len).map(|_| G::from_f32_rounded(rng.value())).collect();
                    let codes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    let absmax: Vec<f32> = (0..len.div_ceil(256))
                        .map(|_| match rng.next() % 4 {
                            0 => 0.0,
                            1 => f32::from_bits(rng.next() as u32 & 0x7fff_ffff),
                            _ => rng.value().abs(),
                        })
                        .collect();
                    let mut results = Vec::new();
                    for isa in Isa::all_available() {
                        let (mut p, mut c, mut a) = (p.clone(), codes.clone(), absmax.clone());
                        let m = Q8Mut::new(&mut c, &mut a).unwrap();
                        TypedQ8 {
                            p: &mut p,
                            g: &g,
                            m,
                        }
                        .step(isa, &k, o);
                        results.push((isa, p, c, a));
                    }
                    let (_, p0, c0, a0) = &results[0]; // the scalar reference
                    for (isa, p, c, a) in &results[1..] {
                        let same_p = p.iter().zip(p0).all(|(x, y)| {
                            let (x, y) = (x.to_f32_exact(), y.to_f32_exact());
                            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
                        });
                        let same_a = a
                            .iter()
                            .zip(a0)
                            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()));
                        assert!(
                            same_p,
                            "params differ on {}: len {len}, {o:?}, {hp:?}",
                            isa.backend()
                        );
                        assert_eq!(
                            c,
                            c0,
                            "codes differ on {}: len {len}, {o:?}, {hp:?}",
                            isa.backend()
                        );
                        assert!(
                            same_a,
                            "absmax differs on {}: len {len}, {o:?}",
                            isa.backend()
                        );
                    }
                }
            }
        }
    }

    #[test]
    // Miri on x86_64 runs the portable and scalar paths (safe code) for its UB checks: over 15
    // minutes here for nothing the native runs do not check; big-endian s390x still runs it.
    #[cfg_attr(
        all(miri, target_arch = "x86_64"),
        ignore = "safe code under Miri on x86_64: run natively, and big-endian under Miri (s390x)"
    )]
    fn every_isa_matches_the_reference() {
        run::<f32, f32>(1);
        run::<bf16, bf16>(5);
        run::<f16, f16>(9);
        if cfg!(miri) {
            return; // (an interpreter: one gradient dtype per parameter dtype)
        }
        run::<f32, bf16>(2);
        run::<f32, f16>(3);
        run::<bf16, f32>(4);
        run::<bf16, f16>(6);
        run::<f16, f32>(7);
        run::<f16, bf16>(8);
    }
}
