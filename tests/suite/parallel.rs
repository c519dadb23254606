//! `par_step_with` (feature `rayon`) is bit-identical to `step_with` on every backend and dtype
//! combination.

use crate::common::{HyperparamsExt, assert_same, available_backends, backends_under_test};
use lion_optim::{Backend, Element, Hyperparams, Outcome, PAR_BLOCK, PAR_THRESHOLD, StepOptions};
use support::{Rng, SPECIAL_F32, all_combos, value};

fn check<P: Element, G: Element, M: Element>(backend: Backend, len: usize) {
    let (specials, mut rng) = (&SPECIAL_F32, Rng(len as u64 * 31 + 7));
    let hp = Hyperparams::default().lr(3e-3).weight_decay(0.05);
    let p: Vec<P> = (0..len).map(|_| value(&mut rng, specials)).collect();
    let g: Vec<G> = (0..len).map(|_| value(&mut rng, specials)).collect();
    let m: Vec<M> = (0..len).map(|_| value(&mut rng, specials)).collect();
    let (mut p1, mut m1, mut p2, mut m2) = (p.clone(), m.clone(), p, m);
    let d = StepOptions::default();
    let done = backend
        .par_step_with(&mut p1, &g, &mut m1, &hp, &d)
        .unwrap();
    assert_eq!(done, Outcome::Applied);
    backend.step_with(&mut p2, &g, &mut m2, &hp, &d).unwrap();
    let ctx = || {
        format!(
            "{backend}, {:?}/{:?}/{:?}, len {len}",
            P::DTYPE,
            G::DTYPE,
            M::DTYPE
        )
    };
    assert_same(&p1, &p2, &ctx);
    assert_same(&m1, &m2, &ctx);
}

#[test]
fn par_step_with_is_bit_identical_to_step_with() {
    // Below the threshold, exactly at it, and several blocks plus a ragged tail above it.
    let lens = [
        PAR_THRESHOLD - 1,
        PAR_THRESHOLD,
        3 * PAR_THRESHOLD + PAR_BLOCK / 2 + 13,
    ];
    for backend in available_backends() {
        for combo in all_combos!(check, fn(Backend, usize)) {
            for len in lens {
                combo(backend, len);
            }
        }
    }
}

#[test]
fn par_step_with_validates_before_writing() {
    let n = PAR_THRESHOLD + 5;
    let (mut p, g, mut m) = (vec![1.0f32; n], vec![1.0f32; n - 1], vec![0.0f32; n]);
    let (hp, d) = (Hyperparams::default(), StepOptions::default());
    assert!(lion_optim::par_step_with(&mut p, &g, &mut m, &hp, &d).is_err());
    assert!(p.iter().all(|&x| x == 1.0) && m.iter().all(|&x| x == 0.0));
}

#[test]
fn a_parallel_step_skips_a_non_finite_gradient_in_any_block() {
    let n = 3 * PAR_THRESHOLD + 7;
    let skip = StepOptions {
        skip_non_finite: true,
        ..StepOptions::default()
    };
    let hp = Hyperparams::default();
    for at in [0, PAR_BLOCK - 1, 2 * PAR_THRESHOLD + 1, n - 1] {
        let mut g = vec![0.5f32; n];
        g[at] = f32::INFINITY;
        let (mut p, mut m) = (vec![1.0f32; n], vec![0.0f32; n]);
        let done = lion_optim::par_step_with(&mut p, &g, &mut m, &hp, &skip).unwrap();
        assert_eq!(done, Outcome::SkippedNonFinite, "{at}");
        assert!(p.iter().all(|&x| x == 1.0) && m.iter().all(|&x| x == 0.0));
    }
}

#[test]
fn par_step_with_stochastic_rounding_is_bit_identical_to_step_with() {
    use lion_optim::{Rounding, bf16};
    let n = 2 * PAR_THRESHOLD + 77;
    let hp = Hyperparams::default().lr(1e-3).weight_decay(0.1);
    let mut rng = Rng(4);
    let p0: Vec<bf16> = (0..n).map(|_| bf16::from_f32(rng.uniform())).collect();
    let g: Vec<f32> = (0..n).map(|_| rng.uniform() - 0.5).collect();
    for offset in [0, (1u64 << 32) - (PAR_BLOCK as u64) - 3] {
        let opts = StepOptions {
            rounding: Rounding::Stochastic { seed: 6 },
            step: 9,
            offset,
            grad_unscale: Some(0.5),
            ..StepOptions::default()
        };
        for backend in backends_under_test() {
            let (mut p1, mut m1, mut p2, mut m2) = (
                p0.clone(),
                vec![bf16::ZERO; n],
                p0.clone(),
                vec![bf16::ZERO; n],
            );
            backend
                .par_step_with(&mut p1, &g, &mut m1, &hp, &opts)
                .unwrap();
            backend.step_with(&mut p2, &g, &mut m2, &hp, &opts).unwrap();
            assert_same(&p1, &p2, &|| format!("{backend}, offset {offset}"));
            assert_same(&m1, &m2, &|| format!("{backend}, offset {offset}"));
        }
    }
}
