//! State files of the previous version still load (issue 21: the formats gained a checksum
//! and per-group skip flags, versioned so that older files load): `tests/data/` holds a
//! version-2 compact checkpoint (`LIONOPT2`, no checksum, one global skip flag), a version-1
//! safetensors file (no checksum, a global `skip_non_finite` key), and what the previous code
//! computed around them (`legacy_expected.bin`), all written by lion-optim 0.1 at commit
//! cb9c8ba (the commit before the restructure) for the setup below.
//!
//! Each file loads into an optimizer of the same structure set up with default settings: the
//! counts, the learning-rate scale, every group's settings (the old global skip flag became
//! every group's `skip_non_finite`) and every momentum element are the file's; the next two
//! steps give exactly the bytes the previous code gave after loading its own file; and the
//! loaded state is, byte for byte in both current formats, the state of the same run made from
//! scratch with this version.
//!
//! The setup (the generator, a small program over lion-optim 0.1, does exactly this):
//!
//! * group 0: lr 1e-2, beta1 0.9, beta2 0.99, weight decay 0.1; stochastic rounding, seed 42.
//! * group 1: lr 3e-3, beta1 0.95, beta2 0.98, weight decay 0.05; stochastic rounding, seed 7,
//!   `grad_unscale` 0.5, maximize, cautious (whole), fully decoupled decay with `max_lr` 1e-2.
//! * tensors: 0 "w" (37, bf16 momentum, params declared f32, group 0); 1 "b" (5, f16
//!   momentum, group 1); 2 unnamed (9, f32 momentum, group 1, stream 11); 3 "e" (16, bf16
//!   momentum, params declared f16, group 0). Parameters passed as f32, bf16, f16, f16;
//!   gradients as bf16, f32, f16, f32.
//! * skipping non-finite steps on (0.1: `set_skip_non_finite(true)`); lr scale 0.5.
//! * parameter i of tensor k starts at ((7i + 3k) mod 13) / 8 - 0.75; gradient i of tensor k
//!   at call t is ((5i + 11k + 3t) mod 17) / 16 - 0.5 (exact in every dtype).
//! * calls t = 0, 1, 2, 3 (at t = 2 gradient 0 of tensor 2 is NaN: that call is skipped), so
//!   the files say 3 steps, 1 skipped; then calls t = 4 and t = 5.
//!
//! `legacy_expected.bin`: magic `LIONLEG1`, u32 record count, then per record: u8 name length,
//! the name, u8 dtype (0 f32, 1 f16, 2 bf16), u32 element count, the elements little-endian.
//! Records `params.{k}.{stage}` and `momentum.{k}.{stage}` for stage `save` (when the files
//! were written), `step1` (after t = 4) and `step2` (after t = 5).

use std::collections::HashMap;

use crate::common::fixture;
use lion_optim::{
    Buffer, Cautious, Dtype, Error, Group, GroupId, Hyperparams, Lion, Rounding, SliceRef,
    StepOptions, Tensor, TensorSpec, WeightDecay, bf16, f16,
};

type Opt = Lion<Vec<Buffer>>;

const LENS: [usize; 4] = [37, 5, 9, 16];
const PARAMS: [Dtype; 4] = [Dtype::F32, Dtype::Bf16, Dtype::F16, Dtype::F16];
const GRADS: [Dtype; 4] = [Dtype::Bf16, Dtype::F32, Dtype::F16, Dtype::F32];
const EXPECTED: &str = "tests/data/legacy_expected.bin";

fn group0() -> Group {
    Group::new(Hyperparams {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.99,
        weight_decay: 0.1,
    })
    .with_options(StepOptions {
        rounding: Rounding::Stochastic { seed: 42 },
        ..StepOptions::default()
    })
}

fn group1() -> Group {
    Group::new(Hyperparams {
        lr: 3e-3,
        beta1: 0.95,
        beta2: 0.98,
        weight_decay: 0.05,
    })
    .with_options(StepOptions {
        rounding: Rounding::Stochastic { seed: 7 },
        grad_unscale: Some(0.5),
        maximize: true,
        cautious: Cautious::Whole,
        weight_decay: WeightDecay::FullyDecoupled { max_lr: 1e-2 },
        ..StepOptions::default()
    })
}

/// The group with its non-finite steps skipped (what the old global flag means now).
fn skipping(g: Group) -> Group {
    g.with_options(StepOptions {
        skip_non_finite: true,
        ..g.options
    })
}

