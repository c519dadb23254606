//! The 8-bit momentum: every backend bit-identical to `reference::step_q8_with` (through the
//! public many-tensor step), shards equal to the whole tensor, `Lion` with 8-bit tensors
//! (sequential, parallel, both state formats), the format's edge cases, and bad input.

use crate::common::{HyperparamsExt, assert_same, backends_under_test};
use lion_optim::{
    Backend, Cautious, Element, Error, Group, Hyperparams, Lion, MomentumDtype, MomentumRef,
    Q8_BLOCK, Q8_MAP, Q8Mut, Q8Ref, Rounding, SliceRef, StepOptions, Tensor, TensorSpec, Update,
    bf16, f16, reference,
};
use support::{Rng, SPECIAL_F32, hyperparams, option_sets, value};

/// The dtype pairs of parameters and gradients.
macro_rules! pairs {
    ($f:ident) => {
        [
            $f::<f32, f32> as fn(Backend, u64),
            $f::<f32, f16>,
            $f::<f32, bf16>,
            $f::<f16, f32>,
            $f::<f16, f16>,
            $f::<f16, bf16>,
            $f::<bf16, f32>,
            $f::<bf16, f16>,
            $f::<bf16, bf16>,
        ]
    };
}

/// Lengths around the block size and every backend's lane count (fewer under Miri).
fn lengths() -> Vec<usize> {
    if cfg!(miri) {
        return vec![0, 1, 17, 257];
    }
    let mut v: Vec<usize> = (0..=20).collect();
    for k in [64usize, 256, 512, 768, 1024, 4096] {
        v.extend([k - 17, k - 1, k, k + 1, k + 9]);
    }
    v
}

/// Block scales worth testing: zero, ordinary, tiny (subnormal), huge, infinite, NaN.
fn scale(rng: &mut Rng) -> f32 {
    match rng.below(10) {
        0 => 0.0,
        1 => f32::from_bits(1 + rng.below(0x7f_ffff) as u32), // subnormal
        2 => f32::INFINITY,
        3 => f32::NAN,
        4 => 3e38,
        _ => rng.uniform() * 2.0,
    }
}

/// The options of `option_sets` with an offset at a block boundary (an 8-bit step's offset
/// must be one).
fn q8_option_sets() -> Vec<StepOptions> {
    option_sets()
        .into_iter()
        .chain([StepOptions {
            skip_non_finite: true,
            rounding: Rounding::Stochastic { seed: 77 },
            ..StepOptions::default()
        }])
        .map(|o| StepOptions {
            offset: o.offset / Q8_BLOCK as u64 * Q8_BLOCK as u64,
            ..o
        })
        .collect()
}

/// `backend` against the reference for one dtype pair: every length, option set and
/// hyperparameter set, at an unaligned position in padded buffers (the padding untouched).
fn check_pair<P: Element, G: Element>(backend: Backend, seed: u64) {
    let mut rng = Rng(seed | 1);
    for opts in q8_option_sets() {
        for hp in hyperparams() {
            for len in lengths() {
                let at = rng.below(5);
                let total = at + len + 3;
                let p: Vec<P> = (0..total).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
                let g: Vec<G> = (0..total).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
                let codes: Vec<u8> = (0..total).map(|_| rng.next_u64() as u8).collect();
                let blocks = len.div_ceil(Q8_BLOCK);
                let absmax: Vec<f32> = (0..blocks + 2).map(|_| scale(&mut rng)).collect();
                let r = at..at + len;
                let (pd, gd) = (P::DTYPE, G::DTYPE);
                let ctx = || format!("{backend}, P={pd:?} G={gd:?}, len {len}, {hp:?}, {opts:?}");

                let (mut p1, mut c1, mut a1) = (p.clone(), codes.clone(), absmax.clone());
                let m = Q8Mut::new(&mut c1[r.clone()], &mut a1[1..1 + blocks]).unwrap();
                let u = Update::from_slices((&mut p1[r.clone()]).into(), (&g[r.clone()]).into(), m)
                    .step(opts.step)
                    .offset(opts.offset);
                let group = Group::new(*hp).with_options(opts);
                let got = backend.step_many(&mut [u], &[group]);

                let (mut p2, mut c2, mut a2) = (p.clone(), codes.clone(), absmax.clone());
                let m = Q8Mut::new(&mut c2[r.clone()], &mut a2[1..1 + blocks]).unwrap();
                let want = reference::step_q8_with(&mut p2[r.clone()], &g[r.clone()], m, hp, &opts);
                assert_eq!(got, want, "outcome, {}", ctx());
                assert_same(&p1, &p2, &|| format!("params, {}", ctx()));
                assert_eq!(c1, c2, "codes, {}", ctx());
                assert_same(&a1, &a2, &|| format!("absmax, {}", ctx()));
            }
        }
    }
}

