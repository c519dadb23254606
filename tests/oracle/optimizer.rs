//! The oracle of the `optimizer` fuzz target (fuzz/fuzz_targets/optimizer.rs), also replayed by
//! tests/suite/fuzz_regressions.rs.
//!
//! Arbitrary bytes become a `Lion` optimizer (up to 3 tensors, each with its own momentum dtype),
//! hyperparameters and options (valid or not), one step over tensors whose parameter and
//! gradient dtypes are picked at run time (so every dtype combination of `Lion`'s run-time
//! dispatch is reached), and a checkpoint: bytes in the documented format, mutated (truncated,
//! extended, a byte changed, another shape), or raw bytes. Then:
//!
//! * `Lion::new` / `set_options` accept exactly what the documented rules accept;
//! * `Lion::step` equals `reference::step_with` on every tensor (with the step count as
//!   `step`), skips non-finite gradients when asked and refuses mismatched tensors, writing
//!   nothing then;
//! * `load_state` never panics; it accepts exactly the checkpoints a parser of the documented
//!   format accepts, with the same error; on success the optimizer's checkpoint is the input,
//!   byte for byte; on error the optimizer is unchanged.

use lion_optim::{
    CheckpointError, Dtype, Element, Error, Hyperparams, Lion, Outcome, Rounding, SliceMut,
    SliceRef, StepOptions, Tensor, bf16, f16, reference,
};

use super::step::{Bytes, expect_valid, options, param, value};

/// An owned buffer of a run-time dtype.
#[derive(Clone, Debug)]
enum Buf {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Buf {
    fn decode(dtype: Dtype, len: usize, r: &mut Bytes) -> Buf {
        match dtype {
            Dtype::F32 => Buf::F32((0..len).map(|_| value(r)).collect()),
            Dtype::F16 => Buf::F16((0..len).map(|_| value(r)).collect()),
            Dtype::Bf16 => Buf::Bf16((0..len).map(|_| value(r)).collect()),
        }
    }
    fn copy_of(s: SliceRef<'_>) -> Buf {
        match s {
            SliceRef::F32(s) => Buf::F32(s.to_vec()),
            SliceRef::F16(s) => Buf::F16(s.to_vec()),
            SliceRef::Bf16(s) => Buf::Bf16(s.to_vec()),
        }
    }
    fn slice_mut(&mut self) -> SliceMut<'_> {
        match self {
            Buf::F32(v) => SliceMut::from(&mut v[..]),
            Buf::F16(v) => SliceMut::from(&mut v[..]),
            Buf::Bf16(v) => SliceMut::from(&mut v[..]),
        }
    }
    fn slice_ref(&self) -> SliceRef<'_> {
        match self {
            Buf::F32(v) => SliceRef::from(&v[..]),
            Buf::F16(v) => SliceRef::from(&v[..]),
            Buf::Bf16(v) => SliceRef::from(&v[..]),
        }
    }
}

/// Bit-identical (`nan_ok`: or both NaN) element for element, and of the same dtype.
fn same_slices(a: SliceRef<'_>, b: SliceRef<'_>, nan_ok: bool) -> bool {
    fn eq<T: Element>(a: &[T], b: &[T], nan_ok: bool) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                bytemuck::bytes_of(x) == bytemuck::bytes_of(y)
                    || (nan_ok && x.to_f32_exact().is_nan() && y.to_f32_exact().is_nan())
            })
    }
    match (a, b) {
        (SliceRef::F32(a), SliceRef::F32(b)) => eq(a, b, nan_ok),
        (SliceRef::F16(a), SliceRef::F16(b)) => eq(a, b, nan_ok),
        (SliceRef::Bf16(a), SliceRef::Bf16(b)) => eq(a, b, nan_ok),
        _ => false,
    }
}

