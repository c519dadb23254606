//! Per-call options and the non-finite guard: semantics, validation, and `Lion`'s use of them.

use crate::common::{HyperparamsExt, available_backends, backends_under_test, same_bits};
use lion_optim::{
    Dtype, Element, Error, Group, GroupId, Hyperparams, Lion, Outcome, Rounding, StepOptions,
    Tensor, TensorSpec, WeightDecay, bf16, f16, reference,
};
use support::{Rng, all_combos};

#[test]
fn maximize_steps_along_plus_sign_c() {
    let hp = Hyperparams {
        lr: 0.5,
        beta1: 0.5,
        beta2: 0.5,
        weight_decay: 0.0,
    };
    let opts = StepOptions {
        maximize: true,
        ..StepOptions::default()
    };
    for backend in available_backends() {
        let (mut p, mut m) = ([1.0f32, 1.0, 1.0], [0.0f32, 0.0, -1.0]);
        backend
            .step_with(&mut p, &[2.0f32, -2.0, 1.0], &mut m, &hp, &opts)
            .unwrap();
        // c = 1, -1, 0: up, down, not at all. The momentum is the same as when minimizing.
        assert_eq!(p, [1.5, 0.5, 1.0], "{backend}");
        assert_eq!(m, [1.0, -1.0, 0.0], "{backend}");
    }
}

#[test]
fn unscaling_is_multiplying_the_gradient_first() {
    let hp = Hyperparams::default().lr(1e-2).weight_decay(0.1);
    let mut rng = Rng(9);
    let g: Vec<f32> = (0..333).map(|_| (rng.uniform() - 0.5) * 4096.0).collect();
    let p0: Vec<f32> = (0..333).map(|_| rng.uniform()).collect();
    for inv in [1.0 / 4096.0, 3.0, 1e-30] {
        let opts = StepOptions {
            grad_unscale: Some(inv),
            ..StepOptions::default()
        };
        let scaled: Vec<f32> = g.iter().map(|x| x * inv as f32).collect();
        let (mut pw, mut mw) = (p0.clone(), vec![0.0f32; 333]);
        reference::step(&mut pw, &scaled, &mut mw, &hp).unwrap();
        for backend in available_backends() {
            let (mut p, mut m) = (p0.clone(), vec![0.0f32; 333]);
            backend.step_with(&mut p, &g, &mut m, &hp, &opts).unwrap();
            assert_eq!(
                (p, m),
                (pw.clone(), mw.clone()),
                "{backend}, 1/scale = {inv}"
            );
        }
    }
}

#[test]
fn weight_decay_variants() {
    let hp = Hyperparams::default().lr(2e-3).weight_decay(0.5);
    let cases = [
        (WeightDecay::Paper, (1.0f64 - 2e-3 * 0.5) as f32),
        (
            WeightDecay::FullyDecoupled { max_lr: 4e-3 },
            (1.0f64 - 0.5 * 2e-3 / 4e-3) as f32,
        ),
    ];
    for (weight_decay, decay) in cases {
        let opts = StepOptions {
            weight_decay,
            ..StepOptions::default()
        };
        for backend in available_backends() {
            let (mut p, mut m) = ([3.0f32, -1.5], [0.0f32; 2]);
            backend
                .step_with(&mut p, &[0.0f32; 2], &mut m, &hp, &opts)
                .unwrap();
            assert_eq!(
                p,
                [3.0 * decay, -1.5 * decay],
                "{backend}, {weight_decay:?}"
            );
        }
    }
}

