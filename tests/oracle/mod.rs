//! The oracles of the fuzz targets: each turns arbitrary bytes into a call of the crate and
//! checks it against `lion_optim::reference` and the documented rules, panicking on a
//! difference. Shared by the cargo-fuzz targets (fuzz/fuzz_targets/: this is the library of
//! the fuzz crate) and by tests/suite/fuzz_regressions.rs, which replays the inputs the fuzzers
//! found on every target the test suite runs on. They live under tests/ because the published
//! package leaves fuzz/ out and its test suite needs them.

pub mod optimizer;
pub mod q8;
pub mod step;
