//! Test hooks: functions only the test suite calls, compiled with the cargo feature `test-hooks`
//! (the wheel `pip install ./bindings/python` builds has none of them; the test script builds
//! with `--features test-hooks`).

use lion_optim::{
    Backend, Cautious, Dtype, Group, GroupId, Hyperparams, Lion, Outcome, Q8Mut, Rounding,
    StepOptions, Tensor, TensorSpec, WeightDecay, bf16, f16, reference,
};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::engine::{self, Entry, Labels, Role, role_name};
use crate::settings;
use crate::view::{Access, Exporter, MomView};

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_reference_step, m)?)?;
    m.add_function(wrap_pyfunction!(_reference_step_q8, m)?)?;
    m.add_function(wrap_pyfunction!(_set_exchange_api, m)?)?;
    m.add_function(wrap_pyfunction!(_save_safetensors_demo, m)?)?;
    Ok(())
}

/// Labels of the reference step: `the parameter (reference step)`.
struct Reference;

impl Labels for Reference {
    fn label(&self, _entry: usize, role: Role) -> String {
        format!("{} (reference step)", role_name(role))
    }
}

/// One step of the crate's scalar backend (`Backend::Scalar`, bit-identical to
/// `lion_optim::reference`) on one tensor, any of the 27 dtype combinations. `group`: the
/// settings as a param group dict; its `seed` is used as it is (random stream 0; the functional
/// API mixes in each tensor's stream: `seed ^ stream * 0x9e3779b97f4a7c15`).
#[pyfunction]
#[pyo3(signature = (params, grads, exp_avg, group, *, cautious_total=None, step=0, offset=0))]
#[allow(clippy::too_many_arguments)]
fn _reference_step(
    py: Python<'_>,
    params: &Bound<'_, PyAny>,
    grads: &Bound<'_, PyAny>,
    exp_avg: &Bound<'_, PyAny>,
    group: &Bound<'_, PyDict>,
    cautious_total: Option<(u64, u64)>,
    step: u64,
    offset: u64,
) -> PyResult<()> {
    let mut group = settings::group_from_dict(group, &"reference step")?;
    if let Some((agreeing, numel)) = cautious_total {
        group.options.cautious = Cautious::Shard { agreeing, numel };
    }
    let mut ex = Exporter::new(py);
    let label = |role| Reference.label(0, role);
    let p = ex
        .view(params, Access::Write)
        .map_err(|e| e.into_pyerr(&label(Role::Params)))?;
    let g = ex
        .view(grads, Access::Read)
        .map_err(|e| e.into_pyerr(&label(Role::Grads)))?;
    let m = ex
        .view(exp_avg, Access::Write)
        .map_err(|e| e.into_pyerr(&label(Role::Momentum)))?;
    engine::check_entry(&ex, &p, &g, &m, &label)?;
    let entries = [Entry {
        params: p,
        grads: g,
        momentum: MomView::Elems(m),
        group: 0,
        step,
        stream: 0,
        offset,
    }];
    engine::run(py, Backend::Scalar, &entries, &[group], 1, &Reference, None)?;
    drop(ex);
    Ok(())
}

/// Elements of `dtype` ("float32", "float16", "bfloat16") from their native-endian bytes.
fn decode(bytes: &[u8], dtype: &str) -> PyResult<Buffer> {
    let bad = || PyValueError::new_err(format!("{} bytes of {dtype}", bytes.len()));
    Ok(match dtype {
        "float32" => Buffer::F32(from_ne(bytes, f32::from_ne_bytes).ok_or_else(bad)?),
        "float16" => {
            Buffer::F16(from_ne(bytes, |b| f16::from_bits(u16::from_ne_bytes(b))).ok_or_else(bad)?)
        }
        "bfloat16" => Buffer::Bf16(
            from_ne(bytes, |b| bf16::from_bits(u16::from_ne_bytes(b))).ok_or_else(bad)?,
        ),
        _ => return Err(PyValueError::new_err(format!("unknown dtype {dtype}"))),
    })
}

/// The elements of `N` bytes each in `bytes`, each made by `element` (None if the length is not
/// a multiple of `N`).
fn from_ne<T, const N: usize>(bytes: &[u8], element: impl Fn([u8; N]) -> T) -> Option<Vec<T>> {
    bytes
        .chunks(N)
        .map(|c| c.try_into().ok().map(&element))
        .collect()
}

/// Elements of a float type, owned (for the 8-bit reference step).
enum Buffer {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Buffer {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Buffer::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
            Buffer::F16(v) => v.iter().flat_map(|x| x.to_bits().to_ne_bytes()).collect(),
            Buffer::Bf16(v) => v.iter().flat_map(|x| x.to_bits().to_ne_bytes()).collect(),
        }
    }
}

/// New (params, codes, absmax) bytes, and whether the step was applied.
type Q8Out = (Vec<u8>, Vec<u8>, Vec<u8>, bool);