/// `reference::step_with` on run-time-typed slices.
fn reference_dyn(
    p: SliceMut<'_>,
    g: SliceRef<'_>,
    m: SliceMut<'_>,
    hp: &Hyperparams,
    o: &StepOptions,
) -> Result<(), Error> {
    fn with_g<P: Element>(
        p: &mut [P],
        g: SliceRef<'_>,
        m: SliceMut<'_>,
        hp: &Hyperparams,
        o: &StepOptions,
    ) -> Result<(), Error> {
        match g {
            SliceRef::F32(g) => with_m(p, g, m, hp, o),
            SliceRef::F16(g) => with_m(p, g, m, hp, o),
            SliceRef::Bf16(g) => with_m(p, g, m, hp, o),
        }
    }
    fn with_m<P: Element, G: Element>(
        p: &mut [P],
        g: &[G],
        m: SliceMut<'_>,
        hp: &Hyperparams,
        o: &StepOptions,
    ) -> Result<(), Error> {
        match m {
            SliceMut::F32(m) => reference::step_with(p, g, m, hp, o),
            SliceMut::F16(m) => reference::step_with(p, g, m, hp, o),
            SliceMut::Bf16(m) => reference::step_with(p, g, m, hp, o),
        }
    }
    match p {
        SliceMut::F32(p) => with_g(p, g, m, hp, o),
        SliceMut::F16(p) => with_g(p, g, m, hp, o),
        SliceMut::Bf16(p) => with_g(p, g, m, hp, o),
    }
}

fn all_finite(g: SliceRef<'_>, o: &StepOptions) -> bool {
    fn rule<G: Element>(g: &[G], o: &StepOptions) -> bool {
        let s = o.grad_unscale.map(|s| s as f32);
        g.iter().all(|x| {
            let x = x.to_f32_exact();
            s.map_or(x, |s| x * s).is_finite()
        })
    }
    match g {
        SliceRef::F32(g) => rule(g, o),
        SliceRef::F16(g) => rule(g, o),
        SliceRef::Bf16(g) => rule(g, o),
    }
}

fn dtype(r: &mut Bytes) -> Dtype {
    Dtype::ALL[usize::from(r.u8() % 3)]
}

