//! `lion_optim.torch.Lion`'s step: the [`TorchPlan`] its Python side builds when `param_groups`
//! or `state` change, and steps through at every `optimizer.step()`.
//!
//! A parameter is a plain CPU tensor, or a `DTensor` (FSDP2's `fully_shard`, `distribute_tensor`)
//! whose local shard is stepped in place: in the pieces ("runs") in which it lies in the whole
//! tensor's memory order, each with its element offset in the whole tensor, so that stochastic
//! rounding draws exactly the bits of one process; a cautious group's counts are those of the
//! whole tensor, added up over the mesh by the Python side (`stats`, then `step` with `totals`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use lion_optim::{Backend, Cautious, Group, MomentumDtype, Outcome, Q8_BLOCK};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyDict, PyList};

use crate::engine::{self, Entry, Labels, Role, role_name};
use crate::settings;
use crate::view::{Access, Exporter, MomView, Pinned, StepCounts, View};

/// What `lion_optim.torch.Lion` knows about its parameters between steps, rebuilt by Python when
/// `param_groups` or `state` change: the parameters in order (across groups), each one's group,
/// random stream and name for messages, and the optimizer's own state buffers: each state's
/// momentum (a `bytearray` that its `exp_avg` tensor views, laid out as the parameter; for 8-bit
/// momentum two, which `exp_avg_codes` and `exp_avg_absmax` view) and one
/// `bytearray` of i64 step counts that every `state["step"]` views; for a `DTensor` parameter,
/// where its local shard lies in the whole tensor.
///
/// Its `step` checks that `param_groups` still holds exactly these parameters, reads every
/// gradient, checks and views parameters and gradients, and makes one call into the core.
#[pyclass(frozen, module = "lion_optim._lion_optim")]
pub(crate) struct TorchPlan {
    params: Vec<Py<PyAny>>,
    group: Vec<usize>,
    streams: Vec<u64>,
    labels: Vec<String>,
    group_lens: Vec<usize>,
    /// Per parameter: a view of its momentum buffer, or None before its first step.
    momentum: Vec<Option<MomView>>,
    /// Per parameter: the element strides its momentum is laid out with (those of dimensions
    /// of size 1 as 0; None: C order). A parameter (or local shard) laid out otherwise at a step
    /// makes the plan stale: the Python side then lays its momentum out anew.
    layouts: Vec<Option<Vec<i64>>>,
    /// Per parameter: None (a plain tensor), or where its local shard lies (a `DTensor`).
    shards: Vec<Option<Shard>>,
    /// The number of sharded parameters (those with a `count_slot`).
    sharded: usize,
    /// The momentum buffers, pinned (alive and in place) as long as the plan is.
    _buffers: Vec<Pinned>,
    /// The step counts, one per parameter.
    steps: StepCounts,
    /// Set while a step runs without the GIL: a second thread's `step()` of the same optimizer
    /// would write the same buffers at the same time.
    busy: AtomicBool,
    /// The buffers of the last step, found disjoint (see `engine::Disjoint`).
    disjoint: engine::Disjoint,
}

/// Where a `DTensor` parameter's local shard lies in the whole tensor.
struct Shard {
    /// Its placements (its gradient must have the same).
    placements: Py<PyAny>,
    /// `(start, len, index)`: elements `[start, start + len)` of the local shard in memory
    /// order are elements `[index, index + len)` of the whole tensor in its memory order.
    runs: Vec<(usize, usize, u64)>,
    /// Elements of the local shard, and of the whole tensor.
    local_len: usize,
    numel: u64,
    /// Its position among the sharded parameters (some placement is a `Shard`: a cautious
    /// step needs the count of the whole tensor); None: replicated (the local tensor is the
    /// whole one).
    count_slot: Option<usize>,
}

