//! One step over many checked views: the checks between views (shapes, lengths, overlap), the
//! thread pool, and the one call into the core ([`Backend::step_many`], or the cautious counts)
//! with the GIL released.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lion_optim::{Backend, Group, Outcome, Update};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::view::{Exporter, MomView, View};

/// One tensor of a step: its three buffers and where it takes its settings and random bits from.
pub(crate) struct Entry {
    pub(crate) params: View,
    pub(crate) grads: View,
    pub(crate) momentum: MomView,
    pub(crate) group: usize,
    pub(crate) step: u64,
    pub(crate) stream: u64,
    pub(crate) offset: u64,
}

/// Nanoseconds the last step spent in the core (with the GIL released), for the benchmark.
pub(crate) static LAST_CORE_NS: AtomicU64 = AtomicU64::new(0);

/// The role of a buffer in messages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Params,
    Grads,
    Momentum,
}

/// The role of a buffer as the optimizer's messages name it.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Params => "the parameter",
        Role::Grads => "its gradient",
        Role::Momentum => "its exp_avg",
    }
}

/// Names a tensor and a role for error messages (the optimizer: the parameter's name; the
/// functional API: the position in the lists).
pub(crate) trait Labels {
    fn label(&self, entry: usize, role: Role) -> String;
}

/// The gradient must have the parameter's shape and memory layout (the step pairs elements in
/// memory order: for a parameter dense in another order than C's, `channels_last`..., the
/// gradient must be laid out alike; autograd makes it so).
pub(crate) fn check_grad(
    ex: &Exporter<'_>,
    p: &View,
    g: &View,
    label: &dyn Fn(Role) -> String,
) -> PyResult<()> {
    if !ex.same_shape(p, g) {
        return Err(PyValueError::new_err(format!(
            "{} has shape {}, the parameter {}",
            label(Role::Grads),
            ex.shape_str(g),
            ex.shape_str(p)
        )));
    }
    if !ex.same_layout(p, g) {
        return Err(PyValueError::new_err(format!(
            "{} has strides {}, the parameter {} (shape {}): the step pairs elements in memory \
             order, so a gradient must have its parameter's memory layout; give it the \
             parameter's (torch.empty_like(param).copy_(grad), or \
             grad.contiguous(memory_format=...) with the parameter's memory format)",
            label(Role::Grads),
            ex.strides_str(g),
            ex.strides_str(p),
            ex.shape_str(p)
        )));
    }
    Ok(())
}

/// The checks between the three views of one tensor: the gradient has the parameter's shape
/// and layout ([`check_grad`]); the momentum its number of elements, and, if the parameter is
/// not C-contiguous (`channels_last`...) or the momentum has the parameter's shape, also its
/// shape and memory layout (`torch.zeros_like(param)` has).
pub(crate) fn check_entry(
    ex: &Exporter<'_>,
    p: &View,
    g: &View,
    m: &View,
    label: &dyn Fn(Role) -> String,
) -> PyResult<()> {
    check_grad(ex, p, g, label)?;
    if m.len != p.len {
        return Err(PyValueError::new_err(format!(
            "{} has {} elements, the parameter {} (shape {})",
            label(Role::Momentum),
            m.len,
            p.len,
            ex.shape_str(p)
        )));
    }
    let laid_alike = if ex.same_shape(p, m) {
        ex.same_layout(p, m)
    } else {
        p.is_contiguous() && m.is_contiguous()
    };
    if !laid_alike {
        return Err(PyValueError::new_err(format!(
            "{} has shape {} and strides {}, the parameter shape {} and strides {}: the step \
             pairs elements in memory order, so the momentum of a parameter must have its \
             shape and memory layout (torch.zeros_like(param)), or both be C-contiguous",
            label(Role::Momentum),
            ex.shape_str(m),
            ex.strides_str(m),
            ex.shape_str(p),
            ex.strides_str(p)
        )));
    }
    Ok(())
}

