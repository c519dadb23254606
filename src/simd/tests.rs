//! Proofs that the conversions of `simd` (and any hardware override of them) are exactly
//! `half`'s, on every instruction set.
use super::{QUIET_BIT, Simd};
use crate::arch::{Isa, Op};
use half::{bf16, f16};
use std::vec::Vec;

/// Runs `f` on every chunk of `N` of `items` (the last one padded by repeating item 0).
fn chunked<T: Copy, const N: usize>(items: &[T], mut f: impl FnMut(&[T; N], usize)) {
    for (i, c) in items.chunks(N).enumerate() {
        let mut a = [items[0]; N];
        a[..c.len()].copy_from_slice(c);
        f(&a, i * N);
    }
}

/// `got` is `want` bit for bit; or, for a signalling-NaN input, `want` is `got` with the
/// quiet bit set (the first arithmetic operation sets it).
fn widened_as_half(what: &str, h: u16, signalling: bool, got: f32, want: f32) {
    let ok = if signalling {
        got.is_nan() && got.to_bits() | 0x0040_0000 == want.to_bits()
    } else {
        got.to_bits() == want.to_bits()
    };
    assert!(
        ok,
        "{what} of {h:#06x}: got {:#x}, want {:#x}",
        got.to_bits(),
        want.to_bits()
    );
}

/// Signalling NaNs: all exponent bits set, a nonzero payload, the quiet bit clear.
pub(crate) fn f16_is_snan(h: u16) -> bool {
    h & 0x7c00 == 0x7c00 && h & 0x03ff != 0 && h & 0x0200 == 0
}
pub(crate) fn bf16_is_snan(h: u16) -> bool {
    h & 0x7f80 == 0x7f80 && h & 0x007f != 0 && h & 0x0040 == 0
}

/// Every one of the 65536 f16 and 65536 bf16 bit patterns widens exactly as `half` does
/// (signalling NaNs: up to the quiet bit, see the module docs).
pub(crate) fn widen_all<S: Simd<N>, const N: usize>(s: S) {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    chunked::<u16, N>(&all, |c, _| {
        let f16_wide = |h| f16::from_bits(h).to_f32();
        let bf16_wide = |h| bf16::from_bits(h).to_f32();
        let widened = [
            (
                "f16 widening",
                s.load_f16(c),
                f16_is_snan as fn(u16) -> bool,
                f16_wide as fn(u16) -> f32,
            ),
            ("bf16 widening", s.load_bf16(c), bf16_is_snan, bf16_wide),
        ];
        for (what, v, is_snan, half) in widened {
            let mut out = [0.0f32; N];
            s.store_f32(v, &mut out);
            for (&h, o) in c.iter().zip(out) {
                widened_as_half(what, h, is_snan(h), o, half(h));
            }
        }
    });
}

/// Where element `j` of a pair of chunks lives: (vector, lane), in `S`'s pair order.
fn pair_slot<S: Simd<N>, const N: usize>(j: usize) -> (usize, usize) {
    if S::BF16_PAIR_EVEN_ODD {
        (j % 2, j / 2)
    } else {
        (j / N, j % N)
    }
}

/// The pair loads widen every bf16 pattern as `half` does, in `S`'s pair order.
pub(crate) fn widen_pairs_all<S: Simd<N>, const N: usize>(s: S) {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for c in all.chunks(2 * N) {
        let mut pair = [[0u16; N]; 2];
        for (j, &h) in c.iter().enumerate() {
            pair[j / N][j % N] = h;
        }
        let v = s.load_bf16_pair(&pair);
        let mut out = [[0.0f32; N]; 2];
        s.store_f32(v[0], &mut out[0]);
        s.store_f32(v[1], &mut out[1]);
        for (j, &h) in c.iter().enumerate() {
            let (vector, lane) = pair_slot::<S, N>(j);
            let want = bf16::from_bits(h).to_f32();
            let got = out[vector][lane];
            widened_as_half("bf16 pair widening", h, bf16_is_snan(h), got, want);
        }
    }
}

