//! The entries of version 0.2 (issue 21): `Lion::update_groups` (all or nothing),
//! `Lion::tensor` / `TensorInfo`, `Backend::step_many`, the run-time-typed
//! `SliceRef::all_finite` / `SliceRef::cautious_count`, `skip_non_finite` as an option (of a
//! step on every backend, of `step_many`'s groups), the documented stochastic-rounding bits of
//! `Lion::step`, and the deprecated names, which still compile and do what replaced them.

use crate::common::{HyperparamsExt, available_backends, backends_under_test};
use lion_optim::{
    Backend, Buffer, Cautious, Dtype, Element, Error, Group, GroupId, Hyperparams, Lion,
    MomentumDtype, Outcome, Rounding, SliceMut, SliceRef, StepOptions, Tensor, TensorId,
    TensorSpec, Update, WeightDecay, bf16, f16, reference,
};
use support::{Rng, SPECIAL_F32, all_combos, hyperparams, option_sets, same, value};

/// An owned buffer of `dtype` with values of `value` (special values, ordinary ones, raw bits).
fn random(dtype: Dtype, len: usize, rng: &mut Rng) -> Buffer {
    match dtype {
        Dtype::F32 => Buffer::F32((0..len).map(|_| value(rng, &SPECIAL_F32)).collect()),
        Dtype::F16 => Buffer::F16((0..len).map(|_| value(rng, &SPECIAL_F32)).collect()),
        Dtype::Bf16 => Buffer::Bf16((0..len).map(|_| value(rng, &SPECIAL_F32)).collect()),
    }
}

/// `len` values of `Rng::range(lo, hi)`, each rounded to `T`.
fn uniform<T: Element>(rng: &mut Rng, len: usize, lo: f32, hi: f32) -> Vec<T> {
    (0..len)
        .map(|_| T::from_f32_rounded(rng.range(lo, hi)))
        .collect()
}

/// An owned copy of a momentum buffer.
fn owned(m: SliceRef<'_>) -> Buffer {
    match m {
        SliceRef::F32(s) => Buffer::F32(s.to_vec()),
        SliceRef::F16(s) => Buffer::F16(s.to_vec()),
        SliceRef::Bf16(s) => Buffer::Bf16(s.to_vec()),
    }
}

/// Element for element the same (a NaN matching a NaN), and of the same dtype.
fn same_buffer(a: &Buffer, b: &Buffer) -> bool {
    fn eq<T: Element>(a: &[T], b: &[T]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(*x, *y))
    }
    match (a, b) {
        (Buffer::F32(a), Buffer::F32(b)) => eq(a, b),
        (Buffer::F16(a), Buffer::F16(b)) => eq(a, b),
        (Buffer::Bf16(a), Buffer::Bf16(b)) => eq(a, b),
        _ => false,
    }
}

type Opt = Lion<Vec<Buffer>>;

fn groups_of(opt: &Opt) -> Vec<Group> {
    (0..opt.group_count())
        .map(|i| *opt.group(GroupId::new(i)).unwrap())
        .collect()
}