/// A buffer of a call: (start, end, entry * 3 + role).
type Range = (usize, usize, usize);

/// The buffers of the last call of a plan that [`check_overlap`] found disjoint: a call with
/// exactly these buffers (the usual next step of an optimizer) is disjoint too, and is not
/// sorted again.
#[derive(Default)]
pub(crate) struct Disjoint(Mutex<Vec<Range>>);

/// Refuses any two buffers of the call that overlap in memory where one of them is written
/// (parameters and momentum are written, gradients read): `&mut` slices must not alias.
/// `known`: the buffers of a call found disjoint before (remembered when these are).
pub(crate) fn check_overlap(
    entries: &[Entry],
    labels: &dyn Labels,
    known: Option<&Disjoint>,
) -> PyResult<()> {
    let ranges = buffer_ranges(entries);
    let known = known.map(|k| k.0.lock().unwrap_or_else(|e| e.into_inner()));
    if known.as_ref().is_some_and(|k| **k == ranges) {
        return Ok(());
    }
    check_ranges(&ranges, labels)?;
    if let Some(mut known) = known {
        *known = ranges;
    }
    Ok(())
}

/// The buffers of the call, in entry order; empty buffers cannot overlap anything.
fn buffer_ranges(entries: &[Entry]) -> Vec<Range> {
    let mut ranges: Vec<Range> = Vec::with_capacity(entries.len() * 3);
    for (i, e) in entries.iter().enumerate() {
        for (r, v) in [&e.params, &e.grads].into_iter().enumerate() {
            if v.len > 0 {
                let (s, end) = v.range();
                ranges.push((s, end, i * 3 + r));
            }
        }
        if e.momentum.len() > 0 {
            // (8-bit momentum: its codes and its scales, both written.)
            for (s, end) in e.momentum.ranges() {
                if end > s {
                    ranges.push((s, end, i * 3 + 2));
                }
            }
        }
    }
    ranges
}

/// [`check_overlap`] of `ranges`: sorted by start, then swept.
fn check_ranges(ranges: &[Range], labels: &dyn Labels) -> PyResult<()> {
    const ROLES: [Role; 3] = [Role::Params, Role::Grads, Role::Momentum];
    // Sort by start; the usual case packs (start, position) into one u64 key, which sorts
    // several times faster than the tuples.
    let order: Vec<usize> = if ranges.len() < 1 << 16 && ranges.iter().all(|r| r.0 < 1 << 48) {
        let mut keys: Vec<u64> = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.0 as u64) << 16) | i as u64)
            .collect();
        keys.sort_unstable();
        keys.iter().map(|k| (k & 0xffff) as usize).collect()
    } else {
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_unstable_by_key(|&i| ranges[i].0);
        order
    };
    // Sweep in order of start: a range overlaps an earlier one iff it starts before the largest
    // end seen so far (among all ranges, or among the written ones for a read range).
    let mut max_any: Option<(usize, usize)> = None; // (end, id)
    let mut max_written: Option<(usize, usize)> = None;
    for i in order {
        let (start, end, id) = ranges[i];
        let written = id % 3 != 1;
        let hit = if written { max_any } else { max_written };
        if let Some((e, other)) = hit
            && start < e
        {
            let a = labels.label(other / 3, ROLES[other % 3]);
            let b = labels.label(id / 3, ROLES[id % 3]);
            return Err(PyRuntimeError::new_err(format!(
                "{a} and {b} overlap in memory; every parameter, gradient and exp_avg written by a \
                 step must have memory of its own (is a tensor passed twice, or a view of another?)"
            )));
        }
        if max_any.is_none_or(|(e, _)| end > e) {
            max_any = Some((end, id));
        }
        if written && max_written.is_none_or(|(e, _)| end > e) {
            max_written = Some((end, id));
        }
    }
    Ok(())
}

