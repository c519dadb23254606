//! Whole models: parameter groups, names and keyed steps, per-tensor random streams, resuming
//! with every option set, the parallel many-tensor step, `step_many`, and the safetensors state.

use crate::common::{HyperparamsExt, assert_same};
use crate::oracle::optimizer::{Buf, reference_dyn};
use lion_optim::{
    Buffer, Cautious, Dtype, Error, Group, GroupId, Hyperparams, Lion, Outcome, Rounding,
    StepOptions, Tensor, TensorId, TensorSpec, Update, WeightDecay, bf16, f16, reference,
};
use support::{Rng, SPECIAL_F32, value};

/// The `optimizer` oracle's buffer of a run-time dtype, with the constructors these tests use.
impl Buf {
    fn random(dtype: Dtype, len: usize, rng: &mut Rng, specials: &[f32]) -> Buf {
        match dtype {
            Dtype::F32 => Buf::F32((0..len).map(|_| value(rng, specials)).collect()),
            Dtype::F16 => Buf::F16((0..len).map(|_| value(rng, specials)).collect()),
            Dtype::Bf16 => Buf::Bf16((0..len).map(|_| value(rng, specials)).collect()),
        }
    }
    fn uniform(dtype: Dtype, len: usize, rng: &mut Rng) -> Buf {
        let mut x = || rng.uniform() * 2.0 - 1.0;
        match dtype {
            Dtype::F32 => Buf::F32((0..len).map(|_| x()).collect()),
            Dtype::F16 => Buf::F16((0..len).map(|_| f16::from_f32(x())).collect()),
            Dtype::Bf16 => Buf::Bf16((0..len).map(|_| bf16::from_f32(x())).collect()),
        }
    }
    fn zeros(dtype: Dtype, len: usize) -> Buf {
        match dtype {
            Dtype::F32 => Buf::F32(vec![0.0; len]),
            Dtype::F16 => Buf::F16(vec![f16::ZERO; len]),
            Dtype::Bf16 => Buf::Bf16(vec![bf16::ZERO; len]),
        }
    }
    fn len(&self) -> usize {
        self.slice_ref().len()
    }
}

/// Bit for bit, a NaN matching a NaN.
fn assert_bufs(a: &Buf, b: &Buf, what: &dyn Fn() -> String) {
    match (a, b) {
        (Buf::F32(a), Buf::F32(b)) => assert_same(a, b, what),
        (Buf::F16(a), Buf::F16(b)) => assert_same(a, b, what),
        (Buf::Bf16(a), Buf::Bf16(b)) => assert_same(a, b, what),
        _ => panic!("{}: different dtypes", what()),
    }
}

/// The documented per-tensor options of a `Lion` step (see `TensorSpec::stream`).
fn per_tensor(group: &StepOptions, step: u64, stream: u64) -> StepOptions {
    let rounding = match group.rounding {
        Rounding::Stochastic { seed } => Rounding::Stochastic {
            seed: seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        },
        r => r,
    };
    StepOptions {
        step,
        offset: 0,
        rounding,
        ..*group
    }
}

/// Three groups: decay; no decay with stochastic rounding and maximize; cautious with
/// gradient unscaling and the fully decoupled decay.
fn groups() -> [Group; 3] {
    let hp = Hyperparams::default().lr(1e-2).weight_decay(0.1);
    [
        Group::new(hp),
        Group::new(Hyperparams {
            weight_decay: 0.0,
            ..hp
        })
        .with_options(StepOptions {
            rounding: Rounding::Stochastic { seed: 42 },
            maximize: true,
            ..StepOptions::default()
        }),
        Group::new(Hyperparams { lr: 3e-3, ..hp }).with_options(StepOptions {
            cautious: Cautious::Whole,
            grad_unscale: Some(0.25),
            weight_decay: WeightDecay::FullyDecoupled { max_lr: 3e-2 },
            rounding: Rounding::Stochastic { seed: 7 },
            ..StepOptions::default()
        }),
    ]
}

/// A model: tensors of every dtype combination, in the three groups of `groups()`.
struct Model {
    opt: Lion<Vec<Buffer>>,
    params: Vec<Buf>,
    /// The reference's copy of the parameters and the momentum.
    want_p: Vec<Buf>,
    want_m: Vec<Buf>,
    grad_dtypes: Vec<Dtype>,
    groups: Vec<usize>,
}