#[test]
fn invalid_options_are_refused_and_nothing_is_written() {
    let d = StepOptions::default();
    let bad = [
        (
            StepOptions {
                grad_unscale: Some(0.0),
                ..d
            },
            "grad_unscale",
        ),
        (
            StepOptions {
                grad_unscale: Some(-1.0),
                ..d
            },
            "grad_unscale",
        ),
        (
            StepOptions {
                grad_unscale: Some(f64::NAN),
                ..d
            },
            "grad_unscale",
        ),
        (
            StepOptions {
                grad_unscale: Some(f64::INFINITY),
                ..d
            },
            "grad_unscale",
        ),
        (
            StepOptions {
                grad_unscale: Some(1e-50),
                ..d
            },
            "grad_unscale",
        ), // 0 in f32
        (
            StepOptions {
                grad_unscale: Some(1e39),
                ..d
            },
            "grad_unscale",
        ), // inf in f32
        (
            StepOptions {
                weight_decay: WeightDecay::FullyDecoupled { max_lr: 0.0 },
                ..d
            },
            "max_lr",
        ),
        (
            StepOptions {
                weight_decay: WeightDecay::FullyDecoupled { max_lr: f64::NAN },
                ..d
            },
            "max_lr",
        ),
        (
            StepOptions {
                offset: u64::MAX - 2,
                ..d
            },
            "offset",
        ),
    ];
    let hp = Hyperparams::default();
    for (opts, field) in bad {
        for backend in available_backends() {
            let (mut p, mut m) = ([1.5f32; 5], [bf16::ONE; 5]);
            let e = backend.step_with(&mut p, &[1.0f32; 5], &mut m, &hp, &opts);
            assert!(
                matches!(e, Err(Error::InvalidHyperparameter { name, .. }) if name == field),
                "{backend} {opts:?}: {e:?}"
            );
            assert_eq!((p, m), ([1.5; 5], [bf16::ONE; 5]));
            let guarded = StepOptions {
                skip_non_finite: true,
                ..opts
            };
            for g in [[1.0f32; 5], [f32::NAN; 5]] {
                let e = backend.step_with(&mut p, &g, &mut m, &hp, &guarded);
                assert!(e.is_err(), "{backend}: guarded step accepted {opts:?}");
                assert_eq!((p, m), ([1.5; 5], [bf16::ONE; 5]));
            }
        }
        let e = reference::step_with(
            &mut [1.5f32; 5],
            &[1.0f32; 5],
            &mut [bf16::ONE; 5],
            &hp,
            &opts,
        );
        assert!(e.is_err());
    }
    // The decay factor itself must be in [0, 1]: an overflowing one, and one below 0 that would
    // flip the parameters' signs (lr * wd > 1), are refused with nothing written; exactly 0 is
    // allowed.
    let opts = StepOptions {
        weight_decay: WeightDecay::FullyDecoupled { max_lr: 1e-300 },
        ..d
    };
    let hp = Hyperparams {
        weight_decay: 1.0,
        ..hp
    };
    assert!(lion_optim::step_with(&mut [1.0f32], &[1.0f32], &mut [0.0f32], &hp, &opts).is_err());
    let cases = [
        (
            Hyperparams {
                lr: 1.0,
                weight_decay: 2.0,
                ..hp
            },
            d,
        ),
        (
            Hyperparams {
                lr: 0.5,
                weight_decay: 2.0000001,
                ..hp
            },
            d,
        ),
        (
            Hyperparams {
                lr: 1e-3,
                weight_decay: 0.2,
                ..hp
            },
            StepOptions {
                weight_decay: WeightDecay::FullyDecoupled { max_lr: 1e-4 },
                ..d
            },
        ),
    ];
    for (hp, opts) in cases {
        let (mut p, mut m) = ([1.0f32; 3], [0.25f32; 3]);
        let e = lion_optim::step_with(&mut p, &[1.0f32; 3], &mut m, &hp, &opts);
        assert!(
            matches!(
                e,
                Err(Error::InvalidHyperparameter {
                    name: "weight_decay",
                    ..
                })
            ),
            "{hp:?} {opts:?}: {e:?}"
        );
        assert_eq!((p, m), ([1.0; 3], [0.25; 3]));
        let e = reference::step_with(&mut p, &[1.0f32; 3], &mut m, &hp, &opts);
        assert!(e.is_err(), "reference: {hp:?} {opts:?}");
        if opts.weight_decay == WeightDecay::Paper {
            assert!(Lion::new(hp).is_err(), "Lion::new({hp:?})");
        }
    }
    // lr * wd == 1 exactly: the decay factor is 0, the parameters become -lr * sign(c).
    let hp = Hyperparams {
        lr: 0.5,
        weight_decay: 2.0,
        ..hp
    };
    let mut p = [1.0f32; 3];
    lion_optim::step_with(&mut p, &[1.0f32; 3], &mut [0.25f32; 3], &hp, &d).unwrap();
    assert_eq!(p, [-0.5; 3]);
}

