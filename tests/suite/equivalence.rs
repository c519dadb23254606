//! Every available backend is bit-identical to `reference::step_with`, for all 27 dtype
//! combinations.

use crate::common::{ComboCheck, HyperparamsExt, assert_same, backends_under_test, check_combo};
use lion_optim::{
    Backend, Cautious, Element, Hyperparams, Rounding, StepOptions, WeightDecay, bf16, f16,
    reference,
};
use proptest::prelude::*;
use support::{Rng, SPECIAL_F32, all_combos, plant_cancellations, same, value};

#[test]
fn every_backend_matches_the_reference_on_the_harness() {
    for backend in backends_under_test() {
        eprintln!("harness: backend {backend}");
        for (i, combo) in all_combos!(check_combo, ComboCheck).iter().enumerate() {
            combo(backend, 0x5eed + i as u64);
        }
    }
}

#[test]
fn step_takes_the_detected_backend_and_matches_it() {
    let backend = Backend::detect();
    assert!(backend.is_available());
    let hp = Hyperparams::default().lr(1e-3).weight_decay(0.1);
    let mut rng = Rng(7);
    let g: Vec<bf16> = (0..1001).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
    let p: Vec<f32> = (0..1001).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
    let m: Vec<f16> = (0..1001).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
    let (mut p1, mut m1, mut p2, mut m2) = (p.clone(), m.clone(), p, m);
    lion_optim::step(&mut p1, &g, &mut m1, &hp).unwrap();
    let done = backend
        .step_with(&mut p2, &g, &mut m2, &hp, &StepOptions::default())
        .unwrap();
    assert_eq!(done, lion_optim::Outcome::Applied);
    assert_same(&p1, &p2, &|| "params".into());
    assert_same(&m1, &m2, &|| "momentum".into());
}

/// Any valid hyperparameters: lr over many magnitudes (and 0), betas anywhere in [0, 1).
fn any_hyperparams() -> impl Strategy<Value = Hyperparams> {
    let lr = prop_oneof![
        Just(0.0),
        (-12i32..2, 1.0f64..10.0).prop_map(|(e, m)| m * 10f64.powi(e))
    ];
    let beta = prop_oneof![Just(0.0), Just(0.5), Just(0.9), Just(0.99), 0.0f64..1.0];
    let wd = prop_oneof![
        Just(0.0),
        (-6i32..3, 1.0f64..10.0).prop_map(|(e, m)| m * 10f64.powi(e))
    ];
    (lr, beta.clone(), beta, wd).prop_map(|(lr, beta1, beta2, weight_decay)| Hyperparams {
        lr,
        beta1,
        beta2,
        weight_decay,
    })
}

/// `hp` with a valid decay factor under `opts`: where the decay per step (`lr * weight_decay`,
/// or `weight_decay * lr / max_lr`) is over 1 — refused, it would flip the parameters' signs —
/// the weight decay is scaled to make it about 0.5.
fn decay_in_range(hp: Hyperparams, opts: &StepOptions) -> Hyperparams {
    let per_step = match opts.weight_decay {
        WeightDecay::Paper => hp.lr * hp.weight_decay,
        WeightDecay::FullyDecoupled { max_lr } => hp.weight_decay * hp.lr / max_lr,
    };
    if per_step <= 1.0 {
        return hp;
    }
    Hyperparams {
        weight_decay: hp.weight_decay / per_step * 0.5,
        ..hp
    }
}

