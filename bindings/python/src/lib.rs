//! `lion_optim._lion_optim`: the Rust half of the `lion_optim` Python package.
//!
//! This crate only adapts: it checks Python arrays and settings (device, dtype, contiguity,
//! shapes, overlap, hyperparameters — all before anything is written), views their buffers
//! without copying ([`view`]), makes **one** call into the core per step over all tensors with the
//! GIL released ([`engine`]), and reports errors as Python exceptions naming the tensor. The Lion
//! math is the core's (`lion_optim::step_many`); none is written here.
//!
//! The Python side (`python/lion_optim/`) holds the `torch.optim.Optimizer` subclass and the
//! functional API; the functions here are its private building blocks.

use lion_optim::{
    Cautious, Dtype, Group, Hyperparams, Outcome, Rounding, SliceMut, SliceRef, StepOptions,
    WeightDecay,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyDict, PyList};

mod engine;
mod view;

use engine::{Entry, Labels, Role};
use view::{Access, Exporter, View};

// ------------------------------------------------------------------------------------------------
// Settings

/// A group's settings from keyword values.
#[allow(clippy::too_many_arguments)]
fn make_group(
    lr: f64,
    beta1: f64,
    beta2: f64,
    weight_decay: f64,
    maximize: bool,
    grad_unscale: Option<f64>,
    max_lr: Option<f64>,
    seed: Option<u64>,
    cautious: Cautious,
) -> Group {
    Group {
        hp: Hyperparams {
            lr,
            beta1,
            beta2,
            weight_decay,
        },
        options: StepOptions {
            maximize,
            grad_unscale,
            weight_decay: match max_lr {
                None => WeightDecay::Paper,
                Some(max_lr) => WeightDecay::FullyDecoupled { max_lr },
            },
            rounding: match seed {
                None => Rounding::Nearest,
                Some(seed) => Rounding::Stochastic { seed },
            },
            cautious,
            ..StepOptions::default()
        },
    }
}

/// A value of a param group as `T`, with a TypeError naming the group and key.
fn group_value<'py, T: FromPyObjectOwned<'py>>(
    d: &Bound<'py, PyDict>,
    key: &Bound<'py, pyo3::types::PyString>,
    gi: usize,
    what: &str,
) -> PyResult<T> {
    let v = d
        .get_item(key)?
        .ok_or_else(|| PyValueError::new_err(format!("param group {gi}: missing key '{key}'")))?;
    v.extract::<T>().map_err(|_| {
        let ty = v
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!(
            "param group {gi}: '{key}' must be {what}, got {ty}"
        ))
    })
}

/// An optional value (`None` or a missing key: `None`).
fn group_opt<'py, T: FromPyObjectOwned<'py>>(
    d: &Bound<'py, PyDict>,
    key: &Bound<'py, pyo3::types::PyString>,
    gi: usize,
    what: &str,
) -> PyResult<Option<T>> {
    match d.get_item(key)? {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(_) => group_value(d, key, gi, what).map(Some),
    }
}

fn group_flag(d: &Bound<'_, PyDict>, key: &Bound<'_, pyo3::types::PyString>) -> PyResult<bool> {
    Ok(match d.get_item(key)? {
        None => false,
        Some(v) => v.is_truthy()?,
    })
}