/// Clears the plan's busy flag when the step is over, however it ends.
struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Labels of the optimizer: the parameter's name and the role (`parameter 'wte': its
/// gradient`); entry `i` of a step is parameter `.1[i]` of the plan.
struct PlanLabels<'a>(&'a [String], &'a [usize]);

impl Labels for PlanLabels<'_> {
    fn label(&self, entry: usize, role: Role) -> String {
        let k = self.1.get(entry).copied().unwrap_or(entry);
        let name = self.0.get(k).map_or("a parameter", String::as_str);
        format!("{name}: {}", role_name(role))
    }
}

/// `param group {i}` in messages.
struct GroupName(usize);

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "param group {}", self.0)
    }
}

/// The momentum format of a code of the Python side: 0/1/2 = f32/f16/bf16 (`Dtype::ALL`'s
/// order), 3 = 8-bit blocks.
fn dtype_of_code(code: u8) -> PyResult<MomentumDtype> {
    MomentumDtype::ALL
        .get(usize::from(code))
        .copied()
        .ok_or_else(|| PyValueError::new_err(format!("unknown dtype code {code}")))
}

/// A momentum buffer as the Python side gives it: (bytearray, dtype code, elements, the
/// bytearray of the block scales for 8-bit momentum, else None).
type MomentumArg<'py> = (
    Bound<'py, PyByteArray>,
    u8,
    usize,
    Option<Bound<'py, PyByteArray>>,
);

/// A parameter with a gradient, checked and viewed (the whole local shard of a `DTensor`).
struct Item {
    k: usize,
    params: View,
    grads: View,
    momentum: MomView,
    /// Its step count after this step.
    next: i64,
}

/// What reading `param_groups` and the gradients found.
enum Found {
    /// `param_groups` no longer lists the plan's parameters, or a parameter's layout changed.
    Stale,
    /// These parameters have a gradient and no state yet.
    NeedInit(Vec<usize>),
    /// Every parameter with a gradient, checked, and the groups' settings.
    Ready(Vec<Group>, Vec<Item>),
}

/// `(placements, runs, local elements, whole elements, sharded)` of a `DTensor` parameter.
type ShardArg = (Py<PyAny>, Vec<(usize, usize, u64)>, usize, u64, bool);

