//! The integration tests, as one test binary: each module is one suite (`cargo test --test suite
//! equivalence::` runs one). One binary instead of ten builds the kernels' generic instances
//! and links the test harness once: after a library change the suite rebuilt in 93 s instead of
//! 224 s (ten binaries), on every target CI tests.

mod api;
mod common;
mod equivalence;
mod errors;
mod fuzz_regressions;
mod legacy;
mod model;
mod optimizer;
mod options;
// The fuzz targets' oracles: replayed by `fuzz_regressions`; `model` uses the `optimizer`
// oracle's run-time-typed buffer and reference step.
#[path = "../oracle/mod.rs"]
#[allow(dead_code)]
mod oracle;
#[cfg(feature = "rayon")]
mod parallel;
mod platform;
mod pytorch;
mod q8;
mod reference;
mod stochastic;