/// A `torch.optim` param group's settings: `lr`, `betas`, `weight_decay`, `maximize`,
/// `grad_unscale`, `max_lr`, `stochastic_rounding` + `seed`, `cautious`.
fn group_from_dict(d: &Bound<'_, PyDict>, gi: usize) -> PyResult<Group> {
    let py = d.py();
    let lr: f64 = group_value(d, intern!(py, "lr"), gi, "a float")?;
    // A pair: a tuple, or any sequence of two (a list after a JSON round trip).
    let betas: Vec<f64> = group_value(d, intern!(py, "betas"), gi, "a pair of floats")?;
    let [beta1, beta2] = betas[..] else {
        return Err(PyValueError::new_err(format!(
            "param group {gi}: 'betas' must be a pair of floats, got {} values",
            betas.len()
        )));
    };
    let wd: f64 = group_value(d, intern!(py, "weight_decay"), gi, "a float")?;
    let maximize = group_flag(d, intern!(py, "maximize"))?;
    let unscale: Option<f64> = group_opt(d, intern!(py, "grad_unscale"), gi, "a float or None")?;
    let max_lr: Option<f64> = group_opt(d, intern!(py, "max_lr"), gi, "a float or None")?;
    let seed = if group_flag(d, intern!(py, "stochastic_rounding"))? {
        let seed: Option<u64> = group_opt(d, intern!(py, "seed"), gi, "an int in [0, 2**64)")?;
        Some(seed.unwrap_or(0))
    } else {
        None
    };
    let cautious = if group_flag(d, intern!(py, "cautious"))? {
        Cautious::Whole
    } else {
        Cautious::Off
    };
    Ok(make_group(
        lr, beta1, beta2, wd, maximize, unscale, max_lr, seed, cautious,
    ))
}

// ------------------------------------------------------------------------------------------------
// Views with context

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Params => "the parameter",
        Role::Grads => "its gradient",
        Role::Momentum => "its exp_avg",
    }
}

/// The gradient must have the parameter's shape.
fn check_grad_shape(
    ex: &Exporter<'_>,
    p: &View,
    g: &View,
    label: &dyn Fn(Role) -> String,
) -> PyResult<()> {
    if ex.same_shape(p, g) {
        return Ok(());
    }
    Err(PyValueError::new_err(format!(
        "{} has shape {}, the parameter {}",
        label(Role::Grads),
        ex.shape_str(g),
        ex.shape_str(p)
    )))
}

/// The checks between the three views of one tensor: the gradient has the parameter's shape,
/// the momentum its number of elements.
fn check_entry(
    ex: &Exporter<'_>,
    p: &View,
    g: &View,
    m: &View,
    label: &dyn Fn(Role) -> String,
) -> PyResult<()> {
    check_grad_shape(ex, p, g, label)?;
    if m.len != p.len {
        return Err(PyValueError::new_err(format!(
            "{} has {} elements, the parameter {} (shape {})",
            label(Role::Momentum),
            m.len,
            p.len,
            ex.shape_str(p)
        )));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The functional API

/// Labels of the functional API: `params[i]`, `grads[i]`, `exp_avgs[i]`.
struct Positions;

impl Labels for Positions {
    fn label(&self, entry: usize, role: Role) -> String {
        let list = match role {
            Role::Params => "params",
            Role::Grads => "grads",
            Role::Momentum => "exp_avgs",
        };
        format!("{list}[{entry}]")
    }
}

fn list_len(name: &str, list: &Bound<'_, PyList>, n: usize) -> PyResult<()> {
    if list.len() != n {
        return Err(PyValueError::new_err(format!(
            "{name} has {} entries, params {n}",
            list.len()
        )));
    }
    Ok(())
}

fn opt_len<T>(name: &str, v: &Option<Vec<T>>, n: usize) -> PyResult<()> {
    match v {
        Some(v) if v.len() != n => Err(PyValueError::new_err(format!(
            "{name} has {} entries, params {n}",
            v.len()
        ))),
        _ => Ok(()),
    }
}

/// Checked views of the three lists.
fn views_of<'py>(
    ex: &mut Exporter<'py>,
    params: &Bound<'py, PyList>,
    grads: &Bound<'py, PyList>,
    exp_avgs: &Bound<'py, PyList>,
    momentum_access: Access,
) -> PyResult<Vec<(View, View, View)>> {
    let n = params.len();
    list_len("grads", grads, n)?;
    list_len("exp_avgs", exp_avgs, n)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let label = |role| Positions.label(i, role);
        let p = ex
            .view(&params.get_item(i)?, Access::Write)
            .map_err(|e| e.into_pyerr(&label(Role::Params)))?;
        let g = ex
            .view(&grads.get_item(i)?, Access::Read)
            .map_err(|e| e.into_pyerr(&label(Role::Grads)))?;
        let m = ex
            .view(&exp_avgs.get_item(i)?, momentum_access)
            .map_err(|e| e.into_pyerr(&label(Role::Momentum)))?;
        check_entry(ex, &p, &g, &m, &|role| Positions.label(i, role))?;
        out.push((p, g, m));
    }
    Ok(out)
}

