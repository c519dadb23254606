//! `lion_optim_candle::Lion` against `lion_optim::reference`, bit for bit; groups; state files;
//! bad input (nothing written); in place; many vars; 8-bit momentum (against the reference and
//! the core `Lion`, beside f32 groups, state files, checkpoints that do not fit).

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Storage, Tensor, Var, WithDType};
use candle_nn::{Init, Optimizer, VarMap};
use lion_optim::{
    Element, Hyperparams, MomentumDtype, Q8_BLOCK, Q8Mut, Rounding, StepOptions, TensorSpec, bf16,
    f16, reference,
};
use lion_optim_candle::{GroupRule, Lion, ParamsLion};
use std::path::Path;
use support::Rng;

type R<T = ()> = candle_core::Result<T>;

/// The device of every var here.
const DEV: Device = Device::Cpu;

/// Standard normal initial values.
const RANDN: Init = Init::Randn {
    mean: 0.0,
    stdev: 1.0,
};

/// `n` values of `Rng::value_with_zeros` (in [-2, 2), exact zeros now and then, so that
/// c == 0 happens), rounded to `T`.
fn random<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n)
        .map(|_| T::from_f32_rounded(rng.value_with_zeros()))
        .collect()
}

/// The bits of every element, for exact comparisons (NaN payloads included).
fn bits<T: Element>(v: &[T]) -> Vec<u64> {
    v.iter().map(|&x| support::bits(x)).collect()
}

fn values<T: WithDType>(t: &Tensor) -> R<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

fn momentum_bits(opt: &Lion, name: &str) -> Vec<u64> {
    let id = opt.core().tensor_id(name).expect("named var");
    match opt
        .core()
        .momentum(id)
        .expect("momentum")
        .as_slice_ref()
        .expect("not 8-bit")
    {
        lion_optim::SliceRef::F32(s) => bits(s),
        lion_optim::SliceRef::F16(s) => bits(s),
        lion_optim::SliceRef::Bf16(s) => bits(s),
    }
}

/// Named vars, for `Lion::new_named`.
fn named(vars: &[(&str, &Var)]) -> Vec<(String, Var)> {
    vars.iter()
        .map(|&(n, v)| (n.to_string(), v.clone()))
        .collect()
}

/// Asserts that each f32 tensor holds exactly (bit for bit) the values beside it.
fn assert_f32_bits(pairs: &[(&Tensor, &[f32])]) -> R {
    for (i, (t, expected)) in pairs.iter().enumerate() {
        assert_eq!(bits(&values::<f32>(t)?), bits(expected), "tensor {i}");
    }
    Ok(())
}

/// The address of a var's storage buffer (to prove the update is in place).
fn buffer_ptr(t: &Tensor) -> usize {
    let (storage, _) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(candle_core::CpuStorage::F32(v)) => v.as_ptr() as usize,
        Storage::Cpu(candle_core::CpuStorage::BF16(v)) => v.as_ptr() as usize,
        Storage::Cpu(candle_core::CpuStorage::F16(v)) => v.as_ptr() as usize,
        _ => panic!("unexpected storage"),
    }
}

/// The settings of the checks against the reference (no decay for biases and norms).
fn reference_params() -> ParamsLion {
    ParamsLion {
        lr: 0.03,
        weight_decay: 0.7,
        ..Default::default()
    }
    .no_decay_for_biases_and_norms()
}

/// The reference's settings for the var `name` under [`reference_params`].
fn reference_hp(name: &str) -> Hyperparams {
    Hyperparams {
        lr: 0.03,
        weight_decay: if lion_optim_candle::is_bias_or_norm(name) {
            0.0
        } else {
            0.7
        },
        ..Hyperparams::default()
    }
}

/// Vars of `shapes` (random values of dtype `P`) in an optimizer with `params`, and gradients of
/// dtype `G`, stepped six times by the candle optimizer and by the reference, compared bit for
/// bit after every step: the parameters, and the momentum by `check_momentum(opt, name, m,
/// when)` (also before the first step). `zeros(n)` is the reference's starting momentum of `n`
/// elements, `reference_step(p, g, m, hp)` one step of the reference.
fn check_steps<P, G, M>(
    params: ParamsLion,
    seed: u64,
    shapes: &[(&str, &[usize])],
    zeros: impl Fn(usize) -> M,
    reference_step: impl Fn(&mut [P], &[G], &mut M, &Hyperparams),
    check_momentum: impl Fn(&Lion, &str, &M, &str),
) -> R
where
    P: Element + WithDType,
    G: Element + WithDType,
{
    let mut rng = Rng(seed
        ^ <P as WithDType>::DTYPE.size_in_bytes() as u64
        ^ (<G as WithDType>::DTYPE.size_in_bytes() as u64) << 8);
    let mut named = Vec::new();
    let mut reference: Vec<(Vec<P>, M)> = Vec::new();
    for &(name, shape) in shapes {
        let init: Vec<P> = random(&mut rng, shape.iter().product());
        named.push((name.to_string(), Var::from_slice(&init, shape, &DEV)?));
        let m = zeros(init.len());
        reference.push((init, m));
    }
    let mut opt = Lion::new_named(named.clone(), params)?;
    for ((name, _), (_, m)) in named.iter().zip(&reference) {
        check_momentum(&opt, name, m, "before the first step");
    }
    for step in 0..6 {
        let mut grads = GradStore::default();
        for ((name, var), (p, m)) in named.iter().zip(&mut reference) {
            let g: Vec<G> = random(&mut rng, var.elem_count());
            grads.insert(var.as_tensor(), Tensor::from_slice(&g, var.shape(), &DEV)?);
            reference_step(p, &g, m, &reference_hp(name));
        }
        if step == 3 {
            opt.set_learning_rate(0.03); // the same rate again: nothing changes
        }
        opt.step(&grads)?;
        for ((name, var), (p, m)) in named.iter().zip(&reference) {
            let when = format!("after step {step}");
            assert_eq!(bits(&values::<P>(var)?), bits(p), "{name} {when}");
            check_momentum(&opt, name, m, &when);
        }
    }
    assert_eq!(opt.core().steps(), 6);
    Ok(())
}