#[pymethods]
impl TorchPlan {
    /// `momentum[k]`: None, or (bytearray, dtype code 0/1/2/3 = f32/f16/bf16/8-bit, elements,
    /// None or for 8-bit momentum the bytearray of its f32 block scales: the first one then
    /// holds the u8 codes);
    /// `layouts[k]`: the element strides of its momentum (None: C order); `shards[k]`: None, or
    /// a `DTensor`'s `(placements, runs, local elements, whole elements, sharded)`; `steps`: a
    /// bytearray of at least 8 bytes per parameter, 8-aligned. The plan pins every bytearray
    /// (holds an export: it cannot be resized) as long as it lives.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        params: Vec<Py<PyAny>>,
        group: Vec<usize>,
        streams: Vec<u64>,
        labels: Vec<String>,
        group_lens: Vec<usize>,
        momentum: Vec<Option<MomentumArg<'_>>>,
        layouts: Vec<Option<Vec<i64>>>,
        shards: Vec<Option<ShardArg>>,
        steps: Bound<'_, PyByteArray>,
    ) -> PyResult<Self> {
        let n = params.len();
        if [group.len(), streams.len(), labels.len(), momentum.len()]
            .iter()
            .chain([layouts.len(), shards.len()].iter())
            .any(|&l| l != n)
        {
            return Err(PyValueError::new_err(
                "TorchPlan: lists of different lengths",
            ));
        }
        if group_lens.iter().sum::<usize>() != n {
            return Err(PyValueError::new_err(
                "TorchPlan: group lengths do not add up",
            ));
        }
        let steps = StepCounts::new(&steps, n)?;
        let mut views = Vec::with_capacity(n);
        let mut buffers = Vec::new();
        for m in &momentum {
            views.push(match m {
                None => None,
                Some((buf, code, len, absmax)) => {
                    let pinned = Pinned::new(buf)?;
                    let err = |e: crate::view::ViewError| e.into_pyerr("TorchPlan: momentum");
                    let view = match (dtype_of_code(*code)?.element(), absmax) {
                        (Some(dtype), None) => {
                            MomView::Elems(pinned.view(*len, dtype).map_err(err)?)
                        }
                        (None, Some(absmax)) => {
                            let scales = Pinned::new(absmax)?;
                            let q = Pinned::q8_view(&pinned, &scales, *len).map_err(err)?;
                            buffers.push(scales);
                            MomView::Q8(q)
                        }
                        _ => {
                            return Err(PyValueError::new_err(
                                "TorchPlan: momentum: block scales given for element momentum, \
                                 or none for 8-bit momentum",
                            ));
                        }
                    };
                    buffers.push(pinned);
                    Some(view)
                }
            });
        }
        let mut sharded = 0;
        let mut plan_shards = Vec::with_capacity(n);
        for (k, sh) in shards.into_iter().enumerate() {
            let Some((placements, runs, local_len, numel, is_sharded)) = sh else {
                plan_shards.push(None);
                continue;
            };
            // The runs tile the local shard (in order), and lie in the whole tensor.
            let mut at = 0usize;
            let q8 = matches!(views[k], Some(MomView::Q8(_)));
            for &(start, len, index) in &runs {
                let fits = index
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= numel);
                if start != at || !fits {
                    return Err(PyValueError::new_err(format!(
                        "TorchPlan: {}: bad runs of a local shard",
                        labels[k]
                    )));
                }
                // 8-bit momentum: blocks of 256 are aligned to the whole tensor, so every piece
                // must start at a block of the whole tensor and of the local shard, and end at
                // one (or at the end of the tensor).
                let block = Q8_BLOCK as u64;
                if q8
                    && (!index.is_multiple_of(block)
                        || !start.is_multiple_of(Q8_BLOCK)
                        || !(len.is_multiple_of(Q8_BLOCK) || index + len as u64 == numel))
                {
                    return Err(PyValueError::new_err(format!(
                        "{}: 8-bit momentum needs every piece of a local shard to start at a \
                         multiple of 256 elements of the whole tensor (blocks of 256 are aligned \
                         to it); this one has elements [{index}, {}) of {numel}",
                        labels[k],
                        index + len as u64
                    )));
                }
                at += len;
            }
            if at != local_len || momentum[k].as_ref().is_some_and(|m| m.2 != local_len) {
                return Err(PyValueError::new_err(format!(
                    "TorchPlan: {}: the runs do not cover the local shard",
                    labels[k]
                )));
            }
            let count_slot = is_sharded.then(|| {
                sharded += 1;
                sharded - 1
            });
            plan_shards.push(Some(Shard {
                placements,
                runs,
                local_len,
                numel,
                count_slot,
            }));
        }
        Ok(Self {
            params,
            group,
            streams,
            labels,
            group_lens,
            momentum: views,
            layouts,
            shards: plan_shards,
            sharded,
            _buffers: buffers,
            steps,
            busy: AtomicBool::new(false),
            disjoint: engine::Disjoint::default(),
        })
    }

    /// One step. Returns True (applied), False (skipped: a non-finite gradient), None (the plan
    /// is stale: `param_groups` changed, or a parameter's memory layout), or a list of the
    /// positions of parameters that have a gradient but no state yet (to be initialized, then
    /// call again). `totals`: per sharded parameter (a `DTensor` with a `Shard` placement, in
    /// plan order), the cautious count of the whole tensor (the sum of `stats` over the mesh);
    /// needed iff such a parameter with a gradient is in a cautious group. Raises, having
    /// written nothing, on any bad input.
    #[pyo3(signature = (param_groups, num_threads, skip_non_finite, totals=None))]
    fn step(
        &self,
        py: Python<'_>,
        param_groups: &Bound<'_, PyAny>,
        num_threads: usize,
        skip_non_finite: bool,
        totals: Option<Vec<u64>>,
    ) -> PyResult<Py<PyAny>> {
        let _busy = self.enter()?;
        let mut ex = Exporter::new(py);
        let (mut groups, items) = match self.find(py, &mut ex, param_groups, skip_non_finite)? {
            Found::Stale => return Ok(py.None()),
            Found::NeedInit(need) => return Ok(need.into_pyobject(py)?.into_any().unbind()),
            Found::Ready(groups, items) => (groups, items),
        };
        if let Some(t) = &totals
            && t.len() != self.sharded
        {
            return Err(PyValueError::new_err(format!(
                "TorchPlan: {} totals for {} sharded parameters",
                t.len(),
                self.sharded
            )));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(items.len());
        // The parameter of each entry.
        let mut index: Vec<usize> = Vec::with_capacity(items.len());
        for it in &items {
            let k = it.k;
            let base = Entry {
                params: it.params,
                grads: it.grads,
                momentum: it.momentum,
                group: self.group[k],
                step: it.next as u64,
                stream: self.streams[k],
                offset: 0,
            };
            let Some(shard) = &self.shards[k] else {
                entries.push(base);
                index.push(k);
                continue;
            };
            let mut group = base.group;
            if let Some(slot) = shard.count_slot
                && groups[group].options.cautious != Cautious::Off
            {
                let Some(agreeing) = totals.as_ref().map(|t| t[slot]) else {
                    return Err(PyRuntimeError::new_err(format!(
                        "{}: a cautious step of a sharded DTensor needs the count of the whole \
                         tensor (TorchPlan.step without totals)",
                        self.labels[k]
                    )));
                };
                let mut g = groups[group];
                g.options.cautious = Cautious::Shard {
                    agreeing,
                    numel: shard.numel,
                };
                settings::validate(&g, &format_args!("{}", self.labels[k]))?;
                groups.push(g);
                group = groups.len() - 1;
            }
            for &(start, len, offset) in &shard.runs {
                let changed = || {
                    PyRuntimeError::new_err(format!(
                        "{}: its local shard changed size",
                        self.labels[k]
                    ))
                };
                let part = |v: &View| v.part(start, len).ok_or_else(changed);
                entries.push(Entry {
                    params: part(&it.params)?,
                    grads: part(&it.grads)?,
                    momentum: it.momentum.part(start, len).ok_or_else(changed)?,
                    group,
                    offset,
                    ..base
                });
                index.push(k);
            }
        }
        let labels = PlanLabels(&self.labels, &index);
        let outcome = engine::run(
            py,
            Backend::detect(),
            &entries,
            &groups,
            num_threads,
            &labels,
            Some(&self.disjoint),
        )?;
        drop(ex);
        if outcome == Outcome::SkippedNonFinite {
            return Ok(PyBool::new(py, false).to_owned().into_any().unbind());
        }
        for it in &items {
            self.steps.set(py, it.k, it.next);
        }
        Ok(PyBool::new(py, true).to_owned().into_any().unbind())
    }

    /// What a distributed step needs to know before it steps, with nothing written: None (the
    /// plan is stale), a list of positions needing state (as `step`), or `(counts, finite)`:
    /// per sharded parameter (plan order) the cautious count of its local shard (0 if it has no
    /// gradient or its group is not cautious), and whether every gradient is finite (after
    /// unscaling; True unless `skip_non_finite`).
    fn stats(
        &self,
        py: Python<'_>,
        param_groups: &Bound<'_, PyAny>,
        skip_non_finite: bool,
    ) -> PyResult<Py<PyAny>> {
        let _busy = self.enter()?;
        let mut ex = Exporter::new(py);
        let (groups, items) = match self.find(py, &mut ex, param_groups, skip_non_finite)? {
            Found::Stale => return Ok(py.None()),
            Found::NeedInit(need) => return Ok(need.into_pyobject(py)?.into_any().unbind()),
            Found::Ready(groups, items) => (groups, items),
        };
        // (slot, grads, momentum, group) of what to count.
        let mut pairs: Vec<(usize, View, MomView, usize)> = Vec::new();
        for it in &items {
            let gi = self.group[it.k];
            if let Some(Shard {
                count_slot: Some(slot),
                ..
            }) = self.shards[it.k]
                && groups[gi].options.cautious != Cautious::Off
            {
                pairs.push((slot, it.grads, it.momentum, gi));
            }
        }
        let grads: Vec<(View, usize)> = if skip_non_finite {
            items
                .iter()
                .map(|it| (it.grads, self.group[it.k]))
                .collect()
        } else {
            Vec::new()
        };
        let result = engine::shard_stats(py, &pairs, &grads, &groups, self.sharded);
        drop(ex);
        let (counts, finite) = result?;
        Ok((counts, finite).into_pyobject(py)?.into_any().unbind())
    }

    /// The number of parameters.
    fn __len__(&self) -> usize {
        self.params.len()
    }
}

