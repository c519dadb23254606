//! Proofs that the vector quantizers are `reference::q8_quantize` and
//! `reference::q8_quantize_stochastic`, and that the block kernel is `reference::q8_lion`, on
//! every instruction set.

/// The quantizers against the reference.
mod quantizers {
    use std::vec::Vec;

    use crate::arch::{Isa, Op};
    use crate::dtype::q8::{Q8_BLOCK, Q8_MAP, THRESHOLDS};
    use crate::kernel::q8::{nearest, stochastic};
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
                s.q8_nearest(&x, 1.0, &mut got); // (times 1: exact)
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
mod step {
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