#[test]
fn update_groups_is_all_or_nothing() {
    let mut opt = Lion::new(Hyperparams::default().lr(1e-3).weight_decay(0.1)).unwrap();
    let one = opt.add_group(Group::default()).unwrap();
    let two = opt
        .add_group(Group::new(Hyperparams::default().lr(1e30)))
        .unwrap();
    opt.add(TensorSpec::new(3).group(one)).unwrap();
    opt.set_lr_scale(0.5).unwrap();
    let (groups, state) = (groups_of(&opt), opt.state_to_vec());

    // The closure sees every group, in order, with its handle.
    let mut seen = Vec::new();
    opt.update_groups(|id, _| seen.push(id)).unwrap();
    assert_eq!(seen[..3], [GroupId::DEFAULT, one, two]);
    assert_eq!(
        (groups_of(&opt), opt.state_to_vec()),
        (groups.clone(), state.clone())
    );

    // One invalid result (each kind of rule: a hyperparameter, an option, the learning rate
    // with the optimizer's scale, a shard): no group changes, and the error is the first one.
    type Change = Box<dyn Fn(GroupId, &mut Group)>;
    let refusals: [(&str, Change, &str); 5] = [
        (
            "beta1 of the last group",
            Box::new(move |id, g| {
                g.hp.lr = 0.25;
                if id == two {
                    g.hp.beta1 = 1.0;
                }
            }),
            "beta1",
        ),
        (
            "an option of the first group",
            Box::new(move |id, g| {
                g.options.skip_non_finite = true;
                if id == GroupId::DEFAULT {
                    g.options.grad_unscale = Some(0.0);
                }
            }),
            "grad_unscale",
        ),
        (
            "lr * scale is no f32",
            Box::new(move |id, g| {
                if id == two {
                    g.hp.lr = 1e39;
                }
            }),
            "lr",
        ),
        (
            "the decay factor with the scale",
            Box::new(move |id, g| {
                if id == one {
                    (g.hp.lr, g.hp.weight_decay) = (4.0, 1.0);
                }
            }),
            "weight_decay",
        ),
        (
            "a shard in a Lion group",
            Box::new(move |id, g| {
                g.options.rounding = Rounding::Stochastic { seed: 1 };
                if id == one {
                    g.options.cautious = Cautious::Shard {
                        agreeing: 0,
                        numel: 1,
                    };
                }
            }),
            "cautious",
        ),
    ];
    for (what, f, field) in refusals {
        let got = opt.update_groups(|id, g| f(id, g));
        assert!(
            matches!(got, Err(Error::InvalidHyperparameter { name, .. }) if name == field),
            "{what}: {got:?}"
        );
        assert_eq!(groups_of(&opt), groups, "{what} changed a group");
        assert_eq!(opt.state_to_vec(), state, "{what} changed the state");
        assert_eq!(opt.lr_scale(), 0.5);
    }

    // A valid change reaches every group it names, and only those.
    opt.update_groups(|id, g| {
        g.options.skip_non_finite = true;
        if id == one {
            g.hp.lr = 3e-4;
        }
    })
    .unwrap();
    let now = groups_of(&opt);
    for (i, (new, old)) in now.iter().zip(&groups).enumerate() {
        let lr = if i == one.index() { 3e-4 } else { old.hp.lr };
        let want = Group {
            hp: Hyperparams { lr, ..old.hp },
            options: StepOptions {
                skip_non_finite: true,
                ..old.options
            },
        };
        assert_eq!(*new, want, "group {i}");
    }
    // `set_group` is the same for one group, and refuses an unknown one.
    let g = Group::new(Hyperparams::default());
    assert_eq!(
        opt.set_group(GroupId::new(3), g),
        Err(Error::NoSuchGroup { index: 3, count: 3 })
    );
    opt.set_group(two, g).unwrap();
    assert_eq!(*opt.group(two).unwrap(), g);
}

#[test]
fn tensor_describes_every_tensor() {
    let mut opt = Lion::new(Hyperparams::default()).unwrap();
    let g = opt.add_group(Group::default()).unwrap();
    let specs = [
        TensorSpec::new(7),
        TensorSpec::new(0).name("empty").momentum(Dtype::F16),
        TensorSpec::new(5)
            .name("wte")
            .params(Dtype::Bf16)
            .momentum(Dtype::Bf16)
            .group(g)
            .stream(99),
        TensorSpec::new(3).group(g).params(Dtype::F32),
    ];
    for (i, spec) in specs.iter().enumerate() {
        assert_eq!(opt.add(*spec).unwrap(), TensorId::new(i));
    }
    let infos: Vec<_> = (0..4)
        .map(|i| {
            let t = opt.tensor(TensorId::new(i)).unwrap();
            (t.len, t.momentum, t.params, t.name, t.group, t.stream)
        })
        .collect();
    assert_eq!(
        infos,
        [
            (7, MomentumDtype::F32, None, None, GroupId::DEFAULT, 0),
            (
                0,
                MomentumDtype::F16,
                None,
                Some("empty"),
                GroupId::DEFAULT,
                1
            ),
            (
                5,
                MomentumDtype::Bf16,
                Some(Dtype::Bf16),
                Some("wte"),
                g,
                99
            ),
            (3, MomentumDtype::F32, Some(Dtype::F32), None, g, 3),
        ]
    );
    // An index is a handle too; unknown ones are refused.
    assert_eq!(opt.tensor(2usize).unwrap().name, Some("wte"));
    assert_eq!(opt.tensor_id("wte"), Some(TensorId::new(2)));
    assert_eq!(
        opt.tensor(TensorId::new(4)),
        Err(Error::NoSuchTensor { index: 4, count: 4 })
    );
    // A refused tensor is not added.
    let taken = opt.add(TensorSpec::new(1).name("wte"));
    assert_eq!(taken, Err(Error::DuplicateName { index: 2 }));
    let unknown = opt.add(TensorSpec::new(1).group(GroupId::new(2)));
    assert_eq!(unknown, Err(Error::NoSuchGroup { index: 2, count: 2 }));
    assert_eq!(opt.tensor_count(), 4);

    // A caller's store: defaults (no name, group 0, any parameter dtype, the index as stream).
    let (mut a, mut b) = ([0.0f32; 2], [bf16::ZERO; 6]);
    let store = [SliceMut::from(&mut a[..]), SliceMut::from(&mut b[..])];
    let opt = Lion::with_buffers(Hyperparams::default(), store).unwrap();
    let t = opt.tensor(TensorId::new(1)).unwrap();
    let info = (t.len, t.momentum, t.params, t.name, t.group, t.stream);
    assert_eq!(
        info,
        (6, MomentumDtype::Bf16, None, None, GroupId::DEFAULT, 1)
    );
    assert!(matches!(
        opt.tensor(TensorId::new(2)),
        Err(Error::NoSuchTensor { index: 2, count: 2 })
    ));
}