/// [`check_steps`] with momentum of dtype `M`.
fn check_against_reference<P, G, M>() -> R
where
    P: Element + WithDType,
    G: Element + WithDType,
    M: Element + WithDType,
{
    check_steps::<P, G, Vec<M>>(
        ParamsLion {
            momentum: <M as WithDType>::DTYPE,
            ..reference_params()
        },
        0x9e37_79b9,
        &[
            ("blocks.0.fc.weight", &[33, 7]),
            ("blocks.0.fc.bias", &[5]),
            ("scale", &[1]),
            ("blocks.0.ln_1.weight", &[4, 3, 2]),
        ],
        |n| vec![M::from_f32_rounded(0.0); n],
        |p, g, m, hp| {
            reference::step_with(p, g, m, hp, &StepOptions::default())
                .expect("valid reference step");
        },
        |opt, name, m, when| {
            assert_eq!(momentum_bits(opt, name), bits(m), "{name} momentum {when}")
        },
    )
}

/// Every dtype of vars (with momentum in f32 and in their own dtype), and mixed dtypes.
#[test]
fn vars_of_every_dtype_are_bit_identical_to_the_reference() -> R {
    check_against_reference::<f32, f32, f32>()?;
    check_against_reference::<bf16, bf16, f32>()?;
    check_against_reference::<bf16, bf16, bf16>()?;
    check_against_reference::<f16, f16, f32>()?;
    check_against_reference::<f16, f16, f16>()?;
    check_against_reference::<bf16, f32, f32>()?;
    check_against_reference::<f32, f16, bf16>()
}

/// A real backward pass through a VarMap model: the candle optimizer against the reference on
/// the gradients candle computed.
#[test]
fn a_backward_step_through_a_varmap_matches_the_reference() -> R {
    let varmap = VarMap::new();
    let w = varmap.get((3, 4), "fc.weight", RANDN, DType::F32, &DEV)?;
    let b = varmap.get(3, "fc.bias", Init::Const(0.5), DType::F32, &DEV)?;
    let x = Tensor::new(&[[1f32, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]], &DEV)?;
    let params = ParamsLion {
        lr: 1e-2,
        weight_decay: 0.5,
        ..Default::default()
    }
    .no_decay_for_biases_and_norms();
    let mut opt = Lion::from_varmap(&varmap, params)?;
    assert_eq!(
        opt.vars().map(|(n, _)| n.unwrap_or("")).collect::<Vec<_>>(),
        ["fc.bias", "fc.weight"]
    );
    let (mut rw, mut rb) = (values::<f32>(&w)?, values::<f32>(&b)?);
    let (mut mw, mut mb) = (vec![0f32; rw.len()], vec![0f32; rb.len()]);
    let hp = Hyperparams {
        lr: 1e-2,
        weight_decay: 0.5,
        ..Hyperparams::default()
    };
    for _ in 0..4 {
        let loss = x.matmul(&w.t()?)?.broadcast_add(&b)?.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        let (gw, gb) = (
            values::<f32>(grads.get(&w).unwrap())?,
            values::<f32>(grads.get(&b).unwrap())?,
        );
        reference::step(&mut rw, &gw, &mut mw, &hp).unwrap();
        reference::step(
            &mut rb,
            &gb,
            &mut mb,
            &Hyperparams {
                weight_decay: 0.0,
                ..hp
            },
        )
        .unwrap();
        opt.step(&grads)?;
        assert_f32_bits(&[(&w, &rw), (&b, &rb)])?;
    }
    Ok(())
}

#[test]
fn the_update_is_in_place() -> R {
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let var = Var::ones((64, 3), dtype, &DEV)?;
        let alias: Tensor = var.as_tensor().clone(); // shares the storage
        let before = buffer_ptr(&alias);
        let mut opt = Lion::new(
            vec![var.clone()],
            ParamsLion {
                lr: 0.25,
                ..Default::default()
            },
        )?;
        let mut grads = GradStore::default();
        grads.insert(var.as_tensor(), Tensor::ones((64, 3), dtype, &DEV)?);
        opt.step(&grads)?;
        assert_eq!(buffer_ptr(&alias), before, "{dtype:?}: same buffer");
        assert_eq!(buffer_ptr(var.as_tensor()), before);
        assert!(
            values::<f32>(&alias.to_dtype(DType::F32)?)?
                .iter()
                .all(|&x| x == 0.75),
            "{dtype:?}"
        );
    }
    Ok(())
}

#[test]
fn a_var_without_a_gradient_is_left_alone() -> R {
    let varmap = VarMap::new();
    let used = varmap.get(4, "used", Init::Const(1.0), DType::F32, &DEV)?;
    let unused = varmap.get(4, "unused", Init::Const(1.0), DType::F32, &DEV)?;
    let mut opt = Lion::from_varmap(
        &varmap,
        ParamsLion {
            lr: 0.5,
            ..Default::default()
        },
    )?;
    let loss = used.sum_all()?;
    opt.backward_step(&loss)?;
    assert_eq!(values::<f32>(&used)?, [0.5; 4]);
    assert_eq!(values::<f32>(&unused)?, [1.0; 4]);
    assert_eq!(momentum_bits(&opt, "unused"), [0; 4]);
    // A step without any gradient still counts as a step (as the core's empty keyed step).
    opt.step(&GradStore::default())?;
    assert_eq!(opt.core().steps(), 2);
    Ok(())
}

/// A group of the embeddings ("wte..." vars) at half the learning rate.
fn embeddings() -> GroupRule {
    GroupRule::new("embeddings", |n| n.starts_with("wte")).lr_mult(0.5)
}

