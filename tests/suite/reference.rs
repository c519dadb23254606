//! The specification itself: checked against the paper's formula computed independently in f64,
//! and against cases worked out by hand.

use crate::common::HyperparamsExt;
use lion_optim::{Element, Hyperparams, bf16, reference};
use support::Rng;

/// Lion as the paper writes it, in f64 from the f64 hyperparameters, with an exact sign.
fn paper_f64(p: f64, g: f64, m: f64, hp: &Hyperparams) -> (f64, f64, f64) {
    let decayed = p * (1.0 - hp.lr * hp.weight_decay);
    let c = hp.beta1 * m + (1.0 - hp.beta1) * g;
    let new_p = decayed - hp.lr * c.signum() * f64::from(u8::from(c != 0.0));
    let new_m = hp.beta2 * m + (1.0 - hp.beta2) * g;
    (new_p, new_m, c)
}

/// `reference::step` on a few elements: the parameters and momentum it leaves.
fn stepped<P: Element, M: Element, const N: usize>(
    mut p: [P; N],
    g: [f32; N],
    mut m: [M; N],
    hp: &Hyperparams,
) -> ([P; N], [M; N]) {
    reference::step(&mut p, &g, &mut m, hp).unwrap();
    (p, m)
}

#[test]
fn reference_is_the_paper_formula_within_f32_rounding() {
    let mut rng = Rng(42);
    let u = f64::from(f32::EPSILON) / 2.0; // unit roundoff of f32
    let mut checked = 0;
    for case in 0..20_000 {
        let hp = Hyperparams {
            lr: [1e-2, 3e-4, 0.25][case % 3],
            beta1: [0.9, 0.5, 0.0, 0.95][case % 4],
            beta2: [0.99, 0.0, 0.9][case % 3],
            weight_decay: [0.0, 0.1, 1.0][case % 3],
        };
        let scale = 10f32.powi(rng.below(7) as i32 - 3);
        let mut v = || (rng.uniform() * 2.0 - 1.0) * scale;
        let (p, g, m) = (v(), v(), v());
        let ([new_p], [new_m]) = stepped([p], [g], [m], &hp);
        let (want_p, want_m, c) = paper_f64(f64::from(p), f64::from(g), f64::from(m), &hp);
        let (p, g, m) = (f64::from(p).abs(), f64::from(g).abs(), f64::from(m).abs());

        // Each rounding (the constants, every product and sum) is within u of its own result.
        let bound_m = 4.0 * u * (m + g + want_m.abs());
        assert!(
            (f64::from(new_m) - want_m).abs() <= bound_m,
            "momentum {new_m} vs {want_m} ({hp:?})"
        );
        // The sign is exact unless c is within rounding distance of zero.
        if c.abs() > 4.0 * u * (m + g) {
            let bound_p = 4.0 * u * (p + hp.lr + want_p.abs());
            assert!(
                (f64::from(new_p) - want_p).abs() <= bound_p,
                "param {new_p} vs {want_p} ({hp:?}, c = {c})"
            );
            checked += 1;
        }
    }
    assert!(checked > 19_000, "too few unambiguous cases: {checked}");
}

#[test]
fn worked_example_by_hand() {
    // p = 1, g = 1, m = 0, lr = 0.1, wd = 0.1, default betas:
    // decay = f32(1 - 0.01) = f32(0.99); c = 0*0.9 + 1*f32(0.1) > 0 so p' = f32(0.99) - f32(0.1);
    // m' = 0*f32(0.99) + 1*f32(1 - 0.99), where 1 - 0.99 is computed in f64.
    let hp = Hyperparams::default().lr(0.1).weight_decay(0.1);
    let (p, m) = stepped([1.0f32], [1.0], [0.0f32], &hp);
    assert_eq!(p[0], 0.99f32 - 0.1f32);
    assert_eq!(p[0].to_bits(), 0x3f63_d70a); // 0.89
    assert_eq!(m[0], (1.0f64 - 0.99) as f32);
    assert_eq!(m[0].to_bits(), 0x3c23_d70a); // 0.010000000000000009 rounds to f32(0.01)
}