fn model(lens: &[usize], seed: u64) -> Model {
    let mut rng = Rng(seed);
    let specials = &SPECIAL_F32;
    let [g0, g1, g2] = groups();
    let mut opt = Lion::new(g0.hp).unwrap();
    opt.set_group(GroupId::DEFAULT, g0).unwrap();
    let ids = [
        GroupId::DEFAULT,
        opt.add_group(g1).unwrap(),
        opt.add_group(g2).unwrap(),
    ];
    let (mut params, mut want_m, mut grad_dtypes, mut groups) = (vec![], vec![], vec![], vec![]);
    for (i, &len) in lens.iter().enumerate() {
        let combo = i % 27;
        let (pd, gd, md) = (
            Dtype::ALL[combo / 9],
            Dtype::ALL[combo / 3 % 3],
            Dtype::ALL[combo % 3],
        );
        let group = (i / 27 + i) % 3;
        let name = format!("layer.{i}.weight");
        let spec = TensorSpec::new(len)
            .name(&name)
            .params(pd)
            .momentum(md)
            .group(ids[group]);
        assert_eq!(opt.add(spec).unwrap().index(), i);
        params.push(Buf::random(pd, len, &mut rng, specials));
        want_m.push(Buf::zeros(md, len));
        grad_dtypes.push(gd);
        groups.push(group);
    }
    let want_p = params.clone();
    Model {
        opt,
        params,
        want_p,
        want_m,
        grad_dtypes,
        groups,
    }
}

impl Model {
    fn grads(&self, rng: &mut Rng) -> Vec<Buf> {
        let specials = &SPECIAL_F32;
        self.grad_dtypes
            .iter()
            .zip(&self.params)
            .map(|(&d, p)| {
                // Mostly ordinary gradients (special values would make every step skip).
                let mut g = Buf::uniform(d, p.len(), rng);
                if let (Buf::F32(v), true) = (&mut g, rng.below(4) == 0) {
                    v.iter_mut().take(3).for_each(|x| *x = value(rng, specials));
                }
                g
            })
            .collect()
    }

    /// One step of the optimizer (positional, or keyed by name in reverse order) and of the
    /// reference; returns the optimizer's outcome.
    fn step(&mut self, grads: &[Buf], keyed: bool) -> Outcome {
        let step = self.opt.steps();
        let names: Vec<String> = (0..self.params.len())
            .map(|i| format!("layer.{i}.weight"))
            .collect();
        let outcome = {
            let mut tensors: Vec<Tensor<'_>> = self
                .params
                .iter_mut()
                .zip(grads)
                .zip(&names)
                .map(|((p, g), name)| {
                    let t = Tensor::from_slices(p.slice_mut(), g.slice_ref());
                    if keyed { t.named(name) } else { t }
                })
                .collect();
            if keyed {
                tensors.reverse();
            }
            self.opt.step(&mut tensors).unwrap()
        };
        // Skipped if a tensor whose group skips non-finite steps has a non-finite gradient.
        let skips = (0..self.params.len()).any(|i| {
            let o = self
                .opt
                .group(GroupId::new(self.groups[i]))
                .unwrap()
                .options;
            o.skip_non_finite && !finite_dyn(&grads[i], &o)
        });
        let want = if skips {
            Outcome::SkippedNonFinite
        } else {
            Outcome::Applied
        };
        assert_eq!(outcome, want);
        if outcome == Outcome::Applied {
            #[allow(clippy::needless_range_loop)] // four vectors in step
            for i in 0..self.params.len() {
                let g = *self.opt.group(GroupId::new(self.groups[i])).unwrap();
                let hp = Hyperparams {
                    lr: g.hp.lr * self.opt.lr_scale(),
                    ..g.hp
                };
                let o = per_tensor(&g.options, step, i as u64);
                let (p, m) = (self.want_p[i].slice_mut(), self.want_m[i].slice_mut());
                reference_dyn(p, grads[i].slice_ref(), m, &hp, &o).unwrap();
            }
        }
        outcome
    }

    fn check(&self, what: &str) {
        for i in 0..self.params.len() {
            let ctx = || {
                format!(
                    "{what}: tensor {i} ({:?})",
                    self.opt.group(GroupId::new(self.groups[i]))
                )
            };
            assert_bufs(&self.params[i], &self.want_p[i], &ctx);
            assert_bufs(
                &Buf::copy_of(self.opt.momentum(i).unwrap().as_slice_ref().unwrap()),
                &self.want_m[i],
                &ctx,
            );
        }
    }
}