/// The groups of the many-tensor tests: every option, including a cautious shard.
fn many_groups() -> Vec<Group> {
    let hp = Hyperparams::default().lr(1e-2).weight_decay(0.1);
    let mut groups: Vec<Group> = option_sets()
        .iter()
        .map(|o| Group::new(hp).with_options(*o))
        .collect();
    groups.push(
        Group::new(Hyperparams { lr: 0.5, ..hp }).with_options(StepOptions {
            cautious: Cautious::Whole,
            rounding: Rounding::Stochastic { seed: 9 },
            ..StepOptions::default()
        }),
    );
    groups
}

/// Updates of every dtype combination (random values, special ones included), in the groups
/// of `many_groups`, with steps, offsets and streams; `Backend::step_many` over them.
/// With `backend` `None`, each update is stepped alone with `Update::apply` (its stream given,
/// as `step_many` would default it to its position).
fn run_many(
    backend: Option<Backend>,
    lens: &[usize],
    seed: u64,
) -> (Outcome, Vec<Buffer>, Vec<Buffer>) {
    let mut rng = Rng::new(seed);
    let groups = many_groups();
    let n = lens.len();
    let combo = |i: usize| {
        let c = i % 27;
        (Dtype::ALL[c / 9], Dtype::ALL[c / 3 % 3], Dtype::ALL[c % 3])
    };
    let mut p: Vec<Buffer> = (0..n)
        .map(|i| random(combo(i).0, lens[i], &mut rng))
        .collect();
    let g: Vec<Buffer> = (0..n)
        .map(|i| random(combo(i).1, lens[i], &mut rng))
        .collect();
    let mut m: Vec<Buffer> = (0..n)
        .map(|i| random(combo(i).2, lens[i], &mut rng))
        .collect();
    let mut updates: Vec<Update<'_>> = p
        .iter_mut()
        .zip(&g)
        .zip(m.iter_mut())
        .enumerate()
        .map(|(i, ((p, g), m))| {
            let u = Update::from_slices(
                p.elements_mut().unwrap(),
                g.elements().unwrap(),
                m.as_mut_slice(),
            )
            .group(i % groups.len())
            .step(i as u64 * 3);
            match i % 3 {
                0 if backend.is_none() => u.stream(i as u64),
                0 => u,
                1 => u.offset(i as u64 * 1000).stream(7),
                _ => u.stream(u64::MAX - i as u64),
            }
        })
        .collect();
    // A shard's numel must hold its offset and length.
    let mut groups = groups;
    for g in &mut groups {
        if let Cautious::Shard { agreeing, .. } = g.options.cautious {
            g.options.cautious = Cautious::Shard {
                agreeing,
                numel: 1 << 40,
            };
        }
    }
    let outcome = match backend {
        Some(backend) => backend.step_many(&mut updates, &groups).unwrap(),
        None => {
            let k = groups.len();
            let outcomes: Vec<Outcome> = (updates.into_iter().enumerate())
                .map(|(i, u)| u.apply(&groups[i % k]).unwrap())
                .collect();
            assert!(outcomes.iter().all(|&o| o == outcomes[0]));
            outcomes[0]
        }
    };
    (outcome, p, m)
}

#[test]
fn step_many_on_every_backend_is_the_scalar_one() {
    let mut rng = Rng::new(41);
    let lens: Vec<usize> = (0..81)
        .map(|i| match i % 3 {
            0 => rng.below(20),
            1 => 64 * rng.below(4) + rng.below(3),
            _ => rng.below(300),
        })
        .collect();
    let (outcome, p, m) = run_many(Some(Backend::Scalar), &lens, 42);
    assert_eq!(outcome, Outcome::Applied);
    // Every backend, and each update stepped alone (`Update::apply`, on the detected backend).
    let backends = backends_under_test().into_iter().map(Some);
    for backend in backends.chain([None]) {
        let got = run_many(backend, &lens, 42);
        assert_eq!(got.0, outcome, "{backend:?}");
        for i in 0..lens.len() {
            assert!(same_buffer(&got.1[i], &p[i]), "{backend:?}: params {i}");
            assert!(same_buffer(&got.2[i], &m[i]), "{backend:?}: momentum {i}");
        }
    }
    // `step_many` is the detected backend's.
    let (mut p1, mut m1) = ([1.0f32; 9], [0.5f32; 9]);
    let (mut p2, mut m2) = (p1, m1);
    let grads = [0.25f32; 9];
    let groups = [Group::default()];
    let a = lion_optim::step_many(&mut [Update::new(&mut p1, &grads, &mut m1)], &groups);
    let b = Backend::detect().step_many(&mut [Update::new(&mut p2, &grads, &mut m2)], &groups);
    assert_eq!((a, p1, m1), (b, p2, m2));
    // A backend that cannot run here says so and writes nothing.
    for &backend in Backend::ALL.iter().filter(|b| !b.is_available()) {
        let got = backend.step_many(&mut [Update::new(&mut p1, &grads, &mut m1)], &groups);
        assert_eq!(got, Err(Error::BackendUnavailable(backend)));
        assert_eq!((p1, m1), (p2, m2));
    }
}

