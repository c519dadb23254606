//! The functional API's building blocks (`lion_optim.step`, `lion_optim.cautious_count`): lists
//! of arrays the caller keeps, named in messages by their positions.

use lion_optim::{Backend, Cautious, Group, Outcome};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::engine::{self, Entry, Labels, Role};
use crate::settings;
use crate::view::{Access, Exporter, MomView, View};

/// Labels of the functional API: `params[i]`, `grads[i]`, `exp_avgs[i]`.
pub(crate) struct Positions;

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

/// A checked view of `exp_avgs[i]`: an array of elements, or 8-bit momentum as a
/// `(codes, absmax)` tuple (what `lion_optim.Q8Momentum` becomes on the way in) for the
/// parameter (or, counting, the gradient) `p`.
fn momentum_view<'py>(
    ex: &mut Exporter<'py>,
    m: &Bound<'py, PyAny>,
    p: &View,
    access: Access,
    label: &dyn Fn(Role) -> String,
) -> PyResult<MomView> {
    if let Ok(pair) = m.cast::<PyTuple>() {
        let [codes, absmax] = [pair.get_item(0)?, pair.get_item(1)?];
        return ex
            .q8(&codes, &absmax, p, access)
            .map(MomView::Q8)
            .map_err(|(which, e)| e.into_pyerr(&format!("{}.{which}", label(Role::Momentum))));
    }
    ex.view(m, access)
        .map(MomView::Elems)
        .map_err(|e| e.into_pyerr(&label(Role::Momentum)))
}

/// Checked views of the three lists.
fn views_of<'py>(
    ex: &mut Exporter<'py>,
    params: &Bound<'py, PyList>,
    grads: &Bound<'py, PyList>,
    exp_avgs: &Bound<'py, PyList>,
) -> PyResult<Vec<(View, View, MomView)>> {
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
        let m = momentum_view(ex, &exp_avgs.get_item(i)?, &p, Access::Write, &label)?;
        match &m {
            MomView::Elems(m) => engine::check_entry(ex, &p, &g, m, &label)?,
            MomView::Q8(_) => engine::check_grad(ex, &p, &g, &label)?,
        }
        out.push((p, g, m));
    }
    Ok(out)
}

/// One Lion step over lists of arrays (see `lion_optim.step`; `group`: the settings as a param
/// group dict). Returns whether it was applied.
#[pyfunction]
#[pyo3(signature = (params, grads, exp_avgs, group, *, step, offsets, streams, cautious_totals,
    num_threads, skip_non_finite))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn _step(
    py: Python<'_>,
    params: &Bound<'_, PyList>,
    grads: &Bound<'_, PyList>,
    exp_avgs: &Bound<'_, PyList>,
    group: &Bound<'_, PyDict>,
    step: u64,
    offsets: Option<Vec<u64>>,
    streams: Option<Vec<u64>>,
    cautious_totals: Option<Vec<(u64, u64)>>,
    num_threads: usize,
    skip_non_finite: bool,
) -> PyResult<bool> {
    const NAME: &str = "lion_optim.step";
    let mut group = settings::group_from_dict(group, &NAME)?;
    group.options.skip_non_finite = skip_non_finite;
    let n = params.len();
    opt_len("offsets", &offsets, n)?;
    opt_len("streams", &streams, n)?;
    opt_len("cautious_totals", &cautious_totals, n)?;
    // Shards of cautious tensors: a group per tensor, with the whole tensor's count.
    let groups: Vec<Group> = match &cautious_totals {
        None => vec![group],
        Some(totals) => {
            let mut groups = Vec::with_capacity(n);
            for (i, &(agreeing, numel)) in totals.iter().enumerate() {
                let mut g = group;
                g.options.cautious = Cautious::Shard { agreeing, numel };
                settings::validate(&g, &format_args!("{NAME}: tensor {i}"))?;
                groups.push(g);
            }
            groups
        }
    };
    let mut ex = Exporter::new(py);
    let views = views_of(&mut ex, params, grads, exp_avgs)?;
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
    let outcome = engine::run(
        py,
        Backend::detect(),
        &entries,
        &groups,
        num_threads,
        &Positions,
        None,
    )?;
    drop(ex);
    Ok(outcome == Outcome::Applied)
}

/// The cautious variant's count per tensor (see `lion_optim.cautious_count`; `group`: the
/// settings as a param group dict).
#[pyfunction]
pub(crate) fn _cautious_count(
    py: Python<'_>,
    grads: &Bound<'_, PyList>,
    exp_avgs: &Bound<'_, PyList>,
    group: &Bound<'_, PyDict>,
) -> PyResult<Vec<u64>> {
    let group = settings::group_from_dict(group, &"lion_optim.cautious_count")?;
    let n = grads.len();
    list_len("exp_avgs", exp_avgs, n)?;
    let mut ex = Exporter::new(py);
    let mut pairs = Vec::with_capacity(n);
    for i in 0..n {
        let g = ex
            .view(&grads.get_item(i)?, Access::Read)
            .map_err(|e| e.into_pyerr(&Positions.label(i, Role::Grads)))?;
        let label = |role| Positions.label(i, role);
        let m = momentum_view(&mut ex, &exp_avgs.get_item(i)?, &g, Access::Read, &label)?;
        if m.len() != g.len {
            return Err(PyValueError::new_err(format!(
                "exp_avgs[{i}] has {} elements, grads[{i}] {}",
                m.len(),
                g.len
            )));
        }
        pairs.push((g, m));
    }
    let counts = engine::cautious_counts(py, &pairs, &group);
    drop(ex);
    counts
}