#[test]
fn zero_gradient_on_zero_momentum_only_decays() {
    let hp = Hyperparams::default().lr(0.01).weight_decay(0.5);
    let decay = (1.0 - 0.01 * 0.5) as f32;
    let p0 = [1.5f32, -2.0, 0.0, -0.0, 1e-30, f32::MAX];
    let (p, m) = stepped(p0, [0.0; 6], [0.0f32; 6], &hp);
    for (got, orig) in p.iter().zip(p0) {
        assert_eq!(got.to_bits(), (orig * decay).to_bits());
    }
    assert_eq!(m, [0.0; 6]);
}

#[test]
fn betas_zero_make_c_the_gradient() {
    let hp = Hyperparams {
        lr: 0.125,
        beta1: 0.0,
        beta2: 0.0,
        weight_decay: 0.0,
    };
    let g = [3.0f32, -1e-20, 2.5, -7.0];
    let (p, m) = stepped([1.0f32; 4], g, [-5.0f32, 9.0, -1e10, 0.5], &hp); // old m is ignored
    assert_eq!(p, [0.875, 1.125, 0.875, 1.125]);
    assert_eq!(m, g);
}

#[test]
fn exact_cancellation_of_c_does_not_move_the_parameter() {
    // beta1 = 0.5: m = -g makes c = 0.5*m + 0.5*g exactly zero.
    let hp = Hyperparams {
        lr: 0.5,
        beta1: 0.5,
        beta2: 0.5,
        weight_decay: 0.0,
    };
    let (p, _) = stepped([1.0f32, 1.0], [0.75, 0.5], [-0.75f32, 0.75], &hp);
    assert_eq!(p, [1.0, 0.5]);
}

#[test]
fn constants_are_rounded_from_f64_and_that_decides_cancellations() {
    // With beta1 = 0.9, find g, m with m*f32(0.9) + g*f32(1 - 0.9) == 0 exactly in f32 while
    // the naive constant 1.0f32 - 0.9f32 would not cancel: the reference must see c == 0.
    let hp = Hyperparams {
        lr: 0.5,
        beta1: 0.9,
        beta2: 0.9,
        weight_decay: 0.0,
    };
    let (b1, good, naive) = (0.9f32, (1.0f64 - 0.9) as f32, 1.0f32 - 0.9f32);
    assert_ne!(good, naive);
    let mut found = 0;
    for k in 1..100_000u32 {
        let g = k as f32 * 0.001;
        let m = -(g * good) / b1;
        for cand in [
            m,
            f32::from_bits(m.to_bits() + 1),
            f32::from_bits(m.to_bits() - 1),
        ] {
            if cand * b1 + g * good == 0.0 && cand * b1 + g * naive != 0.0 {
                let (p, _) = stepped([2.0f32], [g], [cand], &hp);
                assert_eq!(p[0], 2.0, "g = {g}, m = {cand}: c must be exactly 0");
                found += 1;
            }
        }
    }
    assert!(found > 100, "only {found} cancelling pairs found");
}

#[test]
fn nan_gradient_does_not_move_the_parameter_but_poisons_momentum() {
    let hp = Hyperparams::default().lr(0.5).weight_decay(0.0);
    let (p, m) = stepped([1.0f32], [f32::NAN], [0.25f32], &hp);
    assert_eq!(p[0], 1.0);
    assert!(m[0].is_nan());
}

#[test]
fn infinite_gradient_moves_by_exactly_lr() {
    let hp = Hyperparams::default().lr(0.5).weight_decay(0.0);
    let (p, m) = stepped(
        [1.0f32; 2],
        [f32::INFINITY, f32::NEG_INFINITY],
        [0.0f32; 2],
        &hp,
    );
    assert_eq!(p, [0.5, 1.5]);
    assert_eq!(m, [f32::INFINITY, f32::NEG_INFINITY]);
}

#[test]
fn bf16_stores_round_once_to_nearest_even() {
    // p = 1 - 2^-9 would be a bf16 tie: 1 - 2^-8 and 1 are the neighbours; 1 is even.
    let hp = Hyperparams {
        lr: 1.0 / 512.0,
        beta1: 0.0,
        beta2: 0.0,
        weight_decay: 0.0,
    };
    let (p, m) = stepped([bf16::ONE], [1.0], [bf16::ZERO], &hp);
    assert_eq!(p[0], bf16::ONE); // the update vanished: this is what stochastic rounding fixes
    let hp = hp.lr(3.0 / 512.0);
    let (p, _) = stepped(p, [1.0], m, &hp);
    assert_eq!(p[0].to_f32(), 1.0 - 1.0 / 128.0); // 1 - 3*2^-9 rounds to 1 - 2^-7 (even)
}