/// The structure, with these settings of the groups.
fn structure(g0: Group, g1: Group) -> Opt {
    let mut opt = Lion::new(g0.hp).unwrap();
    opt.set_group(GroupId::DEFAULT, g0).unwrap();
    let g1 = opt.add_group(g1).unwrap();
    let specs = [
        TensorSpec::new(37)
            .name("w")
            .momentum(Dtype::Bf16)
            .params(Dtype::F32),
        TensorSpec::new(5).name("b").momentum(Dtype::F16).group(g1),
        TensorSpec::new(9).momentum(Dtype::F32).group(g1).stream(11),
        TensorSpec::new(16)
            .name("e")
            .momentum(Dtype::Bf16)
            .params(Dtype::F16),
    ];
    for spec in specs {
        opt.add(spec).unwrap();
    }
    opt
}

fn from_fn(dtype: Dtype, len: usize, f: impl Fn(usize) -> f32) -> Buffer {
    match dtype {
        Dtype::F32 => Buffer::F32((0..len).map(f).collect()),
        Dtype::F16 => Buffer::F16((0..len).map(|i| f16::from_f32(f(i))).collect()),
        Dtype::Bf16 => Buffer::Bf16((0..len).map(|i| bf16::from_f32(f(i))).collect()),
    }
}

fn initial_params() -> Vec<Buffer> {
    (0..4)
        .map(|k| {
            from_fn(PARAMS[k], LENS[k], |i| {
                ((7 * i + 3 * k) % 13) as f32 / 8.0 - 0.75
            })
        })
        .collect()
}

fn grads(t: usize) -> Vec<Buffer> {
    (0..4)
        .map(|k| {
            let mut g = from_fn(GRADS[k], LENS[k], |i| {
                ((5 * i + 11 * k + 3 * t) % 17) as f32 / 16.0 - 0.5
            });
            if let (2, 2, Buffer::F16(v)) = (t, k, &mut g) {
                v[0] = f16::NAN;
            }
            g
        })
        .collect()
}

fn step(opt: &mut Opt, params: &mut [Buffer], t: usize) {
    let g = grads(t);
    let mut tensors: Vec<Tensor<'_>> = params
        .iter_mut()
        .zip(&g)
        .map(|(p, g)| Tensor::from_slices(p.elements_mut().unwrap(), g.elements().unwrap()))
        .collect();
    opt.step(&mut tensors).unwrap();
}

fn owned(m: SliceRef<'_>) -> Buffer {
    match m {
        SliceRef::F32(s) => Buffer::F32(s.to_vec()),
        SliceRef::F16(s) => Buffer::F16(s.to_vec()),
        SliceRef::Bf16(s) => Buffer::Bf16(s.to_vec()),
    }
}

/// The buffer's bytes, little-endian (bit for bit: NaN payloads and zero signs included).
fn le(b: &Buffer) -> Vec<u8> {
    match b {
        Buffer::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Buffer::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Buffer::Bf16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => unreachable!("no 8-bit momentum in the legacy files"),
    }
}

