//! State files that say when they are damaged (issue 21): for both formats, every single-byte
//! change (every position, every one of the 255 other values), every truncation (every prefix)
//! and appended bytes are refused, and the optimizer that refused them — one of the same
//! structure holding a different state — is unchanged, byte for byte, in both of its state
//! formats. The intact file loads and the run resumes bit for bit. (Under Miri, a sample of the
//! positions, values and lengths.)

use crate::common::HyperparamsExt;
use lion_optim::{
    Buffer, Dtype, Error, Group, GroupId, Hyperparams, Lion, Rounding, SliceMut, SliceRef,
    StepOptions, Tensor, TensorSpec, WeightDecay, bf16, f16,
};
use support::Rng;

type Opt = Lion<Vec<Buffer>>;

/// The structure every optimizer here has: two groups, three tensors (bf16, f16 and f32
/// momentum; two named, one unnamed with its own stream), small so that the exhaustive loops
/// take a moment.
fn structure() -> Opt {
    let mut opt = Lion::new(Hyperparams::default()).unwrap();
    let g1 = opt.add_group(Group::default()).unwrap();
    opt.add(TensorSpec::new(6).name("w").momentum(Dtype::Bf16))
        .unwrap();
    let spec = TensorSpec::new(3).name("b").momentum(Dtype::F16);
    opt.add(spec.params(Dtype::Bf16).group(g1)).unwrap();
    opt.add(TensorSpec::new(2).group(g1).stream(5)).unwrap();
    opt
}

/// The parameters of [`structure`]'s tensors: f32, bf16, f16.
#[derive(Clone)]
struct Params(Vec<f32>, Vec<bf16>, Vec<f16>);

impl Params {
    fn new() -> Self {
        Params(
            vec![0.5; 6],
            vec![bf16::from_f32(-0.25); 3],
            vec![f16::from_f32(1.5); 2],
        )
    }

    /// One step with uniform gradients in [-1, 1) from `rng`.
    fn step(&mut self, opt: &mut Opt, rng: &mut Rng) {
        let g: Vec<Vec<f32>> = [6, 3, 2]
            .iter()
            .map(|&n| (0..n).map(|_| rng.range(-1.0, 1.0)).collect())
            .collect();
        opt.step(&mut [
            Tensor::new(&mut self.0, &g[0]),
            Tensor::new(&mut self.1, &g[1]),
            Tensor::new(&mut self.2, &g[2]),
        ])
        .unwrap();
    }
}

/// An optimizer of [`structure`] with every kind of state: group settings (stochastic rounding
/// in both groups, so that the 16-bit momentum is nonzero and not round), a learning-rate
/// scale, `steps` steps from gradients of `seed`.
fn trained(seed: u64, steps: usize) -> (Opt, Params) {
    let mut opt = structure();
    let mut rng = Rng::new(seed);
    let lr = [1e-2, 3e-3, 0.1][seed as usize % 3];
    opt.update_groups(|id, g| {
        g.hp = Hyperparams::default()
            .lr(lr * (1 + id.index()) as f64)
            .weight_decay(0.1 * id.index() as f64);
        g.options = StepOptions {
            rounding: Rounding::Stochastic {
                seed: seed + id.index() as u64,
            },
            skip_non_finite: id == GroupId::DEFAULT,
            maximize: seed % 2 == 1,
            ..StepOptions::default()
        };
        if id.index() == 1 {
            g.options.weight_decay = WeightDecay::FullyDecoupled { max_lr: 0.5 };
            g.options.grad_unscale = Some(0.5);
        }
    })
    .unwrap();
    opt.set_lr_scale(0.75).unwrap();
    let mut params = Params::new();
    for _ in 0..steps {
        params.step(&mut opt, &mut rng);
    }
    (opt, params)
}

/// Everything an optimizer holds, in both state formats (the safetensors one with that
/// feature).
fn snapshot(opt: &Opt) -> Snapshot {
    #[cfg(feature = "safetensors")]
    let file = opt.save_safetensors().unwrap();
    #[cfg(not(feature = "safetensors"))]
    let file = Vec::new();
    (opt.state_to_vec(), file)
}

fn nonzero(m: SliceRef<'_>) -> bool {
    match m {
        SliceRef::F32(s) => s.iter().any(|x| *x != 0.0),
        SliceRef::F16(s) => s.iter().any(|x| x.to_f32() != 0.0),
        SliceRef::Bf16(s) => s.iter().any(|x| x.to_f32() != 0.0),
    }
}

type Load = fn(&mut Opt, &[u8]) -> Result<(), Error>;

