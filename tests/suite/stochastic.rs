//! Stochastic rounding: unbiased, deterministic, split-invariant, never moves representable
//! values — on every backend.

use crate::common::{HyperparamsExt, assert_same, backends_under_test};
use lion_optim::{
    Backend, Element, Hyperparams, Rounding, StepOptions, bf16, f16, reference,
    reference::random_bits,
};
use support::Rng;

fn sr(seed: u64, step: u64, offset: u64) -> StepOptions {
    StepOptions {
        rounding: Rounding::Stochastic { seed },
        step,
        offset,
        ..StepOptions::default()
    }
}

/// The mean over all 65536 random values of the stochastic rounding of `x`.
fn mean_over_all_random_values<T: Element>(x: f32) -> f64 {
    let sum: f64 = (0..=u16::MAX)
        .map(|r| f64::from(T::from_f32_stochastic(x, r).to_f32_exact()))
        .sum();
    sum / 65536.0
}

#[test]
fn the_rounding_is_exactly_unbiased_over_its_random_bits() {
    let mut rng = Rng(17);
    for _ in 0..2000 {
        // Magnitudes across the normal ranges of both types, and f16's subnormal range.
        let e = rng.below(40) as i32 - 30;
        let x = (rng.uniform() * 2.0 - 1.0) * 2f32.powi(e);
        let b = mean_over_all_random_values::<bf16>(x);
        assert_eq!(b, f64::from(x), "bf16, x = {x:e}: mean {b:e}");
        let h = mean_over_all_random_values::<f16>(x);
        // Exact in f16's normal range; in its subnormal range |x| is counted in steps of 2^-40.
        let bound = if x.abs() < 2f32.powi(-14) {
            2f64.powi(-40)
        } else {
            0.0
        };
        assert!(
            (h - f64::from(x)).abs() <= bound,
            "f16, x = {x:e}: mean {h:e}"
        );
    }
}

#[test]
fn representable_values_are_never_changed() {
    let randoms = [0u16, 1, 0x7fff, 0x8000, 0xfffe, 0xffff, 0x1234, 0xabcd];
    for bits in 0..=u16::MAX {
        let (b, h) = (bf16::from_bits(bits), f16::from_bits(bits));
        for r in randoms {
            if !b.is_nan() {
                assert_eq!(
                    bf16::from_f32_stochastic(b.to_f32(), r).to_bits(),
                    bits,
                    "bf16 {bits:#x}"
                );
            }
            if !h.is_nan() {
                assert_eq!(
                    f16::from_f32_stochastic(h.to_f32(), r).to_bits(),
                    bits,
                    "f16 {bits:#x}"
                );
            }
        }
    }
}

/// Through the kernels: 2^20 bf16 parameters at 300, each stepped by lr = 0.25 towards 299.75,
/// which lies between the bf16 values 298 and 300. Round-to-nearest leaves all at 300; stochastic
/// rounding must give 298 with probability 1/8, so the mean is 299.75 within a stated bound.
#[test]
fn the_mean_of_many_roundings_converges_to_the_value() {
    let n = 1 << 20;
    let hp = Hyperparams::default().lr(0.25);
    let grads = vec![1.0f32; n];
    for backend in backends_under_test() {
        let mut p = vec![bf16::from_f32(300.0); n];
        let mut m = vec![bf16::ZERO; n];
        backend
            .step_with(&mut p, &grads, &mut m, &hp, &sr(2024, 1, 0))
            .unwrap();
        let mean = p.iter().map(|x| f64::from(x.to_f32())).sum::<f64>() / n as f64;
        // Each value is 298 or 300: sd of the mean = 2 * sqrt(p (1 - p) / n) = 6.5e-4 for
        // p = 1/8. Six standard deviations: a false alarm about once in 5e8 runs (the bits are
        // deterministic, so this either always passes or always fails for this seed).
        let sd = 2.0 * (0.125f64 * 0.875 / n as f64).sqrt();
        assert!(
            (mean - 299.75).abs() < 6.0 * sd,
            "{backend}: mean {mean}, want 299.75 +- {}",
            6.0 * sd
        );
        assert!(
            p.iter()
                .all(|x| *x == bf16::from_f32(300.0) || *x == bf16::from_f32(298.0))
        );
        // The momentum 0.01 (from 0.0099999998f32) lies between two bf16 values too.
        let m_mean = m.iter().map(|x| f64::from(x.to_f32())).sum::<f64>() / n as f64;
        let want = f64::from(0.01f64 as f32);
        let spacing = f64::from(bf16::from_f32(0.01).to_f32()) * 2f64.powi(-7);
        assert!(
            (m_mean - want).abs() < 6.0 * spacing * 0.5 / (n as f64).sqrt(),
            "{backend}: {m_mean}"
        );
        // Round-to-nearest, for contrast: the update vanishes.
        let mut q = vec![bf16::from_f32(300.0); 1000];
        let (mut m, d) = (vec![bf16::ZERO; 1000], StepOptions::default());
        backend
            .step_with(&mut q, &grads[..1000], &mut m, &hp, &d)
            .unwrap();
        assert!(q.iter().all(|x| *x == bf16::from_f32(300.0)));
    }
}

