//! The oracles of the fuzz targets: each turns arbitrary bytes into a call of the crate and
//! checks it against `lion_optim::reference` and the documented rules, panicking on a
//! difference. Shared by the cargo-fuzz targets (fuzz/fuzz_targets/) and by
//! tests/suite/fuzz_regressions.rs, which replays the inputs the fuzzers found on every target the test
//! suite runs on.

pub mod optimizer;
pub mod step;
