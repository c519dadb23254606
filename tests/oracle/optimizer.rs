//! The oracle of the `optimizer` fuzz target (fuzz/fuzz_targets/optimizer.rs), also replayed by
//! tests/suite/fuzz_regressions.rs.
//!
//! Arbitrary bytes become a `Lion` optimizer — one or two parameter groups (hyperparameters and
//! options valid or not, the cautious variant included), up to four tensors, each with its own
//! momentum dtype, maybe a declared parameter dtype, a name (maybe taken already) and a group
//! (maybe unknown), a learning-rate scale — then one step, positional or keyed by handle or by
//! name, over all tensors or (keyed) a subset, with parameter and gradient dtypes picked at run
//! time (every dtype combination of `Lion`'s run-time dispatch), maybe with a wrong length, a
//! wrong dtype, a tensor passed twice or an unknown name; then a state to load, in the compact
//! format or (feature `safetensors`) as a safetensors file: raw bytes, the state of a twin
//! optimizer of the same structure, or that state mutated (truncated, extended, a byte changed).
//! Then:
//!
//! * `Lion::new`, `add_group`, `set_group`, `update_groups`, `add` and `set_lr_scale` accept
//!   exactly what the documented rules accept, and change nothing when they refuse; `tensor`
//!   describes every tensor as it was added;
//! * `Lion::step` equals `reference::step_with` on every tensor passed (with its group's
//!   settings, the learning-rate scale, the step count as `step` and the documented per-tensor
//!   random stream), leaves the others alone, skips the whole step when a tensor whose group
//!   asks for it has a non-finite gradient, and refuses bad tensors, writing nothing then;
//! * loading never panics; a twin's state loads and gives the twin's state; a refused state
//!   changes nothing; a truncated or byte-changed twin state is refused; an accepted one saves
//!   back byte for byte (compact) or loads again into a copy to the same state (safetensors),
//!   and leaves valid settings that step.

use lion_optim::{
    Cautious, Dtype, Element, Error, Group, GroupId, Hyperparams, Lion, Outcome, Rounding,
    SliceMut, SliceRef, StepOptions, Tensor, TensorId, TensorSpec, bf16, f16, reference,
};
use support::same;

use super::step::{Bytes, expect_valid, options, param, value};

/// An owned buffer of a run-time dtype (tests/suite/model.rs uses it too).
#[derive(Clone, Debug, PartialEq)]
pub enum Buf {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    Bf16(Vec<bf16>),
}

impl Buf {
    /// `len` elements of `dtype`, each read with `value`.
    pub fn decode(dtype: Dtype, len: usize, r: &mut Bytes) -> Buf {
        match dtype {
            Dtype::F32 => Buf::F32((0..len).map(|_| value(r)).collect()),
            Dtype::F16 => Buf::F16((0..len).map(|_| value(r)).collect()),
            Dtype::Bf16 => Buf::Bf16((0..len).map(|_| value(r)).collect()),
        }
    }
    /// An owned copy of `s`.
    pub fn copy_of(s: SliceRef<'_>) -> Buf {
        match s {
            SliceRef::F32(s) => Buf::F32(s.to_vec()),
            SliceRef::F16(s) => Buf::F16(s.to_vec()),
            SliceRef::Bf16(s) => Buf::Bf16(s.to_vec()),
        }
    }
    /// The elements, to write.
    pub fn slice_mut(&mut self) -> SliceMut<'_> {
        match self {
            Buf::F32(v) => SliceMut::from(&mut v[..]),
            Buf::F16(v) => SliceMut::from(&mut v[..]),
            Buf::Bf16(v) => SliceMut::from(&mut v[..]),
        }
    }
    /// The elements, to read.
    pub fn slice_ref(&self) -> SliceRef<'_> {
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
                if nan_ok {
                    same(*x, *y)
                } else {
                    bytemuck::bytes_of(x) == bytemuck::bytes_of(y)
                }
            })
    }
    match (a, b) {
        (SliceRef::F32(a), SliceRef::F32(b)) => eq(a, b, nan_ok),
        (SliceRef::F16(a), SliceRef::F16(b)) => eq(a, b, nan_ok),
        (SliceRef::Bf16(a), SliceRef::Bf16(b)) => eq(a, b, nan_ok),
        _ => false,
    }
}