/// Runs the step over `entries` (views checked, each entry checked by [`check_entry`]) on
/// `backend` and `num_threads` threads, with the GIL released, after refusing buffers that
/// overlap ([`check_overlap`], with the plan's `known` disjoint buffers). Returns whether it was applied (a group's `skip_non_finite` and
/// a non-finite gradient skip it: nothing written). The core checks the rest (groups, lengths)
/// before it writes anything.
///
/// Every Python object whose buffer is in `entries` must be kept alive by the caller for the
/// whole call (they are: the caller holds them in the lists it was given).
pub(crate) fn run(
    py: Python<'_>,
    backend: Backend,
    entries: &[Entry],
    groups: &[Group],
    num_threads: usize,
    labels: &dyn Labels,
    known: Option<&Disjoint>,
) -> PyResult<Outcome> {
    check_overlap(entries, labels, known)?;
    let total: usize = entries.iter().map(|e| e.params.len).sum();
    let result = py.detach(|| {
        let t0 = std::time::Instant::now();
        let r = run_detached(backend, entries, groups, num_threads, total);
        LAST_CORE_NS.store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    });
    match result {
        Ok(outcome) => Ok(outcome),
        Err(RunError::Core(e)) => Err(core_error(e, labels)),
        Err(RunError::Pool(m)) => Err(PyRuntimeError::new_err(m)),
    }
}

enum RunError {
    Core(lion_optim::Error),
    Pool(String),
}

fn run_detached(
    backend: Backend,
    entries: &[Entry],
    groups: &[Group],
    num_threads: usize,
    total: usize,
) -> Result<Outcome, RunError> {
    let call = || {
        let mut updates: Vec<Update<'_>> = Vec::with_capacity(entries.len());
        for e in entries {
            // SAFETY: each view was checked (non-null unless empty, aligned, size in range, CPU,
            // dense) when it was made, from an object the caller keeps referenced for this
            // whole call (the lists it was given; an optimizer's own momentum buffers are
            // bytearrays its plan holds with an export, so never resized or freed), so the
            // memory stays allocated while we run: torch and numpy free a buffer only when its
            // last owner goes. Replacing or shrinking a tensor's storage from another Python
            // thread *during* the step (`p.data = ...`, `untyped_storage().resize_()`) is
            // unsupported exactly as it is for torch's own in-place ops, which also run without
            // the GIL on pointers they read before. `check_overlap` proved that no written
            // buffer overlaps any other buffer of the call, so these `&mut` slices alias
            // nothing, and the gradients are only read.
            // (8-bit momentum: its codes and its scales are two such buffers.)
            let (p, g, m) = unsafe {
                (
                    e.params.slice_mut(),
                    e.grads.slice_ref(),
                    e.momentum.momentum_mut()?,
                )
            };
            updates.push(
                Update::from_slices(p, g, m)
                    .group(e.group)
                    .step(e.step)
                    .stream(e.stream)
                    .offset(e.offset),
            );
        }
        backend.step_many(&mut updates, groups)
    };
    if total < lion_optim::PAR_THRESHOLD {
        // Too little work to share: on this thread (the core runs it serially below the
        // threshold, and never touches a thread pool).
        return call().map_err(RunError::Core);
    }
    if num_threads <= 1 {
        return with_current_thread_pool(|pool| pool.install(call)).map_err(|e| match e {
            PoolOr::Pool(m) => RunError::Pool(m),
            PoolOr::Core(e) => RunError::Core(e),
        });
    }
    let pool = shared_pool(num_threads).map_err(RunError::Pool)?;
    pool.install(call).map_err(RunError::Core)
}

enum PoolOr {
    Pool(String),
    Core(lion_optim::Error),
}

thread_local! {
    /// A one-thread pool whose only thread is this one: `install` runs inline (no hand-off to
    /// another thread, ~20 ns), and inside it the core sees one thread and runs serially.
    static CURRENT: std::cell::OnceCell<Result<rayon::ThreadPool, String>> = const { std::cell::OnceCell::new() };
}