#[test]
fn groups_by_name() -> R {
    let varmap = VarMap::new();
    for name in [
        "wte.weight",
        "h.0.attn.weight",
        "h.0.attn.bias",
        "h.0.ln_1.weight",
        "ln_f.bias",
    ] {
        varmap.get(2, name, Init::Const(1.0), DType::F32, &DEV)?;
    }
    let params = ParamsLion {
        lr: 0.5,
        weight_decay: 0.5,
        ..Default::default()
    }
    .with_group(embeddings().momentum(DType::BF16))
    .no_decay_for_biases_and_norms();
    let mut opt = Lion::from_varmap(&varmap, params)?;
    let group = |n: &str| opt.group_of(n).map(|g| g.index());
    assert_eq!(group("wte.weight"), Some(1));
    assert_eq!(group("h.0.attn.weight"), Some(0));
    assert_eq!(
        [
            group("h.0.attn.bias"),
            group("h.0.ln_1.weight"),
            group("ln_f.bias")
        ],
        [Some(2); 3]
    );
    let id = opt.core().tensor_id("wte.weight").unwrap();
    assert_eq!(
        opt.core().momentum(id).unwrap().dtype(),
        lion_optim::Dtype::Bf16
    );

    let step = |opt: &mut Lion| -> R {
        let data = varmap.data().lock().unwrap();
        let mut grads = GradStore::default();
        for var in data.values() {
            grads.insert(var.as_tensor(), Tensor::new(&[1f32, -1.0], &DEV)?);
        }
        drop(data);
        opt.step(&grads)
    };
    step(&mut opt)?;
    let get = |n: &str| values::<f32>(varmap.data().lock().unwrap()[n].as_tensor());
    let decayed = (1.0 - 0.5f64 * 0.5) as f32;
    assert_eq!(get("h.0.attn.weight")?, [decayed - 0.5, decayed + 0.5]);
    let decayed_emb = (1.0 - 0.25f64 * 0.5) as f32;
    assert_eq!(get("wte.weight")?, [decayed_emb - 0.25, decayed_emb + 0.25]);
    assert_eq!(get("h.0.attn.bias")?, [0.5, 1.5]);
    // A schedule sets every group's rate: lr * lr_mult.
    opt.set_learning_rate(0.25);
    assert_eq!(opt.learning_rate(), 0.25);
    assert_eq!(
        opt.core().group(lion_optim::GroupId::new(1)).unwrap().hp.lr,
        0.125
    );
    assert_eq!(
        opt.core().group(lion_optim::GroupId::new(2)).unwrap().hp.lr,
        0.25
    );
    step(&mut opt)?;
    assert_eq!(get("h.0.attn.bias")?, [0.25, 1.75]);
    Ok(())
}

/// Training resumed from files: run A takes six steps in one go; run B three steps, then its
/// model and optimizer are saved in `dir` (`model.safetensors`, `optimizer.safetensors`) and
/// restored into new objects (run C: the same state, bit for bit, and step count), which take
/// three more. `model()` builds a model (a VarMap and its vars), `params()` the optimizer's
/// settings, `loss` a model's loss on the next random batch (the batches of A, and of B then
/// C, from `Rng(seed)`); `inspect` looks at run C's optimizer right after the restore.
/// Returns the models of runs A and C after their six steps.
fn resumed_from_files<M>(
    dir: &Path,
    seed: u64,
    model: impl Fn() -> R<(VarMap, M)>,
    params: impl Fn() -> ParamsLion,
    loss: impl Fn(&M, &mut Rng) -> R<Tensor>,
    inspect: impl FnOnce(&Lion) -> R,
) -> R<[M; 2]> {
    let (va, a) = model()?;
    let mut oa = Lion::from_varmap(&va, params())?;
    let mut rng = Rng(seed);
    for _ in 0..6 {
        oa.backward_step(&loss(&a, &mut rng)?)?;
    }
    std::fs::create_dir_all(dir)?;
    let (vb, b) = model()?;
    let mut ob = Lion::from_varmap(&vb, params())?;
    let mut rng = Rng(seed);
    for _ in 0..3 {
        ob.backward_step(&loss(&b, &mut rng)?)?;
    }
    vb.save(dir.join("model.safetensors"))?;
    ob.save(dir.join("optimizer.safetensors"))?;
    let saved = ob.state_bytes()?;
    drop((ob, vb, b));
    let (mut vc, c) = model()?;
    vc.load(dir.join("model.safetensors"))?;
    let mut oc = Lion::from_varmap(&vc, params())?;
    oc.load(dir.join("optimizer.safetensors"))?;
    assert_eq!(oc.core().steps(), 3);
    assert_eq!(oc.state_bytes()?, saved);
    inspect(&oc)?;
    for _ in 0..3 {
        oc.backward_step(&loss(&c, &mut rng)?)?;
    }
    assert_eq!(oc.state_bytes()?, oa.state_bytes()?);
    Ok([a, c])
}