fn slice_checks<G: Element, M: Element>() {
    let mut rng = Rng::new(G::DTYPE as u64 * 3 + M::DTYPE as u64);
    let bad = StepOptions {
        grad_unscale: Some(-1.0),
        ..StepOptions::default()
    };
    for len in [0, 1, 7, 16, 33, 100, 1000] {
        // Random values (mostly non-finite somewhere), all-ordinary values, one overflow.
        let mut g: Vec<G> = (0..len).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
        let ordinary: Vec<G> = uniform(&mut rng, len, -2.0, 2.0);
        let m: Vec<M> = (0..len).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
        for grads in [&g[..], &ordinary[..]] {
            let dyn_g = SliceRef::from(grads);
            for o in option_sets().iter().chain([&bad]) {
                assert_eq!(
                    dyn_g.all_finite(o),
                    lion_optim::all_finite(grads, o),
                    "{:?} len {len} {o:?}",
                    G::DTYPE
                );
                for hp in hyperparams() {
                    let want = lion_optim::cautious_count(grads, &m, hp, o);
                    assert_eq!(want, reference::cautious_count(grads, &m, hp, o));
                    let got = dyn_g.cautious_count(SliceRef::from(&m[..]), hp, o);
                    assert_eq!(got, want, "{:?}/{:?} len {len} {o:?}", G::DTYPE, M::DTYPE);
                }
            }
        }
        if len > 0 {
            g.copy_from_slice(&ordinary);
            g[len / 2] = G::from_f32_rounded(f32::NAN);
            assert!(!SliceRef::from(&g[..]).all_finite(&StepOptions::default()));
        }
        // Lengths that differ: the same error.
        let short = &m[..len.saturating_sub(1)];
        if len > 0 {
            let hp = Hyperparams::default();
            let o = StepOptions::default();
            let want = lion_optim::cautious_count(&g, short, &hp, &o);
            assert!(want.is_err());
            let got = SliceRef::from(&g[..]).cautious_count(SliceRef::from(short), &hp, &o);
            assert_eq!(got, want);
        }
    }
}

#[test]
fn slice_ref_checks_agree_with_the_typed_ones() {
    fn pair<P: Element, G: Element, M: Element>() {
        if P::DTYPE == Dtype::F32 {
            slice_checks::<G, M>();
        }
    }
    all_combos!(pair, fn()).iter().for_each(|f| f());
}

fn skipping_on<P: Element, G: Element, M: Element>() {
    let mut rng = Rng::new(P::DTYPE as u64 * 9 + G::DTYPE as u64 * 3 + M::DTYPE as u64);
    let lens: &[usize] = if cfg!(miri) {
        &[9]
    } else {
        &[1, 15, 64, 130, 1001]
    };
    for &len in lens {
        for (k, o) in option_sets().iter().enumerate() {
            let o = StepOptions {
                skip_non_finite: true,
                ..*o
            };
            // Ordinary gradients; then one non-finite at the start, the middle, the end.
            for bad_at in [None, Some(0), Some(len / 2), Some(len - 1)] {
                let p0: Vec<P> = uniform(&mut rng, len, -2.0, 2.0);
                let m0: Vec<M> = (0..len).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
                let mut g: Vec<G> = uniform(&mut rng, len, -2.0, 2.0);
                if let Some(at) = bad_at {
                    let x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][k % 3];
                    g[at] = G::from_f32_rounded(x);
                }
                let hp = hyperparams()[k % hyperparams().len()];
                let (mut pw, mut mw) = (p0.clone(), m0.clone());
                let want = reference::step_with(&mut pw, &g, &mut mw, &hp, &o).unwrap();
                let skipped = bad_at.is_some();
                assert_eq!(want == Outcome::SkippedNonFinite, skipped);
                let written = |p: &[P], m: &[M]| {
                    p.iter().zip(&p0).any(|(a, b)| !same(*a, *b))
                        || m.iter().zip(&m0).any(|(a, b)| !same(*a, *b))
                };
                assert!(!(skipped && written(&pw, &mw)), "the reference wrote");
                let mut runs: Vec<(String, Outcome, Vec<P>, Vec<M>)> = Vec::new();
                for backend in available_backends() {
                    let (mut p, mut m) = (p0.clone(), m0.clone());
                    let got = backend.step_with(&mut p, &g, &mut m, &hp, &o).unwrap();
                    runs.push((backend.to_string(), got, p, m));
                }
                let (mut p, mut m) = (p0.clone(), m0.clone());
                let got = lion_optim::step_with(&mut p, &g, &mut m, &hp, &o).unwrap();
                runs.push(("step_with".into(), got, p, m));
                for (who, got, p, m) in runs {
                    let ctx = format!("{who}, len {len}, {o:?}, bad at {bad_at:?}");
                    assert_eq!(got, want, "{ctx}");
                    assert!(p.iter().zip(&pw).all(|(a, b)| same(*a, *b)), "{ctx}");
                    assert!(m.iter().zip(&mw).all(|(a, b)| same(*a, *b)), "{ctx}");
                }
            }
        }
    }
}