fn finite_dyn(g: &Buf, o: &StepOptions) -> bool {
    match g {
        Buf::F32(g) => lion_optim::all_finite(g, o),
        Buf::F16(g) => lion_optim::all_finite(g, o),
        Buf::Bf16(g) => lion_optim::all_finite(g, o),
    }
}

/// Lengths around every chunk width, and zero.
fn small_lens(count: usize, rng: &mut Rng) -> Vec<usize> {
    (0..count)
        .map(|i| match i % 4 {
            0 => rng.below(40),
            1 => 64 * rng.below(8) + rng.below(3),
            2 => 0,
            _ => rng.below(700),
        })
        .collect()
}

#[test]
fn groups_step_every_tensor_like_the_reference() {
    let mut rng = Rng(1);
    let mut m = model(&small_lens(60, &mut rng), 2);
    m.opt
        .update_groups(|_, g| g.options.skip_non_finite = true)
        .unwrap();
    for t in 0..6 {
        m.opt.set_lr_scale(1.0 / (1 + t) as f64).unwrap();
        if t == 3 {
            let one = GroupId::new(1);
            m.opt
                .update_groups(|id, g| {
                    if id == one {
                        g.hp.lr = 5e-3
                    }
                })
                .unwrap();
        }
        let grads = m.grads(&mut rng);
        m.step(&grads, t % 2 == 1);
        m.check(&format!("step {t}"));
    }
    assert_eq!(m.opt.steps() + m.opt.skipped_steps(), 6);
    assert!(
        m.opt.steps() > 0,
        "every step was skipped: the test checks nothing"
    );
}

#[test]
fn keyed_steps_leave_the_tensors_not_passed_alone() {
    let mut opt = Lion::new(Hyperparams::default().lr(0.5)).unwrap();
    let a = opt
        .add(TensorSpec::new(3).name("a").params(Dtype::F32))
        .unwrap();
    let b = opt
        .add(TensorSpec::new(3).name("b").params(Dtype::Bf16))
        .unwrap();
    let c = opt.add(TensorSpec::new(2).name("c")).unwrap();
    let (mut wa, mut wb, mut wc) = ([1.0f32; 3], [bf16::ONE; 3], [1.0f32; 2]);
    let g3 = [1.0f32; 3];
    // b gets no gradient: neither its parameters nor its momentum change.
    opt.step(&mut [
        Tensor::new(&mut wc, &[-1.0f32; 2]).named("c"),
        Tensor::new(&mut wa, &g3).of(a),
    ])
    .unwrap();
    assert_eq!((wa, wb, wc), ([0.5; 3], [bf16::ONE; 3], [1.5; 2]));
    assert_eq!(
        Buf::copy_of(opt.momentum(b).unwrap().as_slice_ref().unwrap()),
        Buf::zeros(Dtype::F32, 3)
    );
    assert_eq!(opt.steps(), 1);

    let before = opt.state_to_vec();
    let errors = [
        // a and b swapped: same lengths, but b was declared bf16.
        opt.step(&mut [
            Tensor::new(&mut wa, &g3).of(b),
            Tensor::new(&mut wb, &g3).of(a),
        ]),
        opt.step(&mut [Tensor::new(&mut wa, &g3).of(a), Tensor::new(&mut wb, &g3)]),
        opt.step(&mut [
            Tensor::new(&mut wa, &g3).of(a),
            Tensor::new(&mut wb, &g3).of(a),
        ]),
        opt.step(&mut [Tensor::new(&mut wa, &g3).named("nope")]),
        opt.step(&mut [Tensor::new(&mut wa, &g3).of(TensorId::new(9))]),
        opt.step(&mut [Tensor::new(&mut wa, &g3)]),
        opt.step(&mut [Tensor::new(&mut wa, &[1.0f32; 2]).of(a)]),
    ];
    let want = [
        Error::TensorDtype {
            index: 1,
            expected: Dtype::Bf16,
            found: Dtype::F32,
        },
        Error::MixedKeys { position: 1 },
        Error::DuplicateTensor { index: 0 },
        Error::UnknownName { position: 0 },
        Error::NoSuchTensor { index: 9, count: 3 },
        Error::TensorCount {
            expected: 3,
            found: 1,
        },
        Error::TensorMismatch {
            index: 0,
            what: "grads",
            expected: 3,
            found: 2,
        },
    ];
    for (got, want) in errors.into_iter().zip(want) {
        assert_eq!(got, Err(want));
    }
    assert_eq!((wa, wb, wc), ([0.5; 3], [bf16::ONE; 3], [1.5; 2]));
    assert_eq!(opt.state_to_vec(), before);
    let e = Error::TensorDtype {
        index: 1,
        expected: Dtype::Bf16,
        found: Dtype::F32,
    };
    assert_eq!(
        opt.describe(&e).to_string(),
        "tensor 1 (\"b\"): parameters are f32, the tensor was added as bf16"
    );
    let _ = c;
}