#[test]
fn every_backend_matches_the_reference() {
    for backend in backends_under_test() {
        eprintln!("8-bit momentum: backend {backend}");
        for (i, pair) in pairs!(check_pair).iter().enumerate() {
            pair(backend, 0x8b17 + i as u64);
        }
    }
}

/// A tensor stepped in shards (at block boundaries, with the whole tensor's cautious count)
/// gets exactly the bytes of the whole tensor stepped at once.
#[test]
fn shards_equal_the_whole() {
    let n: usize = if cfg!(miri) { 600 } else { 5000 };
    let mut rng = Rng(5);
    let hp = Hyperparams::default().lr(1e-2).weight_decay(0.1);
    let p: Vec<bf16> = (0..n)
        .map(|_| bf16::from_f32(rng.range(-1.0, 1.0)))
        .collect();
    let g: Vec<f32> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
    let codes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    let absmax: Vec<f32> = (0..n.div_ceil(256)).map(|_| rng.uniform()).collect();
    let options = StepOptions {
        rounding: Rounding::Stochastic { seed: 3 },
        step: 11,
        ..StepOptions::default()
    };
    let q = Q8Ref::new(&codes, &absmax).unwrap();
    let agreeing = SliceRef::from(&g[..])
        .cautious_count(q, &hp, &options)
        .unwrap();

    let (mut p1, mut c1, mut a1) = (p.clone(), codes.clone(), absmax.clone());
    let whole = StepOptions {
        cautious: Cautious::Whole,
        ..options
    };
    let m = Q8Mut::new(&mut c1, &mut a1).unwrap();
    reference::step_q8_with(&mut p1, &g, m, &hp, &whole).unwrap();

    let (mut p2, mut c2, mut a2) = (p.clone(), codes.clone(), absmax.clone());
    let cut = 512.min(n);
    let shard = Group::new(hp).with_options(StepOptions {
        cautious: Cautious::Shard {
            agreeing,
            numel: n as u64,
        },
        ..options
    });
    {
        let (pa, pb) = p2.split_at_mut(cut);
        let (ca, cb) = c2.split_at_mut(cut);
        let (aa, ab) = a2.split_at_mut(cut / 256);
        let ua = Update::from_slices(pa.into(), (&g[..cut]).into(), Q8Mut::new(ca, aa).unwrap())
            .step(11);
        let ub = Update::from_slices(pb.into(), (&g[cut..]).into(), Q8Mut::new(cb, ab).unwrap())
            .step(11)
            .offset(cut as u64)
            .stream(0);
        lion_optim::step_many(&mut [ua, ub], &[shard]).unwrap();
    }
    assert_eq!(p1, p2);
    assert_eq!(c1, c2);
    assert_eq!(a1, a2);
}

#[test]
fn bad_input_is_refused_and_nothing_written() {
    let (mut p, g) = (vec![1.0f32; 600], vec![1.0f32; 600]);
    let (mut codes, mut absmax) = (vec![127u8; 600], vec![0.0f32; 3]);
    // One scale per started block of 256.
    assert_eq!(
        Q8Mut::new(&mut codes, &mut absmax[..2]).unwrap_err(),
        Error::LengthMismatch {
            what: "absmax",
            expected: 3,
            found: 2
        }
    );
    // A shard must start at a block boundary.
    let m = Q8Mut::new(&mut codes, &mut absmax).unwrap();
    let u = Update::from_slices((&mut p[..]).into(), (&g[..]).into(), m).offset(100);
    let e = lion_optim::step_many(&mut [u], &[Group::default()]).unwrap_err();
    assert!(
        matches!(e, Error::InvalidHyperparameter { name: "offset", .. }),
        "{e}"
    );
    // The same alone (`Update::apply`), with a second update (step_many's loop over many).
    let m = Q8Mut::new(&mut codes, &mut absmax).unwrap();
    let u = Update::from_slices((&mut p[..]).into(), (&g[..]).into(), m).offset(100);
    assert_eq!(u.apply(&Group::default()).unwrap_err(), e);
    let (mut p2, mut m2) = ([1.0f32; 4], [0.0f32; 4]);
    let m = Q8Mut::new(&mut codes, &mut absmax).unwrap();
    let u = Update::from_slices((&mut p[..]).into(), (&g[..]).into(), m).offset(100);
    let u2 = Update::new(&mut p2, &[1.0f32; 4], &mut m2);
    let e = lion_optim::step_many(&mut [u2, u], &[Group::default()]).unwrap_err();
    assert!(
        matches!(e, Error::InvalidHyperparameter { name: "offset", .. }),
        "{e}"
    );
    assert_eq!((p2, m2), ([1.0f32; 4], [0.0f32; 4]));
    // Lengths.
    let m = Q8Mut::new(&mut codes[..599], &mut absmax).unwrap();
    let u = Update::from_slices((&mut p[..]).into(), (&g[..]).into(), m);
    assert!(lion_optim::step_many(&mut [u], &[Group::default()]).is_err());
    let m = Q8Mut::new(&mut codes[..599], &mut absmax).unwrap();
    let u = Update::from_slices((&mut p[..]).into(), (&g[..]).into(), m);
    assert!(u.apply(&Group::default()).is_err());
    assert!(p.iter().all(|&x| x == 1.0));
    assert!(codes.iter().all(|&c| c == 127) && absmax.iter().all(|&a| a == 0.0));
}

