//! The no_std checks: Lion steps through `lion_optim` built with `--no-default-features` (no
//! std, no alloc), checked against values computed by hand. [`run`] runs
//!   * in this crate's binary (src/main.rs), a `#![no_std] #![no_main]` x86_64 Linux binary
//!     with its own panic handler and no libc (ci/nostd.sh): there the AVX2 / AVX-512 backends
//!     are found by the crate's no_std CPUID probe;
//!   * in the Cortex-M4F firmware under qemu-system-arm (ci/mcu, ci/thumbv7em.sh), which
//!     depends on this library.
//!
//! It must stay free of std and alloc. A failed check panics, and the binary's panic handler
//! makes the run fail.
//!
//! Every check runs on every [`Entry`] (every available `Backend`, `lion_optim::step` and
//! `reference::step`), over misaligned sub-slices (start 0, 1, 2) of 37 elements: more than two
//! 16-lane chunks plus a tail, so the vector body and the tail handling both run.
#![no_std]
#![deny(missing_docs)]

use lion_optim::{
    bf16, reference, Backend, Cautious, Element, Error, Group, GroupId, Hyperparams, Lion,
    MomentumRef, Outcome, SliceMut, StepOptions, Tensor, Update,
};
use lion_optim_test_support::{bits, same, SPECIAL_F32};

const N: usize = 37;

/// Runs every check; panics on the first that fails.
pub fn run() {
    f32_exact_binary_fractions();
    f32_default_hyperparameters();
    bf16_ties_to_even();
    bf16_params_f32_momentum();
    bad_input_is_refused_and_nothing_written();
    non_finite_gradients_are_skipped();
    optimizer_over_caller_buffers_and_checkpoint();
    many_tensors_in_groups();
}

/// `step_many` without an allocator: two groups (one cautious), every tensor equal to
/// `reference::step_with` with its group's settings.
fn many_tensors_in_groups() {
    let hp = Hyperparams {
        lr: 0.25,
        ..Hyperparams::default()
    };
    let cautious = StepOptions {
        cautious: Cautious::Whole,
        ..StepOptions::default()
    };
    let groups = [
        Group::new(hp),
        Group::new(Hyperparams {
            weight_decay: 0.5,
            ..hp
        })
        .with_options(cautious),
    ];
    let g1: [f32; N] = core::array::from_fn(|i| i as f32 - 18.0);
    let g2: [bf16; 5] = core::array::from_fn(|i| bf16::from_f32(2.0 - i as f32));
    let m1_0: [f32; N] = core::array::from_fn(|i| if i % 3 == 0 { 4.0 } else { -1.0 });
    let (mut w1, mut m1) = ([1.0f32; N], m1_0);
    let (mut w2, mut m2) = ([bf16::ONE; 5], [bf16::ZERO; 5]);
    let (mut r1, mut rm1, mut r2, mut rm2) = (w1, m1, w2, m2);
    lion_optim::step_many(
        &mut [
            Update::new(&mut w1, &g1, &mut m1).group(1),
            Update::new(&mut w2, &g2, &mut m2),
        ],
        &groups,
    )
    .unwrap();
    reference::step_with(&mut r1, &g1, &mut rm1, &groups[1].hp, &cautious).unwrap();
    reference::step(&mut r2, &g2, &mut rm2, &hp).unwrap();
    assert_same("step_many tensor 0", (&w1, &m1), (&r1, &rm1));
    assert_same("step_many tensor 1", (&w2, &m2), (&r2, &rm2));
    // Cautious: some elements moved by lr_c, the others only decayed (by 1 - 0.125).
    assert!(w1.contains(&0.875) && w1.iter().any(|&w| w != 0.875));
}

/// Asserts that every parameter and momentum element is [`same`] as the wanted one (`same` from
/// the test-support crate: bit-identical, or both NaN, since NaN payloads may differ among
/// instruction sets).
fn assert_same<P: Element, M: Element>(what: &str, got: (&[P], &[M]), want: (&[P], &[M])) {
    let ((p, m), (want_p, want_m)) = (got, want);
    assert!(
        p.len() == want_p.len() && m.len() == want_m.len(),
        "{what}: lengths"
    );
    for i in 0..p.len() {
        assert!(
            same(p[i], want_p[i]) && same(m[i], want_m[i]),
            "{what}, {i}"
        );
    }
}