impl TorchPlan {
    /// Marks the plan busy (until the guard drops), or refuses if it already is.
    fn enter(&self) -> PyResult<Busy<'_>> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(PyRuntimeError::new_err(
                "lion_optim.torch.Lion.step() is already running in another thread on this optimizer",
            ));
        }
        Ok(Busy(&self.busy))
    }

    /// Reads `param_groups` (stale unless they list exactly the plan's parameters) and their
    /// settings, then every parameter with a gradient: checked and viewed, all before anything
    /// is written.
    fn find<'py>(
        &self,
        py: Python<'py>,
        ex: &mut Exporter<'py>,
        param_groups: &Bound<'py, PyAny>,
        skip_non_finite: bool,
    ) -> PyResult<Found> {
        let Ok(param_groups) = param_groups.cast::<PyList>() else {
            return Err(PyTypeError::new_err("param_groups must be a list"));
        };
        if param_groups.len() != self.group_lens.len() {
            return Ok(Found::Stale);
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
                return Ok(Found::Stale);
            };
            let Ok(list) = list.cast::<PyList>() else {
                return Ok(Found::Stale);
            };
            if list.len() != len {
                return Ok(Found::Stale);
            }
            for j in 0..len {
                if !list.get_item(j)?.is(&self.params[k + j]) {
                    return Ok(Found::Stale);
                }
            }
            k += len;
            let mut group = settings::group_from_dict(d, &GroupName(gi))?;
            group.options.skip_non_finite = skip_non_finite;
            groups.push(group);
        }

        let mut items: Vec<Item> = Vec::with_capacity(self.params.len());
        let mut need_init: Vec<usize> = Vec::new();
        // Entries of the parameters needing state (to refuse overlaps before state is made).
        let mut pending: Vec<Entry> = Vec::new();
        let grad_key = intern!(py, "grad");
        for (k, p) in self.params.iter().enumerate() {
            let p = p.bind(py);
            let grad = p.getattr(grad_key)?;
            if grad.is_none() {
                continue;
            }
            let label = |role| PlanLabels(&self.labels, &[]).label(k, role);
            let (p, grad) = match &self.shards[k] {
                None => (p.clone(), grad),
                Some(shard) => local_shards(py, p, &grad, shard, &label)?,
            };
            let pv = ex
                .view(&p, Access::Write)
                .map_err(|e| e.into_pyerr(&label(Role::Params)))?;
            let gv = ex
                .view(&grad, Access::Read)
                .map_err(|e| e.into_pyerr(&label(Role::Grads)))?;
            engine::check_grad(ex, &pv, &gv, &label)?;
            if let Some(shard) = &self.shards[k]
                && pv.len != shard.local_len
            {
                // Its local shard was replaced by one of another size: where it lies is new.
                return Ok(Found::Stale);
            }
            let Some(mv) = self.momentum[k] else {
                // Checked like the others (its momentum will be a new buffer of its own).
                need_init.push(k);
                pending.push(Entry {
                    params: pv,
                    grads: gv,
                    momentum: MomView::Elems(View::empty()),
                    group: 0,
                    step: 0,
                    stream: 0,
                    offset: 0,
                });
                continue;
            };
            if ex.layout(&pv) != self.layouts[k].as_deref() || mv.len() != pv.len {
                // Its memory layout (or size) changed since its momentum was laid out.
                return Ok(Found::Stale);
            }
            let step = self.steps.get(py, k).unwrap_or(-1);
            let next = match step.checked_add(1) {
                Some(n) if step >= 0 => n,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "{}: its state 'step' is {step}; it must be an int in [0, 2**63 - 1)",
                        self.labels[k]
                    )));
                }
            };
            items.push(Item {
                k,
                params: pv,
                grads: gv,
                momentum: mv,
                next,
            });
        }
        if !need_init.is_empty() {
            // Refuse overlapping parameters and gradients before any state is made.
            let mut entries: Vec<Entry> = items
                .iter()
                .map(|it| Entry {
                    params: it.params,
                    grads: it.grads,
                    momentum: it.momentum,
                    group: 0,
                    step: 0,
                    stream: 0,
                    offset: 0,
                })
                .collect();
            let index: Vec<usize> = items
                .iter()
                .map(|it| it.k)
                .chain(need_init.iter().copied())
                .collect();
            entries.append(&mut pending);
            engine::check_overlap(&entries, &PlanLabels(&self.labels, &index), None)?;
            return Ok(Found::NeedInit(need_init));
        }
        Ok(Found::Ready(groups, items))
    }
}