/// Loads `bytes`, which must be refused without a change to `victim` (whose state was
/// `before`): its compact state is compared (it holds everything the optimizer holds), and
/// with `both` its safetensors file too.
fn refused(
    victim: &mut Opt,
    before: &Snapshot,
    load: Load,
    bytes: &[u8],
    both: bool,
    what: &dyn Fn() -> String,
) {
    let got = load(victim, bytes);
    assert!(
        matches!(got, Err(Error::Checkpoint(_))),
        "{} was not refused: {got:?}",
        what()
    );
    let unchanged = if both {
        snapshot(victim) == *before
    } else {
        victim.state_to_vec() == before.0
    };
    assert!(unchanged, "refusing {} changed the optimizer", what());
}

type Snapshot = (Vec<u8>, Vec<u8>);

/// Every single-byte change of `file` at the positions `at`: refused, nothing changed. Returns
/// how many files were refused.
fn every_byte_change(
    victim: &mut Opt,
    before: &Snapshot,
    load: Load,
    file: &[u8],
    at: &[usize],
) -> usize {
    let mut bytes = file.to_vec();
    let mut count = 0;
    for &at in at {
        let original = file[at];
        // Every other value (under Miri, two).
        let values: Vec<u8> = if cfg!(miri) {
            vec![original ^ 0x01, original ^ 0x80]
        } else {
            (0..=255u8).filter(|&v| v != original).collect()
        };
        for v in values {
            bytes[at] = v;
            refused(victim, before, load, &bytes, false, &|| {
                format!("byte {at} changed from {original:#04x} to {v:#04x}")
            });
            count += 1;
        }
        bytes[at] = original;
        // Both formats once per position: a refusal cannot undo another's change (every
        // attempt differs from the file in this byte), so any change would still show here.
        assert!(
            snapshot(victim) == *before,
            "refusing the changes of byte {at} changed the optimizer"
        );
    }
    count
}

/// Loads every damaged variant of `file` (the state of `source`) into an optimizer of the
/// same structure holding another state: each is refused and changes nothing. Then the intact
/// file loads, and the run resumes with the bytes of `source`'s.
fn every_damage_is_refused(what: &str, file: &[u8], load: Load, source: (Opt, Params)) {
    let (mut victim, _) = trained(77, 2);
    let before = snapshot(&victim);
    assert_ne!(
        before,
        snapshot(&source.0),
        "the victim must hold another state"
    );
    // Every position (under Miri, about 12 spread over the file: big-endian decoding of each
    // part, not every byte again), split among threads where there are some: each with its own
    // optimizer of the victim's state.
    let stride = if cfg!(miri) { file.len() / 12 + 1 } else { 1 };
    let positions: Vec<usize> = (0..file.len()).step_by(stride).collect();
    let threads = if cfg!(any(miri, target_family = "wasm")) {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    };
    let chunk = positions.len().div_ceil(threads);
    let mut refused_files: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = positions
            .chunks(chunk)
            .skip(1)
            .map(|at| {
                let (before, mut victim) = (&before, victim.clone());
                scope.spawn(move || every_byte_change(&mut victim, before, load, file, at))
            })
            .collect();
        let here = every_byte_change(&mut victim, &before, load, file, &positions[..chunk]);
        here + workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .sum::<usize>()
    });
    // Every truncation.
    for len in (0..file.len()).step_by(stride) {
        refused(&mut victim, &before, load, &file[..len], true, &|| {
            format!("the first {len} bytes")
        });
        refused_files += 1;
    }
    // Appended bytes: one of every value, and longer tails.
    let appended: Vec<Vec<u8>> = if cfg!(miri) {
        vec![vec![0], vec![b' '; 3]]
    } else {
        (0..=255u8)
            .map(|b| vec![b])
            .chain([
                vec![0; 4],
                vec![b' '; 8],
                file[file.len() - 8..].to_vec(),
                file.to_vec(),
            ])
            .collect()
    };
    for tail in &appended {
        let longer = [file, tail].concat();
        refused(&mut victim, &before, load, &longer, true, &|| {
            format!("{} bytes appended", tail.len())
        });
        refused_files += 1;
    }
    let refused = refused_files;
    eprintln!(
        "{what}: {refused} damaged files of {} bytes refused",
        file.len()
    );

    // The intact file loads: the victim holds the source's state, and resumes bit for bit.
    let (mut source, mut source_params) = source;
    load(&mut victim, file).unwrap();
    assert!(
        snapshot(&victim) == snapshot(&source),
        "{what}: loaded differently"
    );
    let mut params = source_params.clone();
    let (mut r1, mut r2) = (Rng::new(5), Rng::new(5));
    for _ in 0..3 {
        source_params.step(&mut source, &mut r1);
        params.step(&mut victim, &mut r2);
    }
    let bits = |p: &Params| {
        let mut v: Vec<u32> = p.0.iter().map(|x| x.to_bits()).collect();
        v.extend(p.1.iter().map(|x| u32::from(x.to_bits())));
        v.extend(p.2.iter().map(|x| u32::from(x.to_bits())));
        v
    };
    assert_eq!(
        bits(&params),
        bits(&source_params),
        "{what}: resumed params"
    );
    assert!(
        snapshot(&victim) == snapshot(&source),
        "{what}: resumed state"
    );
}