/// Bit-identical slices (a NaN only equals the same NaN).
fn identical<T: Element>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| bits(x) == bits(y))
}

/// What runs a step: a backend, the detected one (`lion_optim::step_with`) or the specification
/// (`reference::step_with`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Entry {
    /// [`Backend::step_with`] on this backend.
    Backend(Backend),
    /// [`lion_optim::step_with`]: the backend the crate detects.
    Detected,
    /// [`reference::step_with`]: the specification.
    Reference,
}

impl Entry {
    /// The entries that must all give the expected values: every available backend, the detected
    /// one and the specification.
    pub fn all() -> impl Iterator<Item = Entry> {
        Backend::ALL
            .iter()
            .copied()
            .filter(|b| b.is_available())
            .map(Entry::Backend)
            .chain([Entry::Detected, Entry::Reference])
    }

    /// One step with `opts` through this entry.
    pub fn step_with<P: Element, G: Element, M: Element>(
        self,
        p: &mut [P],
        g: &[G],
        m: &mut [M],
        hp: &Hyperparams,
        opts: &StepOptions,
    ) -> Result<Outcome, Error> {
        match self {
            Entry::Backend(backend) => backend.step_with(p, g, m, hp, opts),
            Entry::Detected => lion_optim::step_with(p, g, m, hp, opts),
            Entry::Reference => reference::step_with(p, g, m, hp, opts),
        }
    }

    /// One plain step (the default options), which must be applied.
    fn step<P: Element, G: Element, M: Element>(
        self,
        p: &mut [P],
        g: &[G],
        m: &mut [M],
        hp: &Hyperparams,
    ) -> Result<(), Error> {
        let outcome = self.step_with(p, g, m, hp, &StepOptions::default())?;
        assert!(outcome == Outcome::Applied, "{self:?} skipped a step");
        Ok(())
    }
}

/// Runs every entry on `(p0, g, m0)` (cycled over N elements, at starts 0, 1, 2) and checks
/// each result against `(want_p, want_m)` (cycled the same way).
fn check<P: Element, G: Element, M: Element>(
    what: &str,
    hp: &Hyperparams,
    p0: &[P],
    g0: &[G],
    m0: &[M],
    want_p: &[P],
    want_m: &[M],
) {
    let k = p0.len();
    let cycle_p: [P; N] = core::array::from_fn(|i| p0[i % k]);
    let cycle_g: [G; N] = core::array::from_fn(|i| g0[i % k]);
    let cycle_m: [M; N] = core::array::from_fn(|i| m0[i % k]);
    let mut ran = 0;
    for entry in Entry::all() {
        for start in 0..3 {
            let (mut p, mut m) = (cycle_p, cycle_m);
            let g = core::hint::black_box(cycle_g);
            let result = entry.step(&mut p[start..], &g[start..], &mut m[start..], hp);
            ran += 1;
            assert!(result.is_ok(), "{what}: {entry:?} refused valid input");
            for i in 0..N {
                // Elements before `start` were not part of the call and must be untouched.
                let (wp, wm) = if i < start {
                    (cycle_p[i], cycle_m[i])
                } else {
                    (want_p[i % k], want_m[i % k])
                };
                assert!(
                    same(p[i], wp),
                    "{what}: {entry:?}, start {start}: param {i} is {:#x}, expected {:#x}",
                    p[i].to_f32_exact().to_bits(),
                    wp.to_f32_exact().to_bits()
                );
                assert!(
                    same(m[i], wm),
                    "{what}: {entry:?}, start {start}: momentum {i} is {:#x}, expected {:#x}",
                    m[i].to_f32_exact().to_bits(),
                    wm.to_f32_exact().to_bits()
                );
            }
        }
    }
    // At least Scalar, Portable, `step` and `reference::step`, three starts each.
    assert!(ran >= 12, "{what}: only {ran} runs");
}