#[test]
fn skipping_non_finite_steps_on_every_backend_is_the_reference() {
    all_combos!(skipping_on, fn()).iter().for_each(|f| f());
}

#[test]
fn step_many_skips_the_whole_step_only_for_a_skipping_group() {
    let hp = Hyperparams::default().lr(0.5);
    let skip = StepOptions {
        skip_non_finite: true,
        grad_unscale: Some(1e30),
        ..StepOptions::default()
    };
    // Group 0 skips (and unscales: 1e10 overflows there), group 1 does not.
    let groups = [
        Group::new(hp).with_options(skip),
        Group::new(hp).with_options(StepOptions {
            grad_unscale: Some(1e30),
            ..StepOptions::default()
        }),
    ];
    // Tensors a (group 0), b (group 1), c (group 0); a non-finite gradient in one of them.
    let run = |backend: Option<Backend>, bad: usize, x: f32| {
        let (mut pa, mut pb, mut pc) = (vec![1.0f32; 70], vec![bf16::ONE; 5], vec![f16::ONE; 33]);
        let (mut ma, mut mb, mut mc) = (vec![0.0f32; 70], vec![0.0f32; 5], vec![bf16::ZERO; 33]);
        let (mut ga, mut gb, mut gc) = (vec![1e-30f32; 70], vec![-1e-30f32; 5], vec![1e-31f32; 33]);
        match bad {
            0 => ga[69] = x,
            1 => gb[2] = x,
            _ => gc[0] = x,
        }
        let mut updates = [
            Update::new(&mut pa, &ga, &mut ma),
            Update::new(&mut pb, &gb, &mut mb).group(1),
            Update::new(&mut pc, &gc, &mut mc),
        ];
        let outcome = match backend {
            Some(b) => b.step_many(&mut updates, &groups),
            None => lion_optim::step_many(&mut updates, &groups),
        }
        .unwrap();
        (outcome, (pa, pb, pc), (ma, mb, mc))
    };
    let mut backends: Vec<Option<Backend>> = available_backends().into_iter().map(Some).collect();
    backends.push(None);
    for backend in backends {
        let who = format!("{backend:?}");
        for x in [f32::NAN, f32::INFINITY, 1e10] {
            // In a skipping group: nothing is written anywhere.
            for bad in [0, 2] {
                let (outcome, p, m) = run(backend, bad, x);
                assert_eq!(outcome, Outcome::SkippedNonFinite, "{who}, {x} in {bad}");
                assert!(p.0.iter().all(|v| *v == 1.0) && p.1.iter().all(|v| *v == bf16::ONE));
                assert!(p.2.iter().all(|v| *v == f16::ONE));
                assert!(m.0.iter().all(|v| *v == 0.0) && m.1.iter().all(|v| *v == 0.0));
                assert!(m.2.iter().all(|v| *v == bf16::ZERO));
            }
            // Only in the group that does not skip: every tensor steps, as the reference.
            let (outcome, p, m) = run(backend, 1, x);
            assert_eq!(outcome, Outcome::Applied, "{who}, {x} in the other group");
            let (mut pa, mut ma) = (vec![1.0f32; 70], vec![0.0f32; 70]);
            let o = groups[0].options;
            reference::step_with(&mut pa, &[1e-30f32; 70], &mut ma, &hp, &o).unwrap();
            let mut gb = vec![-1e-30f32; 5];
            gb[2] = x;
            let (mut pb, mut mb) = (vec![bf16::ONE; 5], vec![0.0f32; 5]);
            reference::step_with(&mut pb, &gb, &mut mb, &hp, &groups[1].options).unwrap();
            assert_eq!((&p.0, &m.0), (&pa, &ma), "{who}");
            assert!(p.1.iter().zip(&pb).all(|(a, b)| same(*a, *b)), "{who}");
            assert!(m.1.iter().zip(&mb).all(|(a, b)| same(*a, *b)), "{who}");
            assert!(p.2.iter().any(|v| *v != f16::ONE), "{who}: c did not step");
        }
    }
}