#[test]
fn deterministic_and_keyed_by_seed_step_and_index() {
    assert_eq!(random_bits(1, 2, 3), random_bits(1, 2, 3));
    let hp = Hyperparams::default().lr(1e-3).weight_decay(0.1);
    let mut rng = Rng(5);
    let p0: Vec<bf16> = (0..5000)
        .map(|_| bf16::from_f32(rng.uniform() * 4.0 - 2.0))
        .collect();
    let g: Vec<f32> = (0..5000).map(|_| rng.uniform() - 0.5).collect();
    let run = |backend: Backend, opts: StepOptions| {
        let (mut p, mut m) = (p0.clone(), vec![f16::ZERO; 5000]);
        backend.step_with(&mut p, &g, &mut m, &hp, &opts).unwrap();
        (p, m)
    };
    for backend in backends_under_test() {
        let a = run(backend, sr(1, 7, 0));
        assert_eq!(a, run(backend, sr(1, 7, 0)), "{backend}: not deterministic");
        assert_ne!(a.0, run(backend, sr(2, 7, 0)).0, "{backend}: seed ignored");
        assert_ne!(a.0, run(backend, sr(1, 8, 0)).0, "{backend}: step ignored");
        assert_ne!(
            a.0,
            run(backend, sr(1, 7, 1)).0,
            "{backend}: offset ignored"
        );
    }
}

/// Stepping a tensor in pieces, each with its global offset, gives exactly the bytes of stepping
/// it whole — also when the pieces straddle a multiple of 2^32 (where the key changes).
#[test]
fn split_invariance() {
    let hp = Hyperparams::default().lr(3e-3).weight_decay(0.05);
    let n = 3000;
    let mut rng = Rng(77);
    let p0: Vec<bf16> = (0..n)
        .map(|_| bf16::from_f32(rng.uniform() * 2.0 - 1.0))
        .collect();
    let m0: Vec<f16> = (0..n)
        .map(|_| f16::from_f32(rng.uniform() * 0.02 - 0.01))
        .collect();
    let g: Vec<f32> = (0..n).map(|_| rng.uniform() - 0.5).collect();
    for base in [0u64, 12345, (1 << 32) - 1500, (7 << 32) - 3] {
        let whole_opts = sr(99, 4, base);
        let (mut pw, mut mw) = (p0.clone(), m0.clone());
        reference::step_with(&mut pw, &g, &mut mw, &hp, &whole_opts).unwrap();
        for backend in backends_under_test() {
            // Whole.
            let (mut p, mut m) = (p0.clone(), m0.clone());
            backend
                .step_with(&mut p, &g, &mut m, &hp, &whole_opts)
                .unwrap();
            assert_same(&p, &pw, &|| format!("{backend} whole, base {base}"));
            assert_same(&m, &mw, &|| format!("{backend} whole, base {base}"));
            // In random pieces, including pieces of 1 and pieces that are not lane multiples.
            let (mut p, mut m) = (p0.clone(), m0.clone());
            let mut start = 0;
            while start < n {
                let len = (1 + rng.below(700)).min(n - start);
                let opts = sr(99, 4, base + start as u64);
                let r = start..start + len;
                backend
                    .step_with(&mut p[r.clone()], &g[r.clone()], &mut m[r], &hp, &opts)
                    .unwrap();
                start += len;
            }
            assert_same(&p, &pw, &|| format!("{backend} pieces, base {base}"));
            assert_same(&m, &mw, &|| format!("{backend} pieces, base {base}"));
        }
    }
}

#[test]
fn params_and_momentum_draw_independent_bits() {
    // p' = 1 - 2^-9 lies halfway between the bf16 values 1 - 2^-8 and 1; m' = g = 1 + 2^-8
    // halfway between 1 and 1 + 2^-7 (beta2 = 0). Each rounds up with probability 1/2. With the
    // same random bits they would round up together half the time; independent, a quarter.
    let n = 1 << 16;
    let hp = Hyperparams {
        lr: 2f64.powi(-9),
        beta1: 0.0,
        beta2: 0.0,
        weight_decay: 0.0,
    };
    let g = vec![1.0 + 2f32.powi(-8); n];
    for backend in backends_under_test() {
        let (mut p, mut m) = (vec![bf16::ONE; n], vec![bf16::ZERO; n]);
        backend
            .step_with(&mut p, &g, &mut m, &hp, &sr(3, 0, 0))
            .unwrap();
        let p_up: Vec<bool> = p.iter().map(|v| *v == bf16::ONE).collect();
        let m_up: Vec<bool> = m.iter().map(|v| v.to_f32() > 1.0).collect();
        let frac = |k: usize| k as f64 / n as f64;
        let both = p_up.iter().zip(&m_up).filter(|(a, b)| **a && **b).count();
        assert!(
            (frac(p_up.iter().filter(|x| **x).count()) - 0.5).abs() < 0.02,
            "{backend}"
        );
        assert!(
            (frac(m_up.iter().filter(|x| **x).count()) - 0.5).abs() < 0.02,
            "{backend}"
        );
        assert!(
            (frac(both) - 0.25).abs() < 0.02,
            "{backend}: both rounded up {both} of {n}"
        );
    }
}