/// lr = beta1 = beta2 = 0.5 and weight_decay = 0.25: every constant is exact
/// (decay = 1 - 0.5 * 0.25 = 0.875), so every result below is computed exactly by hand.
fn f32_exact_binary_fractions() {
    let hp = Hyperparams {
        lr: 0.5,
        beta1: 0.5,
        beta2: 0.5,
        weight_decay: 0.25,
    };
    let sub = f32::from_bits(1); // 2^-149, the smallest subnormal
    let p = [1.0, 2.0, -4.0, 0.0, -0.0, f32::INFINITY, sub];
    let g = [1.0, -1.0, 2.0, f32::NAN, -1.0, 1.0, 0.0];
    let m = [0.0, 0.5, -2.0, 1.0, 0.0, 0.0, -0.0];
    let want_p = [
        // c = 0*0.5 + 1*0.5 = 0.5 > 0: p = 1*0.875 - 0.5
        f32::from_bits(0x3ec0_0000), // 0.375
        // c = 0.25 - 0.5 = -0.25 < 0: p = 1.75 + 0.5
        f32::from_bits(0x4010_0000), // 2.25
        // c = -1 + 1 = 0: only the decay, -4 * 0.875
        f32::from_bits(0xc060_0000), // -3.5
        // c = NaN: sign(NaN) = +0, p = 0*0.875 - 0.5*0 = +0
        f32::from_bits(0x0000_0000),
        // c = -0.5: p = -0*0.875 + 0.5
        f32::from_bits(0x3f00_0000), // 0.5
        // inf*0.875 - 0.5 = inf
        f32::INFINITY,
        // c = -0*0.5 + 0*0.5 = +0: p = 2^-149 * 0.875, rounded to nearest = 2^-149 (no flush
        // to zero: the FPU must handle subnormals)
        sub,
    ];
    let want_m = [
        f32::from_bits(0x3f00_0000), // 0*0.5 + 1*0.5 = 0.5
        f32::from_bits(0xbe80_0000), // 0.25 - 0.5 = -0.25
        f32::from_bits(0x0000_0000), // -1 + 1 = +0
        f32::NAN,                    // the NaN gradient reaches the momentum
        f32::from_bits(0xbf00_0000), // -0.5
        f32::from_bits(0x3f00_0000), // 0.5
        f32::from_bits(0x0000_0000), // -0 + +0 = +0
    ];
    check("f32 exact", &hp, &p, &g, &m, &want_p, &want_m);
}

/// The paper's defaults (lr = 1e-4, betas 0.9 / 0.99) and a weight-decay case, where the
/// constants are f64 values rounded once to f32: f32(1e-4) = 0x38d1b717,
/// f32(1 - 0.9) = 0x3dcccccd, f32(0.9) = 0x3f666666, f32(0.99) = 0x3f7d70a4,
/// f32(1 - 0.99) = 0x3c23d70a.
fn f32_default_hyperparameters() {
    let hp = Hyperparams::default();
    let p = [1.0f32, 1.0, -2.0];
    let g = [1.0f32, -1.0, 0.5];
    let m = [0.0f32, 0.0, 0.25];
    let want_p = [
        // 1 - 1e-4: below 1 the spacing is 2^-24, 1e-4 * 2^24 = 1677.7 -> 1678 steps:
        // mantissa 0x7fffff + 1 - 1678 = 0x7ff972
        f32::from_bits(0x3f7f_f972),
        // 1 + 1e-4: above 1 the spacing is 2^-23, 1e-4 * 2^23 = 838.9 -> 839 = 0x347
        f32::from_bits(0x3f80_0347),
        // c = 0.25*0.9 + 0.5*0.1 > 0: -2 - 1e-4, spacing 2^-22, 1e-4 * 2^22 = 419.4 -> 0x1a3
        f32::from_bits(0xc000_01a3),
    ];
    let want_m = [
        f32::from_bits(0x3c23_d70a), // 1 * f32(0.01)
        f32::from_bits(0xbc23_d70a), // -1 * f32(0.01)
        // 0.25*0.99 + 0.5*0.01 = 0.2525 = 1.01 * 2^-2: mantissa 0.01 * 2^23 = 83886 = 0x147ae
        f32::from_bits(0x3e81_47ae),
    ];
    check("f32 defaults", &hp, &p, &g, &m, &want_p, &want_m);

    let hp = Hyperparams {
        lr: 1e-3,
        weight_decay: 0.1,
        ..Hyperparams::default()
    };
    // decay = f32(1 - 1e-4) = 1 - 1678 * 2^-24 (as above). p = 2 * decay - f32(1e-3)
    // = 2 - 1678 * 2^-23 - 1.0000000475e-3; in steps of 2^-23: 1678 + 8388.608 = 10066.608
    // -> 10067 steps below 2: mantissa 0x800000 - 10067 = 0x7fd8ad.
    check(
        "f32 weight decay",
        &hp,
        &[2.0f32],
        &[1.0f32],
        &[0.0f32],
        &[f32::from_bits(0x3fff_d8ad)],
        &[f32::from_bits(0x3c23_d70a)],
    );
}