/// `reference::step_with` on run-time-typed slices (tests/suite/model.rs uses it too).
pub fn reference_dyn(
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
        .map(|_| ())
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

/// The documented rules of a group of a `Lion` (with the learning-rate scale applied).
fn group_valid(g: &Group, lr_scale: f64) -> bool {
    let mut hp = g.hp;
    hp.lr *= lr_scale;
    let o = StepOptions {
        step: 0,
        offset: 0,
        ..g.options
    };
    !matches!(o.cautious, Cautious::Shard { .. }) && expect_valid(&hp, &o, [0; 3])
}

/// Group options from the input: any options but the per-call ones, cautious or not.
fn group_options(r: &mut Bytes) -> StepOptions {
    let o = options(r);
    StepOptions {
        step: 0,
        offset: 0,
        ..o
    }
}

/// The documented per-tensor options of a `Lion` step: the group's, the step count, offset 0,
/// and the group's seed mixed with the tensor's stream.
fn tensor_options(group: &StepOptions, steps: u64, stream: u64) -> StepOptions {
    let rounding = match group.rounding {
        Rounding::Nearest => Rounding::Nearest,
        Rounding::Stochastic { seed } => Rounding::Stochastic {
            seed: seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        },
    };
    StepOptions {
        step: steps,
        offset: 0,
        rounding,
        ..*group
    }
}

const NAMES: [&str; 4] = ["wte", "h.0.ln_1.bias", "0", "wpe"];

/// What the oracle knows of each tensor it added.
#[derive(Clone, Debug)]
struct Added {
    id: TensorId,
    len: usize,
    name: Option<&'static str>,
    params: Option<Dtype>,
    group: usize,
}

type Opt = Lion<Vec<lion_optim::Buffer>>;

fn momenta(opt: &Opt) -> Vec<Buf> {
    (0..opt.tensor_count())
        .map(|i| Buf::copy_of(opt.momentum(i).unwrap().as_slice_ref().unwrap()))
        .collect()
}

/// Decodes `data` and checks `Lion` and its state files (see the module docs).
pub fn check(data: &[u8]) {
    let mut r = Bytes(data);
    // Group 0.
    let hp = Hyperparams {
        lr: param(&mut r),
        beta1: param(&mut r),
        beta2: param(&mut r),
        weight_decay: param(&mut r),
    };
    let made = Lion::new(hp);
    let hp_valid = expect_valid(&hp, &StepOptions::default(), [0; 3]);
    assert_eq!(made.is_ok(), hp_valid, "Lion::new({hp:?}) gave {made:?}");
    let mut opt: Opt = made.unwrap_or_else(|_| Lion::new(Hyperparams::default()).unwrap());
    let flags = r.u8();
    if flags & 1 != 0 {
        let o = group_options(&mut r);
        let before = *opt.group(GroupId::DEFAULT).unwrap();
        let g = Group {
            options: o,
            ..before
        };
        let want = group_valid(&g, 1.0);
        // Through `update_groups` now and then (all or nothing), otherwise `set_group`.
        let set = if flags & 0x80 != 0 {
            opt.update_groups(|_, s| s.options = o)
        } else {
            opt.set_group(GroupId::DEFAULT, g)
        };
        assert_eq!(set.is_ok(), want, "setting options {o:?} gave {set:?}");
        if set.is_err() {
            assert_eq!(*opt.group(GroupId::DEFAULT).unwrap(), before);
        }
    }
    // Maybe group 1.
    if flags & 2 != 0 {
        let g = Group {
            hp: Hyperparams {
                lr: param(&mut r),
                beta1: [0.9, 0.95, 0.0, 1.0][usize::from(r.u8() % 4)],
                beta2: param(&mut r),
                weight_decay: param(&mut r),
            },
            options: group_options(&mut r),
        };
        let added = opt.add_group(g);
        assert_eq!(
            added.is_ok(),
            group_valid(&g, 1.0),
            "add_group({g:?}) gave {added:?}"
        );
        assert_eq!(opt.group_count(), 1 + usize::from(added.is_ok()));
    }
    // Skipping non-finite steps: in every group, or (flag 0x40) in group 0 only.
    let before: Vec<Group> = (0..opt.group_count())
        .map(|i| *opt.group(GroupId::new(i)).unwrap())
        .collect();
    let skips = |id: GroupId| flags & 4 != 0 && (flags & 0x40 == 0 || id == GroupId::DEFAULT);
    opt.update_groups(|id, g| g.options.skip_non_finite = skips(id))
        .unwrap();
    for (i, b) in before.iter().enumerate() {
        let id = GroupId::new(i);
        let want = Group {
            options: StepOptions {
                skip_non_finite: skips(id),
                ..b.options
            },
            ..*b
        };
        assert_eq!(*opt.group(id).unwrap(), want);
    }

    // Tensors.
    let mut added: Vec<Added> = Vec::new();
    for _ in 0..r.u8() % 5 {
        let len = usize::from(r.u8() % 41);
        let m = dtype(&mut r);
        let sel = r.u8();
        let name = (sel & 3 != 0).then(|| NAMES[usize::from(sel >> 2) % NAMES.len()]);
        let params = (sel & 0x40 != 0).then(|| dtype(&mut r));
        let group = usize::from(r.u8() % 3);
        let mut spec = TensorSpec::new(len).momentum(m).group(GroupId::new(group));
        if let Some(n) = name {
            spec = spec.name(n);
        }
        if let Some(d) = params {
            spec = spec.params(d);
        }
        let taken = name.is_some_and(|n| added.iter().any(|a| a.name == Some(n)));
        let ok = group < opt.group_count() && !taken;
        let count = opt.tensor_count();
        match opt.add(spec) {
            Ok(id) => {
                assert!(ok, "add({spec:?}) accepted");
                assert_eq!(id.index(), count);
                let info = opt.tensor(id).unwrap();
                assert_eq!(
                    (info.len, info.momentum, info.params, info.name),
                    (len, m.into(), params, name)
                );
                assert_eq!((info.group.index(), info.stream), (group, count as u64));
                added.push(Added {
                    id,
                    len,
                    name,
                    params,
                    group,
                });
            }
            Err(e) => {
                assert!(!ok, "add({spec:?}) refused: {e:?}");
                assert_eq!(opt.tensor_count(), count);
            }
        }
    }
    if flags & 8 != 0 {
        let scale = param(&mut r);
        let groups: Vec<Group> = (0..opt.group_count())
            .map(|i| *opt.group(GroupId::new(i)).unwrap())
            .collect();
        let want =
            scale.is_finite() && scale >= 0.0 && groups.iter().all(|g| group_valid(g, scale));
        let before = opt.lr_scale();
        let set = opt.set_lr_scale(scale);
        assert_eq!(set.is_ok(), want, "set_lr_scale({scale}) gave {set:?}");
        if set.is_err() {
            assert_eq!(opt.lr_scale().to_bits(), before.to_bits());
        }
    }

    step_once(&mut opt, &added, flags, &mut r);
    load(&mut opt, &added, &mut r);
}

/// One step against the reference (see the module docs).
fn step_once(opt: &mut Opt, added: &[Added], flags: u8, r: &mut Bytes) {
    // How the tensors are passed: positional (all), by handle or by name (a subset, any order).
    let mode = r.u8();
    let keyed = mode % 3;
    let mut order: Vec<usize> = (0..added.len()).collect();
    if keyed != 0 {
        order.retain(|_| !r.u8().is_multiple_of(4));
        for i in (1..order.len()).rev() {
            order.swap(i, usize::from(r.u8()) % (i + 1));
        }
    }
    let mut expect_ok = true;
    let by_name_ok = |a: &Added| keyed != 2 || a.name.is_some();
    let mut params: Vec<Buf> = Vec::new();
    let mut grads: Vec<Buf> = Vec::new();
    for &i in &order {
        let a = &added[i];
        let pd = match (a.params, r.u8() % 8) {
            (Some(d), 0) => Dtype::ALL[(d as usize + 1) % 3], // the wrong one
            (Some(d), _) => d,
            (None, _) => dtype(r),
        };
        let glen = if flags & 0x30 == 0x30 && r.u8().is_multiple_of(4) {
            a.len + 1
        } else {
            a.len
        };
        expect_ok &= a.params.is_none_or(|d| d == pd) && glen == a.len && by_name_ok(a);
        params.push(Buf::decode(pd, a.len, r));
        grads.push(Buf::decode(dtype(r), glen, r));
    }
    // Maybe the first tensor once more (keyed only: a positional list would be too long).
    let twice = keyed != 0 && !order.is_empty() && mode & 0x80 != 0;
    if twice {
        expect_ok = false;
    }
    let momentum_before = momenta(opt);
    let (steps, skipped) = (opt.steps(), opt.skipped_steps());
    let mut want_p = params.clone();
    let mut want_m = momentum_before.clone();
    // Whether a tensor whose group skips non-finite steps has a non-finite gradient.
    let mut skip = false;
    for (k, &i) in order.iter().enumerate() {
        let a = &added[i];
        let group = *opt.group(GroupId::new(a.group)).unwrap();
        let o = tensor_options(&group.options, steps, a.id.index() as u64);
        let hp = Hyperparams {
            lr: group.hp.lr * opt.lr_scale(),
            ..group.hp
        };
        skip |= o.skip_non_finite && !all_finite(grads[k].slice_ref(), &o);
        if expect_ok {
            let (p, m) = (want_p[k].slice_mut(), want_m[a.id.index()].slice_mut());
            reference_dyn(p, grads[k].slice_ref(), m, &hp, &o).unwrap();
        }
    }
    let mut got_p = params.clone();
    let mut extra_p = params.first().cloned();
    let outcome = {
        let mut tensors: Vec<Tensor<'_>> = got_p
            .iter_mut()
            .zip(&grads)
            .zip(&order)
            .map(|((p, g), &i)| {
                key(
                    Tensor::from_slices(p.slice_mut(), g.slice_ref()),
                    &added[i],
                    keyed,
                )
            })
            .collect();
        if twice && let Some(p) = extra_p.as_mut() {
            tensors.push(key(
                Tensor::from_slices(p.slice_mut(), grads[0].slice_ref()),
                &added[order[0]],
                keyed,
            ));
        }
        opt.step(&mut tensors)
    };
    let unchanged = |opt: &Opt, got_p: &[Buf]| {
        got_p
            .iter()
            .zip(&params)
            .all(|(a, b)| same_slices(a.slice_ref(), b.slice_ref(), false))
            && momenta(opt)
                .iter()
                .zip(&momentum_before)
                .all(|(a, b)| same_slices(a.slice_ref(), b.slice_ref(), false))
    };
    match outcome {
        Err(e) => {
            assert!(!expect_ok, "Lion::step refused valid tensors: {e:?}");
            assert!(unchanged(opt, &got_p), "Lion::step wrote before refusing");
            assert_eq!((opt.steps(), opt.skipped_steps()), (steps, skipped));
        }
        Ok(Outcome::SkippedNonFinite) => {
            assert!(expect_ok && skip, "Lion::step skipped");
            assert!(unchanged(opt, &got_p), "Lion::step wrote while skipping");
            assert_eq!((opt.steps(), opt.skipped_steps()), (steps, skipped + 1));
        }
        Ok(Outcome::Applied) => {
            assert!(expect_ok && !skip, "Lion::step applied");
            for (k, &i) in order.iter().enumerate() {
                let index = added[i].id.index();
                assert!(
                    same_slices(got_p[k].slice_ref(), want_p[k].slice_ref(), true),
                    "Lion::step: tensor {index}'s parameters differ from the reference"
                );
            }
            for (index, m) in momenta(opt).iter().enumerate() {
                assert!(
                    same_slices(m.slice_ref(), want_m[index].slice_ref(), true),
                    "Lion::step: tensor {index}'s momentum differs from the reference"
                );
            }
            assert_eq!((opt.steps(), opt.skipped_steps()), (steps + 1, skipped));
        }
    }
}

fn key<'a>(t: Tensor<'a>, a: &Added, keyed: u8) -> Tensor<'a> {
    match (keyed, a.name) {
        (0, _) => t,
        (1, _) => t.of(a.id),
        (_, Some(name)) => t.named(name),
        (_, None) => t.named("no such name"),
    }
}