/// `Lion::step`'s stochastic rounding, as its docs say: each tensor is
/// `reference::step_with` with its group's hyperparameters (lr times the scale — the sign step
/// and the decay alike) and options, `step` = the steps applied before, `offset` = 0, and the
/// group's seed mixed with the tensor's stream: `seed ^ stream * 0x9e3779b97f4a7c15`.
#[test]
fn lion_stochastic_rounding_is_reference_step_with_as_documented() {
    let hp0 = Hyperparams::default().lr(0.05).weight_decay(0.5);
    let o0 = StepOptions {
        rounding: Rounding::Stochastic { seed: 0x1234_5678 },
        skip_non_finite: true,
        ..StepOptions::default()
    };
    let g1 =
        Group::new(Hyperparams::default().lr(0.02).weight_decay(2.0)).with_options(StepOptions {
            rounding: Rounding::Stochastic { seed: u64::MAX },
            weight_decay: WeightDecay::FullyDecoupled { max_lr: 0.1 },
            cautious: Cautious::Whole,
            ..StepOptions::default()
        });
    let mut opt = Lion::new(hp0).unwrap();
    opt.set_group(GroupId::DEFAULT, Group::new(hp0).with_options(o0))
        .unwrap();
    let one = opt.add_group(g1).unwrap();
    // bf16 parameters with bf16 momentum (default stream 0), f16 / f16 with stream 7 in group
    // 1, bf16 / f32 with a stream that wraps the multiplication, in group 0.
    opt.add(TensorSpec::new(300).momentum(Dtype::Bf16)).unwrap();
    let spec = TensorSpec::new(77)
        .momentum(Dtype::F16)
        .group(one)
        .stream(7);
    opt.add(spec).unwrap();
    opt.add(TensorSpec::new(50).stream(u64::MAX / 3)).unwrap();
    opt.set_lr_scale(0.5).unwrap();
    let streams = [0u64, 7, u64::MAX / 3];
    let groups = [
        *opt.group(GroupId::DEFAULT).unwrap(),
        *opt.group(one).unwrap(),
    ];
    let group_of = [0, 1, 0];

    let mut rng = Rng::new(17);
    let mut a: Vec<bf16> = uniform(&mut rng, 300, -2.0, 2.0);
    let mut b: Vec<f16> = uniform(&mut rng, 77, -2.0, 2.0);
    let mut c: Vec<bf16> = uniform(&mut rng, 50, -2.0, 2.0);
    // The documented settings of tensor `i` at a step with `steps` applied before (variant 0),
    // and the alternatives the docs rule out: the step count after the increment (1), the
    // decay from the unscaled learning rate (2), the group's seed not mixed with the stream (3).
    let documented = |i: usize, steps: u64, variant: u8| {
        let g = groups[group_of[i]];
        let Rounding::Stochastic { seed } = g.options.rounding else {
            unreachable!()
        };
        let mixed = match variant {
            3 => seed,
            _ => seed ^ streams[i].wrapping_mul(0x9e37_79b9_7f4a_7c15),
        };
        let hp = Hyperparams {
            lr: g.hp.lr * 0.5,
            weight_decay: match variant {
                2 => g.hp.weight_decay / 0.5,
                _ => g.hp.weight_decay,
            },
            ..g.hp
        };
        let o = StepOptions {
            rounding: Rounding::Stochastic { seed: mixed },
            step: if variant == 1 { steps + 1 } else { steps },
            offset: 0,
            ..g.options
        };
        (hp, o)
    };
    let mut discriminated = [false; 4];
    for t in 0..5 {
        let ga: Vec<f32> = uniform(&mut rng, 300, -1.0, 1.0);
        let mut gb: Vec<bf16> = uniform(&mut rng, 77, -1.0, 1.0);
        let mut gc: Vec<f16> = uniform(&mut rng, 50, -1.0, 1.0);
        if t == 2 {
            // A NaN in group 0 (which skips) skips the whole step; the step count stays.
            gc[10] = f16::NAN;
        }
        if t == 3 {
            // A NaN in group 1 (which does not skip) is stepped.
            gb[5] = bf16::NAN;
        }
        let steps = opt.steps();
        let (a0, b0, c0) = (a.clone(), b.clone(), c.clone());
        let Buffer::Bf16(ma0) = owned(opt.momentum(0).unwrap().as_slice_ref().unwrap()) else {
            panic!()
        };
        let Buffer::F16(mb0) = owned(opt.momentum(1).unwrap().as_slice_ref().unwrap()) else {
            panic!()
        };
        let Buffer::F32(mc0) = owned(opt.momentum(2).unwrap().as_slice_ref().unwrap()) else {
            panic!()
        };
        let outcome = opt
            .step(&mut [
                Tensor::new(&mut a, &ga),
                Tensor::new(&mut b, &gb),
                Tensor::new(&mut c, &gc),
            ])
            .unwrap();
        if t == 2 {
            assert_eq!(outcome, Outcome::SkippedNonFinite);
            assert_eq!((opt.steps(), opt.skipped_steps()), (steps, 1));
            assert_eq!((&a, &b, &c), (&a0, &b0, &c0));
            continue;
        }
        assert_eq!(outcome, Outcome::Applied);
        for variant in 0..4u8 {
            let (mut ra, mut rb, mut rc) = (a0.clone(), b0.clone(), c0.clone());
            let (mut rma, mut rmb, mut rmc) = (ma0.clone(), mb0.clone(), mc0.clone());
            let (hp, o) = documented(0, steps, variant);
            reference::step_with(&mut ra, &ga, &mut rma, &hp, &o).unwrap();
            let (hp, o) = documented(1, steps, variant);
            reference::step_with(&mut rb, &gb, &mut rmb, &hp, &o).unwrap();
            let (hp, o) = documented(2, steps, variant);
            reference::step_with(&mut rc, &gc, &mut rmc, &hp, &o).unwrap();
            let got = [
                same_buffer(&Buffer::Bf16(a.clone()), &Buffer::Bf16(ra)),
                same_buffer(
                    &owned(opt.momentum(0).unwrap().as_slice_ref().unwrap()),
                    &Buffer::Bf16(rma),
                ),
                same_buffer(&Buffer::F16(b.clone()), &Buffer::F16(rb)),
                same_buffer(
                    &owned(opt.momentum(1).unwrap().as_slice_ref().unwrap()),
                    &Buffer::F16(rmb),
                ),
                same_buffer(&Buffer::Bf16(c.clone()), &Buffer::Bf16(rc)),
                same_buffer(
                    &owned(opt.momentum(2).unwrap().as_slice_ref().unwrap()),
                    &Buffer::F32(rmc),
                ),
            ];
            if variant == 0 {
                assert_eq!(
                    got, [true; 6],
                    "step {t}: params and momentum of tensors 0, 1, 2"
                );
            } else if got.contains(&false) {
                discriminated[usize::from(variant)] = true;
            }
        }
    }
    assert_eq!(opt.steps(), 4);
    // Each rule the docs state is needed: the step count after the increment, the scale on the
    // sign step only, or the unmixed seed would give other bytes.
    assert_eq!(discriminated, [false, true, true, true]);
}