#[test]
fn settings_are_validated_and_a_refusal_changes_nothing() {
    let mut opt = Lion::new(Hyperparams::default()).unwrap();
    let g = opt
        .add_group(Group::new(Hyperparams::default().lr(1.0)))
        .unwrap();
    opt.add(TensorSpec::new(2).name("w")).unwrap();
    let before = opt.state_to_vec();
    let bad = Hyperparams::default().beta2(1.0);
    assert!(opt.add_group(Group::new(bad)).is_err());
    assert!(opt.set_group(g, Group::new(bad)).is_err());
    assert!(matches!(
        opt.set_group(GroupId::new(5), Group::default()),
        Err(Error::NoSuchGroup { index: 5, count: 2 })
    ));
    let shard = StepOptions {
        cautious: Cautious::Shard {
            agreeing: 0,
            numel: 1,
        },
        ..StepOptions::default()
    };
    let group0 = *opt.group(GroupId::DEFAULT).unwrap();
    assert!(
        opt.set_group(GroupId::DEFAULT, group0.with_options(shard))
            .is_err()
    );
    assert!(opt.update_groups(|_, g| g.options = shard).is_err());
    // 1e38 * 1e4 is not a finite f32 in group 1: the scale is refused for every group.
    assert!(opt.update_groups(|_, g| g.hp.lr = 1e38).is_ok());
    assert!(opt.set_lr_scale(1e4).is_err());
    assert_eq!(opt.lr_scale(), 1.0);
    assert!(opt.update_groups(|_, g| g.hp.lr = 1e-4).is_ok());
    assert!(opt.update_groups(|_, g| g.hp.lr = -1.0).is_err());
    assert!(matches!(
        opt.add(TensorSpec::new(2).name("w")),
        Err(Error::DuplicateName { index: 0 })
    ));
    assert!(matches!(
        opt.add(TensorSpec::new(2).group(GroupId::new(2))),
        Err(Error::NoSuchGroup { index: 2, count: 2 })
    ));
    opt.update_groups(|id, s| {
        if id == g {
            s.hp.lr = 1.0
        }
    })
    .unwrap();
    assert_eq!(opt.state_to_vec(), before);
}

#[test]
fn every_tensor_draws_its_own_random_stream() {
    let sr = StepOptions {
        rounding: Rounding::Stochastic { seed: 3 },
        ..StepOptions::default()
    };
    let hp = Hyperparams::default().lr(1e-3);
    let run = |streams: [Option<u64>; 2]| {
        let mut opt = Lion::new(hp).unwrap();
        opt.set_group(GroupId::DEFAULT, Group::new(hp).with_options(sr))
            .unwrap();
        for s in streams {
            let spec = TensorSpec::new(256).momentum(Dtype::Bf16);
            opt.add(s.map_or(spec, |s| spec.stream(s))).unwrap();
        }
        let (mut a, mut b) = (
            vec![bf16::from_f32(3.0); 256],
            vec![bf16::from_f32(3.0); 256],
        );
        let g = vec![1.0f32; 256];
        opt.step(&mut [Tensor::new(&mut a, &g), Tensor::new(&mut b, &g)])
            .unwrap();
        (a, b)
    };
    let (a, b) = run([None, None]);
    assert_ne!(a, b, "two tensors drew the same random bits");
    let (a, b) = run([Some(11), Some(11)]);
    assert_eq!(a, b);
}