/// The format's edges: a fresh zero state stays zero under zero gradients; a block whose
/// momentum goes non-finite becomes NaN as a whole (the others are untouched), unless the step
/// skips non-finite gradients; a block whose largest momentum is subnormal is stored as zero;
/// bitsandbytes' fresh state (codes 0, scale 0) is a zero momentum too.
#[test]
fn edge_cases_of_the_format() {
    let hp = Hyperparams::default();
    let group = [Group::new(hp)];
    let step = |p: &mut [f32], g: &[f32], c: &mut [u8], a: &mut [f32], group: &[Group]| {
        let m = Q8Mut::new(c, a).unwrap();
        lion_optim::step_many(&mut [Update::from_slices(p.into(), g.into(), m)], group)
    };
    let (mut p, mut c, mut a) = (vec![0.5f32; 700], vec![127u8; 700], vec![0.0f32; 3]);
    step(&mut p, &[0.0; 700], &mut c, &mut a, &group).unwrap();
    assert!(c.iter().all(|&x| x == 127) && a == [0.0; 3]);

    let mut g = vec![0.01f32; 700];
    g[300] = f32::INFINITY;
    step(&mut p, &g, &mut c, &mut a, &group).unwrap();
    assert!(a[1].is_nan() && c[256..512].iter().all(|&x| x == 127));
    assert!(a[0] > 0.0 && a[2] > 0.0, "{a:?}");
    let skip = [Group::new(hp).with_options(StepOptions {
        skip_non_finite: true,
        ..StepOptions::default()
    })];
    let before = (p.clone(), c.clone(), a.clone());
    assert_eq!(
        step(&mut p, &g, &mut c, &mut a, &skip).unwrap(),
        lion_optim::Outcome::SkippedNonFinite
    );
    assert_eq!((&p, &c), (&before.0, &before.1));

    // Tiny momentum: flushed to a zero block.
    let (mut c, mut a) = (vec![127u8; 256], vec![0.0f32]);
    let tiny = vec![1e-39f32; 256]; // subnormal
    let hp0 = [Group::new(Hyperparams { beta2: 0.0, ..hp })];
    step(&mut vec![0.0; 256], &tiny, &mut c, &mut a, &hp0).unwrap();
    assert_eq!(a, [0.0]);

    // bitsandbytes' fresh state decodes to (negative) zero: the step equals a zero state's.
    let (mut p1, mut c1, mut a1) = (vec![0.5f32; 300], vec![0u8; 300], vec![0.0f32; 2]);
    let (mut p2, mut c2, mut a2) = (vec![0.5f32; 300], vec![127u8; 300], vec![0.0f32; 2]);
    let g: Vec<f32> = (0..300).map(|i| (i as f32 - 150.0) * 1e-3).collect();
    step(&mut p1, &g, &mut c1, &mut a1, &group).unwrap();
    step(&mut p2, &g, &mut c2, &mut a2, &group).unwrap();
    assert_eq!((p1, c1, a1), (p2, c2, a2));
    assert_eq!(Q8_MAP[0] * 0.0, -0.0);
}