#[test]
#[allow(deprecated)]
fn deprecated_aliases_compile_and_behave_as_their_replacements() {
    use lion_optim::Path;

    // `Path` is `Backend`; its methods are `step_with` with the default or skipping options.
    let path: Path = Path::detect();
    assert_eq!(path, Backend::detect());
    let hp = Hyperparams::default().lr(0.1).weight_decay(0.1);
    let d = StepOptions::default();
    let skip = StepOptions {
        skip_non_finite: true,
        ..d
    };
    let g = [0.5f32, -0.25, f32::NAN, 2.0];
    let g_finite = [0.5f32, -0.25, 1.0, 2.0];
    for backend in available_backends() {
        let path: Path = backend;
        let (mut p1, mut m1) = ([1.0f32; 4], [bf16::ONE; 4]);
        let (mut p2, mut m2) = (p1, m1);
        path.step(&mut p1, &g, &mut m1, &hp).unwrap();
        backend.step_with(&mut p2, &g, &mut m2, &hp, &d).unwrap();
        assert!(p1.iter().zip(&p2).all(|(a, b)| same(*a, *b)));
        assert!(m1.iter().zip(&m2).all(|(a, b)| same(*a, *b)));
        for grads in [&g, &g_finite] {
            let (mut p1, mut m1) = ([1.0f32; 4], [bf16::ONE; 4]);
            let (mut p2, mut m2) = (p1, m1);
            let a = path.step_guarded(&mut p1, grads, &mut m1, &hp, &d);
            let b = backend.step_with(&mut p2, grads, &mut m2, &hp, &skip);
            assert_eq!((a, p1, m1), (b, p2, m2));
            let (mut p1, mut m1) = ([1.0f32; 4], [bf16::ONE; 4]);
            let a = lion_optim::step_guarded(&mut p1, grads, &mut m1, &hp, &d);
            assert_eq!((a, p1, m1), (b, p2, m2));
        }
        #[cfg(feature = "rayon")]
        {
            let (mut p1, mut m1) = ([1.0f32; 4], [bf16::ONE; 4]);
            let (mut p2, mut m2) = (p1, m1);
            path.par_step(&mut p1, &g_finite, &mut m1, &hp).unwrap();
            backend
                .par_step_with(&mut p2, &g_finite, &mut m2, &hp, &d)
                .unwrap();
            assert_eq!((p1, m1), (p2, m2));
            let (mut p1, mut m1) = ([1.0f32; 4], [bf16::ONE; 4]);
            lion_optim::par_step(&mut p1, &g_finite, &mut m1, &hp).unwrap();
            assert_eq!((p1, m1), (p2, m2));
        }
    }
    // `step_many_guarded` is `step_many` with every group skipping.
    let (mut p1, mut m1) = ([1.0f32; 4], [0.0f32; 4]);
    let (mut p2, mut m2) = (p1, m1);
    let groups = [Group::new(hp)];
    let skipping = [Group::new(hp).with_options(skip)];
    for grads in [&g, &g_finite] {
        let a = lion_optim::step_many_guarded(&mut [Update::new(&mut p1, grads, &mut m1)], &groups);
        let b = lion_optim::step_many(&mut [Update::new(&mut p2, grads, &mut m2)], &skipping);
        assert_eq!((a, p1, m1), (b, p2, m2));
    }
    // `Error::PathUnavailable` is a name for the error, never returned.
    let e = Error::PathUnavailable(Backend::Avx512);
    assert_ne!(e, Error::BackendUnavailable(Backend::Avx512));

    // `Lion`: an optimizer driven by the old names and one by the new ones stay identical.
    let mut old = Lion::new(hp).unwrap();
    let mut new = Lion::new(hp).unwrap();
    let g1 = old.add_group(Group::new(hp)).unwrap();
    new.add_group(Group::new(hp)).unwrap();
    assert_eq!(old.add_tensor(5, Dtype::Bf16), TensorId::new(0));
    new.add(TensorSpec::new(5).momentum(Dtype::Bf16)).unwrap();
    old.add(TensorSpec::new(3).name("bias").group(g1)).unwrap();
    new.add(TensorSpec::new(3).name("bias").group(g1)).unwrap();
    let same_state = |old: &Opt, new: &Opt, what: &str| {
        assert_eq!(old.state_to_vec(), new.state_to_vec(), "{what}");
    };
    old.set_lr(0.2).unwrap();
    new.update_groups(|_, g| g.hp.lr = 0.2).unwrap();
    same_state(&old, &new, "set_lr");
    old.set_group_lr(g1, 0.3).unwrap();
    new.update_groups(|id, g| {
        if id == g1 {
            g.hp.lr = 0.3
        }
    })
    .unwrap();
    same_state(&old, &new, "set_group_lr");
    let hp2 = Hyperparams { beta1: 0.5, ..hp };
    old.set_hyperparams(hp2).unwrap();
    let group0 = *new.group(GroupId::DEFAULT).unwrap();
    new.set_group(GroupId::DEFAULT, Group { hp: hp2, ..group0 })
        .unwrap();
    same_state(&old, &new, "set_hyperparams");
    assert_eq!(old.hyperparams(), &new.group(GroupId::DEFAULT).unwrap().hp);
    let sr = StepOptions {
        rounding: Rounding::Stochastic { seed: 3 },
        ..d
    };
    old.set_options(sr).unwrap();
    let group0 = *new.group(GroupId::DEFAULT).unwrap();
    new.set_group(GroupId::DEFAULT, group0.with_options(sr))
        .unwrap();
    same_state(&old, &new, "set_options");
    assert_eq!(old.options(), &new.group(GroupId::DEFAULT).unwrap().options);
    old.set_grad_unscale(Some(0.5)).unwrap();
    new.update_groups(|_, g| g.options.grad_unscale = Some(0.5))
        .unwrap();
    same_state(&old, &new, "set_grad_unscale");
    assert!(!old.skip_non_finite());
    old.set_skip_non_finite(true);
    new.update_groups(|_, g| g.options.skip_non_finite = true)
        .unwrap();
    same_state(&old, &new, "set_skip_non_finite");
    assert!(old.skip_non_finite());
    // Invalid values are refused by the old names too, changing nothing.
    assert!(old.set_lr(-1.0).is_err() && old.set_group_lr(g1, f64::NAN).is_err());
    let bad = Hyperparams { beta2: 1.0, ..hp };
    assert!(old.set_hyperparams(bad).is_err());
    same_state(&old, &new, "refusals");
    let bias = TensorId::new(1);
    assert_eq!(old.tensor_name(bias), new.tensor(bias).unwrap().name);
    assert_eq!(old.tensor_group(bias), Ok(new.tensor(bias).unwrap().group));
    assert!(old.tensor_group(TensorId::new(2)).is_err());
    for t in 0..3 {
        let grads = [[0.5f32, -1.0, 0.25], [f32::NAN, 1.0, 1.0], [1.0, 1.0, -2.0]][t];
        let (mut w1, mut b1) = ([bf16::ONE; 5], [0.5f32; 3]);
        let (mut w2, mut b2) = (w1, b1);
        let gw = [0.125f32; 5];
        let a = old.step(&mut [Tensor::new(&mut w1, &gw), Tensor::new(&mut b1, &grads)]);
        let b = new.step(&mut [Tensor::new(&mut w2, &gw), Tensor::new(&mut b2, &grads)]);
        assert_eq!((a, w1, b1), (b, w2, b2), "step {t}");
        same_state(&old, &new, "steps");
    }
    assert_eq!((new.steps(), new.skipped_steps()), (2, 1));
    old.set_skip_non_finite(false);
    assert!(!old.skip_non_finite());
}