/// A model trained with every setting that changes a step's bytes, saved after 3 steps; the
/// rest of the run, uninterrupted and resumed into an optimizer set up with defaults.
fn resume(save: fn(&Lion<Vec<Buffer>>) -> Vec<u8>, load: fn(&mut Lion<Vec<Buffer>>, &[u8])) {
    let mut rng = Rng(5);
    let lens = small_lens(30, &mut rng);
    let mut m = model(&lens, 6);
    m.opt
        .update_groups(|_, g| g.options.skip_non_finite = true)
        .unwrap();
    m.opt.set_lr_scale(0.75).unwrap();
    for _ in 0..3 {
        let grads = m.grads(&mut rng);
        m.step(&grads, false);
    }
    let state = save(&m.opt);
    let params_at_save = m.params.clone();
    let later: Vec<Vec<Buf>> = (0..4)
        .map(|t| {
            let mut g = m.grads(&mut rng);
            // One step with an overflowed gradient: skipped (and counted) in both runs.
            if t == 1
                && let Buf::F32(v) = &mut g[4]
            {
                v[0] = f32::NAN;
            }
            g
        })
        .collect();
    for g in &later {
        m.step(g, false);
    }

    // Same structure; the settings come from the state only (every group skips non-finite
    // steps).
    let [g0, g1, g2] = groups().map(|g| Group {
        options: StepOptions {
            skip_non_finite: true,
            ..g.options
        },
        ..g
    });
    let mut fresh = Lion::new(Hyperparams::default()).unwrap();
    fresh.add_group(Group::default()).unwrap();
    fresh.add_group(Group::default()).unwrap();
    for (i, &len) in lens.iter().enumerate() {
        let combo = i % 27;
        let spec = TensorSpec::new(len)
            .params(Dtype::ALL[combo / 9])
            .momentum(Dtype::ALL[combo % 3])
            .group(GroupId::new((i / 27 + i) % 3));
        let name = format!("layer.{i}.weight");
        fresh.add(spec.name(&name)).unwrap();
    }
    load(&mut fresh, &state);
    assert_eq!(fresh.group(GroupId::new(2)).unwrap(), &g2);
    assert_eq!(
        (
            fresh.group(GroupId::new(0)).unwrap(),
            fresh.group(GroupId::new(1)).unwrap()
        ),
        (&g0, &g1)
    );
    assert!((0..3).all(|i| {
        fresh
            .group(GroupId::new(i))
            .unwrap()
            .options
            .skip_non_finite
    }));
    let mut params = params_at_save;
    for g in &later {
        let mut tensors: Vec<Tensor<'_>> = params
            .iter_mut()
            .zip(g)
            .map(|(p, g)| Tensor::from_slices(p.slice_mut(), g.slice_ref()))
            .collect();
        fresh.step(&mut tensors).unwrap();
    }
    #[allow(clippy::needless_range_loop)] // two models in step
    for i in 0..lens.len() {
        let ctx = || format!("resumed tensor {i}");
        assert_bufs(&params[i], &m.params[i], &ctx);
        assert_bufs(
            &Buf::copy_of(fresh.momentum(i).unwrap().as_slice_ref().unwrap()),
            &Buf::copy_of(m.opt.momentum(i).unwrap().as_slice_ref().unwrap()),
            &ctx,
        );
    }
    assert_eq!(fresh.state_to_vec(), m.opt.state_to_vec());
}

#[test]
fn a_resumed_run_gives_the_bytes_of_an_uninterrupted_one() {
    resume(|o| o.state_to_vec(), |o, b| o.load_state(b).unwrap());
}

#[cfg(feature = "safetensors")]
#[test]
fn a_run_resumed_from_safetensors_gives_the_bytes_of_an_uninterrupted_one() {
    resume(
        |o| o.save_safetensors().unwrap(),
        |o, b| o.load_safetensors(b).unwrap(),
    );
}

#[test]
fn step_many_checks_every_update_before_writing() {
    let (mut p1, mut m1) = (vec![1.0f32; 10], vec![0.0f32; 10]);
    let (mut p2, mut m2) = (vec![1.0f32; 4], vec![0.0f32; 3]);
    let g = vec![1.0f32; 10];
    let groups = [Group::default()];
    let e = lion_optim::step_many(
        &mut [
            Update::new(&mut p1, &g, &mut m1),
            Update::new(&mut p2, &g[..4], &mut m2),
        ],
        &groups,
    );
    assert_eq!(
        e,
        Err(Error::TensorMismatch {
            index: 1,
            what: "momentum",
            expected: 4,
            found: 3
        })
    );
    let e = lion_optim::step_many(&mut [Update::new(&mut p1, &g, &mut m1).group(1)], &groups);
    assert_eq!(e, Err(Error::NoSuchGroup { index: 1, count: 1 }));
    assert!(p1.iter().chain(&p2).all(|&x| x == 1.0));
    assert!(m1.iter().chain(&m2).all(|&x| x == 0.0));
}