/// `Lion` with 8-bit tensors: the same bytes as the reference, step after step, beside an f32
/// tensor; state round trips through both formats and resumes bit-identically.
#[test]
fn lion_with_8bit_tensors() {
    let n = if cfg!(miri) { 300 } else { 3000 };
    let hp = Hyperparams::default().lr(1e-2).weight_decay(0.05);
    let sr = StepOptions {
        rounding: Rounding::Stochastic { seed: 21 },
        ..StepOptions::default()
    };
    let mut opt = Lion::new(hp).unwrap();
    opt.set_group(
        lion_optim::GroupId::DEFAULT,
        Group::new(hp).with_options(sr),
    )
    .unwrap();
    let w = opt
        .add(TensorSpec::new(n).name("w").momentum(MomentumDtype::Q8))
        .unwrap();
    let b = opt.add(TensorSpec::new(10).name("b")).unwrap();
    assert_eq!(opt.tensor(w).unwrap().momentum, MomentumDtype::Q8);

    let mut rng = Rng(9);
    let mut pw: Vec<bf16> = (0..n)
        .map(|_| bf16::from_f32(rng.range(-1.0, 1.0)))
        .collect();
    let mut pb = vec![0.1f32; 10];
    let (mut rw, mut rb) = (pw.clone(), pb.clone());
    let (mut codes, mut absmax) = (vec![127u8; n], vec![0.0f32; n.div_ceil(256)]);
    let mut mb = vec![0.0f32; 10];
    for step in 0..4u64 {
        let gw: Vec<f32> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
        let gb: Vec<f32> = (0..10).map(|_| rng.range(-1.0, 1.0)).collect();
        opt.step(&mut [
            Tensor::new(&mut pw, &gw).of(w),
            Tensor::new(&mut pb, &gb).of(b),
        ])
        .unwrap();
        // The reference: the group's seed mixed with each tensor's stream (its index).
        let mix = |stream: u64| Rounding::Stochastic {
            seed: 21 ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        };
        let o = |stream| StepOptions {
            rounding: mix(stream),
            step,
            ..StepOptions::default()
        };
        let m = Q8Mut::new(&mut codes, &mut absmax).unwrap();
        reference::step_q8_with(&mut rw, &gw, m, &hp, &o(0)).unwrap();
        reference::step_with(&mut rb, &gb, &mut mb, &hp, &o(1)).unwrap();
        assert_eq!(pw, rw, "step {step}");
        assert_eq!(pb, rb, "step {step}");
        let MomentumRef::Q8(q) = opt.momentum(w).unwrap() else {
            panic!("8-bit momentum expected")
        };
        assert_eq!(
            (q.codes(), q.absmax()),
            (&codes[..], &absmax[..]),
            "step {step}"
        );
    }

    // Both state formats, and a resumed step equal to the uninterrupted one.
    let fresh = || {
        let mut o = Lion::new(hp).unwrap();
        o.set_group(
            lion_optim::GroupId::DEFAULT,
            Group::new(hp).with_options(sr),
        )
        .unwrap();
        o.add(TensorSpec::new(n).name("w").momentum(MomentumDtype::Q8))
            .unwrap();
        o.add(TensorSpec::new(10).name("b")).unwrap();
        o
    };
    let compact = opt.state_to_vec();
    let mut resumed = fresh();
    resumed.load_state(&compact).unwrap();
    assert_eq!(resumed.state_to_vec(), compact);
    #[cfg(feature = "safetensors")]
    {
        let file = opt.save_safetensors().unwrap();
        let mut from_file = fresh();
        from_file.load_safetensors(&file).unwrap();
        assert_eq!(from_file.state_to_vec(), compact);
        // The codes and scales as two tensors named after the parameter.
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        assert_eq!(st.tensor("w.exp_avg.codes").unwrap().data().len(), n);
        assert_eq!(
            st.tensor("w.exp_avg.absmax").unwrap().shape(),
            [n.div_ceil(256)]
        );
    }
    let g: Vec<f32> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
    let (mut p1, mut p2) = (pw.clone(), pw.clone());
    let gb = vec![0.5f32; 10];
    let (mut b1, mut b2) = (pb.clone(), pb.clone());
    opt.step(&mut [
        Tensor::new(&mut p1, &g).of(w),
        Tensor::new(&mut b1, &gb).of(b),
    ])
    .unwrap();
    resumed
        .step(&mut [
            Tensor::new(&mut p2, &g).of(w),
            Tensor::new(&mut b2, &gb).of(b),
        ])
        .unwrap();
    assert_eq!((p1, b1), (p2, b2));
    assert_eq!(opt.state_to_vec(), resumed.state_to_vec());
}

/// With `rayon`, a large model with 8-bit tensors spread over the pool gives the bytes of one
/// thread.
#[cfg(feature = "rayon")]
#[test]
fn parallel_equals_sequential() {
    let n = (1 << 18) + 1000;
    let hp = Hyperparams::default();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut opt = Lion::new(hp).unwrap();
            opt.add(TensorSpec::new(n).momentum(MomentumDtype::Q8))
                .unwrap();
            opt.update_groups(|_, g| {
                g.options.cautious = Cautious::Whole;
                g.options.rounding = Rounding::Stochastic { seed: 4 };
            })
            .unwrap();
            let mut rng = Rng(2);
            let mut p: Vec<f32> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
            for _ in 0..2 {
                let g: Vec<f32> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
                opt.step(&mut [Tensor::new(&mut p, &g)]).unwrap();
            }
            (p, opt.state_to_vec())
        })
    };
    assert_eq!(run(1), run(2));
}
