//! `lion_optim._lion_optim`: the Rust half of the `lion_optim` Python package.
//!
//! This crate only adapts: it checks Python arrays and settings (device, dtype, memory layout,
//! shapes, overlap — all before anything is written), views their buffers without copying, makes
//! **one** call into the core per step over all tensors with the GIL released, and reports errors
//! as Python exceptions naming the tensor. The Lion math and the validation of hyperparameters
//! are the core's (`lion_optim`); none is written here.
//!
//! - `settings`: a param group's settings, parsed from Python once for every front end;
//! - `functional`: `lion_optim.step` and `lion_optim.cautious_count`;
//! - `plan`: `lion_optim.torch.Lion`'s step (`TorchPlan`), `DTensor` local shards included;
//! - `engine`: the checks between views, the thread pool, the call into the core;
//! - `view`: Python buffers as checked views and slices (the only raw pointer reads/writes);
//! - `hooks` (cargo feature `test-hooks`): functions only the tests call.
//!
//! The Python side (`python/lion_optim/`) holds the `torch.optim.Optimizer` subclass and the
//! functional API; the functions here are its private building blocks.
#![deny(unsafe_code)]

use pyo3::prelude::*;

#[allow(unsafe_code)]
mod engine;
mod functional;
#[cfg(feature = "test-hooks")]
mod hooks;
mod plan;
mod settings;
#[allow(unsafe_code)]
mod view;

/// The instruction-set backend the core uses on this CPU (`"avx512"`, `"avx2"`, `"portable"`...).
#[pyfunction]
fn simd_path() -> &'static str {
    lion_optim::Backend::detect().name()
}

/// Nanoseconds the last step spent in the core, with the GIL released (for the benchmark).
#[pyfunction]
fn _last_core_ns() -> u64 {
    engine::LAST_CORE_NS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The Rust extension of `lion_optim` (private: use `lion_optim` and `lion_optim.torch`).
#[pymodule]
fn _lion_optim(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PAR_THRESHOLD", lion_optim::PAR_THRESHOLD)?;
    m.add("TEST_HOOKS", cfg!(feature = "test-hooks"))?;
    m.add("Q8_MAP", lion_optim::Q8_MAP.to_vec())?;
    m.add("Q8_BLOCK", lion_optim::Q8_BLOCK)?;
    m.add_function(wrap_pyfunction!(functional::_step, m)?)?;
    m.add_function(wrap_pyfunction!(functional::_cautious_count, m)?)?;
    m.add_function(wrap_pyfunction!(settings::_check_group, m)?)?;
    m.add_function(wrap_pyfunction!(plan::_check_params, m)?)?;
    m.add_function(wrap_pyfunction!(simd_path, m)?)?;
    m.add_function(wrap_pyfunction!(_last_core_ns, m)?)?;
    m.add_class::<plan::TorchPlan>()?;
    #[cfg(feature = "test-hooks")]
    hooks::register(m)?;
    Ok(())
}