/// Cautious shards in one `step_many` call, each counted with `cautious_count`: the bytes of
/// the whole tensor stepped with `Cautious::Whole`.
#[test]
fn cautious_shards_in_step_many_give_the_whole_tensor() {
    let (mut rng, specials) = (Rng(9), &SPECIAL_F32);
    let n = 5000;
    let g: Vec<bf16> = (0..n).map(|_| value(&mut rng, specials)).collect();
    let p0: Vec<bf16> = (0..n).map(|_| value(&mut rng, specials)).collect();
    let m0: Vec<f32> = (0..n).map(|_| rng.uniform() - 0.5).collect();
    let hp = Hyperparams::default().lr(1e-2).beta1(0.5);
    let sr = StepOptions {
        rounding: Rounding::Stochastic { seed: 1 },
        step: 4,
        ..StepOptions::default()
    };
    let (mut pw, mut mw) = (p0.clone(), m0.clone());
    let whole = StepOptions {
        cautious: Cautious::Whole,
        ..sr
    };
    reference::step_with(&mut pw, &g, &mut mw, &hp, &whole).unwrap();
    let cuts = [0, 1, 777, 2048, n];
    let agreeing: u64 = cuts
        .windows(2)
        .map(|w| lion_optim::cautious_count(&g[w[0]..w[1]], &m0[w[0]..w[1]], &hp, &sr).unwrap())
        .sum();
    let group = Group::new(hp).with_options(StepOptions {
        cautious: Cautious::Shard {
            agreeing,
            numel: n as u64,
        },
        ..sr
    });
    let (mut ps, mut ms) = (p0, m0);
    let mut updates = Vec::new();
    let (mut p_rest, mut m_rest) = (&mut ps[..], &mut ms[..]);
    for w in cuts.windows(2) {
        let (p, pr) = p_rest.split_at_mut(w[1] - w[0]);
        let (m, mr) = m_rest.split_at_mut(w[1] - w[0]);
        (p_rest, m_rest) = (pr, mr);
        updates.push(
            Update::new(p, &g[w[0]..w[1]], m)
                .offset(w[0] as u64)
                .stream(0)
                .step(4),
        );
    }
    assert_eq!(
        lion_optim::step_many(&mut updates, &[group]),
        Ok(Outcome::Applied)
    );
    drop(updates);
    assert_same(&ps, &pw, &|| "params".into());
    assert_same(&ms, &mw, &|| "momentum".into());
}

#[cfg(feature = "rayon")]
mod parallel {
    use super::*;
    use lion_optim::{PAR_BLOCK, PAR_THRESHOLD};

    fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    /// Hundreds of small tensors and a few large ones (every dtype combination, every group:
    /// stochastic rounding and the cautious variant included): the step spread over two threads
    /// gives the bytes of one thread and of the reference.
    #[test]
    fn a_whole_model_step_on_many_threads_is_bit_identical() {
        let mut rng = Rng(21);
        let mut lens = small_lens(400, &mut rng);
        lens.extend([
            PAR_BLOCK * 2 + 17,
            PAR_THRESHOLD + 5,
            PAR_BLOCK - 1,
            3 * PAR_BLOCK,
        ]);
        lens.rotate_right(2); // large tensors at both ends and in the middle of the batches
        let total: usize = lens.iter().sum();
        assert!(total >= PAR_THRESHOLD);
        let mut many = model(&lens, 22);
        let mut one = model(&lens, 22);
        for t in 0..3 {
            let grads = many.grads(&mut rng);
            let outcome = in_pool(2, || many.step(&grads, t == 1));
            assert_eq!(outcome, Outcome::Applied);
            in_pool(1, || one.step(&grads, t == 1));
            many.check(&format!("two threads, step {t}"));
            one.check(&format!("one thread, step {t}"));
        }
    }