/// One Lion step over lists of arrays (see `lion_optim.step`). Returns whether it was applied.
#[pyfunction]
#[pyo3(signature = (params, grads, exp_avgs, *, lr, beta1, beta2, weight_decay, maximize,
    grad_unscale, max_lr, seed, cautious, step, offsets, streams, cautious_totals, num_threads,
    skip_non_finite))]
#[allow(clippy::too_many_arguments)]
fn _step(
    py: Python<'_>,
    params: &Bound<'_, PyList>,
    grads: &Bound<'_, PyList>,
    exp_avgs: &Bound<'_, PyList>,
    lr: f64,
    beta1: f64,
    beta2: f64,
    weight_decay: f64,
    maximize: bool,
    grad_unscale: Option<f64>,
    max_lr: Option<f64>,
    seed: Option<u64>,
    cautious: bool,
    step: u64,
    offsets: Option<Vec<u64>>,
    streams: Option<Vec<u64>>,
    cautious_totals: Option<Vec<(u64, u64)>>,
    num_threads: usize,
    skip_non_finite: bool,
) -> PyResult<bool> {
    let n = params.len();
    opt_len("offsets", &offsets, n)?;
    opt_len("streams", &streams, n)?;
    opt_len("cautious_totals", &cautious_totals, n)?;
    let group = |c| {
        make_group(
            lr,
            beta1,
            beta2,
            weight_decay,
            maximize,
            grad_unscale,
            max_lr,
            seed,
            c,
        )
    };
    let groups: Vec<Group> = match (&cautious_totals, cautious) {
        (Some(totals), _) => totals
            .iter()
            .map(|&(agreeing, numel)| group(Cautious::Shard { agreeing, numel }))
            .collect(),
        (None, true) => vec![group(Cautious::Whole)],
        (None, false) => vec![group(Cautious::Off)],
    };
    engine::check_groups(&groups, &|i| {
        if cautious_totals.is_some() {
            format!("tensor {i}")
        } else {
            "settings".into()
        }
    })?;
    let mut ex = Exporter::new(py);
    let views = views_of(&mut ex, params, grads, exp_avgs, Access::Write)?;
    let entries: Vec<Entry> = views
        .into_iter()
        .enumerate()
        .map(|(i, (p, g, m))| Entry {
            params: p,
            grads: g,
            momentum: m,
            group: if cautious_totals.is_some() { i } else { 0 },
            step,
            stream: streams.as_ref().map_or(i as u64, |s| s[i]),
            offset: offsets.as_ref().map_or(0, |o| o[i]),
        })
        .collect();
    engine::check_overlap(&entries, &Positions)?;
    let outcome = engine::run(
        py,
        &entries,
        &groups,
        num_threads,
        skip_non_finite,
        &Positions,
    )?;
    drop(ex);
    Ok(outcome == Outcome::Applied)
}

/// The cautious variant's count per tensor (see `lion_optim.cautious_count`).
#[pyfunction]
#[pyo3(signature = (grads, exp_avgs, *, lr, beta1, beta2, weight_decay, maximize, grad_unscale,
    max_lr))]