/// Decodes `data` and checks `Lion` and its checkpoints (see the module docs).
pub fn check(data: &[u8]) {
    let mut r = Bytes(data);
    let shape: Vec<(usize, Dtype)> = (0..r.u8() % 4)
        .map(|_| (usize::from(r.u8() % 41), dtype(&mut r)))
        .collect();
    let hp = Hyperparams {
        lr: param(&mut r),
        beta1: param(&mut r),
        beta2: param(&mut r),
        weight_decay: param(&mut r),
    };
    let hp_valid = expect_valid(&hp, &StepOptions::default(), [0; 3]);
    let made = Lion::new(hp);
    assert_eq!(made.is_ok(), hp_valid, "Lion::new({hp:?}) gave {made:?}");
    let mut opt = made.unwrap_or_else(|_| Lion::new(Hyperparams::default()).unwrap());
    let hp = *opt.hyperparams();
    for &(len, d) in &shape {
        opt.add_tensor(len, d);
    }
    let flags = r.u8();
    if flags & 1 != 0 {
        // Stochastic rounding's per-tensor streams are the optimizer's business: round to nearest.
        let o = StepOptions {
            rounding: Rounding::Nearest,
            ..options(&mut r)
        };
        let set = opt.set_options(o);
        assert_eq!(
            set.is_ok(),
            expect_valid(&hp, &StepOptions { offset: 0, ..o }, [0; 3]),
            "set_options({o:?}) with {hp:?} gave {set:?}"
        );
    }
    opt.set_skip_non_finite(flags & 2 != 0);

    // One step, against the reference tensor by tensor.
    let mut params: Vec<Buf> = Vec::new();
    let mut grads: Vec<Buf> = Vec::new();
    let mut mismatch = false;
    for &(len, _) in &shape {
        let (pd, gd) = (dtype(&mut r), dtype(&mut r));
        let glen = if flags & 0x0c == 0x0c && r.u8() % 4 == 0 {
            mismatch = true;
            len + 1
        } else {
            len
        };
        params.push(Buf::decode(pd, len, &mut r));
        grads.push(Buf::decode(gd, glen, &mut r));
    }
    let momentum_before: Vec<Buf> = (0..shape.len())
        .map(|i| Buf::copy_of(opt.momentum(i).unwrap()))
        .collect();
    let (steps, skipped) = (opt.steps(), opt.skipped_steps());
    let step_options = StepOptions {
        step: steps,
        offset: 0,
        ..*opt.options()
    };
    let mut want_p = params.clone();
    let mut want_m = momentum_before.clone();
    for i in 0..shape.len() {
        if !mismatch {
            reference_dyn(
                want_p[i].slice_mut(),
                grads[i].slice_ref(),
                want_m[i].slice_mut(),
                &hp,
                &step_options,
            )
            .unwrap();
        }
    }
    let finite = grads
        .iter()
        .all(|g| all_finite(g.slice_ref(), opt.options()));
    let mut got_p = params.clone();
    let outcome = {
        let mut tensors: Vec<Tensor<'_>> = got_p
            .iter_mut()
            .zip(&grads)
            .map(|(p, g)| Tensor::from_slices(p.slice_mut(), g.slice_ref()))
            .collect();
        opt.step(&mut tensors)
    };
    let unchanged = |opt: &Lion<Vec<lion_optim::Buffer>>, got_p: &[Buf]| {
        got_p
            .iter()
            .zip(&params)
            .all(|(a, b)| same_slices(a.slice_ref(), b.slice_ref(), false))
            && (0..shape.len()).all(|i| {
                same_slices(
                    opt.momentum(i).unwrap(),
                    momentum_before[i].slice_ref(),
                    false,
                )
            })
    };
    match outcome {
        Err(e) => {
            assert!(mismatch, "Lion::step refused valid tensors: {e:?}");
            assert!(unchanged(&opt, &got_p), "Lion::step wrote before refusing");
            assert_eq!((opt.steps(), opt.skipped_steps()), (steps, skipped));
        }
        Ok(Outcome::SkippedNonFinite) => {
            assert!(!mismatch && !finite && flags & 2 != 0, "Lion::step skipped");
            assert!(unchanged(&opt, &got_p), "Lion::step wrote while skipping");
            assert_eq!((opt.steps(), opt.skipped_steps()), (steps, skipped + 1));
        }
        Ok(Outcome::Applied) => {
            assert!(
                !mismatch && (finite || flags & 2 == 0),
                "Lion::step applied"
            );
            for i in 0..shape.len() {
                assert!(
                    same_slices(got_p[i].slice_ref(), want_p[i].slice_ref(), true),
                    "Lion::step: tensor {i}'s parameters differ from the reference"
                );
                assert!(
                    same_slices(opt.momentum(i).unwrap(), want_m[i].slice_ref(), true),
                    "Lion::step: tensor {i}'s momentum differs from the reference"
                );
            }
            assert_eq!((opt.steps(), opt.skipped_steps()), (steps + 1, skipped));
        }
    }

    // A checkpoint to load.
    let mode = r.u8();
    let bytes = if mode % 4 == 0 {
        r.rest().to_vec()
    } else {
        let mut b = synthesize(&shape, mode, &mut r);
        match (mode >> 2) % 4 {
            0 => {}
            1 => b.truncate(usize::from(r.u16()) % (b.len() + 1)),
            2 => {
                let at = usize::from(r.u16()) % (b.len() + 1);
                let extra = (0..r.u8() % 4).map(|_| r.u8()).collect::<Vec<_>>();
                b.splice(at..at, extra);
            }
            _ => {
                if !b.is_empty() {
                    let at = usize::from(r.u16()) % b.len();
                    b[at] ^= r.u8() | 1;
                }
            }
        }
        b
    };
    let before = opt.state_to_vec();
    let (hp_before, steps_before) = (*opt.hyperparams(), opt.steps());
    let got = opt.load_state(&bytes);
    let want = parse(&bytes, &shape).map_err(Error::Checkpoint);
    assert_eq!(got, want, "load_state of {} bytes", bytes.len());
    if got.is_ok() {
        assert_eq!(
            opt.state_to_vec(),
            bytes,
            "a loaded checkpoint does not save back the same"
        );
    } else {
        assert_eq!(
            opt.state_to_vec(),
            before,
            "a refused checkpoint changed the optimizer"
        );
        assert_eq!((*opt.hyperparams(), opt.steps()), (hp_before, steps_before));
    }
}