/// The pair stores round as `half` does (to nearest, and stochastically as
/// `from_f32_stochastic`), in `S`'s pair order, on every input but NaNs with nonzero low 16
/// bits (outside their contract: see `Simd::store_bf16_pair`).
pub(crate) fn narrow_pairs_match_half<S: Simd<N>, const N: usize>(s: S, inputs: &[u32]) {
    for c in inputs.chunks(2 * N) {
        let mut lanes = [[0.0f32; N]; 2];
        for (j, &x) in c.iter().enumerate() {
            let (vector, lane) = pair_slot::<S, N>(j);
            lanes[vector][lane] = f32::from_bits(x);
        }
        let v = [s.load_f32(&lanes[0]), s.load_f32(&lanes[1])];
        // Random bits for the stochastic store: varied, and the ones that decide results.
        let special = [0u32, 1, 0x7fff, 0x8000, 0xffff];
        let mut r = [[0u32; N]; 2];
        for (j, &x) in c.iter().enumerate() {
            let (vector, lane) = pair_slot::<S, N>(j);
            r[vector][lane] = (x.rotate_left(7) ^ 0x9e37_79b9) >> (16 + j % 3 * 4);
            if j % 4 == 0 {
                r[vector][lane] = special[(j / 4) % special.len()];
            }
        }
        let random = r.map(|r| s.to_bits(s.load_f32(&r.map(f32::from_bits))));
        let (mut b, mut sr) = ([[0u16; N]; 2], [[0u16; N]; 2]);
        s.store_bf16_pair(v, &mut b);
        s.store_bf16_pair_stochastic(v, random, &mut sr);
        for (j, &bits) in c.iter().enumerate() {
            let (x, got) = (f32::from_bits(bits), b[j / N][j % N]);
            if x.is_nan() && bits & 0xffff != 0 {
                continue;
            }
            let (vector, lane) = pair_slot::<S, N>(j);
            let ri = r[vector][lane] as u16;
            let want_sr = crate::Element::from_f32_stochastic(x, ri);
            let want_sr = bf16::to_bits(want_sr);
            let got_sr = sr[j / N][j % N];
            if x.is_nan() {
                // NaN: rounded as to nearest (also a signalling one: see below).
                assert_eq!(
                    got_sr, got,
                    "bf16 pair stochastic of {bits:#x} with {ri:#x}"
                );
            } else {
                assert_eq!(
                    got_sr, want_sr,
                    "bf16 pair stochastic of {bits:#x} with {ri:#x}"
                );
            }
            let want = bf16::from_f32(x).to_bits();
            if x.is_nan() && bits & QUIET_BIT == 0 {
                // A signalling NaN may keep its bits (see `Simd::store_bf16_pair`).
                let quieted = got | (QUIET_BIT >> 16) as u16;
                assert_eq!(quieted, want, "bf16 pair narrowing of {bits:#x}");
            } else {
                assert_eq!(got, want, "bf16 pair narrowing of {bits:#x} ({x:e})");
            }
        }
    }
}

/// Narrows every f32 in `inputs` to f16 and bf16 and compares with `half`, bit for bit
/// (the single stores, and the pair stores within their contract). Both are exact for
/// every input, signalling NaNs included.
pub(crate) fn narrow_matches_half<S: Simd<N>, const N: usize>(s: S, inputs: &[u32]) {
    narrow_pairs_match_half(s, inputs);
    chunked::<u32, N>(inputs, |c, _| {
        let v = s.load_f32(&c.map(f32::from_bits));
        let (mut h, mut b) = ([0u16; N], [0u16; N]);
        s.store_f16(v, &mut h);
        s.store_bf16(v, &mut b);
        for i in 0..N {
            let x = f32::from_bits(c[i]);
            let want = f16::from_f32(x).to_bits();
            assert_eq!(h[i], want, "f16 narrowing of {:#x} ({x:e})", c[i]);
            let want = bf16::from_f32(x).to_bits();
            assert_eq!(b[i], want, "bf16 narrowing of {:#x} ({x:e})", c[i]);
        }
    });
}

/// The f32 inputs where rounding to f16 or bf16 can go wrong: for every f16 and bf16 value,
/// the value itself, its neighbours in f32, the exact ties with the next value and one f32
/// ulp either side of them; every NaN payload class; f32 subnormals; the overflow edges.
/// `stride` > 1 takes every `stride`-th 16-bit pattern only (for Miri).
pub(crate) fn boundary_inputs(stride: usize) -> Vec<u32> {
    let mut v = Vec::new();
    for h in (0..=u16::MAX).step_by(stride) {
        let x = f16::from_bits(h).to_f32();
        if x.is_finite() {
            let next = f16::from_bits(h.wrapping_add(1)).to_f32();
            let tie = ((f64::from(x) + f64::from(next)) / 2.0) as f32;
            for y in [x, tie] {
                let b = y.to_bits();
                v.extend([b, b.wrapping_sub(1), b.wrapping_add(1)]);
            }
        }
        let b = u32::from(h) << 16;
        v.extend([
            b,
            b | 0x7fff,
            b | 0x8000,
            b | 0x8001,
            b | 0xffff,
            b | 0x0001,
            b | 0x7ffe,
        ]);
    }
    for payload in [
        1u32, 0x1fff, 0x2000, 0x3f_ffff, 0x40_0000, 0x7f_ffff, 0x1234,
    ] {
        v.extend([0x7f80_0000 | payload, 0xff80_0000 | payload]);
    }
    for sub in [1u32, 2, 0x7f_ffff, 0x40_0000, 0x12_3456] {
        v.extend([sub, sub | 0x8000_0000]);
    }
    v
}

