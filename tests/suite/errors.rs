//! Bad input returns an `Err` that says what is wrong, and leaves every buffer bit-identical.

use crate::common::{HyperparamsExt, available_backends, same_bits};
use lion_optim::{Backend, Element, Error, Hyperparams, StepOptions, bf16, f16, reference};
use support::{all_combos, bits};

type StepFn<P, G, M> = fn(&mut [P], &[G], &mut [M], &Hyperparams) -> Result<(), Error>;
type Entry<P, G, M> = (
    String,
    Box<dyn Fn(&mut [P], &[G], &mut [M], &Hyperparams) -> Result<(), Error>>,
);

/// Every way to call a step: each available backend, `step`, `step_with`, `reference::step`,
/// `reference::step_with`, and the same with `skip_non_finite` (which checks the gradients
/// only after the input was validated).
fn entry_points<P: Element, G: Element, M: Element>() -> Vec<Entry<P, G, M>> {
    let mut v: Vec<Entry<P, G, M>> = vec![
        ("step".into(), Box::new(lion_optim::step as StepFn<P, G, M>)),
        (
            "reference::step".into(),
            Box::new(reference::step as StepFn<P, G, M>),
        ),
    ];
    let d = StepOptions::default();
    let skip = StepOptions {
        skip_non_finite: true,
        ..d
    };
    for opts in [d, skip] {
        let tag = if opts.skip_non_finite { ", skip" } else { "" };
        v.push((
            format!("step_with{tag}"),
            Box::new(move |p, g, m, hp| lion_optim::step_with(p, g, m, hp, &opts).map(|_| ())),
        ));
        v.push((
            format!("reference::step_with{tag}"),
            Box::new(move |p, g, m, hp| reference::step_with(p, g, m, hp, &opts).map(|_| ())),
        ));
        for backend in available_backends() {
            v.push((
                format!("{backend}{tag}"),
                Box::new(move |p, g, m, hp| backend.step_with(p, g, m, hp, &opts).map(|_| ())),
            ));
        }
    }
    v
}

fn bad_hyperparams() -> Vec<(Hyperparams, &'static str)> {
    let d = Hyperparams::default();
    vec![
        (d.lr(-1e-4), "lr"),
        (d.lr(-0.0 - f64::MIN_POSITIVE), "lr"),
        (d.lr(f64::NAN), "lr"),
        (d.lr(f64::INFINITY), "lr"),
        (d.lr(1e300), "lr"),
        (d.beta1(1.0), "beta1"),
        (d.beta1(-1e-9), "beta1"),
        (d.beta1(f64::NAN), "beta1"),
        (d.beta2(1.0), "beta2"),
        (d.beta2(2.0), "beta2"),
        (d.beta2(f64::NAN), "beta2"),
        (d.weight_decay(-0.1), "weight_decay"),
        (d.weight_decay(f64::NAN), "weight_decay"),
        (d.weight_decay(f64::NEG_INFINITY), "weight_decay"),
        (d.lr(1e20).weight_decay(1e20), "weight_decay"),
    ]
}

fn check_combo<P: Element, G: Element, M: Element>() {
    let n = 37;
    let p0: Vec<P> = (0..n)
        .map(|i| P::from_f32_rounded(i as f32 * 0.25 - 3.0))
        .collect();
    let g0: Vec<G> = (0..n)
        .map(|i| G::from_f32_rounded(1.0 - i as f32 * 0.125))
        .collect();
    let m0: Vec<M> = (0..n)
        .map(|i| M::from_f32_rounded(i as f32 * 0.5 - 9.0))
        .collect();
    let untouched = |p: &[P], m: &[M], what: &str| {
        assert!(same_bits(p, &p0), "{what}: params changed");
        assert!(same_bits(m, &m0), "{what}: momentum changed");
    };
    for (name, f) in entry_points::<P, G, M>() {
        for (hp, field) in bad_hyperparams() {
            let (mut p, mut m) = (p0.clone(), m0.clone());
            match f(&mut p, &g0, &mut m, &hp) {
                Err(Error::InvalidHyperparameter { name: got, .. }) => {
                    assert_eq!(got, field, "{name}, {hp:?}")
                }
                other => panic!("{name}, {hp:?}: expected an error for {field}, got {other:?}"),
            }
            untouched(&p, &m, &name);
        }
        let hp = Hyperparams::default();
        for (gl, ml, what) in [
            (n - 1, n, "grads"),
            (n + 1, n, "grads"),
            (n, n - 1, "momentum"),
            (n, 0, "momentum"),
        ] {
            let (mut p, mut m) = (p0.clone(), m0.clone());
            let g_long: Vec<G> = g0.iter().copied().cycle().take(gl).collect();
            let mut m_short: Vec<M> = m.iter().copied().cycle().take(ml).collect();
            let r = f(&mut p, &g_long, &mut m_short, &hp);
            assert_eq!(
                r,
                Err(Error::LengthMismatch {
                    what,
                    expected: n,
                    found: if what == "grads" { gl } else { ml }
                }),
                "{name}"
            );
            untouched(&p, &m, &name);
            m.copy_from_slice(&m0);
            assert!(
                m_short
                    .iter()
                    .zip(m0.iter().cycle())
                    .all(|(a, b)| bits(*a) == bits(*b)),
                "{name}: momentum changed"
            );
        }
    }
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    all_combos!(check_combo, fn()).iter().for_each(|f| f());
}

#[test]
fn messages_name_the_problem() {
    let hp = Hyperparams::default().beta2(1.0);
    let e = lion_optim::step(&mut [0.0f32], &[0.0f32], &mut [0.0f32], &hp).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid hyperparameter beta2 = 1: must be in [0, 1)"
    );
    let e = lion_optim::step(
        &mut [0.0f32; 2],
        &[0.0f32; 2],
        &mut [0.0f32],
        &Hyperparams::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "momentum has 1 elements, expected 2 (the length of params)"
    );
    let as_dyn: &dyn std::error::Error = &e;
    assert!(as_dyn.source().is_none());
}

#[test]
fn zero_length_is_fine_and_lengths_are_checked_before_hyperparameters_are_used() {
    let hp = Hyperparams::default();
    lion_optim::step::<f32, bf16, f16>(&mut [], &[], &mut [], &hp).unwrap();
    for backend in Backend::ALL.iter().filter(|b| b.is_available()) {
        backend
            .step_with::<bf16, f32, f16>(&mut [], &[], &mut [], &hp, &StepOptions::default())
            .unwrap();
    }
}