#[test]
fn state_round_trip_through_a_safetensors_file() -> R {
    let make = || -> R<(VarMap, [Tensor; 2])> {
        let varmap = VarMap::new();
        let w = varmap.get((8, 8), "w", Init::Const(0.25), DType::F32, &DEV)?;
        let b = varmap.get(8, "b", Init::Const(0.0), DType::BF16, &DEV)?;
        Ok((varmap, [w, b]))
    };
    let params = || {
        ParamsLion {
            lr: 1e-2,
            weight_decay: 0.1,
            momentum: DType::BF16,
            ..Default::default()
        }
        .no_decay_for_biases_and_norms()
    };
    let loss_of = |[w, b]: &[Tensor; 2], rng: &mut Rng| -> R<Tensor> {
        let t = Tensor::from_slice(&random::<f32>(rng, 64), (8, 8), &DEV)?;
        let l = ((w - t)?.sqr()?.sum_all()? + b.to_dtype(DType::F32)?.sum_all()?)?;
        Ok(l)
    };
    let dir = std::env::temp_dir().join(format!("lion-optim-candle-test-{}", std::process::id()));
    // The file is an ordinary safetensors file, keyed by var name.
    let file_check = |oc: &Lion| -> R {
        let file = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &DEV)?;
        let mut keys: Vec<_> = file.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["b.exp_avg", "w.exp_avg"]);
        assert_eq!(file["w.exp_avg"].dtype(), DType::BF16);
        assert_eq!(
            bits(&values::<bf16>(&file["w.exp_avg"])?),
            momentum_bits(oc, "w")
        );
        Ok(())
    };
    let [[wa, ba], [wc, bc]] = resumed_from_files(&dir, 7, make, params, loss_of, file_check)?;
    assert_eq!(bits(&values::<f32>(&wc)?), bits(&values::<f32>(&wa)?));
    assert_eq!(bits(&values::<bf16>(&bc)?), bits(&values::<bf16>(&ba)?));

    // A file for other vars is refused, and nothing changes.
    let other = VarMap::new();
    other.get((8, 8), "not_w", Init::Const(0.0), DType::F32, &DEV)?;
    other.get(8, "b", Init::Const(0.0), DType::BF16, &DEV)?;
    let mut od = Lion::from_varmap(&other, params())?;
    let e = od.load(dir.join("optimizer.safetensors")).unwrap_err();
    assert!(e.to_string().contains("loading the state"), "{e}");
    assert_eq!(od.core().steps(), 0);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Every var's values, to check that a refused step wrote nothing.
fn snapshot(vars: &[&Var]) -> R<Vec<Vec<u64>>> {
    vars.iter()
        .map(|v| Ok(bits(&values::<f32>(&v.to_dtype(DType::F32)?)?)))
        .collect()
}

#[test]
fn bad_gradients_are_refused_before_anything_is_written() -> R {
    let a = Var::ones(4, DType::F32, &DEV)?;
    let b = Var::ones(4, DType::F32, &DEV)?;
    let mut opt = Lion::new_named(named(&[("a", &a), ("b", &b)]), ParamsLion::default())?;
    let before = snapshot(&[&a, &b])?;
    let cases: [(Tensor, &str); 3] = [
        (Tensor::ones(4, DType::F64, &DEV)?, "dtype F64"),
        (Tensor::ones(4, DType::U32, &DEV)?, "dtype U32"),
        (Tensor::ones(5, DType::F32, &DEV)?, "shape [5]"),
    ];
    for (bad, what) in cases {
        let mut grads = GradStore::default();
        grads.insert(a.as_tensor(), Tensor::ones(4, DType::F32, &DEV)?); // a valid one first
        grads.insert(b.as_tensor(), bad);
        let e = opt.step(&grads).unwrap_err().to_string();
        assert!(e.contains("\"b\"") && e.contains(what), "{e}");
        assert_eq!(snapshot(&[&a, &b])?, before);
        assert_eq!(opt.core().steps(), 0);
    }
    Ok(())
}

#[test]
fn an_invalid_learning_rate_is_reported_by_the_next_step() -> R {
    let a = Var::ones(4, DType::F32, &DEV)?;
    let mut opt = Lion::new(vec![a.clone()], ParamsLion::default())?;
    let mut grads = GradStore::default();
    grads.insert(a.as_tensor(), Tensor::ones(4, DType::F32, &DEV)?);
    for bad in [-1.0, f64::NAN, 1e300] {
        opt.set_learning_rate(bad);
        let e = opt.step(&grads).unwrap_err().to_string();
        assert!(e.contains("learning rate"), "{e}");
        assert_eq!(values::<f32>(&a)?, [1.0; 4]);
    }
    opt.set_learning_rate(0.5);
    opt.step(&grads)?;
    assert_eq!(values::<f32>(&a)?, [0.5; 4]);
    Ok(())
}

#[test]
fn strided_and_aliased_gradients_are_read_from_copies() -> R {
    let mut rng = Rng(3);
    let init: Vec<f32> = random(&mut rng, 12);
    let a = Var::from_slice(&init, (3, 4), &DEV)?;
    let b = Var::from_slice(&random::<f32>(&mut rng, 12), (4, 3), &DEV)?;
    let mut opt = Lion::new(
        vec![a.clone(), b.clone()],
        ParamsLion {
            lr: 0.1,
            ..Default::default()
        },
    )?;
    let mut grads = GradStore::default();
    // a's gradient is a transposed (non-contiguous) view of b itself: it shares b's storage.
    let g = b.as_tensor().t()?;
    assert!(!g.is_contiguous());
    let g_values = values::<f32>(&g)?;
    grads.insert(a.as_tensor(), g);
    // b's gradient is a view of a (contiguous): it shares a's storage (whose write lock the
    // step holds).
    grads.insert(b.as_tensor(), a.as_tensor().reshape((4, 3))?);
    let (mut ra, mut rb) = (init.clone(), values::<f32>(&b)?);
    let (mut ma, mut mb) = (vec![0f32; 12], vec![0f32; 12]);
    let hp = Hyperparams {
        lr: 0.1,
        ..Hyperparams::default()
    };
    reference::step(&mut ra, &g_values, &mut ma, &hp).unwrap();
    reference::step(&mut rb, &init, &mut mb, &hp).unwrap();
    opt.step(&grads)?;
    assert_f32_bits(&[(&a, &ra), (&b, &rb)])?;
    Ok(())
}