/// Checks parameters as a step would view them (device, dtype, layout: the same messages),
/// writing nothing: `lion_optim.torch.Lion` calls it on the parameters it is given (the local
/// shards of `DTensor`s) before it stores any. `labels[i]` names `params[i]` (`parameter 3`).
#[pyfunction]
pub(crate) fn _check_params(
    py: Python<'_>,
    params: &Bound<'_, PyList>,
    labels: Vec<String>,
) -> PyResult<()> {
    let mut ex = Exporter::new(py);
    for (i, p) in params.iter().enumerate() {
        let name = labels.get(i).map_or("a parameter", String::as_str);
        ex.view(&p, Access::Write)
            .map_err(|e| e.into_pyerr(&format!("{name}: {}", role_name(Role::Params))))?;
    }
    Ok(())
}

/// The local tensors of a `DTensor` parameter and of its gradient, which must be a `DTensor`
/// with the same placements.
fn local_shards<'py>(
    py: Python<'py>,
    p: &Bound<'py, PyAny>,
    grad: &Bound<'py, PyAny>,
    shard: &Shard,
    label: &dyn Fn(Role) -> String,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let local = intern!(py, "_local_tensor");
    let p_local = p.getattr(local)?;
    let Some(g_local) = grad.getattr_opt(local)? else {
        return Err(PyTypeError::new_err(format!(
            "{} is a plain tensor, the parameter a DTensor: give it the parameter's placements \
             (FSDP2 and DTensor's autograd do)",
            label(Role::Grads)
        )));
    };
    let placements = grad
        .getattr(intern!(py, "_spec"))?
        .getattr(intern!(py, "placements"))?;
    if !placements.is(&shard.placements) && !placements.eq(&shard.placements)? {
        return Err(PyValueError::new_err(format!(
            "{} is a DTensor with placements {}, the parameter {}: redistribute it to the \
             parameter's placements first (a Partial gradient must be reduced)",
            label(Role::Grads),
            placements.str()?,
            shard.placements.bind(py).str()?
        )));
    }
    Ok((p_local, g_local))
}