    #[test]
    fn a_parallel_step_skips_a_non_finite_gradient_anywhere() {
        let mut rng = Rng(23);
        let lens = vec![PAR_THRESHOLD; 3];
        let mut m = model(&lens, 24);
        m.opt
            .update_groups(|_, g| g.options.skip_non_finite = true)
            .unwrap();
        let mut grads = m.grads(&mut rng);
        let before = m.opt.state_to_vec();
        let params = m.params.clone();
        match &mut grads[2] {
            Buf::F32(v) => v[PAR_THRESHOLD - 1] = f32::INFINITY,
            Buf::F16(v) => v[PAR_THRESHOLD - 1] = f16::INFINITY,
            Buf::Bf16(v) => v[PAR_THRESHOLD - 1] = bf16::INFINITY,
        }
        let outcome = in_pool(2, || m.step(&grads, false));
        assert_eq!(outcome, Outcome::SkippedNonFinite);
        for (a, b) in m.params.iter().zip(&params) {
            assert_bufs(a, b, &|| "a skipped step wrote".into());
        }
        // Everything but the skip counter (bytes 16..24) and the checksum (the last 4 bytes).
        let (after, end) = (m.opt.state_to_vec(), before.len() - 4);
        assert_eq!(
            (&after[..16], &after[24..end]),
            (&before[..16], &before[24..end])
        );
        assert_eq!(m.opt.skipped_steps(), 1);
    }
}

#[cfg(feature = "safetensors")]
mod safetensors {
    use super::*;
    use lion_optim::CheckpointError;

    fn trained() -> Lion<Vec<Buffer>> {
        let mut rng = Rng(31);
        let mut m = model(&[5, 0, 17, 64, 3], 32);
        for t in 0..2 {
            let grads = m.grads(&mut rng);
            m.step(&grads, t == 1);
        }
        m.opt
    }

    fn same_shape() -> Lion<Vec<Buffer>> {
        model(&[5, 0, 17, 64, 3], 33).opt
    }