#[test]
fn bad_vars_and_settings_are_refused() -> R {
    let f64_var = Var::ones(3, DType::F64, &DEV)?;
    let e = Lion::new(vec![f64_var], ParamsLion::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("F64"), "{e}");
    // Integer vars are not trained (as candle's AdamW): skipped.
    let opt = Lion::new(vec![Var::ones(3, DType::U32, &DEV)?], ParamsLion::default())?;
    assert_eq!(opt.vars().count(), 0);
    // Group rules need names.
    let e = Lion::new(
        vec![Var::ones(3, DType::F32, &DEV)?],
        ParamsLion::default().no_decay_for_biases_and_norms(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("from_varmap"), "{e}");
    // The same var twice.
    let v = Var::ones(3, DType::F32, &DEV)?;
    let e = Lion::new(vec![v.clone(), v], ParamsLion::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("shares its storage"), "{e}");
    // Settings the core refuses.
    for params in [
        ParamsLion {
            beta1: 1.0,
            ..Default::default()
        },
        ParamsLion {
            lr: -1.0,
            ..Default::default()
        },
        ParamsLion {
            momentum: DType::F64,
            ..Default::default()
        },
        ParamsLion::default().with_group(GroupRule::new("g", |_| true).weight_decay(-1.0)),
    ] {
        assert!(Lion::new(vec![], params).is_err());
    }
    // Another device: only with a GPU build of candle (not on this CPU-only machine).
    match Device::new_cuda(0) {
        Ok(gpu) => {
            let v = Var::ones(3, DType::F32, &gpu)?;
            let e = Lion::new(vec![v], ParamsLion::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("only CPU vars"), "{e}");
        }
        Err(_) => eprintln!(
            "no CUDA device here: the refusal of a var on another device is not exercised"
        ),
    }
    Ok(())
}

/// The nested in-place ops take about 1.5 KiB of stack per var: a model with few vars nests on
/// the caller's stack (here a small thread's), one with many on a thread of its own.
#[test]
fn many_vars_in_one_step() -> R {
    for count in [200, 3000] {
        let handle = std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || -> R {
                let vars: Vec<Var> = (0..count)
                    .map(|i| Var::ones(1 + i % 5, DType::F32, &DEV))
                    .collect::<R<_>>()?;
                let mut opt = Lion::new(
                    vars.clone(),
                    ParamsLion {
                        lr: 0.5,
                        ..Default::default()
                    },
                )?;
                let mut grads = GradStore::default();
                for v in &vars[1..] {
                    grads.insert(v.as_tensor(), v.ones_like()?);
                }
                opt.step(&grads)?;
                assert_eq!(values::<f32>(&vars[0])?, [1.0]);
                for v in &vars[1..] {
                    assert!(values::<f32>(v)?.iter().all(|&x| x == 0.5));
                }
                Ok(())
            })
            .expect("spawn");
        handle.join().expect("no stack overflow")?;
    }
    Ok(())
}