fn finite_check_on<G: Element>() {
    let d = StepOptions::default();
    for backend in available_backends() {
        for len in (0..=70usize).chain([1000, 4099]) {
            let grads: Vec<G> = (0..len)
                .map(|i| G::from_f32_rounded(i as f32 * 0.5 - 7.0))
                .collect();
            assert!(backend.all_finite(&grads, &d), "{backend} len {len}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                for pos in [0, len / 2, len.saturating_sub(1)] {
                    if len == 0 {
                        continue;
                    }
                    let mut g = grads.clone();
                    g[pos] = G::from_f32_rounded(bad);
                    assert!(
                        !backend.all_finite(&g, &d),
                        "{backend}: {bad} at {pos} of {len} missed"
                    );
                }
            }
        }
        // Unscaling can overflow a finite gradient; the check sees what the step would see.
        let big = [G::from_f32_rounded(60000.0)];
        let up = StepOptions {
            grad_unscale: Some(1e35),
            ..d
        };
        assert!(
            !backend.all_finite(&big, &up),
            "{backend}: overflow after unscaling missed"
        );
        let down = StepOptions {
            grad_unscale: Some(1e-3),
            ..d
        };
        assert!(backend.all_finite(&big, &down), "{backend}");
    }
}

#[test]
fn all_finite_finds_every_non_finite_gradient() {
    finite_check_on::<f32>();
    finite_check_on::<f16>();
    finite_check_on::<bf16>();
}

fn guarded_on<P: Element, G: Element, M: Element>() {
    let hp = Hyperparams::default().lr(0.1);
    let d = StepOptions {
        skip_non_finite: true,
        ..StepOptions::default()
    };
    for backend in available_backends() {
        let p0: Vec<P> = (0..41).map(|i| P::from_f32_rounded(i as f32)).collect();
        let m0: Vec<M> = (0..41).map(|i| M::from_f32_rounded(-(i as f32))).collect();
        let mut g: Vec<G> = (0..41).map(|_| G::from_f32_rounded(1.0)).collect();
        g[40] = G::from_f32_rounded(f32::NAN);
        let (mut p, mut m) = (p0.clone(), m0.clone());
        assert_eq!(
            backend.step_with(&mut p, &g, &mut m, &hp, &d),
            Ok(Outcome::SkippedNonFinite)
        );
        let (mut pr, mut mr) = (p0.clone(), m0.clone());
        assert_eq!(
            reference::step_with(&mut pr, &g, &mut mr, &hp, &d),
            Ok(Outcome::SkippedNonFinite)
        );
        assert!(same_bits(&pr, &p0));
        assert!(same_bits(&mr, &m0));
        assert!(same_bits(&p, &p0), "{backend}: params written");
        assert!(same_bits(&m, &m0), "{backend}: momentum written");
        g[40] = G::from_f32_rounded(1.0);
        assert_eq!(
            backend.step_with(&mut p, &g, &mut m, &hp, &d),
            Ok(Outcome::Applied)
        );
        let (mut pw, mut mw) = (p0.clone(), m0.clone());
        reference::step(&mut pw, &g, &mut mw, &hp).unwrap();
        assert!(same_bits(&p, &pw), "{backend}");
        assert!(same_bits(&m, &mw), "{backend}");
    }
}

#[test]
fn a_guarded_step_writes_nothing_when_a_gradient_is_not_finite() {
    all_combos!(guarded_on, fn()).iter().for_each(|f| f());
}