fn b(bits: u16) -> bf16 {
    bf16::from_bits(bits)
}

/// bf16 everywhere, lr = 2^-8, betas 0.5, no decay: results fall exactly halfway between two
/// bf16 values and must round to the even one.
fn bf16_ties_to_even() {
    let hp = Hyperparams {
        lr: 1.0 / 256.0,
        beta1: 0.5,
        beta2: 0.5,
        weight_decay: 0.0,
    };
    let (one, minus_one, nan) = (b(0x3f80), b(0xbf80), b(0x7fc0));
    let p = [
        b(0x3f81), // 1.0078125
        b(0x3f82), // 1.015625
        b(0x3f82),
        b(0x3f80), // 1.0
        b(0x4000), // 2.0
        b(0x4040), // 3.0
        b(0x3f80),
    ];
    let g = [one, one, minus_one, minus_one, one, nan, b(0x3f81)];
    let m = [b(0), b(0), b(0), b(0), minus_one, b(0), one];
    let want_p = [
        b(0x3f80), // 1.0078125 - 2^-8: halfway between 0x3f80 and 0x3f81 -> even 0x3f80
        b(0x3f82), // 1.015625 - 2^-8: halfway between 0x3f81 and 0x3f82 -> even 0x3f82
        b(0x3f82), // 1.015625 + 2^-8: halfway between 0x3f82 and 0x3f83 -> even 0x3f82
        b(0x3f80), // 1.0 + 2^-8: halfway between 0x3f80 and 0x3f81 -> even 0x3f80
        b(0x4000), // c = -0.5 + 0.5 = 0: does not move
        b(0x4040), // c = NaN: does not move
        b(0x3f7f), // 1 - 2^-8 = 0.99609375, exact
    ];
    let want_m = [
        b(0x3f00), // 0.5
        b(0x3f00),
        b(0xbf00), // -0.5
        b(0xbf00),
        b(0x0000), // -0.5 + 0.5 = +0
        nan,
        b(0x3f80), // 0.5 + 0.50390625 = 1.00390625: halfway -> even 0x3f80
    ];
    check("bf16 ties", &hp, &p, &g, &m, &want_p, &want_m);
}

/// bf16 parameters with f32 gradients and f32 momentum, the paper's defaults: the update
/// 1 - 1e-4 is below half a bf16 step (2^-9) and rounds back to 1.0; the momentum is f32.
fn bf16_params_f32_momentum() {
    let hp = Hyperparams::default();
    check(
        "bf16 params, f32 momentum",
        &hp,
        &[b(0x3f80), b(0x3f80), b(0x4000)],
        &[1.0f32, -1.0, -0.5],
        &[0.0f32, 0.0, 0.0],
        &[b(0x3f80), b(0x3f80), b(0x4000)],
        &[
            f32::from_bits(0x3c23_d70a),
            f32::from_bits(0xbc23_d70a),
            f32::from_bits(0xbba3_d70a), // -0.5 * f32(0.01): the same mantissa, exponent - 1
        ],
    );
    // lr = 2^-7 moves a bf16 1.0 by exactly two steps of 2^-8 (the spacing below 1):
    // 1 - 2^-7 = 0.9921875 = 0x3f7e, exact.
    let hp = Hyperparams {
        lr: 1.0 / 128.0,
        ..Hyperparams::default()
    };
    check(
        "bf16 params, f32 momentum, lr 2^-7",
        &hp,
        &[b(0x3f80)],
        &[1.0f32],
        &[0.0f32],
        &[b(0x3f7e)],
        &[f32::from_bits(0x3c23_d70a)],
    );
}

