//! `Lion`: the same bits as plain steps, all-or-nothing failures, checkpoints (and, in
//! `damage`, every damaged state file refused).

mod damage;

use crate::common::{HyperparamsExt, same_bits};
use lion_optim::{
    CheckpointError, Dtype, Element, Error, GroupId, Hyperparams, Lion, SliceMut, SliceRef, Tensor,
    TensorSpec, bf16, f16, reference,
};
use support::{Rng, bits, crc32c};

fn random<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n)
        .map(|_| T::from_f32_rounded(rng.uniform() * 2.0 - 1.0))
        .collect()
}

fn momentum_bits(opt: &Lion<Vec<lion_optim::Buffer>>, i: usize) -> Vec<u64> {
    match opt.momentum(i).unwrap().as_slice_ref().unwrap() {
        SliceRef::F32(s) => s.iter().map(|x| bits(*x)).collect(),
        SliceRef::F16(s) => s.iter().map(|x| bits(*x)).collect(),
        SliceRef::Bf16(s) => s.iter().map(|x| bits(*x)).collect(),
    }
}

#[test]
fn lion_equals_plain_steps_over_a_schedule() {
    let mut rng = Rng(3);
    let (n1, n2, n3) = (1000, 77, 5);
    let (mut w1, mut w2, mut w3) = (
        random::<f32>(&mut rng, n1),
        random::<bf16>(&mut rng, n2),
        random::<f16>(&mut rng, n3),
    );
    let (mut r1, mut r2, mut r3) = (w1.clone(), w2.clone(), w3.clone());
    let (mut m1, mut m2, mut m3) = (
        vec![0.0f32; n1],
        vec![bf16::ZERO; n2],
        vec![f32::default(); n3],
    );

    let hp = Hyperparams::default().lr(1e-2).weight_decay(0.1);
    let mut opt = Lion::new(hp).unwrap();
    assert_eq!(opt.add(TensorSpec::new(n1)).unwrap().index(), 0);
    let spec = TensorSpec::new(n2).momentum(Dtype::Bf16);
    assert_eq!(opt.add(spec).unwrap().index(), 1);
    let spec = TensorSpec::new(n3).momentum(Dtype::F32);
    assert_eq!(opt.add(spec).unwrap().index(), 2);
    for t in 0..10 {
        let lr = 1e-2 * (1.0 - t as f64 / 10.0);
        let (g1, g2, g3) = (
            random::<bf16>(&mut rng, n1),
            random::<f32>(&mut rng, n2),
            random::<f16>(&mut rng, n3),
        );
        opt.update_groups(|_, g| g.hp.lr = lr).unwrap();
        opt.step(&mut [
            Tensor::new(&mut w1, &g1),
            Tensor::new(&mut w2, &g2),
            Tensor::new(&mut w3, &g3),
        ])
        .unwrap();
        let hp = Hyperparams { lr, ..hp };
        reference::step(&mut r1, &g1, &mut m1, &hp).unwrap();
        reference::step(&mut r2, &g2, &mut m2, &hp).unwrap();
        reference::step(&mut r3, &g3, &mut m3, &hp).unwrap();
    }
    assert_eq!(opt.steps(), 10);
    assert!(same_bits(&w1, &r1) && same_bits(&w2, &r2) && same_bits(&w3, &r3));
    assert_eq!(
        momentum_bits(&opt, 0),
        m1.iter().map(|x| bits(*x)).collect::<Vec<_>>()
    );
    assert_eq!(
        momentum_bits(&opt, 1),
        m2.iter().map(|x| bits(*x)).collect::<Vec<_>>()
    );
}