/// Skipping steps with non-finite gradients (a group option of the core, set through
/// `core_mut`): a NaN gradient leaves every var and momentum as it was, and the step is counted
/// as skipped; the next finite step applies.
#[test]
fn a_non_finite_gradient_skips_the_step_when_asked() -> R {
    let a = Var::ones(4, DType::F32, &DEV)?;
    let b = Var::ones(3, DType::BF16, &DEV)?;
    let mut opt = Lion::new_named(
        named(&[("a", &a), ("b", &b)]),
        ParamsLion {
            lr: 0.5,
            ..Default::default()
        },
    )?;
    opt.core_mut()
        .update_groups(|_, g| g.options.skip_non_finite = true)
        .expect("valid options");
    let mut grads = GradStore::default();
    grads.insert(a.as_tensor(), Tensor::ones(4, DType::F32, &DEV)?);
    grads.insert(
        b.as_tensor(),
        Tensor::new(&[1f32, f32::NAN, 1.0], &DEV)?.to_dtype(DType::BF16)?,
    );
    opt.step(&grads)?;
    assert_eq!(values::<f32>(&a)?, [1.0; 4]);
    assert_eq!(values::<f32>(&b.to_dtype(DType::F32)?)?, [1.0; 3]);
    assert_eq!(momentum_bits(&opt, "a"), [0; 4]);
    assert_eq!((opt.core().steps(), opt.core().skipped_steps()), (0, 1));
    grads.insert(b.as_tensor(), Tensor::ones(3, DType::BF16, &DEV)?);
    opt.step(&grads)?;
    assert_eq!(values::<f32>(&a)?, [0.5; 4]);
    assert_eq!(values::<f32>(&b.to_dtype(DType::F32)?)?, [0.5; 3]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 8-bit momentum (`ParamsLion::momentum_q8`, `GroupRule::momentum_q8`)

/// The 8-bit momentum of a var: its codes and the bits of its scales.
fn q8_state(opt: &Lion, name: &str) -> (Vec<u8>, Vec<u64>) {
    let id = opt.core().tensor_id(name).expect("named var");
    match opt.core().momentum(id).expect("momentum") {
        lion_optim::MomentumRef::Q8(q) => (q.codes().to_vec(), bits(q.absmax())),
        other => panic!("{name}: {} momentum, not 8-bit", other.dtype()),
    }
}

fn momentum_format(opt: &Lion, name: &str) -> MomentumDtype {
    let id = opt.core().tensor_id(name).expect("named var");
    opt.core().momentum(id).expect("momentum").dtype()
}

/// A zero 8-bit momentum of `n` elements (as the core starts it): codes and scales.
fn q8_zeros(n: usize) -> (Vec<u8>, Vec<f32>) {
    (vec![127; n], vec![0.0; n.div_ceil(Q8_BLOCK)])
}

/// Vars of dtype `P` with gradients of dtype `G` and 8-bit momentum (also in the group of
/// biases and norms, which inherits it), stepped by the candle optimizer and by
/// `reference::step_q8_with`, compared bit for bit (parameters, codes, scales) after every
/// step. The sizes cover whole, partial and several blocks of 256.
fn check_q8_against_reference<P, G>() -> R
where
    P: Element + WithDType,
    G: Element + WithDType,
{
    check_steps::<P, G, (Vec<u8>, Vec<f32>)>(
        ParamsLion {
            momentum_q8: true,
            ..reference_params()
        },
        0x51_7cc1,
        &[
            ("fc.weight", &[33, 17]),
            ("fc.bias", &[256]),
            ("ln_f.weight", &[5]),
            ("wte.weight", &[2, 300]),
            ("scale", &[1]),
        ],
        q8_zeros,
        |p, g, (codes, absmax), hp| {
            let m = Q8Mut::new(codes, absmax).expect("valid 8-bit momentum");
            reference::step_q8_with(p, g, m, hp, &StepOptions::default())
                .expect("valid reference step");
        },
        |opt, name, (codes, absmax), when| {
            assert_eq!(momentum_format(opt, name), MomentumDtype::Q8, "{name}");
            let (opt_codes, opt_absmax) = q8_state(opt, name);
            assert_eq!(opt_codes, *codes, "{name} codes {when}");
            assert_eq!(opt_absmax, bits(absmax), "{name} scales {when}");
        },
    )
}

#[test]
fn q8_momentum_is_bit_identical_to_the_reference() -> R {
    check_q8_against_reference::<f32, f32>()?;
    check_q8_against_reference::<bf16, bf16>()?;
    check_q8_against_reference::<f16, f16>()?;
    check_q8_against_reference::<bf16, f32>()
}

/// Training through a VarMap model with 8-bit momentum and stochastic rounding (bf16 vars), the
/// biases in a group with f32 momentum: every step gives exactly the bytes of the core `Lion`
/// stepping the same gradients, parameters and state file alike.
#[test]
fn q8_training_is_bit_identical_to_the_core_lion() -> R {
    let varmap = VarMap::new();
    let init = Init::Randn {
        mean: 0.0,
        stdev: 0.5,
    };
    let w1 = varmap.get((48, 12), "fc1.weight", init, DType::BF16, &DEV)?;
    let b1 = varmap.get(48, "fc1.bias", Init::Const(0.0), DType::BF16, &DEV)?;
    let w2 = varmap.get((3, 48), "fc2.weight", init, DType::BF16, &DEV)?;
    let options = StepOptions {
        rounding: Rounding::Stochastic { seed: 0x5eed },
        ..StepOptions::default()
    };
    let params = ParamsLion {
        lr: 1e-2,
        weight_decay: 0.1,
        momentum_q8: true,
        options,
        ..Default::default()
    }
    .with_group(GroupRule::biases_and_norms().momentum(DType::F32));
    let mut opt = Lion::from_varmap(&varmap, params)?;

    // The same optimizer, built on the core directly (vars sorted by name, as from_varmap).
    let hp = Hyperparams {
        lr: 1e-2,
        weight_decay: 0.1,
        ..Hyperparams::default()
    };
    let mut core = lion_optim_candle::Core::new(hp).expect("valid settings");
    core.update_groups(|_, g| g.options = options)
        .expect("valid options");
    let biases = core
        .add_group(lion_optim::Group {
            hp: Hyperparams {
                weight_decay: 0.0,
                ..hp
            },
            options,
        })
        .expect("valid group");
    let vars = [("fc1.bias", &b1), ("fc1.weight", &w1), ("fc2.weight", &w2)];
    let mut ids = Vec::new();
    let mut core_params: Vec<Vec<bf16>> = Vec::new();
    for (name, var) in vars {
        let spec = TensorSpec::new(var.elem_count())
            .name(name)
            .params(lion_optim::Dtype::Bf16);
        let spec = if name.ends_with("bias") {
            spec.group(biases).momentum(lion_optim::Dtype::F32)
        } else {
            spec.momentum(MomentumDtype::Q8)
        };
        ids.push(core.add(spec).expect("valid tensor"));
        core_params.push(values::<bf16>(var)?);
    }
    assert_eq!(momentum_format(&opt, "fc1.weight"), MomentumDtype::Q8);
    assert_eq!(momentum_format(&opt, "fc1.bias"), MomentumDtype::F32);

    let mut rng = Rng(11);
    for step in 0..5 {
        let x = Tensor::from_slice(&random::<f32>(&mut rng, 8 * 12), (8, 12), &DEV)?
            .to_dtype(DType::BF16)?;
        let h = x.matmul(&w1.t()?)?.broadcast_add(&b1)?.tanh()?;
        let loss = h
            .matmul(&w2.t()?)?
            .to_dtype(DType::F32)?
            .sqr()?
            .mean_all()?;
        let grads = loss.backward()?;
        let g: Vec<Vec<bf16>> = vars
            .iter()
            .map(|(_, v)| values::<bf16>(grads.get(v).expect("a gradient")))
            .collect::<R<_>>()?;
        let mut tensors: Vec<lion_optim::Tensor<'_>> = core_params
            .iter_mut()
            .zip(&g)
            .zip(&ids)
            .map(|((p, g), &id)| lion_optim::Tensor::new(p, g).of(id))
            .collect();
        core.step(&mut tensors).expect("valid core step");
        opt.step(&grads)?;
        for ((name, var), p) in vars.iter().zip(&core_params) {
            assert_eq!(
                bits(&values::<bf16>(var)?),
                bits(p),
                "{name} after step {step}"
            );
        }
        assert_eq!(
            opt.state_bytes()?,
            core.save_safetensors().expect("a state file"),
            "after step {step}"
        );
    }
    Ok(())
}

/// A group with 8-bit momentum beside the default group's f32 momentum (and the other way
/// round); the settings of the momentum formats that do not fit are refused.
#[test]
fn a_q8_group_beside_an_f32_group() -> R {
    let varmap = VarMap::new();
    let sizes = [("wte.weight", 1000), ("fc.weight", 300), ("fc.bias", 7)];
    for (name, n) in sizes {
        varmap.get(n, name, RANDN, DType::F32, &DEV)?;
    }
    let var = |name: &str| varmap.data().lock().unwrap()[name].clone();
    let params = ParamsLion {
        lr: 0.02,
        weight_decay: 0.3,
        ..Default::default()
    }
    .with_group(embeddings().momentum_q8());
    let mut opt = Lion::from_varmap(&varmap, params)?;
    assert_eq!(momentum_format(&opt, "wte.weight"), MomentumDtype::Q8);
    assert_eq!(momentum_format(&opt, "fc.weight"), MomentumDtype::F32);
    assert_eq!(momentum_format(&opt, "fc.bias"), MomentumDtype::F32);
    let hp = Hyperparams {
        lr: 0.02,
        weight_decay: 0.3,
        ..Hyperparams::default()
    };
    let hp_emb = Hyperparams { lr: 0.01, ..hp };
    let mut reference_p: Vec<Vec<f32>> = sizes
        .iter()
        .map(|(n, _)| values::<f32>(&var(n)))
        .collect::<R<_>>()?;
    let (mut codes, mut absmax) = q8_zeros(1000);
    let mut m_f32: Vec<Vec<f32>> = sizes.iter().map(|&(_, n)| vec![0.0; n]).collect();
    let mut rng = Rng(5);
    for step in 0..4 {
        let mut grads = GradStore::default();
        for (i, &(name, n)) in sizes.iter().enumerate() {
            let g: Vec<f32> = random(&mut rng, n);
            grads.insert(var(name).as_tensor(), Tensor::from_slice(&g, n, &DEV)?);
            if i == 0 {
                let m = Q8Mut::new(&mut codes, &mut absmax).expect("valid 8-bit momentum");
                reference::step_q8_with(
                    &mut reference_p[i],
                    &g,
                    m,
                    &hp_emb,
                    &StepOptions::default(),
                )
                .expect("valid reference step");
            } else {
                reference::step(&mut reference_p[i], &g, &mut m_f32[i], &hp)
                    .expect("valid reference step");
            }
        }
        opt.step(&grads)?;
        for (i, &(name, _)) in sizes.iter().enumerate() {
            assert_eq!(
                bits(&values::<f32>(&var(name))?),
                bits(&reference_p[i]),
                "{name} after step {step}"
            );
        }
        assert_eq!(
            q8_state(&opt, "wte.weight"),
            (codes.clone(), bits(&absmax)),
            "after step {step}"
        );
        assert_eq!(momentum_bits(&opt, "fc.weight"), bits(&m_f32[1]));
        assert_eq!(momentum_bits(&opt, "fc.bias"), bits(&m_f32[2]));
    }

    // The other way round: 8-bit by default, f32 for the biases; a group that opts out of 8 bits
    // without a dtype gets the optimizer's float `momentum`.
    let mut fc = GroupRule::new("fc", |n| n.starts_with("fc"));
    fc.momentum_q8 = Some(false);
    let params = ParamsLion {
        momentum: DType::BF16,
        momentum_q8: true,
        ..Default::default()
    }
    .with_group(GroupRule::biases_and_norms().momentum(DType::F32))
    .with_group(fc);
    let opt = Lion::from_varmap(&varmap, params)?;
    assert_eq!(momentum_format(&opt, "wte.weight"), MomentumDtype::Q8);
    assert_eq!(momentum_format(&opt, "fc.bias"), MomentumDtype::F32);
    assert_eq!(momentum_format(&opt, "fc.weight"), MomentumDtype::Bf16);

    // Settings that do not fit: both formats in one group, a float dtype that is not one.
    let mut both = GroupRule::new("both", |_| true).momentum_q8();
    both.momentum = Some(DType::BF16); // (the builder `momentum` would clear momentum_q8)
    let e = Lion::from_varmap(&varmap, ParamsLion::default().with_group(both))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("group \"both\": both a float momentum (bf16) and 8-bit momentum"),
        "{e}"
    );
    let e = Lion::from_varmap(
        &varmap,
        ParamsLion {
            momentum: DType::U8,
            momentum_q8: true,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("momentum dtype U8: must be F32, BF16 or F16"),
        "{e}"
    );
    let bad = GroupRule::new("bad", |_| true).momentum(DType::F64);
    let e = Lion::from_varmap(&varmap, ParamsLion::default().with_group(bad))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("group \"bad\": momentum dtype F64") && e.contains("momentum_q8"),
        "{e}"
    );
    Ok(())
}

/// Three vars: "w" (600 elements: two blocks and a partial one) and "u" (300) with 8-bit
/// momentum, "bias" (bf16) in a group with f32 momentum.
fn q8_model() -> R<(VarMap, [Tensor; 3])> {
    let varmap = VarMap::new();
    let w = varmap.get((20, 30), "w", Init::Const(0.25), DType::F32, &DEV)?;
    let u = varmap.get(300, "u", Init::Const(-0.5), DType::F32, &DEV)?;
    let b = varmap.get(30, "bias", Init::Const(0.0), DType::BF16, &DEV)?;
    Ok((varmap, [w, u, b]))
}

fn q8_params() -> ParamsLion {
    ParamsLion {
        lr: 1e-2,
        weight_decay: 0.1,
        momentum_q8: true,
        ..Default::default()
    }
    .with_group(GroupRule::biases_and_norms().momentum(DType::F32))
}

fn q8_loss(vars: &[Tensor; 3], rng: &mut Rng) -> R<Tensor> {
    let [w, u, b] = vars;
    let t = Tensor::from_slice(&random::<f32>(rng, 600), (20, 30), &DEV)?;
    let s = Tensor::from_slice(&random::<f32>(rng, 300), 300, &DEV)?;
    let l = ((w - t)?.sqr()?.sum_all()? + (u * s)?.sum_all()?)?;
    l + b.to_dtype(DType::F32)?.sqr()?.sum_all()?
}

#[test]
fn q8_state_round_trip_through_a_safetensors_file() -> R {
    let dir =
        std::env::temp_dir().join(format!("lion-optim-candle-q8-test-{}", std::process::id()));
    // An ordinary safetensors file: the codes (U8) and scales (F32) of each 8-bit momentum.
    let file_check = |oc: &Lion| -> R {
        let saved_w = q8_state(oc, "w");
        let file = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &DEV)?;
        let mut keys: Vec<_> = file.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bias.exp_avg",
                "u.exp_avg.absmax",
                "u.exp_avg.codes",
                "w.exp_avg.absmax",
                "w.exp_avg.codes"
            ]
        );
        assert_eq!(file["w.exp_avg.codes"].dtype(), DType::U8);
        assert_eq!(file["w.exp_avg.absmax"].dims(), [3]);
        assert_eq!(file["u.exp_avg.absmax"].dims(), [2]);
        assert_eq!(file["bias.exp_avg"].dtype(), DType::F32);
        assert_eq!(values::<u8>(&file["w.exp_avg.codes"])?, saved_w.0);
        assert_eq!(bits(&values::<f32>(&file["w.exp_avg.absmax"])?), saved_w.1);
        Ok(())
    };
    let [a, c] = resumed_from_files(&dir, 9, q8_model, q8_params, q8_loss, file_check)?;
    for (x, y) in a.iter().zip(&c) {
        assert_eq!(
            bits(&values::<f32>(&x.to_dtype(DType::F32)?)?),
            bits(&values::<f32>(&y.to_dtype(DType::F32)?)?)
        );
    }
    assert_eq!(bits(&values::<bf16>(&c[2])?), bits(&values::<bf16>(&a[2])?));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A state with 8-bit momentum loads only into an optimizer that keeps 8-bit momentum for the