/// A state to load (see the module docs).
fn load(opt: &mut Opt, added: &[Added], r: &mut Bytes) {
    let mode = r.u8();
    let mut safetensors = cfg!(feature = "safetensors") && mode & 1 != 0;
    // A twin: the same structure, other settings, counts and momentum.
    let mut twin = opt.clone();
    for i in 0..twin.group_count() {
        let g = Group {
            hp: Hyperparams {
                lr: [1e-4, 0.0, 3e-4, 1.0][usize::from(r.u8() % 4)],
                ..Hyperparams::default()
            },
            options: group_options(r),
        };
        let _ = twin.set_group(GroupId::new(i), g);
    }
    let _ = twin.set_lr_scale([1.0, 0.5, 0.0][usize::from(r.u8() % 3)]);
    // Each group's skip flag from one bit.
    let skip_bits = r.u8();
    twin.update_groups(|id, g| g.options.skip_non_finite = (skip_bits >> id.index()) & 1 != 0)
        .unwrap();
    {
        let mut p: Vec<Buf> = added
            .iter()
            .map(|a| Buf::decode(dtype(r), a.len, r))
            .collect();
        let g: Vec<Buf> = added
            .iter()
            .map(|a| Buf::decode(dtype(r), a.len, r))
            .collect();
        let mut tensors: Vec<Tensor<'_>> = p
            .iter_mut()
            .zip(&g)
            .zip(added)
            .filter(|(_, a)| a.params.is_none())
            .map(|((p, g), a)| Tensor::from_slices(p.slice_mut(), g.slice_ref()).of(a.id))
            .collect();
        let _ = twin.step(&mut tensors);
    }
    let twin_state = match save(&twin, safetensors) {
        Some(state) => state,
        None => {
            // An unnamed tensor's index is another tensor's name: no safetensors file.
            let names: Vec<String> = (0..added.len())
                .filter(|&i| twin.tensor(TensorId::new(i)).unwrap().name.is_none())
                .map(|i| i.to_string())
                .collect();
            assert!(
                added
                    .iter()
                    .any(|a| a.name.is_some_and(|n| names.iter().any(|x| x == n))),
                "save_safetensors refused names that do not collide"
            );
            safetensors = false;
            save(&twin, false).unwrap()
        }
    };
    // A truncated twin state or one with a changed byte: damaged, so refused (both formats
    // carry a checksum).
    let mut damaged = false;
    let bytes = match (mode >> 1) % 4 {
        0 => r.rest().to_vec(),
        1 => twin_state.clone(),
        m => {
            let mut b = twin_state.clone();
            if m == 2 {
                b.truncate(usize::from(r.u16()) % (b.len() + 1));
                damaged = b.len() < twin_state.len();
            } else if !b.is_empty() {
                let at = usize::from(r.u16()) % b.len();
                match r.u8() % 3 {
                    0 => {
                        b[at] ^= r.u8() | 1;
                        damaged = true;
                    }
                    1 => {
                        let extra = (0..1 + r.u8() % 4).map(|_| r.u8()).collect::<Vec<_>>();
                        b.splice(at..at, extra);
                    }
                    _ => {
                        b.remove(at);
                    }
                }
            }
            b
        }
    };
    let before = opt.state_to_vec();
    let got = if safetensors {
        load_safetensors(opt, &bytes)
    } else {
        opt.load_state(&bytes)
    };
    if damaged {
        assert!(got.is_err(), "a damaged state was accepted");
    }
    if bytes == twin_state {
        assert_eq!(got, Ok(()), "the twin's own state was refused");
        assert_eq!(
            opt.state_to_vec(),
            twin.state_to_vec(),
            "the twin's state loaded differently"
        );
    }
    match got {
        Ok(()) => {
            if safetensors {
                let mut copy = opt.clone();
                let again = save(opt, true).unwrap();
                assert_eq!(load_safetensors(&mut copy, &again), Ok(()));
                assert_eq!(copy.state_to_vec(), opt.state_to_vec());
            } else {
                assert_eq!(
                    opt.state_to_vec(),
                    bytes,
                    "a loaded checkpoint saves back differently"
                );
            }
            for i in 0..opt.group_count() {
                let g = opt.group(GroupId::new(i)).unwrap();
                assert!(
                    group_valid(g, opt.lr_scale()),
                    "a loaded group is invalid: {g:?}"
                );
            }
        }
        Err(e) => {
            assert!(matches!(e, Error::Checkpoint(_)), "load gave {e:?}");
            assert_eq!(
                opt.state_to_vec(),
                before,
                "a refused state changed the optimizer"
            );
        }
    }
    // Whatever was loaded, a step over valid tensors works.
    let mut p: Vec<Buf> = added
        .iter()
        .map(|a| Buf::decode(a.params.unwrap_or(Dtype::F32), a.len, r))
        .collect();
    let g: Vec<Buf> = added
        .iter()
        .map(|a| Buf::decode(Dtype::Bf16, a.len, r))
        .collect();
    let mut tensors: Vec<Tensor<'_>> = p
        .iter_mut()
        .zip(&g)
        .map(|(p, g)| Tensor::from_slices(p.slice_mut(), g.slice_ref()))
        .collect();
    assert!(opt.step(&mut tensors).is_ok());
}

/// The optimizer's state; `None` if a safetensors file cannot be written (colliding names).
fn save(opt: &Opt, safetensors: bool) -> Option<Vec<u8>> {
    #[cfg(feature = "safetensors")]
    if safetensors {
        return match opt.save_safetensors() {
            Ok(file) => Some(file),
            Err(Error::DuplicateName { .. }) => None,
            Err(e) => panic!("save_safetensors: {e:?}"),
        };
    }
    let _ = safetensors;
    Some(opt.state_to_vec())
}

#[cfg(feature = "safetensors")]
fn load_safetensors(opt: &mut Opt, bytes: &[u8]) -> Result<(), Error> {
    opt.load_safetensors(bytes)
}

#[cfg(not(feature = "safetensors"))]
fn load_safetensors(_: &mut Opt, _: &[u8]) -> Result<(), Error> {
    unreachable!("the safetensors mode needs the feature")
}