/// Any valid options: each feature on or off, stochastic rounding at any step and offset
/// (offsets near a multiple of 2^32 included).
fn any_options() -> impl Strategy<Value = StepOptions> {
    let unscale = prop_oneof![
        Just(None),
        (-20i32..20).prop_map(|e| Some(2f64.powi(e))),
        (0.001f64..100.0).prop_map(Some)
    ];
    let decay = prop_oneof![
        Just(WeightDecay::Paper),
        (1e-4f64..1.0).prop_map(|max_lr| WeightDecay::FullyDecoupled { max_lr })
    ];
    let rounding = prop_oneof![
        Just(Rounding::Nearest),
        any::<u64>().prop_map(|seed| Rounding::Stochastic { seed })
    ];
    let offset = prop_oneof![
        0u64..1000,
        ((1u64 << 32) - 300..(1u64 << 32) + 10),
        any::<u64>().prop_map(|x| x >> 2)
    ];
    // A shard's count and size: valid for any slice of up to 2^20 elements at its offset.
    let cautious = prop_oneof![
        Just(None),
        Just(Some((0, 0))),
        (0u64..1 << 20, 0u64..1 << 40).prop_map(Some)
    ];
    (
        any::<bool>(),
        unscale,
        decay,
        rounding,
        any::<u64>(),
        offset,
        cautious,
    )
        .prop_map(
            |(maximize, grad_unscale, weight_decay, rounding, step, offset, cautious)| {
                let cautious = match cautious {
                    None => Cautious::Off,
                    Some((0, 0)) => Cautious::Whole,
                    Some((agreeing, extra)) => Cautious::Shard {
                        agreeing,
                        numel: offset.saturating_add(1 << 20).saturating_add(extra),
                    },
                };
                StepOptions {
                    maximize,
                    grad_unscale,
                    weight_decay,
                    rounding,
                    step,
                    offset,
                    cautious,
                    skip_non_finite: false,
                }
            },
        )
}

/// A buffer of raw bits for a type of `width` bytes: random bit patterns and special values.
fn bits_vec(len: usize) -> impl Strategy<Value = Vec<u32>> {
    let special = prop::sample::select(&SPECIAL_F32[..]).prop_map(f32::to_bits);
    let normal = (-4.0f32..4.0).prop_map(f32::to_bits);
    prop::collection::vec(prop_oneof![special, normal, any::<u32>()], len)
}

fn from_bits<T: Element>(b: &[u32]) -> Vec<T> {
    b.iter()
        .map(|&x| {
            if size_of::<T>() == 4 {
                bytemuck::cast(x)
            } else if x & 1 == 0 {
                // Half the time a 16-bit pattern (every class), half the time a rounded f32.
                bytemuck::pod_read_unaligned(&x.to_le_bytes()[2..])
            } else {
                T::from_f32_rounded(f32::from_bits(x))
            }
        })
        .collect()
}

/// The type of [`prop_combo`]'s instances, for `all_combos!`.
type PropCombo = fn(
    Backend,
    &Hyperparams,
    &StepOptions,
    &[u32],
    &[u32],
    &[u32],
    usize,
) -> Result<(), TestCaseError>;

fn prop_combo<P: Element, G: Element, M: Element>(
    backend: Backend,
    hp: &Hyperparams,
    opts: &StepOptions,
    p: &[u32],
    g: &[u32],
    m: &[u32],
    offset: usize,
) -> Result<(), TestCaseError> {
    let (p, g, mut m): (Vec<P>, Vec<G>, Vec<M>) = (from_bits(p), from_bits(g), from_bits(m));
    plant_cancellations(&g, &mut m, hp, &mut Rng(p.len() as u64 + 1));
    let r = offset.min(p.len())..p.len();
    let (mut p1, mut m1, mut p2, mut m2) = (p.clone(), m.clone(), p, m);
    let g = &g[r.clone()];
    let got = backend
        .step_with(&mut p1[r.clone()], g, &mut m1[r.clone()], hp, opts)
        .unwrap();
    let want = reference::step_with(&mut p2[r.clone()], g, &mut m2[r], hp, opts).unwrap();
    prop_assert_eq!(got, want);
    for i in 0..p1.len() {
        prop_assert!(same(p1[i], p2[i]), "param {i}: {:?} vs {:?}", p1[i], p2[i]);
        prop_assert!(
            same(m1[i], m2[i]),
            "momentum {i}: {:?} vs {:?}",
            m1[i],
            m2[i]
        );
    }
    Ok(())
}

