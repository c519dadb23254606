//! A param group's settings: the one parser from Python values to the core's [`Group`].
//!
//! Every front end hands its settings over as a dict with the keys of a `lion_optim.torch.Lion`
//! param group — `lr`, `betas`, `weight_decay` (required), `maximize`, `grad_unscale`, `max_lr`,
//! `stochastic_rounding`, `seed`, `cautious` (optional) — the optimizer its `param_groups`, the
//! functional API a dict of its keyword arguments. Here a value of the wrong Python type is a
//! `TypeError` and a seed outside `[0, 2**64)` a `ValueError` (what the core cannot see); every
//! other value is the core's to judge ([`Group::validate`]), and its message is passed through
//! as a `ValueError`. Every message starts with the name of the group or call.

use std::fmt::Display;

use lion_optim::{Cautious, Group, Hyperparams, Rounding, StepOptions, WeightDecay};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};

/// The settings in `d` as a validated group (`skip_non_finite` is not a key: the caller sets
/// it). `name` names the group or call in messages (`param group 1`, `lion_optim.step`).
pub(crate) fn group_from_dict(d: &Bound<'_, PyDict>, name: &dyn Display) -> PyResult<Group> {
    let py = d.py();
    let key = Key { d, name };
    let lr: f64 = key.required(intern!(py, "lr"), "a float")?;
    // A pair: a tuple, or any sequence of two (a list after a JSON round trip).
    let betas: Vec<f64> = key.required(intern!(py, "betas"), "a pair of floats")?;
    let [beta1, beta2] = betas[..] else {
        return Err(PyValueError::new_err(format!(
            "{name}: 'betas' must be a pair of floats, got {} values",
            betas.len()
        )));
    };
    let weight_decay: f64 = key.required(intern!(py, "weight_decay"), "a float")?;
    let maximize = key.flag(intern!(py, "maximize"))?;
    let grad_unscale: Option<f64> = key.optional(intern!(py, "grad_unscale"), "a float or None")?;
    let max_lr: Option<f64> = key.optional(intern!(py, "max_lr"), "a float or None")?;
    let seed = key.seed(intern!(py, "seed"))?;
    let stochastic = key.flag(intern!(py, "stochastic_rounding"))?;
    let cautious = key.flag(intern!(py, "cautious"))?;
    let group = Group {
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
            rounding: if stochastic {
                Rounding::Stochastic { seed }
            } else {
                Rounding::Nearest
            },
            cautious: if cautious {
                Cautious::Whole
            } else {
                Cautious::Off
            },
            ..StepOptions::default()
        },
    };
    validate(&group, name)?;
    Ok(group)
}

/// The core's verdict on a group, as a `ValueError` naming it.
pub(crate) fn validate(group: &Group, name: &dyn Display) -> PyResult<()> {
    group
        .validate()
        .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
}

/// Checks the settings of a param group (see the module docs); raises as a step would.
#[pyfunction]
pub(crate) fn _check_group(group: &Bound<'_, PyDict>, name: &str) -> PyResult<()> {
    group_from_dict(group, &name).map(|_| ())
}

/// The keys of one dict, with messages naming its group or call.
struct Key<'a, 'py> {
    d: &'a Bound<'py, PyDict>,
    name: &'a dyn Display,
}

impl<'py> Key<'_, 'py> {
    fn type_error(&self, key: &Bound<'py, PyString>, what: &str, v: &Bound<'py, PyAny>) -> PyErr {
        let ty = v
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!("{}: '{key}' must be {what}, got {ty}", self.name))
    }

    fn required<T: FromPyObjectOwned<'py>>(
        &self,
        key: &Bound<'py, PyString>,
        what: &str,
    ) -> PyResult<T> {
        let v = self
            .d
            .get_item(key)?
            .ok_or_else(|| PyValueError::new_err(format!("{}: missing key '{key}'", self.name)))?;
        v.extract::<T>().map_err(|_| self.type_error(key, what, &v))
    }

    /// An optional value (`None` or a missing key: `None`).
    fn optional<T: FromPyObjectOwned<'py>>(
        &self,
        key: &Bound<'py, PyString>,
        what: &str,
    ) -> PyResult<Option<T>> {
        match self.d.get_item(key)? {
            Some(v) if !v.is_none() => v
                .extract::<T>()
                .map(Some)
                .map_err(|_| self.type_error(key, what, &v)),
            _ => Ok(None),
        }
    }

    /// A flag: its truth value (a missing key: false).
    fn flag(&self, key: &Bound<'py, PyString>) -> PyResult<bool> {
        match self.d.get_item(key)? {
            None => Ok(false),
            Some(v) => v.is_truthy(),
        }
    }

    /// The seed: an int (not a bool) in `[0, 2**64)`; `None` or a missing key: 0.
    fn seed(&self, key: &Bound<'py, PyString>) -> PyResult<u64> {
        const WHAT: &str = "an int in [0, 2**64)";
        let Some(v) = self.d.get_item(key)?.filter(|v| !v.is_none()) else {
            return Ok(0);
        };
        if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
            return Err(self.type_error(key, WHAT, &v));
        }
        v.extract::<u64>().map_err(|_| {
            PyValueError::new_err(format!("{}: '{key}' must be {WHAT}, got {v}", self.name))
        })
    }
}