/// One 8-bit step of the specification, `lion_optim::reference::step_q8_with`, on copies: the
/// parameters and gradients as native-endian bytes of `params_dtype`/`grads_dtype`
/// ("float32", "float16", "bfloat16"), the momentum as its u8 codes and native-endian f32 block
/// scales. `group`: the settings as a param group dict (its `seed` used as it is: mix in a
/// stream as `step_many` does, `seed ^ stream * 0x9e3779b97f4a7c15`); `step`, `offset`: the
/// step's. Returns the new (params, codes, absmax) bytes and whether the step was applied.
#[pyfunction]
#[pyo3(signature = (params, params_dtype, grads, grads_dtype, codes, absmax, group, *, step=0, offset=0, skip_non_finite=false))]
#[allow(clippy::too_many_arguments)]
fn _reference_step_q8(
    params: Vec<u8>,
    params_dtype: &str,
    grads: Vec<u8>,
    grads_dtype: &str,
    mut codes: Vec<u8>,
    absmax: Vec<u8>,
    group: &Bound<'_, PyDict>,
    step: u64,
    offset: u64,
    skip_non_finite: bool,
) -> PyResult<Q8Out> {
    let mut group = settings::group_from_dict(group, &"reference step")?;
    group.options.step = step;
    group.options.offset = offset;
    group.options.skip_non_finite = skip_non_finite;
    let mut p = decode(&params, params_dtype)?;
    let g = decode(&grads, grads_dtype)?;
    let Buffer::F32(mut a) = decode(&absmax, "float32")? else {
        unreachable!("decode(float32) is F32")
    };
    let err = |e: lion_optim::Error| PyValueError::new_err(e.to_string());
    let m = Q8Mut::new(&mut codes, &mut a).map_err(err)?;
    let (hp, o) = (&group.hp, &group.options);
    macro_rules! run {
        ($p:expr) => {
            match &g {
                Buffer::F32(g) => reference::step_q8_with($p, g, m, hp, o),
                Buffer::F16(g) => reference::step_q8_with($p, g, m, hp, o),
                Buffer::Bf16(g) => reference::step_q8_with($p, g, m, hp, o),
            }
        };
    }
    let outcome = match &mut p {
        Buffer::F32(p) => run!(p),
        Buffer::F16(p) => run!(p),
        Buffer::Bf16(p) => run!(p),
    }
    .map_err(err)?;
    let absmax = Buffer::F32(a).bytes();
    Ok((p.bytes(), codes, absmax, outcome == Outcome::Applied))
}

/// Use (True, the default) or bypass (False) the DLPack C exchange API, to test the slower
/// `torch._C._to_dlpack` path of torch versions without it.
#[pyfunction]
fn _set_exchange_api(enabled: bool) {
    crate::view::set_exchange_api_enabled(enabled);
}

/// Writes a safetensors optimizer-state file with the crate's `Lion::save_safetensors` (two
/// groups, the second with `skip_non_finite`; three named tensors of different momentum dtypes;
/// two steps) and returns each tensor's momentum as f32 values, by name.
#[pyfunction]
fn _save_safetensors_demo(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Py<PyDict>> {
    let err = |e: lion_optim::Error| PyValueError::new_err(e.to_string());
    let mut opt = Lion::new(Hyperparams {
        lr: 1e-3,
        weight_decay: 0.1,
        ..Hyperparams::default()
    })
    .map_err(err)?;
    let g1 = opt
        .add_group(Group {
            hp: Hyperparams {
                lr: 2e-3,
                beta1: 0.95,
                beta2: 0.98,
                weight_decay: 0.0,
            },
            options: StepOptions {
                grad_unscale: Some(0.5),
                weight_decay: WeightDecay::FullyDecoupled { max_lr: 4e-3 },
                rounding: Rounding::Stochastic { seed: 7 },
                cautious: Cautious::Whole,
                skip_non_finite: true,
                ..StepOptions::default()
            },
        })
        .map_err(err)?;
    let wte = opt
        .add(TensorSpec::new(10).name("wte").momentum(Dtype::Bf16))
        .map_err(err)?;
    let bias = opt
        .add(TensorSpec::new(3).name("h.0.ln_1.bias").group(g1))
        .map_err(err)?;
    let head = opt
        .add(
            TensorSpec::new(5)
                .name("lm_head")
                .momentum(Dtype::F16)
                .group(GroupId::DEFAULT),
        )
        .map_err(err)?;
    let mut w = vec![0.5f32; 10];
    let mut b = vec![bf16::from_f32(0.25); 3];
    let mut h = vec![f16::from_f32(-1.0); 5];
    for s in 0..2 {
        let gw: Vec<f32> = (0..10).map(|i| (i as f32 - 4.5) * 0.1 + s as f32).collect();
        let gb: Vec<f32> = vec![0.3, -0.2, 0.0];
        let gh: Vec<f32> = (0..5).map(|i| i as f32 * 0.01 - 0.02).collect();
        opt.step(&mut [
            Tensor::new(&mut w, &gw).of(wte),
            Tensor::new(&mut b, &gb).of(bias),
            Tensor::new(&mut h, &gh).of(head),
        ])
        .map_err(err)?;
    }
    let bytes = opt.save_safetensors().map_err(err)?;
    std::fs::write(&path, bytes)
        .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))?;
    let out = PyDict::new(py);
    for (name, id) in [("wte", wte), ("h.0.ln_1.bias", bias), ("lm_head", head)] {
        let m = opt.momentum(id).map_err(err)?;
        let values: Vec<f32> = (0..m.len()).filter_map(|i| m.to_f32(i)).collect();
        out.set_item(name, values)?;
    }
    Ok(out.unbind())
}