fn with_current_thread_pool(
    f: impl FnOnce(&rayon::ThreadPool) -> Result<Outcome, lion_optim::Error>,
) -> Result<Outcome, PoolOr> {
    CURRENT.with(|cell| {
        let pool = cell.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .use_current_thread()
                .build()
                .map_err(|e| format!("could not set up a one-thread pool: {e}"))
        });
        match pool {
            Ok(p) => f(p).map_err(PoolOr::Core),
            Err(m) => Err(PoolOr::Pool(m.clone())),
        }
    })
}

/// Thread pools by size, shared by all callers, built on first use.
static POOLS: Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());

fn shared_pool(n: usize) -> Result<Arc<rayon::ThreadPool>, String> {
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(k, _)| *k == n) {
        return Ok(p.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("lion-optim-{i}"))
        .build()
        .map_err(|e| format!("could not start a pool of {n} threads: {e}"))?;
    let pool = Arc::new(pool);
    pools.push((n, pool.clone()));
    Ok(pool)
}

/// The cautious variant's count of every (gradient, momentum) pair (checked views of the same
/// length, kept alive by the caller for the call), with the GIL released; `group`: validated.
pub(crate) fn cautious_counts(
    py: Python<'_>,
    pairs: &[(View, MomView)],
    group: &Group,
) -> PyResult<Vec<u64>> {
    let counts = py.detach(|| {
        pairs
            .iter()
            .map(|(g, m)| {
                // SAFETY: both views were checked when made, from objects the caller keeps alive
                // for this call; they are only read here (a concurrent writer from another
                // Python thread is unsupported, as for torch's own ops).
                let (g, m) = unsafe { (g.slice_ref(), m.momentum_ref()?) };
                g.cautious_count(m, &group.hp, &group.options)
            })
            .collect::<Result<Vec<u64>, lion_optim::Error>>()
    });
    counts.map_err(|e| PyValueError::new_err(e.to_string()))
}

/// What a distributed step reads before it steps, with the GIL released: per slot, the
/// cautious count of `(slot, grads, momentum, group)` (0 for slots not listed), and whether
/// every gradient of `grads` (with its group's options: unscaling) is finite. The views were
/// checked and are kept alive by the caller for the call.
pub(crate) fn shard_stats(
    py: Python<'_>,
    counted: &[(usize, View, MomView, usize)],
    grads: &[(View, usize)],
    groups: &[Group],
    slots: usize,
) -> PyResult<(Vec<u64>, bool)> {
    let result = py.detach(|| {
        let mut counts = vec![0u64; slots];
        for (slot, g, m, gi) in counted {
            // SAFETY: both views were checked when made, from objects the caller keeps alive
            // for this call; they are only read here (a concurrent writer from another Python
            // thread is unsupported, as for torch's own ops).
            let (g, m) = unsafe { (g.slice_ref(), m.momentum_ref()?) };
            let (Some(count), Some(group)) = (counts.get_mut(*slot), groups.get(*gi)) else {
                continue;
            };
            *count = g.cautious_count(m, &group.hp, &group.options)?;
        }
        let finite = grads.iter().all(|(g, gi)| {
            // SAFETY: as above.
            let g = unsafe { g.slice_ref() };
            groups
                .get(*gi)
                .is_none_or(|group| g.all_finite(&group.options))
        });
        Ok::<_, lion_optim::Error>((counts, finite))
    });
    result.map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A core error as a Python exception naming the tensor.
fn core_error(e: lion_optim::Error, labels: &dyn Labels) -> PyErr {
    use lion_optim::Error;
    match e {
        Error::TensorMismatch { index, .. } => {
            PyValueError::new_err(format!("{}: {e}", labels.label(index, Role::Params)))
        }
        Error::InvalidHyperparameter { .. } | Error::NoSuchGroup { .. } => {
            PyValueError::new_err(e.to_string())
        }
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}