#[allow(clippy::too_many_arguments)]
fn _cautious_count(
    py: Python<'_>,
    grads: &Bound<'_, PyList>,
    exp_avgs: &Bound<'_, PyList>,
    lr: f64,
    beta1: f64,
    beta2: f64,
    weight_decay: f64,
    maximize: bool,
    grad_unscale: Option<f64>,
    max_lr: Option<f64>,
) -> PyResult<Vec<u64>> {
    let g = make_group(
        lr,
        beta1,
        beta2,
        weight_decay,
        maximize,
        grad_unscale,
        max_lr,
        None,
        Cautious::Off,
    );
    engine::check_groups(&[g], &|_| "settings".into())?;
    let n = grads.len();
    list_len("exp_avgs", exp_avgs, n)?;
    let mut ex = Exporter::new(py);
    let mut views = Vec::with_capacity(n);
    for i in 0..n {
        let gv = ex
            .view(&grads.get_item(i)?, Access::Read)
            .map_err(|e| e.into_pyerr(&Positions.label(i, Role::Grads)))?;
        let mv = ex
            .view(&exp_avgs.get_item(i)?, Access::Read)
            .map_err(|e| e.into_pyerr(&Positions.label(i, Role::Momentum)))?;
        if mv.len != gv.len {
            return Err(PyValueError::new_err(format!(
                "exp_avgs[{i}] has {} elements, grads[{i}] {}",
                mv.len, gv.len
            )));
        }
        views.push((gv, mv));
    }
    let counts = py.detach(|| {
        views
            .iter()
            .map(|(gv, mv)| {
                // SAFETY: both views were checked when made, from objects the caller's lists
                // keep alive for this call; they are only read here (a concurrent writer from
                // another Python thread is unsupported, as for torch's own ops).
                let (gs, ms) = unsafe { (gv.slice_ref(), mv.slice_ref()) };
                count_dyn(gs, ms, &g)
            })
            .collect::<Result<Vec<u64>, lion_optim::Error>>()
    });
    drop(ex);
    counts.map_err(|e| PyValueError::new_err(e.to_string()))
}

/// `lion_optim::cautious_count` for runtime-typed slices.
fn count_dyn(g: SliceRef<'_>, m: SliceRef<'_>, group: &Group) -> Result<u64, lion_optim::Error> {
    macro_rules! m_arm {
        ($g:expr) => {
            match m {
                SliceRef::F32(m) => lion_optim::cautious_count($g, m, &group.hp, &group.options),
                SliceRef::F16(m) => lion_optim::cautious_count($g, m, &group.hp, &group.options),
                SliceRef::Bf16(m) => lion_optim::cautious_count($g, m, &group.hp, &group.options),
            }
        };
    }
    match g {
        SliceRef::F32(g) => m_arm!(g),
        SliceRef::F16(g) => m_arm!(g),
        SliceRef::Bf16(g) => m_arm!(g),
    }
}

/// Test hook: one step of the crate's scalar reference (`lion_optim::reference::step_with`) on
/// one tensor, any of the 27 dtype combinations. `seed` is used as it is (the functional API
/// mixes in the tensor's stream: `seed ^ stream * 0x9e3779b97f4a7c15`).
#[pyfunction]
#[pyo3(signature = (params, grads, exp_avg, *, lr, beta1, beta2, weight_decay, maximize=false,
    grad_unscale=None, max_lr=None, seed=None, cautious=false, cautious_total=None, step=0,
    offset=0))]