#[test]
fn caller_provided_buffers_give_the_same_result() {
    let mut rng = Rng(5);
    let w0 = random::<f32>(&mut rng, 100);
    let g = random::<f32>(&mut rng, 100);
    let hp = Hyperparams::default().lr(3e-3);

    let mut owned = Lion::new(hp).unwrap();
    owned
        .add(TensorSpec::new(100).momentum(Dtype::Bf16))
        .unwrap();
    let mut w_owned = w0.clone();

    let mut storage = [bf16::ZERO; 100];
    let mut w_borrowed = w0;
    {
        let mut slices = [SliceMut::from(&mut storage[..])];
        let mut borrowed = Lion::with_buffers(hp, &mut slices[..]).unwrap();
        for _ in 0..3 {
            owned.step(&mut [Tensor::new(&mut w_owned, &g)]).unwrap();
            borrowed
                .step(&mut [Tensor::new(&mut w_borrowed, &g)])
                .unwrap();
        }
        assert_eq!(borrowed.steps(), 3);
    }
    assert!(same_bits(&w_owned, &w_borrowed));
    let SliceRef::Bf16(m) = owned.momentum(0).unwrap().as_slice_ref().unwrap() else {
        panic!()
    };
    assert!(same_bits(m, &storage));
}

#[test]
fn a_failing_step_changes_nothing() {
    let mut opt = Lion::new(Hyperparams::default().lr(0.1)).unwrap();
    opt.add(TensorSpec::new(4)).unwrap();
    opt.add(TensorSpec::new(3).momentum(Dtype::F32)).unwrap();
    let (mut a, mut b) = ([1.0f32; 4], [1.0f32; 3]);
    // The second tensor is wrong: the first must not have been updated.
    let e = opt.step(&mut [
        Tensor::new(&mut a, &[1.0f32; 4]),
        Tensor::new(&mut b[..2], &[1.0f32; 2]),
    ]);
    assert_eq!(
        e,
        Err(Error::TensorMismatch {
            index: 1,
            what: "params",
            expected: 3,
            found: 2
        })
    );
    let e = opt.step(&mut [
        Tensor::new(&mut a, &[1.0f32; 4]),
        Tensor::new(&mut b, &[1.0f32; 2]),
    ]);
    assert_eq!(
        e,
        Err(Error::TensorMismatch {
            index: 1,
            what: "grads",
            expected: 3,
            found: 2
        })
    );
    let e = opt.step(&mut [Tensor::new(&mut a, &[1.0f32; 4])]);
    assert_eq!(
        e,
        Err(Error::TensorCount {
            expected: 2,
            found: 1
        })
    );
    assert_eq!((a, b), ([1.0; 4], [1.0; 3]));
    assert_eq!(opt.steps(), 0);
    assert_eq!(momentum_bits(&opt, 0), vec![0; 4]);
    // Invalid hyperparameters are refused and the old ones stay.
    assert!(opt.update_groups(|_, g| g.hp.lr = -1.0).is_err());
    let mut group = *opt.group(GroupId::DEFAULT).unwrap();
    group.hp = Hyperparams::default().beta1(1.5);
    assert!(opt.set_group(GroupId::DEFAULT, group).is_err());
    assert_eq!(opt.group(GroupId::DEFAULT).unwrap().hp.lr, 0.1);
    assert!(Lion::new(Hyperparams::default().weight_decay(f64::NAN)).is_err());
    // And a good step still works afterwards.
    opt.step(&mut [
        Tensor::new(&mut a, &[1.0f32; 4]),
        Tensor::new(&mut b, &[1.0f32; 3]),
    ])
    .unwrap();
    assert_eq!(a, [0.9; 4]);
}

/// The two tensors of `trained`: 50 with f16 momentum, 9 with bf16 momentum, unnamed.
fn add_two(opt: &mut Lion<Vec<lion_optim::Buffer>>) {
    opt.add(TensorSpec::new(50).momentum(Dtype::F16)).unwrap();
    opt.add(TensorSpec::new(9).momentum(Dtype::Bf16)).unwrap();
}

fn trained() -> (Lion<Vec<lion_optim::Buffer>>, Vec<f32>, Vec<bf16>) {
    let mut rng = Rng(11);
    let mut opt = Lion::new(Hyperparams::default().lr(1e-2).weight_decay(0.01)).unwrap();
    add_two(&mut opt);
    let (mut a, mut b) = (random::<f32>(&mut rng, 50), random::<bf16>(&mut rng, 9));
    for _ in 0..3 {
        let (ga, gb) = (random::<f32>(&mut rng, 50), random::<f32>(&mut rng, 9));
        opt.step(&mut [Tensor::new(&mut a, &ga), Tensor::new(&mut b, &gb)])
            .unwrap();
    }
    (opt, a, b)
}