#[test]
fn lion_skips_non_finite_steps_and_counts_them() {
    let mut opt = Lion::new(Hyperparams::default().lr(0.1)).unwrap();
    opt.add(TensorSpec::new(3)).unwrap();
    opt.add(TensorSpec::new(2).momentum(Dtype::Bf16)).unwrap();
    opt.update_groups(|_, g| {
        g.options.skip_non_finite = true;
        g.options.grad_unscale = Some(0.5);
    })
    .unwrap();
    let (mut a, mut b) = ([1.0f32; 3], [bf16::ONE; 2]);
    let before = opt.state_to_vec();
    // A NaN in the second tensor: nothing at all changes, not even the first tensor.
    let e = opt.step(&mut [
        Tensor::new(&mut a, &[1.0f32; 3]),
        Tensor::new(&mut b, &[f32::NAN, 1.0]),
    ]);
    assert_eq!(e, Ok(Outcome::SkippedNonFinite));
    assert_eq!((a, b), ([1.0; 3], [bf16::ONE; 2]));
    assert_eq!((opt.steps(), opt.skipped_steps()), (0, 1));
    // Everything but the skip counter (bytes 16..24) and the checksum (the last 4 bytes).
    let (after, end) = (opt.state_to_vec(), before.len() - 4);
    assert_eq!(
        (&after[..16], &after[24..end]),
        (&before[..16], &before[24..end])
    );
    let done = opt.step(&mut [
        Tensor::new(&mut a, &[1.0f32; 3]),
        Tensor::new(&mut b, &[1.0f32; 2]),
    ]);
    assert_eq!(done, Ok(Outcome::Applied));
    assert_eq!(a, [0.9; 3]);
    assert_eq!((opt.steps(), opt.skipped_steps()), (1, 1));
    // The skipped-step count survives a checkpoint.
    let mut other = Lion::new(Hyperparams::default()).unwrap();
    other.add(TensorSpec::new(3)).unwrap();
    other.add(TensorSpec::new(2).momentum(Dtype::Bf16)).unwrap();
    other.load_state(&opt.state_to_vec()).unwrap();
    assert_eq!(other.skipped_steps(), 1);
    assert!(
        other
            .group(GroupId::DEFAULT)
            .unwrap()
            .options
            .skip_non_finite
    );
    // Without the guard, a NaN gradient is a normal step (it poisons that momentum).
    opt.update_groups(|_, g| g.options.skip_non_finite = false)
        .unwrap();
    let done = opt.step(&mut [
        Tensor::new(&mut a, &[f32::NAN; 3]),
        Tensor::new(&mut b, &[1.0f32; 2]),
    ]);
    assert_eq!(done, Ok(Outcome::Applied));
}

#[test]
fn lion_with_stochastic_rounding_matches_step_with_its_streams_and_is_reproducible() {
    let run = || {
        let mut opt = Lion::new(Hyperparams::default().lr(1e-3)).unwrap();
        let group = *opt.group(GroupId::DEFAULT).unwrap();
        opt.set_group(
            GroupId::DEFAULT,
            Group {
                options: StepOptions {
                    rounding: Rounding::Stochastic { seed: 5 },
                    ..StepOptions::default()
                },
                ..group
            },
        )
        .unwrap();
        opt.add(TensorSpec::new(500).momentum(Dtype::Bf16)).unwrap();
        opt.add(TensorSpec::new(500).momentum(Dtype::Bf16)).unwrap();
        let (mut a, mut b) = (
            vec![bf16::from_f32(3.0); 500],
            vec![bf16::from_f32(3.0); 500],
        );
        for _ in 0..4 {
            let g = vec![1.0f32; 500];
            opt.step(&mut [Tensor::new(&mut a, &g), Tensor::new(&mut b, &g)])
                .unwrap();
        }
        (a, b)
    };
    let (a, b) = run();
    assert_eq!((a.clone(), b.clone()), run());
    // Identical tensors get different random streams (the seed is mixed with the tensor index).
    assert_ne!(a, b);
    // Without stochastic rounding 3 - 4e-3 rounds back to 3 every step (bf16 spacing at 3 is
    // 2^-6); with it, about 1/4 of each step's updates survive.
    assert!(a.iter().any(|x| *x < bf16::from_f32(3.0)));
}

#[test]
fn every_backend_agrees_on_options_with_f16_subnormals() {
    // Stochastic rounding into f16's subnormal range takes its own branch: compare backends
    // there.
    let hp = Hyperparams {
        lr: 1e-6,
        beta1: 0.9,
        beta2: 0.5,
        weight_decay: 0.0,
    };
    let mut rng = Rng(123);
    let p0: Vec<f16> = (0..999)
        .map(|_| f16::from_f32((rng.uniform() - 0.5) * 2e-4))
        .collect();
    let g: Vec<f32> = (0..999).map(|_| (rng.uniform() - 0.5) * 1e-5).collect();
    let opts = StepOptions {
        rounding: Rounding::Stochastic { seed: 8 },
        step: 2,
        ..StepOptions::default()
    };
    let (mut pw, mut mw) = (p0.clone(), vec![f16::ZERO; 999]);
    reference::step_with(&mut pw, &g, &mut mw, &hp, &opts).unwrap();
    let subnormal = |x: &f16| x.to_f32() != 0.0 && x.to_f32().abs() < 6.1e-5;
    assert!(mw.iter().any(subnormal) && pw.iter().any(subnormal));
    for backend in backends_under_test() {
        let (mut p, mut m) = (p0.clone(), vec![f16::ZERO; 999]);
        backend.step_with(&mut p, &g, &mut m, &hp, &opts).unwrap();
        assert_eq!((p, m), (pw.clone(), mw.clone()), "{backend}");
    }
}