/// A checkpoint in the documented format (see `Lion::save_state`), for `shape` or, now and
/// then, for another shape; the hyperparameters and the data come from the input.
fn synthesize(shape: &[(usize, Dtype)], mode: u8, r: &mut Bytes) -> Vec<u8> {
    let mut b = b"LIONOPT1".to_vec();
    let valid_hp = mode & 0x10 == 0;
    for _ in 0..4 {
        let x = if valid_hp {
            [1e-4, 0.0, 0.5, 0.9, 0.99, 0.1, 3e-4][usize::from(r.u8() % 7)]
        } else {
            param(r)
        };
        b.extend(x.to_le_bytes());
    }
    b.extend(r.u64().to_le_bytes()); // steps
    b.extend(u64::from(r.u16()).to_le_bytes()); // skipped steps
    let mut shape = shape.to_vec();
    if mode & 0x20 != 0 {
        match r.u8() % 4 {
            0 => shape.push((usize::from(r.u8() % 8), dtype(r))),
            1 => {
                shape.pop();
            }
            2 => {
                if let Some(t) = shape.first_mut() {
                    t.0 += 1;
                }
            }
            _ => {
                if let Some(t) = shape.last_mut() {
                    t.1 = dtype(r);
                }
            }
        }
    }
    b.extend((shape.len() as u64).to_le_bytes());
    for &(len, d) in &shape {
        b.extend((len as u64).to_le_bytes());
        b.push(if mode & 0x40 != 0 && r.u8().is_multiple_of(8) {
            3 + r.u8() % 253 // an unknown dtype tag
        } else {
            d as u8
        });
    }
    for &(len, d) in &shape {
        for _ in 0..len * d.size() {
            b.push(r.u8());
        }
    }
    b
}

/// An independent parser of the documented checkpoint format: `Ok` if an optimizer of `shape`
/// must accept `b`, otherwise the error it must report (the first problem, reading front to
/// back).
fn parse(b: &[u8], shape: &[(usize, Dtype)]) -> Result<(), CheckpointError> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
            if self.0.len() < n {
                return Err(CheckpointError::Truncated);
            }
            let (s, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(s)
        }
        fn u64(&mut self) -> Result<u64, CheckpointError> {
            Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
        }
    }
    let mut r = Reader(b);
    if r.take(8)? != b"LIONOPT1" {
        return Err(CheckpointError::BadMagic);
    }
    let hp = Hyperparams {
        lr: f64::from_bits(r.u64()?),
        beta1: f64::from_bits(r.u64()?),
        beta2: f64::from_bits(r.u64()?),
        weight_decay: f64::from_bits(r.u64()?),
    };
    if !expect_valid(&hp, &StepOptions::default(), [0; 3]) {
        return Err(CheckpointError::Hyperparams);
    }
    let (_steps, _skipped, count) = (r.u64()?, r.u64()?, r.u64()?);
    if count != shape.len() as u64 {
        return Err(CheckpointError::TensorCount {
            expected: shape.len(),
            found: usize::try_from(count).unwrap_or(usize::MAX),
        });
    }
    for (index, &(len, d)) in shape.iter().enumerate() {
        let l = r.u64()?;
        let tag = r.take(1)?[0];
        let dt = match tag {
            0 => Dtype::F32,
            1 => Dtype::F16,
            2 => Dtype::Bf16,
            _ => return Err(CheckpointError::UnknownDtype(tag)),
        };
        if l != len as u64 || dt != d {
            return Err(CheckpointError::TensorShape { index });
        }
    }
    let needed: usize = shape.iter().map(|&(len, d)| len * d.size()).sum();
    if r.0.len() < needed {
        return Err(CheckpointError::Truncated);
    }
    if r.0.len() > needed {
        return Err(CheckpointError::TrailingBytes);
    }
    Ok(())
}