/// A compact checkpoint edited on purpose, with its CRC-32C trailer computed again: the
/// loader's own checks (not the checksum) must refuse it.
pub(crate) fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    let body = bytes.len() - 4;
    let crc = crc32c(0, &bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn checkpoint_round_trip_resumes_bit_for_bit() {
    let (mut opt, mut a, mut b) = trained();
    let ckpt = opt.state_to_vec();
    assert_eq!(&ckpt[..8], b"LIONCRC3");
    // Header, one group, tensor count, two unnamed tensor headers, data, checksum.
    assert_eq!(ckpt.len(), 40 + 62 + 8 + 2 * 30 + 50 * 2 + 9 * 2 + 4);
    assert_eq!(ckpt[8..16], 3u64.to_le_bytes()); // steps
    assert_eq!(ckpt[16..24], 0u64.to_le_bytes()); // skipped steps
    assert_eq!(ckpt[24..32], 1f64.to_le_bytes()); // lr scale
    assert_eq!(ckpt[32..40], 1u64.to_le_bytes()); // groups
    assert_eq!(ckpt[40..48], 1e-2f64.to_le_bytes()); // group 0's lr
    assert_eq!(ckpt[101], 0); // group 0's skip flag
    assert_eq!(ckpt[102..110], 2u64.to_le_bytes()); // tensors
    let body = ckpt.len() - 4;
    assert_eq!(ckpt[body..], crc32c(0, &ckpt[..body]).to_le_bytes()); // checksum

    let (mut a2, mut b2) = (a.clone(), b.clone());
    let mut resumed = Lion::new(Hyperparams::default()).unwrap();
    add_two(&mut resumed);
    resumed.load_state(&ckpt).unwrap();
    assert_eq!(resumed.steps(), 3);
    assert_eq!(
        resumed.group(GroupId::DEFAULT).unwrap(),
        opt.group(GroupId::DEFAULT).unwrap()
    );
    let mut rng = Rng(99);
    for _ in 0..2 {
        let (ga, gb) = (random::<f32>(&mut rng, 50), random::<f32>(&mut rng, 9));
        opt.step(&mut [Tensor::new(&mut a, &ga), Tensor::new(&mut b, &gb)])
            .unwrap();
        resumed
            .step(&mut [Tensor::new(&mut a2, &ga), Tensor::new(&mut b2, &gb)])
            .unwrap();
    }
    assert!(same_bits(&a, &a2) && same_bits(&b, &b2));
    assert_eq!(opt.state_to_vec(), resumed.state_to_vec());
}

#[test]
fn bad_checkpoints_are_refused_and_change_nothing() {
    let (opt, ..) = trained();
    let good = opt.state_to_vec();
    let mut other = Lion::new(Hyperparams::default()).unwrap();
    add_two(&mut other);
    let before = other.state_to_vec();
    let tensor0 = 110; // the first tensor header
    let tensor1 = tensor0 + 30;

    let mut cases: Vec<(Vec<u8>, CheckpointError)> = vec![
        // The error says how many bytes there are and how many are needed.
        (
            good[..good.len() - 1].to_vec(),
            CheckpointError::Truncated {
                len: good.len() - 1,
                needed: good.len(),
            },
        ),
        // Inside the header: 8 magic bytes, then u64 fields (the skipped-step count at 16..24).
        (
            good[..20].to_vec(),
            CheckpointError::Truncated {
                len: 20,
                needed: 24,
            },
        ),
        (Vec::new(), CheckpointError::Truncated { len: 0, needed: 8 }),
        (
            [good.clone(), vec![0]].concat(),
            CheckpointError::TrailingBytes,
        ),
        (
            resealed([good.clone(), vec![0]].concat()),
            CheckpointError::TrailingBytes,
        ),
    ];
    // A changed byte: the checksum says the file is damaged, wherever the byte is.
    for at in [8, 40, 101, tensor0, good.len() - 5, good.len() - 1] {
        let mut b = good.clone();
        b[at] ^= 0x10;
        cases.push((b, CheckpointError::Checksum));
    }
    // Edited and sealed again: the loader's own checks refuse the content.
    let mut edit = |at: usize, bytes: &[u8], want: CheckpointError| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        cases.push((resealed(b), want));
    };
    edit(0, b"X", CheckpointError::BadMagic);
    edit(0, b"LIONOPT1", CheckpointError::UnknownVersion);
    edit(24, &(-1.0f64).to_le_bytes(), CheckpointError::Hyperparams); // lr scale
    let groups = CheckpointError::GroupCount {
        expected: 1,
        found: 2,
    };
    edit(32, &2u64.to_le_bytes(), groups);
    edit(40, &(-1.0f64).to_le_bytes(), CheckpointError::Hyperparams); // lr
    edit(48, &f64::NAN.to_le_bytes(), CheckpointError::Hyperparams); // beta1
    edit(72, &[7], CheckpointError::Invalid("maximize"));
    edit(74, &[1], CheckpointError::Invalid("grad_unscale")); // absent, but not zero
    edit(82, &[2], CheckpointError::Invalid("weight decay variant"));
    edit(92, &[1], CheckpointError::Invalid("rounding")); // nearest with a seed
    edit(100, &[2], CheckpointError::Invalid("cautious"));
    edit(101, &[2], CheckpointError::Invalid("skip flag"));
    let count = CheckpointError::TensorCount {
        expected: 2,
        found: 3,
    };
    edit(102, &3u64.to_le_bytes(), count);
    edit(
        tensor0,
        &49u64.to_le_bytes(),
        CheckpointError::TensorShape { index: 0 },
    );
    edit(tensor1 + 8, &[0], CheckpointError::TensorShape { index: 1 }); // f32 momentum
    edit(tensor0 + 8, &[7], CheckpointError::UnknownDtype(7));
    edit(
        tensor0 + 9,
        &1u64.to_le_bytes(),
        CheckpointError::TensorSettings { index: 0 },
    ); // group
    edit(
        tensor0 + 17,
        &[2],
        CheckpointError::TensorSettings { index: 0 },
    ); // params dtype
    edit(
        tensor1 + 18,
        &5u64.to_le_bytes(),
        CheckpointError::TensorSettings { index: 1 },
    ); // stream
    // A name: no tensor of the optimizer has it.
    let mut named = good[..tensor0 + 26].to_vec();
    named.extend(1u32.to_le_bytes());
    named.extend(b"w");
    named.extend(&good[tensor0 + 30..]);
    cases.push((
        resealed(named),
        CheckpointError::UnknownTensor { position: 0 },
    ));

    for (bytes, want) in cases {
        assert_eq!(
            other.load_state(&bytes),
            Err(Error::Checkpoint(want)),
            "{want:?}"
        );
        assert_eq!(
            other.state_to_vec(),
            before,
            "{want:?} changed the optimizer"
        );
    }
    let mut too_small = vec![0u8; good.len() - 1];
    assert_eq!(
        opt.save_state(&mut too_small),
        Err(Error::BufferTooSmall {
            needed: good.len(),
            available: good.len() - 1
        })
    );
    other.load_state(&good).unwrap();
    assert_eq!(other.state_to_vec(), good);
}

#[test]
fn tensors_from_runtime_typed_slices() {
    let mut opt = Lion::new(Hyperparams::default().lr(0.5)).unwrap();
    opt.add(TensorSpec::new(2).momentum(Dtype::F32)).unwrap();
    let mut w = [f16::ONE; 2];
    let g = [bf16::ONE, bf16::NEG_ONE];
    opt.step(&mut [Tensor::from_slices(
        SliceMut::F16(&mut w),
        SliceRef::Bf16(&g),
    )])
    .unwrap();
    assert_eq!(w, [f16::from_f32(0.5), f16::from_f32(1.5)]);
    assert!(matches!(
        opt.momentum(5),
        Err(Error::NoSuchTensor { index: 5, count: 1 })
    ));
}