#[allow(clippy::too_many_arguments)]
fn _reference_step(
    py: Python<'_>,
    params: &Bound<'_, PyAny>,
    grads: &Bound<'_, PyAny>,
    exp_avg: &Bound<'_, PyAny>,
    lr: f64,
    beta1: f64,
    beta2: f64,
    weight_decay: f64,
    maximize: bool,
    grad_unscale: Option<f64>,
    max_lr: Option<f64>,
    seed: Option<u64>,
    cautious: bool,
    cautious_total: Option<(u64, u64)>,
    step: u64,
    offset: u64,
) -> PyResult<()> {
    let c = match (cautious_total, cautious) {
        (Some((agreeing, numel)), _) => Cautious::Shard { agreeing, numel },
        (None, true) => Cautious::Whole,
        (None, false) => Cautious::Off,
    };
    let mut g = make_group(
        lr,
        beta1,
        beta2,
        weight_decay,
        maximize,
        grad_unscale,
        max_lr,
        seed,
        c,
    );
    g.options.step = step;
    g.options.offset = offset;
    let mut ex = Exporter::new(py);
    let label = |r| format!("{} (reference step)", role_name(r));
    let p = ex
        .view(params, Access::Write)
        .map_err(|e| e.into_pyerr(&label(Role::Params)))?;
    let gv = ex
        .view(grads, Access::Read)
        .map_err(|e| e.into_pyerr(&label(Role::Grads)))?;
    let m = ex
        .view(exp_avg, Access::Write)
        .map_err(|e| e.into_pyerr(&label(Role::Momentum)))?;
    check_entry(&ex, &p, &gv, &m, &label)?;
    let entries = [Entry {
        params: p,
        grads: gv,
        momentum: m,
        group: 0,
        step,
        stream: 0,
        offset,
    }];
    engine::check_overlap(&entries, &Positions)?;
    let [e] = &entries;
    // SAFETY: checked views of objects the caller holds for this call, shown by
    // `check_overlap` not to alias; the GIL stays held (no other Python thread runs).
    let (ps, gs, ms) = unsafe {
        (
            e.params.slice_mut(),
            e.grads.slice_ref(),
            e.momentum.slice_mut(),
        )
    };
    let r = reference_dyn(ps, gs, ms, &g);
    drop(ex);
    r.map_err(|e| PyValueError::new_err(e.to_string()))
}

fn reference_dyn(
    p: SliceMut<'_>,
    g: SliceRef<'_>,
    m: SliceMut<'_>,
    group: &Group,
) -> Result<(), lion_optim::Error> {
    use lion_optim::reference::step_with;
    let (hp, o) = (&group.hp, &group.options);
    macro_rules! m_arm {
        ($p:expr, $g:expr) => {
            match m {
                SliceMut::F32(m) => step_with($p, $g, m, hp, o),
                SliceMut::F16(m) => step_with($p, $g, m, hp, o),
                SliceMut::Bf16(m) => step_with($p, $g, m, hp, o),
            }
        };
    }
    macro_rules! g_arm {
        ($p:expr) => {
            match g {
                SliceRef::F32(g) => m_arm!($p, g),
                SliceRef::F16(g) => m_arm!($p, g),
                SliceRef::Bf16(g) => m_arm!($p, g),
            }
        };
    }
    match p {
        SliceMut::F32(p) => g_arm!(p),
        SliceMut::F16(p) => g_arm!(p),
        SliceMut::Bf16(p) => g_arm!(p),
    }
}

// ------------------------------------------------------------------------------------------------
// The torch optimizer's step

/// What `lion_optim.torch.Lion` knows about its parameters between steps, rebuilt by Python when
/// `param_groups` or `state` change: the parameters in order (across groups), each one's group,
/// random stream and name for messages, and the optimizer's own state buffers: each state's
/// momentum (a `bytearray` that its `exp_avg` tensor views) and one `bytearray` of i64 step
/// counts that every `state["step"]` views.
///
/// Its `step` checks that `param_groups` still holds exactly these parameters, reads every
/// gradient, checks and views parameters and gradients, and makes one call into the core.
#[pyclass(frozen, module = "lion_optim._lion_optim")]
struct TorchPlan {
    params: Vec<Py<PyAny>>,
    group: Vec<usize>,
    streams: Vec<u64>,
    labels: Vec<String>,
    group_lens: Vec<usize>,
    /// Per parameter: its momentum buffer, or None before its first step.
    momentum: Vec<Option<View>>,
    /// Address of the i64 step counts, one per parameter.
    steps: usize,
    /// The bytearrays of `momentum` and `steps`, and memoryviews of them: alive and
    /// unresizable (a bytearray with an export cannot be resized) as long as the plan is.
    _keep: Vec<Py<PyAny>>,
    /// Set while a step runs without the GIL: a second thread's `step()` of the same optimizer
    /// would write the same buffers at the same time.
    busy: std::sync::atomic::AtomicBool,
}