/// The source of the files: trained with stochastic rounding until every momentum is nonzero.
fn source() -> (Opt, Params) {
    let (opt, params) = trained(1, 3);
    for i in 0..opt.tensor_count() {
        assert!(
            nonzero(opt.momentum(i).unwrap().as_slice_ref().unwrap()),
            "momentum {i} is zero"
        );
    }
    assert_eq!(opt.steps(), 3);
    (opt, params)
}

#[test]
fn every_damaged_compact_checkpoint_is_refused() {
    let source = source();
    let file = source.0.state_to_vec();
    every_damage_is_refused("compact", &file, |o, b| o.load_state(b), source);
}

#[cfg(feature = "safetensors")]
#[test]
fn every_damaged_safetensors_file_is_refused() {
    let source = source();
    let file = source.0.save_safetensors().unwrap();
    every_damage_is_refused("safetensors", &file, |o, b| o.load_safetensors(b), source);
}

/// The same with caller-provided momentum (no allocation: the microcontroller's case), where
/// the loader cannot keep scratch space.
#[test]
fn every_damaged_checkpoint_into_borrowed_buffers_is_refused() {
    let mut rng = Rng::new(3);
    let hp = Hyperparams::default().lr(1e-2);
    let sr = StepOptions {
        rounding: Rounding::Stochastic { seed: 4 },
        ..StepOptions::default()
    };
    let (mut m1, mut m2) = ([bf16::ZERO; 5], [0.0f32; 3]);
    let file = {
        let mut store = [SliceMut::from(&mut m1[..]), SliceMut::from(&mut m2[..])];
        let mut opt = Lion::with_buffers(hp, &mut store[..]).unwrap();
        opt.set_group(GroupId::DEFAULT, Group::new(hp).with_options(sr))
            .unwrap();
        let (mut a, mut b) = ([1.0f32; 5], [1.0f32; 3]);
        for _ in 0..2 {
            let (ga, gb): (Vec<f32>, Vec<f32>) = (
                (0..5).map(|_| rng.range(-1.0, 1.0)).collect(),
                (0..3).map(|_| rng.range(-1.0, 1.0)).collect(),
            );
            opt.step(&mut [Tensor::new(&mut a, &ga), Tensor::new(&mut b, &gb)])
                .unwrap();
        }
        let mut out = [0u8; 512];
        let n = opt.save_state(&mut out).unwrap();
        out[..n].to_vec()
    };
    let (mut v1, mut v2) = ([bf16::ONE; 5], [2.0f32; 3]);
    let mut store = [SliceMut::from(&mut v1[..]), SliceMut::from(&mut v2[..])];
    let mut victim = Lion::with_buffers(Hyperparams::default(), &mut store[..]).unwrap();
    let mut buf = [0u8; 512];
    let n = victim.save_state(&mut buf).unwrap();
    let before = buf[..n].to_vec();
    let mut bytes = file.clone();
    let stride = if cfg!(miri) { 13 } else { 1 };
    for at in (0..file.len()).step_by(stride) {
        for v in (0..=255u8).filter(|&v| v != file[at]).step_by(stride) {
            bytes[at] = v;
            assert!(victim.load_state(&bytes).is_err(), "byte {at} = {v:#04x}");
            let n = victim.save_state(&mut buf).unwrap();
            assert_eq!(buf[..n], before[..], "byte {at} = {v:#04x} changed it");
        }
        bytes[at] = file[at];
    }
    for len in (0..file.len()).step_by(stride) {
        assert!(victim.load_state(&file[..len]).is_err(), "{len} bytes");
    }
    let n = victim.save_state(&mut buf).unwrap();
    assert_eq!(buf[..n], before[..]);
    victim.load_state(&file).unwrap();
    let n = victim.save_state(&mut buf).unwrap();
    assert_eq!(buf[..n], file[..]);
}
