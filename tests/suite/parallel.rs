//! `par_step` (feature `rayon`) is bit-identical to `step` on every path and dtype combination.

use crate::common::{Rng, assert_same, special_f32, value};
use lion_optim::{Element, Hyperparams, PAR_BLOCK, PAR_THRESHOLD, Path};

fn check<P: Element, G: Element, M: Element>(path: Path, len: usize) {
    let (specials, mut rng) = (special_f32(), Rng(len as u64 * 31 + 7));
    let hp = Hyperparams {
        lr: 3e-3,
        weight_decay: 0.05,
        ..Hyperparams::default()
    };
    let p: Vec<P> = (0..len).map(|_| value(&mut rng, &specials)).collect();
    let g: Vec<G> = (0..len).map(|_| value(&mut rng, &specials)).collect();
    let m: Vec<M> = (0..len).map(|_| value(&mut rng, &specials)).collect();
    let (mut p1, mut m1, mut p2, mut m2) = (p.clone(), m.clone(), p, m);
    path.par_step(&mut p1, &g, &mut m1, &hp).unwrap();
    path.step(&mut p2, &g, &mut m2, &hp).unwrap();
    let ctx = || {
        format!(
            "{path}, {:?}/{:?}/{:?}, len {len}",
            P::DTYPE,
            G::DTYPE,
            M::DTYPE
        )
    };
    assert_same(&p1, &p2, &ctx);
    assert_same(&m1, &m2, &ctx);
}

#[test]
fn par_step_is_bit_identical_to_step() {
    // Below the threshold, exactly at it, and several blocks plus a ragged tail above it.
    let lens = [
        PAR_THRESHOLD - 1,
        PAR_THRESHOLD,
        3 * PAR_THRESHOLD + PAR_BLOCK / 2 + 13,
    ];
    for path in crate::common::available_paths() {
        for combo in all_combos!(check) {
            for len in lens {
                combo(path, len);
            }
        }
    }
}

#[test]
fn par_step_validates_before_writing() {
    let n = PAR_THRESHOLD + 5;
    let (mut p, g, mut m) = (vec![1.0f32; n], vec![1.0f32; n - 1], vec![0.0f32; n]);
    assert!(lion_optim::par_step(&mut p, &g, &mut m, &Hyperparams::default()).is_err());
    assert!(p.iter().all(|&x| x == 1.0) && m.iter().all(|&x| x == 0.0));
}

#[test]
fn par_step_with_stochastic_rounding_is_bit_identical_to_step_with() {
    use lion_optim::{Rounding, StepOptions, bf16};
    let n = 2 * PAR_THRESHOLD + 77;
    let hp = Hyperparams {
        lr: 1e-3,
        weight_decay: 0.1,
        ..Hyperparams::default()
    };
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
        for path in crate::common::paths_under_test() {
            let (mut p1, mut m1, mut p2, mut m2) = (
                p0.clone(),
                vec![bf16::ZERO; n],
                p0.clone(),
                vec![bf16::ZERO; n],
            );
            path.par_step_with(&mut p1, &g, &mut m1, &hp, &opts)
                .unwrap();
            path.step_with(&mut p2, &g, &mut m2, &hp, &opts).unwrap();
            assert_same(&p1, &p2, &|| format!("{path}, offset {offset}"));
            assert_same(&m1, &m2, &|| format!("{path}, offset {offset}"));
        }
    }
}