/// Longest random buffer. Under Miri (where generating each value costs as much as a step on
/// thousands), short buffers that still hold a few chunks of the portable backend.
const MAX_LEN: usize = if cfg!(miri) { 40 } else { 300 };

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 3 } else { 2048 },
        ..ProptestConfig::default()
    })]

    /// Random valid hyperparameters and options, any of the 27 dtype combinations, random
    /// lengths and offsets, random values: every available backend equals the reference.
    #[test]
    fn all_combos_random_hyperparams(
        combo in 0usize..27,
        hp in any_hyperparams(),
        opts in any_options(),
        data in (0usize..MAX_LEN).prop_flat_map(|n| (bits_vec(n), bits_vec(n), bits_vec(n))),
        offset in 0usize..9,
    ) {
        let (p, g, m) = &data;
        let hp = decay_in_range(hp, &opts);
        for backend in backends_under_test() {
            all_combos!(prop_combo, PropCombo)[combo](backend, &hp, &opts, p, g, m, offset)?;
        }
    }
}

/// On x86 hardware every NaN result keeps exactly the reference's bits for all-bf16 slices
/// (where the AVX2 backend stores pairs of chunks without a NaN fix-up: the NaNs Lion's arithmetic
/// makes from bf16 values have zero low halves). One NaN source per element, so which NaN
/// propagates is not up to the compiler's operand order: quiet and signalling NaNs of both
/// signs in each buffer, and infinities whose products cancel into the default NaN; rounding
/// to nearest and stochastically.
#[test]
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn bf16_nan_results_are_bit_identical_on_x86() {
    let nans: Vec<bf16> = [
        0x7fc0u16,
        0xffc0,
        0x7f81,
        0xff81,
        0x7fa5,
        0xffff,
        0x7fff,
        0x7f80 | 0x3f,
    ]
    .into_iter()
    .map(bf16::from_bits)
    .collect();
    let hp = Hyperparams::default().lr(1e-3).weight_decay(0.1);
    let n = 301;
    let mut rng = Rng(0x0dd);
    let normal = |rng: &mut Rng| bf16::from_f32(rng.uniform() * 4.0 - 2.0);
    let p0: Vec<bf16> = (0..n).map(|_| normal(&mut rng)).collect();
    let (mut g0, mut m0) = (p0.clone(), p0.clone());
    g0.reverse();
    m0.rotate_left(7);
    let mut p0 = p0;
    for i in 0..n {
        let nan = nans[i % nans.len()];
        match i % 4 {
            0 => p0[i] = nan,
            1 => g0[i] = nan,
            2 => m0[i] = nan,
            _ => (m0[i], g0[i]) = (bf16::INFINITY, bf16::NEG_INFINITY),
        }
    }
    let stochastic = StepOptions {
        rounding: Rounding::Stochastic { seed: 11 },
        step: 2,
        ..StepOptions::default()
    };
    for (backend, opts) in backends_under_test()
        .into_iter()
        .flat_map(|b| [(b, StepOptions::default()), (b, stochastic)])
    {
        // Sub-slices of one allocation each: every 2-byte position within a 64-byte line, so
        // the single elements before the AVX2 kernel's first aligned block take every count.
        for offset in 0..32 {
            let (mut p, mut m) = (p0.clone(), m0.clone());
            let (mut pr, mut mr) = (p0.clone(), m0.clone());
            let (p, m) = (&mut p[offset..], &mut m[offset..]);
            let (pr, mr) = (&mut pr[offset..], &mut mr[offset..]);
            let g = &g0[offset..];
            backend.step_with(p, g, m, &hp, &opts).unwrap();
            reference::step_with(pr, g, mr, &hp, &opts).unwrap();
            let bits = |v: &[bf16]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let ctx = format!("backend {backend}, {:?}, offset {offset}", opts.rounding);
            assert_eq!(bits(p), bits(pr), "{ctx}: params");
            assert_eq!(bits(m), bits(mr), "{ctx}: momentum");
        }
    }
}