/// Invalid hyperparameters and mismatched lengths: `Err` from every entry, every buffer
/// bit-identical afterwards.
fn bad_input_is_refused_and_nothing_written() {
    let d = Hyperparams::default();
    let bad = [
        (Hyperparams { lr: f64::NAN, ..d }, "lr"),
        (Hyperparams { lr: -1e-3, ..d }, "lr"),
        (Hyperparams { lr: 1e39, ..d }, "lr"),
        (Hyperparams { beta1: 1.0, ..d }, "beta1"),
        (Hyperparams { beta2: -0.5, ..d }, "beta2"),
        (
            Hyperparams {
                weight_decay: -1.0,
                ..d
            },
            "weight_decay",
        ),
        (
            Hyperparams {
                lr: 1e30,
                weight_decay: 1e30,
                ..d
            },
            "weight_decay",
        ),
    ];
    let p0: [bf16; N] = core::array::from_fn(|i| bf16::from_f32(i as f32 - 9.5));
    let g: [f32; N] = core::array::from_fn(|i| 1.0 - i as f32 * 0.25);
    let m0: [f32; N] = core::array::from_fn(|i| i as f32 * 0.125);
    let untouched = |p: &[bf16], m: &[f32]| identical(p, &p0) && identical(m, &m0);
    let mismatch = |what, found| {
        Err(Error::LengthMismatch {
            what,
            expected: N,
            found,
        })
    };
    for entry in Entry::all() {
        for (hp, field) in &bad {
            let (mut p, mut m) = (p0, m0);
            match entry.step(&mut p, &g, &mut m, hp) {
                Err(Error::InvalidHyperparameter { name, .. }) => {
                    assert!(name == *field, "{entry:?}: {field} reported as {name}")
                }
                _ => panic!("{entry:?}: invalid {field} was not refused"),
            }
            assert!(untouched(&p, &m), "{entry:?}: invalid {field} wrote");
        }
        let (mut p, mut m) = (p0, m0);
        let r = entry.step(&mut p, &g[..N - 1], &mut m, &d);
        assert!(r == mismatch("grads", N - 1), "{entry:?}: short grads");
        let r = entry.step(&mut p, &g, &mut m[..N - 2], &d);
        assert!(
            r == mismatch("momentum", N - 2),
            "{entry:?}: short momentum"
        );
        assert!(untouched(&p, &m), "{entry:?}: a length mismatch wrote");
    }
}

/// `skip_non_finite`: a gradient that is infinite or NaN (every non-finite special value of the
/// test-support crate, at any position) skips the whole step on every entry, nothing written;
/// with finite gradients only (every finite special value) the step is applied. The same in
/// `Lion` over caller buffers: the skipped step is counted, not taken.
fn non_finite_gradients_are_skipped() {
    let hp = Hyperparams {
        lr: 0.5,
        ..Hyperparams::default()
    };
    let opts = StepOptions {
        skip_non_finite: true,
        ..StepOptions::default()
    };
    let p0: [bf16; N] = core::array::from_fn(|i| bf16::from_f32(i as f32 - 9.5));
    let m0: [f32; N] = core::array::from_fn(|i| i as f32 * 0.125);
    let mut skipped = 0;
    for (k, &x) in SPECIAL_F32.iter().enumerate() {
        let mut g: [f32; N] = core::array::from_fn(|i| 1.0 - i as f32 * 0.25);
        g[k % N] = x;
        let want = if x.is_finite() {
            Outcome::Applied
        } else {
            Outcome::SkippedNonFinite
        };
        for entry in Entry::all() {
            let (mut p, mut m) = (p0, m0);
            let r = entry.step_with(&mut p, &g, &mut m, &hp, &opts);
            assert!(
                r == Ok(want),
                "{entry:?}, gradient {x:e}: {r:?}, want {want:?}"
            );
            let untouched = identical(&p, &p0) && identical(&m, &m0);
            assert!(
                untouched == (want == Outcome::SkippedNonFinite),
                "{entry:?}, gradient {x:e}: written {}",
                !untouched
            );
            skipped += usize::from(untouched);
        }
    }
    assert!(skipped >= 2 * 6, "only {skipped} skipped steps");

    let mut m = m0;
    let mut w = p0;
    let mut opt = Lion::with_buffers(hp, [SliceMut::from(&mut m[..])]).unwrap();
    opt.update_groups(|_, g| g.options.skip_non_finite = true)
        .unwrap();
    let mut g = [0.25f32; N];
    g[N - 1] = f32::NAN;
    let r = opt.step(&mut [Tensor::new(&mut w, &g)]);
    assert!(r == Ok(Outcome::SkippedNonFinite), "Lion: {r:?}");
    assert!(opt.steps() == 0 && opt.skipped_steps() == 1);
    g[N - 1] = 0.25;
    let r = opt.step(&mut [Tensor::new(&mut w, &g)]);
    assert!(r == Ok(Outcome::Applied) && opt.steps() == 1, "Lion: {r:?}");
    assert!(w.iter().zip(&p0).all(|(a, b)| a.to_bits() != b.to_bits()));
}