/// A deterministic xorshift sample of `n` f32 bit patterns.
pub(crate) fn random_inputs(n: usize, mut seed: u64) -> Vec<u32> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 16) as u32
        })
        .collect()
}

/// The stochastic stores equal `from_f32_stochastic` on every input, with varied random
/// bits, including the values that decide the result.
pub(crate) fn stochastic_matches_spec<S: Simd<N>, const N: usize>(s: S, inputs: &[u32]) {
    use crate::Element;
    let randoms = random_inputs(inputs.len(), 0x5eed);
    let special = [0u32, 1, 0x1fff, 0x2000, 0x7fff, 0x8000, 0xe000, 0xffff];
    for (round, r_of) in [0, 1].into_iter().enumerate() {
        chunked::<u32, N>(inputs, |c, at| {
            let v = s.load_f32(&c.map(f32::from_bits));
            let r: [u32; N] = core::array::from_fn(|i| match r_of {
                0 => randoms[(at + i) % randoms.len()] >> 16,
                _ => special[(at + i + round) % special.len()],
            });
            // The random bits as u32 lanes (a float load moves bits unchanged).
            let rv = s.to_bits(s.load_f32(&r.map(f32::from_bits)));
            let (mut h, mut b) = ([0u16; N], [0u16; N]);
            s.store_f16_stochastic(v, rv, &mut h);
            s.store_bf16_stochastic(v, rv, &mut b);
            for i in 0..N {
                let (x, ri) = (f32::from_bits(c[i]), r[i] as u16);
                let want = f16::from_f32_stochastic(x, ri).to_bits();
                assert_eq!(h[i], want, "f16 stochastic of {:#x} with {ri:#x}", c[i]);
                let want = bf16::from_f32_stochastic(x, ri).to_bits();
                assert_eq!(b[i], want, "bf16 stochastic of {:#x} with {ri:#x}", c[i]);
            }
        });
    }
}

/// All of the above for one instruction set.
/// (Under Miri, which interprets every instruction, on a sample.)
pub(crate) fn conversions<S: Simd<N>, const N: usize>(s: S) {
    if cfg!(miri) {
        // Every 257th pattern: all exponents, varied mantissas, both signs.
        let inputs = boundary_inputs(257);
        narrow_matches_half(s, &inputs);
        narrow_matches_half(s, &random_inputs(1024, 0x9e37_79b9_7f4a_7c15));
        stochastic_matches_spec(s, &inputs);
        return;
    }
    widen_all(s);
    widen_pairs_all(s);
    narrow_matches_half(s, &boundary_inputs(1));
    narrow_matches_half(s, &random_inputs(1 << 22, 0x9e37_79b9_7f4a_7c15));
    stochastic_matches_spec(s, &boundary_inputs(1));
    stochastic_matches_spec(s, &random_inputs(1 << 20, 0x0123_4567_89ab_cdef));
}

/// Every f32 bit pattern, narrowed to f16 and bf16 by `check` (a function compiled for the
/// instruction set under test, given blocks of inputs). 2^32 values: run with `--ignored` in
/// a release build; CI does.
pub(crate) fn narrow_exhaustive(check: impl Fn(&[u32]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    let span = (1u64 << 32) / threads;
    let check = &check;
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let lo = t * span;
                let hi = if t + 1 == threads {
                    1 << 32
                } else {
                    (t + 1) * span
                };
                let mut block = Vec::with_capacity(1 << 16);
                for start in (lo..hi).step_by(1 << 16) {
                    block.clear();
                    block.extend((start..(start + (1 << 16)).min(hi)).map(|x| x as u32));
                    check(&block);
                }
            });
        }
    });
}

/// The conversion proofs above as an operation, run on every instruction set.
struct Conversions;

impl Op for Conversions {
    type Output = ();
    fn simd<S: Simd<N>, const N: usize>(self, s: S) {
        conversions(s)
    }
    fn scalar(self) {}
}

/// The narrowing of a block of f32 bit patterns (see `narrow_exhaustive`).
struct Narrow<'a>(&'a [u32]);

impl Op for Narrow<'_> {
    type Output = ();
    fn simd<S: Simd<N>, const N: usize>(self, s: S) {
        narrow_matches_half(s, self.0)
    }
    fn scalar(self) {}
}

#[test]
fn conversions_match_half_on_every_instruction_set() {
    for isa in Isa::all_available() {
        std::eprintln!("conversions on {}", isa.backend());
        isa.run(Conversions);
    }
}

#[test]
#[ignore = "2^32 inputs: run in release with --ignored (CI does)"]
fn narrowing_exhaustive_on_every_instruction_set() {
    for isa in Isa::all_available().filter(|isa| !matches!(isa, Isa::Scalar)) {
        std::eprintln!("exhaustive narrowing on {}", isa.backend());
        narrow_exhaustive(|block| isa.run(Narrow(block)));
    }
}