/// same vars: elsewhere the error names the var and both formats, and nothing changes.
#[test]
fn a_q8_checkpoint_is_refused_where_it_does_not_fit() -> R {
    let (va, a) = q8_model()?;
    let mut oa = Lion::from_varmap(&va, q8_params())?;
    let mut rng = Rng(3);
    oa.backward_step(&q8_loss(&a, &mut rng)?)?;
    let q8_file = oa.state_bytes()?;

    // Loads `file` into a fresh optimizer with `params`: the error, after checking that nothing
    // changed.
    let refuse = |params: ParamsLion, file: &[u8]| -> R<String> {
        let (vars, _) = q8_model()?;
        let mut opt = Lion::from_varmap(&vars, params)?;
        let before = opt.state_bytes()?;
        let e = opt.load_state_bytes(file).unwrap_err().to_string();
        assert_eq!(opt.state_bytes()?, before, "{e}");
        assert_eq!(opt.core().steps(), 0);
        Ok(e)
    };
    let advice = "build the optimizer with the momentum settings the state was saved with";

    // f32 momentum everywhere (the default): "w" and "u" do not fit.
    let f32_params = || {
        ParamsLion {
            lr: 1e-2,
            weight_decay: 0.1,
            ..Default::default()
        }
        .no_decay_for_biases_and_norms()
    };
    let e = refuse(f32_params(), &q8_file)?;
    assert!(
        e.contains(
            "var \"u\" has 8-bit momentum (\"u.exp_avg.codes\" and \"u.exp_avg.absmax\") in \
             the file, f32 momentum in this optimizer (and 1 more var): "
        ) && e.contains(advice)
            && e.contains("momentum_q8"),
        "{e}"
    );
    // 8-bit momentum for "bias" too: "bias" does not fit.
    let e = refuse(
        ParamsLion {
            momentum_q8: true,
            ..f32_params()
        },
        &q8_file,
    )?;
    assert!(
        e.contains(
            "var \"bias\" has f32 momentum (\"bias.exp_avg\") in the file, 8-bit momentum in \
             this optimizer: "
        ),
        "{e}"
    );
    // bf16 momentum where the file has 8 bits.
    let bf16_params = ParamsLion {
        momentum: DType::BF16,
        momentum_q8: false,
        ..q8_params()
    };
    let e = refuse(bf16_params, &q8_file)?;
    assert!(
        e.contains("var \"u\" has 8-bit momentum (")
            && e.contains("in the file, bf16 momentum in this optimizer (and 1 more var)"),
        "{e}"
    );
    // The other way round: a state with f32 momentum into the 8-bit optimizer.
    let (vf, f) = q8_model()?;
    let mut of = Lion::from_varmap(&vf, f32_params())?;
    of.backward_step(&q8_loss(&f, &mut rng)?)?;
    let e = refuse(q8_params(), &of.state_bytes()?)?;
    assert!(
        e.contains(
            "var \"u\" has f32 momentum (\"u.exp_avg\") in the file, 8-bit momentum in this \
             optimizer (and 1 more var)"
        ),
        "{e}"
    );
    // Same formats, another size: the core's own error.
    let other = VarMap::new();
    other.get((20, 31), "w", Init::Const(0.0), DType::F32, &DEV)?;
    other.get(300, "u", Init::Const(0.0), DType::F32, &DEV)?;
    other.get(30, "bias", Init::Const(0.0), DType::BF16, &DEV)?;
    let mut od = Lion::from_varmap(&other, q8_params())?;
    let e = od.load_state_bytes(&q8_file).unwrap_err().to_string();
    assert!(
        e.contains("loading the state") && !e.contains(advice),
        "{e}"
    );
    assert_eq!(od.core().steps(), 0);
    // And the optimizer built as the state was saved loads it.
    let (vg, _) = q8_model()?;
    let mut og = Lion::from_varmap(&vg, q8_params())?;
    og.load_state_bytes(&q8_file)?;
    assert_eq!(og.state_bytes()?, q8_file);
    Ok(())
}