    /// The file with its checksum computed again, after an edit on purpose: the loader's own
    /// checks (not the checksum) must refuse it.
    fn resealed(file: &[u8]) -> Vec<u8> {
        let key = br#""checksum":""#;
        let at = file
            .windows(key.len())
            .position(|w| w == key)
            .expect("a checksum")
            + key.len();
        let mut b = file.to_vec();
        b[at..at + 8].copy_from_slice(b"00000000");
        let crc = support::crc32c(0, &b);
        b[at..at + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
        b
    }

    /// `find` replaced by `with` (same length, so the header stays well-formed).
    fn edited(file: &[u8], find: &str, with: &str) -> Vec<u8> {
        assert_eq!(find.len(), with.len());
        let at = file
            .windows(find.len())
            .position(|w| w == find.as_bytes())
            .unwrap_or_else(|| panic!("{find} not in the file"));
        let mut b = file.to_vec();
        b[at..at + find.len()].copy_from_slice(with.as_bytes());
        b
    }

    #[test]
    fn round_trip_and_the_same_bytes_every_time() {
        let opt = trained();
        let file = opt.save_safetensors().unwrap();
        assert_eq!(opt.save_safetensors().unwrap(), file);
        let mut other = same_shape();
        other.load_safetensors(&file).unwrap();
        assert_eq!(other.state_to_vec(), opt.state_to_vec());
        assert_eq!(other.save_safetensors().unwrap(), file);
        let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&file[8..8 + header_len]).unwrap();
        assert!(header.contains("\"layer.2.weight.exp_avg\":{\"dtype\":\"BF16\",\"shape\":[17]"));
        assert!(header.contains("\"steps\":\"2\""));
        assert!(header.contains("\"version\":\"2\""));
        assert!(header.contains("\"group.1.skip_non_finite\":\"false\""));
        assert!(!header.contains("\"skip_non_finite\":"));
        assert_eq!((8 + header_len) % 8, 0);
        // The checksum: the CRC-32C of the file with its 8 hex digits read as zeros.
        assert_eq!(resealed(&file), file);
        let key = "\"checksum\":\"";
        let at = header.find(key).unwrap() + key.len();
        assert!(header[at..at + 8].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn every_bad_file_is_refused_and_changes_nothing() {
        let file = trained().save_safetensors().unwrap();
        let mut opt = same_shape();
        let before = opt.state_to_vec();
        let mut bad: Vec<(String, Vec<u8>)> = vec![
            ("empty".into(), vec![]),
            (
                "not safetensors".into(),
                b"LIONOPT2 and more bytes".to_vec(),
            ),
        ];
        // What is edited: (what, find, with).
        let edits = [
            ("version", r#""version":"2""#, r#""version":"3""#),
            (
                "version 1 (with a checksum, without the global skip flag)",
                r#""version":"2""#,
                r#""version":"1""#,
            ),
            ("the checksum's key", r#""checksum""#, r#""checksuM""#),
            (
                "a skip flag",
                r#""group.1.skip_non_finite":"false""#,
                r#""group.1.skip_non_finite":"fals3""#,
            ),
            ("format", "lion-optim", "lion-optiX"),
            ("steps", r#""steps":"2""#, r#""steps":"x""#),
            (
                "a group's lr",
                r#""group.0.lr":"0.01""#,
                r#""group.0.lr":"-0.1""#,
            ),
            ("rounding", r#""stochastic""#, r#""stochastiq""#),
            ("group count", r#""groups":"3""#, r#""groups":"2""#),
            ("a name", "layer.3.weight.exp_avg", "layer.9.weight.exp_avg"),
            ("a dtype", r#""dtype":"F16""#, r#""dtype":"I16""#),
            ("a shape", r#""shape":[17]"#, r#""shape":[16]"#),
            (
                "a tensor's group",
                r#""tensor.layer.4.weight.group":"1""#,
                r#""tensor.layer.4.weight.group":"0""#,
            ),
        ];
        bad.extend(
            edits
                .iter()
                .map(|&(what, find, with)| (what.to_string(), edited(&file, find, with))),
        );
        // Every edit as it is (the checksum refuses it) and sealed again (the loader's own
        // checks refuse it).
        let sealed: Vec<(String, Vec<u8>)> = bad[2..]
            .iter()
            .filter(|(what, _)| what != "the checksum's key")
            .map(|(what, b)| (format!("{what}, sealed again"), resealed(b)))
            .collect();
        for (what, b) in &bad[2..] {
            // (A shape that does not fit the data is not a safetensors file at all; without
            // its key the checksum is missing.)
            if !["a shape", "the checksum's key"].contains(&what.as_str()) {
                let got = opt.load_safetensors(b);
                assert_eq!(
                    got,
                    Err(Error::Checkpoint(CheckpointError::Checksum)),
                    "{what}"
                );
            }
        }
        bad.extend(sealed);
        for n in [0, 7, 8, 100, file.len() / 2, file.len() - 1] {
            bad.push((format!("truncated to {n}"), file[..n].to_vec()));
        }
        // A truncated file says how many bytes it has and needs.
        let header_end = 8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        for (n, needed) in [
            (0, 8),
            (7, 8),
            (100, header_end),
            (file.len() - 1, file.len()),
        ] {
            assert_eq!(
                opt.load_safetensors(&file[..n]),
                Err(Error::Checkpoint(CheckpointError::Truncated {
                    len: n,
                    needed
                })),
                "truncated to {n}"
            );
        }
        for (what, bytes) in &bad {
            let got = opt.load_safetensors(bytes);
            assert!(matches!(got, Err(Error::Checkpoint(_))), "{what}: {got:?}");
            assert_eq!(opt.state_to_vec(), before, "{what} changed the optimizer");
        }
        // Another model: other names, another length.
        let mut other = model(&[5, 0, 17, 64, 4], 34).opt;
        assert_eq!(
            other.load_safetensors(&file),
            Err(Error::Checkpoint(CheckpointError::TensorShape { index: 4 }))
        );
        let mut renamed = Lion::new(Hyperparams::default()).unwrap();
        renamed.add(TensorSpec::new(5).name("x")).unwrap();
        assert!(renamed.load_safetensors(&file).is_err());
        // Every byte flipped once: refused (the checksum covers the momentum data too; see
        // optimizer::damage for every value of every byte).
        let mut o = same_shape();
        let before = o.state_to_vec();
        for at in 0..file.len() {
            let mut b = file.clone();
            b[at] ^= 0x20;
            assert!(o.load_safetensors(&b).is_err(), "byte {at} flipped");
            assert_eq!(o.state_to_vec(), before);
        }
    }
}