/// Clears the plan's busy flag when the step is over, however it ends.
struct Busy<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

struct PlanLabels<'a>(&'a [String], &'a [usize]);

impl Labels for PlanLabels<'_> {
    fn label(&self, entry: usize, role: Role) -> String {
        let k = self.1.get(entry).copied().unwrap_or(entry);
        let name = self.0.get(k).map_or("a parameter", String::as_str);
        format!("{name}: {}", role_name(role))
    }
}

fn dtype_of_code(code: u8) -> PyResult<Dtype> {
    Dtype::ALL
        .get(usize::from(code))
        .copied()
        .ok_or_else(|| PyValueError::new_err(format!("unknown dtype code {code}")))
}

#[pymethods]
impl TorchPlan {
    /// `momentum[k]`: None, or (bytearray, dtype code 0/1/2 = f32/f16/bf16, elements);
    /// `steps`: a bytearray of at least 8 bytes per parameter; `keep`: memoryviews of all of
    /// them (held so that they cannot be resized).
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        params: Vec<Py<PyAny>>,
        group: Vec<usize>,
        streams: Vec<u64>,
        labels: Vec<String>,
        group_lens: Vec<usize>,
        momentum: Vec<Option<(Bound<'_, PyByteArray>, u8, usize)>>,
        steps: Bound<'_, PyByteArray>,
        keep: Vec<Py<PyAny>>,
    ) -> PyResult<Self> {
        let n = params.len();
        if group.len() != n || streams.len() != n || labels.len() != n || momentum.len() != n {
            return Err(PyValueError::new_err(
                "TorchPlan: lists of different lengths",
            ));
        }
        if group_lens.iter().sum::<usize>() != n {
            return Err(PyValueError::new_err(
                "TorchPlan: group lengths do not add up",
            ));
        }
        let steps_addr = steps.data() as usize;
        if steps.len() < n * 8 || !steps_addr.is_multiple_of(8) {
            return Err(PyValueError::new_err("TorchPlan: bad step buffer"));
        }
        let mut views = Vec::with_capacity(n);
        for m in &momentum {
            views.push(match m {
                None => None,
                Some((buf, code, len)) => {
                    let dtype = dtype_of_code(*code)?;
                    if len.checked_mul(dtype.size()).is_none_or(|b| b > buf.len()) {
                        return Err(PyValueError::new_err(
                            "TorchPlan: momentum buffer too small",
                        ));
                    }
                    let addr = if *len == 0 { 0 } else { buf.data() as usize };
                    Some(
                        View::raw(addr, *len, dtype)
                            .map_err(|e| e.into_pyerr("TorchPlan: momentum"))?,
                    )
                }
            });
        }
        let mut keep = keep;
        keep.push(steps.into_any().unbind());
        for (buf, _, _) in momentum.into_iter().flatten() {
            keep.push(buf.into_any().unbind());
        }
        Ok(Self {
            params,
            group,
            streams,
            labels,
            group_lens,
            momentum: views,
            steps: if n == 0 { 0 } else { steps_addr },
            _keep: keep,
            busy: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// One step. Returns True (applied), False (skipped: a non-finite gradient), None (the plan
    /// is stale: `param_groups` changed), or a list of the positions of parameters that have a
    /// gradient but no state yet (to be initialized, then call again). Raises, having written
    /// nothing, on any bad input.
    fn step(
        &self,
        py: Python<'_>,
        param_groups: &Bound<'_, PyAny>,
        num_threads: usize,
        skip_non_finite: bool,
    ) -> PyResult<Py<PyAny>> {
        let stale = || Ok(py.None());
        let Ok(param_groups) = param_groups.cast::<PyList>() else {
            return Err(PyTypeError::new_err("param_groups must be a list"));
        };
        if self
            .busy
            .compare_exchange(
                false,
                true,
                std::sync::atomic::Ordering::Acquire,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_err()
        {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "lion_optim.torch.Lion.step() is already running in another thread on this optimizer",
            ));
        }
        let _busy = Busy(&self.busy);
        if param_groups.len() != self.group_lens.len() {
            return stale();
        }
        let mut groups = Vec::with_capacity(self.group_lens.len());
        let mut k = 0;
        for (gi, &len) in self.group_lens.iter().enumerate() {
            let g = param_groups.get_item(gi)?;
            let Ok(d) = g.cast::<PyDict>() else {
                return Err(PyTypeError::new_err(format!(
                    "param group {gi} is not a dict"
                )));
            };
            let Some(list) = d.get_item(intern!(py, "params"))? else {
                return stale();
            };
            let Ok(list) = list.cast::<PyList>() else {
                return stale();
            };
            if list.len() != len {
                return stale();
            }
            for j in 0..len {
                if !list.get_item(j)?.is(&self.params[k + j]) {
                    return stale();
                }
            }
            k += len;
            groups.push(group_from_dict(d, gi)?);
        }
        engine::check_groups(&groups, &|i| format!("param group {i}"))?;

        // SAFETY: `steps` is the address of a live bytearray of at least 8 bytes per parameter,
        // 8-aligned (checked in `new`), that `_keep` holds with an export (so it is not resized
        // or freed); the GIL is held, so no other Python code touches it now.
        let step_of = |k: usize| unsafe { std::ptr::read((self.steps as *const i64).add(k)) };
        let mut ex = Exporter::new(py);
        let mut entries: Vec<Entry> = Vec::with_capacity(self.params.len());
        // The parameter of each entry, and its next step count.
        let mut stepped: Vec<(usize, i64)> = Vec::with_capacity(self.params.len());
        let mut need_init: Vec<usize> = Vec::new();
        let mut pending: Vec<Entry> = Vec::new();
        let grad_key = intern!(py, "grad");
        for (k, p) in self.params.iter().enumerate() {
            let p = p.bind(py);
            let grad = p.getattr(grad_key)?;
            if grad.is_none() {
                continue;
            }
            let label = |role| PlanLabels(&self.labels, &[]).label(k, role);
            let pv = ex
                .view(p, Access::Write)
                .map_err(|e| e.into_pyerr(&label(Role::Params)))?;
            let gv = ex
                .view(&grad, Access::Read)
                .map_err(|e| e.into_pyerr(&label(Role::Grads)))?;
            let Some(mv) = self.momentum[k] else {
                // Checked like the others (its momentum will be a new buffer of its own).
                check_grad_shape(&ex, &pv, &gv, &label)?;
                need_init.push(k);
                pending.push(Entry {
                    params: pv,
                    grads: gv,
                    momentum: View::empty(),
                    group: 0,
                    step: 0,
                    stream: 0,
                    offset: 0,
                });
                continue;
            };
            check_entry(&ex, &pv, &gv, &mv, &label)?;
            let step = step_of(k);
            let next = match step.checked_add(1) {
                Some(n) if step >= 0 => n,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "{}: its state 'step' is {step}; it must be an int in [0, 2**63 - 1)",
                        self.labels[k]
                    )));
                }
            };
            entries.push(Entry {
                params: pv,
                grads: gv,
                momentum: mv,
                group: self.group[k],
                step: next as u64,
                stream: self.streams[k],
                offset: 0,
            });
            stepped.push((k, next));
        }
        if !need_init.is_empty() {
            // Refuse overlapping parameters and gradients before any state is made.
            let index: Vec<usize> = stepped
                .iter()
                .map(|&(k, _)| k)
                .chain(need_init.iter().copied())
                .collect();
            entries.append(&mut pending);
            engine::check_overlap(&entries, &PlanLabels(&self.labels, &index))?;
            return Ok(need_init.into_pyobject(py)?.into_any().unbind());
        }
        let index: Vec<usize> = stepped.iter().map(|&(k, _)| k).collect();
        let labels = PlanLabels(&self.labels, &index);
        engine::check_overlap(&entries, &labels)?;
        let outcome = engine::run(py, &entries, &groups, num_threads, skip_non_finite, &labels)?;
        drop(ex);
        if outcome == Outcome::SkippedNonFinite {
            return Ok(PyBool::new(py, false).to_owned().into_any().unbind());
        }
        for &(k, next) in &stepped {
            // SAFETY: as for `step_of`: the live, pinned, aligned step buffer, with the GIL held.
            unsafe { std::ptr::write((self.steps as *mut i64).add(k), next) };
        }
        Ok(PyBool::new(py, true).to_owned().into_any().unbind())
    }

    /// The number of parameters.
    fn __len__(&self) -> usize {
        self.params.len()
    }
}