/// `Lion` over momentum buffers the caller owns (no allocator), two tensors of different dtypes;
/// the results equal `reference::step`; a checkpoint written to a stack buffer restores it.
fn optimizer_over_caller_buffers_and_checkpoint() {
    let hp = Hyperparams {
        lr: 1e-3,
        weight_decay: 0.1,
        ..Hyperparams::default()
    };
    let mut m1 = [0.0f32; N];
    let mut m2 = [bf16::ZERO; 5];
    let mut w1: [f32; N] = core::array::from_fn(|i| 0.5 - i as f32 / 64.0);
    let mut w2 = [bf16::ONE; 5];
    let (mut r1, mut r2) = (w1, w2);
    let (mut rm1, mut rm2) = (m1, m2);
    let mut saved = [0u8; 512];
    let saved_len;
    {
        let mut opt = Lion::with_buffers(
            hp,
            [SliceMut::from(&mut m1[..]), SliceMut::from(&mut m2[..])],
        )
        .unwrap();
        for step in 0..3 {
            let g1: [f32; N] = core::array::from_fn(|i| (i as f32 - 10.0 + step as f32) / 8.0);
            let g2: [bf16; 5] = core::array::from_fn(|i| bf16::from_f32(i as f32 - 2.0));
            opt.step(&mut [Tensor::new(&mut w1, &g1), Tensor::new(&mut w2, &g2)])
                .unwrap();
            reference::step(&mut r1, &g1, &mut rm1, &hp).unwrap();
            reference::step(&mut r2, &g2, &mut rm2, &hp).unwrap();
        }
        assert!(opt.steps() == 3);
        saved_len = opt.save_state(&mut saved).unwrap();
        assert!(saved_len == opt.state_len());
        // A checkpoint of the wrong shape is refused and changes nothing.
        assert!(opt.load_state(&saved[..saved_len - 1]).is_err());
        assert!(opt.steps() == 3);
    }
    assert_same("Lion tensor 0", (&w1, &m1), (&r1, &rm1));
    assert_same("Lion tensor 1", (&w2, &m2), (&r2, &rm2));
    // Restore into fresh buffers: the momentum comes back bit for bit.
    let (mut n1, mut n2) = ([0.0f32; N], [bf16::ZERO; 5]);
    let mut opt = Lion::with_buffers(
        Hyperparams::default(),
        [SliceMut::from(&mut n1[..]), SliceMut::from(&mut n2[..])],
    )
    .unwrap();
    opt.load_state(&saved[..saved_len]).unwrap();
    assert!(opt.steps() == 3 && opt.group(GroupId::DEFAULT).unwrap().hp == hp);
    match opt.momentum(1).unwrap() {
        MomentumRef::Bf16(s) => assert!(identical(s, &m2)),
        _ => panic!("tensor 1 lost its dtype"),
    }
    assert!(identical(&n1, &m1));
}