/// The records of `legacy_expected.bin`.
fn expected(bytes: &[u8]) -> HashMap<String, Buffer> {
    assert_eq!(&bytes[..8], b"LIONLEG1");
    let mut at = 8;
    let mut take = |n: usize| {
        let s = &bytes[at..at + n];
        at += n;
        s
    };
    let count = u32::from_le_bytes(take(4).try_into().unwrap());
    let mut out = HashMap::new();
    for _ in 0..count {
        let name_len = usize::from(take(1)[0]);
        let name = String::from_utf8(take(name_len).to_vec()).unwrap();
        let dtype = Dtype::ALL[usize::from(take(1)[0])];
        let len = u32::from_le_bytes(take(4).try_into().unwrap()) as usize;
        let data = take(len * dtype.size());
        let buffer = match dtype {
            Dtype::F32 => Buffer::F32(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::F16 => Buffer::F16(
                data.chunks_exact(2)
                    .map(|c| f16::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::Bf16 => Buffer::Bf16(
                data.chunks_exact(2)
                    .map(|c| bf16::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
        };
        out.insert(name, buffer);
    }
    assert_eq!(at, bytes.len());
    assert_eq!(out.len(), 4 * 2 * 3);
    out
}

type Load = fn(&mut Opt, &[u8]) -> Result<(), Error>;

/// Loads the legacy file `file` with `load` and checks it (see the module docs).
fn check(test: &str, file: &str, marker: &[u8], load: Load) {
    let (Some(path), Some(expected_path)) = (fixture(file, test), fixture(EXPECTED, test)) else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let has = |s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
    assert!(has(marker), "{file} is not a legacy file");
    assert!(
        !has(b"LIONCRC3") && !has(b"checksum"),
        "{file} has a checksum"
    );
    let want = expected(&std::fs::read(expected_path).unwrap());
    let record = |name: String| &want[&name];

    // Into the same structure with default settings: everything comes from the file.
    let mut opt = structure(Group::default(), Group::default());
    load(&mut opt, &bytes).unwrap();
    assert_eq!((opt.steps(), opt.skipped_steps()), (3, 1));
    assert_eq!(opt.lr_scale(), 0.5);
    assert_eq!(*opt.group(GroupId::DEFAULT).unwrap(), skipping(group0()));
    assert_eq!(*opt.group(GroupId::new(1)).unwrap(), skipping(group1()));
    for k in 0..4 {
        let m = owned(opt.momentum(k).unwrap().as_slice_ref().unwrap());
        let saved = record(format!("momentum.{k}.save"));
        assert_eq!(le(&m), le(saved), "{file}: momentum {k}");
        assert!(le(&m).iter().any(|b| *b != 0), "momentum {k} is zero");
    }

    // The state of this version's own run of the setup, from scratch, at the same point: the
    // same bytes in both current formats (and the same parameters as the previous version's).
    let mut fresh = structure(skipping(group0()), skipping(group1()));
    fresh.set_lr_scale(0.5).unwrap();
    let mut fresh_params = initial_params();
    for t in 0..4 {
        step(&mut fresh, &mut fresh_params, t);
    }
    for (k, p) in fresh_params.iter().enumerate() {
        assert_eq!(le(p), le(record(format!("params.{k}.save"))), "params {k}");
    }
    let state = opt.state_to_vec();
    assert_eq!(&state[..8], b"LIONCRC3");
    assert_eq!(state, fresh.state_to_vec(), "{file}: the loaded state");
    #[cfg(feature = "safetensors")]
    assert_eq!(
        opt.save_safetensors().unwrap(),
        fresh.save_safetensors().unwrap()
    );

    // The next two steps: the bytes the previous version gave after loading its own file.
    let mut params: Vec<Buffer> = (0..4)
        .map(|k| record(format!("params.{k}.save")).clone())
        .collect();
    for (stage, t) in [("step1", 4), ("step2", 5)] {
        step(&mut opt, &mut params, t);
        step(&mut fresh, &mut fresh_params, t);
        for (k, p) in params.iter().enumerate() {
            let m = owned(opt.momentum(k).unwrap().as_slice_ref().unwrap());
            let want_p = record(format!("params.{k}.{stage}"));
            assert_eq!(le(p), le(want_p), "{stage}: params {k}");
            let saved = record(format!("momentum.{k}.{stage}"));
            assert_eq!(le(&m), le(saved), "{stage}: momentum {k}");
        }
    }
    assert_eq!((opt.steps(), opt.skipped_steps()), (5, 1));
    assert_eq!(opt.state_to_vec(), fresh.state_to_vec());
}

#[test]
fn compact_v2_checkpoint_loads_and_resumes_as_before() {
    check(
        "legacy::compact_v2_checkpoint_loads_and_resumes_as_before",
        "tests/data/legacy_v2.lionopt",
        b"LIONOPT2",
        |o, b| o.load_state(b),
    );
}

#[cfg(feature = "safetensors")]
#[test]
fn safetensors_v1_file_loads_and_resumes_as_before() {
    check(
        "legacy::safetensors_v1_file_loads_and_resumes_as_before",
        "tests/data/legacy_v1.safetensors",
        br#""version":"1""#,
        |o, b| o.load_safetensors(b),
    );
}

/// A legacy file is refused like a current one when it does not fit: a version-2 checkpoint
/// cut short or with a changed structure (it has no checksum: the parser's own checks).
#[test]
fn a_truncated_legacy_checkpoint_is_refused() {
    let test = "legacy::a_truncated_legacy_checkpoint_is_refused";
    let Some(path) = fixture("tests/data/legacy_v2.lionopt", test) else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let mut opt = structure(Group::default(), Group::default());
    let before = opt.state_to_vec();
    let step = if cfg!(miri) { 37 } else { 1 };
    for len in (0..bytes.len()).step_by(step) {
        assert!(opt.load_state(&bytes[..len]).is_err(), "{len} bytes");
        assert_eq!(opt.state_to_vec(), before);
    }
    assert!(opt.load_state(&[&bytes[..], &[0]].concat()).is_err());
    let mut other = structure(Group::default(), Group::default());
    other.add(TensorSpec::new(1)).unwrap();
    assert!(other.load_state(&bytes).is_err());
    assert_eq!(opt.state_to_vec(), before);
}