// ------------------------------------------------------------------------------------------------
// Hooks and module

/// Nanoseconds the last step spent in the core, with the GIL released (for the benchmark).
#[pyfunction]
fn _last_core_ns() -> u64 {
    engine::LAST_CORE_NS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Test hook: use (True, the default) or bypass (False) the DLPack C exchange API, to test the
/// slower `torch._C._to_dlpack` path of torch versions without it.
#[pyfunction]
fn _set_exchange_api(enabled: bool) {
    view::set_exchange_api_enabled(enabled);
}

/// The instruction-set path the core uses on this CPU (`"avx512"`, `"avx2"`, `"portable"`...).
#[pyfunction]
fn simd_path() -> &'static str {
    lion_optim::Path::detect().name()
}

/// Test hook: writes a safetensors optimizer-state file with the crate's `Lion::save_safetensors`
/// (two groups, three named tensors of different momentum dtypes, two steps) and returns each
/// tensor's momentum as f32 values, by name.
#[cfg(feature = "safetensors")]
#[pyfunction]
fn _save_safetensors_demo(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Py<PyDict>> {
    use lion_optim::{GroupId, Lion, Tensor, TensorSpec, bf16, f16};
    let err = |e: lion_optim::Error| PyValueError::new_err(e.to_string());
    let mut opt = Lion::new(Hyperparams {
        lr: 1e-3,
        weight_decay: 0.1,
        ..Hyperparams::default()
    })
    .map_err(err)?;
    let g1 = opt
        .add_group(make_group(
            2e-3,
            0.95,
            0.98,
            0.0,
            false,
            Some(0.5),
            Some(4e-3),
            Some(7),
            Cautious::Whole,
        ))
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
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("{}: {e}", path.display())))?;
    let out = PyDict::new(py);
    for (name, id) in [("wte", wte), ("h.0.ln_1.bias", bias), ("lm_head", head)] {
        let m = opt.momentum(id).map_err(err)?;
        let values: Vec<f32> = match m {
            SliceRef::F32(s) => s.to_vec(),
            SliceRef::F16(s) => s.iter().map(|x| x.to_f32()).collect(),
            SliceRef::Bf16(s) => s.iter().map(|x| x.to_f32()).collect(),
        };
        out.set_item(name, values)?;
    }
    Ok(out.unbind())
}

/// The Rust extension of `lion_optim` (private: use `lion_optim` and `lion_optim.torch`).
#[pymodule]
fn _lion_optim(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PAR_THRESHOLD", lion_optim::PAR_THRESHOLD)?;
    m.add_function(wrap_pyfunction!(_step, m)?)?;
    m.add_function(wrap_pyfunction!(_cautious_count, m)?)?;
    m.add_function(wrap_pyfunction!(_reference_step, m)?)?;
    m.add_function(wrap_pyfunction!(_last_core_ns, m)?)?;
    m.add_function(wrap_pyfunction!(_set_exchange_api, m)?)?;
    m.add_function(wrap_pyfunction!(simd_path, m)?)?;
    #[cfg(feature = "safetensors")]
    m.add_function(wrap_pyfunction!(_save_safetensors_demo, m)?)?;
    m.add_class::<TorchPlan>()?;
    Ok(())
}
